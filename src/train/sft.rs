//! The supervised warm start: teacher forcing on gold reasoning traces, loss on completion
//! tokens only, so RL starts from a model that is sometimes right.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::lr_schedule;
use super::grads::{backward_pieces, clip_factor, global_norm};
use super::observe::{Observer, Phase, StepMetrics};
use super::optim::{AdamW, AdamWConfig};
use super::rl::{derive_seed, RunSummary};
use super::{Schedule, TrainError};
use crate::data::{gold_completion, PromptTemplate, Sample};
use crate::model::Policy;
use crate::parallel::worker_threads;

/// Warm-start options (defaults suit the `tiny` preset from random initialisation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmStartConfig {
    /// Training samples used (the first N).
    pub samples: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub lr_scheduler: Schedule,
    pub warmup_steps: usize,
    pub max_grad_norm: f64,
    pub seed: u64,
}

impl Default for WarmStartConfig {
    fn default() -> Self {
        Self {
            samples: 3000,
            epochs: 2,
            batch_size: 16,
            learning_rate: 2e-3,
            lr_scheduler: Schedule::Cosine,
            warmup_steps: 20,
            max_grad_norm: 1.0,
            seed: 2025,
        }
    }
}

impl WarmStartConfig {
    pub fn total_steps(&self) -> usize {
        self.samples.div_ceil(self.batch_size) * self.epochs
    }

    fn lr_at(&self, step: usize) -> f64 {
        lr_schedule(
            self.learning_rate,
            self.lr_scheduler,
            self.warmup_steps,
            self.total_steps(),
            step,
        )
    }
}

/// Fine-tunes `policy` on `samples`' gold completions (prompt tokens are context, not
/// targets; the end-of-text token is a target so the model learns to stop).
pub fn warm_start(
    policy: &Policy,
    samples: &[Sample],
    cfg: &WarmStartConfig,
    template: &PromptTemplate,
    obs: &mut dyn Observer,
) -> Result<RunSummary, TrainError> {
    let start = Instant::now();
    let n = cfg.samples.min(samples.len());
    let cfg = &WarmStartConfig {
        samples: n,
        ..cfg.clone()
    };
    if n == 0 {
        return Err(TrainError::Config {
            origin: "warm_start".into(),
            msg: "no samples to warm-start on".into(),
        });
    }
    let mut seqs = Vec::with_capacity(n);
    for s in &samples[..n] {
        let prompt = policy.tokenizer.encode(&template.render(s))?;
        let mut full = prompt.clone();
        full.extend(policy.tokenizer.encode(&gold_completion(s))?);
        full.push(policy.tokenizer.eos_id());
        seqs.push((full, prompt.len()));
    }
    let mut opt = AdamW::new(AdamWConfig::default());
    let spe = n.div_ceil(cfg.batch_size);
    let total = spe * cfg.epochs;
    tracing::info!(samples = n, steps = total, "warm start");
    obs.on_start(Phase::WarmStart, 0, total);
    let mut done = 0;
    for step in 0..total {
        if obs.should_stop() {
            break;
        }
        let epoch = step / spe;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
            cfg.seed,
            epoch as u64,
        )));
        let b = (step % spe) * cfg.batch_size;
        let mut batch: Vec<usize> = order[b..(b + cfg.batch_size).min(n)].to_vec();
        // Rows of similar length share a piece, so little is spent on padding.
        batch.sort_by_key(|&i| seqs[i].0.len());
        let tokens: usize = batch.iter().map(|&i| seqs[i].0.len() - seqs[i].1).sum();
        let pieces: Vec<Vec<usize>> = batch
            .chunks(batch.len().div_ceil(worker_threads()).max(1))
            .map(<[usize]>::to_vec)
            .collect();
        let t0 = Instant::now();
        let (grads, losses) = backward_pieces(&policy.params, pieces.len(), |j| {
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
        let norm = global_norm(&grads)?;
        let lr = cfg.lr_at(step);
        opt.step(
            &policy.params,
            &grads,
            lr,
            clip_factor(norm, cfg.max_grad_norm),
        )?;
        let mut m = StepMetrics {
            phase: Phase::WarmStart,
            step,
            total_steps: total,
            values: Default::default(),
            samples: batch.len(),
            correct: 0,
            incorrect: 0,
            kept: batch.len(),
            lambda_psr: 0.0,
            examples: Vec::new(),
        };
        m.values.insert("loss".into(), losses.iter().sum());
        m.values.insert("grad_norm".into(), norm);
        m.values.insert("learning_rate".into(), lr);
        m.values
            .insert("step_time".into(), t0.elapsed().as_secs_f64());
        m.values.insert("tokens".into(), tokens as f64);
        obs.on_step(&m);
        done += 1;
    }
    Ok(RunSummary {
        steps_done: done,
        total_steps: total,
        stopped_early: done < total,
        seconds: start.elapsed().as_secs_f64(),
    })
}
