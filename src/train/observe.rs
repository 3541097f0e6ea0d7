//! What a training run reports while it runs: per-step metrics and events, through an
//! observer the CLI (console line, progress bar) and the store listen to. The trainer itself
//! never prints.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Mode;

/// Metrics that measure wall-clock time: they differ between two runs of the same
/// configuration, unlike every other metric.
pub const TIMING_KEYS: [&str; 4] = ["rollout_time", "update_time", "step_time", "tokens_per_s"];

/// What kind of training produced a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Phase {
    WarmStart,
    Rl(Mode),
}

/// One step's metrics. `values` holds every logged number by key (`loss`, `grad_norm`,
/// `rewards/accuracy/mean`, ...); the counts drive the console line.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    pub phase: Phase,
    /// 0-based step index.
    pub step: usize,
    pub total_steps: usize,
    pub values: BTreeMap<String, f64>,
    pub samples: usize,
    pub correct: usize,
    pub incorrect: usize,
    pub kept: usize,
    pub lambda_psr: f64,
    /// The step's best and worst completions by total reward (RL steps only).
    pub examples: Vec<Example>,
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
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }

    /// The line researchers read, e.g. `NSR [Step 10]: 3/8 negative samples | Avg reward: -1.892`.
    pub fn console_line(&self) -> String {
        let reward = self.get("reward").unwrap_or(f64::NAN);
        let skipped = match (self.get("skipped") == Some(1.0), self.kept) {
            (false, _) => "",
            (true, 0) => " | skipped (nothing kept)",
            (true, _) => " | skipped (every advantage is 0)",
        };
        match self.phase {
            Phase::WarmStart => format!(
                "SFT [Step {}]: loss {:.4} | lr {:.2e}",
                self.step,
                self.get("loss").unwrap_or(f64::NAN),
                self.get("learning_rate").unwrap_or(f64::NAN)
            ),
            Phase::Rl(Mode::Grpo) => format!(
                "GRPO [Step {}]: {}/{} correct | loss {:.4} | Avg reward: {reward:.3}{skipped}",
                self.step,
                self.correct,
                self.samples,
                self.get("loss").unwrap_or(0.0)
            ),
            Phase::Rl(Mode::Psr) => format!(
                "PSR [Step {}]: {}/{} positive samples | Avg reward: {reward:.3}{skipped}",
                self.step, self.correct, self.samples
            ),
            Phase::Rl(Mode::Nsr) => format!(
                "NSR [Step {}]: {}/{} negative samples | Avg reward: {reward:.3}{skipped}",
                self.step, self.incorrect, self.samples
            ),
            Phase::Rl(Mode::WReinforce) => format!(
                "W-REINFORCE [Step {}]: {} pos (λ={}) + {} neg (λ=1.0) | Avg reward: {reward:.3}{skipped}",
                self.step, self.correct, self.lambda_psr, self.incorrect
            ),
        }
    }
}

/// A warning or alert raised during training, with the fix to try.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub step: usize,
    pub level: Level,
    /// Stable identifier (`no_negative_samples`, `all_truncated`, ...).
    pub kind: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Warning,
    Alert,
}

/// Receives a run's progress. Every method has a do-nothing default.
pub trait Observer {
    fn on_start(&mut self, _phase: Phase, _start_step: usize, _total_steps: usize) {}
    fn on_step(&mut self, _metrics: &StepMetrics) {}
    fn on_event(&mut self, _event: &Event) {}
    /// Checked between steps: `true` stops the run cleanly after the current step.
    fn should_stop(&self) -> bool {
        false
    }
}

/// An observer that keeps everything in memory (tests, scripts, the bench).
#[derive(Debug, Default)]
pub struct Recorder {
    pub steps: Vec<StepMetrics>,
    pub events: Vec<Event>,
}

impl Observer for Recorder {
    fn on_step(&mut self, m: &StepMetrics) {
        self.steps.push(m.clone());
    }
    fn on_event(&mut self, e: &Event) {
        self.events.push(e.clone());
    }
}

/// Mean and sample standard deviation (Bessel; 0 for fewer than two values).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    (mean, std)
}

/// The median (mean of the middle two for an even count; NaN for none).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
