//! Moving a projection's output between its row layout `(batch, seq, heads * dim)` and
//! attention's head layout `(batch, heads, seq, dim)`, as ops with their own backward, on f32
//! CPU tensors in training.
//!
//! As candle ops the split is a reshape, a transpose, a copy and (for queries and keys) the
//! rotation, and the merge a transpose and a copy: per layer some nine graph nodes of the
//! activations' size, each of which gets a gradient in the backward pass that is zeroed and
//! added to, through strided views. Here each direction is one copy (with the rotation done in
//! place), and its backward the inverse copy. The values are bit for bit those of the
//! composition; `ops` holds the gradients against it.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::fused::{data, values, Rope};

/// `(b, a, c, d)` → `(b, c, a, d)`, row-major.
fn swap_middle(x: &[f32], (b, a, c, d): (usize, usize, usize, usize)) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for bi in 0..b {
        for ai in 0..a {
            for ci in 0..c {
                let from = ((bi * a + ai) * c + ci) * d;
                let to = ((bi * c + ci) * a + ai) * d;
                y[to..to + d].copy_from_slice(&x[from..from + d]);
            }
        }
    }
    y
}

/// `(batch, seq, heads * dim)` → `(batch, heads, seq, dim)`, rotated by `rope` when given.
pub struct SplitHeads {
    pub heads: usize,
    pub rope: Option<Rope>,
}

impl SplitHeads {
    /// `(batch, seq, heads, dim)`, checked.
    fn dims(&self, dims: &[usize]) -> Result<(usize, usize, usize, usize)> {
        match *dims {
            [b, s, w] if self.heads > 0 && w % self.heads == 0 => {
                Ok((b, s, self.heads, w / self.heads))
            }
            _ => candle_core::bail!("split-heads: {dims:?} into {} heads", self.heads),
        }
    }
}

impl CustomOp1 for SplitHeads {
    fn name(&self) -> &'static str {
        "chartrl-split-heads"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, sq, h, d) = self.dims(l.dims())?;
        let mut y = swap_middle(data(s, l, self.name())?, (b, sq, h, d));
        if let Some(rope) = &self.rope {
            rope.rotate_in_place(&mut y, &[b, h, sq, d], 1.0)?;
        }
        Ok((CpuStorage::F32(y), Shape::from((b, h, sq, d))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (b, sq, h, d) = self.dims(x.dims())?;
        let mut g = values(g)?;
        if let Some(rope) = &self.rope {
            rope.rotate_in_place(&mut g, &[b, h, sq, d], -1.0)?;
        }
        let dx = swap_middle(&g, (b, h, sq, d));
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// `(batch, heads, seq, dim)` → `(batch, seq, heads * dim)`.
pub struct MergeHeads;

impl CustomOp1 for MergeHeads {
    fn name(&self) -> &'static str {
        "chartrl-merge-heads"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, h, sq, d) = l.shape().dims4()?;
        let y = swap_middle(data(s, l, self.name())?, (b, h, sq, d));
        Ok((CpuStorage::F32(y), Shape::from((b, sq, h * d))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (b, h, sq, d) = x.dims4()?;
        let dx = swap_middle(&values(g)?, (b, sq, h, d));
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}
