//! A linear layer's product `x · wᵀ` as one op with its own backward, on f32 CPU tensors.
//!
//! candle builds it from a transposed view of the weight, a broadcast of that view over the
//! batch and a batched product. In the backward pass each of the three gets a weight-sized
//! gradient that is zeroed and added to, and the broadcast's is summed over the batch: per
//! layer, per projection and per piece of a batch. Here the backward takes `dx = g · w` and
//! `dw = gᵀ · x` straight from the output's gradient, each as one product over every row.
//! With a bias ([`LinearBias`]) the op also adds it, so the bias's gradient is a column sum
//! of `g` rather than candle's strided sum over a broadcast. `ops` holds both against
//! candle's product, in value and gradient.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::fused::{data, storage_data, with_last};
use super::grad_sink;
use super::product::{product_new, Mat};

/// `y = x · wᵀ` for `x` of shape `(..., in)` and `w` of shape `(out, in)`, both contiguous.
/// With `sink`, the weight's gradient goes to an open [`grad_sink`].
pub struct Linear {
    pub sink: bool,
}

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
        let (x, w) = (data(s1, l1, self.name())?, data(s2, l2, self.name())?);
        forward(x, l1, w, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward(x, w, g, false)?;
        let dw = match self.sink {
            true => grad_sink::offer(w, dw)?,
            false => Some(dw),
        };
        Ok((Some(dx), dw))
    }
}

/// `y = x · wᵀ + b` for `x` of shape `(..., in)`, `w` of shape `(out, in)` and `b` of shape
/// `(out)`, all contiguous.
pub struct LinearBias;

impl CustomOp3 for LinearBias {
    fn name(&self) -> &'static str {
        "chartrl-linear-bias"
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
        let (x, w) = (data(s1, l1, self.name())?, data(s2, l2, self.name())?);
        let b = data(s3, l3, self.name())?;
        forward(x, l1, w, l2, Some(b))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = backward(x, w, g, true)?;
        let db = db
            .map(|db| Tensor::from_vec(db, b.shape(), b.device()))
            .transpose()?;
        Ok((Some(dx), grad_sink::offer(w, dw)?, db))
    }
}

/// `x · wᵀ (+ b)`, with the output's shape.
fn forward(
    x: &[f32],
    xl: &Layout,
    w: &[f32],
    wl: &Layout,
    b: Option<&[f32]>,
) -> Result<(CpuStorage, Shape)> {
    let (m, k, n) = Linear::dims(xl, wl)?;
    let mut y = product_new((m, k, n), Mat::rows(x, k), Mat::transposed(w, k));
    if let Some(b) = b {
        if b.len() != n {
            candle_core::bail!("linear: a bias of {} for {n} outputs", b.len());
        }
        for row in y.chunks_exact_mut(n) {
            row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
        }
    }
    Ok((CpuStorage::F32(y), with_last(xl, n)))
}

/// `dx = g · w`, `dw = gᵀ · x` and, with `bias`, the bias's gradient: the column sums of `g`.
fn backward(
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    bias: bool,
) -> Result<(Tensor, Tensor, Option<Vec<f32>>)> {
    let (m, k, n) = Linear::dims(x.layout(), w.layout())?;
    let g = g.contiguous()?;
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (gs, gl) = g.storage_and_layout();
    let cpu = |s, l| storage_data(s, l, "linear");
    let (xd, wd, gd) = (cpu(&xs, xl)?, cpu(&ws, wl)?, cpu(&gs, gl)?);
    let dx = product_new((m, n, k), Mat::rows(gd, n), Mat::rows(wd, k));
    let dw = product_new((n, m, k), Mat::transposed(gd, n), Mat::rows(xd, k));
    let db = bias.then(|| {
        let mut db = vec![0f32; n];
        for row in gd.chunks_exact(n) {
            db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
        }
        db
    });
    Ok((
        Tensor::from_vec(dx, x.shape(), x.device())?,
        Tensor::from_vec(dw, w.shape(), w.device())?,
        db,
    ))
}
