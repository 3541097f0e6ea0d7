//! What a training step measured, typed, and the names it is stored under. Every metric name
//! the store, the reports, the checklist and the console read is a constant here; a step's
//! values are fields, and only the per-reward figures (one pair per reward function of the
//! run) are a list. [`StepMetrics::values`] is the one place that turns a step into the
//! `name -> value` rows the store keeps.

use std::collections::BTreeMap;

use serde::Serialize;

use super::observe::Phase;
use super::Mode;

/// The stored metric names.
pub mod keys {
    pub const LOSS: &str = "loss";
    pub const LEARNING_RATE: &str = "learning_rate";
    pub const GRAD_NORM: &str = "grad_norm";
    pub const STEP_TIME: &str = "step_time";
    /// Warm start: completion tokens in the step.
    pub const TOKENS: &str = "tokens";
    pub const REWARD: &str = "reward";
    pub const REWARD_STD: &str = "reward_std";
    pub const CORRECT: &str = "correct";
    pub const INCORRECT: &str = "incorrect";
    pub const KEPT: &str = "kept";
    pub const KEPT_CORRECT: &str = "kept_correct";
    pub const KEPT_INCORRECT: &str = "kept_incorrect";
    pub const INFORMATIVE: &str = "informative";
    pub const POSITIVE_RATIO: &str = "positive_ratio";
    pub const NEGATIVE_RATIO: &str = "negative_ratio";
    pub const FRAC_REWARD_ZERO_STD: &str = "frac_reward_zero_std";
    pub const COMPLETION_LENGTH_MEAN: &str = "completion_length/mean";
    pub const COMPLETION_LENGTH_MIN: &str = "completion_length/min";
    pub const COMPLETION_LENGTH_MAX: &str = "completion_length/max";
    pub const CLIPPED_RATIO: &str = "clipped_ratio";
    pub const SKIPPED: &str = "skipped";
    pub const ENTROPY: &str = "entropy";
    pub const CLIP_FRACTION: &str = "clip_fraction";
    pub const KL: &str = "kl";
    pub const TOKENS_PER_S: &str = "tokens_per_s";
    pub const ROLLOUT_TIME: &str = "rollout_time";
    pub const UPDATE_TIME: &str = "update_time";

    /// `rewards/NAME/mean` and `rewards/NAME/std`.
    pub fn reward_mean(name: &str) -> String {
        format!("rewards/{name}/mean")
    }
    pub fn reward_std(name: &str) -> String {
        format!("rewards/{name}/std")
    }
}

/// Metrics that measure wall-clock time: they differ between two runs of the same
/// configuration, unlike every other metric.
pub const TIMING_KEYS: [&str; 4] = [
    keys::ROLLOUT_TIME,
    keys::UPDATE_TIME,
    keys::STEP_TIME,
    keys::TOKENS_PER_S,
];

/// One step's metrics.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    pub phase: Phase,
    /// 0-based step index.
    pub step: usize,
    pub total_steps: usize,
    pub learning_rate: f64,
    /// The step's loss and gradient norm (before clipping); `None` for a skipped RL step.
    pub loss: Option<f64>,
    pub grad_norm: Option<f64>,
    /// Seconds of the whole step.
    pub step_time: f64,
    /// Warm start: completion tokens trained on.
    pub tokens: Option<usize>,
    /// RL steps only.
    pub rl: Option<RlStepMetrics>,
    /// The step's best and worst completions by total reward (RL steps only).
    pub examples: Vec<Example>,
    /// Where the update's time went; `None` for a skipped RL step. Not stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
}

/// Where an update's time went, for `chartrl bench` (wall-clock, so never stored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Phases {
    /// Forward passes with their losses, seconds summed over the pieces (threads run several
    /// at once, so these add up to more than the wall time).
    pub forward: f64,
    /// Backward passes, each piece's gradients collected, summed likewise.
    pub backward: f64,
    /// Wall seconds of all the pieces' passes, their gradients added up in order.
    pub passes: f64,
    /// Wall seconds of the gradient norm, clipping, AdamW and the finiteness checks.
    pub optimizer: f64,
}

/// What an RL step adds: its rollout's scores and what its update did.
#[derive(Debug, Clone, Serialize)]
pub struct RlStepMetrics {
    pub lambda_psr: f64,
    /// Completions sampled, and how many were correct and incorrect.
    pub samples: usize,
    pub correct: usize,
    pub incorrect: usize,
    /// Samples that entered the loss, how many were correct and incorrect, and how many had
    /// a non-zero advantage (counted from the flags the loss used).
    pub kept: usize,
    pub kept_correct: usize,
    pub kept_incorrect: usize,
    pub informative: usize,
    /// No optimizer step: nothing to learn from.
    pub skipped: bool,
    pub reward: f64,
    pub reward_std: f64,
    /// Per reward function: `(name, mean, std)`.
    pub rewards: Vec<(String, f64, f64)>,
    pub frac_reward_zero_std: f64,
    pub completion_length: (f64, f64, f64),
    /// Completions that hit `max_completion_length`, as a share.
    pub clipped_ratio: f64,
    pub entropy: Option<f64>,
    pub clip_fraction: Option<f64>,
    pub kl: Option<f64>,
    pub tokens_per_s: f64,
    pub rollout_time: f64,
    pub update_time: f64,
}

/// A completion kept as an example of a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// `best` or `worst`.
    pub rank: &'static str,
    pub prompt_id: String,
    pub completion: String,
    /// Each reward function's score.
    pub rewards: BTreeMap<String, f64>,
    pub reward: f64,
    pub advantage: f64,
}

impl StepMetrics {
    /// Every metric by its stored name.
    pub fn values(&self) -> BTreeMap<String, f64> {
        let mut v = BTreeMap::new();
        let mut put = |k: &str, x: f64| {
            v.insert(k.to_string(), x);
        };
        put(keys::LEARNING_RATE, self.learning_rate);
        if let Some(x) = self.loss {
            put(keys::LOSS, x);
        }
        if let Some(x) = self.grad_norm {
            put(keys::GRAD_NORM, x);
        }
        put(keys::STEP_TIME, self.step_time);
        if let Some(t) = self.tokens {
            put(keys::TOKENS, t as f64);
        }
        if let Some(rl) = &self.rl {
            rl.put_values(&mut put);
        }
        v
    }

    /// One value by its stored name.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values().get(key).copied()
    }

    /// The line researchers read, e.g. `NSR [Step 10]: 3/8 negative samples | Avg reward: -1.892`.
    pub fn console_line(&self) -> String {
        let Some(rl) = &self.rl else {
            return format!(
                "SFT [Step {}]: loss {:.4} | lr {:.2e}",
                self.step,
                self.loss.unwrap_or(f64::NAN),
                self.learning_rate
            );
        };
        let reward = rl.reward;
        let skipped = match (rl.skipped, rl.kept) {
            (false, _) => "",
            (true, 0) => " | skipped (nothing kept)",
            (true, _) => " | skipped (every advantage is 0)",
        };
        let step = self.step;
        match self.phase {
            Phase::Rl(Mode::Grpo) | Phase::WarmStart => format!(
                "GRPO [Step {step}]: {}/{} correct | loss {:.4} | Avg reward: {reward:.3}{skipped}",
                rl.correct,
                rl.samples,
                self.loss.unwrap_or(0.0)
            ),
            Phase::Rl(Mode::Psr) => format!(
                "PSR [Step {step}]: {}/{} positive samples | Avg reward: {reward:.3}{skipped}",
                rl.correct, rl.samples
            ),
            Phase::Rl(Mode::Nsr) => format!(
                "NSR [Step {step}]: {}/{} negative samples | Avg reward: {reward:.3}{skipped}",
                rl.incorrect, rl.samples
            ),
            Phase::Rl(Mode::WReinforce) => format!(
                "W-REINFORCE [Step {step}]: {} pos (λ={}) + {} neg (λ=1.0) | Avg reward: {reward:.3}{skipped}",
                rl.correct, rl.lambda_psr, rl.incorrect
            ),
        }
    }
}

impl RlStepMetrics {
    fn put_values(&self, put: &mut impl FnMut(&str, f64)) {
        let n = self.samples as f64;
        put(keys::REWARD, self.reward);
        put(keys::REWARD_STD, self.reward_std);
        for (name, mean, std) in &self.rewards {
            put(&keys::reward_mean(name), *mean);
            put(&keys::reward_std(name), *std);
        }
        for (k, x) in [
            (keys::CORRECT, self.correct),
            (keys::INCORRECT, self.incorrect),
            (keys::KEPT, self.kept),
            (keys::KEPT_CORRECT, self.kept_correct),
            (keys::KEPT_INCORRECT, self.kept_incorrect),
            (keys::INFORMATIVE, self.informative),
        ] {
            put(k, x as f64);
        }
        put(keys::POSITIVE_RATIO, self.correct as f64 / n);
        put(keys::NEGATIVE_RATIO, self.incorrect as f64 / n);
        put(keys::FRAC_REWARD_ZERO_STD, self.frac_reward_zero_std);
        put(keys::COMPLETION_LENGTH_MEAN, self.completion_length.0);
        put(keys::COMPLETION_LENGTH_MIN, self.completion_length.1);
        put(keys::COMPLETION_LENGTH_MAX, self.completion_length.2);
        put(keys::CLIPPED_RATIO, self.clipped_ratio);
        put(keys::SKIPPED, f64::from(u8::from(self.skipped)));
        for (k, x) in [
            (keys::ENTROPY, self.entropy),
            (keys::CLIP_FRACTION, self.clip_fraction),
            (keys::KL, self.kl),
        ] {
            if let Some(x) = x {
                put(k, x);
            }
        }
        put(keys::TOKENS_PER_S, self.tokens_per_s);
        put(keys::ROLLOUT_TIME, self.rollout_time);
        put(keys::UPDATE_TIME, self.update_time);
    }
}
