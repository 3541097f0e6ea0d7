//! Evaluation on held-out questions.

mod passk;

pub use passk::{mean_pass_at_k, pass_at_k, PassKError};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{PromptTemplate, Sample};
use crate::model::{ModelError, Policy, SamplingParams};
use crate::reward::{is_correct, Scored};

/// Greedy accuracy: the fraction of `samples` whose greedy completion is relaxed-correct.
/// Prompts are decoded 16 at a time.
pub fn greedy_accuracy(
    policy: &Policy,
    samples: &[Sample],
    template: &PromptTemplate,
    max_new_tokens: usize,
) -> Result<f64, ModelError> {
    let params = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        max_new_tokens,
        stop_at_eos: true,
    };
    let mut correct = 0;
    for chunk in samples.chunks(16) {
        let prompts: Vec<Vec<u32>> = chunk
            .iter()
            .map(|s| policy.tokenizer.encode(&template.render(s)))
            .collect::<Result<_, _>>()?;
        let groups =
            policy.sample_groups(&prompts, 1, &params, &mut ChaCha8Rng::seed_from_u64(0))?;
        for (s, g) in chunk.iter().zip(&groups) {
            let c = &g[0];
            if is_correct(&Scored {
                sample: s,
                completion: &c.text,
                tokens: c.tokens.len(),
            }) {
                correct += 1;
            }
        }
    }
    Ok(correct as f64 / samples.len().max(1) as f64)
}
