//! The state a script's primitives share (the store, the project's defaults, the runs asked
//! for so far), and the typed error a primitive stops the script with. The primitives
//! themselves live in `bind/`, by topic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, EvalAltResult, Map, Position, AST};

use super::options::{inside, parse_param, take};
use super::{ExecObserver, ExecOptions, ExecSummary, RunLine, ScriptError};
use crate::data::PromptTemplate;
use crate::device::{DeviceError, DeviceSpec};
use crate::report::ReportError;
use crate::runs::RunError;
use crate::store::{Store, StoreError};
use crate::sweep::PlannedRun;
use crate::train::{TrainConfig, WarmStartConfig};
use crate::workspace::Workspace;

/// Why a primitive stopped the script. The library's error stays whole, so `exec` exits
/// as the CLI would for it (2 for a kernel failure, 1 for bad input).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The script asked for something that cannot be: a bad option, a missing model.
    #[error("{0}")]
    Usage(String),
    /// Ctrl-C or SIGTERM, between steps or chunks; the message says how to go on.
    #[error("{0}")]
    Interrupted(String),
    #[error(transparent)]
    Run(Box<RunError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("report: {0}")]
    Report(#[from] ReportError),
    /// A failure in `call` (such as `model("tiny")`).
    #[error("{call}: {source}")]
    In { call: String, source: Box<RunError> },
}

impl From<RunError> for HostError {
    fn from(e: RunError) -> Self {
        HostError::Run(Box::new(e))
    }
}

impl From<String> for HostError {
    fn from(s: String) -> Self {
        HostError::Usage(s)
    }
}

impl HostError {
    /// The library error underneath, for the CLI's exit code.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HostError::Usage(_) | HostError::Interrupted(_) => None,
            HostError::Run(e) | HostError::In { source: e, .. } => Some(e.as_ref()),
            HostError::Store(e) => Some(e),
            HostError::Report(e) => Some(e),
        }
    }
}

/// A [`HostError`] as a Rhai value: what a failed primitive throws, and what
/// `try { } catch (e) { }` catches.
#[derive(Debug, Clone)]
pub struct HostFailure(pub Arc<HostError>);

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

pub(crate) struct Host {
    pub(super) store: Store,
    pub(super) obs: Box<dyn ExecObserver>,
    /// A dry pass: plan, create nothing.
    pub(super) dry: bool,
    sets: BTreeMap<String, String>,
    asked: BTreeSet<String>,
    pub(super) experiment: String,
    cwd: PathBuf,
    /// The script, for reward closures.
    pub(super) ast: Arc<AST>,
    /// What became of each run the script asked for.
    pub(super) lines: Vec<RunLine>,
    /// The `eval` runs of the bare model directories the script evaluated (a shipped base):
    /// its report shows them as the models before RL.
    pub(super) evaluated_models: Vec<String>,
    clock: Arc<super::engine::ScriptClock>,
    /// The project's files, read once when the script starts: what every run it asks for
    /// uses, whatever happens to the files while it runs.
    pub(super) workspace: Workspace,
    pub(super) defaults: TrainConfig,
    pub(super) warm_defaults: WarmStartConfig,
    pub(super) prompt: PromptTemplate,
    /// `exec --device` (or `CHARTRL_DEVICE`): the device of runs that do not name one.
    device: Option<DeviceSpec>,
    /// A plan or task pass: the plan it builds.
    pub(super) planner: Option<Planner>,
    /// The store's directory (where runs and preset models live), also on a dry pass that
    /// has no store file yet.
    pub(super) root: PathBuf,
}

/// What a plan or a task pass keeps (see `sweep::plan`).
#[derive(Debug, Default)]
pub(crate) struct Planner {
    pub runs: Vec<PlannedRun>,
    /// Keys of the runs whose state the script has read so far: every run it asks for next
    /// waits for them.
    pub read: BTreeSet<String>,
    /// In a task, the key of the one run (or bare-model evaluation) it carries out, and the
    /// scheduler's record for it.
    pub task: Option<(String, Option<serde_json::Value>)>,
}

impl Planner {
    /// Adds a run to the plan (once: a run asked for again keeps its first place).
    pub fn record(&mut self, mut run: PlannedRun) {
        if self.runs.iter().any(|r| r.key == run.key) {
            return;
        }
        let mut deps: Vec<String> = self.read.iter().cloned().collect();
        deps.append(&mut run.depends_on);
        deps.retain(|d| *d != run.key);
        deps.sort();
        deps.dedup();
        run.depends_on = deps;
        self.runs.push(run);
    }

    /// Whether this pass carries out the work planned under `key`.
    pub fn is_task(&self, key: &str) -> bool {
        self.task.as_ref().is_some_and(|(k, _)| k == key)
    }
}

pub(crate) type HostRef = Arc<Mutex<Host>>;

impl Host {
    pub(crate) fn new(
        opts: &ExecOptions,
        dry: bool,
        cwd: PathBuf,
        obs: Box<dyn ExecObserver>,
        ast: Arc<AST>,
        clock: Arc<super::engine::ScriptClock>,
    ) -> Result<Self, ScriptError> {
        // A dry pass never creates the store.
        let store = if dry && !opts.db.is_file() {
            Store::open(Path::new(":memory:"))?
        } else {
            Store::open(&opts.db)?
        };
        let experiment = opts
            .script
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "script".into());
        let workspace = Workspace::at(&cwd);
        Ok(Self {
            defaults: workspace.trainer_defaults()?,
            warm_defaults: workspace.warm_start_defaults()?,
            prompt: workspace.prompt_template()?,
            workspace,
            device: opts.device,
            store,
            obs,
            dry,
            sets: opts.sets.clone(),
            asked: BTreeSet::new(),
            experiment,
            cwd,
            ast,
            lines: Vec::new(),
            evaluated_models: Vec::new(),
            clock,
            root: match opts.db.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            },
            planner: match &opts.pass {
                super::Pass::Normal => None,
                super::Pass::Plan => Some(Planner::default()),
                super::Pass::Task { key, scheduler } => Some(Planner {
                    task: Some((key.clone(), scheduler.clone())),
                    ..Planner::default()
                }),
            },
        })
    }

    /// Notes that the script read `r`'s state: in a plan, what it asks for next waits for `r`.
    pub(super) fn read_run(&mut self, key: &str) {
        if let Some(p) = &mut self.planner {
            if !key.is_empty() {
                p.read.insert(key.to_string());
            }
        }
    }

    /// `param(name, default)`: the `--set` value converted to the default's type.
    pub(super) fn param(&mut self, name: &str, default: Dynamic) -> Result<Dynamic, HostError> {
        self.asked.insert(name.to_string());
        match self.sets.get(name) {
            Some(text) => Ok(parse_param(name, text, &default)?),
            None => Ok(default),
        }
    }

    /// A path the script named, kept inside the working directory.
    pub(super) fn path(&self, path: &str) -> Result<PathBuf, HostError> {
        Ok(inside(&self.cwd, path)?)
    }

    /// A run's `device` option, else the script's default, as a candle device.
    pub(super) fn device(
        &self,
        opts: &mut Map,
        what: &str,
    ) -> Result<candle_core::Device, HostError> {
        let in_call = |e: DeviceError| format!("{what}: {e}");
        let asked = match take(opts, "device") {
            Some(v) => {
                let name = v.into_string().map_err(|t| {
                    format!("{what}: `device` must be a string like \"cuda\", not {t}")
                })?;
                Some(name.parse().map_err(in_call)?)
            }
            None => self.device,
        };
        Ok(DeviceSpec::resolve(asked)
            .and_then(DeviceSpec::open)
            .map_err(in_call)?)
    }
}

/// Runs `f` on the host, turning its failure into a Rhai error at the call site.
pub(super) fn with<T>(
    host: &HostRef,
    f: impl FnOnce(&mut Host) -> Result<T, HostError>,
) -> Result<T, Box<EvalAltResult>> {
    let mut guard = host.lock().unwrap_or_else(|p| p.into_inner());
    let started = std::time::Instant::now();
    let result = f(&mut guard);
    guard.clock.add_host(started.elapsed());
    result.map_err(|e| {
        Box::new(match e {
            HostError::Interrupted(msg) => {
                EvalAltResult::ErrorTerminated(msg.into(), Position::NONE)
            }
            other => EvalAltResult::ErrorRuntime(
                Dynamic::from(HostFailure(Arc::new(other))),
                Position::NONE,
            ),
        })
    })
}

/// What the script did, once it has ended.
pub(crate) fn finish(host: &HostRef) -> ExecSummary {
    let guard = host.lock().unwrap_or_else(|p| p.into_inner());
    ExecSummary {
        runs: guard.lines.clone(),
        seconds: 0.0,
        unused_sets: guard
            .sets
            .keys()
            .filter(|k| !guard.asked.contains(*k))
            .cloned()
            .collect(),
        plan: guard
            .planner
            .as_ref()
            .map(|p| p.runs.clone())
            .unwrap_or_default(),
    }
}
