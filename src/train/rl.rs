//! The RL trainer: each step samples `num_generations` completions for `batch_size` prompts
//! and scores them ([`RlTrainer::rollout`]), then takes one AdamW step on the clipped
//! surrogate of the mode's kept samples ([`RlTrainer::update`]).
//!
//! Determinism: the data order of epoch `e` is a permutation seeded by `(seed, e)` and the
//! sampling RNG of step `s` is seeded by `(seed, s)` (see `cursor`), so a step's inputs depend
//! only on the configuration and the weights, never on what ran before in this process.

use std::time::Instant;

use super::cursor::{rollout_seed, Cursor};
use super::fit::Trainer;
use super::metrics::{RlStepMetrics, StepMetrics};
use super::observe::{mean_std, Event, Level, Observer, Phase};
use super::optim::{AdamW, AdamWConfig};
use super::rollout::Rollout;
use super::update::Update;
use super::{Mode, TrainConfig, TrainError};
use crate::data::{PromptTemplate, Sample};
use crate::model::Policy;
use crate::reward::{CustomRewards, RewardSet};

/// A policy being trained with RL, with everything needed to take the next step.
pub struct RlTrainer {
    pub config: TrainConfig,
    pub policy: Policy,
    /// Frozen copy of the initial weights, kept only when `beta > 0`.
    pub(super) reference: Option<Policy>,
    pub(super) rewards: RewardSet,
    pub(super) samples: Vec<Sample>,
    /// Each sample's prompt, tokenized once.
    pub(super) prompts: Vec<Vec<u32>>,
    pub optimizer: AdamW,
    /// The next step to take (0-based).
    pub step: usize,
}

impl RlTrainer {
    /// A trainer over the first `config.subset_size` of `samples`.
    pub fn new(
        config: TrainConfig,
        policy: Policy,
        samples: &[Sample],
        template: PromptTemplate,
    ) -> Result<Self, TrainError> {
        Self::with_rewards(config, policy, samples, template, &CustomRewards::default())
    }

    /// Like [`RlTrainer::new`], with rewards defined outside the built-ins available to
    /// `config.rewards` by name.
    pub fn with_rewards(
        config: TrainConfig,
        policy: Policy,
        samples: &[Sample],
        template: PromptTemplate,
        custom: &CustomRewards,
    ) -> Result<Self, TrainError> {
        if samples.len() < config.subset_size {
            return Err(TrainError::Config {
                origin: "train".into(),
                msg: format!(
                    "`subset_size` is {} but the data has only {} samples",
                    config.subset_size,
                    samples.len()
                ),
            });
        }
        let rewards =
            RewardSet::from_specs_with(&config.rewards, custom, &config.reward_context())?;
        let samples = samples[..config.subset_size].to_vec();
        let prompts = tokenize_prompts(&policy, &samples, &template, &config)?;
        let reference = if config.beta > 0.0 {
            Some(Policy::new(
                policy.config.clone(),
                policy.tokenizer.clone(),
                policy.params.deep_copy()?,
                policy.device(),
            )?)
        } else {
            None
        };
        let optimizer = AdamW::new(AdamWConfig {
            weight_decay: config.weight_decay,
            ..AdamWConfig::default()
        });
        Ok(Self {
            samples,
            prompts,
            config,
            policy,
            reference,
            rewards,
            optimizer,
            step: 0,
        })
    }

    pub fn total_steps(&self) -> usize {
        self.config.total_steps()
    }

    /// Each sample's prompt as token ids.
    pub fn prompts(&self) -> &[Vec<u32>] {
        &self.prompts
    }

    /// Where the trainer stands (see [`Cursor`]).
    pub fn cursor(&self) -> Cursor {
        Cursor {
            rollout_seed: Some(rollout_seed(self.config.seed, self.step)),
            ..self.cursor_at(self.step)
        }
    }

    fn cursor_at(&self, step: usize) -> Cursor {
        let c = &self.config;
        Cursor::at(
            c.seed,
            step,
            c.steps_per_epoch(),
            c.batch_size,
            c.lr_at(step),
        )
    }

    /// Indices of the samples of `step`.
    pub fn batch_indices(&self, step: usize) -> Vec<usize> {
        self.cursor_at(step)
            .batch(self.samples.len(), self.config.batch_size)
    }

    /// Takes step `self.step`: its rollout, the warnings it raises, its update.
    fn take_step(&mut self, obs: &mut dyn Observer) -> Result<StepMetrics, TrainError> {
        let t0 = Instant::now();
        let r = self.rollout(self.step)?;
        self.warn_about(&r, obs);
        let u = self.update(&r)?;
        Ok(self.metrics(&r, &u, t0.elapsed().as_secs_f64()))
    }

    /// The step's metrics from its rollout and update.
    fn metrics(&self, r: &Rollout, u: &Update, step_time: f64) -> StepMetrics {
        let (reward, reward_std) = mean_std(&r.scores.total);
        let lens: Vec<f64> = r
            .groups
            .iter()
            .flatten()
            .map(|c| c.tokens.len() as f64)
            .collect();
        let samples = lens.len();
        let correct = r.correct.iter().filter(|c| **c).count();
        let truncated = r.groups.iter().flatten().filter(|c| !c.finished).count();
        let rl = RlStepMetrics {
            lambda_psr: self.config.lambda_psr,
            samples,
            correct,
            incorrect: r.correct.len() - correct,
            kept: r.counts.kept,
            kept_correct: r.counts.correct,
            kept_incorrect: r.counts.incorrect,
            informative: r.counts.informative,
            skipped: u.skipped,
            reward,
            reward_std,
            rewards: r
                .scores
                .per_function
                .iter()
                .map(|(name, v)| {
                    let (mean, std) = mean_std(v);
                    (name.clone(), mean, std)
                })
                .collect(),
            frac_reward_zero_std: r.zero_std_groups as f64 / r.groups.len().max(1) as f64,
            completion_length: (
                mean_std(&lens).0,
                lens.iter().copied().fold(f64::INFINITY, f64::min),
                lens.iter().copied().fold(0.0, f64::max),
            ),
            clipped_ratio: truncated as f64 / samples as f64,
            entropy: u.entropy,
            clip_fraction: u.clip_fraction,
            kl: u.kl,
            tokens_per_s: r.new_tokens() as f64 / r.seconds.max(1e-9),
            rollout_time: r.seconds,
            update_time: u.seconds,
        };
        StepMetrics {
            phase: Phase::Rl(self.config.mode),
            step: r.step,
            total_steps: self.config.total_steps(),
            learning_rate: u.learning_rate,
            loss: u.loss,
            grad_norm: u.grad_norm,
            step_time,
            tokens: None,
            rl: Some(rl),
            examples: self.examples_of(r),
            phases: u.phases,
        }
    }

    /// Warnings the original project's monitoring guide lists, raised as they happen.
    fn warn_about(&self, r: &Rollout, obs: &mut dyn Observer) {
        let step = r.step;
        let correct = r.correct.iter().filter(|c| **c).count();
        let incorrect = r.correct.len() - correct;
        let no_signal = r.active_groups(self.config.beta > 0.0).is_empty();
        let mut warn = |kind: &'static str, message: String| {
            obs.on_event(&Event {
                step,
                level: Level::Warning,
                kind,
                message,
            })
        };
        match self.config.mode {
            Mode::Nsr if incorrect == 0 => warn(
                "no_negative_samples",
                format!("NSR step {step}: every completion was correct, nothing to push down; step skipped (raise num_generations or lower reward_threshold)"),
            ),
            Mode::Psr if correct == 0 => warn(
                "no_positive_samples",
                format!("PSR step {step}: no completion was correct, nothing to reinforce; step skipped (warm-start the model longer, raise num_generations or lower reward_threshold)"),
            ),
            Mode::Grpo if no_signal => warn(
                "no_reward_variance",
                format!("GRPO step {step}: every prompt's completions got equal rewards, so every advantage is 0; step skipped (raise num_generations or batch_size, or warm-start the model longer)"),
            ),
            _ => {}
        }
        if r.groups.iter().flatten().all(|c| !c.finished) {
            warn(
                "all_truncated",
                format!(
                    "step {step}: every completion hit max_completion_length {} (raise it, or check the model stops with end-of-text)",
                    self.config.max_completion_length
                ),
            );
        }
    }
}

impl Trainer for RlTrainer {
    fn phase(&self) -> Phase {
        Phase::Rl(self.config.mode)
    }
    fn step(&self) -> usize {
        self.step
    }
    fn total_steps(&self) -> usize {
        self.config.total_steps()
    }
    fn train_step(&mut self, obs: &mut dyn Observer) -> Result<StepMetrics, TrainError> {
        let step = self.step;
        let m = self.take_step(obs).map_err(|e| match e {
            TrainError::Step { .. } | TrainError::NonFinite { .. } => e,
            other => TrainError::Step {
                step,
                source: Box::new(other),
            },
        })?;
        self.step += 1;
        Ok(m)
    }
    fn policy(&self) -> &Policy {
        &self.policy
    }
    fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }
    fn cursor(&self) -> Cursor {
        RlTrainer::cursor(self)
    }
    fn restore(&mut self, step: usize, optimizer: AdamW) {
        self.step = step;
        self.optimizer = optimizer;
    }
    fn config_value(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

/// Every sample's prompt as token ids, checked to leave room for `new_tokens` within the
/// model's positions: a sample that does not fit is an error naming it, before any step.
fn tokenize_prompts(
    policy: &Policy,
    samples: &[Sample],
    template: &PromptTemplate,
    config: &TrainConfig,
) -> Result<Vec<Vec<u32>>, TrainError> {
    let new_tokens = config.max_completion_length;
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let text = policy.prompt_text(&template.render(s), config.prompt_format)?;
            let ids = policy.tokenizer.encode(&text)?;
            policy
                .check_fits(ids.len(), new_tokens)
                .map_err(|e| TrainError::Config {
                    origin: format!("sample {} (`{}`)", i + 1, s.id),
                    msg: format!(
                        "its prompt is {} tokens and max_completion_length {new_tokens}: {e}",
                        ids.len()
                    ),
                })?;
            Ok(ids)
        })
        .collect()
}
