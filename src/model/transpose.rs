//! Transposing an f32 matrix, eight by eight in vector registers where the CPU has AVX.
//!
//! `gemm` copies ("packs") one operand of every product into its own column-major layout. A
//! weight read as `wᵀ` (every linear layer's forward, attention's `q · kᵀ`) reaches it
//! row-major, and `gemm` gathers it one element at a time with a strided load.
//! [`super::product`] hands it the operand already transposed by this module instead, which
//! `gemm` reads in place or copies a vector at a time.

/// Writes the transpose of the `rows x cols` matrix whose row `r` starts at `src[r * stride]`
/// into the start of `dst`, row-major `cols x rows`.
pub(super) fn transpose_into(
    src: &[f32],
    (rows, cols, stride): (usize, usize, usize),
    dst: &mut [f32],
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        stride >= cols && (rows - 1) * stride + cols <= src.len() && rows * cols <= dst.len(),
        "transpose out of bounds"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX is present, and the assert keeps every read inside `src` and every
        // write inside `dst`.
        unsafe { avx::transpose(src.as_ptr(), (rows, cols, stride), dst.as_mut_ptr()) };
        return;
    }
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * stride + c];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    const T: usize = 8;

    /// [`super::transpose_into`] in 8 x 8 tiles, the edges one element at a time.
    ///
    /// # Safety
    /// AVX must be present; `src` must hold `rows` rows of `cols` at `stride`, `dst` room for
    /// `rows * cols`.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn transpose(
        src: *const f32,
        (rows, cols, stride): (usize, usize, usize),
        dst: *mut f32,
    ) {
        let (rows8, cols8) = (rows / T * T, cols / T * T);
        for r in (0..rows8).step_by(T) {
            for c in (0..cols8).step_by(T) {
                // SAFETY: the tile's rows `r..r + 8` and columns `c..c + 8` are inside both.
                unsafe { tile(src.add(r * stride + c), stride, dst.add(c * rows + r), rows) };
            }
        }
        // SAFETY (both loops): inside the matrix, as the caller vouches.
        for r in 0..rows {
            for c in cols8..cols {
                unsafe { *dst.add(c * rows + r) = *src.add(r * stride + c) };
            }
        }
        for r in rows8..rows {
            for c in 0..cols8 {
                unsafe { *dst.add(c * rows + r) = *src.add(r * stride + c) };
            }
        }
    }

    /// Transposes the 8 x 8 tile at `src` (rows `stride` apart) into `dst` (rows `dst_stride`
    /// apart).
    ///
    /// # Safety
    /// AVX must be present and both tiles inside their buffers.
    #[target_feature(enable = "avx")]
    unsafe fn tile(src: *const f32, stride: usize, dst: *mut f32, dst_stride: usize) {
        // SAFETY: the caller vouches for the eight rows of eight at both ends.
        unsafe {
            let row = |i: usize| _mm256_loadu_ps(src.add(i * stride));
            let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
            let (r4, r5, r6, r7) = (row(4), row(5), row(6), row(7));
            let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
            let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
            let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
            let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let out = |i: usize, v| _mm256_storeu_ps(dst.add(i * dst_stride), v);
            out(0, _mm256_permute2f128_ps::<0x20>(s0, s4));
            out(1, _mm256_permute2f128_ps::<0x20>(s1, s5));
            out(2, _mm256_permute2f128_ps::<0x20>(s2, s6));
            out(3, _mm256_permute2f128_ps::<0x20>(s3, s7));
            out(4, _mm256_permute2f128_ps::<0x31>(s0, s4));
            out(5, _mm256_permute2f128_ps::<0x31>(s1, s5));
            out(6, _mm256_permute2f128_ps::<0x31>(s2, s6));
            out(7, _mm256_permute2f128_ps::<0x31>(s3, s7));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_and_edges_land_where_the_definition_puts_them() {
        for (rows, cols, pad) in [
            (1, 1, 0),
            (8, 8, 0),
            (9, 17, 3),
            (16, 24, 0),
            (23, 5, 2),
            (5, 40, 1),
        ] {
            let stride = cols + pad;
            let src: Vec<f32> = (0..rows * stride).map(|i| i as f32).collect();
            let mut got = vec![f32::NAN; rows * cols];
            transpose_into(&src, (rows, cols, stride), &mut got);
            for (r, c) in (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))) {
                assert_eq!(
                    got[c * rows + r],
                    src[r * stride + c],
                    "{rows} x {cols}, ({r}, {c})"
                );
            }
        }
    }
}
