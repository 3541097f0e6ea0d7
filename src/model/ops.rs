//! The few ops where candle-nn's fused kernels carry no gradient.
//!
//! `softmax_last_dim`, `rms_norm` and `rotary_emb::rope` do not fail under autograd: they
//! silently cut the graph. The training forward therefore uses the compositions below, which
//! are built from differentiable primitives; the sampling forward (no graph) uses the fused
//! kernels, which are faster. Tests hold both against each other and against
//! candle-transformers' qwen2.

use candle_core::{DType, Result, Tensor, D};

/// Which implementation of the non-differentiable-by-default ops to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpPath {
    /// Differentiable compositions: every parameter upstream gets its gradient.
    Differentiable,
    /// candle-nn's fused kernels: no backward, for sampling only.
    Fused,
}

/// Root-mean-square normalisation, computed in f32 as Hugging Face's `Qwen2RMSNorm` does.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, path: OpPath) -> Result<Tensor> {
    match path {
        OpPath::Fused => candle_nn::ops::rms_norm(x, weight, eps as f32),
        OpPath::Differentiable => {
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
    }
}

/// Softmax over the last dimension. The max is subtracted for stability; it is detached
/// because softmax is invariant to the shift, so its gradient is exactly zero.
pub fn softmax_last_dim(x: &Tensor, path: OpPath) -> Result<Tensor> {
    match path {
        OpPath::Fused => candle_nn::ops::softmax_last_dim(x),
        OpPath::Differentiable => {
            let max = x.max_keepdim(D::Minus1)?.detach();
            let e = x.broadcast_sub(&max)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
        }
    }
}

/// Log-softmax over the last dimension (differentiable; the max shift is detached).
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
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
        OpPath::Differentiable => {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

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
}
