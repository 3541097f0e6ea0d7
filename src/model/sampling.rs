//! Choosing the next token: temperature, nucleus (top-p) and greedy decoding.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How completions are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f64,
    /// Nucleus sampling: draw from the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f64,
    /// Upper bound on generated tokens per completion (the end-of-text token included).
    pub max_new_tokens: usize,
    /// Stop a completion at its first end-of-text token. Benchmarks turn this off to generate a
    /// fixed number of tokens.
    pub stop_at_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens: 160,
            stop_at_eos: true,
        }
    }
}

/// One sampled completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    /// Generated ids, the end-of-text token included when one was drawn.
    pub tokens: Vec<u32>,
    /// Decoded text without the end-of-text token.
    pub text: String,
    /// Log-probability of each generated token under the temperature-scaled distribution
    /// (before top-p truncation), as TRL records the sampling policy's log-probs.
    pub logprobs: Vec<f32>,
    /// Whether it ended with end-of-text rather than hitting `max_new_tokens`.
    pub finished: bool,
}

/// Draws a token from `logits` and returns it with its log-probability (see [`Completion`]).
pub fn sample_token<R: Rng>(logits: &[f32], params: &SamplingParams, rng: &mut R) -> (u32, f32) {
    if params.temperature <= 0.0 {
        let (id, _) = logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
                if x > best.1 {
                    (i, x)
                } else {
                    best
                }
            });
        return (id as u32, log_softmax_at(logits, id, 1.0));
    }
    let inv_t = (1.0 / params.temperature) as f32;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let probs: Vec<f32> = logits.iter().map(|&x| ((x - max) * inv_t).exp()).collect();
    let total: f32 = probs.iter().sum();
    let u: f32 = rng.random::<f32>();
    let id = if params.top_p >= 1.0 {
        pick(probs.iter().copied().enumerate(), u * total)
    } else {
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_unstable_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let threshold = params.top_p as f32 * total;
        let mut kept = 0.0;
        let mut n = 0;
        for &i in &order {
            kept += probs[i];
            n += 1;
            if kept >= threshold {
                break;
            }
        }
        pick(order[..n].iter().map(|&i| (i, probs[i])), u * kept)
    };
    (id as u32, (probs[id] / total).ln())
}

/// The first index whose running sum of weights passes `target` (the last one on rounding).
fn pick(weights: impl Iterator<Item = (usize, f32)>, target: f32) -> usize {
    let mut acc = 0.0;
    let mut last = 0;
    for (i, w) in weights {
        acc += w;
        last = i;
        if acc > target {
            return i;
        }
    }
    last
}

fn log_softmax_at(logits: &[f32], id: usize, temperature: f32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse: f32 = logits
        .iter()
        .map(|&x| ((x - max) / temperature).exp())
        .sum::<f32>()
        .ln();
    (logits[id] - max) / temperature - lse
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn greedy_takes_the_argmax_with_its_logprob() {
        let p = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (id, lp) = sample_token(&[0.0, 2.0, 1.0], &p, &mut rng);
        assert_eq!(id, 1);
        let expected = 2.0 - (1f32 + 2f32.exp() + 1f32.exp()).ln();
        assert!((lp - expected).abs() < 1e-6);
    }

    #[test]
    fn top_p_never_draws_outside_the_nucleus() {
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            ..Default::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // probabilities ~ [0.64, 0.24, 0.09, 0.03]: the 0.5 nucleus is token 0 alone.
        let logits = [3.0, 2.0, 1.0, 0.0];
        for _ in 0..200 {
            assert_eq!(sample_token(&logits, &p, &mut rng).0, 0);
        }
    }

    #[test]
    fn sampling_frequencies_follow_the_distribution() {
        let p = SamplingParams::default();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let logits = [0.0f32, (3.0f32).ln()]; // p = [0.25, 0.75]
        let ones = (0..4000)
            .filter(|_| sample_token(&logits, &p, &mut rng).0 == 1)
            .count();
        assert!((2850..3150).contains(&ones), "{ones}");
    }
}
