//! Matrix products on f32 slices read in place, by candle's own CPU matrix kernel (the `gemm`
//! crate) on the calling thread: the products inside chartrl's ops with their own backward
//! (`attention.rs`, `linear.rs`), where a transposed operand is only a pair of strides and a
//! product can add into its destination.
//!
//! `gemm` copies ("packs") `bᵀ` into its own layout, and from a column-major `b` (a weight
//! read as `wᵀ`, keys as `kᵀ`) one element at a time, with a strided load: 9% of a small
//! warm-start step in `perf`. Such a `b` is transposed here first ([`super::transpose`]), a
//! vector at a time, into a buffer from a pool. The kernel then meets the same values in the
//! same order, so the products are the same, bit for bit.

use std::sync::Mutex;

use super::transpose::transpose_into;

/// Buffers for transposed operands, one per thread that multiplies at once, each as large as
/// the largest weight. They outlive the threads (a step's workers end with the step), so
/// their pages are not returned to the system and faulted in again each step.
static BUFFERS: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// The largest buffer the pool keeps (64 MB): a real model's output head (Qwen2.5-0.5B's is
/// 545 MB) is transposed into a buffer of its own, freed after its product.
const POOLED_MAX: usize = 16 << 20;

/// A matrix read in place: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with rows of `cols`.
    pub(super) fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with rows of `cols`.
    pub(super) fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }

    /// Whether this is a column-major matrix (the transpose of a row-major one), not a vector.
    fn column_major(&self) -> bool {
        self.rs == 1 && self.cs != 1
    }

    /// Whether an `r x c` matrix read this way stays inside `data`.
    fn holds(&self, r: usize, c: usize) -> bool {
        r == 0 || c == 0 || (r - 1) * self.rs + (c - 1) * self.cs < self.data.len()
    }
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`) for `a` of `m x k` and `b` of `k x n`,
/// into the row-major `m x n` start of `dst`, by candle's CPU matrix kernel on this thread.
pub(super) fn product(
    dst: &mut [f32],
    accumulate: bool,
    (m, k, n): (usize, usize, usize),
    a: Mat,
    b: Mat,
) {
    assert!(dst.len() >= m * n, "matrix product out of bounds");
    // SAFETY: the assert above keeps every element the kernel writes (or reads) inside `dst`,
    // which is borrowed mutably, so it aliases neither input.
    unsafe { gemm_into(dst.as_mut_ptr(), accumulate, (m, k, n), a, b) }
}

/// `dst = a · b` (or `+=`) into the row-major `m x n` matrix at `dst`, on this thread.
///
/// # Safety
/// `dst` must be valid for `m * n` writes (and reads, with `accumulate`) and alias neither
/// input. The inputs' bounds are checked here.
unsafe fn gemm_into(
    dst: *mut f32,
    accumulate: bool,
    (m, k, n): (usize, usize, usize),
    a: Mat,
    b: Mat,
) {
    assert!(
        a.holds(m, k) && b.holds(k, n),
        "matrix product out of bounds"
    );
    // `gemm` computes this product as its transpose, `bᵀ · aᵀ`, and on its general path
    // copies `bᵀ` into its own layout, column-major: from a column-major `b` one element at a
    // time, with a strided load. Such a `b` is transposed here first.
    // (Transposing a column-major `a` as well measured no faster: `gemm` copies `aᵀ` six
    // elements at a time.)
    if general((m, k, n)) && b.column_major() {
        // SAFETY: as for this call; `b` is the same matrix, row-major.
        return with_rows(b, (k, n), |b| unsafe {
            gemm_into(dst, accumulate, (m, k, n), a, b)
        });
    }
    // SAFETY: the caller vouches for `dst`; the assert keeps the kernel's reads of `a` and
    // `b` inside their slices.
    unsafe { gemm(dst, accumulate, (m, k, n), a, b) }
}

/// `gemm` itself on this thread, reading `a` and `b` in place however they are laid out.
///
/// # Safety
/// As [`gemm_into`], and `a` and `b` must hold their matrices.
unsafe fn gemm(dst: *mut f32, accumulate: bool, (m, k, n): (usize, usize, usize), a: Mat, b: Mat) {
    // SAFETY: the caller vouches for all three.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        )
    }
}

/// Runs `f` with the `rows x cols` matrix `x` copied row-major into a buffer from the pool.
fn with_rows<R>(x: Mat, (rows, cols): (usize, usize), f: impl FnOnce(Mat) -> R) -> R {
    let taken = BUFFERS.lock().ok().and_then(|mut pool| pool.pop());
    let mut buffer = taken.unwrap_or_default();
    let len = rows * cols;
    if buffer.len() < len {
        // Grown only: a buffer shortened for a small operand would be zeroed again to grow.
        buffer.resize(len, 0.0);
    }
    transpose_into(x.data, (cols, rows, x.cs), &mut buffer[..len]);
    let out = f(Mat::rows(&buffer[..len], cols));
    if buffer.len() <= POOLED_MAX {
        if let Ok(mut pool) = BUFFERS.lock() {
            pool.push(buffer);
        }
    }
    out
}

/// Whether `gemm` takes its general path for an `m x k` by `k x n` product whatever the
/// operands' layouts: not those of vectors, of `k <= 2` or of products of at most 16 x 16,
/// which it picks by the strides, so that there a transposed operand would change the sums.
fn general((m, k, n): (usize, usize, usize)) -> bool {
    m > 1 && n > 1 && k > 2 && m * n > 16 * 16
}

/// `a · b` for `a` of `m x k` and `b` of `k x n`, as a new row-major `m x n` matrix.
///
/// The output is not zeroed first: a product that does not accumulate writes every element
/// of its destination without reading it (`gemm` sets alpha to 0 and fills the output with
/// zeros when `k` is 0), and zeroing was a memset per product in every backward pass.
pub(super) fn product_new((m, k, n): (usize, usize, usize), a: Mat, b: Mat) -> Vec<f32> {
    let len = m * n;
    let mut dst = Vec::<f32>::with_capacity(len);
    if len > 0 {
        // SAFETY: `dst` has room for the `m x n` output and aliases neither input. With
        // `read_dst` false gemm never reads `dst` (alpha is set to 0) and writes each of its
        // `m * n` elements, so all are initialised before `set_len`.
        unsafe {
            gemm_into(dst.as_mut_ptr(), false, (m, k, n), a, b);
            dst.set_len(len);
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::rows_and_weights;

    #[test]
    fn a_transposed_operand_gives_gemms_own_bits() {
        // Shapes on both sides of each path's bounds: 16 x 16 outputs, k of 2, one row.
        let shapes = [
            (37, 64, 48),
            (16, 16, 16),
            (16, 17, 17),
            (1, 9, 300),
            (300, 2, 5),
            (70, 130, 200),
        ];
        for (m, k, n) in shapes {
            let (a, w) = rows_and_weights(m, k, n);
            for accumulate in [false, true] {
                let (mut got, mut want) = (vec![0.25f32; m * n], vec![0.25f32; m * n]);
                let (a, b) = (Mat::rows(&a, k), Mat::transposed(&w, k));
                product(&mut got, accumulate, (m, k, n), a, b);
                // SAFETY: `want` holds `m x n` and aliases neither input, which hold theirs.
                unsafe { gemm(want.as_mut_ptr(), accumulate, (m, k, n), a, b) };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{m} x {k} x {n}, accumulate {accumulate}"
                );
            }
        }
    }
}
