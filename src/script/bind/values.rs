//! The values scripts pass around — `Model`, `Data`, `Run` — and what a script can read from
//! them: a run's name, mode, status, step, metrics and checklist, read from the store.

use std::path::PathBuf;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, FLOAT, INT};

use super::host_fn;
use crate::runs::checklist::{checklist, Checklist};
use crate::runs::DataSpec;
use crate::script::host::{Host, HostError, HostRef};

/// A model: a Hugging Face directory (`ready` once it exists).
#[derive(Debug, Clone)]
pub(crate) struct ModelRef {
    pub dir: PathBuf,
    pub ready: bool,
    /// The plan key of the run that makes this model (`None` for a model directory).
    pub made_by: Option<String>,
}

impl ModelRef {
    /// The model in `dir`, ready when its `config.json` is there.
    pub fn at(dir: PathBuf) -> Self {
        let ready = dir.join("config.json").is_file();
        Self {
            dir,
            ready,
            made_by: None,
        }
    }

    /// The final model of run `r`.
    pub fn of_run(r: &RunRef) -> Self {
        Self {
            made_by: Some(r.key.clone()),
            ..Self::at(r.model_dir.clone())
        }
    }
}

/// Training or test samples: a source and how many of its first samples to use.
#[derive(Debug, Clone)]
pub(crate) struct DataRef {
    pub spec: DataSpec,
    pub size: usize,
}

/// A run the script asked for.
#[derive(Debug, Clone)]
pub(crate) struct RunRef {
    /// `None` for a run a dry pass has not created.
    pub id: Option<i64>,
    pub name: String,
    /// `warm-start` or the training mode.
    pub what: String,
    pub model_dir: PathBuf,
    /// Its plan key (see `sweep::plan`); empty outside a plan or task.
    pub key: String,
}

pub(super) fn register(engine: &mut Engine, host: &HostRef) {
    engine
        .register_type_with_name::<ModelRef>("Model")
        .register_type_with_name::<DataRef>("Data")
        .register_type_with_name::<RunRef>("Run");
    engine.register_fn("take", take);
    engine.register_fn("pick", pick);
    engine.register_fn("types", types);
    engine.register_fn("len", |d: &mut DataRef| d.size as INT);
    engine.register_fn("to_string", |d: &mut DataRef| match &d.spec {
        DataSpec::Synthetic {
            split,
            seed,
            difficulty,
        } => format!(
            "chart_data({} split, seed {seed}, {difficulty}, {} samples)",
            split.name(),
            d.size
        ),
        DataSpec::File(p) => format!("data({}, {} samples)", p.display(), d.size),
        spec @ DataSpec::Subset { .. } => format!("pick({})", spec.label()),
    });
    engine.register_fn("to_string", |m: &mut ModelRef| {
        format!("model({})", m.dir.display())
    });
    engine.register_get("name", |r: &mut RunRef| r.name.clone());
    engine.register_get("mode", |r: &mut RunRef| r.what.clone());
    engine.register_get("model", |r: &mut RunRef| ModelRef::of_run(r));
    host_fn!(engine.register_get, host, "status", |h, r: &mut RunRef| Ok(
        h.run_status(r)
    ));
    host_fn!(engine.register_get, host, "ok", |h, r: &mut RunRef| Ok(h
        .run_status(r)
        == "done"));
    host_fn!(engine.register_get, host, "step", |h, r: &mut RunRef| Ok(
        h.run_step(r)
    ));
    host_fn!(
        engine.register_fn,
        host,
        "metric",
        |h, r: &mut RunRef, key: &str| Ok(h.metric(r, key))
    );
    host_fn!(
        engine.register_fn,
        host,
        "history",
        |h, r: &mut RunRef, key: &str| Ok(h.history(r, key))
    );
    host_fn!(
        engine.register_fn,
        host,
        "checklist",
        |h, r: &mut RunRef| h.checklist(r)
    );
    let shared = host.clone();
    engine.register_fn("to_string", move |r: &mut RunRef| {
        let status =
            crate::script::host::with(&shared, |h| Ok(h.run_status(r))).unwrap_or_default();
        format!("run({}, {}, {status})", r.name, r.what)
    });
}

/// `data.take(n)`: the first `n` samples.
fn take(d: &mut DataRef, n: INT) -> Result<DataRef, Box<EvalAltResult>> {
    if n <= 0 {
        return Err(format!("take({n}): the count must be positive").into());
    }
    Ok(DataRef {
        spec: d.spec.clone(),
        size: d.size.min(n as usize),
    })
}

/// `data.pick([i, ...])`: the samples at those positions (0-based, below `data.len()`), in
/// that order; for example the questions an evaluation's `correct` counts show a model solves
/// sometimes but not always.
fn pick(d: &mut DataRef, indices: Array) -> Result<DataRef, Box<EvalAltResult>> {
    if indices.is_empty() {
        return Err("pick([]): no samples picked".into());
    }
    let picked = indices
        .iter()
        .map(|v| match v.as_int() {
            Ok(i) if i >= 0 && (i as usize) < d.size => Ok(i as usize),
            _ => Err(format!(
                "pick: `{v}` is not a position in this data (0 to {})",
                d.size.saturating_sub(1)
            )),
        })
        .collect::<Result<Vec<usize>, String>>()?;
    Ok(DataRef {
        spec: d.spec.pick(&picked),
        size: picked.len(),
    })
}

/// `data.types()`: each sample's question type (`lookup`, `sum`, ...), in data order, so a
/// script can `pick` the questions of one skill.
fn types(d: &mut DataRef) -> Result<Array, Box<EvalAltResult>> {
    let samples = d.spec.samples(d.size).map_err(|e| e.to_string())?;
    Ok(samples
        .into_iter()
        .map(|s| Dynamic::from(s.question_type))
        .collect())
}

impl Host {
    /// The run as stored; the script has now read its state (a plan's dependency).
    fn stored_run(&mut self, r: &RunRef) -> Option<crate::store::Run> {
        self.read_run(&r.key);
        r.id.and_then(|id| self.store.run_by_id(id).ok())
    }

    fn run_status(&mut self, r: &RunRef) -> String {
        match self.stored_run(r) {
            Some(run) => run.status.as_str().to_string(),
            None => "planned".into(),
        }
    }

    fn run_step(&mut self, r: &RunRef) -> INT {
        self.stored_run(r).map_or(0, |x| x.step as INT)
    }

    /// The run's latest value of `key`; NaN when it has none.
    fn metric(&mut self, r: &RunRef, key: &str) -> FLOAT {
        self.read_run(&r.key);
        r.id.and_then(|id| self.store.latest_metrics(id).ok())
            .and_then(|m| m.into_iter().find(|m| m.key == key))
            .and_then(|m| m.value)
            .unwrap_or(FLOAT::NAN)
    }

    /// Every value of `key` the run recorded, step by step.
    fn history(&mut self, r: &RunRef, key: &str) -> Array {
        self.read_run(&r.key);
        r.id.and_then(|id| self.store.metrics(id).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.key == key)
            .map(|m| Dynamic::from(m.value.unwrap_or(FLOAT::NAN)))
            .collect()
    }

    /// The POC checklist (`runs::checklist`) as a map, with `problems` listing what failed.
    fn checklist(&mut self, r: &RunRef) -> Result<Map, HostError> {
        let planning = self.planner.is_some();
        let c = match self.stored_run(r) {
            Some(run) if !planning || run.status == crate::store::Status::Done => {
                checklist(&self.store, &run)?
            }
            // A plan assumes that every run it has not finished yet will pass.
            _ if planning => Checklist::assumed_passed(),
            _ => Checklist::not_run(),
        };
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
}
