//! Fresh weights for a preset: seeded normal initialisation as Hugging Face's
//! `Qwen2PreTrainedModel._init_weights` does (normal(0, initializer_range) matrices, zero
//! biases, unit norms).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::{Params, Qwen2Config, Result};

pub fn init_params(cfg: &Qwen2Config, std: f64, seed: u64, device: &Device) -> Result<Params> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0f32, std as f32)
        .map_err(|e| super::ModelError::Invalid(format!("initializer_range {std}: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, shape) in Params::expected_shapes(cfg) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        };
        tensors.insert(name, Tensor::from_vec(values, shape, device)?);
    }
    Params::from_tensors(tensors)
}
