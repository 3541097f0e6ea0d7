//! Experiments as Rhai scripts: `chartrl exec experiments/poc.rhai`. A script builds
//! requests (models, data, rewards, warm starts, training runs, evaluations, reports) and the
//! host carries them out through the same code the CLI uses, so every run lands in the store
//! and re-running a script reuses finished runs, resumes interrupted ones and starts only
//! what changed. This module is the only place that knows Rhai.

mod bind;
mod engine;
mod error;
mod host;
mod options;
mod reward;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

pub use error::ScriptError;
pub use host::{HostError, HostFailure};
pub use reward::{reward_from_source, ScriptReward};

use crate::train::Observer;

/// How to run a script.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub script: PathBuf,
    /// `--set name=value`: what `param("name", default)` returns.
    pub sets: BTreeMap<String, String>,
    /// List the runs the script would start, resume or reuse, training nothing.
    pub dry_run: bool,
    pub db: PathBuf,
    /// Holds a signal number once the script should stop (between steps, and in loops).
    pub stop: Option<Arc<AtomicUsize>>,
    /// The wall time the script may run outside training, evaluation and reports.
    pub time_limit: std::time::Duration,
    /// The device of runs that do not name one (`None`: `CHARTRL_DEVICE`, else the CPU).
    pub device: Option<crate::device::DeviceSpec>,
    /// A plain run, a plan, or one task of a frozen plan.
    pub pass: Pass,
    /// Where `import` finds modules (default: the project's `scripts/`); a frozen plan's
    /// tasks read the copy taken at submission.
    pub modules: Option<PathBuf>,
}

/// What a pass over the script does with the runs it asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Pass {
    /// Train them (or, with `dry_run`, say what would be trained).
    #[default]
    Normal,
    /// List every run the script would ask for if every run passed, with its key, the runs it
    /// waits for and its stage; train nothing (`exec --plan`).
    Plan,
    /// Carry out only the run (or bare-model evaluation) planned under `key`, with what it
    /// builds on already in the store; plan everything else (`exec --plan-file F --task N`).
    Task {
        key: String,
        /// The scheduler's record kept with the run (job, task, restarts).
        scheduler: Option<serde_json::Value>,
    },
}

/// What happened to a run the script asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Trained from scratch in this execution.
    Trained,
    /// Resumed from a checkpoint and finished.
    Resumed,
    /// Already done: its results were reused.
    Reused,
    Failed,
    /// Another process was training it, so this one did not.
    Busy,
    WouldStart,
    WouldResume,
    WouldReuse,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Trained => "trained",
            Action::Resumed => "resumed",
            Action::Reused => "reused",
            Action::Failed => "failed",
            Action::Busy => "busy (another process trains it)",
            Action::WouldStart => "would start",
            Action::WouldResume => "would resume",
            Action::WouldReuse => "would reuse",
        }
    }
}

/// One run the script asked for, and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct RunLine {
    pub name: String,
    /// `warm-start` or the training mode.
    pub what: String,
    pub action: Action,
    pub step: usize,
    pub total_steps: usize,
    /// The latest `reward` (RL) or `loss` (warm start).
    pub last: Option<f64>,
    pub seconds: f64,
}

/// Receives a script's progress: every run's steps (as [`Observer`]), each run as it starts
/// and ends, and the script's own messages.
pub trait ExecObserver: Observer + Send {
    /// The number of runs the script plans to train, known after its dry pass.
    fn on_plan(&mut self, _runs: usize) {}
    /// A run is about to train (`None`) or has ended (`Some(line)`).
    fn on_run(&mut self, _name: &str, _ended: Option<&RunLine>) {}
    /// `print` and `log` from the script.
    fn on_log(&mut self, _message: &str) {}
    /// An evaluation has sampled `done` of its `total` questions.
    fn on_eval(&mut self, _done: usize, _total: usize) {}
}

/// What a script did.
#[derive(Debug, Clone, Serialize)]
pub struct ExecSummary {
    pub runs: Vec<RunLine>,
    pub seconds: f64,
    /// `--set` names the script never asked for (likely typos).
    pub unused_sets: Vec<String>,
    /// In a plan or task pass: every run the script asked for, in order, with its stage.
    pub plan: Vec<crate::sweep::PlannedRun>,
}

/// Runs a script. Without `dry_run`, a dry pass first counts the runs to train (for the sweep
/// progress bar), then the script runs for real.
pub fn exec(
    opts: &ExecOptions,
    mut obs: Box<dyn ExecObserver>,
) -> Result<ExecSummary, ScriptError> {
    let start = Instant::now();
    let source = std::fs::read_to_string(&opts.script).map_err(|e| ScriptError::Read {
        path: opts.script.clone(),
        source: e,
    })?;
    let planning = opts.pass != Pass::Normal;
    if !opts.dry_run && !planning {
        let plan = engine::run(opts, &source, true, Box::new(Quiet))?;
        let to_train = plan
            .runs
            .iter()
            .filter(|r| matches!(r.action, Action::WouldStart | Action::WouldResume))
            .count();
        obs.on_plan(to_train);
    }
    let dry = opts.dry_run || opts.pass == Pass::Plan;
    let mut summary = engine::run(opts, &source, dry, obs)?;
    crate::sweep::assign_stages(&mut summary.plan);
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// The observer of the dry pass: hears nothing.
struct Quiet;

impl Observer for Quiet {}

impl ExecObserver for Quiet {}
