//! The first half of Qwen2's feed-forward, `silu(x · gateᵀ) * (x · upᵀ)`, as one op with its
//! own backward, on f32 CPU tensors.
//!
//! As candle ops it is four graph nodes (two products, the activation, the product of the two
//! halves), each with an intermediate-sized output; in the backward pass each gets a gradient
//! that is zeroed and added to, and the activation's derivative alone is some eight passes over
//! its input. Here the forward keeps the two pre-activations, and the backward takes the
//! gradients of both halves in one pass over them and `dx`, `d gate`, `d up` as products over
//! every row. The forward's values are bit for bit those of the composition; `ops` holds the
//! gradients against it.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::fused::{data, storage_data, with_last};
use super::grad_sink;
use super::product::{product, product_new, Mat};

/// `silu(x · gateᵀ) * (x · upᵀ)` for `x` of shape `(..., hidden)` and the two weights of shape
/// `(intermediate, hidden)`, all contiguous.
#[derive(Default)]
pub struct SwiGlu {
    /// The forward's pre-activations `x · gateᵀ` and `x · upᵀ`, for the backward.
    saved: Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

impl SwiGlu {
    /// `(rows, hidden, intermediate)`, checked.
    fn dims(x: &Layout, gate: &Layout, up: &Layout) -> Result<(usize, usize, usize)> {
        let (n, k) = gate.shape().dims2()?;
        if k == 0 || x.dims().last() != Some(&k) || up.shape().dims2()? != (n, k) {
            candle_core::bail!(
                "swiglu: rows of {:?} against weights {:?} and {:?}",
                x.dims(),
                gate.dims(),
                up.dims()
            );
        }
        Ok((x.shape().elem_count() / k, k, n))
    }

    /// The two pre-activations of rows `x` (rows of `k`).
    fn halves(x: &[f32], gate: &[f32], up: &[f32], (m, k, n): Dims) -> (Vec<f32>, Vec<f32>) {
        let g = product_new((m, k, n), Mat::rows(x, k), Mat::transposed(gate, k));
        let u = product_new((m, k, n), Mat::rows(x, k), Mat::transposed(up, k));
        (g, u)
    }
}

type Dims = (usize, usize, usize);

/// candle's `silu`, to the bit.
fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

/// The gradients of the two pre-activations from the output's gradient `dy`:
/// `d g = dy · u · silu'(g)` and `d u = dy · silu(g)`, where
/// `silu'(g) = σ(g) (1 + g (1 - σ(g)))`.
fn half_grads(dy: &[f32], g: &[f32], u: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dg = vec![0f32; g.len()];
    let mut du = vec![0f32; g.len()];
    for i in 0..g.len() {
        let s = 1.0 / (1.0 + (-g[i]).exp());
        dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
        du[i] = dy[i] * g[i] * s;
    }
    (dg, du)
}

impl CustomOp3 for SwiGlu {
    fn name(&self) -> &'static str {
        "chartrl-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = Self::dims(l1, l2, l3)?;
        let x = data(s1, l1, self.name())?;
        let (gate, up) = (data(s2, l2, self.name())?, data(s3, l3, self.name())?);
        let (g, u) = Self::halves(x, gate, up, dims);
        let y: Vec<f32> = g.iter().zip(&u).map(|(&g, &u)| silu(g) * u).collect();
        if let Ok(mut saved) = self.saved.lock() {
            *saved = Some((g, u));
        }
        Ok((CpuStorage::F32(y), with_last(l1, dims.2)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, k, n) = Self::dims(x.layout(), gate.layout(), up.layout())?;
        let dy = dy.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (gs, gl) = gate.storage_and_layout();
        let (us, ul) = up.storage_and_layout();
        let (ds, dl) = dy.storage_and_layout();
        let cpu = |s, l| storage_data(s, l, "swiglu");
        let (xd, gw, uw) = (cpu(&xs, xl)?, cpu(&gs, gl)?, cpu(&us, ul)?);
        // Taken, not copied: a graph is differentiated once (a second pass recomputes them).
        let saved = self.saved.lock().ok().and_then(|mut s| s.take());
        let (g, u) = saved.unwrap_or_else(|| Self::halves(xd, gw, uw, (m, k, n)));
        let (dg, du) = half_grads(cpu(&ds, dl)?, &g, &u);
        let mut dx = product_new((m, n, k), Mat::rows(&dg, n), Mat::rows(gw, k));
        product(
            &mut dx,
            true,
            (m, n, k),
            Mat::rows(&du, n),
            Mat::rows(uw, k),
        );
        let dgate = product_new((n, m, k), Mat::transposed(&dg, n), Mat::rows(xd, k));
        let dup = product_new((n, m, k), Mat::transposed(&du, n), Mat::rows(xd, k));
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            grad_sink::offer(gate, Tensor::from_vec(dgate, gate.shape(), gate.device())?)?,
            grad_sink::offer(up, Tensor::from_vec(dup, up.shape(), up.device())?)?,
        ))
    }
}
