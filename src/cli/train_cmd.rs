//! `chartrl train` and `chartrl warm-start`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::progress::ConsoleObserver;
use super::target::Compute;
use crate::data::{PromptFormat, Split};
use crate::eval::EvalConfig;
use crate::options;
use crate::runs::evaluate::{evaluate, EvalRequest, EvalTarget, Quiet};
use crate::runs::{
    self, ClaimPolicy, DataSpec, Ending, TrainOutcome, TrainRequest, WarmStartRequest,
};
use crate::store::Store;
use crate::train::{LossType, Mode, Schedule, TrainConfig};
use crate::workspace::Workspace;

/// Where the run store lives unless `--db` says otherwise.
pub const DEFAULT_DB: &str = "runs/chartrl.db";

/// What every training command takes: the input model and data, and the run's store, name,
/// experiment and claim.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Model directory to start from
    #[arg(long)]
    model: PathBuf,
    /// Training data: .jsonl or ChartQA .json; default: the synthetic split (seed 2025) of the
    /// command: `train` for RL, the held-apart `warmup` for warm-start
    #[arg(long)]
    data: Option<PathBuf>,
    /// The run store; checkpoints and the final model go beside it, under RUNS_ROOT/NAME/
    #[arg(long, default_value = DEFAULT_DB)]
    db: PathBuf,
    /// Run name (default: MODE-nSUBSET-HASH8 or warm-start-nSAMPLES-HASH8, from its identity)
    #[arg(long)]
    name: Option<String>,
    /// Group the run under this experiment
    #[arg(long)]
    experiment: Option<String>,
    /// Take the run over even if another process seems to be training it
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    compute: Compute,
}

impl RunArgs {
    /// The data file, or the synthetic `split` (seed 2025).
    fn data(&self, split: Split) -> DataSpec {
        match &self.data {
            Some(path) => DataSpec::File(path.clone()),
            None => DataSpec::synthetic(split),
        }
    }
}

/// Train a model with RL in one of the four modes, as a run in the store.
///
/// Options default to configs/trainer.yaml; flags override them. Running the same command again
/// resumes an unfinished run from its latest checkpoint, or reports a finished one.
///
/// Example: chartrl train --mode nsr --model models/tiny-warm --subset-size 100 --num-generations 4 --batch-size 2
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A YAML file of trainer options (on top of configs/trainer.yaml)
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: TrainFlags,
    /// Any trainer option as KEY=VALUE (JSON values), e.g. --set loss_type=dr_grpo
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the step line every N steps
    #[arg(long, default_value_t = 1)]
    log_every: usize,
}

/// The trainer options `train` takes as flags: each, when given, overrides the option of the
/// same name (defaults: configs/trainer.yaml).
#[derive(Args, Debug, Serialize)]
struct TrainFlags {
    /// The training mode
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Train on the first N samples of the data
    #[arg(long)]
    subset_size: Option<usize>,
    /// Passes over the subset
    #[arg(long)]
    num_epochs: Option<usize>,
    /// Completions sampled per prompt (G; grpo needs at least 2)
    #[arg(long)]
    num_generations: Option<usize>,
    /// Prompts per step
    #[arg(long)]
    batch_size: Option<usize>,
    /// A completion is correct when its accuracy reward reaches this, in (0, 1]
    #[arg(long, value_parser = finite)]
    reward_threshold: Option<f64>,
    /// W-REINFORCE: the advantage of correct samples (incorrect ones get -1)
    #[arg(long, value_parser = finite)]
    lambda_psr: Option<f64>,
    /// Weight of the k3 KL to the starting weights (0: no reference model)
    #[arg(long, value_parser = finite)]
    beta: Option<f64>,
    /// How per-token losses become the step's loss
    #[arg(long, value_enum)]
    loss_type: Option<LossType>,
    /// Sampling temperature of rollouts (training log-probs use the same scaling)
    #[arg(long, value_parser = finite)]
    temperature: Option<f64>,
    /// Tokens per completion, end-of-text included
    #[arg(long)]
    max_completion_length: Option<usize>,
    /// Seeds the data order and the sampling
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    #[serde(flatten)]
    schedule: ScheduleFlags,
}

/// A float flag that must be a finite number (NaN has no place in an option).
fn finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number")),
        Err(e) => Err(e.to_string()),
    }
}

/// Fine-tune a model on gold reasoning traces so RL starts from a sometimes-right policy,
/// as a run in the store (resumable like `train`).
///
/// Options default to configs/warm_start.yaml; flags override them.
///
/// Example: chartrl warm-start --model models/tiny --out models/tiny-warm
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct WarmStartArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Also write the final model to this directory (it is always in RUNS_ROOT/NAME/model)
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    flags: WarmStartFlags,
    /// Any warm-start option as KEY=VALUE (JSON values), e.g. --set weight_decay=0.05
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Held-out synthetic test questions for the greedy accuracy reported at the end (0: none)
    #[arg(long, default_value_t = 200)]
    eval_size: usize,
    /// Print the step line every N steps
    #[arg(long, default_value_t = 25)]
    log_every: usize,
}

/// The warm-start options `warm-start` takes as flags (defaults: configs/warm_start.yaml).
#[derive(Args, Debug, Serialize)]
struct WarmStartFlags {
    /// Train on the first N samples of the data
    #[arg(long)]
    samples: Option<usize>,
    /// Passes over the samples
    #[arg(long)]
    epochs: Option<usize>,
    /// Samples per step
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seeds the data order
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    #[serde(flatten)]
    schedule: ScheduleFlags,
}

/// The optimiser and checkpoint flags both training commands take.
#[derive(Args, Debug, Serialize)]
struct ScheduleFlags {
    /// AdamW's peak learning rate
    #[arg(long, value_parser = finite)]
    learning_rate: Option<f64>,
    /// How the learning rate moves after warm-up
    #[arg(long, value_enum)]
    lr_scheduler: Option<Schedule>,
    /// Checkpoint every N steps (and at the end)
    #[arg(long)]
    save_steps: Option<usize>,
    /// Checkpoints kept (0: all)
    #[arg(long)]
    save_total_limit: Option<usize>,
}

/// The flags that were given (the `Some` fields), as option overrides.
fn given<T: Serialize>(flags: &T) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::to_value(flags)? {
        serde_json::Value::Object(map) => {
            Ok(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        _ => Ok(serde_json::Map::new()),
    }
}

/// The trainer's options: the workspace's defaults, then --config, then the flags and --set
/// (applied together, so their checks see them all).
fn config_from(a: &TrainArgs, ws: &Workspace) -> anyhow::Result<TrainConfig> {
    let mut cfg = ws.trainer_defaults()?;
    if let Some(path) = &a.config {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        cfg = cfg.with_overrides(&options::from_yaml(&text, &path.display().to_string())?)?;
    }
    let mut o = given(&a.flags)?;
    if let Some(f) = a.run.compute.prompt_format {
        o.insert("prompt_format".into(), PromptFormat::from(f).name().into());
    }
    o.extend(options::parse_sets(&a.set)?);
    Ok(cfg.with_overrides(&o)?)
}

pub fn train(a: TrainArgs) -> anyhow::Result<()> {
    let ws = Workspace::current();
    let cfg = config_from(&a, &ws)?;
    super::model_dir(&a.run.model)?;
    let mut store = Store::open(&a.run.db)?;
    let request = TrainRequest {
        config: cfg,
        model: a.run.model.clone(),
        data: a.run.data(Split::Train),
        prompt: ws.prompt_template()?,
        device: a.run.compute.device()?,
        custom_rewards: Default::default(),
        name: a.run.name.clone(),
        experiment: a.run.experiment.clone(),
    };
    let stop = super::signals::stop_flag()?;
    let mut obs = ConsoleObserver::new(a.log_every)?.stop_on(stop.clone());
    let outcome = runs::train(&mut store, &request, &claim(a.run.force), &mut obs);
    obs.finish();
    let label = request.config.mode.name().to_uppercase();
    report(&outcome?, &label, a.run.name.as_deref(), &stop)
}

pub fn warm(a: WarmStartArgs) -> anyhow::Result<()> {
    super::model_dir(&a.run.model)?;
    let ws = Workspace::current();
    let mut o = given(&a.flags)?;
    o.insert("prompt_format".into(), a.run.compute.format().name().into());
    o.extend(options::parse_sets(&a.set)?);
    let cfg = options::apply(&ws.warm_start_defaults()?, &o, "warm_start")?;
    let mut store = Store::open(&a.run.db)?;
    let request = WarmStartRequest {
        config: cfg,
        model: a.run.model.clone(),
        data: a.run.data(Split::Warmup),
        prompt: ws.prompt_template()?,
        device: a.run.compute.device()?,
        name: a.run.name.clone(),
        experiment: a.run.experiment.clone(),
    };
    let stop = super::signals::stop_flag()?;
    let mut obs = ConsoleObserver::new(a.log_every)?.stop_on(stop.clone());
    let outcome = runs::warm_start(&mut store, &request, &claim(a.run.force), &mut obs);
    obs.finish();
    let o = outcome?;
    report(&o, "warm start", a.run.name.as_deref(), &stop)?;
    if let Some(out) = &a.out {
        copy_model(&o.model_dir, out)?;
        println!("model copied to {}", out.display());
    }
    if a.eval_size > 0 {
        let acc = held_out_accuracy(&mut store, &o, a.eval_size, &request)?;
        println!(
            "held-out greedy accuracy: {:.1}% on {} synthetic test questions",
            acc * 100.0,
            a.eval_size
        );
    }
    Ok(())
}

fn claim(force: bool) -> ClaimPolicy {
    ClaimPolicy {
        force,
        ..ClaimPolicy::default()
    }
}

/// Prints how the run ended; a run stopped by a signal becomes an [`super::Interrupted`]
/// error carrying the exit code.
fn report(
    o: &TrainOutcome,
    label: &str,
    asked_name: Option<&str>,
    stop: &AtomicUsize,
) -> anyhow::Result<()> {
    let run = &o.run;
    if let Some(asked) = asked_name.filter(|n| *n != run.name) {
        println!(
            "note: this configuration already ran as `{}`; --name {asked} is not used",
            run.name
        );
    }
    if let Some(step) = o.resumed_from {
        println!("resumed `{}` from its checkpoint at step {step}", run.name);
    }
    match o.ending {
        Ending::AlreadyDone => println!(
            "run `{}` is already done ({}/{} steps); model in {}; see `chartrl runs show {}`",
            run.name,
            run.step,
            run.total_steps,
            o.model_dir.display(),
            run.name
        ),
        Ending::Finished => println!(
            "{label} `{}`: {} steps in {:.1}s ({:.2} s/step); model in {}; metrics: `chartrl runs show {}`",
            run.name,
            o.steps_done,
            o.seconds,
            o.seconds / o.steps_done.max(1) as f64,
            o.model_dir.display(),
            run.name
        ),
        Ending::Stopped => {
            let signal = stop.load(Ordering::Relaxed);
            return Err(super::Interrupted {
                code: super::signals::exit_code(signal),
                message: format!(
                    "{} stopped run `{}` at step {}/{}; checkpoint saved; run the same command to resume",
                    super::signals::name(signal),
                    run.name,
                    run.step,
                    run.total_steps
                ),
            }
            .into());
        }
    }
    Ok(())
}

/// The finished model's greedy accuracy on the first `n` synthetic test questions: an
/// evaluation like `chartrl eval --temperature 0 -n 1`, computed once and then read back.
fn held_out_accuracy(
    store: &mut Store,
    o: &TrainOutcome,
    n: usize,
    warm: &WarmStartRequest,
) -> anyhow::Result<f64> {
    let req = EvalRequest {
        target: EvalTarget::Run(o.run.name.clone()),
        data: DataSpec::synthetic(Split::Test),
        questions: n,
        config: EvalConfig {
            n: 1,
            temperature: 0.0,
            top_p: 1.0,
            max_new_tokens: EvalConfig::default().max_new_tokens,
            seed: 0,
            prompt_format: warm.config.prompt_format,
        },
        prompt: warm.prompt.clone(),
        experiment: None,
        device: warm.device.clone(),
    };
    Ok(evaluate(store, &req, &mut Quiet)?.result.summary.accuracy)
}

/// Copies a model directory into `to`, whole (through a temporary directory). A `to` that
/// already holds exactly this model is left as it is; one holding anything else is never
/// overwritten.
fn copy_model(from: &Path, to: &Path) -> anyhow::Result<()> {
    let same = |d: &Path| crate::runs::identity::model_identity(d).ok();
    if to.exists() {
        if to.join("config.json").is_file() && same(to).is_some() && same(to) == same(from) {
            return Ok(());
        }
        super::refuse_to_overwrite(
            to,
            false,
            "--out copies the warm start's model only into an empty directory or one holding the same model: remove it or choose another --out",
        )?;
    }
    let tmp = crate::fsx::temp_path(to);
    std::fs::create_dir_all(&tmp).with_context(|| tmp.display().to_string())?;
    for entry in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, tmp.join(name))
                .with_context(|| tmp.join(name).display().to_string())?;
        }
    }
    crate::fsx::replace_dir(&tmp, to)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: WarmStartFlags,
    }

    #[test]
    fn only_the_given_flags_become_overrides_shared_ones_included() {
        let cli = Cli::parse_from(["x", "--epochs", "2", "--learning-rate", "0.001"]);
        let o = given(&cli.flags).unwrap();
        assert_eq!(o.len(), 2, "{o:?}");
        assert_eq!(o["epochs"], serde_json::json!(2));
        assert_eq!(o["learning_rate"], serde_json::json!(0.001));
    }
}
