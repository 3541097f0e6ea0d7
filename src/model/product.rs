//! Matrix products on f32 slices read in place, by candle's own CPU matrix kernel (the `gemm`
//! crate) on the calling thread: the products inside chartrl's ops with their own backward
//! (`attention.rs`, `linear.rs`), where a transposed operand is only a pair of strides and a
//! product can add into its destination.

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
    // SAFETY: the caller vouches for `dst`; the assert keeps the kernel's reads of `a` and
    // `b` inside their slices.
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
