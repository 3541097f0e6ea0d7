//! Length-aware rewards: `length` (Kimi 1.5), `cosine` (length scaled by correctness),
//! `repetition_penalty` (n-grams) and `overlong` (DAPO's soft overlong punishment).

use std::collections::HashSet;
use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

/// Kimi 1.5 length reward over one batch (open-r1 `len_reward`), lengths in characters:
/// `lambda = 0.5 - (len - min) / (max - min)`; a correct completion gets `lambda`, a wrong one
/// `min(0, lambda)`; when all lengths are equal every completion gets 0.
pub fn length(lengths: &[usize], correct: &[bool]) -> Vec<f64> {
    let (Some(&min), Some(&max)) = (lengths.iter().min(), lengths.iter().max()) else {
        return Vec::new();
    };
    if min == max {
        return vec![0.0; lengths.len()];
    }
    lengths
        .iter()
        .zip(correct)
        .map(|(&len, &ok)| {
            let lambda = 0.5 - (len - min) as f64 / (max - min) as f64;
            if ok {
                lambda
            } else {
                lambda.min(0.0)
            }
        })
        .collect()
}

/// Parameters of the cosine-scaled reward. Defaults are open-r1's run defaults
/// (`configs.py`): a correct answer earns 1.0 when short, falling to 0.5 at `max_len`; a wrong
/// one 0.0 when short, falling to -0.5.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CosineParams {
    pub min_value_wrong: f64,
    pub max_value_wrong: f64,
    pub min_value_correct: f64,
    pub max_value_correct: f64,
    /// Length (characters) at which the reward reaches its end value.
    pub max_len: usize,
}

impl Default for CosineParams {
    fn default() -> Self {
        Self {
            min_value_wrong: 0.0,
            max_value_wrong: -0.5,
            min_value_correct: 0.5,
            max_value_correct: 1.0,
            max_len: 1000,
        }
    }
}

/// open-r1 `cosine_scaled_reward`: `progress = len / max_len`, `c = cos(pi * progress)`,
/// `r = lo + (hi - lo) * (1 + c) / 2` with `(lo, hi) = (min_correct, max_correct)` when correct
/// and `(max_wrong, min_wrong)` when wrong. Progress is clamped to 1 (as TRL does; open-r1
/// lets the cosine wrap around past `max_len`).
pub fn cosine(len: usize, correct: bool, p: &CosineParams) -> f64 {
    let progress = (len as f64 / p.max_len.max(1) as f64).min(1.0);
    let c = (PI * progress).cos();
    let (lo, hi) = if correct {
        (p.min_value_correct, p.max_value_correct)
    } else {
        (p.max_value_wrong, p.min_value_wrong)
    };
    lo + 0.5 * (hi - lo) * (1.0 + c)
}

/// open-r1 `repetition_penalty_reward`: over lowercase whitespace-separated words,
/// `(1 - unique_ngrams / ngrams) * max_penalty`; 0 for fewer than `n` words.
pub fn repetition_penalty(text: &str, n: usize, max_penalty: f64) -> f64 {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    if n == 0 || words.len() < n {
        return 0.0;
    }
    let grams: Vec<&[&str]> = words.windows(n).collect();
    let unique: HashSet<&[&str]> = grams.iter().copied().collect();
    (1.0 - unique.len() as f64 / grams.len() as f64) * max_penalty
}

/// DAPO soft overlong punishment on token counts, `L = max_completion_len`, `c = cache`:
/// 0 up to `L - c` tokens, then falling linearly to -1 at `L`, and -1 beyond.
pub fn overlong(tokens: usize, max_completion_len: usize, cache: usize) -> f64 {
    let start = max_completion_len.saturating_sub(cache);
    if tokens <= start {
        0.0
    } else if tokens <= max_completion_len {
        (start as f64 - tokens as f64) / cache.max(1) as f64
    } else {
        -1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn length_table() {
        // lengths 10, 20, 30: lambda = 0.5, 0, -0.5
        let r = length(&[10, 20, 30], &[true, true, true]);
        assert_eq!(r, vec![0.5, 0.0, -0.5]);
        let r = length(&[10, 20, 30], &[false, false, false]);
        assert_eq!(r, vec![0.0, 0.0, -0.5]);
        assert_eq!(length(&[7, 7], &[true, false]), vec![0.0, 0.0]);
        assert!(length(&[], &[]).is_empty());
        let r = length(&[0, 5000], &[true, false]); // empty and very long
        assert_eq!(r, vec![0.5, -0.5]);
    }

    #[test]
    fn cosine_table() {
        let p = CosineParams::default();
        assert!(close(cosine(0, true, &p), 1.0));
        assert!(close(cosine(1000, true, &p), 0.5));
        assert!(close(cosine(500, true, &p), 0.75));
        assert!(close(cosine(0, false, &p), 0.0));
        assert!(close(cosine(1000, false, &p), -0.5));
        assert!(close(cosine(500, false, &p), -0.25));
        assert!(close(cosine(100_000, false, &p), -0.5)); // clamped past max_len
    }

    #[test]
    fn repetition_table() {
        assert_eq!(repetition_penalty("", 3, -1.0), 0.0);
        assert_eq!(repetition_penalty("a b", 3, -1.0), 0.0);
        assert_eq!(repetition_penalty("a b c d", 3, -1.0), 0.0);
        // "a b a b a b": 4 trigrams, 2 unique -> (1 - 2/4) * -1 = -0.5
        assert!(close(repetition_penalty("a b A b a B", 3, -1.0), -0.5));
        let long = "the same words ".repeat(500);
        let r = repetition_penalty(&long, 3, -1.0);
        assert!((-1.0..-0.99).contains(&r), "{r}");
    }

    #[test]
    fn overlong_table() {
        assert_eq!(overlong(0, 100, 20), 0.0);
        assert_eq!(overlong(80, 100, 20), 0.0);
        assert!(close(overlong(90, 100, 20), -0.5));
        assert!(close(overlong(100, 100, 20), -1.0));
        assert_eq!(overlong(101, 100, 20), -1.0);
        assert_eq!(overlong(100_000, 100, 20), -1.0);
    }
}
