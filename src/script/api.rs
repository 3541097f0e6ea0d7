//! What a script sees: `param`, `experiment`, `model`, `chart_data`, `data`, `warm_start`,
//! `train`, `evaluate`, `report`, `log`, and the `Model`, `Data` and `Run` values they pass
//! around. Each primitive builds the same request the CLI builds and hands it to `runs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, Position, AST, FLOAT, INT};

use super::options::{apply, inside, json_map, parse_param, take};
use super::{Action, ExecObserver, ExecOptions, ExecSummary, RunLine, ScriptError, ScriptReward};
use crate::data::PromptTemplate;
use crate::data::Split;
use crate::eval::{EvalConfig, EvalSummary};
use crate::model::Policy;
use crate::reward::{CustomRewards, RewardSpec};
use crate::runs::evaluate::{evaluate, EvalObserver, EvalRequest, EvalTarget};
use crate::runs::{
    self, ClaimPolicy, DataSpec, Ending, RunError, TrainOutcome, TrainRequest, WarmStartRequest,
};
use crate::store::{Kind, NewRun, Status, Store};
use crate::train::{TrainConfig, WarmStartConfig};
use crate::workspace::Workspace;

/// A model: a Hugging Face directory (`ready` once it exists).
#[derive(Debug, Clone)]
pub struct ModelRef {
    dir: PathBuf,
    ready: bool,
}

/// Training or test samples: a source and how many of its first samples to use.
#[derive(Debug, Clone)]
pub struct DataRef {
    spec: DataSpec,
    size: usize,
}

/// A run the script asked for.
#[derive(Debug, Clone)]
pub struct RunRef {
    /// `None` for a run a dry pass has not created.
    id: Option<i64>,
    name: String,
    what: String,
    model_dir: PathBuf,
}

/// Why a primitive stopped the script.
enum Stop {
    Error(String),
    Interrupted(String),
}

impl From<String> for Stop {
    fn from(s: String) -> Self {
        Stop::Error(s)
    }
}

impl From<RunError> for Stop {
    fn from(e: RunError) -> Self {
        Stop::Error(e.to_string())
    }
}

impl From<crate::store::StoreError> for Stop {
    fn from(e: crate::store::StoreError) -> Self {
        Stop::Error(e.to_string())
    }
}

pub(crate) struct Host {
    store: Store,
    obs: Box<dyn ExecObserver>,
    dry: bool,
    sets: BTreeMap<String, String>,
    asked: BTreeSet<String>,
    experiment: String,
    cwd: PathBuf,
    ast: Arc<AST>,
    lines: Vec<RunLine>,
    clock: Arc<super::engine::ScriptClock>,
    /// The project's files, read once when the script starts: what every run it asks for
    /// uses, whatever happens to the files while it runs.
    workspace: Workspace,
    defaults: TrainConfig,
    warm_defaults: WarmStartConfig,
    prompt: PromptTemplate,
    /// `exec --device` (or `CHARTRL_DEVICE`): the device of runs that do not name one.
    device: Option<String>,
}

type HostRef = Arc<Mutex<Host>>;

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
            Store::open(std::path::Path::new(":memory:"))?
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
            device: opts.device.clone(),
            store,
            obs,
            dry,
            sets: opts.sets.clone(),
            asked: BTreeSet::new(),
            experiment,
            cwd,
            ast,
            lines: Vec::new(),
            clock,
        })
    }

    fn param(&mut self, name: &str, default: Dynamic) -> Result<Dynamic, Stop> {
        self.asked.insert(name.to_string());
        match self.sets.get(name) {
            Some(text) => Ok(parse_param(name, text, &default)?),
            None => Ok(default),
        }
    }

    fn path(&self, path: &str) -> Result<PathBuf, Stop> {
        Ok(inside(&self.cwd, path)?)
    }

    /// A model directory, or a built-in preset created (once) under `RUNS_ROOT/models/`.
    fn model(&mut self, spec: &str) -> Result<ModelRef, Stop> {
        let dir = self.path(spec)?;
        if dir.join("config.json").is_file() {
            return Ok(ModelRef { dir, ready: true });
        }
        let preset = self.workspace.preset(spec).map_err(|_| {
            format!("model(\"{spec}\"): no model directory there and no preset of that name (presets: tiny, small)")
        })?;
        let stem = std::path::Path::new(spec)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.to_string());
        let dir = self.store.root().join("models").join(&stem);
        if dir.join("config.json").is_file() {
            return Ok(ModelRef { dir, ready: true });
        }
        if self.dry {
            return Ok(ModelRef { dir, ready: false });
        }
        let policy = Policy::from_preset(
            &preset,
            crate::model::TOKENIZER_CORPUS,
            0,
            &candle_core::Device::Cpu,
        )
        .map_err(|e| format!("model(\"{spec}\"): {e}"))?;
        policy
            .save_replacing(&dir)
            .map_err(|e| format!("model(\"{spec}\"): {e}"))?;
        self.obs.on_log(&format!(
            "created the {spec} preset model in {}",
            dir.display()
        ));
        Ok(ModelRef { dir, ready: true })
    }

    fn chart_data(&mut self, opts: Map) -> Result<DataRef, Stop> {
        let mut opts = opts;
        let split = match take(&mut opts, "split") {
            Some(v) => {
                let s = v.to_string();
                Split::parse(&s)
                    .ok_or_else(|| format!("chart_data: split `{s}` (use train, test or warmup)"))?
            }
            None => Split::Train,
        };
        let int = |v: Option<Dynamic>, key: &str, default: i64| -> Result<i64, String> {
            match v {
                Some(v) => v
                    .as_int()
                    .map_err(|t| format!("chart_data: `{key}` must be an integer, not {t}")),
                None => Ok(default),
            }
        };
        let seed = int(take(&mut opts, "seed"), "seed", 2025)?;
        let size = int(take(&mut opts, "size"), "size", 34_000)?;
        if let Some(k) = opts.keys().next() {
            return Err(
                format!("unknown chart_data option `{k}` (valid: split, size, seed)").into(),
            );
        }
        if seed < 0 || size <= 0 {
            return Err("chart_data: size must be positive and seed not negative"
                .to_string()
                .into());
        }
        Ok(DataRef {
            spec: DataSpec::Synthetic {
                split,
                seed: seed as u64,
            },
            size: size as usize,
        })
    }

    fn data(&mut self, path: &str) -> Result<DataRef, Stop> {
        let path = self.path(path)?;
        let spec = DataSpec::File(path);
        let size = spec.samples(usize::MAX)?.len();
        Ok(DataRef { spec, size })
    }

    /// A `model` option: a Model, or a Run (its final model).
    fn model_of(&self, v: Dynamic, what: &str) -> Result<ModelRef, Stop> {
        if let Some(m) = v.clone().try_cast::<ModelRef>() {
            return Ok(m);
        }
        if let Some(r) = v.clone().try_cast::<RunRef>() {
            let ready = r.model_dir.join("config.json").is_file();
            return Ok(ModelRef {
                dir: r.model_dir,
                ready,
            });
        }
        Err(format!(
            "{what}: `model` must be a model(...) or a run, not {}",
            v.type_name()
        )
        .into())
    }

    /// A run's `device` option, else the script's default, as a candle device.
    fn device(&self, opts: &mut Map, what: &str) -> Result<candle_core::Device, Stop> {
        let asked = match take(opts, "device") {
            Some(v) => Some(v.into_string().map_err(|t| {
                format!("{what}: `device` must be a string like \"cuda\", not {t}")
            })?),
            None => self.device.clone(),
        };
        Ok(crate::device::device(asked.as_deref()).map_err(|e| format!("{what}: {e}"))?)
    }

    fn warm_start(&mut self, model: ModelRef, data: DataRef, opts: Map) -> Result<RunRef, Stop> {
        let mut opts = opts;
        let (name, keep_going) = run_options(&mut opts)?;
        let device = self.device(&mut opts, "warm_start")?;
        let mut map = json_map(&opts)?;
        map.entry("samples").or_insert(data.size.into());
        let config: WarmStartConfig = apply(&self.warm_defaults, &map, "warm_start")?;
        if config.samples > data.size {
            return Err(format!(
                "warm_start: samples {} but the data has only {} samples",
                config.samples, data.size
            )
            .into());
        }
        let req = WarmStartRequest {
            config,
            model: model.dir.clone(),
            data: data.spec,
            prompt: self.prompt.clone(),
            device,
            name,
            experiment: Some(self.experiment.clone()),
        };
        self.execute(
            "warm-start".into(),
            &model,
            req.name.clone(),
            || runs::plan_warm_start(&req),
            |store, new, obs| {
                runs::warm_start_planned(store, &req, new, &ClaimPolicy::default(), obs)
            },
            keep_going,
        )
    }

    fn train(&mut self, opts: Map) -> Result<RunRef, Stop> {
        let mut opts = opts;
        let model =
            take(&mut opts, "model").ok_or("train: the `model` option is required".to_string())?;
        let model = self.model_of(model, "train")?;
        let data = match take(&mut opts, "data") {
            Some(v) => v.clone().try_cast::<DataRef>().ok_or_else(|| {
                format!(
                    "train: `data` must be chart_data(...) or data(...), not {}",
                    v.type_name()
                )
            })?,
            None => self.chart_data(Map::new())?,
        };
        let (name, keep_going) = run_options(&mut opts)?;
        let device = self.device(&mut opts, "train")?;
        let custom = match take(&mut opts, "rewards") {
            Some(v) => Some(self.rewards(v)?),
            None => None,
        };
        let mut map = json_map(&opts)?;
        map.entry("subset_size").or_insert(data.size.into());
        let mut config = self.defaults.clone();
        let (specs, custom_rewards) =
            custom.unwrap_or((config.rewards.clone(), CustomRewards::default()));
        config.rewards = specs;
        let config = config
            .with_overrides(&map)
            .map_err(|e| format!("train: {e}"))?;
        let req = TrainRequest {
            config,
            model: model.dir.clone(),
            data: data.spec,
            prompt: self.prompt.clone(),
            device,
            custom_rewards,
            name,
            experiment: Some(self.experiment.clone()),
        };
        self.execute(
            req.config.mode.name().to_string(),
            &model,
            req.name.clone(),
            || runs::plan(&req),
            |store, new, obs| runs::train_planned(store, &req, new, &ClaimPolicy::default(), obs),
            keep_going,
        )
    }

    /// A `rewards` option: `[#{name: "accuracy", weight: 1.0}, #{name: "short", score: |c, s| ...}]`.
    fn rewards(&self, v: Dynamic) -> Result<(Vec<RewardSpec>, CustomRewards), Stop> {
        let list = v
            .try_cast::<Array>()
            .ok_or_else(|| "train: `rewards` must be an array of maps".to_string())?;
        let mut specs = Vec::new();
        let mut custom = CustomRewards::default();
        for (i, item) in list.into_iter().enumerate() {
            let mut m = item.try_cast::<Map>().ok_or_else(|| {
                format!(
                    "train: rewards[{i}] must be a map like #{{name: \"accuracy\", weight: 1.0}}"
                )
            })?;
            let func = take(&mut m, "score");
            let name = take(&mut m, "name")
                .map(|n| n.to_string())
                .ok_or_else(|| format!("train: rewards[{i}] needs a `name`"))?;
            let mut spec_map = json_map(&m)?;
            spec_map.insert("name".into(), name.clone().into());
            if let Some(f) = func {
                let f = f.try_cast::<FnPtr>().ok_or_else(|| {
                    format!("train: rewards[{i}].score must be a closure |completion, sample| ...")
                })?;
                spec_map.insert("params".into(), ScriptReward::identity(&f));
                let reward = ScriptReward::new(name.clone(), self.ast.clone(), f);
                custom.0.insert(name.clone(), Arc::new(reward));
            }
            let spec: RewardSpec = serde_json::from_value(serde_json::Value::Object(spec_map))
                .map_err(|e| format!("train: rewards[{i}] (`{name}`): {e}"))?;
            specs.push(spec);
        }
        Ok((specs, custom))
    }

    /// Plans (dry) or runs a request and records what became of it.
    fn execute(
        &mut self,
        what: String,
        model: &ModelRef,
        asked_name: Option<String>,
        plan: impl FnOnce() -> Result<NewRun, RunError>,
        go: impl FnOnce(
            &mut Store,
            &NewRun,
            &mut dyn crate::train::Observer,
        ) -> Result<TrainOutcome, RunError>,
        keep_going: bool,
    ) -> Result<RunRef, Stop> {
        let root = self.store.root();
        if !model.ready && !self.dry {
            return Err(format!(
                "{what}: its model {} does not exist (the run that makes it failed or did not finish)",
                model.dir.display()
            )
            .into());
        }
        if !model.ready {
            // Its input model does not exist yet (a dry pass before the warm start ran).
            let name = asked_name.unwrap_or_else(|| format!("{what}-(after its input model)"));
            self.line(&name, &what, Action::WouldStart, 0, 0, None);
            return Ok(RunRef {
                id: None,
                model_dir: root.join(&name).join("model"),
                name,
                what,
            });
        }
        let new = plan()?;
        let model_dir = root.join(&new.name).join("model");
        if self.dry {
            let existing = self.store.run_by_identity(&new.identity)?;
            let (action, id, step) = match &existing {
                Some(r) if r.status == Status::Done => (Action::WouldReuse, Some(r.id), r.step),
                Some(r) => (Action::WouldResume, Some(r.id), r.step),
                None => (Action::WouldStart, None, 0),
            };
            let name = existing.map(|r| r.name).unwrap_or(new.name);
            let last = id.and_then(|id| self.last_value(id));
            self.line(&name, &what, action, step, new.total_steps, last);
            let model_dir = root.join(&name).join("model");
            return Ok(RunRef {
                id: id.filter(|_| action == Action::WouldReuse),
                name,
                what,
                model_dir,
            });
        }
        self.obs.on_run(&new.name, None);
        let start = std::time::Instant::now();
        match go(&mut self.store, &new, &mut *self.obs) {
            Ok(o) => {
                let action = match (o.ending, o.resumed_from) {
                    (Ending::AlreadyDone, _) => Action::Reused,
                    (Ending::Stopped, _) => {
                        return Err(Stop::Interrupted(format!(
                            "run `{}` stopped at step {}/{} and checkpointed; run the script again to resume",
                            o.run.name, o.run.step, o.run.total_steps
                        )))
                    }
                    (Ending::Finished, Some(_)) => Action::Resumed,
                    (Ending::Finished, None) => Action::Trained,
                };
                let last = self.last_value(o.run.id);
                let line = self.line(
                    &o.run.name,
                    &what,
                    action,
                    o.run.step,
                    o.run.total_steps,
                    last,
                );
                let mut line = line;
                line.seconds = start.elapsed().as_secs_f64();
                if let Some(l) = self.lines.last_mut() {
                    l.seconds = line.seconds;
                }
                self.obs.on_run(&o.run.name, Some(&line));
                Ok(RunRef {
                    id: Some(o.run.id),
                    name: o.run.name,
                    what,
                    model_dir: o.model_dir,
                })
            }
            Err(e) => {
                let busy = matches!(e, RunError::Store(crate::store::StoreError::Busy { .. }));
                let action = if busy { Action::Busy } else { Action::Failed };
                let reached = self
                    .store
                    .run_by_identity(&new.identity)?
                    .map_or(0, |r| r.step);
                let line = self.line(&new.name, &what, action, reached, new.total_steps, None);
                self.obs.on_run(&new.name, Some(&line));
                if keep_going {
                    self.obs.on_log(&format!(
                        "run `{}` failed (continue_on_error): {e}",
                        new.name
                    ));
                    let id = self.store.run_by_identity(&new.identity)?.map(|r| r.id);
                    Ok(RunRef {
                        id,
                        name: new.name,
                        what,
                        model_dir,
                    })
                } else {
                    Err(Stop::Error(e.to_string()))
                }
            }
        }
    }

    fn line(
        &mut self,
        name: &str,
        what: &str,
        action: Action,
        step: usize,
        total: usize,
        last: Option<f64>,
    ) -> RunLine {
        let line = RunLine {
            name: name.to_string(),
            what: what.to_string(),
            action,
            step,
            total_steps: total,
            last,
            seconds: 0.0,
        };
        self.lines.push(line.clone());
        line
    }

    /// The run's latest `reward`, or `loss` for a warm start.
    fn last_value(&self, id: i64) -> Option<f64> {
        let latest = self.store.latest_metrics(id).ok()?;
        let get = |k: &str| latest.iter().find(|m| m.key == k).and_then(|m| m.value);
        get("reward").or_else(|| get("loss"))
    }

    fn run_status(&self, r: &RunRef) -> String {
        match r.id.and_then(|id| self.store.run_by_id(id).ok()) {
            Some(run) => run.status.as_str().to_string(),
            None => "planned".into(),
        }
    }

    fn metric(&self, r: &RunRef, key: &str) -> FLOAT {
        r.id.and_then(|id| self.store.latest_metrics(id).ok())
            .and_then(|m| m.into_iter().find(|m| m.key == key))
            .and_then(|m| m.value)
            .unwrap_or(FLOAT::NAN)
    }

    fn history(&self, r: &RunRef, key: &str) -> Array {
        r.id.and_then(|id| self.store.metrics(id).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.key == key)
            .map(|m| Dynamic::from(m.value.unwrap_or(FLOAT::NAN)))
            .collect()
    }

    /// The POC checklist (`runs::checklist`) as a map, with `problems` listing what failed.
    fn checklist(&self, r: &RunRef) -> Result<Map, Stop> {
        let Some(run) = r.id.and_then(|id| self.store.run_by_id(id).ok()) else {
            let mut out = Map::new();
            for k in [
                "completed",
                "loss_finite",
                "filtering",
                "checkpoints",
                "passed",
            ] {
                out.insert(k.into(), false.into());
            }
            out.insert(
                "problems".into(),
                vec![Dynamic::from("the run has not run")].into(),
            );
            return Ok(out);
        };
        let c = crate::runs::checklist::checklist(&self.store, &run)?;
        let mut out = Map::new();
        for (k, v) in [
            ("completed", c.completed),
            ("loss_finite", c.loss_finite),
            ("filtering", c.filtering),
            ("checkpoints", c.checkpoints),
            ("passed", c.passed),
        ] {
            out.insert(k.into(), v.into());
        }
        let problems: Array = c.problems.into_iter().map(Dynamic::from).collect();
        out.insert("problems".into(), problems.into());
        Ok(out)
    }

    /// Samples `n` completions per question of `data` (stored; reused when asked again) and
    /// returns accuracy, format rate, mean length and pass@k.
    fn evaluate(&mut self, target: Dynamic, data: DataRef, opts: Map) -> Result<Map, Stop> {
        let mut opts = opts;
        let ks = take(&mut opts, "k").map(int_list).transpose()?;
        let device = self.device(&mut opts, "evaluate")?;
        let config: EvalConfig = apply(
            &EvalConfig::default(),
            &rename(json_map(&opts)?, "max_tokens", "max_new_tokens"),
            "evaluate",
        )?;
        config.validate().map_err(|e| format!("evaluate: {e}"))?;
        let ks = ks.unwrap_or_else(|| EvalSummary::default_ks(config.n));
        if let Some(k) = ks.iter().find(|k| **k > config.n) {
            return Err(format!(
                "evaluate: {}",
                crate::eval::PassKError::KAboveN { n: config.n, k: *k }
            )
            .into());
        }
        let run = target.clone().try_cast::<RunRef>();
        let model = self.model_of(target, "evaluate")?;
        let mut out = Map::new();
        let ready = !self.dry && model.ready && run.as_ref().is_none_or(|r| r.id.is_some());
        if !ready {
            // A dry pass returns the same shape, with NaN for what sampling would measure.
            let nan = |_| FLOAT::NAN;
            out.extend(eval_map(
                &EvalSummary {
                    questions: data.size,
                    n: config.n,
                    accuracy: FLOAT::NAN,
                    format_rate: FLOAT::NAN,
                    mean_length: FLOAT::NAN,
                    truncated_rate: FLOAT::NAN,
                    pass_at_k: (0..config.n).map(nan).collect(),
                },
                &ks,
            ));
            return Ok(out);
        }
        let req = EvalRequest {
            target: match run {
                Some(r) => EvalTarget::Run(r.name),
                None => EvalTarget::Model(model.dir),
            },
            data: data.spec,
            questions: data.size,
            config,
            prompt: self.prompt.clone(),
            experiment: Some(self.experiment.clone()),
            device,
        };
        let mut obs = EvalProgress(&mut *self.obs);
        let o = evaluate(&mut self.store, &req, &mut obs).map_err(|e| match e {
            RunError::Stopped(m) => Stop::Interrupted(m),
            other => other.into(),
        })?;
        out.insert("run".into(), o.run.name.into());
        out.insert("name".into(), o.name.into());
        out.extend(eval_map(&o.result.summary, &ks));
        Ok(out)
    }

    /// Writes the report (`chartrl report`) of every run the script asked for into `out`
    /// (default `reports/EXPERIMENT`); returns the directory.
    fn report(&mut self, opts: Map) -> Result<String, Stop> {
        let mut opts = opts;
        let out = take(&mut opts, "out")
            .map(|v| v.to_string())
            .unwrap_or_else(|| format!("reports/{}", self.experiment));
        if let Some(k) = opts.keys().next() {
            return Err(format!("unknown report option `{k}` (valid: out)").into());
        }
        let dir = self.path(&out)?;
        if self.dry {
            return Ok(dir.display().to_string());
        }
        let mut runs = Vec::new();
        for l in &self.lines {
            if let Ok(run) = self.store.find_run(&l.name) {
                if !runs.iter().any(|r: &crate::store::Run| r.id == run.id) {
                    runs.push(run);
                }
            }
        }
        if runs.is_empty() {
            return Err("report: the script has not asked for any run yet"
                .to_string()
                .into());
        }
        let o = crate::report::build(&self.store, &runs, &dir, &self.experiment)
            .map_err(|e| format!("report: {e}"))?;
        self.obs.on_log(&format!(
            "report of {} runs written to {} ({} warnings)",
            o.runs,
            dir.join("report.html").display(),
            o.warnings.len()
        ));
        Ok(dir.display().to_string())
    }
}

/// `name` and `continue_on_error`, taken out of a run's options.
fn run_options(opts: &mut Map) -> Result<(Option<String>, bool), String> {
    let name = take(opts, "name").map(|v| v.to_string());
    let keep_going = match take(opts, "continue_on_error") {
        Some(v) => v
            .as_bool()
            .map_err(|t| format!("`continue_on_error` must be true or false, not {t}"))?,
        None => false,
    };
    Ok((name, keep_going))
}

/// Runs `f` on the host, turning its failure into a Rhai error at the call site.
fn with<T>(
    host: &HostRef,
    f: impl FnOnce(&mut Host) -> Result<T, Stop>,
) -> Result<T, Box<EvalAltResult>> {
    let mut guard = host.lock().unwrap_or_else(|p| p.into_inner());
    let started = std::time::Instant::now();
    let result = f(&mut guard);
    guard.clock.add_host(started.elapsed());
    result.map_err(|stop| {
        Box::new(match stop {
            Stop::Error(msg) => EvalAltResult::ErrorRuntime(msg.into(), Position::NONE),
            Stop::Interrupted(msg) => EvalAltResult::ErrorTerminated(msg.into(), Position::NONE),
        })
    })
}

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
    }
}

pub(crate) fn register(engine: &mut Engine, host: &HostRef) {
    engine
        .register_type_with_name::<ModelRef>("Model")
        .register_type_with_name::<DataRef>("Data")
        .register_type_with_name::<RunRef>("Run");
    let h = host.clone();
    engine.on_print(move |s| {
        let _ = with(&h, |host| {
            // A dry run's values are placeholders; what it shows is the plan.
            if !host.dry {
                host.obs.on_log(s);
            }
            Ok(())
        });
    });
    let h = host.clone();
    engine.register_fn("log", move |s: &str| {
        with(&h, |host| {
            host.obs.on_log(s);
            Ok(())
        })
    });
    let h = host.clone();
    engine.register_fn("param", move |name: &str, default: Dynamic| {
        with(&h, |host| host.param(name, default))
    });
    let h = host.clone();
    engine.register_fn("experiment", move |name: &str| {
        with(&h, |host| {
            crate::runs::identity::check_name(name).map_err(|_| {
                format!("experiment(\"{name}\"): use letters, digits, `.`, `_` and `-` (not starting with `.`)")
            })?;
            host.experiment = name.to_string();
            Ok(())
        })
    });
    let h = host.clone();
    engine.register_fn("model", move |spec: &str| with(&h, |host| host.model(spec)));
    let h = host.clone();
    engine.register_fn("chart_data", move |opts: Map| {
        with(&h, |host| host.chart_data(opts))
    });
    let h = host.clone();
    engine.register_fn("chart_data", move || {
        with(&h, |host| host.chart_data(Map::new()))
    });
    let h = host.clone();
    engine.register_fn("data", move |path: &str| with(&h, |host| host.data(path)));
    engine.register_fn(
        "take",
        |d: &mut DataRef, n: INT| -> Result<DataRef, Box<EvalAltResult>> {
            if n <= 0 {
                return Err(format!("take({n}): the count must be positive").into());
            }
            Ok(DataRef {
                spec: d.spec.clone(),
                size: d.size.min(n as usize),
            })
        },
    );
    engine.register_fn("len", |d: &mut DataRef| d.size as INT);
    engine.register_fn("to_string", |d: &mut DataRef| match &d.spec {
        DataSpec::Synthetic { split, seed } => format!(
            "chart_data({} split, seed {seed}, {} samples)",
            split.name(),
            d.size
        ),
        DataSpec::File(p) => format!("data({}, {} samples)", p.display(), d.size),
    });
    engine.register_fn("to_string", |m: &mut ModelRef| {
        format!("model({})", m.dir.display())
    });
    let h = host.clone();
    engine.register_fn("warm_start", move |m: ModelRef, d: DataRef, opts: Map| {
        with(&h, |host| host.warm_start(m, d, opts))
    });
    let h = host.clone();
    engine.register_fn("warm_start", move |m: ModelRef, d: DataRef| {
        with(&h, |host| host.warm_start(m, d, Map::new()))
    });
    let h = host.clone();
    engine.register_fn("train", move |opts: Map| with(&h, |host| host.train(opts)));
    let h = host.clone();
    engine.register_fn("evaluate", move |t: Dynamic, d: DataRef, opts: Map| {
        with(&h, |host| host.evaluate(t, d, opts))
    });
    let h = host.clone();
    engine.register_fn("evaluate", move |t: Dynamic, d: DataRef| {
        with(&h, |host| host.evaluate(t, d, Map::new()))
    });
    let h = host.clone();
    engine.register_fn("report", move |opts: Map| {
        with(&h, |host| host.report(opts))
    });
    let h = host.clone();
    engine.register_fn("report", move || with(&h, |host| host.report(Map::new())));

    engine.register_get("name", |r: &mut RunRef| r.name.clone());
    engine.register_get("mode", |r: &mut RunRef| r.what.clone());
    engine.register_get("model", |r: &mut RunRef| {
        let ready = r.model_dir.join("config.json").is_file();
        ModelRef {
            dir: r.model_dir.clone(),
            ready,
        }
    });
    let h = host.clone();
    engine.register_get("status", move |r: &mut RunRef| {
        with(&h, |host| Ok(host.run_status(r)))
    });
    let h = host.clone();
    engine.register_get("ok", move |r: &mut RunRef| {
        with(&h, |host| Ok(host.run_status(r) == "done"))
    });
    let h = host.clone();
    engine.register_get("step", move |r: &mut RunRef| {
        with(&h, |host| {
            Ok(r.id
                .and_then(|id| host.store.run_by_id(id).ok())
                .map(|x| x.step as INT)
                .unwrap_or(0))
        })
    });
    let h = host.clone();
    engine.register_fn("metric", move |r: &mut RunRef, key: &str| {
        with(&h, |host| Ok(host.metric(r, key)))
    });
    let h = host.clone();
    engine.register_fn("history", move |r: &mut RunRef, key: &str| {
        with(&h, |host| Ok(host.history(r, key)))
    });
    let h = host.clone();
    engine.register_fn("checklist", move |r: &mut RunRef| {
        with(&h, |host| host.checklist(r))
    });
    let h = host.clone();
    engine.register_fn("to_string", move |r: &mut RunRef| {
        let status = with(&h, |host| Ok(host.run_status(r))).unwrap_or_default();
        format!("run({}, {}, {status})", r.name, r.what)
    });
    let _ = Kind::Train;
}

/// An evaluation's progress, shown by the exec console; Ctrl-C stops it between chunks.
struct EvalProgress<'a>(&'a mut dyn ExecObserver);

impl EvalObserver for EvalProgress<'_> {
    fn on_progress(&mut self, done: usize, total: usize) {
        self.0.on_eval(done, total);
    }
    fn should_stop(&self) -> bool {
        self.0.should_stop()
    }
}

/// A list of positive integers (`k: [1, 2, 4]`), or a single one.
fn int_list(v: Dynamic) -> Result<Vec<usize>, Stop> {
    let items = match v.clone().try_cast::<Array>() {
        Some(a) => a,
        None => vec![v],
    };
    items
        .into_iter()
        .map(|x| {
            x.as_int()
                .ok()
                .filter(|i| *i > 0)
                .map(|i| i as usize)
                .ok_or_else(|| {
                    Stop::Error(format!(
                        "evaluate: `k` must hold positive integers, not {x}"
                    ))
                })
        })
        .collect()
}

/// `map` with `from` renamed `to` (script option names that differ from the config's).
fn rename(
    mut map: serde_json::Map<String, serde_json::Value>,
    from: &str,
    to: &str,
) -> serde_json::Map<String, serde_json::Value> {
    if let Some(v) = map.remove(from) {
        map.insert(to.to_string(), v);
    }
    map
}

/// What `evaluate` returns: the aggregate, with pass@k for the asked `ks` by k.
fn eval_map(s: &EvalSummary, ks: &[usize]) -> Map {
    let mut out = Map::new();
    out.insert("questions".into(), Dynamic::from(s.questions as INT));
    out.insert("n".into(), Dynamic::from(s.n as INT));
    for (key, v) in [
        ("accuracy", s.accuracy),
        ("format_rate", s.format_rate),
        ("mean_length", s.mean_length),
        ("truncated_rate", s.truncated_rate),
    ] {
        out.insert(key.into(), Dynamic::from(v));
    }
    let pass: Map = ks
        .iter()
        .filter_map(|k| {
            Some((
                k.to_string().into(),
                Dynamic::from(*s.pass_at_k.get(k - 1)?),
            ))
        })
        .collect();
    out.insert("pass_at_k".into(), pass.into());
    out
}
