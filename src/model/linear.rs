//! A linear layer's product `x · wᵀ` as one op with its own backward, on f32 CPU tensors.
//!
//! candle builds it from a transposed view of the weight, a broadcast of that view over the
//! batch and a batched product. In the backward pass each of the three gets a weight-sized
//! gradient that is zeroed and added to, and the broadcast's is summed over the batch: per
//! layer, per projection and per piece of a batch. Here the backward takes `dx = g · w` and
//! `dw = gᵀ · x` straight from the output's gradient, each as one product over every row.
//! `ops` holds it against candle's product, in value and gradient.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Storage, Tensor};

use super::fused::data;
use super::product::{product_new, Mat};

/// `y = x · wᵀ` for `x` of shape `(..., in)` and `w` of shape `(out, in)`, both contiguous.
pub struct Linear;

impl Linear {
    /// `(rows, in, out)`, checked.
    fn dims(x: &Layout, w: &Layout) -> Result<(usize, usize, usize)> {
        let (n, k) = w.shape().dims2()?;
        if k == 0 || x.dims().last() != Some(&k) {
            candle_core::bail!("linear: rows of {:?} against a {n}x{k} weight", x.dims());
        }
        Ok((x.shape().elem_count() / k, k, n))
    }
}

/// The contiguous f32 data of a CPU tensor's storage.
fn cpu<'a>(s: &'a Storage, l: &Layout) -> Result<&'a [f32]> {
    match s {
        Storage::Cpu(s) => data(s, l, "linear"),
        _ => candle_core::bail!("linear: not a CPU tensor"),
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "chartrl-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k, n) = Self::dims(l1, l2)?;
        let (x, w) = (data(s1, l1, self.name())?, data(s2, l2, self.name())?);
        let y = product_new((m, k, n), Mat::rows(x, k), Mat::transposed(w, k));
        let mut dims = l1.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (m, k, n) = Self::dims(x.layout(), w.layout())?;
        let g = g.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        let (xd, wd, gd) = (cpu(&xs, xl)?, cpu(&ws, wl)?, cpu(&gs, gl)?);
        let dx = product_new((m, n, k), Mat::rows(gd, n), Mat::rows(wd, k));
        let dw = product_new((n, m, k), Mat::transposed(gd, n), Mat::rows(xd, k));
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
        ))
    }
}
