//! The second half of an RL step: the clipped-surrogate loss of the rollout's kept samples,
//! its gradients (groups in parallel), clipping and one AdamW step. A rollout with nothing to
//! learn from is skipped: no optimizer step at all.

use std::time::Instant;

use super::grads::{backward_pieces, clip_factor, global_norm};
use super::metrics::Phases;
use super::objective::{group_loss, LossStats, Normaliser};
use super::rl::RlTrainer;
use super::rollout::Rollout;
use super::{ensure_finite, ensure_finite_weights, TrainError};
use crate::model::Completion;

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update {
    /// No optimizer step: the rollout had nothing to learn from.
    pub skipped: bool,
    pub loss: Option<f64>,
    /// The gradient norm before clipping.
    pub grad_norm: Option<f64>,
    pub entropy: Option<f64>,
    pub clip_fraction: Option<f64>,
    pub kl: Option<f64>,
    pub learning_rate: f64,
    pub seconds: f64,
    /// Where the time went (`None` when skipped).
    pub phases: Option<Phases>,
}

impl RlTrainer {
    /// The update of `r`'s step: loss, backward, clipping and AdamW. A non-finite loss,
    /// gradient norm or updated weight stops it with an error.
    pub fn update(&mut self, r: &Rollout) -> Result<Update, TrainError> {
        let cfg = &self.config;
        let step = r.step;
        let beta = cfg.beta > 0.0;
        let lr = cfg.lr_at(step);
        let t1 = Instant::now();
        let active = r.active_groups(beta);
        let mut u = Update {
            skipped: active.is_empty(),
            loss: None,
            grad_norm: None,
            entropy: None,
            clip_fraction: None,
            kl: None,
            learning_rate: lr,
            seconds: 0.0,
            phases: None,
        };
        if !u.skipped {
            let (grads, sides, mut phases) =
                backward_pieces(&self.policy.params, active.len(), |j| {
                    let gi = active[j];
                    let (adv, kept) = &r.advantages[gi];
                    self.group_loss(&r.prompts[gi], &r.groups[gi], adv, kept, &r.normaliser)
                })?;
            let t2 = Instant::now();
            let grad_norm = global_norm(&grads)?;
            let loss: f64 = sides.iter().map(|s| s.loss).sum();
            ensure_finite(step, "loss", loss, lr, cfg.max_grad_norm)?;
            ensure_finite(step, "gradient norm", grad_norm, lr, cfg.max_grad_norm)?;
            let factor = clip_factor(grad_norm, cfg.max_grad_norm);
            self.optimizer
                .step(&self.policy.params, &grads, lr, factor)?;
            ensure_finite_weights(step, &self.policy.params, lr, cfg.max_grad_norm)?;
            phases.optimizer = t2.elapsed().as_secs_f64();
            u.phases = Some(phases);
            let kept_tokens = r.normaliser.kept_tokens as usize;
            let ent_tokens: f64 = sides.iter().map(|s| s.tokens).sum();
            let ent: f64 = sides.iter().map(|s| s.entropy_sum).sum();
            let clipped: f64 = sides.iter().map(|s| s.stats.clipped_tokens).sum();
            u.loss = Some(loss);
            u.grad_norm = Some(grad_norm);
            u.entropy = Some(ent / ent_tokens.max(1.0));
            u.clip_fraction = Some(clipped / kept_tokens.max(1) as f64);
            if beta {
                let kl: f64 = sides.iter().map(|s| s.stats.kl_sum).sum();
                u.kl = Some(kl / kept_tokens.max(1) as f64);
            }
        }
        u.seconds = t1.elapsed().as_secs_f64();
        Ok(u)
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
}

/// What one group's backward piece reports besides its loss tensor.
struct GroupSide {
    loss: f64,
    stats: LossStats,
    entropy_sum: f64,
    tokens: f64,
}
