//! `chartrl eval`: sampled evaluation with pass@k of a run or a model directory, stored in the
//! run store (the same code as the script's `evaluate`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clap::Args;
use indicatif::ProgressBar;

use super::target::{Compute, Questions, Sampling, Target};
use super::train_cmd::DEFAULT_DB;
use crate::eval::EvalConfig;
use crate::runs::evaluate::{evaluate, EvalObserver, EvalOutcome, EvalRequest, EvalTarget};
use crate::runs::{DataSpec, RunError};
use crate::store::Store;

/// Evaluate a run or a model: n completions per question, accuracy and pass@k.
///
/// Example: chartrl eval --run nsr-n100-1a2b3c4d --n 16 --k 1,2,4,8,16
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct EvalArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    questions_from: Questions,
    /// Evaluate the first N questions (default: all of a file, 100 synthetic)
    #[arg(long)]
    questions: Option<usize>,
    /// Completions sampled per question
    #[arg(short = 'n', long, default_value_t = EvalConfig::default().n)]
    n: usize,
    /// The k values to print (every k <= n is computed and stored); default: powers of 2 and n
    #[arg(long, value_delimiter = ',')]
    k: Vec<usize>,
    #[command(flatten)]
    sampling: Sampling,
    /// The run store
    #[arg(long, default_value = DEFAULT_DB)]
    db: PathBuf,
    #[command(flatten)]
    compute: Compute,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

struct Bar {
    bar: ProgressBar,
    stop: Arc<AtomicUsize>,
}

impl EvalObserver for Bar {
    fn on_progress(&mut self, done: usize, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
    }
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) != 0
    }
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    let config = EvalConfig {
        n: a.n,
        temperature: a.sampling.temperature,
        top_p: a.sampling.top_p,
        max_new_tokens: a.sampling.max_new_tokens,
        seed: a.sampling.seed,
        prompt_format: a.compute.format(),
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("eval: {e}"))?;
    let ks = config.ks(&a.k)?;
    let data = a.questions_from.spec();
    let questions = match (&data, a.questions) {
        (_, Some(q)) => q,
        (DataSpec::File(_) | DataSpec::Subset { .. }, None) => usize::MAX,
        (DataSpec::Synthetic { .. }, None) => 100,
    };
    let target = match (&a.target.run, &a.target.model) {
        (Some(r), _) => EvalTarget::Run(r.clone()),
        (None, Some(m)) => EvalTarget::Model(super::model_dir(m)?.to_path_buf()),
        (None, None) => anyhow::bail!("give --run RUN or --model DIR"),
    };
    // Evaluating a run needs its store; a model directory may start a new one.
    let mut store = match &target {
        EvalTarget::Run(_) => Store::open_existing(&a.db)?,
        EvalTarget::Model(_) => Store::open(&a.db)?,
    };
    let req = EvalRequest {
        target,
        data,
        questions,
        config,
        prompt: crate::workspace::Workspace::current().prompt_template()?,
        experiment: None,
        device: a.compute.device()?,
    };
    let stop = super::signals::stop_flag()?;
    let mut bar = Bar {
        bar: super::progress_bar(0, "questions"),
        stop: stop.clone(),
    };
    let o = match evaluate(&mut store, &req, &mut bar) {
        Ok(o) => o,
        Err(RunError::Stopped(message)) => {
            bar.bar.abandon();
            return Err(super::Interrupted {
                code: super::signals::exit_code(stop.load(Ordering::Relaxed).max(2)),
                message,
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    bar.bar.finish_and_clear();
    if a.json {
        print_json(&o, &ks);
    } else {
        print_text(&o, &req.config, &ks);
    }
    Ok(())
}

/// The outcome as one JSON object, with pass@k for the asked k.
fn print_json(o: &EvalOutcome, ks: &[usize]) {
    let s = &o.result.summary;
    let pass: serde_json::Map<String, serde_json::Value> = ks
        .iter()
        .map(|k| (format!("pass@{k}"), s.pass_at_k[k - 1].into()))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "run": o.run.name, "step": o.step, "name": o.name, "sampled": o.sampled,
            "seconds": o.seconds, "result": o.result, "pass_at": pass,
        })
    );
}

/// The outcome as people read it.
fn print_text(o: &EvalOutcome, config: &EvalConfig, ks: &[usize]) {
    let s = &o.result.summary;
    let how = if o.sampled == 0 {
        "read back from the store".to_string()
    } else {
        format!("{} questions sampled in {:.1}s", o.sampled, o.seconds)
    };
    println!(
        "{} at step {} on {} questions of the {}, n = {} (temperature {}, top-p {}; {how})",
        o.run.name, o.step, s.questions, o.result.data, s.n, config.temperature, config.top_p
    );
    println!("  accuracy      {:>6.1}%", 100.0 * s.accuracy);
    for k in ks {
        println!("  pass@{k:<8} {:>6.1}%", 100.0 * s.pass_at_k[k - 1]);
    }
    println!("  format        {:>6.1}%", 100.0 * s.format_rate);
    println!("  truncated     {:>6.1}%", 100.0 * s.truncated_rate);
    println!("  mean length   {:>6.1} tokens", s.mean_length);
}
