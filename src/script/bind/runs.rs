//! `warm_start(...)` and `train(...)`: a run's request built from script options, planned on
//! the dry pass, carried out by `runs` on the real one, and recorded as a [`RunLine`].

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, FnPtr, Map};

use super::host_fn;
use super::values::{DataRef, ModelRef, RunRef};
use crate::reward::{CustomRewards, RewardSpec};
use crate::runs::{
    self, layout, ClaimPolicy, Ending, RunError, TrainOutcome, TrainRequest, WarmStartRequest,
};
use crate::script::host::{Host, HostError, HostRef};
use crate::script::options::{apply, json_map, take};
use crate::script::{Action, RunLine, ScriptReward};
use crate::store::{NewRun, Status, Store};
use crate::sweep::{PlannedKind, PlannedRun};
use crate::train::{keys, WarmStartConfig};

pub(super) fn register(engine: &mut Engine, host: &HostRef) {
    host_fn!(
        engine.register_fn,
        host,
        "warm_start",
        |h, m: ModelRef, d: DataRef, opts: Map| h.warm_start(m, d, opts)
    );
    host_fn!(
        engine.register_fn,
        host,
        "warm_start",
        |h, m: ModelRef, d: DataRef| h.warm_start(m, d, Map::new())
    );
    host_fn!(engine.register_fn, host, "train", |h, opts: Map| h
        .train(opts));
}

/// A request the host carries out: what it is, its model, and how to plan and run it.
struct Job<P, G> {
    what: String,
    model: ModelRef,
    name: Option<String>,
    plan: P,
    go: G,
    keep_going: bool,
}

impl Host {
    fn warm_start(
        &mut self,
        model: ModelRef,
        data: DataRef,
        mut opts: Map,
    ) -> Result<RunRef, HostError> {
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
        self.execute(Job {
            what: "warm-start".into(),
            model,
            name: req.name.clone(),
            plan: |model_id: &str| runs::plan_warm_start_for(&req, model_id),
            go: |store: &mut Store, new: &NewRun, obs: &mut dyn crate::train::Observer| {
                runs::warm_start_planned(store, &req, new, &ClaimPolicy::default(), obs)
            },
            keep_going,
        })
    }

    fn train(&mut self, mut opts: Map) -> Result<RunRef, HostError> {
        let model =
            take(&mut opts, "model").ok_or("train: the `model` option is required".to_string())?;
        let model = model_of(model, "train")?;
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
        let mut config = self.defaults.clone();
        let mut custom_rewards = CustomRewards::default();
        if let Some(v) = take(&mut opts, "rewards") {
            (config.rewards, custom_rewards) = self.rewards(v)?;
        }
        let mut map = json_map(&opts)?;
        map.entry("subset_size").or_insert(data.size.into());
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
        self.execute(Job {
            what: req.config.mode.name().to_string(),
            model,
            name: req.name.clone(),
            plan: |model_id: &str| runs::plan_for(&req, model_id),
            go: |store: &mut Store, new: &NewRun, obs: &mut dyn crate::train::Observer| {
                runs::train_planned(store, &req, new, &ClaimPolicy::default(), obs)
            },
            keep_going,
        })
    }

    /// A `rewards` option: `[#{name: "accuracy", weight: 1.0}, #{name: "short", score: |c, s| ...}]`.
    fn rewards(&self, v: Dynamic) -> Result<(Vec<RewardSpec>, CustomRewards), HostError> {
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

    /// Plans (dry, plan, or another task's run) or runs a request and records what became
    /// of it.
    fn execute<P, G>(&mut self, job: Job<P, G>) -> Result<RunRef, HostError>
    where
        P: Fn(&str) -> Result<NewRun, RunError>,
        G: FnOnce(
            &mut Store,
            &NewRun,
            &mut dyn crate::train::Observer,
        ) -> Result<TrainOutcome, RunError>,
    {
        let planning = self.planner.is_some();
        // A real pass needs the model now; a plan only needs to know which run makes it.
        let needed = if planning {
            job.model.made_by.is_none()
        } else {
            !self.dry
        };
        if !job.model.ready && needed {
            return Err(format!(
                "{}: its model {} does not exist (the run that makes it failed or did not finish)",
                job.what,
                job.model.dir.display()
            )
            .into());
        }
        // The key names the input model by the run that makes it, so a plan knows it before
        // that run has trained.
        let keyed = |made_by: &str| (job.plan)(&format!("run:{made_by}"));
        let key_of = |made_by: &str| keyed(made_by).map(|n| n.identity);
        if !job.model.ready {
            let keyed = match &job.model.made_by {
                Some(k) if planning => Some(keyed(k)?),
                _ => None,
            };
            return self.waiting(job, keyed);
        }
        let new = (job.plan)(&runs::identity::model_identity(&job.model.dir)?)?;
        let key = match &job.model.made_by {
            Some(k) if planning => key_of(k)?,
            _ => new.identity.clone(),
        };
        let mine = self.planner.as_ref().map(|p| p.is_task(&key));
        if planning {
            let entry = self.planned_entry(&new, &key, &job.what, job.model.made_by.clone())?;
            if let Some(p) = &mut self.planner {
                p.record(entry);
            }
        }
        if self.dry || mine == Some(false) {
            return self.planned(new, job.what, key);
        }
        if mine == Some(true) {
            let (run, _) = self.store.find_or_create_run(&new)?;
            self.place(run.id, &key)?;
        }
        self.obs.on_run(&new.name, None);
        let start = std::time::Instant::now();
        match (job.go)(&mut self.store, &new, &mut *self.obs) {
            Ok(o) => self.finished(o, job.what, start.elapsed().as_secs_f64(), key),
            Err(e) => self.failed(e, new, job.what, job.keep_going, key),
        }
    }

    /// A run whose input model does not exist yet (a dry pass or a plan before the run that
    /// makes it has trained). In a plan, `keyed` is the run with its input model named by
    /// the key of the run that makes it.
    fn waiting<P, G>(
        &mut self,
        job: Job<P, G>,
        keyed: Option<NewRun>,
    ) -> Result<RunRef, HostError> {
        let key = keyed.as_ref().map_or(String::new(), |n| n.identity.clone());
        if self.planner.as_ref().is_some_and(|p| p.is_task(&key)) {
            return Err(format!(
                "{}: its model {} does not exist, though the run that makes it should have finished before this task",
                job.what,
                job.model.dir.display()
            )
            .into());
        }
        let name = job.name.clone().unwrap_or_else(|| {
            if key.is_empty() {
                format!("{}-(after its input model)", job.what)
            } else {
                format!("{}-(planned-{})", job.what, &key[..8])
            }
        });
        if let Some(new) = keyed {
            let mut entry = self.planned_entry(&new, &key, &job.what, job.model.made_by.clone())?;
            entry.name = name.clone();
            entry.provisional = job.name.is_none();
            entry.identity = None;
            entry.status = "waiting".into();
            entry.step = 0;
            if let Some(p) = &mut self.planner {
                p.record(entry);
            }
        }
        self.line(&name, &job.what, Action::WouldStart, 0, 0, None);
        Ok(self.run_ref(None, name, job.what, key))
    }

    /// The plan's entry for a run whose identity is known.
    fn planned_entry(
        &self,
        new: &NewRun,
        key: &str,
        what: &str,
        made_by: Option<String>,
    ) -> Result<PlannedRun, HostError> {
        let stored = self.store.run_by_identity(&new.identity)?;
        let (status, step) = match &stored {
            Some(r) if r.status == Status::Done => ("done", r.step),
            Some(r) => ("partial", r.step),
            None => ("new", 0),
        };
        let options = &new.config["options"];
        let size = ["subset_size", "samples"]
            .iter()
            .find_map(|k| options[k].as_u64())
            .unwrap_or(0) as usize;
        Ok(PlannedRun {
            key: key.to_string(),
            name: stored.map(|r| r.name).unwrap_or_else(|| new.name.clone()),
            provisional: false,
            kind: kind_of(what),
            mode: what.to_string(),
            size,
            seed: options["seed"].as_u64(),
            stage: 0,
            depends_on: made_by.into_iter().collect(),
            identity: Some(new.identity.clone()),
            status: status.into(),
            step,
            total_steps: new.total_steps,
        })
    }

    /// Records the task's key (and scheduler record) with the run it trained.
    pub(super) fn place(&mut self, run_id: i64, key: &str) -> Result<(), HostError> {
        if let Some((_, sched)) = self.planner.as_ref().and_then(|p| p.task.as_ref()) {
            let sched = sched.clone();
            self.store.set_placement(run_id, key, sched.as_ref())?;
        }
        Ok(())
    }

    /// A dry pass's answer: whether the run would start, resume or be reused.
    fn planned(&mut self, new: NewRun, what: String, key: String) -> Result<RunRef, HostError> {
        let existing = self.store.run_by_identity(&new.identity)?;
        let (action, id, step) = match &existing {
            Some(r) if r.status == Status::Done => (Action::WouldReuse, Some(r.id), r.step),
            Some(r) => (Action::WouldResume, Some(r.id), r.step),
            None => (Action::WouldStart, None, 0),
        };
        let name = existing.map(|r| r.name).unwrap_or(new.name);
        let last = id.and_then(|id| self.last_value(id));
        self.line(&name, &what, action, step, new.total_steps, last);
        Ok(self.run_ref(id.filter(|_| action == Action::WouldReuse), name, what, key))
    }

    /// A run that trained, resumed, was reused, or stopped on a signal.
    fn finished(
        &mut self,
        o: TrainOutcome,
        what: String,
        seconds: f64,
        key: String,
    ) -> Result<RunRef, HostError> {
        let action = match (o.ending, o.resumed_from) {
            (Ending::AlreadyDone, _) => Action::Reused,
            (Ending::Stopped, _) => {
                return Err(HostError::Interrupted(format!(
                "run `{}` stopped at step {}/{} and checkpointed; run the script again to resume",
                o.run.name, o.run.step, o.run.total_steps
            )))
            }
            (Ending::Finished, Some(_)) => Action::Resumed,
            (Ending::Finished, None) => Action::Trained,
        };
        let last = self.last_value(o.run.id);
        let mut line = self.line(
            &o.run.name,
            &what,
            action,
            o.run.step,
            o.run.total_steps,
            last,
        );
        line.seconds = seconds;
        if let Some(l) = self.lines.last_mut() {
            l.seconds = seconds;
        }
        self.obs.on_run(&o.run.name, Some(&line));
        Ok(RunRef {
            id: Some(o.run.id),
            name: o.run.name,
            what,
            model_dir: o.model_dir,
            key,
        })
    }

    /// A run that failed: the script stops, unless the run said `continue_on_error`.
    fn failed(
        &mut self,
        e: RunError,
        new: NewRun,
        what: String,
        keep_going: bool,
        key: String,
    ) -> Result<RunRef, HostError> {
        let busy = matches!(e, RunError::Store(crate::store::StoreError::Busy { .. }));
        let action = if busy { Action::Busy } else { Action::Failed };
        let stored = self.store.run_by_identity(&new.identity)?;
        let reached = stored.as_ref().map_or(0, |r| r.step);
        let line = self.line(&new.name, &what, action, reached, new.total_steps, None);
        self.obs.on_run(&new.name, Some(&line));
        if !keep_going {
            return Err(e.into());
        }
        self.obs.on_log(&format!(
            "run `{}` failed (continue_on_error): {e}",
            new.name
        ));
        Ok(self.run_ref(stored.map(|r| r.id), new.name, what, key))
    }

    fn run_ref(&self, id: Option<i64>, name: String, what: String, key: String) -> RunRef {
        RunRef {
            id,
            model_dir: layout::final_model(&self.root, &name),
            name,
            what,
            key,
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
        get(keys::REWARD).or_else(|| get(keys::LOSS))
    }
}

/// A `model` option: a Model, or a Run (its final model).
pub(super) fn model_of(v: Dynamic, what: &str) -> Result<ModelRef, HostError> {
    if let Some(m) = v.clone().try_cast::<ModelRef>() {
        return Ok(m);
    }
    if let Some(r) = v.clone().try_cast::<RunRef>() {
        return Ok(ModelRef::of_run(&r));
    }
    Err(format!(
        "{what}: `model` must be a model(...) or a run, not {}",
        v.type_name()
    )
    .into())
}

/// A plan's kind for a run that does `what` (`warm-start` or a training mode).
fn kind_of(what: &str) -> PlannedKind {
    if what == "warm-start" {
        PlannedKind::WarmStart
    } else {
        PlannedKind::Train
    }
}

/// `name` and `continue_on_error`, taken out of a run's options.
fn run_options(opts: &mut Map) -> Result<(Option<String>, bool), String> {
    let name = take(opts, "name").map(|v| v.to_string());
    let keep_going = match take(opts, "continue_on_error") {
        Some(v) => v
            .as_bool()
            .map_err(|t| format!("`continue_on_error` must be true or false, not {t}")),
        None => Ok(false),
    }?;
    Ok((name, keep_going))
}
