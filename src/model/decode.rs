//! Decoding steps of batched sampling: one new token per row against the KV cache.
//!
//! A decoding step of a small model does little arithmetic (a few rows against each weight)
//! across some 35 ops per layer, and run as candle ops each of them allocates its output and
//! dispatches on its own: in `perf` that overhead, not the arithmetic, was most of a step. On
//! f32 CPU tensors, [`Decoding::Loops`] runs the whole step as plain loops over buffers it
//! owns: RMSNorm, the projections with `few_rows`' kernel (queries, keys and values as one
//! product; gate and up as one), RoPE at each row's position, attention over the cache with
//! each row's left padding skipped, SwiGLU, and the logits. Elsewhere (CUDA, half precision)
//! [`Decoding::Candle`] runs the network's own forward. Tests hold the two against each other
//! and against full recomputation.

use candle_core::{DType, Device, Tensor};

use super::few_rows::matmul_t;
use super::fused::{softmax_in_place, RmsNorm};
use super::kv_cache::KvCache;
use super::qwen2::{Attend, Qwen2, Rows};
use super::Result;

/// How the decoding steps of one batch run.
pub enum Decoding<'w> {
    Loops(LoopDecoder<'w>),
    Candle {
        cache: KvCache,
        key_mask: Option<Tensor>,
    },
}

impl<'w> Decoding<'w> {
    /// The network's weights for decoding in loops, when it has f32 CPU weights (copied once
    /// and shared by every batch of a call, whatever the threads).
    pub fn loop_weights(net: &Qwen2) -> Result<Option<LoopWeights>> {
        if net.dtype() == DType::F32 && matches!(net.device(), Device::Cpu) {
            return Ok(Some(net.loop_weights()?));
        }
        Ok(None)
    }

    /// Decoding over `cache` (filled by the prefill), where row `r`'s first `left[r]` slots are
    /// padding: in loops over `weights` when there are some, with candle's forward otherwise.
    pub fn new(
        weights: Option<&'w LoopWeights>,
        cache: KvCache,
        left: Vec<usize>,
        key_mask: Option<Tensor>,
    ) -> Result<Self> {
        match weights {
            Some(w) => Ok(Self::Loops(LoopDecoder::new(w, cache, left)?)),
            None => Ok(Self::Candle { cache, key_mask }),
        }
    }

    /// Feeds token `ids[r]` at RoPE position `positions[r]` to every row; returns each row's
    /// next-token logits in f32.
    pub fn step(&mut self, net: &Qwen2, ids: &[u32], positions: &[u32]) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Loops(d) => Ok(d.step(ids, positions)),
            Self::Candle { cache, key_mask } => {
                let (rows, dev) = (ids.len(), net.device());
                let step_rows = Rows {
                    positions: Tensor::from_slice(positions, (rows, 1), dev)?,
                    key_mask: key_mask.clone(),
                };
                let ids = Tensor::from_slice(ids, (rows, 1), dev)?;
                let (h, _) = net.forward_rows(&ids, Attend::Cache(cache), Some(&step_rows))?;
                Ok(net
                    .logits(&h)?
                    .squeeze(1)?
                    .to_dtype(DType::F32)?
                    .to_vec2()?)
            }
        }
    }
}

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

/// Decoding in plain loops over shared weights and a cache of its own (see the module docs).
pub struct LoopDecoder<'w> {
    w: &'w LoopWeights,
    /// Each layer's keys and values of every row, `(rows, kv_heads, capacity, head_dim)`.
    kv: Vec<(Vec<f32>, Vec<f32>)>,
    left: Vec<usize>,
    len: usize,
    capacity: usize,
}

impl<'w> LoopDecoder<'w> {
    fn new(w: &'w LoopWeights, cache: KvCache, left: Vec<usize>) -> Result<Self> {
        let (len, capacity) = (cache.len(), cache.capacity());
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let kv = cache
            .into_buffers()
            .iter()
            .map(|(k, v)| Ok((flat(k)?, flat(v)?)))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            w,
            kv,
            left,
            len,
            capacity,
        })
    }

    fn step(&mut self, ids: &[u32], positions: &[u32]) -> Vec<Vec<f32>> {
        let w = self.w;
        let (m, hd) = (ids.len(), w.hidden);
        let mut x = Vec::with_capacity(m * hd);
        for &id in ids {
            x.extend_from_slice(&w.embed[id as usize * hd..][..hd]);
        }
        let slot = self.len;
        for l in 0..w.layers.len() {
            self.layer(l, &mut x, positions, slot);
        }
        self.len += 1;
        let h = rms_norm(&x, &w.norm, w.eps);
        let vocab = w.lm_head.len() / hd;
        let mut logits = vec![0f32; m * vocab];
        matmul_t(&h, &w.lm_head, hd, &mut logits);
        logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect()
    }

    fn layer(&mut self, l: usize, x: &mut [f32], positions: &[u32], slot: usize) {
        let w = self.w;
        let (hd, nh, nkv, d) = (w.hidden, w.heads, w.kv_heads, w.head_dim);
        let m = x.len() / hd;
        let layer = &w.layers[l];
        let h = rms_norm(x, &layer.input_norm, w.eps);
        let width = (nh + 2 * nkv) * d;
        let mut qkv = vec![0f32; m * width];
        matmul_t(&h, &layer.qkv_w, hd, &mut qkv);
        for row in qkv.chunks_exact_mut(width) {
            row.iter_mut().zip(&layer.qkv_b).for_each(|(a, b)| *a += b);
        }
        for (row, &p) in qkv.chunks_exact_mut(width).zip(positions) {
            let half = d / 2;
            let (cos, sin) = (
                &w.cos[p as usize * half..][..half],
                &w.sin[p as usize * half..][..half],
            );
            for head in row[..(nh + nkv) * d].chunks_exact_mut(d) {
                rope(head, cos, sin);
            }
        }
        let cap = self.capacity;
        let (ks, vs) = &mut self.kv[l];
        for (r, row) in qkv.chunks_exact(width).enumerate() {
            for hk in 0..nkv {
                let at = ((r * nkv + hk) * cap + slot) * d;
                ks[at..at + d].copy_from_slice(&row[(nh + hk) * d..][..d]);
                vs[at..at + d].copy_from_slice(&row[(nh + nkv + hk) * d..][..d]);
            }
        }
        let attn = self.attend(l, &qkv, width, slot);
        let mut out = vec![0f32; m * hd];
        matmul_t(&attn, &layer.o_w, nh * d, &mut out);
        x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
        let h = rms_norm(x, &layer.post_norm, w.eps);
        let inter = w.intermediate;
        let mut gate_up = vec![0f32; m * 2 * inter];
        matmul_t(&h, &layer.gate_up_w, hd, &mut gate_up);
        let mut act = vec![0f32; m * inter];
        for (a, gu) in act
            .chunks_exact_mut(inter)
            .zip(gate_up.chunks_exact(2 * inter))
        {
            let (g, u) = gu.split_at(inter);
            for ((o, &g), &u) in a.iter_mut().zip(g).zip(u) {
                *o = g / (1.0 + (-g).exp()) * u;
            }
        }
        matmul_t(&act, &layer.down_w, inter, &mut out);
        x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
    }

    /// Each row's attention output `(rows, heads * head_dim)`: query head `h` reads key/value
    /// head `h / (heads / kv_heads)` over slots `left[r]..=slot`. The query heads of one
    /// key/value head take their scores together, as one few-rows product against the cached
    /// keys (a plain dot-product loop sums one product at a time, and was half of decoding).
    fn attend(&self, l: usize, qkv: &[f32], width: usize, slot: usize) -> Vec<f32> {
        let w = self.w;
        let (nh, nkv, d) = (w.heads, w.kv_heads, w.head_dim);
        let (group, cap) = (nh / nkv, self.capacity);
        let (ks, vs) = &self.kv[l];
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; qkv.len() / width * nh * d];
        let mut scores = Vec::with_capacity(group * (slot + 1));
        for (r, row) in qkv.chunks_exact(width).enumerate() {
            let first = self.left[r];
            let len = slot + 1 - first;
            for hk in 0..nkv {
                let queries = &row[hk * group * d..][..group * d];
                let base = (r * nkv + hk) * cap * d;
                let (keys, values) = (
                    &ks[base + first * d..base + (slot + 1) * d],
                    &vs[base + first * d..base + (slot + 1) * d],
                );
                scores.clear();
                scores.resize(group * len, 0.0);
                matmul_t(queries, keys, d, &mut scores);
                for (g, probs) in scores.chunks_exact_mut(len).enumerate() {
                    probs.iter_mut().for_each(|p| *p *= scale);
                    softmax_in_place(probs);
                    let o = &mut out[(r * nh + hk * group + g) * d..][..d];
                    for (&p, v) in probs.iter().zip(values.chunks_exact(d)) {
                        o.iter_mut().zip(v).for_each(|(a, b)| *a += p * b);
                    }
                }
            }
        }
        out
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
    use crate::model::policy::left_pad_mask;
    use crate::model::testing::micro_policy;

    /// Both decoders over the same prefill of prompts of different lengths (so with left
    /// padding), fed the same tokens: the same logits, for tied and untied embeddings.
    #[test]
    fn loops_match_the_candle_forward() {
        for tied in [true, false] {
            let policy = micro_policy(tied, 3, DType::F32).unwrap();
            let net = policy.network(false).unwrap();
            let prompts: Vec<Vec<u32>> = vec![(1..12).collect(), (40..45).collect()];
            let (n, steps) = (2, 6);
            let capacity = 11 + steps;
            let rows = prompts.len() * n;
            let left: Vec<usize> = (0..rows).map(|r| 11 - prompts[r / n].len()).collect();
            let mask = left_pad_mask(&prompts, n, capacity, DType::F32, &Device::Cpu).unwrap();
            let weights = Decoding::loop_weights(&net).unwrap();
            assert!(weights.is_some());
            let mut both = [weights.as_ref(), None].map(|w| {
                let (cache, _) = policy.prefill(&net, &prompts, n, capacity).unwrap();
                Decoding::new(w, cache, left.clone(), mask.clone()).unwrap()
            });
            assert!(matches!(both[0], Decoding::Loops(_)));
            for step in 0..steps {
                let ids: Vec<u32> = (0..rows).map(|r| (7 * r + 3 * step) as u32 % 300).collect();
                let positions: Vec<u32> = (0..rows)
                    .map(|r| (prompts[r / n].len() + step) as u32)
                    .collect();
                let a = both[0].step(&net, &ids, &positions).unwrap();
                let b = both[1].step(&net, &ids, &positions).unwrap();
                for (ra, rb) in a.iter().zip(&b) {
                    for (x, y) in ra.iter().zip(rb) {
                        assert!((x - y).abs() < 1e-4, "tied {tied}, step {step}: {x} vs {y}");
                    }
                }
            }
        }
    }
}
