//! CPU kernels with their own backward for the ops a training forward would otherwise build
//! from many small differentiable primitives: RMSNorm, softmax, log-softmax and RoPE.
//!
//! Composed from primitives, one RMSNorm is seven graph nodes and one RoPE about ten; in the
//! backward pass each node allocates, zeroes and adds its gradient, and together they spent
//! more of a warm-start step than its matrix products did. Each op here is one node: a loop
//! over rows forward, and the hand-derived gradient backward (formulas beside each). They run
//! on f32 CPU tensors (what training uses on the CPU); `ops` keeps the compositions for every
//! other device and dtype, and the tests hold the two against each other, values and
//! gradients.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

/// The contiguous f32 data of a custom op's input.
pub(super) fn data<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let all = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&all[a..b]),
        None => candle_core::bail!("{op}: the input is not contiguous"),
    }
}

/// The contiguous f32 data of a tensor's storage (`op` names the op in errors): for backward
/// passes that read their inputs in place, through `Tensor::storage_and_layout`.
pub(super) fn storage_data<'a>(
    s: &'a candle_core::Storage,
    l: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    match s {
        candle_core::Storage::Cpu(s) => data(s, l, op),
        _ => candle_core::bail!("{op}: not a CPU tensor"),
    }
}

/// `l`'s shape with its last dimension replaced by `n`: a product's output shape.
pub(super) fn with_last(l: &Layout, n: usize) -> Shape {
    let mut dims = l.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Shape::from(dims)
}

/// A tensor's values in row-major order (for the backward passes).
pub(super) fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1).max(1)
}

/// Applies `f(row, out)` to every last-dimension row of `x` (rows of `d`).
fn map_rows(x: &[f32], d: usize, f: impl Fn(&[f32], &mut [f32])) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        f(xr, yr);
    }
    y
}

/// The gradient of a row-wise op from its output `y` and the output's gradient `g`:
/// `f(y_row, g_row, dx_row)` for every row.
fn grad_rows(y: &Tensor, g: &Tensor, f: impl Fn(&[f32], &[f32], &mut [f32])) -> Result<Tensor> {
    let (yv, gv) = (values(y)?, values(g)?);
    let d = y.dims().last().copied().unwrap_or(1).max(1);
    let mut dx = vec![0f32; yv.len()];
    for ((yr, gr), dr) in yv
        .chunks_exact(d)
        .zip(gv.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
    {
        f(yr, gr, dr);
    }
    Tensor::from_vec(dx, y.shape(), y.device())
}

fn row_max(row: &[f32]) -> f32 {
    row.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Softmax of one row in place: the training forward's kernel, shared with the decode loops.
pub(super) fn softmax_in_place(row: &mut [f32]) {
    let max = row_max(row);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Softmax over the last dimension. Backward: `dx = y * (g - sum(g * y))` per row.
pub struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "chartrl-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = map_rows(data(s, l, self.name())?, last_dim(l), |xr, yr| {
            yr.copy_from_slice(xr);
            softmax_in_place(yr);
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let dx = grad_rows(y, g, |yr, gr, dr| {
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for ((o, &yi), &gi) in dr.iter_mut().zip(yr).zip(gr) {
                *o = yi * (gi - dot);
            }
        })?;
        Ok(Some(dx))
    }
}

/// Log-softmax over the last dimension. Backward: `dx = g - exp(y) * sum(g)` per row.
pub struct LogSoftmax;

impl CustomOp1 for LogSoftmax {
    fn name(&self) -> &'static str {
        "chartrl-log-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = map_rows(data(s, l, self.name())?, last_dim(l), |xr, yr| {
            let max = row_max(xr);
            let lse = xr.iter().map(|&v| (v - max).exp()).sum::<f32>().ln() + max;
            for (yi, &xi) in yr.iter_mut().zip(xr) {
                *yi = xi - lse;
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let dx = grad_rows(y, g, |yr, gr, dr| {
            let sum: f32 = gr.iter().sum();
            for ((o, &yi), &gi) in dr.iter_mut().zip(yr).zip(gr) {
                *o = gi - yi.exp() * sum;
            }
        })?;
        Ok(Some(dx))
    }
}

/// RMSNorm of `x` (`..., d`) with weight `w` (`d`): `y = x * r * w`, `r = 1 / sqrt(mean(x²) +
/// eps)` per row. Backward, with `gw = g * w`: `dx = r * gw - x * r³ * sum(gw * x) / d` and
/// `dw = sum over rows of g * x * r`.
pub struct RmsNorm {
    pub eps: f32,
}

impl RmsNorm {
    fn rsqrt(&self, row: &[f32]) -> f32 {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        1.0 / (ms + self.eps).sqrt()
    }

    /// The forward pass over every row of `x` (rows of `w.len()`); also decoding's RMSNorm.
    pub(super) fn rows(&self, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(w.len()).zip(y.chunks_exact_mut(w.len())) {
            let r = self.rsqrt(xr);
            for ((o, &xi), &wi) in yr.iter_mut().zip(xr).zip(w) {
                *o = xi * r * wi;
            }
        }
        y
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "chartrl-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (data(s1, l1, self.name())?, data(s2, l2, self.name())?);
        let d = last_dim(l1);
        if w.len() != d {
            candle_core::bail!("{}: weight of {} for rows of {d}", self.name(), w.len());
        }
        Ok((CpuStorage::F32(self.rows(x, w)), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (xv, wv, gv) = (values(x)?, values(w)?, values(g)?);
        let d = wv.len().max(1);
        let mut dx = vec![0f32; xv.len()];
        let mut dw = vec![0f32; d];
        for ((xr, gr), dr) in xv
            .chunks_exact(d)
            .zip(gv.chunks_exact(d))
            .zip(dx.chunks_exact_mut(d))
        {
            let r = self.rsqrt(xr);
            let dot: f32 = (0..d).map(|i| gr[i] * wv[i] * xr[i]).sum();
            let c = r * r * r * dot / d as f32;
            for i in 0..d {
                dr[i] = r * gr[i] * wv[i] - xr[i] * c;
                dw[i] += gr[i] * xr[i] * r;
            }
        }
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
        ))
    }
}

/// Rotary embedding in the "rotate half" layout on `x` `(batch, heads, seq, dim)`, with
/// `cos`/`sin` of `(seq, dim / 2)` or, per row, `(batch, seq, dim / 2)`:
/// `y1 = x1 c - x2 s`, `y2 = x2 c + x1 s`. It is a rotation, so the backward is the rotation
/// by the opposite angle: the same kernel with `-s`.
pub struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// One table per batch row.
    per_row: bool,
}

impl Rope {
    pub fn new(cos: &Tensor, sin: &Tensor) -> Result<Self> {
        Ok(Self {
            cos: values(cos)?,
            sin: values(sin)?,
            per_row: cos.rank() == 3,
        })
    }

    /// Rotates `x` (`dims` as `x`'s) by the tables, `sign` = -1 for the inverse.
    fn rotate(&self, x: &[f32], dims: &[usize], sign: f32) -> Result<Vec<f32>> {
        let mut y = x.to_vec();
        self.rotate_in_place(&mut y, dims, sign)?;
        Ok(y)
    }

    /// [`Rope::rotate`] in place.
    pub(super) fn rotate_in_place(&self, x: &mut [f32], dims: &[usize], sign: f32) -> Result<()> {
        let [b, h, s, d] = dims else {
            candle_core::bail!("chartrl-rope: expected (batch, heads, seq, dim), got {dims:?}");
        };
        let half = d / 2;
        let rows = if self.per_row { *b } else { 1 };
        if self.cos.len() != rows * s * half || self.sin.len() != self.cos.len() {
            candle_core::bail!("chartrl-rope: tables of {} for {dims:?}", self.cos.len());
        }
        if x.len() != b * h * s * d {
            candle_core::bail!("chartrl-rope: {} values for {dims:?}", x.len());
        }
        for (n, xr) in x.chunks_exact_mut(*d).enumerate() {
            let (bi, si) = (n / (h * s), n % s);
            let t = ((if self.per_row { bi } else { 0 }) * s + si) * half;
            let (c, sn) = (&self.cos[t..t + half], &self.sin[t..t + half]);
            let (x1, x2) = xr.split_at_mut(half);
            for i in 0..half {
                let si = sign * sn[i];
                let (a, b) = (x1[i], x2[i]);
                x1[i] = a * c[i] - b * si;
                x2[i] = b * c[i] + a * si;
            }
        }
        Ok(())
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "chartrl-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = data(s, l, self.name())?;
        let y = self.rotate(x, l.dims(), 1.0)?;
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let dx = self.rotate(&values(g)?, x.dims(), -1.0)?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}
