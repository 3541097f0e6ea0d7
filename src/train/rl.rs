//! The RL loop: each step samples `num_generations` completions for `batch_size` prompts,
//! scores them, turns rewards into the mode's advantages, and takes one AdamW step on the
//! clipped surrogate.
//!
//! Determinism: the data order of epoch `e` is a permutation seeded by `(seed, e)` and the
//! sampling RNG of step `s` is seeded by `(seed, s)`, so a step's inputs depend only on the
//! configuration and the weights, never on what ran before in this process.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::grads::{backward_pieces, clip_factor, global_norm};
use super::objective::{advantages, group_loss, LossStats, Normaliser};
use super::observe::{mean_std, Event, Example, Level, Observer, Phase, StepMetrics};
use super::optim::{AdamW, AdamWConfig};
use super::{ensure_finite, ensure_finite_weights, Mode, TrainConfig, TrainError};
use crate::data::{PromptTemplate, Sample};
use crate::model::{Completion, Policy, SamplingParams};
use crate::reward::{is_correct, CustomRewards, RewardSet, Scored};

/// A policy being trained with RL, with everything needed to take the next step.
pub struct RlTrainer {
    pub config: TrainConfig,
    pub policy: Policy,
    /// Frozen copy of the initial weights, kept only when `beta > 0`.
    reference: Option<Policy>,
    rewards: RewardSet,
    samples: Vec<Sample>,
    /// Each sample's prompt, tokenized once.
    prompts: Vec<Vec<u32>>,
    pub optimizer: AdamW,
    /// The next step to take (0-based).
    pub step: usize,
}

/// What a finished (or stopped) run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub steps_done: usize,
    pub total_steps: usize,
    pub stopped_early: bool,
    pub seconds: f64,
}

/// `(seed, index)` → an RNG seed (SplitMix64).
pub fn derive_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of step `step`'s sampling RNG.
pub fn rollout_seed(seed: u64, step: usize) -> u64 {
    derive_seed(seed ^ 0x5A4D_504C, step as u64)
}

/// Where the data and random streams stand before a step. Everything here derives from the
/// seed and the step; a checkpoint records it so a resume can check it derives the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Steps done: the next step to take.
    pub step: usize,
    pub epoch: usize,
    /// Position of the next batch within the epoch's sample order.
    pub position: usize,
    /// Seed of the epoch's shuffle.
    pub order_seed: u64,
    /// Seed of the next step's sampling RNG (RL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_seed: Option<u64>,
    /// Learning rate of the next step.
    pub learning_rate: f64,
}

impl Cursor {
    /// Where the data stream stands before `step` of a run that visits `batch_size` samples a
    /// step, `steps_per_epoch` steps an epoch, each epoch in the order seeded by
    /// `(seed, epoch)`. `rollout_seed` is left for RL to fill in.
    pub fn at(
        seed: u64,
        step: usize,
        steps_per_epoch: usize,
        batch_size: usize,
        learning_rate: f64,
    ) -> Self {
        let epoch = step / steps_per_epoch;
        Cursor {
            step,
            epoch,
            position: (step % steps_per_epoch) * batch_size,
            order_seed: derive_seed(seed, epoch as u64),
            rollout_seed: None,
            learning_rate,
        }
    }

    /// The indices (into `n` samples) of the batch that starts here.
    pub fn batch(&self, n: usize, batch_size: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.order_seed));
        let start = self.position.min(n);
        order[start..(start + batch_size).min(n)].to_vec()
    }
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

    /// Continues from a checkpoint: `step` steps done, with their optimizer state. The
    /// weights are restored into `self.policy` by the caller.
    pub fn restore(&mut self, step: usize, optimizer: AdamW) {
        self.step = step;
        self.optimizer = optimizer;
    }

    /// Indices of the samples of `step`.
    pub fn batch_indices(&self, step: usize) -> Vec<usize> {
        self.cursor_at(step)
            .batch(self.samples.len(), self.config.batch_size)
    }

    /// Runs the remaining steps, stopping early when the observer asks to.
    pub fn run(&mut self, obs: &mut dyn Observer) -> Result<RunSummary, TrainError> {
        let start = Instant::now();
        let total = self.total_steps();
        tracing::info!(
            mode = self.config.mode.name(),
            start = self.step,
            total,
            "rl run"
        );
        obs.on_start(Phase::Rl(self.config.mode), self.step, total);
        let first = self.step;
        let mut stopped = false;
        while self.step < total {
            if obs.should_stop() {
                stopped = true;
                break;
            }
            self.train_step(obs)?;
        }
        Ok(RunSummary {
            steps_done: self.step - first,
            total_steps: total,
            stopped_early: stopped,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Takes step `self.step` and reports it.
    pub fn train_step(&mut self, obs: &mut dyn Observer) -> Result<StepMetrics, TrainError> {
        let step = self.step;
        let metrics = self.compute_step(step, obs).map_err(|e| match e {
            TrainError::Step { .. } | TrainError::NonFinite { .. } => e,
            other => TrainError::Step {
                step,
                source: Box::new(other),
            },
        })?;
        self.step += 1;
        tracing::debug!(step, values = ?metrics.values, "rl step");
        obs.on_step(&metrics);
        Ok(metrics)
    }

    fn compute_step(
        &mut self,
        step: usize,
        obs: &mut dyn Observer,
    ) -> Result<StepMetrics, TrainError> {
        let cfg = &self.config;
        let t0 = Instant::now();
        let idx = self.batch_indices(step);
        let prompts: Vec<Vec<u32>> = idx.iter().map(|&i| self.prompts[i].clone()).collect();
        let sampling = SamplingParams {
            temperature: cfg.temperature,
            top_p: cfg.top_p,
            max_new_tokens: cfg.max_completion_length,
            stop_at_eos: true,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(rollout_seed(cfg.seed, step));
        let groups =
            self.policy
                .sample_groups(&prompts, cfg.num_generations, &sampling, &mut rng)?;
        let rollout_s = t0.elapsed().as_secs_f64();

        // Score every completion of the step as one batch.
        let flat: Vec<(usize, &Completion)> = groups
            .iter()
            .enumerate()
            .flat_map(|(g, cs)| cs.iter().map(move |c| (g, c)))
            .collect();
        let scored: Vec<Scored> = flat
            .iter()
            .map(|(g, c)| Scored {
                sample: &self.samples[idx[*g]],
                completion: &c.text,
                tokens: c.tokens.len(),
            })
            .collect();
        let scores = self.rewards.score(&scored)?;
        // Correct: the run's `accuracy` reward (the built-in one unless a script defines its
        // own) reaches the threshold.
        let accuracy: Vec<f64> = match scores.get("accuracy") {
            Some(v) => v.to_vec(),
            None => scored
                .iter()
                .map(|s| f64::from(u8::from(is_correct(s))))
                .collect(),
        };
        let correct: Vec<bool> = accuracy
            .iter()
            .map(|a| *a >= cfg.reward_threshold)
            .collect();

        // Advantages per group; the step-wide normaliser over kept samples.
        let g = cfg.num_generations;
        let mut adv = Vec::with_capacity(groups.len());
        let mut zero_std_groups = 0;
        let mut count = KeptCounts::default();
        let mut kept_tokens = 0usize;
        for (gi, group) in groups.iter().enumerate() {
            let span = gi * g..(gi + 1) * g;
            let r = &scores.total[span.clone()];
            let ok = &correct[span.clone()];
            if r.iter().all(|x| *x == r[0]) {
                zero_std_groups += 1;
            }
            let (a, kept) = advantages(cfg.mode, r, &scores.shaping[span], ok, cfg.lambda_psr);
            for (j, c) in group.iter().enumerate() {
                if kept[j] {
                    kept_tokens += c.tokens.len();
                    count.add(ok[j], a[j]);
                }
            }
            adv.push((a, kept));
        }
        let norm = Normaliser {
            loss_type: cfg.loss_type,
            kept_tokens: kept_tokens as f64,
            kept_sequences: count.kept as f64,
            max_completion_length: cfg.max_completion_length,
        };

        let mut m = StepMetrics {
            phase: Phase::Rl(cfg.mode),
            step,
            total_steps: cfg.total_steps(),
            values: Default::default(),
            samples: scored.len(),
            correct: correct.iter().filter(|c| **c).count(),
            incorrect: correct.iter().filter(|c| !**c).count(),
            kept: count.kept,
            lambda_psr: cfg.lambda_psr,
            examples: Vec::new(),
        };
        m.examples = examples(&flat, &idx, &self.samples, &scores, &adv, g);
        count.record(&mut m);

        // Groups whose loss has a gradient: a kept sample with a non-zero advantage (or any
        // kept sample, for the KL term). A step with none is skipped: no optimizer step.
        let beta = cfg.beta > 0.0;
        let active: Vec<usize> = (0..groups.len())
            .filter(|&i| {
                let (a, kept) = &adv[i];
                kept.iter().zip(a).any(|(k, a)| *k && (*a != 0.0 || beta))
            })
            .collect();
        self.warn_about(step, &m, &groups, active.is_empty(), obs);
        let lr = cfg.lr_at(step);
        let t1 = Instant::now();
        if active.is_empty() {
            m.values.insert(SKIPPED.into(), 1.0);
        } else {
            let (grads, sides) = backward_pieces(&self.policy.params, active.len(), |j| {
                let gi = active[j];
                self.group_loss(&prompts[gi], &groups[gi], &adv[gi].0, &adv[gi].1, &norm)
            })?;
            let grad_norm = global_norm(&grads)?;
            let loss: f64 = sides.iter().map(|s| s.loss).sum();
            ensure_finite(step, "loss", loss, lr, cfg.max_grad_norm)?;
            ensure_finite(step, "gradient norm", grad_norm, lr, cfg.max_grad_norm)?;
            let factor = clip_factor(grad_norm, cfg.max_grad_norm);
            self.optimizer
                .step(&self.policy.params, &grads, lr, factor)?;
            ensure_finite_weights(step, &self.policy.params, lr, cfg.max_grad_norm)?;
            let ent_tokens: f64 = sides.iter().map(|s| s.tokens).sum();
            let ent: f64 = sides.iter().map(|s| s.entropy_sum).sum();
            let clipped: f64 = sides.iter().map(|s| s.stats.clipped_tokens).sum();
            m.values.insert(SKIPPED.into(), 0.0);
            m.values.insert("loss".into(), loss);
            m.values.insert("grad_norm".into(), grad_norm);
            m.values.insert("entropy".into(), ent / ent_tokens.max(1.0));
            m.values
                .insert("clip_fraction".into(), clipped / kept_tokens.max(1) as f64);
            if beta {
                let kl: f64 = sides.iter().map(|s| s.stats.kl_sum).sum();
                m.values.insert("kl".into(), kl / kept_tokens.max(1) as f64);
            }
        }
        let update_s = t1.elapsed().as_secs_f64();
        self.record_rollout(&mut m, &scores, &groups, zero_std_groups, lr);
        let new_tokens: usize = groups.iter().flatten().map(|c| c.tokens.len()).sum();
        m.values.insert(
            "tokens_per_s".into(),
            new_tokens as f64 / rollout_s.max(1e-9),
        );
        m.values.insert("rollout_time".into(), rollout_s);
        m.values.insert("update_time".into(), update_s);
        m.values
            .insert("step_time".into(), t0.elapsed().as_secs_f64());
        Ok(m)
    }

    /// One group's loss (for `backward_pieces`), with what the metrics need.
    fn group_loss(
        &self,
        prompt: &[u32],
        group: &[Completion],
        adv: &[f64],
        kept: &[bool],
        norm: &Normaliser,
    ) -> candle_core::Result<(candle_core::Tensor, GroupSide)> {
        let to_candle = |e: crate::model::ModelError| candle_core::Error::Msg(e.to_string());
        let comps: Vec<Vec<u32>> = group.iter().map(|c| c.tokens.clone()).collect();
        let t = self.config.temperature;
        let out = self
            .policy
            .group_logprobs(prompt, &comps, t, true)
            .map_err(to_candle)?;
        let reference = match &self.reference {
            Some(r) => Some(
                r.group_logprobs(prompt, &comps, t, false)
                    .map_err(to_candle)?
                    .logp,
            ),
            None => None,
        };
        let (loss, stats) = group_loss(
            &out.logp,
            &out.mask,
            adv,
            kept,
            reference.as_ref(),
            self.config.beta,
            self.config.epsilon,
            norm,
        )?;
        let entropy_sum = (out.entropy * &out.mask)?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        let tokens = out
            .mask
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        let loss_value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        Ok((
            loss,
            GroupSide {
                loss: loss_value,
                stats,
                entropy_sum,
                tokens,
            },
        ))
    }

    fn record_rollout(
        &self,
        m: &mut StepMetrics,
        scores: &crate::reward::RewardScores,
        groups: &[Vec<Completion>],
        zero_std_groups: usize,
        lr: f64,
    ) {
        let v = &mut m.values;
        v.insert("learning_rate".into(), lr);
        let (mean, std) = mean_std(&scores.total);
        v.insert("reward".into(), mean);
        v.insert("reward_std".into(), std);
        for (name, values) in &scores.per_function {
            let (mean, std) = mean_std(values);
            v.insert(format!("rewards/{name}/mean"), mean);
            v.insert(format!("rewards/{name}/std"), std);
        }
        let n = m.samples as f64;
        v.insert("correct".into(), m.correct as f64);
        v.insert("incorrect".into(), m.incorrect as f64);
        v.insert("positive_ratio".into(), m.correct as f64 / n);
        v.insert("negative_ratio".into(), m.incorrect as f64 / n);
        v.insert(
            "frac_reward_zero_std".into(),
            zero_std_groups as f64 / groups.len().max(1) as f64,
        );
        let lens: Vec<f64> = groups
            .iter()
            .flatten()
            .map(|c| c.tokens.len() as f64)
            .collect();
        let (len_mean, _) = mean_std(&lens);
        v.insert("completion_length/mean".into(), len_mean);
        v.insert(
            "completion_length/min".into(),
            lens.iter().copied().fold(f64::INFINITY, f64::min),
        );
        v.insert(
            "completion_length/max".into(),
            lens.iter().copied().fold(0.0, f64::max),
        );
        let truncated = groups.iter().flatten().filter(|c| !c.finished).count();
        v.insert("clipped_ratio".into(), truncated as f64 / n);
    }

    /// Warnings the original project's monitoring guide lists, raised as they happen.
    fn warn_about(
        &self,
        step: usize,
        m: &StepMetrics,
        groups: &[Vec<Completion>],
        no_signal: bool,
        obs: &mut dyn Observer,
    ) {
        let mut warn = |kind: &'static str, message: String| {
            obs.on_event(&Event {
                step,
                level: Level::Warning,
                kind,
                message,
            })
        };
        match self.config.mode {
            Mode::Nsr if m.incorrect == 0 => warn(
                "no_negative_samples",
                format!("NSR step {step}: every completion was correct, nothing to push down; step skipped (raise num_generations or lower reward_threshold)"),
            ),
            Mode::Psr if m.correct == 0 => warn(
                "no_positive_samples",
                format!("PSR step {step}: no completion was correct, nothing to reinforce; step skipped (warm-start the model longer, raise num_generations or lower reward_threshold)"),
            ),
            Mode::Grpo if no_signal => warn(
                "no_reward_variance",
                format!("GRPO step {step}: every prompt's completions got equal rewards, so every advantage is 0; step skipped (raise num_generations or batch_size, or warm-start the model longer)"),
            ),
            _ => {}
        }
        if groups.iter().flatten().all(|c| !c.finished) {
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

/// The step's best and worst completions by total reward (the first of equals; only one
/// when all are equal).
fn examples(
    flat: &[(usize, &Completion)],
    idx: &[usize],
    samples: &[Sample],
    scores: &crate::reward::RewardScores,
    adv: &[(Vec<f64>, Vec<bool>)],
    g: usize,
) -> Vec<Example> {
    if flat.is_empty() {
        return Vec::new();
    }
    let total = &scores.total;
    let mut best = 0;
    let mut worst = 0;
    for i in 1..total.len() {
        if total[i] > total[best] {
            best = i;
        }
        if total[i] < total[worst] {
            worst = i;
        }
    }
    // When every completion scored the same, one example says it all.
    let ranks: &[(&'static str, usize)] = if total[best] == total[worst] {
        &[("best", best)]
    } else {
        &[("best", best), ("worst", worst)]
    };
    ranks
        .iter()
        .copied()
        .map(|(rank, i)| Example {
            rank,
            prompt_id: samples[idx[flat[i].0]].id.clone(),
            completion: flat[i].1.text.clone(),
            rewards: scores
                .per_function
                .iter()
                .map(|(name, v)| (name.clone(), v[i]))
                .collect(),
            reward: total[i],
            advantage: adv[i / g].0[i % g],
        })
        .collect()
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

/// The metric of a skipped step (1) or an applied one (0).
pub const SKIPPED: &str = "skipped";

/// What the step kept, counted from the kept flags the loss uses: the POC checklist reads
/// these to check each mode kept what it should.
#[derive(Debug, Default)]
struct KeptCounts {
    kept: usize,
    correct: usize,
    incorrect: usize,
    /// Kept samples with a non-zero advantage: the ones that move the weights.
    informative: usize,
}

impl KeptCounts {
    fn add(&mut self, correct: bool, advantage: f64) {
        self.kept += 1;
        if correct {
            self.correct += 1;
        } else {
            self.incorrect += 1;
        }
        if advantage != 0.0 {
            self.informative += 1;
        }
    }

    fn record(&self, m: &mut StepMetrics) {
        for (key, v) in [
            ("kept", self.kept),
            ("kept_correct", self.correct),
            ("kept_incorrect", self.incorrect),
            ("informative", self.informative),
        ] {
            m.values.insert(key.into(), v as f64);
        }
    }
}

/// What one group's backward piece reports besides its loss tensor.
struct GroupSide {
    loss: f64,
    stats: LossStats,
    entropy_sum: f64,
    tokens: f64,
}
