//! The four objectives: which samples a mode keeps, their advantages, and the clipped
//! surrogate loss aggregated over tokens.
//!
//! | mode | kept | advantage |
//! |---|---|---|
//! | grpo | all | `(r - mean_group) / (std_group + 1e-4)`, Bessel std (TRL) |
//! | psr | correct | `+1 + s` |
//! | nsr | incorrect | `-1 + s` |
//! | w-reinforce | all | `lambda_psr * (1 + s)` correct, `-1 + s` incorrect |
//!
//! `r` is the weighted total of the run's rewards, `s` its shaping part: the weighted sum of
//! every reward but `accuracy` (0 with the default, correctness-only rewards). PSR, NSR and
//! W-REINFORCE are REINFORCE on the paper's reward, +1 for a correct sample and -1 for an
//! incorrect one, so shaping adds to that reward exactly as it adds to GRPO's total: every mode
//! sees the same rewards.
//!
//! Dropped samples are removed, not zero-weighted: they do not count in the normaliser (the
//! paper's verl code). Every mode goes through the PPO-clipped surrogate
//! `-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)` per token, plus `beta * k3` KL to a
//! frozen reference when `beta > 0`. With one update per rollout the old log-probs are the
//! current ones detached, so the ratio is 1 and the clip never binds (as in TRL with
//! `num_iterations = 1`).

use candle_core::{DType, Result, Tensor};

use super::config::{LossType, Mode};

/// Advantages and kept flags of one group, from its total rewards, their shaping part and
/// correctness.
pub fn advantages(
    mode: Mode,
    rewards: &[f64],
    shaping: &[f64],
    correct: &[bool],
    lambda_psr: f64,
) -> (Vec<f64>, Vec<bool>) {
    let n = rewards.len();
    let signed = |base: f64, i: usize| base + shaping[i];
    match mode {
        Mode::Grpo => {
            let mean = rewards.iter().sum::<f64>() / n.max(1) as f64;
            let std = if n > 1 {
                (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
            } else {
                0.0
            };
            (
                rewards.iter().map(|r| (r - mean) / (std + 1e-4)).collect(),
                vec![true; n],
            )
        }
        Mode::Psr => ((0..n).map(|i| signed(1.0, i)).collect(), correct.to_vec()),
        Mode::Nsr => (
            (0..n).map(|i| signed(-1.0, i)).collect(),
            correct.iter().map(|c| !c).collect(),
        ),
        Mode::WReinforce => (
            (0..n)
                .map(|i| {
                    if correct[i] {
                        lambda_psr * signed(1.0, i)
                    } else {
                        signed(-1.0, i)
                    }
                })
                .collect(),
            vec![true; n],
        ),
    }
}

/// The step-wide denominators, known before any group's backward pass.
#[derive(Debug, Clone, Copy)]
pub struct Normaliser {
    pub loss_type: LossType,
    /// Kept completion tokens in the whole step.
    pub kept_tokens: f64,
    /// Kept completions in the whole step.
    pub kept_sequences: f64,
    pub max_completion_length: usize,
}

/// Per-group diagnostics of the loss.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossStats {
    /// Kept tokens whose ratio was clipped.
    pub clipped_tokens: f64,
    /// Sum over kept tokens of the k3 KL (0 without a reference).
    pub kl_sum: f64,
}

/// One group's share of the step loss. `logp`, `mask` `(G, L)`; `adv`, `kept` per completion;
/// `ref_logp` the reference's log-probs when `beta > 0`.
#[allow(clippy::too_many_arguments)]
pub fn group_loss(
    logp: &Tensor,
    mask: &Tensor,
    adv: &[f64],
    kept: &[bool],
    ref_logp: Option<&Tensor>,
    beta: f64,
    epsilon: f64,
    norm: &Normaliser,
) -> Result<(Tensor, LossStats)> {
    let dev = logp.device();
    let dtype = logp.dtype();
    let g = adv.len();
    let keep: Vec<f32> = kept.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
    let keep = Tensor::from_vec(keep, (g, 1), dev)?.to_dtype(dtype)?;
    let mask = mask.to_dtype(dtype)?.broadcast_mul(&keep)?;
    let a: Vec<f64> = adv.to_vec();
    let a = Tensor::from_vec(a, (g, 1), dev)?.to_dtype(dtype)?;

    let old = logp.detach();
    let ratio = (logp - &old)?.exp()?;
    let clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon)?;
    let surrogate = ratio
        .broadcast_mul(&a)?
        .minimum(&clipped.broadcast_mul(&a)?)?;
    let mut per_token = surrogate.neg()?;
    let mut stats = LossStats::default();
    let was_clipped = ratio.ne(&clipped)?.to_dtype(dtype)?;
    stats.clipped_tokens = scalar(&(was_clipped * &mask)?.sum_all()?)?;
    if let (Some(r), true) = (ref_logp, beta > 0.0) {
        let d = (r.detach().to_dtype(dtype)? - logp)?;
        let k3 = ((d.exp()? - &d)? - 1.0)?;
        stats.kl_sum = scalar(&(k3.detach() * &mask)?.sum_all()?)?;
        per_token = (per_token + (k3 * beta)?)?;
    }
    let masked = (per_token * &mask)?;
    let loss = match norm.loss_type {
        LossType::TokenMean => (masked.sum_all()? / norm.kept_tokens.max(1.0))?,
        LossType::DrGrpo => {
            let denom = norm.kept_sequences.max(1.0) * norm.max_completion_length as f64;
            (masked.sum_all()? / denom)?
        }
        LossType::SequenceMean => {
            let per_seq_tokens = (mask.sum(1)? + 1e-12)?; // dropped rows: 0 / tiny = 0
            let per_seq = (masked.sum(1)? / per_seq_tokens)?;
            (per_seq.sum_all()? / norm.kept_sequences.max(1.0))?
        }
    };
    Ok((loss, stats))
}

fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn grpo_advantages_follow_trl() {
        // rewards 1, 0, 0, 1: mean 0.5, Bessel std sqrt(1/3)
        let (a, kept) = advantages(
            Mode::Grpo,
            &[1.0, 0.0, 0.0, 1.0],
            &[0.0; 4],
            &[true; 4],
            0.1,
        );
        let s = (1.0f64 / 3.0).sqrt();
        assert!(close(a[0], 0.5 / (s + 1e-4)) && close(a[1], -0.5 / (s + 1e-4)));
        assert!(kept.iter().all(|k| *k));
        // Equal rewards: zero advantage for everyone.
        let (a, _) = advantages(Mode::Grpo, &[2.0; 4], &[0.0; 4], &[true; 4], 0.1);
        assert!(a.iter().all(|x| *x == 0.0));
    }

    #[test]
    fn psr_nsr_and_w_reinforce_keep_the_right_samples() {
        let correct = [true, false, true, false];
        let r = [1.0, 0.0, 1.0, 0.0];
        assert_eq!(
            advantages(Mode::Psr, &r, &[0.0; 4], &correct, 0.1),
            (vec![1.0; 4], vec![true, false, true, false])
        );
        assert_eq!(
            advantages(Mode::Nsr, &r, &[0.0; 4], &correct, 0.1),
            (vec![-1.0; 4], vec![false, true, false, true])
        );
        assert_eq!(
            advantages(Mode::WReinforce, &r, &[0.0; 4], &correct, 0.1),
            (vec![0.1, -1.0, 0.1, -1.0], vec![true; 4])
        );
    }

    #[test]
    fn shaping_adds_to_every_modes_reward_alike() {
        // Correct, wrong but well formatted, wrong: accuracy + 0.5 format.
        let correct = [true, false, false];
        let shaping = [0.5, 0.5, 0.0];
        let total = [1.5, 0.5, 0.0];
        let (a, _) = advantages(Mode::Psr, &total, &shaping, &correct, 0.1);
        assert_eq!(a[0], 1.5);
        let (a, kept) = advantages(Mode::Nsr, &total, &shaping, &correct, 0.1);
        assert_eq!(
            (a[1], a[2]),
            (-0.5, -1.0),
            "the formatted mistake is pushed down less"
        );
        assert_eq!(kept, vec![false, true, true]);
        let (a, _) = advantages(Mode::WReinforce, &total, &shaping, &correct, 0.1);
        assert_eq!(a, vec![0.1 * 1.5, -0.5, -1.0]);
        // GRPO normalises the same totals.
        let (a, _) = advantages(Mode::Grpo, &total, &shaping, &correct, 0.1);
        assert!(a[0] > a[1] && a[1] > a[2]);
    }

    /// A hand-built group: 3 completions of lengths 2, 3, 1 (L = 3).
    fn batch() -> (Var, Tensor) {
        let dev = Device::Cpu;
        let logp = Var::new(
            &[[-0.5f64, -1.0, 0.0], [-0.2, -0.3, -0.4], [-2.0, 0.0, 0.0]],
            &dev,
        )
        .unwrap();
        let mask = Tensor::new(
            &[[1.0f64, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]],
            &dev,
        )
        .unwrap();
        (logp, mask)
    }

    fn norm(loss_type: LossType, kept_tokens: f64, kept_sequences: f64) -> Normaliser {
        Normaliser {
            loss_type,
            kept_tokens,
            kept_sequences,
            max_completion_length: 4,
        }
    }

    /// The loss (no reference, epsilon 0.2) and its gradient with respect to `logp`.
    fn loss_and_grad(
        logp: &Var,
        mask: &Tensor,
        adv: &[f64],
        kept: &[bool],
        norm: &Normaliser,
    ) -> (f64, Vec<Vec<f64>>) {
        let (loss, _) =
            group_loss(logp.as_tensor(), mask, adv, kept, None, 0.0, 0.2, norm).unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(logp.as_tensor()).unwrap().to_vec2().unwrap();
        (loss.to_scalar::<f64>().unwrap(), g)
    }

    #[test]
    fn nsr_loss_and_gradient_by_hand() {
        // NSR keeps the incorrect completions 1 and 2 (4 tokens), advantage -1.
        // At ratio 1 the loss is -sum(A * 1)/4 over kept tokens = +1, and d loss / d logp_t =
        // -A / 4 = +0.25 on kept tokens, 0 elsewhere.
        let (logp, mask) = batch();
        let (adv, kept) = advantages(
            Mode::Nsr,
            &[1.0, 0.0, 0.0],
            &[0.0; 3],
            &[true, false, false],
            0.1,
        );
        let (loss, stats) = group_loss(
            logp.as_tensor(),
            &mask,
            &adv,
            &kept,
            None,
            0.0,
            0.2,
            &norm(LossType::TokenMean, 4.0, 2.0),
        )
        .unwrap();
        assert!(close(loss.to_scalar::<f64>().unwrap(), 1.0));
        assert_eq!(stats.clipped_tokens, 0.0);
        let g = loss.backward().unwrap();
        let grad: Vec<Vec<f64>> = g.get(logp.as_tensor()).unwrap().to_vec2().unwrap();
        assert_eq!(
            grad,
            vec![
                vec![0.0, 0.0, 0.0],
                vec![0.25, 0.25, 0.25],
                vec![0.25, 0.0, 0.0]
            ]
        );
    }

    #[test]
    fn w_reinforce_and_psr_gradients_by_hand() {
        let (logp, mask) = batch();
        // W-REINFORCE: all 6 tokens kept; A = +0.1, -1, -1.
        let (adv, kept) = advantages(
            Mode::WReinforce,
            &[1.0, 0.0, 0.0],
            &[0.0; 3],
            &[true, false, false],
            0.1,
        );
        let (loss, g) = loss_and_grad(
            &logp,
            &mask,
            &adv,
            &kept,
            &norm(LossType::TokenMean, 6.0, 3.0),
        );
        // loss = -(0.1 * 2 - 1 * 3 - 1 * 1) / 6 = 3.8 / 6
        assert!(close(loss, 3.8 / 6.0));
        assert!(close(g[0][0], -0.1 / 6.0) && close(g[1][2], 1.0 / 6.0) && g[0][2] == 0.0);

        // PSR: only completion 0 (2 tokens), A = +1: loss -1, gradient -1/2 on its tokens.
        let (adv, kept) = advantages(
            Mode::Psr,
            &[1.0, 0.0, 0.0],
            &[0.0; 3],
            &[true, false, false],
            0.1,
        );
        let (loss, g) = loss_and_grad(
            &logp,
            &mask,
            &adv,
            &kept,
            &norm(LossType::TokenMean, 2.0, 1.0),
        );
        assert!(close(loss, -1.0));
        assert_eq!(g, vec![vec![-0.5, -0.5, 0.0], vec![0.0; 3], vec![0.0; 3]]);
    }

    #[test]
    fn aggregations_and_kl_by_hand() {
        let (logp, mask) = batch();
        let adv = [1.0, 1.0, 1.0];
        let kept = [true, true, true];
        // sequence_mean: mean over sequences of -1 = -1; gradient on seq 0 tokens = -1/(2*3).
        let (loss, g) = loss_and_grad(
            &logp,
            &mask,
            &adv,
            &kept,
            &norm(LossType::SequenceMean, 6.0, 3.0),
        );
        assert!(close(loss, -1.0));
        assert!(
            close(g[0][0], -1.0 / 6.0) && close(g[1][0], -1.0 / 9.0) && close(g[2][0], -1.0 / 3.0)
        );
        // dr_grpo: -6 / (3 sequences * max length 4)
        let (loss, _) = loss_and_grad(&logp, &mask, &adv, &kept, &norm(LossType::DrGrpo, 6.0, 3.0));
        assert!(close(loss, -0.5));
        // k3 KL against a reference 0.1 above on every token: exp(0.1) - 0.1 - 1 per token.
        let reference = (logp.as_tensor() + 0.1).unwrap();
        let (loss, stats) = group_loss(
            logp.as_tensor(),
            &mask,
            &[0.0; 3],
            &kept,
            Some(&reference),
            0.5,
            0.2,
            &norm(LossType::TokenMean, 6.0, 3.0),
        )
        .unwrap();
        let k3 = 0.1f64.exp() - 0.1 - 1.0;
        assert!(close(stats.kl_sum, 6.0 * k3));
        assert!(close(loss.to_scalar::<f64>().unwrap(), 0.5 * k3));
    }
}
