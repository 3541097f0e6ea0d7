//! Where a run's data and random streams stand before a step. Both trainers derive the data
//! order of epoch `e` from `(seed, e)` and (RL) the sampling of step `s` from `(seed, s)`, so
//! a step's inputs depend only on the configuration, the step and the weights: what makes a
//! resumed run identical to one never interrupted, and every mode see the same prompts.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

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
