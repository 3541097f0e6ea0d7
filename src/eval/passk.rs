//! The unbiased pass@k estimator of Chen et al. (2021), "Evaluating Large Language Models
//! Trained on Code": with `n` samples of which `c` are correct,
//! `pass@k = 1 - C(n-c, k) / C(n, k)`, computed as the numerically stable product
//! `1 - prod_{i=n-c+1}^{n} (1 - k / i)` from the paper's reference code.

/// Why a pass@k cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PassKError {
    #[error("pass@{k} needs at least {k} samples per question, but n = {n}")]
    KAboveN { n: usize, k: usize },
    #[error("pass@k needs k >= 1")]
    ZeroK,
    #[error("{c} correct out of {n} samples is impossible")]
    CAboveN { n: usize, c: usize },
}

/// pass@k for one question with `c` correct of `n` samples.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Result<f64, PassKError> {
    if k == 0 {
        return Err(PassKError::ZeroK);
    }
    if k > n {
        return Err(PassKError::KAboveN { n, k });
    }
    if c > n {
        return Err(PassKError::CAboveN { n, c });
    }
    if n - c < k {
        return Ok(1.0);
    }
    let miss: f64 = ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product();
    Ok(1.0 - miss)
}

/// The mean pass@k over questions, each given as `(n, c)`.
pub fn mean_pass_at_k(counts: &[(usize, usize)], k: usize) -> Result<f64, PassKError> {
    let mut sum = 0.0;
    for &(n, c) in counts {
        sum += pass_at_k(n, c, k)?;
    }
    Ok(sum / counts.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// C(n, k) exactly, for the small n of the tests.
    fn binomial(n: usize, k: usize) -> u128 {
        if k > n {
            return 0;
        }
        (0..k).fold(1u128, |acc, i| acc * (n - i) as u128 / (i + 1) as u128)
    }

    #[test]
    fn hand_computed_values() {
        // n = 4, c = 1, k = 2: 1 - C(3,2)/C(4,2) = 1 - 3/6.
        assert!((pass_at_k(4, 1, 2).unwrap() - 0.5).abs() < 1e-12);
        // n = 10, c = 3, k = 5: 1 - C(7,5)/C(10,5) = 1 - 21/252.
        assert!((pass_at_k(10, 3, 5).unwrap() - (1.0 - 21.0 / 252.0)).abs() < 1e-12);
        assert_eq!(pass_at_k(8, 0, 4).unwrap(), 0.0);
        assert_eq!(pass_at_k(8, 8, 1).unwrap(), 1.0);
        assert_eq!(pass_at_k(8, 5, 4).unwrap(), 1.0); // fewer than k incorrect
    }

    #[test]
    fn matches_the_combinatorial_definition_for_random_cases() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..2000 {
            let n = rng.random_range(1..=60);
            let c = rng.random_range(0..=n);
            let k = rng.random_range(1..=n);
            let exact = 1.0 - binomial(n - c, k) as f64 / binomial(n, k) as f64;
            let got = pass_at_k(n, c, k).unwrap();
            assert!(
                (got - exact).abs() < 1e-9,
                "n={n} c={c} k={k}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn pass_at_1_is_the_mean_accuracy() {
        let counts = [(16, 3), (16, 0), (16, 16), (16, 9)];
        let acc = counts
            .iter()
            .map(|(n, c)| *c as f64 / *n as f64)
            .sum::<f64>()
            / 4.0;
        assert!((mean_pass_at_k(&counts, 1).unwrap() - acc).abs() < 1e-12);
    }

    #[test]
    fn k_above_n_is_rejected_with_a_clear_error() {
        let err = pass_at_k(4, 1, 8).unwrap_err();
        assert_eq!(err, PassKError::KAboveN { n: 4, k: 8 });
        assert_eq!(
            err.to_string(),
            "pass@8 needs at least 8 samples per question, but n = 4"
        );
        assert_eq!(pass_at_k(4, 1, 0).unwrap_err(), PassKError::ZeroK);
        assert!(pass_at_k(4, 5, 1).is_err());
    }
}
