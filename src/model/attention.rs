//! Causal attention as one op with its own backward, on f32 CPU tensors.
//!
//! Composed from candle's primitives, attention materialises the whole `(queries, keys)` score
//! matrix four times (products, scale, mask, softmax), each with a gradient that the backward
//! pass allocates, zeroes and adds, and it computes the masked half of the products only to
//! discard them. Here the scores of a block of query rows live only in a scratch buffer, over
//! the keys those rows may see: forward computes them, takes their softmax and sums the values;
//! backward recomputes them (as flash attention does) and accumulates the three gradients.
//! `qwen2` holds it against the composition, in value and gradient.

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::fused::{data, softmax_in_place, values};
use super::product::{product, Mat};

/// Query rows whose scores are computed together. Each block's products run over the keys its
/// last row sees, so the masked half of the scores is mostly never computed.
const BLOCK: usize = 64;

/// Attention of queries `(batch, heads, seq, head_dim)` over keys and values `(batch,
/// kv_heads, past + seq, head_dim)`: query `i` sees keys `0..=past + i`, and query head `h`
/// reads key/value head `h / (heads / kv_heads)`. Scores are scaled by `1/sqrt(head_dim)`.
pub struct CausalAttention;

/// The shapes of one call.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    seq: usize,
    keys: usize,
    d: usize,
}

impl Dims {
    fn of(q: &[usize], k: &[usize], v: &[usize]) -> Result<Self> {
        let (&[batch, heads, seq, d], &[kb, kv_heads, keys, kd]) = (q, k) else {
            candle_core::bail!("causal attention: queries {q:?} and keys {k:?} must be rank 4");
        };
        let fits = kb == batch && kd == d && k == v && keys >= seq && kv_heads > 0 && d > 0;
        if !fits || heads % kv_heads != 0 {
            candle_core::bail!("causal attention: queries {q:?}, keys {k:?} and values {v:?}");
        }
        Ok(Self {
            batch,
            heads,
            kv_heads,
            seq,
            keys,
            d,
        })
    }

    fn past(&self) -> usize {
        self.keys - self.seq
    }

    fn scale(&self) -> f32 {
        (1.0 / (self.d as f64).sqrt()) as f32
    }

    /// Every query head's `(query rows, key rows)` ranges: `seq * d` values of the queries
    /// (outputs, their gradients) and `keys * d` of its key/value head, in storage order.
    fn heads(&self) -> impl Iterator<Item = (Range<usize>, Range<usize>)> {
        let d = *self;
        let group = d.heads / d.kv_heads;
        (0..d.batch * d.heads).map(move |bh| {
            let (b, h) = (bh / d.heads, bh % d.heads);
            let q0 = bh * d.seq * d.d;
            let k0 = (b * d.kv_heads + h / group) * d.keys * d.d;
            (q0..q0 + d.seq * d.d, k0..k0 + d.keys * d.d)
        })
    }

    /// The blocks of query rows: `(first row, rows, keys the last row sees)`.
    fn blocks(&self) -> impl Iterator<Item = (usize, usize, usize)> {
        let (seq, past) = (self.seq, self.past());
        (0..seq).step_by(BLOCK).map(move |i0| {
            let rows = BLOCK.min(seq - i0);
            (i0, rows, past + i0 + rows)
        })
    }
}

/// The softmax of one block's scaled scores, `n` per row in `p`: rows `i0..i0 + rows` of the
/// queries `q` (one head) against the first `n` rows of the keys `k`, with the keys a row may
/// not see set to 0.
fn probs(
    dims: &Dims,
    q: &[f32],
    k: &[f32],
    (i0, rows, n): (usize, usize, usize),
    p: &mut Vec<f32>,
) {
    let d = dims.d;
    p.resize(rows * n, 0.0);
    let q_block = Mat::rows(&q[i0 * d..(i0 + rows) * d], d);
    product(
        p,
        false,
        (rows, d, n),
        q_block,
        Mat::transposed(&k[..n * d], d),
    );
    let (scale, past) = (dims.scale(), dims.past());
    for (r, row) in p[..rows * n].chunks_exact_mut(n).enumerate() {
        let (seen, masked) = row.split_at_mut(past + i0 + r + 1);
        seen.iter_mut().for_each(|s| *s *= scale);
        softmax_in_place(seen);
        masked.fill(0.0);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The forward pass over contiguous inputs.
fn forward(dims: &Dims, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
    let d = dims.d;
    let mut out = vec![0f32; q.len()];
    let mut p = Vec::new();
    for (qr, kr) in dims.heads() {
        for (i0, rows, n) in dims.blocks() {
            probs(dims, &q[qr.clone()], &k[kr.clone()], (i0, rows, n), &mut p);
            let o = &mut out[qr.start + i0 * d..qr.start + (i0 + rows) * d];
            let vh = Mat::rows(&v[kr.start..kr.start + n * d], d);
            product(o, false, (rows, n, d), Mat::rows(&p, n), vh);
        }
    }
    out
}

/// The gradients of queries, keys and values from the output's gradient `g`. With `P` the
/// probabilities, `O` the output and `s` the scale: `dV = Pᵀ g`, `dP = g Vᵀ`,
/// `dS = s P ⊙ (dP − rowsum(g ⊙ O))`, `dQ = dS K`, `dK = dSᵀ Q`.
struct Grads<'a> {
    dims: Dims,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    out: &'a [f32],
    g: &'a [f32],
}

impl Grads<'_> {
    fn compute(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (dims, d) = (&self.dims, self.dims.d);
        let mut dq = vec![0f32; self.q.len()];
        let mut dk = vec![0f32; self.k.len()];
        let mut dv = vec![0f32; self.v.len()];
        let (mut p, mut ds) = (Vec::new(), Vec::new());
        for (qr, kr) in dims.heads() {
            for (i0, rows, n) in dims.blocks() {
                probs(
                    dims,
                    &self.q[qr.clone()],
                    &self.k[kr.clone()],
                    (i0, rows, n),
                    &mut p,
                );
                let block = qr.start + i0 * d..qr.start + (i0 + rows) * d;
                let keys = kr.start..kr.start + n * d;
                let g = Mat::rows(&self.g[block.clone()], d);
                ds.resize(rows * n, 0.0);
                product(
                    &mut ds,
                    false,
                    (rows, d, n),
                    g,
                    Mat::transposed(&self.v[keys.clone()], d),
                );
                self.scores_grad(block.clone(), n, &p, &mut ds);
                let (p, ds) = (&p[..rows * n], &ds[..rows * n]);
                let q = Mat::rows(&self.q[block.clone()], d);
                product(
                    &mut dq[block],
                    false,
                    (rows, n, d),
                    Mat::rows(ds, n),
                    Mat::rows(&self.k[keys.clone()], d),
                );
                product(
                    &mut dk[keys.clone()],
                    true,
                    (n, rows, d),
                    Mat::transposed(ds, n),
                    q,
                );
                product(&mut dv[keys], true, (n, rows, d), Mat::transposed(p, n), g);
            }
        }
        (dq, dk, dv)
    }

    /// Turns `dp` (`g Vᵀ` for the query rows `block`, `n` keys each) into the scores'
    /// gradient `s P ⊙ (dP − rowsum(g ⊙ O))`.
    fn scores_grad(&self, block: Range<usize>, n: usize, p: &[f32], dp: &mut [f32]) {
        let d = self.dims.d;
        let scale = self.dims.scale();
        let rows = block.len() / d;
        for r in 0..rows {
            let row = block.start + r * d..block.start + (r + 1) * d;
            let rowsum = dot(&self.g[row.clone()], &self.out[row]);
            let (pr, dr) = (&p[r * n..(r + 1) * n], &mut dp[r * n..(r + 1) * n]);
            for (ds, &pj) in dr.iter_mut().zip(pr) {
                *ds = scale * pj * (*ds - rowsum);
            }
        }
    }
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "chartrl-causal-attention"
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
        let dims = Dims::of(l1.dims(), l2.dims(), l3.dims())?;
        let name = self.name();
        let (q, k, v) = (
            data(s1, l1, name)?,
            data(s2, l2, name)?,
            data(s3, l3, name)?,
        );
        Ok((CpuStorage::F32(forward(&dims, q, k, v)), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = Dims::of(q.dims(), k.dims(), v.dims())?;
        let (qv, kv, vv, ov, gv) = (values(q)?, values(k)?, values(v)?, values(out)?, values(g)?);
        let grads = Grads {
            dims,
            q: &qv,
            k: &kv,
            v: &vv,
            out: &ov,
            g: &gv,
        };
        let (dq, dk, dv) = grads.compute();
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

/// [`CausalAttention`] over `q`, `k` and `v` (made contiguous first).
pub fn causal(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, CausalAttention)
}
