//! Runs that survive crashes: a training request becomes a run in the store, keyed by the
//! identity of its resolved configuration, input model and data. Starting a run that exists
//! returns its results when it is done, resumes it from its latest valid checkpoint when it
//! was interrupted, failed or its process died, and refuses to train it twice at once.
//!
//! Resume is exact: the data order and sampling RNG derive from the seed and the step (see
//! `train::rl`), and a checkpoint holds weights, AdamW moments and the step, so a resumed run
//! records the same metrics and ends with the same weights as one never interrupted.

pub mod checklist;
pub mod checkpoint;
pub mod config;
pub mod evaluate;
pub mod identity;
pub mod layout;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::data::{DataSource, Difficulty, Generator, PromptTemplate, Sample, Split};
use crate::model::Policy;
use crate::reward::CustomRewards;
use crate::store::{
    write::StepRecord, CheckpointRow, EventRow, Heartbeat, Kind, NewRun, Owner, Run, SampleRow,
    Status, Store, StoreError,
};
use crate::train::{
    fit, Event, FitHook, Observer, RlTrainer, SftTrainer, StepMetrics, TrainConfig, TrainError,
    Trainer, WarmStartConfig,
};

/// Seed of the synthetic training split used when no data file is given.
pub const SYNTHETIC_SEED: u64 = 2025;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("run name `{0}`: use letters, digits, `.`, `_` and `-` (not starting with `.`)")]
    BadName(String),
    #[error("run `{0}` has no model yet: it has neither finished nor written a checkpoint")]
    NoModel(String),
    #[error("evaluation: {0}")]
    BadEval(String),
    #[error("data: {0}")]
    BadData(String),
    /// Stopped by the user between chunks of work; the message says how to go on.
    #[error("{0}")]
    Stopped(String),
    #[error("run `{run}`: {source}")]
    InRun { run: String, source: Box<RunError> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl RunError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        RunError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where a run's samples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSpec {
    /// The built-in generator's `split` with `seed` at `difficulty` (samples are nested: the
    /// first N of a larger set are the smaller set).
    Synthetic {
        split: Split,
        seed: u64,
        difficulty: Difficulty,
    },
    /// A chartrl JSONL or ChartQA JSON file.
    File(PathBuf),
    /// The samples of `of` at `indices`, in that order: a script's pick (`data.pick([...])`),
    /// such as the questions a model solves sometimes but not always.
    Subset {
        of: Box<DataSpec>,
        indices: Vec<usize>,
    },
}

impl Default for DataSpec {
    /// The synthetic train split, seed 2025.
    fn default() -> Self {
        DataSpec::synthetic(Split::Train)
    }
}

impl DataSpec {
    /// The generator's `split`, seed 2025, default difficulty.
    pub fn synthetic(split: Split) -> Self {
        DataSpec::Synthetic {
            split,
            seed: SYNTHETIC_SEED,
            difficulty: Difficulty::default(),
        }
    }

    /// The first `n` samples (all of a file's when `n` is larger).
    pub fn samples(&self, n: usize) -> Result<Vec<Sample>, RunError> {
        Ok(match self {
            DataSpec::File(p) => {
                let mut all = DataSource::from_path(p)?.load()?;
                all.truncate(n);
                all
            }
            DataSpec::Synthetic {
                split,
                seed,
                difficulty,
            } => Generator::with_difficulty(*split, *seed, *difficulty)
                .take(n)
                .collect(),
            DataSpec::Subset { of, indices } => {
                let picked = &indices[..indices.len().min(n)];
                let upto = picked.iter().max().map_or(0, |m| m + 1);
                let all = of.samples(upto)?;
                picked
                    .iter()
                    .map(|&i| {
                        all.get(i).cloned().ok_or_else(|| {
                            RunError::BadData(format!(
                                "{}: no sample {i} (it has {})",
                                of.label(),
                                all.len()
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        })
    }

    /// The identity of the data: a file's content hash, or the generator's split and seed.
    pub fn identity(&self) -> Result<String, RunError> {
        Ok(match self {
            DataSpec::File(path) => format!("file:{}", identity::sha256_file(path)?.0),
            DataSpec::Synthetic {
                split,
                seed,
                difficulty,
            } => format!(
                "synthetic:v{}:{}:{seed}:{difficulty}",
                identity::SYNTHETIC_VERSION,
                split.name()
            ),
            DataSpec::Subset { of, indices } => format!(
                "subset:{}:{}",
                of.identity()?,
                identity::identity_of(&serde_json::json!(indices))
            ),
        })
    }

    /// What the samples are, for people: `synthetic test split, seed 2025` or a file name.
    pub fn label(&self) -> String {
        match self {
            DataSpec::Synthetic {
                split,
                seed,
                difficulty,
            } => format!(
                "synthetic {} split, seed {seed}, {difficulty}",
                split.name()
            ),
            DataSpec::File(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            DataSpec::Subset { of, indices } => {
                format!("{}, {} picked", of.label(), indices.len())
            }
        }
    }

    fn path(&self) -> Option<&Path> {
        match self {
            DataSpec::File(p) => Some(p),
            DataSpec::Synthetic { .. } => None,
            DataSpec::Subset { of, .. } => of.path(),
        }
    }

    /// The samples of this data at `indices` (positions in its samples, in that order); a
    /// pick of a pick maps through to the original data.
    ///
    /// # Panics
    /// On a pick, if an index is not below its number of samples (a script's `pick` checks
    /// them against the data's length first).
    pub fn pick(&self, indices: &[usize]) -> DataSpec {
        match self {
            DataSpec::Subset { of, indices: own } => DataSpec::Subset {
                of: of.clone(),
                indices: indices.iter().map(|&i| own[i]).collect(),
            },
            other => DataSpec::Subset {
                of: Box::new(other.clone()),
                indices: indices.to_vec(),
            },
        }
    }
}

/// What to train: options, input model and data, and optionally a name and experiment.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub config: TrainConfig,
    pub model: PathBuf,
    /// The training samples: the first `subset_size` of these.
    pub data: DataSpec,
    /// The prompt template (its hash is part of the run's identity).
    pub prompt: PromptTemplate,
    /// Where to train; not part of the identity, so a run may resume on another device.
    pub device: candle_core::Device,
    /// Rewards `config.rewards` may name besides the built-ins (a script's closures). Their
    /// identity is whatever their spec's `params` say.
    pub custom_rewards: CustomRewards,
    /// Default: `MODE-nSUBSET-IDENTITY8`.
    pub name: Option<String>,
    pub experiment: Option<String>,
}

/// A supervised warm start to run: options, input model and data, optional name/experiment.
#[derive(Debug, Clone)]
pub struct WarmStartRequest {
    pub config: WarmStartConfig,
    pub model: PathBuf,
    /// The training samples: the first `samples` of these.
    pub data: DataSpec,
    /// The prompt template (its hash is part of the run's identity).
    pub prompt: PromptTemplate,
    /// Where to train; not part of the identity.
    pub device: candle_core::Device,
    /// Default: `warm-start-nSAMPLES-IDENTITY8`.
    pub name: Option<String>,
    pub experiment: Option<String>,
}

/// How to treat another process's claim on the run.
#[derive(Debug, Clone, Copy)]
pub struct ClaimPolicy {
    /// Another host's claim whose heartbeat is older than this is stale.
    pub stale_after: Duration,
    /// Take the run over whatever claim it carries.
    pub force: bool,
    pub heartbeat_every: Duration,
}

impl Default for ClaimPolicy {
    fn default() -> Self {
        Self {
            stale_after: crate::store::STALE_AFTER,
            force: false,
            heartbeat_every: Duration::from_secs(15),
        }
    }
}

/// How a call to [`train`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The run was already done; nothing was trained.
    AlreadyDone,
    Finished,
    /// The observer asked to stop; a checkpoint was written and the run marked interrupted.
    Stopped,
}

#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub run: Run,
    pub ending: Ending,
    /// The checkpoint step this process resumed from.
    pub resumed_from: Option<usize>,
    pub steps_done: usize,
    pub seconds: f64,
    /// The final model (Hugging Face layout), written when the run finishes.
    pub model_dir: PathBuf,
}

/// The run this training request names: identity, name and stored configuration.
pub fn plan(req: &TrainRequest) -> Result<NewRun, RunError> {
    plan_for(req, &identity::model_identity(&req.model)?)
}

/// [`plan`] with the input model's identity given: its hash, or in a plan the key of the
/// run that will make it (see `sweep::plan`).
pub fn plan_for(req: &TrainRequest, model_identity: &str) -> Result<NewRun, RunError> {
    let options = serde_json::to_value(&req.config).unwrap_or_default();
    let mut new = plan_run(
        Kind::Train,
        options,
        (&req.model, model_identity),
        &req.data,
        &req.prompt,
        req.name.as_deref(),
        &format!("{}-n{}", req.config.mode.name(), req.config.subset_size),
    )?;
    new.experiment = req.experiment.clone();
    new.mode = Some(req.config.mode.name().to_string());
    new.total_steps = req.config.total_steps();
    Ok(new)
}

/// The run this warm-start request names (its options checked first).
pub fn plan_warm_start(req: &WarmStartRequest) -> Result<NewRun, RunError> {
    plan_warm_start_for(req, &identity::model_identity(&req.model)?)
}

/// [`plan_warm_start`] with the input model's identity given (see [`plan_for`]).
pub fn plan_warm_start_for(
    req: &WarmStartRequest,
    model_identity: &str,
) -> Result<NewRun, RunError> {
    req.config.validate().map_err(|msg| TrainError::Config {
        origin: "warm_start".into(),
        msg,
    })?;
    let options = serde_json::to_value(&req.config).unwrap_or_default();
    let mut new = plan_run(
        Kind::WarmStart,
        options,
        (&req.model, model_identity),
        &req.data,
        &req.prompt,
        req.name.as_deref(),
        &format!("warm-start-n{}", req.config.samples),
    )?;
    new.experiment = req.experiment.clone();
    new.total_steps = req.config.total_steps();
    Ok(new)
}

/// Options that do not change what a run computes, only how often it is saved.
const SAVE_OPTIONS: [&str; 2] = ["save_steps", "save_total_limit"];

/// The options without [`SAVE_OPTIONS`]: what a run's identity and a checkpoint's
/// compatibility depend on.
pub(crate) fn results_options(options: &serde_json::Value) -> serde_json::Value {
    let mut v = options.clone();
    if let Some(map) = v.as_object_mut() {
        for key in SAVE_OPTIONS {
            map.remove(key);
        }
    }
    v
}

/// Identity over (kind, options, model identity, data identity, prompt template); the
/// stored configuration adds the paths, which are not part of the identity (a copied runs/
/// directory and model resume anywhere).
fn plan_run(
    kind: Kind,
    options: serde_json::Value,
    (model, model_identity): (&Path, &str),
    data: &DataSpec,
    prompt: &PromptTemplate,
    name: Option<&str>,
    name_prefix: &str,
) -> Result<NewRun, RunError> {
    let doc = serde_json::json!({
        "kind": kind.as_str(),
        "options": results_options(&options),
        "model": model_identity,
        "data": data.identity()?,
        "prompt": prompt.identity(),
    });
    let identity = identity::identity_of(&doc);
    let name = match name {
        Some(n) => n.to_string(),
        None => format!("{name_prefix}-{}", &identity[..8]),
    };
    identity::check_name(&name)?;
    let mut config = doc;
    config["options"] = options;
    config["model_path"] = model.display().to_string().into();
    config["data_path"] = data.path().map(|p| p.display().to_string()).into();
    config["data_label"] = data.label().into();
    Ok(NewRun {
        identity,
        name,
        experiment: None,
        kind,
        mode: None,
        config,
        total_steps: 0,
    })
}

/// Trains the requested run to its end, resuming it if it exists, or returns it when done.
/// Stops between steps when `obs.should_stop()`.
pub fn train(
    store: &mut Store,
    req: &TrainRequest,
    claim: &ClaimPolicy,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome, RunError> {
    train_planned(store, req, &plan(req)?, claim, obs)
}

/// [`train`] for a request already planned (its model and data hashed) by [`plan`].
pub fn train_planned(
    store: &mut Store,
    req: &TrainRequest,
    new: &NewRun,
    claim: &ClaimPolicy,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome, RunError> {
    execute(store, new, claim, obs, || {
        let samples = req.data.samples(req.config.subset_size)?;
        let policy = load_policy(&req.model, &req.device)?;
        Ok(Box::new(RlTrainer::with_rewards(
            req.config.clone(),
            policy,
            &samples,
            req.prompt.clone(),
            &req.custom_rewards,
        )?))
    })
}

/// Runs the requested warm start like [`train`] runs RL: resumable, recorded, reused when done.
pub fn warm_start(
    store: &mut Store,
    req: &WarmStartRequest,
    claim: &ClaimPolicy,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome, RunError> {
    warm_start_planned(store, req, &plan_warm_start(req)?, claim, obs)
}

/// [`warm_start`] for a request already planned by [`plan_warm_start`].
pub fn warm_start_planned(
    store: &mut Store,
    req: &WarmStartRequest,
    new: &NewRun,
    claim: &ClaimPolicy,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome, RunError> {
    execute(store, new, claim, obs, || {
        let samples = req.data.samples(req.config.samples)?;
        let policy = load_policy(&req.model, &req.device)?;
        Ok(Box::new(SftTrainer::new(
            req.config.clone(),
            policy,
            &samples,
            &req.prompt,
        )?))
    })
}

/// A model to train: f32 weights (and so f32 AdamW moments) on every device.
fn load_policy(dir: &Path, device: &candle_core::Device) -> Result<Policy, RunError> {
    Ok(Policy::load(dir, device, candle_core::DType::F32)?)
}

/// Returns the run if it is done; else builds its trainer with `build` (which checks the
/// options, data and model: a bad input is an error before any run is recorded), then
/// creates or finds the run, claims it and drives the trainer, recording how it ended.
fn execute(
    store: &mut Store,
    new: &NewRun,
    claim: &ClaimPolicy,
    obs: &mut dyn Observer,
    build: impl FnOnce() -> Result<Box<dyn Trainer>, RunError>,
) -> Result<TrainOutcome, RunError> {
    if let Some(run) = store.run_by_identity(&new.identity)? {
        if run.status == Status::Done {
            return Ok(already_done(store, run));
        }
    }
    let mut trainer = build()?;
    let (run, _) = store.find_or_create_run(new)?;
    if run.status == Status::Done {
        // Another process finished it while this one built its trainer.
        return Ok(already_done(store, run));
    }
    let model_dir = layout::final_model(&store.root(), &run.name);
    let me = Owner::current();
    let run = store.claim(&run, &me, claim.stale_after, claim.force)?;
    let _heartbeat = Heartbeat::start(
        store.path().to_path_buf(),
        run.id,
        me.token.clone(),
        claim.heartbeat_every,
    );
    let result = drive(store, &run, &me.token, trainer.as_mut(), &model_dir, obs);
    let (status, error) = match &result {
        Ok(o) if o.ending == Ending::Finished => (Status::Done, None),
        Ok(_) => (Status::Interrupted, None),
        Err(RunError::Store(StoreError::LeaseLost(_) | StoreError::Vanished { .. })) => {
            return result
        }
        // A full disk stops the run, it does not fail it: free space and it resumes.
        Err(e) if crate::fsx::is_out_of_space(e) => (Status::Interrupted, Some(e.to_string())),
        Err(e) => (Status::Failed, Some(e.to_string())),
    };
    let recorded = record_ending(store, &run, &me, status, &result, error.as_deref());
    let mut outcome = result.map_err(|e| RunError::InRun {
        run: run.name.clone(),
        source: Box::new(e),
    })?;
    recorded?;
    outcome.run = store.run_by_id(run.id)?;
    Ok(outcome)
}

/// Records how the run ended: an event for a failure, then its final status. When the
/// training error was a full disk, a store on that disk may refuse these writes too; the
/// run then shows as crashed, which the same command resumes just the same.
fn record_ending(
    store: &mut Store,
    run: &Run,
    me: &Owner,
    status: Status,
    result: &Result<TrainOutcome, RunError>,
    error: Option<&str>,
) -> Result<(), RunError> {
    let write = |store: &mut Store| -> Result<(), RunError> {
        if let (Err(e), Some(message)) = (result, error) {
            let step = store.run_by_id(run.id)?.step;
            store.add_event(run.id, &failure_event(e, message, step))?;
        }
        Ok(store.release(run, me, status, error)?)
    };
    match write(store) {
        Err(_)
            if result
                .as_ref()
                .is_err_and(|e| crate::fsx::is_out_of_space(e)) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The outcome of asking for a run that is already done.
fn already_done(store: &Store, run: Run) -> TrainOutcome {
    let model_dir = layout::final_model(&store.root(), &run.name);
    TrainOutcome {
        run,
        ending: Ending::AlreadyDone,
        resumed_from: None,
        steps_done: 0,
        seconds: 0.0,
        model_dir,
    }
}

/// The event a run that ended in an error records: `non_finite` (naming the step and the
/// quantity) when training diverged, `disk_full` when the disk filled, else `failed`.
fn failure_event(e: &RunError, message: &str, step: usize) -> EventRow {
    let diverged = match e {
        RunError::Train(TrainError::NonFinite { step, .. }) => Some(*step),
        _ => None,
    };
    let kind = match (diverged, crate::fsx::is_out_of_space(e)) {
        (Some(_), _) => "non_finite",
        (None, true) => "disk_full",
        (None, false) => "failed",
    };
    EventRow {
        step: diverged.unwrap_or(step),
        level: "alert".into(),
        kind: kind.into(),
        message: message.to_string(),
        time: crate::store::now(),
    }
}

/// The claimed run's training: restore, then the training loop with the store's hook.
fn drive(
    store: &mut Store,
    run: &Run,
    lease: &str,
    trainer: &mut dyn Trainer,
    model_dir: &Path,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome, RunError> {
    let start = Instant::now();
    let root = store.root();
    let (save_steps, keep) = config::RunConfig::of(run).save_policy();
    let resumed_from = resume_point(store, run, &root, trainer)?;
    if resumed_from.is_none() && run.step > 0 {
        obs.on_event(&Event {
            step: 0,
            level: crate::train::Level::Warning,
            kind: "restarted",
            message: format!(
                "run `{}` had reached step {}, but none of its checkpoints is usable (deleted or corrupt): starting over from step 0",
                run.name, run.step
            ),
        });
    }
    let mut hook = Recording {
        store,
        run,
        lease,
        root,
        save_steps,
        keep,
        model_dir,
    };
    let done = fit(trainer, &mut hook, obs)?;
    Ok(TrainOutcome {
        run: run.clone(),
        ending: if done.stopped {
            Ending::Stopped
        } else {
            Ending::Finished
        },
        resumed_from,
        steps_done: done.steps_done,
        seconds: start.elapsed().as_secs_f64(),
        model_dir: model_dir.to_path_buf(),
    })
}

/// The run's side of the training loop: each step recorded in the store (metrics, events,
/// kept completions, under the run's lease), a checkpoint every `save_steps` and at the end,
/// and the final model once the last step is done.
struct Recording<'a> {
    store: &'a mut Store,
    run: &'a Run,
    lease: &'a str,
    root: PathBuf,
    save_steps: usize,
    keep: usize,
    model_dir: &'a Path,
}

impl FitHook for Recording<'_> {
    type Error = RunError;

    fn after_step(
        &mut self,
        trainer: &dyn Trainer,
        m: &StepMetrics,
        events: &[Event],
    ) -> Result<(), RunError> {
        let rows: Vec<EventRow> = events.iter().map(event_row).collect();
        self.store.log_step(
            self.run.id,
            &StepRecord {
                step: m.step,
                values: Some(&m.values()),
                events: &rows,
                samples: &sample_rows(m),
                lease: Some(self.lease),
            },
        )?;
        self.store.check_still_here()?;
        let done = trainer.step();
        if self.save_steps > 0
            && done.is_multiple_of(self.save_steps)
            && done < trainer.total_steps()
        {
            save_checkpoint(self.store, self.run, &self.root, trainer, self.keep)?;
        }
        Ok(())
    }

    fn at_end(&mut self, trainer: &dyn Trainer, stopped: bool) -> Result<(), RunError> {
        let latest = self.store.checkpoints(self.run.id)?.first().map(|c| c.step);
        if latest != Some(trainer.step()) {
            save_checkpoint(self.store, self.run, &self.root, trainer, self.keep)?;
        }
        if !stopped {
            save_model(trainer.policy(), self.model_dir)?;
        }
        Ok(())
    }
}

/// A training event as the store keeps it.
fn event_row(e: &Event) -> EventRow {
    EventRow {
        step: e.step,
        level: serde_json::to_value(e.level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        kind: e.kind.to_string(),
        message: e.message.clone(),
        time: crate::store::now(),
    }
}

/// Restores the newest checkpoint that matches its recorded hash, skipping (with a warning
/// event) any that do not, and forgets what the run recorded after it. Returns its step.
fn resume_point(
    store: &mut Store,
    run: &Run,
    root: &Path,
    trainer: &mut dyn Trainer,
) -> Result<Option<usize>, RunError> {
    let ckpt_dir = layout::checkpoints(root, &run.name);
    let mut warnings = Vec::new();
    let mut chosen: Option<CheckpointRow> = None;
    for row in store.checkpoints(run.id)? {
        match checkpoint::verify(root, &row) {
            Ok(()) => {
                chosen = Some(row);
                break;
            }
            Err(why) => {
                warnings.push(format!(
                    "checkpoint at step {} skipped: {why}; falling back to the previous one",
                    row.step
                ));
                store.delete_checkpoint(run.id, row.step)?;
            }
        }
    }
    let recorded: Vec<String> = store
        .checkpoints(run.id)?
        .iter()
        .filter_map(|c| Path::new(&c.path).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    checkpoint::sweep(&ckpt_dir, &recorded)?;
    let step = match &chosen {
        Some(row) => {
            checkpoint::restore(&root.join(&row.path), trainer)?;
            row.step
        }
        None => 0,
    };
    store.truncate_from(run.id, step)?;
    let t = crate::store::now();
    for message in warnings {
        store.add_event(
            run.id,
            &EventRow {
                step,
                level: "warning".into(),
                kind: "checkpoint_corrupt".into(),
                message,
                time: t,
            },
        )?;
    }
    if chosen.is_some() || run.step > 0 {
        store.add_event(
            run.id,
            &EventRow {
                step,
                level: "info".into(),
                kind: "resumed".into(),
                message: match &chosen {
                    Some(_) => format!("resumed from the checkpoint at step {step}"),
                    None => "no valid checkpoint: started over from step 0".into(),
                },
                time: t,
            },
        )?;
    }
    Ok(chosen.map(|c| c.step))
}

/// Writes a checkpoint, records it, and deletes the oldest beyond `keep` (0 keeps all).
fn save_checkpoint(
    store: &mut Store,
    run: &Run,
    root: &Path,
    trainer: &dyn Trainer,
    keep: usize,
) -> Result<(), RunError> {
    let rel = layout::checkpoint(&run.name, trainer.step());
    let row = checkpoint::write(root, &rel, trainer)?;
    store.add_checkpoint(run.id, &row)?;
    if keep > 0 {
        for old in store.checkpoints(run.id)?.into_iter().skip(keep) {
            store.delete_checkpoint(run.id, old.step)?;
            let dir = root.join(&old.path);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
            }
        }
    }
    Ok(())
}

/// Saves the final model through a temporary directory, replacing any earlier one.
fn save_model(policy: &Policy, dir: &Path) -> Result<(), RunError> {
    Ok(policy.save_replacing(dir)?)
}

/// The store rows of a step's kept completions.
pub fn sample_rows(m: &StepMetrics) -> Vec<SampleRow> {
    m.examples
        .iter()
        .map(|e| SampleRow {
            step: m.step,
            rank: e.rank.to_string(),
            prompt_id: e.prompt_id.clone(),
            completion: e.completion.clone(),
            rewards: serde_json::json!(e.rewards),
            reward: e.reward,
            advantage: e.advantage,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pick_is_those_samples_in_that_order_and_a_pick_of_a_pick_maps_through() {
        let test = DataSpec::synthetic(Split::Test);
        let all = test.samples(10).unwrap();
        let ids = |d: &DataSpec, n| -> Vec<String> {
            d.samples(n).unwrap().into_iter().map(|s| s.id).collect()
        };
        let picked = test.pick(&[7, 2, 5]);
        assert_eq!(ids(&picked, 10), [&*all[7].id, &all[2].id, &all[5].id]);
        assert_eq!(ids(&picked, 2), [&*all[7].id, &all[2].id]);
        let again = picked.pick(&[2, 0]);
        assert_eq!(again, test.pick(&[5, 7]));
        assert_eq!(ids(&again, 10), [&*all[5].id, &all[7].id]);

        let id = picked.identity().unwrap();
        assert!(id.starts_with("subset:synthetic:"), "{id}");
        assert_ne!(id, test.pick(&[2, 7, 5]).identity().unwrap());
        assert_eq!(id, test.pick(&[7, 2, 5]).identity().unwrap());
        assert_eq!(
            picked.label(),
            "synthetic test split, seed 2025, easy, 3 picked"
        );
    }

    #[test]
    fn a_pick_past_the_end_of_a_file_names_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.jsonl");
        let two = DataSpec::synthetic(Split::Test).samples(2).unwrap();
        let lines: Vec<String> = two
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        let err = DataSpec::File(path).pick(&[1, 3]).samples(5).unwrap_err();
        assert!(err.to_string().contains("no sample 3 (it has 2)"), "{err}");
    }
}
