//! `chartrl sample`: completions of one prompt, with their token counts and log-probs.

use std::path::PathBuf;

use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{Generator, PromptTemplate, Split};
use crate::model::{default_dtype, Policy, SamplingParams};

/// Sample completions of a prompt from a model.
///
/// Example: chartrl sample --model models/tiny --index 7 -n 4
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Model directory
    #[arg(long)]
    model: PathBuf,
    /// Prompt text; without it, the prompt of synthetic test sample `--index`
    #[arg(long)]
    prompt: Option<String>,
    /// Index of the synthetic test sample to ask
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// Completions to draw
    #[arg(short = 'n', long, default_value_t = 4)]
    n: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(a: SampleArgs) -> anyhow::Result<()> {
    let dir = super::model_dir(&a.model)?;
    let dev = super::device(&a.device)?;
    let policy = Policy::load(dir, &dev, default_dtype(&dev))?;
    let prompt = match &a.prompt {
        Some(p) => p.clone(),
        None => {
            let sample = Generator::new(Split::Test, 2025).sample(a.index);
            println!("gold answer: {}", sample.answer);
            PromptTemplate::load_default()?.render(&sample)
        }
    };
    println!("--- prompt ---\n{prompt}");
    let ids = policy.tokenizer.encode(&prompt)?;
    let params = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        max_new_tokens: a.max_new_tokens,
        stop_at_eos: true,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let start = std::time::Instant::now();
    let completions = policy.sample_group(&ids, a.n, &params, &mut rng)?;
    let secs = start.elapsed().as_secs_f64();
    let total: usize = completions.iter().map(|c| c.tokens.len()).sum();
    for (i, c) in completions.iter().enumerate() {
        let lp: f32 = c.logprobs.iter().sum();
        let end = if c.finished { "eos" } else { "max tokens" };
        println!(
            "--- completion {i} ({} tokens, {end}, log-prob {lp:.2}) ---\n{}",
            c.tokens.len(),
            c.text
        );
    }
    println!(
        "--- {total} tokens in {secs:.2}s ({:.0} tokens/s, prompt {} tokens) ---",
        total as f64 / secs,
        ids.len()
    );
    Ok(())
}
