//! What a run's curves say: the training summary (loss reduction, convergence, reward gain)
//! and the warnings of the original project's monitoring guide, each with its fix. Every rule
//! is a pure function of the stored series, so `report` and `monitor` agree and the rules are
//! tested on hand-made series.
//!
//! For RL runs the progress signal is the reward, not the loss: with one policy update per
//! batch the importance ratio is 1 and the clipped surrogate's value is minus the mean
//! advantage over kept tokens (PSR -1 and NSR +1 whatever the model does, GRPO about 0), so the
//! loss cannot show convergence. Loss-based checks apply to warm starts, whose loss is the
//! cross-entropy being minimised.

use super::data::RunData;
use crate::train::keys;
use crate::train::observe::{mean_std, median};
use crate::train::Mode;

/// A convergence window is this fraction of the run's steps...
pub const WINDOW_FRACTION: f64 = 0.1;
/// ...but at least this many steps...
pub const WINDOW_MIN: usize = 5;
/// ...and at most this many.
pub const WINDOW_MAX: usize = 50;
/// Converged: the relative std (std / |mean|) of the progress signal over the last window
/// is below this.
pub const CONVERGED_BELOW: f64 = 0.05;
/// A gradient norm above this multiple of the median of the previous 20 steps is a spike.
pub const GRAD_SPIKE_FACTOR: f64 = 10.0;
/// Loss not decreasing: the last window's mean is less than this fraction below the first's.
pub const MIN_LOSS_REDUCTION: f64 = 0.05;
/// Oscillating: the loss turns direction on at least this share of steps...
pub const OSCILLATION_TURNS: f64 = 0.6;
/// ...with a median step-to-step change of at least this share of the median loss.
pub const OSCILLATION_SIZE: f64 = 0.25;

/// The window the summary and the checks average over for a run of `steps` steps.
pub fn window(steps: usize) -> usize {
    ((steps as f64 * WINDOW_FRACTION).round() as usize).clamp(WINDOW_MIN, WINDOW_MAX)
}

/// A warning about a run, with what to try.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    /// Stable identifier: `no_negative_samples`, `no_positive_samples`, `exploding_gradient`,
    /// `oscillating_loss`, `loss_not_decreasing`, `reward_not_increasing`, `all_truncated`.
    pub kind: &'static str,
    pub message: String,
    pub fix: &'static str,
}

/// The convergence verdict on a run's progress signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Convergence {
    Converged { signal: &'static str, rel_std: f64 },
    NotConverged { signal: &'static str, rel_std: f64 },
    TooShort { steps: usize },
}

/// The numbers of a run's `summary.txt`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub steps: usize,
    pub window: usize,
    pub final_loss: Option<f64>,
    /// Mean loss over the first and the last window.
    pub loss_first: Option<f64>,
    pub loss_last: Option<f64>,
    pub final_lr: Option<f64>,
    pub seconds: f64,
    pub convergence: Convergence,
    /// Mean reward over the first and the last window (RL runs).
    pub reward_first: Option<f64>,
    pub reward_last: Option<f64>,
}

impl Summary {
    /// (first - last) / |first| in percent.
    pub fn loss_reduction_pct(&self) -> Option<f64> {
        match (self.loss_first, self.loss_last) {
            (Some(a), Some(b)) if a != 0.0 => Some(100.0 * (a - b) / a.abs()),
            _ => None,
        }
    }

    pub fn reward_gain(&self) -> Option<f64> {
        Some(self.reward_last? - self.reward_first?)
    }
}

fn head_mean(xs: &[f64], w: usize) -> Option<f64> {
    (xs.len() >= 2 * w).then(|| mean_std(&xs[..w]).0)
}

fn tail_mean(xs: &[f64], w: usize) -> Option<f64> {
    (xs.len() >= 2 * w).then(|| mean_std(&xs[xs.len() - w..]).0)
}

pub fn summarise(d: &RunData) -> Summary {
    let loss = d.values(keys::LOSS);
    let reward = d.values(keys::REWARD);
    let steps = d.run.step;
    let w = window(steps.max(loss.len()).max(reward.len()));
    let (signal, name) = if d.is_rl() {
        (&reward, keys::REWARD)
    } else {
        (&loss, keys::LOSS)
    };
    let convergence = if signal.len() < 2 * w {
        Convergence::TooShort {
            steps: signal.len(),
        }
    } else {
        let (m, s) = mean_std(&signal[signal.len() - w..]);
        let rel_std = if m == 0.0 { f64::INFINITY } else { s / m.abs() };
        if rel_std < CONVERGED_BELOW {
            Convergence::Converged {
                signal: name,
                rel_std,
            }
        } else {
            Convergence::NotConverged {
                signal: name,
                rel_std,
            }
        }
    };
    Summary {
        steps,
        window: w,
        final_loss: loss.last().copied(),
        loss_first: head_mean(&loss, w),
        loss_last: tail_mean(&loss, w),
        final_lr: d.values(keys::LEARNING_RATE).last().copied(),
        seconds: d.seconds(),
        convergence,
        reward_first: head_mean(&reward, w),
        reward_last: tail_mean(&reward, w),
    }
}

/// Every warning that applies to the run.
pub fn warnings(d: &RunData) -> Vec<Warning> {
    let mut out = Vec::new();
    let steps = |key| d.series.get(key).map(Vec::as_slice).unwrap_or(&[]);
    match Mode::parse(&d.mode) {
        Some(Mode::Nsr) => out.extend(zero_steps(steps(keys::INCORRECT)).map(|(k, n, first)| Warning {
            kind: "no_negative_samples",
            message: format!("NSR had no negative (incorrect) samples at {k} of {n} steps (first at step {first}); those steps had nothing to push down and were skipped"),
            fix: "raise num_generations (e.g. 8) or lower reward_threshold (e.g. 0.3)",
        })),
        Some(Mode::Psr) => out.extend(zero_steps(steps(keys::CORRECT)).map(|(k, n, first)| Warning {
            kind: "no_positive_samples",
            message: format!("PSR had no positive (correct) samples at {k} of {n} steps (first at step {first}); those steps had nothing to reinforce and were skipped"),
            fix: "lower reward_threshold, check the reward functions (chartrl sample --run RUN), or warm-start the model longer",
        })),
        Some(Mode::Grpo) => {
            let skipped: Vec<(usize, f64)> = steps(keys::SKIPPED)
                .iter()
                .map(|&(s, v)| (s, 1.0 - v))
                .collect();
            out.extend(zero_steps(&skipped).map(|(k, n, first)| Warning {
                kind: "no_reward_variance",
                message: format!("GRPO found every prompt's completions rewarded alike at {k} of {n} steps (first at step {first}); every advantage was 0 and those steps were skipped"),
                fix: "raise num_generations or batch_size, or warm-start the model longer so some completions differ",
            }));
        }
        _ => {}
    }
    let first_nan = d.non_finite.iter().min_by_key(|(_, s)| **s);
    let message = match (&d.diverged, first_nan) {
        (Some((_, said)), _) => Some(said.clone()),
        (None, Some((key, step))) => Some(format!(
            "`{key}` was NaN or infinite from step {step}: training diverged"
        )),
        (None, None) => None,
    };
    if let Some(message) = message {
        out.push(Warning {
            kind: "non_finite",
            message,
            fix: "lower learning_rate, or clip gradients with max_grad_norm (e.g. 1.0)",
        });
    }
    out.extend(gradient_spikes(steps(keys::GRAD_NORM)));
    if d.is_rl() {
        out.extend(reward_flat(&d.values(keys::REWARD)));
    } else {
        out.extend(oscillation(&d.values(keys::LOSS)));
        out.extend(loss_flat(&d.values(keys::LOSS)));
    }
    let truncated: Vec<usize> = steps(keys::CLIPPED_RATIO)
        .iter()
        .filter(|(_, v)| *v >= 1.0)
        .map(|(s, _)| *s)
        .collect();
    if let Some(first) = truncated.first() {
        out.push(Warning {
            kind: "all_truncated",
            message: format!(
                "every completion hit max_completion_length at {} of {} steps (first at step {first})",
                truncated.len(),
                steps(keys::CLIPPED_RATIO).len()
            ),
            fix: "raise max_completion_length, or check that the model ends its answers with end-of-text",
        });
    }
    out
}

/// `(steps at zero, steps, first such step)` when some step logged 0.
fn zero_steps(series: &[(usize, f64)]) -> Option<(usize, usize, usize)> {
    let zeros: Vec<usize> = series
        .iter()
        .filter(|(_, v)| *v == 0.0)
        .map(|(s, _)| *s)
        .collect();
    zeros.first().map(|f| (zeros.len(), series.len(), *f))
}

fn gradient_spikes(series: &[(usize, f64)]) -> Option<Warning> {
    let mut spikes = Vec::new();
    for i in 5..series.len() {
        let prev: Vec<f64> = series[i.saturating_sub(20)..i]
            .iter()
            .map(|p| p.1)
            .collect();
        let m = median(&prev);
        if m > 0.0 && series[i].1 > GRAD_SPIKE_FACTOR * m {
            spikes.push((series[i].0, series[i].1, m));
        }
    }
    let (step, g, m) = *spikes
        .iter()
        .max_by(|a, b| (a.1 / a.2).total_cmp(&(b.1 / b.2)))?;
    Some(Warning {
        kind: "exploding_gradient",
        message: format!(
            "gradient norm spiked above {GRAD_SPIKE_FACTOR}x its recent median at {} step(s); worst at step {step}: {g:.3} against a median of {m:.3}",
            spikes.len()
        ),
        fix: "enable gradient clipping (max_grad_norm, e.g. 1.0) or lower learning_rate",
    })
}

fn oscillation(loss: &[f64]) -> Option<Warning> {
    if loss.len() < 8 {
        return None;
    }
    let diffs: Vec<f64> = loss.windows(2).map(|w| w[1] - w[0]).collect();
    let moves: Vec<f64> = diffs.iter().copied().filter(|d| *d != 0.0).collect();
    let turns = moves
        .windows(2)
        .filter(|w| w[0].signum() != w[1].signum())
        .count();
    let share = turns as f64 / (moves.len().max(2) - 1) as f64;
    let abs: Vec<f64> = diffs.iter().map(|d| d.abs()).collect();
    let level: Vec<f64> = loss.iter().map(|l| l.abs()).collect();
    let size = median(&abs) / median(&level).max(f64::MIN_POSITIVE);
    (share >= OSCILLATION_TURNS && size >= OSCILLATION_SIZE).then(|| Warning {
        kind: "oscillating_loss",
        message: format!(
            "the loss changes direction on {:.0}% of steps, by a median {:.0}% of its level",
            100.0 * share,
            100.0 * size
        ),
        fix: "lower learning_rate, raise batch_size, or enable gradient clipping (max_grad_norm)",
    })
}

fn loss_flat(loss: &[f64]) -> Option<Warning> {
    let w = window(loss.len());
    let (first, last) = (head_mean(loss, w)?, tail_mean(loss, w)?);
    let reduction = (first - last) / first.abs().max(f64::MIN_POSITIVE);
    (reduction < MIN_LOSS_REDUCTION).then(|| Warning {
        kind: "loss_not_decreasing",
        message: format!(
            "mean loss over the last {w} steps is {last:.4} against {first:.4} over the first {w}: a reduction of {:.1}% (below {:.0}%)",
            100.0 * reduction,
            100.0 * MIN_LOSS_REDUCTION
        ),
        fix: "raise learning_rate, train longer, or check the data and reward functions",
    })
}

fn reward_flat(reward: &[f64]) -> Option<Warning> {
    let w = window(reward.len());
    let (first, last) = (head_mean(reward, w)?, tail_mean(reward, w)?);
    (last <= first).then(|| Warning {
        kind: "reward_not_increasing",
        message: format!(
            "mean reward over the last {w} steps is {last:.3} against {first:.3} over the first {w}"
        ),
        fix: "if the reward fell, lower learning_rate (too large a step degrades the policy); if it stayed flat, raise it, check the reward functions (chartrl sample --run RUN), or warm-start longer so some completions are correct",
    })
}

/// Exponential moving average with TensorBoard's bias correction; `weight` in [0, 1).
pub fn smooth(values: &[f64], weight: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(values.len());
    let (mut acc, mut norm) = (0.0, 0.0);
    for v in values {
        acc = acc * weight + (1.0 - weight) * v;
        norm = norm * weight + (1.0 - weight);
        out.push(acc / norm);
    }
    out
}

/// The smoothing weight for a curve of `n` points: none for a handful, 0.95 for long runs.
pub fn smoothing_weight(n: usize) -> f64 {
    (1.0 - 4.0 / n.max(1) as f64).clamp(0.0, 0.95)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_is_a_debiased_moving_average() {
        // weight 0.5: 2, (0.5*2*0.5 + 0.5*4)/(0.75) ...
        let s = smooth(&[2.0, 4.0, 4.0], 0.5);
        assert!(
            (s[0] - 2.0).abs() < 1e-12,
            "the first value is kept, not pulled to 0"
        );
        assert!((s[1] - (0.25 * 2.0 + 0.5 * 4.0) / 0.75).abs() < 1e-12);
        assert_eq!(smooth(&[1.0, 5.0], 0.0), vec![1.0, 5.0]);
        assert_eq!(smoothing_weight(3), 0.0);
        assert_eq!(smoothing_weight(10_000), 0.95);
    }

    #[test]
    fn windows_are_a_tenth_of_the_run_within_bounds() {
        assert_eq!(window(10), WINDOW_MIN);
        assert_eq!(window(200), 20);
        assert_eq!(window(100_000), WINDOW_MAX);
    }

    #[test]
    fn the_guides_examples_trip_the_checks() {
        // "Step 100: Grad norm = 1.2 / Step 101: Grad norm = 15.8 ← Explosion!"
        let mut g: Vec<(usize, f64)> = (0..10).map(|i| (i, 1.2)).collect();
        g.push((10, 15.8));
        assert!(gradient_spikes(&g).is_some());
        g.pop();
        assert!(gradient_spikes(&g).is_none());
        // "2.0, 5.3, 1.8, 4.2 ← Unstable"
        let osc = [2.0, 5.3, 1.8, 4.2, 2.1, 5.0, 1.9, 4.4, 2.0, 5.1];
        assert!(oscillation(&osc).is_some());
        let smooth_decay: Vec<f64> = (0..40).map(|i| 3.0 * (-(i as f64) / 10.0).exp()).collect();
        assert!(oscillation(&smooth_decay).is_none());
        assert!(loss_flat(&smooth_decay).is_none());
        // "3.2, 3.1, 3.0 ← Too slow"
        let slow: Vec<f64> = (0..30).map(|i| 3.2 - 0.002 * i as f64).collect();
        assert!(loss_flat(&slow).is_some());
    }
}
