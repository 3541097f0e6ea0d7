//! Paired bootstrap intervals for the difference between two models' results on the same
//! questions.
//!
//! Both sides were evaluated on the same questions with the same sampling seeds, so the
//! difference is taken question by question: the estimate is the mean over questions of
//! (mean over side A's training seeds) - (mean over side B's). Each bootstrap replicate
//! resamples the questions with replacement, and, where a side ran several training seeds,
//! that side's seeds too (a two-level bootstrap: the seed-to-seed spread is part of the
//! uncertainty). The interval is the percentile interval of the replicates.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bootstrap replicates per interval.
pub const RESAMPLES: usize = 2000;
/// The intervals' coverage.
pub const LEVEL: f64 = 0.95;
/// The resampling seed: a report is the same every time it is written.
const SEED: u64 = 0x1b007;

/// How many of `count` intervals would exclude 0 by chance alone if nothing differed, as a
/// report says it: `0.2` below one, else a whole number.
pub fn expected_by_chance(count: usize) -> String {
    let e = count as f64 * (1.0 - LEVEL);
    if e < 0.95 {
        format!("{e:.1}")
    } else {
        format!("{e:.0}")
    }
}

/// A difference and its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// The interval excludes 0: the sign of the difference is resolved.
    pub fn resolved(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }

    /// `+3.1 [-1.2, +7.4] unresolved`, in percentage points for `scale` 100.
    pub fn show(&self, scale: f64) -> String {
        let verdict = if !self.resolved() {
            "unresolved"
        } else if self.estimate > 0.0 {
            "higher"
        } else {
            "lower"
        };
        format!(
            "{:+.1} [{:+.1}, {:+.1}] {verdict}",
            self.estimate * scale,
            self.lo * scale,
            self.hi * scale
        )
    }
}

/// The paired difference A - B. `a[s][j]` is side A's result for training seed `s` on
/// question `j` (likewise `b`); every row has the same questions in the same order. `None`
/// when a side is empty or the rows differ in length.
pub fn paired_difference(a: &[Vec<f64>], b: &[Vec<f64>]) -> Option<Interval> {
    paired_difference_with(a, b, RESAMPLES, SEED)
}

/// [`paired_difference`] with its own replicate count and seed. The same seed and shapes draw
/// the same replicates, so differences in several metrics of the same runs share them.
pub fn paired_difference_with(
    a: &[Vec<f64>],
    b: &[Vec<f64>],
    resamples: usize,
    seed: u64,
) -> Option<Interval> {
    let q = a.first()?.len();
    if q == 0 || b.is_empty() || a.iter().chain(b).any(|row| row.len() != q) {
        return None;
    }
    let all_q: Vec<usize> = (0..q).collect();
    let estimate = statistic(a, b, &all_q, &ones(a.len()), &ones(b.len()));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut reps: Vec<f64> = (0..resamples.max(1))
        .map(|_| {
            let qs: Vec<usize> = (0..q).map(|_| rng.random_range(0..q)).collect();
            let wa = multiplicities(a.len(), &mut rng);
            let wb = multiplicities(b.len(), &mut rng);
            statistic(a, b, &qs, &wa, &wb)
        })
        .collect();
    reps.sort_by(f64::total_cmp);
    let tail = (1.0 - LEVEL) / 2.0;
    Some(Interval {
        estimate,
        lo: quantile(&reps, tail),
        hi: quantile(&reps, 1.0 - tail),
    })
}

/// Every seed once.
fn ones(n: usize) -> Vec<f64> {
    vec![1.0; n]
}

/// How often each of `n` seeds is drawn in `n` draws with replacement (all 1 for one seed).
fn multiplicities(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut w = vec![0.0; n];
    if n == 1 {
        w[0] = 1.0;
        return w;
    }
    for _ in 0..n {
        w[rng.random_range(0..n)] += 1.0;
    }
    w
}

/// Mean over the questions `qs` of the seed-weighted mean of A minus that of B.
fn statistic(a: &[Vec<f64>], b: &[Vec<f64>], qs: &[usize], wa: &[f64], wb: &[f64]) -> f64 {
    let side = |rows: &[Vec<f64>], w: &[f64]| -> f64 {
        let total: f64 = w.iter().sum();
        rows.iter()
            .zip(w)
            .filter(|(_, w)| **w > 0.0)
            .map(|(row, w)| w * qs.iter().map(|&j| row[j]).sum::<f64>())
            .sum::<f64>()
            / total
    };
    (side(a, wa) - side(b, wb)) / qs.len() as f64
}

/// The `p` quantile of sorted values, interpolating linearly between order statistics.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_sides_give_zero_and_constant_shifts_are_exact() {
        let a = vec![vec![0.0, 0.5, 1.0, 0.25]];
        let i = paired_difference(&a, &a).unwrap();
        assert_eq!((i.estimate, i.lo, i.hi), (0.0, 0.0, 0.0));
        assert!(!i.resolved());
        // Paired: a constant per-question shift has no spread at all.
        let b = vec![a[0].iter().map(|x| x - 0.1).collect::<Vec<_>>()];
        let i = paired_difference(&a, &b).unwrap();
        assert!((i.estimate - 0.1).abs() < 1e-12);
        assert!((i.lo - 0.1).abs() < 1e-12 && (i.hi - 0.1).abs() < 1e-12);
        assert!(i.resolved());
        assert_eq!(paired_difference(&a, &[vec![0.0]]), None);
        assert_eq!(i.show(100.0), "+10.0 [+10.0, +10.0] higher");
    }

    #[test]
    fn chance_counts_keep_a_decimal_below_one() {
        assert_eq!(expected_by_chance(2), "0.1");
        assert_eq!(expected_by_chance(10), "0.5");
        assert_eq!(expected_by_chance(24), "1");
        assert_eq!(expected_by_chance(84), "4");
    }

    #[test]
    fn seeds_average_before_the_difference() {
        // A's two seeds average to 0.5 on every question; B is 0.25: the estimate is 0.25.
        let a = vec![vec![0.0, 1.0, 0.5], vec![1.0, 0.0, 0.5]];
        let b = vec![vec![0.25; 3]];
        let i = paired_difference(&a, &b).unwrap();
        assert!((i.estimate - 0.25).abs() < 1e-12);
        // Resampling A's seeds spreads the interval around it.
        assert!(i.lo < 0.25 && i.hi > 0.25, "{i:?}");
    }
}
