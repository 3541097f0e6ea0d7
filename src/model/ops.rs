//! The few ops where candle-nn's fused kernels carry no gradient.
//!
//! `softmax_last_dim`, `rms_norm` and `rotary_emb::rope` do not fail under autograd: they
//! silently cut the graph. The training forward therefore uses, on f32 CPU tensors, chartrl's
//! own kernels with a backward (`fused.rs`), and elsewhere (CUDA, half precision) the
//! compositions below, built from differentiable primitives; the sampling forward (no graph)
//! uses candle-nn's kernels, and for decoding's few-row matrix products chartrl's own
//! (`few_rows.rs`). Tests hold the three against each other, in value and gradient, and
//! against candle-transformers' qwen2. Also on f32 CPU tensors, a training linear layer is one
//! op with its own backward (`linear.rs`), so is the feed-forward's gated half (`swiglu.rs`),
//! so are the moves into and out of attention's head layout (`heads.rs`), and so is causal
//! attention, in training and sampling alike (`attention.rs`).

use candle_core::{DType, Result, Tensor, D};

use super::linear::Linear;
use super::{few_rows, fused};

/// Which implementation of the non-differentiable-by-default ops to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpPath {
    /// Differentiable compositions: every parameter upstream gets its gradient.
    Differentiable,
    /// candle-nn's fused kernels: no backward, for sampling only.
    Fused,
}

/// `x · wᵀ (+ b)` for a weight `w` of shape `(out, in)`. On f32 CPU tensors, sampling (the
/// fused path) with few rows takes the few-rows kernel (`few_rows.rs`) and otherwise, as
/// training does, the linear op (`linear.rs`, with its own backward); everything else
/// candle's matmul.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, path: OpPath) -> Result<Tensor> {
    linear_op(x, w, b, path, Linear { sink: true })
}

/// [`linear`] for the output head, whose weight's gradient always goes to candle's store:
/// with tied embeddings the embedding lookup adds its own there, in candle's order.
pub fn head(x: &Tensor, w: &Tensor, path: OpPath) -> Result<Tensor> {
    linear_op(x, w, None, path, Linear { sink: false })
}

fn linear_op(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    path: OpPath,
    op: Linear,
) -> Result<Tensor> {
    let rows = x.elem_count() / x.dim(D::Minus1)?.max(1);
    let y = if path == OpPath::Fused && cpu_f32(x) && cpu_f32(w) {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        if rows <= few_rows::MAX_ROWS {
            x.apply_op2_no_bwd(&w, &few_rows::FewRows)?
        } else {
            // candle's product to the bit, without its element-by-element copy of `wᵀ`.
            x.apply_op2_no_bwd(&w, &op)?
        }
    } else if path == OpPath::Differentiable && cpu_f32(x) && cpu_f32(w) {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        return match b {
            Some(b) if cpu_f32(b) => x.apply_op3(&w, &b.contiguous()?, super::linear::LinearBias),
            Some(b) => x.apply_op2(&w, op)?.broadcast_add(b),
            None => x.apply_op2(&w, op),
        };
    } else {
        x.broadcast_matmul(&w.t()?)?
    };
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// SwiGLU's gated half, `silu(x · gateᵀ) * (x · upᵀ)`: on f32 CPU tensors in training one
/// op with its own backward (`swiglu.rs`), elsewhere candle's ops through [`linear`].
pub fn swiglu(x: &Tensor, gate: &Tensor, up: &Tensor, path: OpPath) -> Result<Tensor> {
    if path == OpPath::Differentiable && cpu_f32(x) && cpu_f32(gate) && cpu_f32(up) {
        return x.contiguous()?.apply_op3(
            &gate.contiguous()?,
            &up.contiguous()?,
            super::swiglu::SwiGlu::default(),
        );
    }
    swiglu_composed(x, gate, up, path)
}

fn swiglu_composed(x: &Tensor, gate: &Tensor, up: &Tensor, path: OpPath) -> Result<Tensor> {
    linear(x, gate, None, path)?.silu()? * linear(x, up, None, path)?
}

/// A projection's output `(batch, seq, heads * dim)` as attention's heads
/// `(batch, heads, seq, dim)`, contiguous, rotated by RoPE when `rope` gives its tables: on
/// f32 CPU tensors in training one op with its own backward (`heads.rs`), elsewhere a
/// reshape, a transpose and [`rope`] or a copy.
pub fn split_heads(
    x: &Tensor,
    heads: usize,
    rope: Option<(&Tensor, &Tensor)>,
    path: OpPath,
) -> Result<Tensor> {
    if path == OpPath::Differentiable && cpu_f32(x) {
        let rope = match rope {
            Some((cos, sin)) => Some(fused::Rope::new(cos, sin)?),
            None => None,
        };
        return x
            .contiguous()?
            .apply_op1(super::heads::SplitHeads { heads, rope });
    }
    split_heads_composed(x, heads, rope, path)
}

fn split_heads_composed(
    x: &Tensor,
    heads: usize,
    rope: Option<(&Tensor, &Tensor)>,
    path: OpPath,
) -> Result<Tensor> {
    let (b, s, w) = x.dims3()?;
    let x = x
        .reshape((b, s, heads, w / heads.max(1)))?
        .transpose(1, 2)?;
    match rope {
        Some((cos, sin)) => self::rope(&x, cos, sin, path),
        None => x.contiguous(),
    }
}

/// Attention's heads `(batch, heads, seq, dim)` back to rows `(batch, seq, heads * dim)`: on
/// f32 CPU tensors in training one op with its own backward (`heads.rs`), elsewhere a
/// transpose and a reshape.
pub fn merge_heads(x: &Tensor, path: OpPath) -> Result<Tensor> {
    if path == OpPath::Differentiable && cpu_f32(x) {
        return x.contiguous()?.apply_op1(super::heads::MergeHeads);
    }
    merge_heads_composed(x)
}

fn merge_heads_composed(x: &Tensor) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, s, h * d))
}

/// Root-mean-square normalisation, computed in f32 as Hugging Face's `Qwen2RMSNorm` does.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, path: OpPath) -> Result<Tensor> {
    match path {
        OpPath::Fused => candle_nn::ops::rms_norm(x, weight, eps as f32),
        OpPath::Differentiable if cpu_f32(x) && cpu_f32(weight) => x
            .contiguous()?
            .apply_op2(&weight.contiguous()?, fused::RmsNorm { eps: eps as f32 }),
        OpPath::Differentiable => rms_norm_composed(x, weight, eps),
    }
}

/// [`rms_norm`] from differentiable primitives.
fn rms_norm_composed(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = if dtype == DType::BF16 || dtype == DType::F16 {
        x.to_dtype(DType::F32)?
    } else {
        x.clone()
    };
    let rms = (xf.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    xf.broadcast_div(&rms)?
        .to_dtype(dtype)?
        .broadcast_mul(weight)
}

/// Whether the fused kernels with a backward ([`fused`]) take `x`: f32 on the CPU.
fn cpu_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Softmax over the last dimension. The max is subtracted for stability; it is detached
/// because softmax is invariant to the shift, so its gradient is exactly zero.
pub fn softmax_last_dim(x: &Tensor, path: OpPath) -> Result<Tensor> {
    match path {
        OpPath::Fused => candle_nn::ops::softmax_last_dim(x),
        OpPath::Differentiable if cpu_f32(x) => x.contiguous()?.apply_op1(fused::Softmax),
        OpPath::Differentiable => softmax_composed(x),
    }
}

fn softmax_composed(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Log-softmax over the last dimension (differentiable; the max shift is detached).
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if cpu_f32(x) {
        return x.contiguous()?.apply_op1(fused::LogSoftmax);
    }
    log_softmax_composed(x)
}

fn log_softmax_composed(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Rotary position embedding in the "rotate half" layout Qwen2 uses.
///
/// `x` is `(batch, heads, seq, head_dim)`; `cos` and `sin` are `(seq, head_dim / 2)` or
/// `(batch, seq, head_dim / 2)` (a position per row).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, path: OpPath) -> Result<Tensor> {
    match path {
        OpPath::Fused => candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin),
        OpPath::Differentiable if cpu_f32(x) => {
            x.contiguous()?.apply_op1(fused::Rope::new(cos, sin)?)
        }
        OpPath::Differentiable => rope_composed(x, cos, sin),
    }
}

fn rope_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let (cos, sin) = match cos.rank() {
        2 => (
            cos.unsqueeze(0)?.unsqueeze(0)?,
            sin.unsqueeze(0)?.unsqueeze(0)?,
        ),
        _ => (cos.unsqueeze(1)?, sin.unsqueeze(1)?),
    };
    let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?;
    let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::max_diff;
    use candle_core::Device;

    #[test]
    fn differentiable_ops_match_fused_kernels() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 5, 8), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 8, &dev).unwrap();
        let a = rms_norm(&x, &w, 1e-6, OpPath::Fused).unwrap();
        let b = rms_norm(&x, &w, 1e-6, OpPath::Differentiable).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);

        let a = softmax_last_dim(&x, OpPath::Fused).unwrap();
        let b = softmax_last_dim(&x, OpPath::Differentiable).unwrap();
        assert!(max_diff(&a, &b) < 1e-6);

        let cos = Tensor::randn(0f32, 1., (5, 4), &dev).unwrap();
        let sin = Tensor::randn(0f32, 1., (5, 4), &dev).unwrap();
        let a = rope(&x, &cos, &sin, OpPath::Fused).unwrap();
        let b = rope(&x, &cos, &sin, OpPath::Differentiable).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);

        let ls = log_softmax_last_dim(&x).unwrap();
        let direct = softmax_last_dim(&x, OpPath::Fused).unwrap().log().unwrap();
        assert!(max_diff(&ls, &direct) < 1e-5);
    }

    /// Gradients of `sum(f(inputs) * probe)` with respect to each input.
    fn grads_of(
        inputs: &[&candle_core::Var],
        probe: &Tensor,
        f: impl Fn() -> Result<Tensor>,
    ) -> Vec<Tensor> {
        let loss = (f().unwrap() * probe).unwrap().sum_all().unwrap();
        let store = loss.backward().unwrap();
        inputs
            .iter()
            .map(|v| store.get(v.as_tensor()).unwrap().clone())
            .collect()
    }

    #[test]
    fn fused_kernels_match_the_compositions_in_value_and_gradient() {
        use candle_core::Var;
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (2, 3, 5, 8), &dev).unwrap();
        let w = Var::randn(1f32, 0.1, 8, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1., (2, 3, 5, 8), &dev).unwrap();
        let close = |a: &[Tensor], b: &[Tensor]| {
            for (a, b) in a.iter().zip(b) {
                assert!(max_diff(a, b) < 1e-5, "{}", max_diff(a, b));
            }
        };
        let (xs, both) = (&[&x][..], &[&x, &w][..]);
        let path = OpPath::Differentiable;
        close(
            &grads_of(both, &probe, || rms_norm(&x, &w, 1e-6, path)),
            &grads_of(both, &probe, || rms_norm_composed(&x, &w, 1e-6)),
        );
        close(
            &grads_of(xs, &probe, || softmax_last_dim(&x, path)),
            &grads_of(xs, &probe, || softmax_composed(&x)),
        );
        close(
            &grads_of(xs, &probe, || log_softmax_last_dim(&x)),
            &grads_of(xs, &probe, || log_softmax_composed(&x)),
        );
        // One table for every row, and one per batch row.
        for shape in [&[5, 4][..], &[2, 5, 4][..]] {
            let cos = Tensor::randn(0f32, 1., shape, &dev).unwrap();
            let sin = Tensor::randn(0f32, 1., shape, &dev).unwrap();
            close(
                &grads_of(xs, &probe, || rope(&x, &cos, &sin, path)),
                &grads_of(xs, &probe, || rope_composed(&x, &cos, &sin)),
            );
            let fused = rope(&x, &cos, &sin, path).unwrap();
            let composed = rope_composed(&x, &cos, &sin).unwrap();
            assert!(max_diff(&fused, &composed) < 1e-5);
        }
        let fused = rms_norm(&x, &w, 1e-6, path).unwrap();
        assert!(max_diff(&fused, &rms_norm_composed(&x, &w, 1e-6).unwrap()) < 1e-5);
    }

    /// Splitting into heads (with and without RoPE, one table or one per batch row) and
    /// merging back against the compositions: the same values to the bit, and the gradient.
    #[test]
    fn head_ops_match_the_compositions_in_value_and_gradient() {
        use candle_core::Var;
        let dev = Device::Cpu;
        let path = OpPath::Differentiable;
        let x = Var::randn(0f32, 1., (2, 5, 3 * 8), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1., (2, 3, 5, 8), &dev).unwrap();
        let tables: Vec<Option<(Tensor, Tensor)>> = [&[5, 4][..], &[2, 5, 4][..]]
            .iter()
            .map(|shape| {
                let t = || Tensor::randn(0f32, 1., *shape, &dev).unwrap();
                Some((t(), t()))
            })
            .chain([None])
            .collect();
        for rope in &tables {
            let rope = rope.as_ref().map(|(c, s)| (c, s));
            let ours = || split_heads(&x, 3, rope, path);
            let composed = || split_heads_composed(&x, 3, rope, path);
            assert_eq!(max_diff(&ours().unwrap(), &composed().unwrap()), 0.0);
            let (a, c) = (
                grads_of(&[&x], &probe, ours),
                grads_of(&[&x], &probe, composed),
            );
            assert!(max_diff(&a[0], &c[0]) < 1e-5, "{}", max_diff(&a[0], &c[0]));
        }
        let h = Var::randn(0f32, 1., (2, 3, 5, 8), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1., (2, 5, 24), &dev).unwrap();
        let ours = || merge_heads(&h, path);
        let composed = || merge_heads_composed(&h);
        assert_eq!(max_diff(&ours().unwrap(), &composed().unwrap()), 0.0);
        let (a, c) = (
            grads_of(&[&h], &probe, ours),
            grads_of(&[&h], &probe, composed),
        );
        assert_eq!(max_diff(&a[0], &c[0]), 0.0);
    }

    /// The SwiGLU op against candle's product, `silu` and product of halves, on rows of rank
    /// 3 and of rank 2: the same values to the bit, and the gradients of the rows and both
    /// weights.
    #[test]
    fn swiglu_op_matches_candles_composition_in_value_and_gradient() {
        use candle_core::Var;
        let dev = Device::Cpu;
        let gate = Var::randn(0f32, 1., (7, 12), &dev).unwrap();
        let up = Var::randn(0f32, 1., (7, 12), &dev).unwrap();
        for shape in [&[2, 5, 12][..], &[9, 12][..]] {
            let x = Var::randn(0f32, 1., shape, &dev).unwrap();
            let mut out = shape.to_vec();
            *out.last_mut().unwrap() = 7;
            let probe = Tensor::randn(0f32, 1., out, &dev).unwrap();
            let all = &[&x, &gate, &up][..];
            let candle =
                || x.broadcast_matmul(&gate.t()?)?.silu()? * x.broadcast_matmul(&up.t()?)?;
            let ours = || swiglu(&x, &gate, &up, OpPath::Differentiable);
            let composed = || swiglu_composed(&x, &gate, &up, OpPath::Differentiable);
            let diff = max_diff(&ours().unwrap(), &candle().unwrap());
            assert!(diff < 1e-5, "{shape:?}: value {diff}");
            assert_eq!(max_diff(&ours().unwrap(), &composed().unwrap()), 0.0);
            for (a, c) in grads_of(all, &probe, ours)
                .iter()
                .zip(grads_of(all, &probe, candle))
            {
                let diff = max_diff(a, &c);
                assert!(diff < 1e-4, "{shape:?}: gradient {diff}");
            }
        }
    }

    /// Sampling's many-row products (a prompt's prefill) through the linear op are candle's
    /// product to the bit, with and without a bias.
    #[test]
    fn the_fused_path_gives_candles_product_to_the_bit() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (50, 40), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., 50, &dev).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 20, 40), &dev).unwrap();
        let bits = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bits = |t| bits(t).into_iter().map(f32::to_bits).collect::<Vec<_>>();
        let candle = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        let ours = linear(&x, &w, None, OpPath::Fused).unwrap();
        assert_eq!(bits(ours), bits(candle.clone()));
        let ours = linear(&x, &w, Some(&b), OpPath::Fused).unwrap();
        assert_eq!(bits(ours), bits(candle.broadcast_add(&b).unwrap()));
    }

    /// The linear op against candle's product, with and without a bias, on rows of rank 3 and
    /// of rank 2, in value and in the gradients of the rows, the weight and the bias.
    #[test]
    fn linear_op_matches_candles_product_in_value_and_gradient() {
        use candle_core::Var;
        let dev = Device::Cpu;
        let w = Var::randn(0f32, 1., (7, 12), &dev).unwrap();
        let b = Var::randn(0f32, 1., 7, &dev).unwrap();
        for shape in [&[2, 5, 12][..], &[9, 12][..]] {
            let x = Var::randn(0f32, 1., shape, &dev).unwrap();
            let mut out = shape.to_vec();
            *out.last_mut().unwrap() = 7;
            let probe = Tensor::randn(0f32, 1., out, &dev).unwrap();
            for bias in [true, false] {
                let all = if bias {
                    &[&x, &w, &b][..]
                } else {
                    &[&x, &w][..]
                };
                let candle = || {
                    let y = x.broadcast_matmul(&w.t()?)?;
                    if bias {
                        y.broadcast_add(&b)
                    } else {
                        Ok(y)
                    }
                };
                let ours = || linear(&x, &w, bias.then_some(&*b), OpPath::Differentiable);
                let diff = max_diff(&ours().unwrap(), &candle().unwrap());
                assert!(diff < 1e-5, "{shape:?}, bias {bias}: value {diff}");
                for (a, c) in grads_of(all, &probe, ours)
                    .iter()
                    .zip(grads_of(all, &probe, candle))
                {
                    let diff = max_diff(a, &c);
                    assert!(diff < 1e-4, "{shape:?}, bias {bias}: gradient {diff}");
                }
            }
        }
    }
}
