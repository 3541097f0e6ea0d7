//! Decoding steps of batched sampling on f32 CPU weights: one new token per row against the
//! KV cache, in plain loops.
//!
//! A decoding step of a small model does little arithmetic (a few rows against each weight)
//! across some 35 ops per layer, and run as candle ops each of them allocates its output and
//! dispatches on its own: in `perf` that overhead, not the arithmetic, was most of a step. So
//! the whole step runs as plain loops over buffers the decoder owns: RMSNorm, the projections
//! with `few_rows`' kernel, RoPE at each row's position, attention over each prompt's keys
//! and values (kept once for its rows, as the prefill left them) and then each row's own,
//! SwiGLU, and the logits. A team of threads shares each step
//! ([`Member`], `team.rs`): each reads only its share of every weight, for all rows.
//! Elsewhere (CUDA, half precision) sampling runs the network's own forward (`generate.rs`).
//! Tests hold the two against each other, teams of every size against one another, and both
//! against full recomputation.

use std::ops::Range;

use candle_core::{DType, Device};

use super::few_rows::{matmul_t, weighted_sum_into, weighted_sums_into};
use super::fused::{softmax_in_place, RmsNorm};
use super::qwen2::Qwen2;
use super::team::{share, Board, Part, Poisoned, Team};
use super::Result;

/// One layer's weights as row-major f32, fused where one product can serve two.
pub struct LoopLayer {
    pub input_norm: Vec<f32>,
    pub post_norm: Vec<f32>,
    /// Query, key and value weights stacked `(heads + 2 kv_heads) * head_dim` rows of hidden.
    pub qkv_w: Vec<f32>,
    pub qkv_b: Vec<f32>,
    pub o_w: Vec<f32>,
    /// Gate then up weights, `2 * intermediate` rows of hidden.
    pub gate_up_w: Vec<f32>,
    pub down_w: Vec<f32>,
}

/// The network's shape and weights for [`LoopDecoder`].
pub struct LoopWeights {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub eps: f32,
    pub embed: Vec<f32>,
    pub lm_head: Vec<f32>,
    pub norm: Vec<f32>,
    /// RoPE tables, `(max_positions, head_dim / 2)`.
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub layers: Vec<LoopLayer>,
}

/// The network's weights for decoding in loops, when it has f32 CPU weights (copied once
/// and shared by every thread and batch of a sampling call).
pub fn loop_weights(net: &Qwen2) -> Result<Option<LoopWeights>> {
    if net.dtype() == DType::F32 && matches!(net.device(), Device::Cpu) {
        return Ok(Some(net.loop_weights()?));
    }
    Ok(None)
}

/// Each layer's keys and values of one prompt, `(kv_heads, len, head_dim)` row-major.
pub type PromptKv = Vec<(Vec<f32>, Vec<f32>)>;

/// How a team of `threads` splits the work of a decoding step, and the widths of each
/// member's part of every exchanged row.
#[derive(Debug, Clone)]
struct Shares {
    kv_heads: Vec<Range<usize>>,
    hidden: Vec<Range<usize>>,
    inter: Vec<Range<usize>>,
    vocab: Vec<Range<usize>>,
    /// Each member's attention outputs in a row: its query heads times the head size.
    attn_widths: Vec<usize>,
    inter_widths: Vec<usize>,
    vocab_widths: Vec<usize>,
}

impl Shares {
    fn new(w: &LoopWeights, threads: usize) -> Self {
        let split = |n: usize, align: usize| -> Vec<Range<usize>> {
            (0..threads).map(|t| share(n, threads, t, align)).collect()
        };
        let widths = |ranges: &[Range<usize>], scale: usize| {
            ranges.iter().map(|r| r.len() * scale).collect()
        };
        let (kv_heads, inter) = (split(w.kv_heads, 1), split(w.intermediate, 4));
        let vocab = split(w.lm_head.len() / w.hidden, 4);
        Self {
            attn_widths: widths(&kv_heads, w.heads / w.kv_heads * w.head_dim),
            inter_widths: widths(&inter, 1),
            vocab_widths: widths(&vocab, 1),
            kv_heads,
            hidden: split(w.hidden, 4),
            inter,
            vocab,
        }
    }
}

/// One thread's part of a team decoding a batch in plain loops (see the module docs and
/// `team.rs`): the queries, keys, values, cache and attention of its key/value heads, its
/// columns of the output and down projections, its intermediate columns and its share of the
/// vocabulary. Every member keeps the whole residual stream, so the norms need no exchange,
/// and each output is computed as a lone thread would: results do not depend on the team size.
pub struct Member<'w> {
    w: &'w LoopWeights,
    t: usize,
    shares: Shares,
    /// Each prompt's keys and values from its prefill, shared by its `n` rows: the rows of a
    /// group read their prompt's part of the cache once between them.
    prompts: &'w [PromptKv],
    /// Each prompt's length.
    lens: Vec<usize>,
    n: usize,
    /// Each layer's keys and values of every row's own tokens for this member's heads,
    /// `(rows, heads, new_tokens, head_dim)`.
    own: Vec<(Vec<f32>, Vec<f32>)>,
    /// Tokens fed so far, and room for them.
    fed: usize,
    new_tokens: usize,
}

impl<'w> Member<'w> {
    /// Member `t` of a team of `threads`, over `n` rows per prompt whose keys and values are
    /// `prompts` (the prefill's), with room for `new_tokens` fed tokens a row.
    pub fn new(
        w: &'w LoopWeights,
        (t, threads): (usize, usize),
        prompts: &'w [PromptKv],
        n: usize,
        new_tokens: usize,
    ) -> Self {
        let shares = Shares::new(w, threads);
        let d = w.head_dim;
        let lens = prompts
            .iter()
            .map(|p| p.first().map_or(0, |(k, _)| k.len() / (w.kv_heads * d)))
            .collect();
        let size = prompts.len() * n * shares.kv_heads[t].len() * new_tokens * d;
        let own = (0..w.layers.len())
            .map(|_| (vec![0f32; size], vec![0f32; size]))
            .collect();
        Self {
            w,
            t,
            shares,
            prompts,
            lens,
            n,
            own,
            fed: 0,
            new_tokens,
        }
    }

    /// Feeds token `ids[r]` at RoPE position `positions[r]` to every row; returns the
    /// next-token logits of rows `rows`.
    pub fn step(
        &mut self,
        team: &Team,
        ids: &[u32],
        positions: &[u32],
        rows: Range<usize>,
    ) -> std::result::Result<Vec<Vec<f32>>, Poisoned> {
        let w = self.w;
        let hd = w.hidden;
        let mut x = Vec::with_capacity(ids.len() * hd);
        for &id in ids {
            x.extend_from_slice(&w.embed[id as usize * hd..][..hd]);
        }
        for l in 0..w.layers.len() {
            self.layer(team, l, &mut x, positions)?;
        }
        self.fed += 1;
        let h = rms_norm(&x, &w.norm, w.eps);
        let logits = product(&h, &w.lm_head, &self.shares.vocab[self.t], hd);
        team.exchange(self.t, Part::Logits, &logits)?;
        let widths = &self.shares.vocab_widths;
        let vocab: usize = widths.iter().sum();
        let mine = team.board.gather(Part::Logits, widths, rows);
        Ok(mine.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    fn layer(
        &mut self,
        team: &Team,
        l: usize,
        x: &mut [f32],
        positions: &[u32],
    ) -> std::result::Result<(), Poisoned> {
        let (w, t) = (self.w, self.t);
        let (hd, inter) = (w.hidden, w.intermediate);
        let m = x.len() / hd;
        let layer = &w.layers[l];
        let h = rms_norm(x, &layer.input_norm, w.eps);
        let attn = self.attention(l, &h, positions);
        team.exchange(t, Part::Attn, &attn)?;
        let attn = team
            .board
            .gather(Part::Attn, &self.shares.attn_widths, 0..m);
        let out = product(
            &attn,
            &layer.o_w,
            &self.shares.hidden[t],
            w.heads * w.head_dim,
        );
        team.exchange(t, Part::Out, &out)?;
        add_parts(x, &team.board, Part::Out, &self.shares.hidden);
        let h = rms_norm(x, &layer.post_norm, w.eps);
        let cols = self.shares.inter[t].clone();
        let gate = product(&h, &layer.gate_up_w, &cols, hd);
        let up = product(
            &h,
            &layer.gate_up_w,
            &(cols.start + inter..cols.end + inter),
            hd,
        );
        let act: Vec<f32> = gate
            .iter()
            .zip(&up)
            .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        team.exchange(t, Part::Act, &act)?;
        let act = team
            .board
            .gather(Part::Act, &self.shares.inter_widths, 0..m);
        let down = product(&act, &layer.down_w, &self.shares.hidden[t], inter);
        team.exchange(t, Part::Down, &down)?;
        add_parts(x, &team.board, Part::Down, &self.shares.hidden);
        Ok(())
    }

    /// This member's heads' attention outputs `(rows, its query heads * head_dim)` for the
    /// normed input `h`: queries, keys and values with their biases, RoPE at each row's
    /// position, this step's keys and values into the row's own cache, then each query head
    /// over its key/value head's prompt and own positions (see [`Member::attend`]).
    fn attention(&mut self, l: usize, h: &[f32], positions: &[u32]) -> Vec<f32> {
        let w = self.w;
        let (nh, nkv, d) = (w.heads, w.kv_heads, w.head_dim);
        let group = nh / nkv;
        let heads = self.shares.kv_heads[self.t].clone();
        let layer = &w.layers[l];
        let mine = heads.len();
        if mine == 0 {
            return Vec::new();
        }
        let project = |first: usize, count: usize| {
            let mut y = product(h, &layer.qkv_w, &(first * d..(first + count) * d), w.hidden);
            let bias = &layer.qkv_b[first * d..(first + count) * d];
            for row in y.chunks_exact_mut(count * d) {
                row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
            }
            y
        };
        let mut q = project(heads.start * group, mine * group);
        let mut k = project(nh + heads.start, mine);
        let v = project(nh + nkv + heads.start, mine);
        let half = d / 2;
        for (r, &p) in positions.iter().enumerate() {
            let (cos, sin) = (
                &w.cos[p as usize * half..][..half],
                &w.sin[p as usize * half..][..half],
            );
            let rows = q[r * mine * group * d..][..mine * group * d]
                .chunks_exact_mut(d)
                .chain(k[r * mine * d..][..mine * d].chunks_exact_mut(d));
            rows.for_each(|head| rope(head, cos, sin));
        }
        let (cap, slot) = (self.new_tokens, self.fed);
        let (ks, vs) = &mut self.own[l];
        for (r, (kr, vr)) in k
            .chunks_exact(mine * d)
            .zip(v.chunks_exact(mine * d))
            .enumerate()
        {
            for i in 0..mine {
                let at = ((r * mine + i) * cap + slot) * d;
                ks[at..at + d].copy_from_slice(&kr[i * d..][..d]);
                vs[at..at + d].copy_from_slice(&vr[i * d..][..d]);
            }
        }
        self.attend(l, &q)
    }

    /// Attention over the cache for queries `q` `(rows, this member's query heads * head_dim)`.
    /// Per key/value head, the query heads of a prompt's rows take their scores against the
    /// prompt's keys together, as one few-rows product, and their weighted sums over its
    /// values together (a plain dot-product loop sums one product at a time, and was half of
    /// decoding; reading a prompt's keys and values once per group rather than once per row
    /// is a quarter of the memory a step reads with 4 rows a group). Each row then continues
    /// with its own positions: the same sums, in the same order, as over one row's cache.
    fn attend(&self, l: usize, q: &[f32]) -> Vec<f32> {
        let w = self.w;
        let group = w.heads / w.kv_heads;
        let mine = self.shares.kv_heads[self.t].len();
        let mut out = vec![0f32; q.len()];
        // Each key/value head's query heads are `cols` columns of a row of `width`.
        let cols = group * w.head_dim;
        let width = mine * cols;
        let mut scratch = Scratch::default();
        for g in 0..self.lens.len() {
            let rows = g * self.n..(g + 1) * self.n;
            for i in 0..mine {
                let head = Head { group: g, index: i };
                scratch.queries.clear();
                for r in rows.clone() {
                    scratch
                        .queries
                        .extend_from_slice(&q[r * width + i * cols..][..cols]);
                }
                let outs = self.attend_head(l, head, &mut scratch);
                for (r, o) in rows.clone().zip(outs.chunks_exact(cols)) {
                    out[r * width + i * cols..][..o.len()].copy_from_slice(o);
                }
            }
        }
        out
    }

    /// The outputs of one key/value head of one group for its rows' query heads
    /// `scratch.queries` (`(rows of the group * query heads of the head, head_dim)`), in the
    /// same layout, in `scratch.outs`.
    fn attend_head<'s>(&self, l: usize, head: Head, scratch: &'s mut Scratch) -> &'s [f32] {
        let w = self.w;
        let d = w.head_dim;
        let group = w.heads / w.kv_heads;
        let (len, own) = (self.lens[head.group], self.fed + 1);
        let hk = self.shares.kv_heads[self.t].start + head.index;
        let (pk, pv) = &self.prompts[head.group][l];
        let (keys, values) = (
            &pk[hk * len * d..][..len * d],
            &pv[hk * len * d..][..len * d],
        );
        let Scratch {
            queries,
            shared,
            probs,
            row_scores,
            outs,
        } = scratch;
        let count = queries.len() / d;
        zeroed(shared, count * len);
        matmul_t(queries, keys, d, shared);
        let (ok, ov) = &self.own[l];
        let scale = 1.0 / (d as f32).sqrt();
        zeroed(probs, count * (len + own));
        zeroed(row_scores, group * own);
        for (j, row_q) in queries.chunks_exact(group * d).enumerate() {
            let at = self.own_at(head.group * self.n + j, head.index);
            matmul_t(row_q, &ok[at..at + own * d], d, row_scores);
            for (gq, own_scores) in row_scores.chunks_exact(own).enumerate() {
                let qi = j * group + gq;
                let p = &mut probs[qi * (len + own)..][..len + own];
                p[..len].copy_from_slice(&shared[qi * len..][..len]);
                p[len..].copy_from_slice(own_scores);
                p.iter_mut().for_each(|x| *x *= scale);
                softmax_in_place(p);
            }
        }
        zeroed(outs, count * d);
        weighted_sums_into(probs, len + own, values, d, outs);
        for (qi, (p, o)) in probs
            .chunks_exact(len + own)
            .zip(outs.chunks_exact_mut(d))
            .enumerate()
        {
            let at = self.own_at(head.group * self.n + qi / group, head.index);
            weighted_sum_into(&p[len..], &ov[at..at + own * d], o);
        }
        outs
    }

    /// Where row `r`'s own keys (or values) of this member's `index`-th head start in a
    /// layer's buffer.
    fn own_at(&self, r: usize, index: usize) -> usize {
        let mine = self.shares.kv_heads[self.t].len();
        (r * mine + index) * self.new_tokens * self.w.head_dim
    }
}

/// One key/value head of one group: the group, and the head's place among the member's.
#[derive(Clone, Copy)]
struct Head {
    group: usize,
    index: usize,
}

/// Buffers for [`Member::attend_head`], shared by the heads of a layer's attention so the
/// decoding loop does not allocate them per head.
#[derive(Default)]
struct Scratch {
    queries: Vec<f32>,
    shared: Vec<f32>,
    probs: Vec<f32>,
    row_scores: Vec<f32>,
    outs: Vec<f32>,
}

/// `v` as `len` zeros, keeping its allocation.
fn zeroed(v: &mut Vec<f32>, len: usize) {
    v.clear();
    v.resize(len, 0.0);
}

/// `x · wᵀ` over the weight rows `rows` of `w` (rows of `k`): one member's output columns.
fn product(x: &[f32], w: &[f32], rows: &Range<usize>, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len() / k * rows.len()];
    matmul_t(x, &w[rows.start * k..rows.end * k], k, &mut y);
    y
}

/// Adds every member's part `p` (its `shares` columns of each row) to the rows of `x`.
fn add_parts(x: &mut [f32], board: &Board, p: Part, shares: &[Range<usize>]) {
    let width = shares.last().map_or(0, |r| r.end);
    for (t, cols) in shares.iter().enumerate() {
        let part = board.get(t, p);
        if cols.is_empty() {
            continue;
        }
        for (row, add) in x.chunks_exact_mut(width).zip(part.chunks_exact(cols.len())) {
            row[cols.clone()]
                .iter_mut()
                .zip(add)
                .for_each(|(a, b)| *a += b);
        }
    }
}

/// RMSNorm of every row of `x` (rows of `w.len()`), the training forward's own kernel.
fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    RmsNorm { eps }.rows(x, w)
}

/// Rotates one head's vector in place (halves rotated, as `rotate_half` in Hugging Face).
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (a, b) = x.split_at_mut(half);
    for i in 0..half {
        let (x1, x2) = (a[i], b[i]);
        a[i] = x1 * cos[i] - x2 * sin[i];
        b[i] = x2 * cos[i] + x1 * sin[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::generate::{flat_kv, prefill_one};
    use crate::model::policy::left_pad_mask;
    use crate::model::qwen2::{Attend, Rows};
    use crate::model::testing::micro_policy;
    use candle_core::Tensor;

    /// Each step's tokens and RoPE positions, for every row.
    type Feeds = Vec<(Vec<u32>, Vec<u32>)>;

    /// Teams of 1, 2 and 3 threads (the third with no key/value head of its own) over the same
    /// prefill of prompts of different lengths (left-padded in candle's cache), fed the same
    /// tokens: the logits of candle's forward over a KV cache, and to the bit the same logits
    /// whatever the team's size; for tied and untied embeddings.
    #[test]
    fn teams_match_the_candle_forward_and_each_other() {
        for tied in [true, false] {
            let policy = micro_policy(tied, 3, DType::F32).unwrap();
            let net = policy.network(false).unwrap();
            let prompts: Vec<Vec<u32>> = vec![(1..12).collect(), (40..45).collect()];
            let (n, steps) = (2, 6);
            let capacity = 11 + steps;
            let rows = prompts.len() * n;
            let feeds: Feeds = (0..steps)
                .map(|step| {
                    let ids = (0..rows).map(|r| (7 * r + 3 * step) as u32 % 300).collect();
                    let positions = (0..rows)
                        .map(|r| (prompts[r / n].len() + step) as u32)
                        .collect();
                    (ids, positions)
                })
                .collect();
            let mask = left_pad_mask(&prompts, n, capacity, DType::F32, &Device::Cpu).unwrap();
            let (mut cache, _) = policy.prefill(&net, &prompts, n, capacity).unwrap();
            let want: Vec<Vec<Vec<f32>>> = feeds
                .iter()
                .map(|(ids, positions)| {
                    let dev = &Device::Cpu;
                    let step_rows = Rows {
                        positions: Tensor::from_slice(positions, (rows, 1), dev).unwrap(),
                        key_mask: mask.clone(),
                    };
                    let ids = Tensor::from_slice(ids, (rows, 1), dev).unwrap();
                    let attend = Attend::Cache(&mut cache);
                    let (h, _) = net.forward_rows(&ids, attend, Some(&step_rows)).unwrap();
                    net.logits(&h)
                        .unwrap()
                        .squeeze(1)
                        .unwrap()
                        .to_vec2()
                        .unwrap()
                })
                .collect();
            let w = loop_weights(&net)
                .unwrap()
                .expect("f32 CPU weights decode in loops");
            let kvs: Vec<PromptKv> = prompts
                .iter()
                .map(|p| flat_kv(prefill_one(&net, p).unwrap().0).unwrap())
                .collect();
            let alone = run_team(&w, 1, &kvs, n, steps, &feeds);
            for (step, (a, b)) in alone.iter().zip(&want).enumerate() {
                for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
                    assert!((x - y).abs() < 1e-4, "tied {tied}, step {step}: {x} vs {y}");
                }
            }
            for threads in [2, 3] {
                let got = run_team(&w, threads, &kvs, n, steps, &feeds);
                assert!(got == alone, "tied {tied}: a team of {threads} differs");
            }
        }
    }

    /// Every step's logits of every row, decoded by a team of `threads`, each member
    /// returning its share of the rows.
    fn run_team(
        w: &LoopWeights,
        threads: usize,
        kvs: &[PromptKv],
        n: usize,
        new_tokens: usize,
        feeds: &Feeds,
    ) -> Vec<Vec<Vec<f32>>> {
        let team = Team::new(threads);
        let rows = kvs.len() * n;
        let members: Vec<Vec<Vec<Vec<f32>>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let team = &team;
                    s.spawn(move || {
                        let mut member = Member::new(w, (t, threads), kvs, n, new_tokens);
                        let mine = share(rows, threads, t, 1);
                        feeds
                            .iter()
                            .map(|(ids, pos)| member.step(team, ids, pos, mine.clone()).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        (0..feeds.len())
            .map(|s| members.iter().flat_map(|m| m[s].clone()).collect())
            .collect()
    }
}
