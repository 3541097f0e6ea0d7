//! `chartrl train` and `chartrl warm-start`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use super::progress::ConsoleObserver;
use crate::data::{DataSource, Generator, PromptTemplate, Sample, Split};
use crate::eval::greedy_accuracy;
use crate::model::{default_dtype, Policy};
use crate::train::{warm_start, RlTrainer, TrainConfig, WarmStartConfig};

/// Train a model with RL in one of the four modes.
///
/// Options default to configs/trainer.yaml; flags override them.
///
/// Example: chartrl train --mode nsr --model models/tiny-warm --subset-size 100 --num-generations 4 --batch-size 2 --out runs/poc-nsr
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Model directory to start from
    #[arg(long)]
    model: PathBuf,
    /// Training data: .jsonl or ChartQA .json; default: the synthetic train split (seed 2025)
    #[arg(long)]
    data: Option<PathBuf>,
    /// Directory for the final model (model/) and per-step metrics (metrics.jsonl)
    #[arg(long)]
    out: PathBuf,
    /// A YAML file of trainer options (on top of configs/trainer.yaml)
    #[arg(long)]
    config: Option<PathBuf>,
    /// grpo, psr, nsr or w-reinforce
    #[arg(long)]
    mode: Option<String>,
    #[arg(long)]
    subset_size: Option<usize>,
    #[arg(long)]
    num_epochs: Option<usize>,
    #[arg(long)]
    num_generations: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    learning_rate: Option<f64>,
    #[arg(long)]
    reward_threshold: Option<f64>,
    #[arg(long)]
    lambda_psr: Option<f64>,
    #[arg(long)]
    beta: Option<f64>,
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    max_completion_length: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    save_steps: Option<usize>,
    /// Any other option as key=value (JSON values), e.g. --set loss_type="dr_grpo"
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the step line every N steps
    #[arg(long, default_value_t = 1)]
    log_every: usize,
}

/// Fine-tune a model on gold reasoning traces so RL starts from a sometimes-right policy.
///
/// Example: chartrl warm-start --model models/tiny --out models/tiny-warm
#[derive(Args, Debug)]
pub struct WarmStartArgs {
    #[arg(long)]
    model: PathBuf,
    /// Training data (.jsonl or ChartQA .json); default: the synthetic train split (seed 2025)
    #[arg(long)]
    data: Option<PathBuf>,
    /// Directory for the warm-started model
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = WarmStartConfig::default().samples)]
    samples: usize,
    #[arg(long, default_value_t = WarmStartConfig::default().epochs)]
    epochs: usize,
    #[arg(long, default_value_t = WarmStartConfig::default().batch_size)]
    batch_size: usize,
    #[arg(long, default_value_t = WarmStartConfig::default().learning_rate)]
    learning_rate: f64,
    #[arg(long, default_value_t = 2025)]
    seed: u64,
    /// Held-out synthetic test questions for the greedy accuracy reported at the end (0: none)
    #[arg(long, default_value_t = 200)]
    eval_size: usize,
    #[arg(long, default_value_t = 25)]
    log_every: usize,
}

fn load_data(data: &Option<PathBuf>, size: usize) -> anyhow::Result<Vec<Sample>> {
    Ok(match data {
        Some(p) => DataSource::from_path(p)?.load()?,
        None => Generator::new(Split::Train, 2025).take(size).collect(),
    })
}

fn load_policy(dir: &Path) -> anyhow::Result<Policy> {
    let dir = super::model_dir(dir)?;
    let dev = candle_core::Device::Cpu;
    Ok(Policy::load(dir, &dev, default_dtype(&dev))?)
}

fn config_from(a: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut cfg = TrainConfig::defaults()?;
    if let Some(path) = &a.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let v: serde_json::Value =
            serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let map = v
            .as_object()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{}: expected a mapping of options", path.display()))?;
        cfg = cfg.with_overrides(&map)?;
    }
    let mut o = serde_json::Map::new();
    let mut put = |k: &str, v: Option<serde_json::Value>| {
        if let Some(v) = v {
            o.insert(k.to_string(), v);
        }
    };
    put("mode", a.mode.clone().map(Into::into));
    put("subset_size", a.subset_size.map(Into::into));
    put("num_epochs", a.num_epochs.map(Into::into));
    put("num_generations", a.num_generations.map(Into::into));
    put("batch_size", a.batch_size.map(Into::into));
    put("learning_rate", a.learning_rate.map(Into::into));
    put("reward_threshold", a.reward_threshold.map(Into::into));
    put("lambda_psr", a.lambda_psr.map(Into::into));
    put("beta", a.beta.map(Into::into));
    put("temperature", a.temperature.map(Into::into));
    put(
        "max_completion_length",
        a.max_completion_length.map(Into::into),
    );
    put("seed", a.seed.map(Into::into));
    put("save_steps", a.save_steps.map(Into::into));
    for kv in &a.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {kv}: expected KEY=VALUE"))?;
        let value =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        o.insert(k.to_string(), value);
    }
    Ok(cfg.with_overrides(&o)?)
}

pub fn train(a: TrainArgs) -> anyhow::Result<()> {
    let cfg = config_from(&a)?;
    let samples = load_data(&a.data, cfg.subset_size)?;
    let policy = load_policy(&a.model)?;
    std::fs::create_dir_all(&a.out).map_err(|e| anyhow::anyhow!("{}: {e}", a.out.display()))?;
    let metrics_path = a.out.join("metrics.jsonl");
    let _ = std::fs::remove_file(&metrics_path);
    std::fs::write(a.out.join("config.yaml"), serde_yaml::to_string(&cfg)?)?;
    let mut trainer = RlTrainer::new(cfg, policy, &samples, PromptTemplate::load_default()?)?;
    let mut obs = ConsoleObserver::new(a.log_every, Some(&metrics_path))?;
    let summary = trainer.run(&mut obs);
    obs.finish();
    let summary = summary?;
    trainer.policy.save(&a.out.join("model"))?;
    println!(
        "{} {} steps in {:.1}s ({:.2} s/step); model in {}, metrics in {}",
        trainer.config.mode.name().to_uppercase(),
        summary.steps_done,
        summary.seconds,
        summary.seconds / summary.steps_done.max(1) as f64,
        a.out.join("model").display(),
        metrics_path.display()
    );
    Ok(())
}

pub fn warm(a: WarmStartArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let cfg = WarmStartConfig {
        samples: a.samples,
        epochs: a.epochs,
        batch_size: a.batch_size,
        learning_rate: a.learning_rate,
        seed: a.seed,
        ..WarmStartConfig::default()
    };
    let samples = load_data(&a.data, cfg.samples)?;
    let policy = load_policy(&a.model)?;
    let template = PromptTemplate::load_default()?;
    let mut obs = ConsoleObserver::new(a.log_every, None)?;
    let summary = warm_start(&policy, &samples, &cfg, &template, &mut obs);
    obs.finish();
    let summary = summary?;
    policy.save(&a.out)?;
    println!(
        "warm start: {} steps in {:.1}s; model in {}",
        summary.steps_done,
        summary.seconds,
        a.out.display()
    );
    if a.eval_size > 0 {
        let test: Vec<Sample> = Generator::new(Split::Test, 2025)
            .take(a.eval_size)
            .collect();
        let acc = greedy_accuracy(&policy, &test, &template, 160)?;
        println!(
            "held-out greedy accuracy: {:.1}% on {} synthetic test questions",
            acc * 100.0,
            a.eval_size
        );
    }
    println!("total {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}
