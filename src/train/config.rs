//! The trainer's configuration: one serde struct whose defaults live in
//! `configs/trainer.yaml`. Unknown keys are errors that name the key.

use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::data::PromptFormat;
use crate::reward::{RewardContext, RewardSpec};

/// The four training modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    #[serde(rename = "grpo")]
    Grpo,
    #[serde(rename = "psr")]
    Psr,
    #[serde(rename = "nsr")]
    Nsr,
    #[serde(rename = "w-reinforce")]
    WReinforce,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Grpo, Mode::Psr, Mode::Nsr, Mode::WReinforce];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Grpo => "grpo",
            Mode::Psr => "psr",
            Mode::Nsr => "nsr",
            Mode::WReinforce => "w-reinforce",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s.to_lowercase())
    }
}

/// How per-token losses become the step's loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Sum over every kept token of the step / number of kept tokens (the paper's verl code,
    /// TRL's `dapo`/`bnpo`).
    TokenMean,
    /// Mean over kept sequences of each sequence's token mean (DeepSeekMath, TRL's `grpo`).
    SequenceMean,
    /// Sum over kept tokens / (kept sequences x `max_completion_length`) (Dr. GRPO).
    DrGrpo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

/// Every trainer option. See `configs/trainer.yaml` for meanings and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub mode: Mode,
    pub subset_size: usize,
    pub num_epochs: usize,
    pub num_generations: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub lr_scheduler: Schedule,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub reward_threshold: f64,
    pub lambda_psr: f64,
    pub beta: f64,
    pub epsilon: f64,
    pub loss_type: LossType,
    pub temperature: f64,
    pub top_p: f64,
    pub max_completion_length: usize,
    /// `raw`, or `chat`: the prompt as the user turn of the model's chat template.
    #[serde(default)]
    pub prompt_format: PromptFormat,
    pub seed: u64,
    pub save_steps: usize,
    pub save_total_limit: usize,
    pub rewards: Vec<RewardSpec>,
}

const EMBEDDED_DEFAULTS: &str = include_str!("../../configs/trainer.yaml");

/// Options of type `T` read from YAML and checked by `validate`; errors name `origin`.
pub(crate) fn checked_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    validate: fn(&T) -> Result<(), String>,
) -> Result<T, TrainError> {
    let config: T = serde_yaml::from_str(text).map_err(|e| TrainError::Config {
        origin: origin.to_string(),
        msg: e.to_string(),
    })?;
    validate(&config).map_err(|msg| TrainError::Config {
        origin: origin.to_string(),
        msg,
    })?;
    Ok(config)
}

impl TrainConfig {
    /// The defaults compiled into the binary (`configs/trainer.yaml` of the source tree; the
    /// command line and scripts prefer the working directory's copy, see `workspace`).
    pub fn builtin() -> Result<Self, TrainError> {
        Self::from_yaml(EMBEDDED_DEFAULTS, "<built-in trainer.yaml>")
    }

    /// Options read from YAML and checked; errors name `origin`.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, TrainError> {
        checked_yaml(text, origin, Self::validate)
    }

    /// These options with `overrides` (a map of option name to value) applied on top (see
    /// `options::apply`), then checked.
    pub fn with_overrides(
        &self,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, TrainError> {
        let cfg = crate::options::apply(self, overrides, "trainer")?;
        cfg.validate().map_err(|msg| TrainError::Config {
            origin: "trainer options".into(),
            msg,
        })?;
        Ok(cfg)
    }

    /// Checks the options, naming the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        self.check_counts()?;
        self.check_optimizer()?;
        self.check_sampling()
    }

    /// Sizes and counts: all at least 1, and a batch no larger than the data.
    fn check_counts(&self) -> Result<(), String> {
        let positive = [
            ("subset_size", self.subset_size),
            ("num_epochs", self.num_epochs),
            ("num_generations", self.num_generations),
            ("batch_size", self.batch_size),
            ("max_completion_length", self.max_completion_length),
            ("save_steps", self.save_steps),
            ("save_total_limit", self.save_total_limit),
        ];
        if let Some((k, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`{k}` must be at least 1"));
        }
        if self.batch_size > self.subset_size {
            return Err(format!(
                "`batch_size` ({}) is larger than `subset_size` ({}): a step cannot hold more prompts than there are",
                self.batch_size, self.subset_size
            ));
        }
        Ok(())
    }

    /// The loss's and the optimizer's numbers.
    fn check_optimizer(&self) -> Result<(), String> {
        if !(self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            return Err(format!(
                "`max_grad_norm` must be >= 0 (0: no clipping), got {}",
                self.max_grad_norm
            ));
        }
        for (k, v, ok, want) in [
            ("beta", self.beta, self.beta >= 0.0, ">= 0"),
            (
                "epsilon",
                self.epsilon,
                self.epsilon > 0.0,
                "> 0 (the PPO clip range)",
            ),
            (
                "lambda_psr",
                self.lambda_psr,
                self.lambda_psr >= 0.0,
                ">= 0",
            ),
            (
                "weight_decay",
                self.weight_decay,
                self.weight_decay >= 0.0,
                ">= 0",
            ),
        ] {
            if !(ok && v.is_finite()) {
                return Err(format!("`{k}` must be {want}, got {v}"));
            }
        }
        if !self.learning_rate.is_finite() || self.learning_rate <= 0.0 {
            return Err(format!(
                "`learning_rate` must be positive, got {}",
                self.learning_rate
            ));
        }
        Ok(())
    }

    /// Sampling, the grouping GRPO needs, and what counts as correct.
    fn check_sampling(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.top_p) || self.top_p == 0.0 {
            return Err(format!("`top_p` must be in (0, 1], got {}", self.top_p));
        }
        if self.temperature.is_nan() || self.temperature <= 0.0 {
            return Err(format!(
                "`temperature` must be positive for training, got {}",
                self.temperature
            ));
        }
        if self.mode == Mode::Grpo && self.num_generations < 2 {
            return Err(format!(
                "`num_generations` must be at least 2 for grpo, got {}: its advantage compares the completions of one prompt, so with one it is always 0",
                self.num_generations
            ));
        }
        if !(self.reward_threshold > 0.0 && self.reward_threshold <= 1.0) {
            return Err(format!(
                "`reward_threshold` must be in (0, 1], got {}: a completion is correct when its accuracy reward (0 or 1) reaches it",
                self.reward_threshold
            ));
        }
        if self.rewards.is_empty() {
            return Err("`rewards` is empty".into());
        }
        Ok(())
    }

    /// What the run's reward functions take their defaults from.
    pub fn reward_context(&self) -> RewardContext {
        RewardContext {
            max_completion_length: self.max_completion_length,
        }
    }

    /// Steps in one pass over the subset (the last batch may be short).
    pub fn steps_per_epoch(&self) -> usize {
        self.subset_size.div_ceil(self.batch_size)
    }

    pub fn total_steps(&self) -> usize {
        self.steps_per_epoch() * self.num_epochs
    }

    /// The learning rate of 0-based `step` (see [`lr_schedule`]).
    pub fn lr_at(&self, step: usize) -> f64 {
        lr_schedule(
            self.learning_rate,
            self.lr_scheduler,
            self.warmup_steps,
            self.total_steps(),
            step,
        )
    }
}

/// Learning rate of 0-based `step` of `total`: linear warm-up over `warmup` steps, then
/// constant, or linear or cosine decay to 0 at `total`.
pub fn lr_schedule(base: f64, schedule: Schedule, warmup: usize, total: usize, step: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.max(1).saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    match schedule {
        Schedule::Constant => base,
        Schedule::Linear => base * (1.0 - progress),
        Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_overrides_are_checked() {
        let d = TrainConfig::builtin().unwrap();
        assert_eq!(d.mode, Mode::Grpo);
        assert_eq!(d.lambda_psr, 0.1);
        let mut o = serde_json::Map::new();
        o.insert("mode".into(), "nsr".into());
        o.insert("num_generations".into(), 8.into());
        let c = d.with_overrides(&o).unwrap();
        assert_eq!((c.mode, c.num_generations), (Mode::Nsr, 8));
        let mut bad = serde_json::Map::new();
        bad.insert("num_generation".into(), 8.into());
        let e = d.with_overrides(&bad).unwrap_err().to_string();
        assert!(
            e.contains("num_generation") && e.contains("num_generations"),
            "{e}"
        );
        let mut bad = serde_json::Map::new();
        bad.insert("mode".into(), "ppo".into());
        let e = d.with_overrides(&bad).unwrap_err().to_string();
        assert!(e.contains("ppo"), "{e}");
        for (key, value, needle) in [
            ("num_generations", serde_json::json!(1), "num_generations"),
            (
                "reward_threshold",
                serde_json::json!(0.0),
                "reward_threshold",
            ),
            (
                "reward_threshold",
                serde_json::json!(1.5),
                "reward_threshold",
            ),
        ] {
            let mut bad = serde_json::Map::new();
            bad.insert(key.into(), value);
            let e = d.with_overrides(&bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        // One completion per prompt is fine where no group statistic is needed.
        let mut nsr1 = serde_json::Map::new();
        nsr1.insert("mode".into(), "nsr".into());
        nsr1.insert("num_generations".into(), 1.into());
        assert!(d.with_overrides(&nsr1).is_ok());
        let e = TrainConfig::from_yaml("mode: grpo\nbogus: 1\n", "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.yaml") && e.contains("bogus"), "{e}");
    }

    #[test]
    fn schedules() {
        let mut c = TrainConfig::builtin().unwrap();
        c.subset_size = 20;
        c.batch_size = 2; // 10 steps
        c.learning_rate = 1.0;
        c.warmup_steps = 2;
        assert_eq!(c.lr_at(0), 0.5);
        assert_eq!(c.lr_at(1), 1.0);
        c.lr_scheduler = Schedule::Linear;
        assert_eq!(c.lr_at(2), 1.0);
        assert!((c.lr_at(6) - 0.5).abs() < 1e-12);
        c.lr_scheduler = Schedule::Cosine;
        assert!((c.lr_at(6) - 0.5).abs() < 1e-12);
        assert!(c.lr_at(10).abs() < 1e-12);
    }
}
