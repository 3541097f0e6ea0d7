//! What a training run reports while it runs: each step's metrics (see `metrics`) and events,
//! through an observer the CLI (console line, progress bar) listens to. The trainer itself
//! never prints.

use serde::Serialize;

use super::metrics::StepMetrics;
use super::Mode;

/// What kind of training produced a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Phase {
    WarmStart,
    Rl(Mode),
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
