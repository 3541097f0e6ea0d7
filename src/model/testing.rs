//! Small models for tests and examples: a micro Qwen2 config and a policy built on it, with
//! a tokenizer trained in milliseconds. Used by unit and integration tests alike.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::{ChatTokenizer, ModelError, Params, Policy, Qwen2Config, Result, TokenIds};

/// A Qwen2 config small enough for finite differences: 2 layers, hidden 32, GQA 4:2.
pub fn micro_config(tie_word_embeddings: bool) -> Qwen2Config {
    Qwen2Config {
        vocab_size: 300,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 1024,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-6,
        tie_word_embeddings,
        hidden_act: "silu".into(),
        eos_token_id: None,
    }
}

/// A byte-level BPE of at most 300 tokens trained on a few chart-like lines.
pub fn micro_tokenizer() -> Result<ChatTokenizer> {
    let corpus = (0..50).map(|i| {
        format!(
            "| Year | Sales |\n| 20{i:02} | {} |\n<think>x</think>",
            i * 3
        )
    });
    ChatTokenizer::train(corpus, 300)
}

/// A micro policy with seeded random weights: matrices N(0, 0.2), so logits are far from
/// uniform, and norms 1 + N(0, 0.1) and biases N(0, 0.1), so no term hides behind a 1 or a 0.
pub fn micro_policy(tie_word_embeddings: bool, seed: u64, dtype: DType) -> Result<Policy> {
    let mut cfg = micro_config(tie_word_embeddings);
    let tokenizer = micro_tokenizer()?;
    cfg.eos_token_id = Some(TokenIds::One(tokenizer.eos_id()));
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = |std: f32| Normal::new(0f32, std).map_err(|e| ModelError::Invalid(e.to_string()));
    let (matrix, small) = (normal(0.2)?, normal(0.1)?);
    let mut tensors = BTreeMap::new();
    for (name, shape) in Params::expected_shapes(&cfg) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            (0..n).map(|_| 1.0 + small.sample(&mut rng)).collect()
        } else if name.ends_with(".bias") {
            (0..n).map(|_| small.sample(&mut rng)).collect()
        } else {
            (0..n).map(|_| matrix.sample(&mut rng)).collect()
        };
        tensors.insert(
            name,
            Tensor::from_vec(values, shape, &dev)?.to_dtype(dtype)?,
        );
    }
    Policy::new(cfg, tokenizer, Params::from_tensors(tensors)?, &dev)
}

/// The largest absolute difference between two tensors of one shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .unwrap_or(f32::INFINITY)
}

/// `m` input rows and `n` weight rows of `k`, of varied values: operands for the matrix
/// kernels' tests.
pub fn rows_and_weights(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let x = (0..m * k)
        .map(|i| ((i * 37) % 101) as f32 * 0.013 - 0.6)
        .collect();
    let w = (0..n * k)
        .map(|i| ((i * 53) % 97) as f32 * 0.021 - 1.0)
        .collect();
    (x, w)
}
