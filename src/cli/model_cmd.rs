//! `chartrl model init | info | logprobs`.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};

use crate::model::{default_dtype, Policy};

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Create a model from a preset: seeded weights, a BPE tokenizer trained on chart text,
    /// and config.json, as a Hugging Face directory.
    ///
    /// Example: chartrl model init --preset tiny --out models/tiny
    Init(InitArgs),
    /// Print a model directory's architecture and size.
    ///
    /// Example: chartrl model info models/tiny
    Info(InfoArgs),
    /// Print the log-prob of every token of a text given the tokens before it, as one JSON
    /// object {"ids": [...], "tokens": [...], "logprobs": [null, ...]}.
    ///
    /// Example: chartrl model logprobs models/tiny --text "<think>2 + 2 = 4</think>"
    Logprobs(LogprobsArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Built-in preset (tiny, small) or a preset .yaml file
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Directory to write (config.json, model.safetensors, tokenizer.json)
    #[arg(long)]
    out: PathBuf,
    /// Seed of the weight initialisation
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Synthetic texts the tokenizer is trained on (the same default as every preset model)
    #[arg(long, default_value_t = crate::model::TOKENIZER_CORPUS)]
    corpus_size: usize,
    /// Replace the model already in --out (otherwise an existing model is never overwritten)
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model directory
    dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct LogprobsArgs {
    /// Model directory
    dir: PathBuf,
    /// Text to score
    #[arg(long)]
    text: String,
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Init(a) => init(a),
        ModelCommand::Info(a) => info(a),
        ModelCommand::Logprobs(a) => logprobs(a),
    }
}

fn init(a: InitArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    super::refuse_to_overwrite(
        &a.out,
        a.force,
        "pass --force to replace it, or choose another --out",
    )?;
    let preset = crate::workspace::Workspace::current().preset(&a.preset)?;
    let policy = Policy::from_preset(&preset, a.corpus_size, a.seed, &candle_core::Device::Cpu)?;
    policy.save_replacing(&a.out)?;
    println!(
        "created {} ({} preset, {:.2}M parameters, vocab {}) in {:.1}s",
        a.out.display(),
        a.preset,
        policy.params.num_parameters() as f64 / 1e6,
        policy.tokenizer.vocab_size(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn info(a: InfoArgs) -> anyhow::Result<()> {
    let dir = super::model_dir(&a.dir)?;
    let dev = candle_core::Device::Cpu;
    let policy = Policy::load(dir, &dev, default_dtype(&dev))?;
    let c = &policy.config;
    let summary = serde_json::json!({
        "dir": dir,
        "parameters": policy.params.num_parameters(),
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "intermediate_size": c.intermediate_size,
        "vocab_size": c.vocab_size,
        "tokenizer_vocab": policy.tokenizer.vocab_size(),
        "tie_word_embeddings": c.tie_word_embeddings,
        "max_position_embeddings": c.max_position_embeddings,
        "eos_token_ids": policy.tokenizer.eos_ids(),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn logprobs(a: LogprobsArgs) -> anyhow::Result<()> {
    let dir = super::model_dir(&a.dir)?;
    let dev = candle_core::Device::Cpu;
    let policy = Policy::load(dir, &dev, default_dtype(&dev))?;
    let ids = policy.tokenizer.encode(&a.text)?;
    let tokens: Vec<String> = ids
        .iter()
        .map(|&i| policy.tokenizer.token_text(i))
        .collect();
    let logprobs = policy.token_logprobs(&ids)?;
    let out = serde_json::json!({ "ids": ids, "tokens": tokens, "logprobs": logprobs });
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
