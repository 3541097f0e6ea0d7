//! A script's plan: every run it asks for (and every bare model it evaluates), in the order
//! it asks, each with a key that is known before its input model exists, the runs it waits
//! for, its stage and its status. `exec --plan` prints it; `slurm submit` freezes it into a
//! file that the array tasks read, so later edits cannot change what a queued task does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SweepError;

/// What a planned unit of work is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlannedKind {
    WarmStart,
    Train,
    /// An evaluation of a bare model directory (a run's evaluations belong to its own task).
    Eval,
}

impl PlannedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlannedKind::WarmStart => "warm-start",
            PlannedKind::Train => "train",
            PlannedKind::Eval => "eval",
        }
    }
}

/// One unit of work of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// The plan key: the run's identity with its input model named by the key of the run
    /// that makes it (so it is known before that run has trained). A run from a bare model
    /// directory has its identity as its key.
    pub key: String,
    /// The run's name; `provisional` while its input model does not exist yet (the real
    /// name carries the identity, resolved when the run starts).
    pub name: String,
    pub provisional: bool,
    pub kind: PlannedKind,
    /// The training mode (`grpo`, `nsr`, ...); `warm-start` or `eval` otherwise.
    pub mode: String,
    /// Training samples (questions for an evaluation).
    pub size: usize,
    pub seed: Option<u64>,
    /// 0 for work that waits for nothing, else one more than the latest stage it waits for.
    pub stage: usize,
    /// Keys of the planned runs this one waits for: the run that makes its input model, and
    /// every run whose state (status, metrics, checklist, evaluation) the script read before
    /// asking for it.
    pub depends_on: Vec<String>,
    /// Its identity, when its input model exists.
    pub identity: Option<String>,
    /// `done`, `partial` (with `step`), `new`, or `waiting` (its input model is not made).
    pub status: String,
    pub step: usize,
    pub total_steps: usize,
}

impl PlannedRun {
    /// Whether a task still has work to do for it.
    pub fn unfinished(&self) -> bool {
        self.status != "done"
    }
}

/// Orders nothing (the script's order is kept) but fills each run's `stage`.
pub fn assign_stages(runs: &mut [PlannedRun]) {
    let mut stage_of: BTreeMap<String, usize> = BTreeMap::new();
    for r in runs.iter_mut() {
        r.stage = r
            .depends_on
            .iter()
            .filter_map(|k| stage_of.get(k))
            .map(|s| s + 1)
            .max()
            .unwrap_or(0);
        stage_of.insert(r.key.clone(), r.stage);
    }
}

/// A frozen plan: what `slurm submit` hands its tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    /// The script as submitted, and the copy the tasks run (beside this file).
    pub script: PathBuf,
    pub frozen_script: PathBuf,
    /// The copy of the project's `scripts/` the frozen script imports from.
    pub frozen_modules: PathBuf,
    pub sets: BTreeMap<String, String>,
    /// The main store (runs done before the submission are read from it).
    pub db: PathBuf,
    pub runs: Vec<PlannedRun>,
}

impl PlanFile {
    pub fn load(path: &Path) -> Result<Self, SweepError> {
        let text = std::fs::read_to_string(path).map_err(|e| SweepError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| SweepError::BadPlan {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), SweepError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| SweepError::BadPlan {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        crate::fsx::write(path, text.as_bytes()).map_err(|e| SweepError::io(path, e.source))
    }

    /// Task `task` of the plan.
    pub fn task(&self, path: &Path, task: usize) -> Result<&PlannedRun, SweepError> {
        self.runs.get(task).ok_or_else(|| SweepError::BadPlan {
            path: path.to_path_buf(),
            msg: format!("it has {} runs; there is no task {task}", self.runs.len()),
        })
    }

    /// The keys of every run `key` waits for, directly or not.
    pub fn upstream(&self, key: &str) -> Vec<&PlannedRun> {
        let by_key: BTreeMap<&str, &PlannedRun> =
            self.runs.iter().map(|r| (r.key.as_str(), r)).collect();
        let mut seen: Vec<&PlannedRun> = Vec::new();
        let mut todo: Vec<&str> = by_key
            .get(key)
            .map(|r| r.depends_on.iter().map(String::as_str).collect())
            .unwrap_or_default();
        while let Some(k) = todo.pop() {
            if let Some(r) = by_key.get(k) {
                if !seen.iter().any(|s| s.key == r.key) {
                    seen.push(r);
                    todo.extend(r.depends_on.iter().map(String::as_str));
                }
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(key: &str, deps: &[&str]) -> PlannedRun {
        PlannedRun {
            key: key.into(),
            name: key.into(),
            provisional: false,
            kind: PlannedKind::Train,
            mode: "grpo".into(),
            size: 100,
            seed: Some(1),
            stage: 99,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            identity: None,
            status: "new".into(),
            step: 0,
            total_steps: 10,
        }
    }

    #[test]
    fn stages_follow_the_longest_chain_of_dependencies() {
        let mut runs = vec![
            run("base", &[]),
            run("a", &["base"]),
            run("b", &["base"]),
            run("c", &["a", "b"]),
            run("lone", &[]),
        ];
        assign_stages(&mut runs);
        let stages: Vec<usize> = runs.iter().map(|r| r.stage).collect();
        assert_eq!(stages, [0, 1, 1, 2, 0]);
    }

    #[test]
    fn upstream_is_transitive() {
        let plan = PlanFile {
            script: "s.rhai".into(),
            frozen_script: "f.rhai".into(),
            frozen_modules: "m".into(),
            sets: BTreeMap::new(),
            db: "runs/chartrl.db".into(),
            runs: vec![run("base", &[]), run("a", &["base"]), run("c", &["a"])],
        };
        let mut keys: Vec<&str> = plan.upstream("c").iter().map(|r| r.key.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["a", "base"]);
        assert!(plan.upstream("base").is_empty());
    }
}
