//! Evaluations recorded in the store: a run's model (its final model, or its latest
//! checkpoint while it trains) or any model directory is sampled on held-out questions, each
//! chunk of question results committed as it finishes, the aggregate once all are in. The
//! same request again reads the stored result; an interrupted one samples only the chunks
//! that are missing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{identity, DataSpec, RunError};

use crate::data::PromptTemplate;
use crate::eval::{evaluate_chunk, EvalConfig, EvalSummary, QuestionResult, StoredEval, CHUNK};
use crate::model::{default_dtype, Policy};
use crate::store::{Kind, NewRun, Run, Status, Store};

/// What to evaluate.
#[derive(Debug, Clone)]
pub enum EvalTarget {
    /// A run by name or identity prefix.
    Run(String),
    /// A model directory; its evaluations are kept under an `eval` run named after it.
    Model(PathBuf),
}

#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub target: EvalTarget,
    pub data: DataSpec,
    /// The first `questions` questions of `data` (all of a smaller file).
    pub questions: usize,
    pub config: EvalConfig,
    /// The prompt template (its hash is part of the evaluation's name).
    pub prompt: PromptTemplate,
    /// The experiment an `eval` run for a bare model joins.
    pub experiment: Option<String>,
    /// Where the model samples (bf16 weights on CUDA, f32 on the CPU).
    pub device: candle_core::Device,
}

/// Progress of an evaluation, and the way to stop it between chunks.
pub trait EvalObserver {
    fn on_progress(&mut self, _done: usize, _total: usize) {}
    fn should_stop(&self) -> bool {
        false
    }
}

/// An observer that neither shows nor stops anything.
pub struct Quiet;
impl EvalObserver for Quiet {}

#[derive(Debug, Clone)]
pub struct EvalOutcome {
    pub run: Run,
    /// The run step whose model was evaluated.
    pub step: usize,
    /// The stored evaluation's name (data, question count and options).
    pub name: String,
    pub result: StoredEval,
    /// Questions sampled by this call (0 when the stored result was read back).
    pub sampled: usize,
    pub seconds: f64,
}

/// The model a run has to evaluate, and the step it stands for: the final model of a done
/// run, else its latest checkpoint.
pub fn run_model(store: &Store, run: &Run) -> Result<(PathBuf, usize), RunError> {
    let root = store.root();
    let final_dir = super::layout::final_model(&root, &run.name);
    if run.status == Status::Done && final_dir.join("config.json").is_file() {
        return Ok((final_dir, run.step));
    }
    if run.kind == Kind::Eval {
        if let Some(p) = super::config::RunConfig::of(run).model_path {
            return Ok((PathBuf::from(p), 0));
        }
    }
    match store.checkpoints(run.id)?.into_iter().next() {
        Some(c) => Ok((root.join(&c.path), c.step)),
        None => Err(RunError::NoModel(run.name.clone())),
    }
}

/// Evaluates the request's model, or reads its stored result back.
pub fn evaluate(
    store: &mut Store,
    req: &EvalRequest,
    obs: &mut dyn EvalObserver,
) -> Result<EvalOutcome, RunError> {
    req.config.validate().map_err(RunError::BadEval)?;
    let started = Instant::now();
    let run = match &req.target {
        EvalTarget::Run(q) => store.find_run(q)?,
        EvalTarget::Model(dir) => model_run(store, dir, req.experiment.as_deref())?,
    };
    let (model_dir, step) = match &req.target {
        EvalTarget::Model(dir) => (dir.clone(), 0),
        EvalTarget::Run(_) => run_model(store, &run)?,
    };
    let samples = req.data.samples(req.questions)?;
    if samples.is_empty() {
        return Err(RunError::BadEval(format!(
            "{}: no questions to evaluate",
            req.data.label()
        )));
    }
    let name = req
        .config
        .name(&req.data.identity()?, &req.prompt, samples.len());
    let label = req.data.label();
    let outcome = |result: StoredEval, sampled| EvalOutcome {
        run: run.clone(),
        step,
        name: name.clone(),
        result,
        sampled,
        seconds: started.elapsed().as_secs_f64(),
    };
    if let Some(m) = store.evaluation(run.id, step, &name)? {
        if let Some(stored) = StoredEval::from_json(&m) {
            return Ok(outcome(stored, 0));
        }
    }

    let slot = Slot {
        run: &run,
        step,
        name: &name,
        model_dir: &model_dir,
    };
    let (mut done, sampled) = sample_missing(store, req, &slot, &samples, obs)?;
    done.sort_by_key(|q| q.index);
    let summary = EvalSummary::from_questions(&done)
        .map_err(|e| RunError::BadEval(format!("{}: {e}", run.name)))?;
    let result = StoredEval {
        data: label,
        config: req.config.clone(),
        summary,
    };
    let json = serde_json::to_value(&result).map_err(|e| RunError::BadEval(e.to_string()))?;
    store.add_evaluation(run.id, step, &name, &json)?;
    Ok(outcome(result, sampled))
}

/// Where an evaluation's results are stored, and the model it samples.
struct Slot<'a> {
    run: &'a Run,
    step: usize,
    name: &'a str,
    model_dir: &'a Path,
}

/// Samples the chunks of questions not stored yet, committing each as it finishes; returns
/// every question's result and how many this call sampled.
fn sample_missing(
    store: &mut Store,
    req: &EvalRequest,
    slot: &Slot,
    samples: &[crate::data::Sample],
    obs: &mut dyn EvalObserver,
) -> Result<(Vec<QuestionResult>, usize), RunError> {
    let (run, step, name) = (slot.run, slot.step, slot.name);
    let mut done = store.eval_questions(run.id, step, name)?;
    let have: std::collections::BTreeSet<usize> = done.iter().map(|q| q.index).collect();
    let total = samples.len();
    obs.on_progress(have.len().min(total), total);
    let mut policy: Option<Policy> = None;
    let mut sampled = 0;
    for (c, chunk) in samples.chunks(CHUNK).enumerate() {
        let first = c * CHUNK;
        if (first..first + chunk.len()).all(|i| have.contains(&i)) {
            continue;
        }
        if obs.should_stop() {
            return Err(RunError::Stopped(format!(
                "evaluation of {} stopped after {} of {total} questions; the same command resumes it",
                run.name,
                done.len()
            )));
        }
        let p = match &mut policy {
            Some(p) => p,
            None => policy.insert(Policy::load(
                slot.model_dir,
                &req.device,
                default_dtype(&req.device),
            )?),
        };
        let results = evaluate_chunk(p, chunk, first, &req.prompt, &req.config)?;
        store.add_eval_questions(run.id, step, name, &results)?;
        sampled += results.len();
        done.retain(|q| q.index < first || q.index >= first + chunk.len());
        done.extend(results);
        obs.on_progress(done.len().min(total), total);
    }
    Ok((done, sampled))
}

/// The `eval` run that holds evaluations of the model directory `dir` (created on first
/// use; its identity is the model's content hash, so a copied model finds it).
fn model_run(store: &mut Store, dir: &Path, experiment: Option<&str>) -> Result<Run, RunError> {
    let doc = model_run_doc(dir)?;
    let id = identity::identity_of(&doc);
    if let Some(run) = store.run_by_identity(&id)? {
        return Ok(run);
    }
    let stem: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut config = doc;
    config["model_path"] = dir.display().to_string().into();
    let (run, _) = store.find_or_create_run(&NewRun {
        identity: id.clone(),
        name: format!("eval-{}-{}", stem.trim_matches('-'), &id[..8]),
        experiment: experiment.map(str::to_string),
        kind: Kind::Eval,
        mode: None,
        config,
        total_steps: 0,
    })?;
    store.mark_done(run.id)?;
    Ok(store.run_by_id(run.id)?)
}

/// What the `eval` run of a bare model directory is keyed by: its model.
fn model_run_doc(dir: &Path) -> Result<serde_json::Value, RunError> {
    Ok(serde_json::json!({
        "kind": Kind::Eval.as_str(),
        "model": identity::model_identity(dir)?,
    }))
}

/// The identity of the `eval` run that keeps a model directory's evaluations.
pub fn model_run_identity(dir: &Path) -> Result<String, RunError> {
    Ok(identity::identity_of(&model_run_doc(dir)?))
}
