//! The Qwen2 decoder: embeddings, RMSNorm, RoPE, grouped-query attention with q/k/v bias,
//! SwiGLU MLP, final norm and (optionally tied) lm_head, with Hugging Face's weight names.

use candle_core::{DType, Device, Result, Tensor, D};

use super::attention;
use super::decode::{LoopLayer, LoopWeights};
use super::kv_cache::KvCache;
use super::ops::{self, linear, OpPath};
use super::{Params, Qwen2Config};

/// Precomputed RoPE tables, `(positions, head_dim / 2)`.
#[derive(Clone)]
pub struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Rope {
    pub fn new(cfg: &Qwen2Config, dtype: DType, device: &Device) -> Result<Self> {
        let dim = cfg.head_dim();
        let inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1f32 / cfg.rope_theta.powf(i as f64 / dim as f64) as f32)
            .collect();
        let n = inv_freq.len();
        let inv_freq = Tensor::from_vec(inv_freq, (1, n), device)?;
        let t = Tensor::arange(0u32, cfg.max_position_embeddings as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((cfg.max_position_embeddings, 1))?;
        let freqs = t.matmul(&inv_freq)?;
        Ok(Self {
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
        })
    }
}

/// Keys and values one layer computed for its input (after RoPE), `(batch, kv_heads, seq, dim)`.
#[derive(Clone)]
pub struct LayerKv {
    pub k: Tensor,
    pub v: Tensor,
}

/// Per-row positions for batches of rows that sit at different positions (left-padded
/// prompts of different lengths decoded together).
pub struct Rows {
    /// `(batch, seq)` u32: the RoPE position of each new token.
    pub positions: Tensor,
    /// `(batch, 1, 1, capacity)`: 0 on real keys, `-inf` on padding slots.
    pub key_mask: Option<Tensor>,
}

/// What the new tokens attend to besides themselves.
pub enum Attend<'a> {
    /// Only the input (causal): a prompt, or whole sequences in a batch.
    Causal,
    /// A shared prefix (one row, broadcast to the batch) computed with gradients: the group's
    /// prompt in the training forward.
    Prefix(&'a [LayerKv]),
    /// The sampling cache.
    Cache(&'a mut KvCache),
}

struct Layer {
    input_norm: Tensor,
    post_norm: Tensor,
    proj: Proj,
}

/// A layer's projections, one tensor per Hugging Face parameter.
struct Proj {
    q_w: Tensor,
    q_b: Tensor,
    k_w: Tensor,
    k_b: Tensor,
    v_w: Tensor,
    v_b: Tensor,
    o_w: Tensor,
    gate_w: Tensor,
    up_w: Tensor,
    down_w: Tensor,
    path: OpPath,
}

impl Proj {
    /// Queries `(batch, seq - first, heads * head_dim)` of positions `first..`, and keys and
    /// values `(batch, seq, kv_heads * head_dim)` of every position.
    fn qkv(&self, x: &Tensor, first: usize) -> Result<(Tensor, Tensor, Tensor)> {
        Ok((
            linear(&tail(x, 1, first)?, &self.q_w, Some(&self.q_b), self.path)?,
            linear(x, &self.k_w, Some(&self.k_b), self.path)?,
            linear(x, &self.v_w, Some(&self.v_b), self.path)?,
        ))
    }

    fn out(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.o_w, None, self.path)
    }

    /// SwiGLU: `down(silu(gate(x)) * up(x))`.
    fn mlp(&self, x: &Tensor) -> Result<Tensor> {
        let act = ops::swiglu(x, &self.gate_w, &self.up_w, self.path)?;
        linear(&act, &self.down_w, None, self.path)
    }
}

/// The network bound to one set of weights. Build it with `OpPath::Differentiable` and tracked
/// weights to train, or `OpPath::Fused` and detached weights to sample.
pub struct Qwen2 {
    cfg: Qwen2Config,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    rope: Rope,
    path: OpPath,
}

impl Qwen2 {
    /// Resolves every weight once. `track` keeps the autograd link to the parameters.
    pub fn new(
        cfg: &Qwen2Config,
        params: &Params,
        rope: &Rope,
        path: OpPath,
        track: bool,
    ) -> Result<Self> {
        let get = |name: &str| -> Result<Tensor> {
            let var = params
                .get(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing parameter `{name}`")))?;
            Ok(if track {
                var.as_tensor().clone()
            } else {
                var.as_tensor().detach()
            })
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let proj = Proj {
                q_w: get(&p("self_attn.q_proj.weight"))?,
                q_b: get(&p("self_attn.q_proj.bias"))?,
                k_w: get(&p("self_attn.k_proj.weight"))?,
                k_b: get(&p("self_attn.k_proj.bias"))?,
                v_w: get(&p("self_attn.v_proj.weight"))?,
                v_b: get(&p("self_attn.v_proj.bias"))?,
                o_w: get(&p("self_attn.o_proj.weight"))?,
                gate_w: get(&p("mlp.gate_proj.weight"))?,
                up_w: get(&p("mlp.up_proj.weight"))?,
                down_w: get(&p("mlp.down_proj.weight"))?,
                path,
            };
            layers.push(Layer {
                input_norm: get(&p("input_layernorm.weight"))?,
                post_norm: get(&p("post_attention_layernorm.weight"))?,
                proj,
            });
        }
        let embed = get("model.embed_tokens.weight")?;
        let lm_head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            get("lm_head.weight")?
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm: get("model.norm.weight")?,
            lm_head,
            rope: rope.clone(),
            path,
        })
    }

    pub fn config(&self) -> &Qwen2Config {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// The weights and RoPE tables copied into plain f32 buffers, for decoding in loops
    /// (`decode.rs`).
    pub(super) fn loop_weights(&self) -> Result<LoopWeights> {
        let flat = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>();
        // Read in place, each weight copied once (this runs at every sampling call).
        let cat = |ts: &[&Tensor]| -> Result<Vec<f32>> {
            let mut out = Vec::with_capacity(ts.iter().map(|t| t.elem_count()).sum());
            for t in ts {
                let (s, l) = t.storage_and_layout();
                if let Ok(d) = super::fused::storage_data(&s, l, "loop weights") {
                    out.extend_from_slice(d);
                    continue;
                }
                drop(s);
                out.extend(flat(t)?);
            }
            Ok(out)
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let p = &layer.proj;
            layers.push(LoopLayer {
                input_norm: flat(&layer.input_norm)?,
                post_norm: flat(&layer.post_norm)?,
                qkv_w: cat(&[&p.q_w, &p.k_w, &p.v_w])?,
                qkv_b: cat(&[&p.q_b, &p.k_b, &p.v_b])?,
                o_w: flat(&p.o_w)?,
                gate_up_w: cat(&[&p.gate_w, &p.up_w])?,
                down_w: flat(&p.down_w)?,
            });
        }
        let c = &self.cfg;
        Ok(LoopWeights {
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim(),
            intermediate: c.intermediate_size,
            eps: c.rms_norm_eps as f32,
            embed: flat(&self.embed)?,
            lm_head: flat(&self.lm_head)?,
            norm: flat(&self.norm)?,
            cos: flat(&self.rope.cos)?,
            sin: flat(&self.rope.sin)?,
            layers,
        })
    }

    /// Hidden states after the final norm, `(batch, seq, hidden)`, for `ids` `(batch, seq)`
    /// placed after whatever `attend` holds. Also returns each layer's new keys and values.
    pub fn forward(&self, ids: &Tensor, attend: Attend) -> Result<(Tensor, Vec<LayerKv>)> {
        self.forward_rows(ids, attend, None)
    }

    /// `forward` with per-row positions and a key mask: rows of a batch whose prompts had
    /// different lengths, left-padded into one cache (batched decoding of several groups).
    pub fn forward_rows(
        &self,
        ids: &Tensor,
        attend: Attend,
        rows: Option<&Rows>,
    ) -> Result<(Tensor, Vec<LayerKv>)> {
        self.forward_tail(ids, attend, rows, 0)
    }

    /// `forward_rows`, returning hidden states `(batch, seq - first, hidden)` of positions
    /// `first..` only. No later layer reads a last-layer output, so the last layer computes
    /// keys and values at every position but its queries, output projection and MLP only at
    /// those positions: in a training forward whose loss reads the completions alone, the
    /// prompt's share of the last layer is mostly skipped (same values, less arithmetic).
    pub fn forward_tail(
        &self,
        ids: &Tensor,
        mut attend: Attend,
        rows: Option<&Rows>,
        first: usize,
    ) -> Result<(Tensor, Vec<LayerKv>)> {
        let (b, s) = ids.dims2()?;
        if first >= s {
            candle_core::bail!("forward_tail: position {first} is past the {s} inputs");
        }
        let past = match &attend {
            Attend::Causal => 0,
            Attend::Prefix(p) => p.first().map(|kv| kv.k.dim(2)).transpose()?.unwrap_or(0),
            Attend::Cache(c) => c.len(),
        };
        let (cos, sin) = match rows {
            Some(r) => {
                let pos = r.positions.flatten_all()?;
                let half = self.rope.cos.dim(1)?;
                (
                    self.rope.cos.index_select(&pos, 0)?.reshape((b, s, half))?,
                    self.rope.sin.index_select(&pos, 0)?.reshape((b, s, half))?,
                )
            }
            None => {
                if past + s > self.cfg.max_position_embeddings {
                    candle_core::bail!(
                        "sequence of {} tokens exceeds max_position_embeddings {}",
                        past + s,
                        self.cfg.max_position_embeddings
                    );
                }
                (
                    self.rope.cos.narrow(0, past, s)?,
                    self.rope.sin.narrow(0, past, s)?,
                )
            }
        };
        let mask = self.mask(s, past, rows)?;
        let last_mask = match first {
            0 => None,
            _ => Some(self.mask(s - first, past + first, rows)?),
        };
        let mut x = self
            .embed
            .embedding(&ids.flatten_all()?)?
            .reshape((b, s, ()))?;
        let mut new_kv = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let (first, mask) = match &last_mask {
                Some(m) if l + 1 == self.layers.len() => (first, m),
                _ => (0, &mask),
            };
            let h = ops::rms_norm(&x, &layer.input_norm, self.cfg.rms_norm_eps, self.path)?;
            let rope = (&cos, &sin);
            let (attn, kv) = self.attention(l, layer, &h, rope, mask, &mut attend, first)?;
            x = (tail(&x, 1, first)? + attn)?;
            let h = ops::rms_norm(&x, &layer.post_norm, self.cfg.rms_norm_eps, self.path)?;
            x = (x + layer.proj.mlp(&h)?)?;
            new_kv.push(kv);
        }
        if self.layers.is_empty() {
            x = tail(&x, 1, first)?;
        }
        if let Attend::Cache(c) = attend {
            c.advance(s);
        }
        let x = ops::rms_norm(&x, &self.norm, self.cfg.rms_norm_eps, self.path)?;
        Ok((x, new_kv))
    }

    /// How `s` new tokens after `past` others are kept from the keys they may not see.
    fn mask(&self, s: usize, past: usize, rows: Option<&Rows>) -> Result<Mask> {
        Ok(match rows {
            None if self.embed.device().is_cpu() && self.embed.dtype() == DType::F32 => {
                Mask::Causal
            }
            _ => Mask::Additive(self.attention_mask(s, past, rows)?),
        })
    }

    /// The additive mask over `(query heads of a group x seq, keys)`: causal when several
    /// tokens are new, plus the rows' key mask (left padding) when given.
    fn attention_mask(&self, s: usize, past: usize, rows: Option<&Rows>) -> Result<Option<Tensor>> {
        let t = past + s;
        let causal = if s > 1 {
            Some(causal_mask(
                s,
                past,
                self.cfg.kv_groups(),
                self.embed.dtype(),
                self.embed.device(),
            )?)
        } else {
            None
        };
        let keys = match rows.and_then(|r| r.key_mask.as_ref()) {
            Some(m) => Some(m.narrow(3, 0, t)?),
            None => None,
        };
        Ok(match (causal, keys) {
            (Some(c), Some(k)) => Some(c.broadcast_add(&k)?),
            (c, k) => c.or(k),
        })
    }

    /// Vocabulary logits for hidden states `(batch, seq, hidden)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        ops::head(hidden, &self.lm_head, self.path)
    }

    /// Layer `l`'s attention output at positions `first..` of `x` (its input, normed), with
    /// the keys and values of every position.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        l: usize,
        layer: &Layer,
        x: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        mask: &Mask,
        attend: &mut Attend,
        first: usize,
    ) -> Result<(Tensor, LayerKv)> {
        let b = x.dim(0)?;
        let (nh, nkv, d) = (
            self.cfg.num_attention_heads,
            self.cfg.num_key_value_heads,
            self.cfg.head_dim(),
        );
        let (q, k, v) = layer.proj.qkv(x, first)?;
        // Positions run along the tables' second-to-last axis: `(seq, half)` or, with
        // per-row positions, `(batch, seq, half)`.
        let at = cos.rank() - 2;
        let q_rope = (&tail(cos, at, first)?, &tail(sin, at, first)?);
        let q = ops::split_heads(&q, nh, Some(q_rope), self.path)?;
        let k = ops::split_heads(&k, nkv, Some((cos, sin)), self.path)?;
        let v = ops::split_heads(&v, nkv, None, self.path)?;
        let (k_all, v_all) = match attend {
            Attend::Causal => (k.clone(), v.clone()),
            Attend::Prefix(prefix) => {
                let p = &prefix[l];
                let pk = p.k.broadcast_as((b, nkv, p.k.dim(2)?, d))?.contiguous()?;
                let pv = p.v.broadcast_as((b, nkv, p.v.dim(2)?, d))?.contiguous()?;
                (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?)
            }
            Attend::Cache(cache) => cache.append(l, &k, &v)?,
        };
        let out = match mask {
            Mask::Causal => attention::causal(&q, &k_all, &v_all)?,
            Mask::Additive(mask) => gqa_attention(&q, &k_all, &v_all, mask.as_ref(), self.path)?,
        };
        let out = ops::merge_heads(&out, self.path)?;
        Ok((layer.proj.out(&out)?, LayerKv { k, v }))
    }
}

/// `t` from `first` on along `dim` (`t` itself when `first` is 0).
fn tail(t: &Tensor, dim: usize, first: usize) -> Result<Tensor> {
    match first {
        0 => Ok(t.clone()),
        _ => t.narrow(dim, first, t.dim(dim)? - first),
    }
}

/// How a forward's new tokens are kept from the keys they may not see.
enum Mask {
    /// Causal only, by [`attention::causal`] (f32 CPU tensors, no key mask).
    Causal,
    /// An additive mask over the scores (`None`: every key), for [`gqa_attention`].
    Additive(Option<Tensor>),
}

/// Scaled dot-product attention where each key/value head serves `heads / kv_heads` query
/// heads. The query heads of a group are folded into the sequence axis, so keys and values are
/// never copied per head.
fn gqa_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    path: OpPath,
) -> Result<Tensor> {
    let (b, nh, s, d) = q.dims4()?;
    let nkv = k.dim(1)?;
    let g = nh / nkv;
    let q = q.contiguous()?.reshape((b, nkv, g * s, d))?;
    let scale = 1.0 / (d as f64).sqrt();
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    let probs = ops::softmax_last_dim(&scores, path)?;
    probs.matmul(v)?.reshape((b, nh, s, d))
}

/// `(groups * s, past + s)`: 0 where query `i` may see key `j` (`j <= past + i`), `-inf`
/// elsewhere, repeated for each query head folded into the sequence axis.
fn causal_mask(
    s: usize,
    past: usize,
    groups: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let t = past + s;
    let mask: Vec<f32> = (0..groups * s)
        .flat_map(|r| {
            let i = r % s;
            (0..t).map(move |j| {
                if j <= past + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (groups * s, t), device)?.to_dtype(dtype)
}

/// Log-probabilities of `targets` `(batch, n)` under `logits` `(batch, n, vocab)`, with the
/// entropy of each position's distribution (detached; a diagnostic). Half-precision logits
/// are upcast to f32 first; f32 and f64 stay as they are.
pub fn gather_logprobs(logits: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor)> {
    let logits = match logits.dtype() {
        DType::BF16 | DType::F16 => logits.to_dtype(DType::F32)?,
        _ => logits.clone(),
    };
    let logp = ops::log_softmax_last_dim(&logits)?;
    let picked = logp
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    let lp = logp.detach();
    let entropy = (lp.exp()? * &lp)?.sum(D::Minus1)?.neg()?;
    Ok((picked, entropy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::max_diff;
    use candle_core::Var;

    /// The composition the causal kernel replaces: scores, scale, additive causal mask,
    /// softmax, values.
    fn composed(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (s, t) = (q.dim(2)?, k.dim(2)?);
        let groups = q.dim(1)? / k.dim(1)?;
        let mask = causal_mask(s, t - s, groups, DType::F32, q.device())?;
        gqa_attention(q, k, v, Some(&mask), OpPath::Differentiable)
    }

    /// Values and the gradients of `sum(attention * probe)` for queries, keys and values.
    fn run(
        vars: &[Var; 3],
        probe: &Tensor,
        f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    ) -> Vec<Tensor> {
        let [q, k, v] = vars.each_ref().map(|x| x.as_tensor());
        let out = f(q, k, v).unwrap();
        let grads = (&out * probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut all = vec![out];
        all.extend([q, k, v].map(|x| grads.get(x).unwrap().clone()));
        all
    }

    /// Hidden states of `net` on `ids` from position `first` (the full forward narrowed when
    /// `narrow`, else the tail forward), the last layer's keys, and every parameter's
    /// gradient of `sum(hidden * probe)`.
    fn tail_run(
        policy: &crate::model::Policy,
        ids: &Tensor,
        rows: Option<&Rows>,
        (first, narrow): (usize, bool),
        probe: &Tensor,
    ) -> Vec<Tensor> {
        let net = policy.network(true).unwrap();
        let (h, kv) = if narrow {
            let (h, kv) = net.forward_rows(ids, Attend::Causal, rows).unwrap();
            (tail(&h, 1, first).unwrap(), kv)
        } else {
            net.forward_tail(ids, Attend::Causal, rows, first).unwrap()
        };
        let grads = (&h * probe).unwrap().sum_all().unwrap().backward().unwrap();
        let mut all = vec![h, kv[kv.len() - 1].k.clone()];
        for (_, var) in policy.params.iter() {
            all.push(grads.get(var.as_tensor()).unwrap().clone());
        }
        all
    }

    /// The tail forward against the full forward narrowed, in value, in the last layer's keys
    /// and in every parameter's gradient: on the causal kernel (f32) and the additive mask
    /// (f64), with and without per-row positions and a key mask.
    #[test]
    fn the_tail_forward_is_the_full_forwards_tail() {
        let dev = Device::Cpu;
        let (b, s) = (2, 11);
        let ids: Vec<u32> = (0..b * s).map(|i| (i * 37 % 290) as u32 + 5).collect();
        for dtype in [DType::F32, DType::F64] {
            let policy = crate::model::testing::micro_policy(true, 7, dtype).unwrap();
            let ids = Tensor::from_vec(ids.clone(), (b, s), &dev).unwrap();
            let positions: Vec<u32> = (0..b * s).map(|i| (i % s + 3 * (i / s)) as u32).collect();
            let mut key_mask = vec![0f32; b * s];
            key_mask[s + 3] = f32::NEG_INFINITY;
            let rows = Rows {
                positions: Tensor::from_vec(positions, (b, s), &dev).unwrap(),
                key_mask: Some(
                    Tensor::from_vec(key_mask, (b, 1, 1, s), &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                ),
            };
            for rows in [None, Some(&rows)] {
                for first in [0, 1, 6, 10] {
                    let probe = Tensor::randn(0f32, 1., (b, s - first, 32), &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap();
                    let tail = tail_run(&policy, &ids, rows, (first, false), &probe);
                    let full = tail_run(&policy, &ids, rows, (first, true), &probe);
                    assert_eq!(tail.len(), full.len());
                    for (i, (a, r)) in tail.iter().zip(&full).enumerate() {
                        assert_eq!(a.dims(), r.dims());
                        let (a, r) = (
                            a.to_dtype(DType::F32).unwrap(),
                            r.to_dtype(DType::F32).unwrap(),
                        );
                        let diff = max_diff(&a, &r);
                        let what = (dtype, rows.is_some(), first, i);
                        assert!(diff < 1e-4, "{what:?}: {diff}");
                    }
                }
            }
        }
    }

    /// Against the composition, in value and in the three gradients: grouped query heads, a
    /// prefix of keys (the RL update's shared prompt), more rows than a block, a head size
    /// that is not a multiple of 8, and one new token.
    #[test]
    fn causal_kernel_matches_the_composition() {
        let dev = Device::Cpu;
        for (b, nh, nkv, s, past, d) in [
            (2, 4, 2, 5, 0, 8),
            (3, 4, 2, 4, 3, 12),
            (1, 2, 1, 37, 0, 16),
            (2, 6, 3, 20, 9, 64),
            (2, 2, 2, 1, 6, 8),
        ] {
            let t = past + s;
            let vars = [
                Var::randn(0f32, 1., (b, nh, s, d), &dev).unwrap(),
                Var::randn(0f32, 1., (b, nkv, t, d), &dev).unwrap(),
                Var::randn(0f32, 1., (b, nkv, t, d), &dev).unwrap(),
            ];
            let probe = Tensor::randn(0f32, 1., (b, nh, s, d), &dev).unwrap();
            let fused = run(&vars, &probe, attention::causal);
            let reference = run(&vars, &probe, composed);
            for (what, (a, r)) in ["out", "dq", "dk", "dv"]
                .iter()
                .zip(fused.iter().zip(&reference))
            {
                let diff = max_diff(a, r);
                assert!(diff < 1e-5, "{what} {:?}: {diff}", (b, nh, nkv, s, past, d));
            }
        }
    }
}
