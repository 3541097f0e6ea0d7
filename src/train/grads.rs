//! Gradients by parameter name, and backward passes over independent pieces of a loss run
//! on worker threads.
//!
//! A step's loss is a sum over prompt groups (each already divided by the step's global
//! normaliser), so its gradient is the sum of the groups' gradients. Each group's forward and
//! backward run on their own, in parallel, and the gradients are added in group order: the
//! result is the same whatever the thread count.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Result, Tensor};

use super::metrics::Phases;
use crate::model::grad_sink;
use crate::model::Params;
use crate::parallel::fold_in_order;

/// Gradient of each parameter that received one, by Hugging Face name.
pub type Grads = BTreeMap<String, Tensor>;

/// Runs `loss_of(i)` for every piece `0..pieces`, back-propagates each, and returns the summed
/// gradients with each piece's side value `T` (its metrics), in piece order, and where the
/// time went (`optimizer` left at 0 for the caller). Threads take the next piece as they free
/// up; the sums are made in piece order all the same.
pub fn backward_pieces<T, F>(
    params: &Params,
    pieces: usize,
    loss_of: F,
) -> Result<(Grads, Vec<T>, Phases)>
where
    T: Send,
    F: Fn(usize) -> Result<(Tensor, T)> + Sync,
{
    let mut total = Grads::new();
    let mut sides = Vec::with_capacity(pieces);
    let mut phases = Phases::default();
    let start = Instant::now();
    fold_in_order(
        pieces,
        |i| {
            let t0 = Instant::now();
            let (loss, side) = loss_of(i)?;
            let t1 = Instant::now();
            // The linear layers' weight gradients skip candle's store (`grad_sink`).
            let (store, mut sunk) = grad_sink::collect(|| loss.backward());
            let store = store?;
            let mut grads = Grads::new();
            for (name, var) in params.iter() {
                let t = var.as_tensor();
                let g = match (store.get(t), sunk.remove(&t.id())) {
                    (Some(a), Some(b)) => (a + b)?,
                    (Some(a), None) => a.clone(),
                    (None, Some(b)) => b,
                    (None, None) => continue,
                };
                grads.insert(name.clone(), g);
            }
            let forward = (t1 - t0).as_secs_f64();
            Ok((grads, side, (forward, t1.elapsed().as_secs_f64())))
        },
        |_, (grads, side, (forward, backward))| {
            phases.forward += forward;
            phases.backward += backward;
            for (name, g) in grads {
                let sum = match total.remove(&name) {
                    Some(acc) => (acc + g)?,
                    None => g,
                };
                total.insert(name, sum);
            }
            sides.push(side);
            Ok(())
        },
        || candle_core::Error::Msg("a backward thread panicked".into()),
    )?;
    phases.passes = start.elapsed().as_secs_f64();
    Ok((total, sides, phases))
}

/// The L2 norm of all gradients together.
pub fn global_norm(grads: &Grads) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.values() {
        sq += g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f32>()? as f64;
    }
    Ok(sq.sqrt())
}

/// The factor that scales a gradient of norm `norm` down to `max_norm` (1.0 when already
/// below, or when `max_norm` is not positive), as `torch.nn.utils.clip_grad_norm_`.
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn params() -> Params {
        let mut map = BTreeMap::new();
        map.insert(
            "w".to_string(),
            Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap(),
        );
        Params::from_tensors(map).unwrap()
    }

    #[test]
    fn pieces_sum_to_the_gradient_of_the_whole() {
        let p = params();
        let w = p.get("w").unwrap().as_tensor().clone();
        let scales = [3.0f64, -1.0, 0.5];
        let (grads, sides, phases) =
            backward_pieces(&p, 3, |i| Ok(((w.sqr()?.sum_all()? * scales[i])?, i))).unwrap();
        assert!(phases.forward > 0.0 && phases.backward > 0.0 && phases.passes > 0.0);
        assert_eq!(phases.optimizer, 0.0);
        // d/dw sum_i s_i * |w|^2 = 2 w * sum_i s_i = 2 w * 2.5
        let g: Vec<f32> = grads["w"].to_vec1().unwrap();
        assert_eq!(g, vec![5.0, 10.0]);
        assert_eq!(sides, vec![0, 1, 2]);
        assert!((global_norm(&grads).unwrap() - 125f64.sqrt()).abs() < 1e-5);
    }

    /// The linear layers' weight gradients come through the sink, the rest through candle's
    /// store: together the store's own gradients, tied embeddings or not.
    #[test]
    fn a_pieces_gradients_are_a_plain_backwards() {
        use crate::model::testing::micro_policy;
        for tied in [true, false] {
            let policy = micro_policy(tied, 7, DType::F32).unwrap();
            // Tokens repeat, so an embedding row sums several gradients besides the head's.
            let seqs = vec![vec![3u32, 5, 3, 5, 3, 2, 5], vec![4, 5, 4, 5, 4, 5, 14]];
            let loss = || {
                let lp = policy.sequence_logprobs(&seqs, &[2, 3], true).unwrap();
                (lp.logp * lp.mask)?.sum_all()
            };
            let plain = loss().unwrap().backward().unwrap();
            let (grads, _, _) = backward_pieces(&policy.params, 1, |_| Ok((loss()?, ()))).unwrap();
            assert_eq!(grads.len(), policy.params.len(), "tied: {tied}");
            for (name, var) in policy.params.iter() {
                let want = plain.get(var.as_tensor()).unwrap();
                let got = &grads[name];
                // Equal as floats: `0 + -0` is `+0`, the only bits that may differ.
                let values =
                    |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
                assert_eq!(values(got), values(want), "{name}, tied: {tied}");
            }
        }
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        assert!((clip_factor(5.0, 1.0) - 0.2).abs() < 1e-6);
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert_eq!(clip_factor(5.0, 0.0), 1.0);
    }
}
