//! The supervised warm start: teacher forcing on gold reasoning traces, loss on completion
//! tokens only, so RL starts from a model that is sometimes right.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::config::{checked_yaml, lr_schedule};
use super::cursor::Cursor;
use super::fit::Trainer;
use super::grads::{backward_pieces, clip_factor, global_norm};
use super::metrics::StepMetrics;
use super::observe::{Observer, Phase};
use super::optim::{AdamW, AdamWConfig};
use super::{ensure_finite, ensure_finite_weights, Schedule, TrainError};
use crate::data::{gold_completion, PromptFormat, PromptTemplate, Sample};
use crate::model::Policy;

/// Warm-start options; the defaults are `configs/warm_start.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmStartConfig {
    /// Training samples used (the first N).
    pub samples: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Where linear and cosine decay end, and where warm-up starts (0: from and to zero).
    #[serde(default)]
    pub min_learning_rate: f64,
    pub lr_scheduler: Schedule,
    pub warmup_steps: usize,
    /// AdamW's betas.
    #[serde(default = "default_beta1")]
    pub adam_beta1: f64,
    #[serde(default = "default_beta2")]
    pub adam_beta2: f64,
    /// Decoupled weight decay, on weight matrices only (never norms or biases).
    #[serde(default)]
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Checkpoint every N steps (and at the end) when run through the store.
    pub save_steps: usize,
    /// Checkpoints kept (0: all).
    pub save_total_limit: usize,
    /// `raw`, or `chat`: the prompt as the user turn of the model's chat template.
    #[serde(default)]
    pub prompt_format: PromptFormat,
}

fn default_beta1() -> f64 {
    AdamWConfig::default().beta1
}

fn default_beta2() -> f64 {
    AdamWConfig::default().beta2
}

const EMBEDDED_DEFAULTS: &str = include_str!("../../configs/warm_start.yaml");

impl WarmStartConfig {
    /// The defaults compiled into the binary (`configs/warm_start.yaml` of the source tree;
    /// the command line and scripts prefer the working directory's copy, see `workspace`).
    pub fn builtin() -> Result<Self, TrainError> {
        Self::from_yaml(EMBEDDED_DEFAULTS, "<built-in warm_start.yaml>")
    }

    /// Options read from YAML and checked; errors name `origin`.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, TrainError> {
        checked_yaml(text, origin, Self::validate)
    }

    /// Checks the options, naming the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in [
            ("samples", self.samples),
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
        ] {
            if v == 0 {
                return Err(format!("`{k}` must be at least 1"));
            }
        }
        if self.batch_size > self.samples {
            return Err(format!(
                "`batch_size` ({}) is larger than `samples` ({}): a step cannot hold more samples than there are",
                self.batch_size, self.samples
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(format!(
                "`learning_rate` must be positive, got {}",
                self.learning_rate
            ));
        }
        if !(self.min_learning_rate >= 0.0 && self.min_learning_rate <= self.learning_rate) {
            return Err(format!(
                "`min_learning_rate` must be in [0, learning_rate = {}], got {}",
                self.learning_rate, self.min_learning_rate
            ));
        }
        for (k, v) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("`{k}` must be in [0, 1), got {v}"));
            }
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(format!(
                "`weight_decay` must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            return Err(format!(
                "`max_grad_norm` must be >= 0 (0: no clipping), got {}",
                self.max_grad_norm
            ));
        }
        Ok(())
    }

    pub fn total_steps(&self) -> usize {
        self.samples.div_ceil(self.batch_size) * self.epochs
    }

    fn lr_at(&self, step: usize) -> f64 {
        self.min_learning_rate
            + lr_schedule(
                self.learning_rate - self.min_learning_rate,
                self.lr_scheduler,
                self.warmup_steps,
                self.total_steps(),
                step,
            )
    }

    fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            weight_decay: self.weight_decay,
            ..AdamWConfig::default()
        }
    }
}

/// A supervised warm start in progress: the policy, its optimizer, and the tokenized gold
/// sequences. Like the RL trainer, a step's batch derives from the seed and the step alone,
/// so a run restored from a checkpoint continues exactly.
pub struct SftTrainer {
    pub config: WarmStartConfig,
    pub policy: Policy,
    pub optimizer: AdamW,
    /// The next step to take (0-based).
    pub step: usize,
    /// Token ids of prompt + gold completion + end-of-text, and where the completion starts.
    seqs: Vec<(Vec<u32>, usize)>,
}

impl SftTrainer {
    /// A warm start of `policy` over the first `config.samples` of `samples`.
    pub fn new(
        config: WarmStartConfig,
        policy: Policy,
        samples: &[Sample],
        template: &PromptTemplate,
    ) -> Result<Self, TrainError> {
        config.validate().map_err(|msg| TrainError::Config {
            origin: "warm_start".into(),
            msg,
        })?;
        let n = config.samples;
        if samples.len() < n {
            return Err(TrainError::Config {
                origin: "warm_start".into(),
                msg: format!(
                    "`samples` is {n} but the data has only {} samples",
                    samples.len()
                ),
            });
        }
        let mut seqs = Vec::with_capacity(n);
        for (i, s) in samples[..n].iter().enumerate() {
            let text = policy.prompt_text(&template.render(s), config.prompt_format)?;
            let prompt = policy.tokenizer.encode(&text)?;
            let mut full = prompt.clone();
            full.extend(policy.tokenizer.encode(&gold_completion(s))?);
            full.push(policy.tokenizer.eos_id());
            policy
                .check_fits(full.len(), 0)
                .map_err(|e| TrainError::Config {
                    origin: format!("sample {} (`{}`)", i + 1, s.id),
                    msg: format!("prompt and gold completion: {e}"),
                })?;
            seqs.push((full, prompt.len()));
        }
        Ok(Self {
            config: WarmStartConfig {
                samples: n,
                ..config
            },
            policy,
            optimizer: AdamW::new(config.adamw()),
            step: 0,
            seqs,
        })
    }

    pub fn total_steps(&self) -> usize {
        self.config.total_steps()
    }

    fn steps_per_epoch(&self) -> usize {
        self.config.samples.div_ceil(self.config.batch_size)
    }

    /// Where the trainer stands (see [`Cursor`]).
    pub fn cursor(&self) -> Cursor {
        let c = &self.config;
        Cursor::at(
            c.seed,
            self.step,
            self.steps_per_epoch(),
            c.batch_size,
            c.lr_at(self.step),
        )
    }

    /// Tokens in the next step's sequences (prompts and completions).
    pub fn batch_tokens(&self) -> usize {
        let c = &self.config;
        let batch = self.cursor().batch(c.samples, c.batch_size);
        batch.iter().map(|&i| self.seqs[i].0.len()).sum()
    }

    /// Takes step `self.step`: one supervised update on its batch.
    fn take_step(&mut self) -> Result<StepMetrics, TrainError> {
        let step = self.step;
        let cfg = &self.config;
        let seqs = &self.seqs;
        let policy = &self.policy;
        let mut batch = self.cursor().batch(cfg.samples, cfg.batch_size);
        // Rows of similar length share a piece, so little is spent on padding.
        batch.sort_by_key(|&i| seqs[i].0.len());
        let tokens: usize = batch.iter().map(|&i| seqs[i].0.len() - seqs[i].1).sum();
        let lens: Vec<usize> = batch.iter().map(|&i| seqs[i].0.len()).collect();
        let pieces: Vec<Vec<usize>> = token_pieces(&lens, PIECE_TOKENS)
            .into_iter()
            .map(|r| batch[r].to_vec())
            .collect();
        let t0 = Instant::now();
        let (grads, losses, mut phases) = backward_pieces(&policy.params, pieces.len(), |j| {
            let rows: Vec<Vec<u32>> = pieces[j].iter().map(|&i| seqs[i].0.clone()).collect();
            let from: Vec<usize> = pieces[j].iter().map(|&i| seqs[i].1).collect();
            let out = policy
                .sequence_logprobs(&rows, &from, true)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let nll = ((out.logp * &out.mask)?.sum_all()?.neg()? / tokens as f64)?;
            let value = nll.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            Ok((nll, value))
        })
        .map_err(|e| TrainError::Step {
            step,
            source: Box::new(e),
        })?;
        let t1 = Instant::now();
        let norm = global_norm(&grads)?;
        let lr = cfg.lr_at(step);
        let loss: f64 = losses.iter().sum();
        ensure_finite(step, "loss", loss, lr, cfg.max_grad_norm)?;
        ensure_finite(step, "gradient norm", norm, lr, cfg.max_grad_norm)?;
        self.optimizer.step(
            &policy.params,
            &grads,
            lr,
            clip_factor(norm, cfg.max_grad_norm),
        )?;
        ensure_finite_weights(step, &policy.params, lr, cfg.max_grad_norm)?;
        phases.optimizer = t1.elapsed().as_secs_f64();
        Ok(StepMetrics {
            phase: Phase::WarmStart,
            step,
            total_steps: cfg.total_steps(),
            learning_rate: lr,
            loss: Some(loss),
            grad_norm: Some(norm),
            step_time: t0.elapsed().as_secs_f64(),
            tokens: Some(tokens),
            rl: None,
            examples: Vec::new(),
            phases: Some(phases),
        })
    }
}

/// The padded tokens (rows x the piece's longest row) a warm-start piece holds at most. A
/// piece is one forward and backward pass; small pieces keep each pass's activations in the
/// CPU's caches (`chartrl bench --figure sft-step`: 1.5x the tokens/s of one piece per
/// thread, a fifth of the memory), and their number does not depend on the thread count, so
/// neither do the results.
const PIECE_TOKENS: usize = 512;

/// Splits rows sorted by length into contiguous pieces of at most `budget` padded tokens
/// (rows x the piece's longest row); a row longer than the budget is a piece of its own.
fn token_pieces(lens: &[usize], budget: usize) -> Vec<std::ops::Range<usize>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, &len) in lens.iter().enumerate() {
        if i > start && (i + 1 - start) * len > budget {
            pieces.push(start..i);
            start = i;
        }
    }
    if start < lens.len() {
        pieces.push(start..lens.len());
    }
    pieces
}

impl Trainer for SftTrainer {
    fn phase(&self) -> Phase {
        Phase::WarmStart
    }
    fn step(&self) -> usize {
        self.step
    }
    fn total_steps(&self) -> usize {
        self.config.total_steps()
    }
    fn train_step(&mut self, _obs: &mut dyn Observer) -> Result<StepMetrics, TrainError> {
        let m = self.take_step()?;
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
        SftTrainer::cursor(self)
    }
    fn restore(&mut self, step: usize, optimizer: AdamW) {
        self.step = step;
        self.optimizer = optimizer;
    }
    fn config_value(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::{token_pieces, WarmStartConfig};

    #[test]
    fn the_recipe_decays_to_its_floor_and_checks_its_options() {
        let mut c = WarmStartConfig::builtin().unwrap();
        c.samples = 3200;
        assert_eq!(c.total_steps(), 100);
        assert!((c.lr_at(c.warmup_steps) - c.learning_rate).abs() < 1e-12);
        assert!((c.lr_at(99) - c.min_learning_rate).abs() < 1e-5);
        assert!(c.lr_at(75) > c.min_learning_rate && c.lr_at(75) < c.learning_rate);
        let a = c.adamw();
        assert_eq!((a.beta1, a.beta2, a.weight_decay), (0.9, 0.99, 0.1));
        for (k, v) in [
            ("min_learning_rate", 1.0),
            ("adam_beta2", 1.0),
            ("weight_decay", -0.1),
        ] {
            let mut bad = c.clone();
            match k {
                "min_learning_rate" => bad.min_learning_rate = v,
                "adam_beta2" => bad.adam_beta2 = v,
                _ => bad.weight_decay = v,
            }
            let e = bad.validate().unwrap_err();
            assert!(e.contains(k), "{e}");
        }
    }

    #[test]
    fn pieces_cover_the_rows_in_order_within_the_token_budget() {
        let lens = [100, 110, 120, 130, 140, 150, 200, 300, 700];
        let pieces = token_pieces(&lens, 512);
        // 4 x 120 fits and 4 x 130 does not; 3 x 150 fits; 2 x 200; 300 and 700 alone.
        assert_eq!(pieces, vec![0..3, 3..6, 6..7, 7..8, 8..9]);
        let padded = |r: &std::ops::Range<usize>| r.len() * lens[r.end - 1];
        assert!(pieces[..4].iter().all(|r| padded(r) <= 512));
        assert_eq!(token_pieces(&lens, 10_000), vec![0..9]);
        assert_eq!(token_pieces(&lens[..2], 1), vec![0..1, 1..2]);
        assert!(token_pieces(&[], 512).is_empty());
    }
}
