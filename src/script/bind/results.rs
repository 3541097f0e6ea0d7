//! `evaluate(...)` and `report(...)`: sampled evaluations recorded in the store, and the
//! report of every run the script asked for.

use rhai::{Array, Dynamic, Engine, Map, INT};

use super::host_fn;
use super::runs::model_of;
use super::values::{DataRef, RunRef};
use crate::eval::{EvalConfig, EvalSummary};
use crate::runs::evaluate::{evaluate, EvalObserver, EvalRequest, EvalTarget};
use crate::runs::RunError;
use crate::script::host::{Host, HostError, HostRef};
use crate::script::options::{apply, json_map, take};
use crate::script::ExecObserver;
use crate::sweep::{PlannedKind, PlannedRun};

pub(super) fn register(engine: &mut Engine, host: &HostRef) {
    host_fn!(
        engine.register_fn,
        host,
        "evaluate",
        |h, t: Dynamic, d: DataRef, opts: Map| h.evaluate(t, d, opts)
    );
    host_fn!(
        engine.register_fn,
        host,
        "evaluate",
        |h, t: Dynamic, d: DataRef| h.evaluate(t, d, Map::new())
    );
    host_fn!(engine.register_fn, host, "report", |h, opts: Map| h
        .report(opts));
    host_fn!(engine.register_fn, host, "report", |h| h.report(Map::new()));
}

impl Host {
    /// Samples `n` completions per question of `data` (stored; reused when asked again) and
    /// returns accuracy, format rate, mean length and pass@k.
    fn evaluate(
        &mut self,
        target: Dynamic,
        data: DataRef,
        mut opts: Map,
    ) -> Result<Map, HostError> {
        let asked = take(&mut opts, "k").map(int_list).transpose()?;
        let device = self.device(&mut opts, "evaluate")?;
        let config: EvalConfig = apply(
            &EvalConfig::default(),
            &rename(json_map(&opts)?, "max_tokens", "max_new_tokens"),
            "evaluate",
        )?;
        config.validate().map_err(|e| format!("evaluate: {e}"))?;
        let ks = config
            .ks(&asked.unwrap_or_default())
            .map_err(|e| format!("evaluate: {e}"))?;
        let run = target.clone().try_cast::<RunRef>();
        let model = model_of(target, "evaluate")?;
        let mine = self.plan_evaluation(run.as_ref(), &model, &data, &config)?;
        let ready = !self.dry && mine && model.ready && run.as_ref().is_none_or(|r| r.id.is_some());
        if !ready {
            // A dry pass returns the same shape, with NaN for what sampling would measure.
            let mut out = eval_map(&EvalSummary::unmeasured(data.size, config.n), &ks);
            out.insert("correct".into(), Array::new().into());
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
        let bare_model = matches!(req.target, EvalTarget::Model(_));
        let mut obs = EvalProgress(&mut *self.obs);
        let o = evaluate(&mut self.store, &req, &mut obs).map_err(|e| match e {
            RunError::Stopped(m) => HostError::Interrupted(m),
            other => other.into(),
        })?;
        if bare_model {
            // A task that evaluated a bare model keys its `eval` run by the plan.
            let task = self.planner.as_ref().and_then(|p| p.task.clone());
            if let Some((key, _)) = task {
                self.place(o.run.id, &key)?;
            }
        }
        if bare_model && !self.evaluated_models.contains(&o.run.name) {
            self.evaluated_models.push(o.run.name.clone());
        }
        let correct: Array = self
            .store
            .eval_questions(o.run.id, o.step, &o.name)?
            .iter()
            .map(|q| Dynamic::from(q.correct as INT))
            .collect();
        let mut out = Map::new();
        out.insert("run".into(), o.run.name.into());
        out.insert("name".into(), o.name.into());
        out.extend(eval_map(&o.result.summary, &ks));
        out.insert("correct".into(), correct.into());
        Ok(out)
    }

    /// In a plan or task: notes the read of a run's results, or plans the evaluation of a
    /// bare model as work of its own. Returns whether this pass carries the evaluation out
    /// (a task evaluates only its own run or model).
    fn plan_evaluation(
        &mut self,
        run: Option<&RunRef>,
        model: &super::values::ModelRef,
        data: &DataRef,
        config: &EvalConfig,
    ) -> Result<bool, HostError> {
        let Some(planner) = &self.planner else {
            return Ok(true);
        };
        if let Some(r) = run {
            let mine = planner.is_task(&r.key);
            self.read_run(&r.key);
            return Ok(mine);
        }
        if !model.ready {
            return Err(format!("evaluate: model {} does not exist", model.dir.display()).into());
        }
        let model_id = crate::runs::identity::model_identity(&model.dir)?;
        let name = config.name(&data.spec.identity()?, &self.prompt, data.size);
        let key = crate::runs::identity::identity_of(&serde_json::json!({
            "kind": "eval", "model": model_id, "evaluation": name,
        }));
        let done = self
            .store
            .run_by_identity(&crate::runs::evaluate::model_run_identity(&model.dir)?)?
            .map(|r| self.store.evaluation(r.id, 0, &name))
            .transpose()?
            .flatten()
            .is_some();
        let label = model.dir.file_name().map_or_else(
            || model.dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        if let Some(p) = &mut self.planner {
            p.record(PlannedRun {
                key: key.clone(),
                name: format!("eval-{label}"),
                provisional: false,
                kind: PlannedKind::Eval,
                mode: "eval".into(),
                size: data.size,
                seed: None,
                stage: 0,
                depends_on: Vec::new(),
                identity: None,
                status: if done { "done" } else { "new" }.into(),
                step: 0,
                total_steps: 0,
            });
            // The script has its result: what it asks for next waits for it.
            p.read.insert(key.clone());
            return Ok(p.is_task(&key));
        }
        Ok(false)
    }

    /// Writes the report (`chartrl report`) of every run the script asked for into `out`
    /// (default `reports/EXPERIMENT`); returns the directory.
    fn report(&mut self, mut opts: Map) -> Result<String, HostError> {
        let out = take(&mut opts, "out")
            .map(|v| v.to_string())
            .unwrap_or_else(|| format!("reports/{}", self.experiment));
        if let Some(k) = opts.keys().next() {
            return Err(format!("unknown report option `{k}` (valid: out)").into());
        }
        let dir = self.path(&out)?;
        // A plan writes nothing; a task's store holds one run (the report comes after the
        // merge, from `chartrl exec` on the main store).
        if self.dry || self.planner.is_some() {
            return Ok(dir.display().to_string());
        }
        let mut runs: Vec<crate::store::Run> = Vec::new();
        let names = self
            .evaluated_models
            .iter()
            .chain(self.lines.iter().map(|l| &l.name));
        for name in names {
            if let Ok(run) = self.store.find_run(name) {
                if !runs.iter().any(|r| r.id == run.id) {
                    runs.push(run);
                }
            }
        }
        if runs.is_empty() {
            return Err("report: the script has not asked for any run yet"
                .to_string()
                .into());
        }
        let o = crate::report::build(&self.store, &runs, &dir, &self.experiment)?;
        self.obs.on_log(&format!(
            "report of {} runs written to {} ({} warnings)",
            o.runs,
            dir.join("report.html").display(),
            o.warnings.len()
        ));
        Ok(dir.display().to_string())
    }
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
fn int_list(v: Dynamic) -> Result<Vec<usize>, HostError> {
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
                    HostError::Usage(format!(
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
