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
    assert!(
        dst.len() >= m * n && a.holds(m, k) && b.holds(k, n),
        "matrix product out of bounds"
    );
    // SAFETY: the assert above keeps every element the kernel reads or writes inside the
    // three slices; `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
pub(super) fn product_new((m, k, n): (usize, usize, usize), a: Mat, b: Mat) -> Vec<f32> {
    let mut dst = vec![0f32; m * n];
    product(&mut dst, false, (m, k, n), a, b);
    dst
}
