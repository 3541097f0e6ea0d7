//! The matrix product of a decoding step: a few rows (one per sequence being sampled) against
//! a weight matrix, `y = x · wᵀ`, on f32 CPU tensors.
//!
//! A general matrix kernel copies ("packs") the whole weight into its own layout on every call
//! so that many rows can reuse it; with 2-16 rows there is nothing to amortise that over, and
//! in `perf` the packing was half of a decoding step. This kernel reads each weight row once,
//! in place, and takes its dot products with every input row while it sits in L1. Sampling
//! only (no backward); the training forward keeps candle's matmul.
//!
//! A decoding step of a model larger than the cache streams every weight from memory once,
//! so the kernels also fetch far ahead ([`FAR`]): without that, memory's latency and the
//! arithmetic took turns instead of overlapping. Where the CPU has AVX-512VL the rows go
//! through `wide`, which reads each weight once in order against up to eight input rows.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};

use super::fused::{data, with_last};

/// At most this many rows take the few-rows kernel; more go to the general matrix kernel,
/// whose packing they amortise.
pub const MAX_ROWS: usize = 16;

/// `y = x · wᵀ` for `x` of shape `(..., k)` and `w` of shape `(n, k)`, both contiguous f32.
pub struct FewRows;

impl CustomOp2 for FewRows {
    fn name(&self) -> &'static str {
        "chartrl-few-rows-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (data(s1, l1, self.name())?, data(s2, l2, self.name())?);
        let (n, k) = l2.shape().dims2()?;
        let dims = l1.dims();
        if k == 0 || dims.last() != Some(&k) {
            candle_core::bail!(
                "{}: rows of {:?} against a {n}x{k} weight",
                self.name(),
                dims
            );
        }
        let m = x.len() / k.max(1);
        let mut y = vec![0f32; m * n];
        matmul_t(x, w, k, &mut y);
        Ok((CpuStorage::F32(y), with_last(l1, n)))
    }
}

/// `y[i][j] = x_i · w_j` for rows of `k`: the streaming kernel for [`wide::MIN_ROWS`] rows
/// or more where the CPU has 32 vector registers (AVX-512VL), else the AVX2 kernel where it
/// has AVX2. Both sum each output's products in the same order, so which one runs (the
/// number of rows, the CPU) never changes a bit.
pub fn matmul_t(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        if x.len() / k.max(1) >= wide::MIN_ROWS && wide::available() {
            // SAFETY: the CPU has AVX2, FMA, AVX-512F and AVX-512VL (checked here).
            unsafe { wide::matmul_t(x, w, k, y) };
        } else {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { avx2::matmul_t(x, w, k, y) };
        }
        return;
    }
    matmul_t_portable(x, w, k, y);
}

/// `out += Σ_t p[t] · v_t` over the rows `v_t` of `v` (rows of `out.len()`): an attention
/// head's output from its probabilities and cached values, continuing what `out` holds
/// (zeros to start; the same bits as one sum over all positions when continued). Each
/// element sums its products in position order, a multiply then an add (no fused
/// multiply-add), so the AVX path gives the plain loop's bits; it keeps the output in
/// registers across positions.
pub fn weighted_sum_into(p: &[f32], v: &[f32], out: &mut [f32]) {
    if out.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if out.len().is_multiple_of(avx2::SUM_WIDTH) && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above); `out` is whole chunks of the kernel's
        // width, and each row of `v` is as long as `out`.
        unsafe { avx2::weighted_sum_into(p, v, out) };
        return;
    }
    weighted_sum_portable(p, v, out);
}

/// Positions of `v` each block of [`weighted_sums_into`] takes (8 KB of 64-wide rows).
const SUM_BLOCK: usize = 32;

/// [`weighted_sum_into`] for several queries over the same `len` rows of `v` (rows of `d`):
/// query `q`'s probabilities are the first `len` of `probs[q * stride..]`, its outputs
/// `outs[q * d..][..d]`. Each output sums in position order as alone, but a block of
/// positions at a time for every query, so each block of `v` comes from memory once for all.
pub fn weighted_sums_into(probs: &[f32], stride: usize, v: &[f32], d: usize, outs: &mut [f32]) {
    let len = v.len() / d.max(1);
    if len == 0 || d == 0 {
        return;
    }
    for start in (0..len).step_by(SUM_BLOCK) {
        let end = (start + SUM_BLOCK).min(len);
        let block = &v[start * d..end * d];
        for (p, out) in probs.chunks(stride).zip(outs.chunks_exact_mut(d)) {
            weighted_sum_into(&p[start..end], block, out);
        }
    }
}

fn weighted_sum_portable(p: &[f32], v: &[f32], out: &mut [f32]) {
    for (&pt, vt) in p.iter().zip(v.chunks_exact(out.len())) {
        out.iter_mut().zip(vt).for_each(|(a, b)| *a += pt * b);
    }
}

fn matmul_t_portable(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    let n = w.len() / k.max(1);
    for (j, wj) in w.chunks_exact(k).enumerate() {
        for (i, xi) in x.chunks_exact(k).enumerate() {
            y[i * n + j] = xi.iter().zip(wj).map(|(a, b)| a * b).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Four weight rows at a time against the input rows in pairs: eight 8-wide accumulators,
    /// so each weight load feeds two multiply-adds and each input load four, the weight rows
    /// staying in L1 across the input rows. Each output sums its products in the same order
    /// whatever the blocking (lane by lane over `k`, then across lanes, then the tail).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matmul_t(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
        let n = w.len() / k.max(1);
        let m = x.len() / k.max(1);
        let mut j0 = 0;
        while j0 < n {
            let rows = (n - j0).min(4);
            let wp: [*const f32; 4] =
                std::array::from_fn(|r| w[(j0 + r.min(rows - 1)) * k..].as_ptr());
            // The next four weight rows, contiguous after these, fetched while these are
            // multiplied (a hardware prefetcher stops at each page of these short rows).
            // The first block of input rows takes it.
            let mut ahead = (j0 + 4 < n).then(|| Ahead {
                next: w[(j0 + 4) * k..].as_ptr(),
                end: w.as_ptr_range().end,
            });
            let mut i = 0;
            while i + 2 <= m {
                let xs = [x[i * k..].as_ptr(), x[(i + 1) * k..].as_ptr()];
                let acc = block::<2>(xs, wp, k, ahead.take());
                store(&acc, x, wp, (i, j0, rows), (k, n), y);
                i += 2;
            }
            if i < m {
                let acc = block::<1>([x[i * k..].as_ptr()], wp, k, ahead.take());
                store(&acc, x, wp, (i, j0, rows), (k, n), y);
            }
            j0 += rows;
        }
    }

    /// The weights after the current block: where the next block starts (fetched into L1)
    /// and where the weights end (no fetch past them).
    #[derive(Clone, Copy)]
    struct Ahead {
        next: *const f32,
        end: *const f32,
    }

    /// The lane sums of `R` input rows against four weight rows over the first `k - k % 8`
    /// inputs.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const R: usize>(
        xs: [*const f32; R],
        wp: [*const f32; 4],
        k: usize,
        fetch: Option<Ahead>,
    ) -> [[__m256; 4]; R] {
        let k8 = k - k % 8;
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        let mut c = 0;
        while c < k8 {
            if let Some(Ahead { next, end }) = fetch {
                // Two cache lines an iteration cover the next 4 rows of `k` over this loop,
                // and two more as far ahead again into L2.
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(4 * c) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(4 * c + 16) as *const i8);
                let far = next.wrapping_add(4 * c + super::FAR);
                if far < end {
                    _mm_prefetch::<_MM_HINT_T1>(far as *const i8);
                    _mm_prefetch::<_MM_HINT_T1>(far.wrapping_add(16) as *const i8);
                }
            }
            let wv: [__m256; 4] = std::array::from_fn(|r| _mm256_loadu_ps(wp[r].add(c)));
            for (a, xp) in acc.iter_mut().zip(xs) {
                let xv = _mm256_loadu_ps(xp.add(c));
                for (ar, wr) in a.iter_mut().zip(wv) {
                    *ar = _mm256_fmadd_ps(xv, wr, *ar);
                }
            }
            c += 8;
        }
        acc
    }

    /// Writes the outputs of input rows `i..i + R` and weight rows `j0..j0 + rows` (of the `W`
    /// at `wp`): each accumulator's lanes summed, plus the products past the last full 8
    /// inputs. Both kernels end each output here, so they sum in the same order.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn store<const R: usize, const W: usize>(
        acc: &[[__m256; W]; R],
        x: &[f32],
        wp: [*const f32; W],
        (i, j0, rows): (usize, usize, usize),
        (k, n): (usize, usize),
        y: &mut [f32],
    ) {
        let k8 = k - k % 8;
        for (di, a) in acc.iter().enumerate() {
            let xi = &x[(i + di) * k..(i + di + 1) * k];
            for (r, v) in a.iter().enumerate().take(rows) {
                let tail = std::slice::from_raw_parts(wp[r].add(k8), k - k8);
                let s: f32 = xi[k8..].iter().zip(tail).map(|(a, b)| a * b).sum();
                y[(i + di) * n + j0 + r] = hsum(*v) + s;
            }
        }
    }

    /// Output elements [`weighted_sum_into`] keeps in registers at once (eight 8-wide vectors).
    pub const SUM_WIDTH: usize = 64;

    /// [`super::weighted_sum_into`] over chunks of [`SUM_WIDTH`] outputs (`out.len()` a
    /// multiple).
    #[target_feature(enable = "avx2")]
    pub unsafe fn weighted_sum_into(p: &[f32], v: &[f32], out: &mut [f32]) {
        let d = out.len();
        for (c, chunk) in out.chunks_exact_mut(SUM_WIDTH).enumerate() {
            let mut acc: [__m256; SUM_WIDTH / 8] =
                std::array::from_fn(|j| _mm256_loadu_ps(chunk.as_ptr().add(8 * j)));
            for (&pt, vt) in p.iter().zip(v.chunks_exact(d)) {
                let (pv, vp) = (_mm256_set1_ps(pt), vt[c * SUM_WIDTH..].as_ptr());
                for (j, a) in acc.iter_mut().enumerate() {
                    let prod = _mm256_mul_ps(pv, _mm256_loadu_ps(vp.add(8 * j)));
                    *a = _mm256_add_ps(*a, prod);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(chunk.as_mut_ptr().add(8 * j), *a);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// How far ahead of the weight row being multiplied the kernels fetch into L2, in floats
/// (16 KB). A decoding step streams weights far larger than the cache once each; fetches
/// into L1 alone keep too few loads in flight to hide memory's latency, so the loop would
/// wait on each block in turn instead of multiplying while the next arrives.
#[cfg(target_arch = "x86_64")]
const FAR: usize = 4096;

#[cfg(target_arch = "x86_64")]
mod wide {
    //! The streaming kernel: two weight rows at a time against up to eight input rows, in
    //! one pass over the weights. Sixteen 8-wide accumulators need AVX-512VL's 32 registers
    //! (the arithmetic stays 8 lanes wide, as in the AVX2 kernel, so every output sums the
    //! same products in the same order). Reading each weight once, in order, lets the
    //! fetches ahead keep memory busy for the whole product.

    use std::arch::x86_64::*;

    use super::avx2::store;

    /// Fewer input rows than this go to the AVX2 kernel, whose blocks keep more
    /// accumulators busy with few rows.
    pub const MIN_ROWS: usize = 4;

    /// How far ahead of the current weight column the loop fetches into L1, in floats.
    const NEAR: usize = 256;

    /// Whether the CPU has what [`matmul_t`] needs beyond AVX2 and FMA.
    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }

    /// `y = x · wᵀ` (see [`super::matmul_t`]).
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    pub unsafe fn matmul_t(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
        let n = w.len() / k.max(1);
        let m = x.len() / k.max(1);
        let end = w.as_ptr_range().end;
        let mut j = 0;
        while j < n {
            let pair = (n - j).min(2);
            let wp = [w[j * k..].as_ptr(), w[(j + pair - 1) * k..].as_ptr()];
            let mut i = 0;
            while i < m {
                let at = Block {
                    i,
                    j,
                    pair,
                    fetch: (i == 0).then_some(end),
                };
                match m - i {
                    1 => rows::<1>(x, wp, (k, n), at, y),
                    2 => rows::<2>(x, wp, (k, n), at, y),
                    3 => rows::<3>(x, wp, (k, n), at, y),
                    4 => rows::<4>(x, wp, (k, n), at, y),
                    5 => rows::<5>(x, wp, (k, n), at, y),
                    6 => rows::<6>(x, wp, (k, n), at, y),
                    7 => rows::<7>(x, wp, (k, n), at, y),
                    _ => rows::<8>(x, wp, (k, n), at, y),
                }
                i += (m - i).min(8);
            }
            j += pair;
        }
    }

    /// Where one call of [`rows`] works: input rows from `i`, weight rows `j..j + pair`,
    /// and whether it fetches ahead (the first input rows do), up to the weights' end.
    #[derive(Clone, Copy)]
    struct Block {
        i: usize,
        j: usize,
        pair: usize,
        fetch: Option<*const f32>,
    }

    /// Input rows `i..i + R` against the weight rows at `wp` (the same row twice when
    /// `pair` is 1), written to `y`.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    #[inline]
    unsafe fn rows<const R: usize>(
        x: &[f32],
        wp: [*const f32; 2],
        (k, n): (usize, usize),
        at: Block,
        y: &mut [f32],
    ) {
        let k8 = k - k % 8;
        let xs: [*const f32; R] = std::array::from_fn(|d| x[(at.i + d) * k..].as_ptr());
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let mut c = 0;
        while c < k8 {
            if let Some(end) = at.fetch.filter(|_| c % 16 == 0) {
                // One cache line of each row every other iteration, near and far.
                for p in wp {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(c + NEAR) as *const i8);
                    let far = p.wrapping_add(c + super::FAR);
                    if far < end {
                        _mm_prefetch::<_MM_HINT_T1>(far as *const i8);
                    }
                }
            }
            let wv = [_mm256_loadu_ps(wp[0].add(c)), _mm256_loadu_ps(wp[1].add(c))];
            for (a, xp) in acc.iter_mut().zip(xs) {
                let xv = _mm256_loadu_ps(xp.add(c));
                a[0] = _mm256_fmadd_ps(xv, wv[0], a[0]);
                a[1] = _mm256_fmadd_ps(xv, wv[1], a[1]);
            }
            c += 8;
        }
        store(&acc, x, wp, (at.i, at.j, at.pair), (k, n), y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{max_diff, rows_and_weights};
    use candle_core::{Device, Tensor};

    /// Against candle's matmul, on shapes with and without a remainder of 8 and of 4 rows.
    #[test]
    fn matches_the_general_matmul() {
        let dev = Device::Cpu;
        for (m, k, n) in [(1, 256, 768), (8, 64, 5), (3, 37, 9), (16, 704, 256)] {
            let x = Tensor::randn(0f32, 1.0, (1, m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
            let got = x.apply_op2(&w, FewRows).unwrap();
            assert_eq!(got.dims(), &[1, m, n]);
            let diff = max_diff(&got, &want);
            assert!(diff < 1e-3, "({m}, {k}, {n}): {diff}");
            let mut portable = vec![0f32; m * n];
            let (xv, wv) = (
                x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            matmul_t_portable(&xv, &wv, k, &mut portable);
            let fast: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
            assert!(portable
                .iter()
                .zip(&fast)
                .all(|(a, b)| (a - b).abs() < 1e-3));
        }
    }

    /// The streaming kernel gives the AVX2 kernel's bits, for every count of rows it takes
    /// (groups of eight and a remainder), odd and even weight rows, with and without a tail
    /// of inputs past the last 8. Runs where the CPU has AVX-512VL (this project's CI does).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_streaming_kernel_gives_the_avx2_kernels_bits() {
        if !(wide::available() && std::arch::is_x86_feature_detected!("fma")) {
            eprintln!("skipped: no AVX-512VL on this CPU");
            return;
        }
        for (m, k, n) in [
            (4, 64, 5),
            (8, 512, 9),
            (7, 43, 6),
            (13, 120, 3),
            (16, 1411, 2),
        ] {
            let (x, w) = rows_and_weights(m, k, n);
            let (mut streamed, mut blocked) = (vec![0f32; m * n], vec![1f32; m * n]);
            // SAFETY: the CPU has AVX2, FMA, AVX-512F and AVX-512VL (checked above).
            unsafe {
                wide::matmul_t(&x, &w, k, &mut streamed);
                avx2::matmul_t(&x, &w, k, &mut blocked);
            }
            assert_eq!(streamed, blocked, "({m}, {k}, {n})");
        }
    }

    /// The same bits as the plain loop, on a head width the AVX path takes and one it does not.
    #[test]
    fn weighted_sums_match_the_plain_loop() {
        for (t, d) in [(7, 64), (5, 128), (3, 40)] {
            let p: Vec<f32> = (0..t).map(|i| 1.0 / (i as f32 + 1.7)).collect();
            let v: Vec<f32> = (0..t * d)
                .map(|i| ((i * 29) % 83) as f32 * 0.03 - 1.2)
                .collect();
            let (mut fast, mut plain) = (vec![0f32; d], vec![0f32; d]);
            weighted_sum_into(&p, &v, &mut fast);
            weighted_sum_portable(&p, &v, &mut plain);
            assert_eq!(fast, plain, "{t} positions of {d}");
        }
    }

    /// A sum split in two (shared positions, then a row's own) and several queries summed
    /// block by block give the bits of one plain sum per query.
    #[test]
    fn split_and_shared_weighted_sums_give_one_sums_bits() {
        for (t, d, split) in [(75, 64, 40), (70, 40, 33), (5, 128, 0)] {
            let queries = 3;
            let v: Vec<f32> = (0..t * d)
                .map(|i| ((i * 29) % 83) as f32 * 0.03 - 1.2)
                .collect();
            let probs: Vec<f32> = (0..queries * t)
                .map(|i| 1.0 / ((i % 11) as f32 + 1.7))
                .collect();
            let mut outs = vec![0f32; queries * d];
            weighted_sums_into(&probs, t, &v[..split * d], d, &mut outs);
            for (q, (p, out)) in probs
                .chunks_exact(t)
                .zip(outs.chunks_exact_mut(d))
                .enumerate()
            {
                weighted_sum_into(&p[split..], &v[split * d..], out);
                let mut plain = vec![0f32; d];
                weighted_sum_portable(p, &v, &mut plain);
                assert_eq!(
                    out,
                    &plain[..],
                    "query {q}: {t} positions of {d}, split at {split}"
                );
            }
        }
    }

    /// A row's outputs do not depend on the rows it is multiplied with (the kernel pairs
    /// rows): a team and a lone thread must sample the same tokens to the bit.
    #[test]
    fn each_row_comes_out_the_same_alone() {
        let (m, k, n) = (5, 43, 11);
        let (x, w) = rows_and_weights(m, k, n);
        let mut together = vec![0f32; m * n];
        matmul_t(&x, &w, k, &mut together);
        for (i, xi) in x.chunks_exact(k).enumerate() {
            let mut alone = vec![0f32; n];
            matmul_t(xi, &w, k, &mut alone);
            assert_eq!(alone, together[i * n..(i + 1) * n], "row {i}");
        }
    }
}
