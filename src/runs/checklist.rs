//! The POC checklist: did a run complete, keep its loss finite, keep exactly the samples its
//! mode says, and write checkpoints? It reads only what the run recorded, so a trainer whose
//! filter broke fails it: each step records how many of the samples that entered its loss
//! were correct and how many incorrect (`kept_correct`, `kept_incorrect`), counted from the
//! same flags the loss used.

use crate::train::{keys, Mode};
use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::{Run, Status, Store, StoreError};

/// The checklist of one run; `problems` says what failed, step by step where it applies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checklist {
    pub completed: bool,
    pub loss_finite: bool,
    pub filtering: bool,
    pub checkpoints: bool,
    pub passed: bool,
    pub problems: Vec<String>,
}

impl std::fmt::Display for Checklist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.passed {
            return write!(f, "passed");
        }
        write!(f, "failed: {}", self.problems.join("; "))
    }
}

impl Checklist {
    /// The checklist of a run that was never created (a dry pass, or a run whose input
    /// model failed): everything fails.
    pub fn not_run() -> Self {
        Self {
            completed: false,
            loss_finite: false,
            filtering: false,
            checkpoints: false,
            passed: false,
            problems: vec!["the run has not run".into()],
        }
    }

    /// What a plan assumes of a run it has not finished: that it will pass.
    pub fn assumed_passed() -> Self {
        Self {
            completed: true,
            loss_finite: true,
            filtering: true,
            checkpoints: true,
            passed: true,
            problems: Vec::new(),
        }
    }
}

/// The checklist of `run` from what the store holds.
pub fn checklist(store: &Store, run: &Run) -> Result<Checklist, StoreError> {
    let rows = store.metrics(run.id)?;
    let mut problems = Vec::new();
    let completed = run.status == Status::Done;
    if !completed {
        problems.push(format!(
            "status {} at step {}/{}",
            run.status.as_str(),
            run.step,
            run.total_steps
        ));
    }
    let bad_loss = rows
        .iter()
        .find(|m| m.key == keys::LOSS && !m.value.is_some_and(f64::is_finite));
    let loss_finite = !rows.is_empty() && bad_loss.is_none();
    match bad_loss {
        Some(m) => problems.push(format!("the loss is not finite at step {}", m.step)),
        None if rows.is_empty() => problems.push("no metrics recorded".into()),
        None => {}
    }
    let mut by_step: BTreeMap<usize, BTreeMap<&str, f64>> = BTreeMap::new();
    for m in &rows {
        if let Some(v) = m.value {
            by_step.entry(m.step).or_default().insert(m.key.as_str(), v);
        }
    }
    let mode = run.mode.as_deref().unwrap_or("");
    let filter_problem = by_step
        .iter()
        .find_map(|(step, v)| filter_fault(mode, v).map(|why| format!("step {step}: {why}")));
    let filtering = filter_problem.is_none();
    problems.extend(filter_problem);
    let checkpoints = !store.checkpoints(run.id)?.is_empty();
    if !checkpoints {
        problems.push("no checkpoint written".into());
    }
    Ok(Checklist {
        completed,
        loss_finite,
        filtering,
        checkpoints,
        passed: completed && loss_finite && filtering && checkpoints,
        problems,
    })
}

/// What is wrong with one step's kept samples for `mode`, if anything.
fn filter_fault(mode: &str, v: &BTreeMap<&str, f64>) -> Option<String> {
    let get = |k: &str| v.get(k).copied();
    let (Some(kept), Some(kc), Some(ki), Some(c), Some(i)) = (
        get(keys::KEPT),
        get(keys::KEPT_CORRECT),
        get(keys::KEPT_INCORRECT),
        get(keys::CORRECT),
        get(keys::INCORRECT),
    ) else {
        return Some("what the step kept was not recorded (kept, kept_correct, kept_incorrect, correct, incorrect)".into());
    };
    if kc + ki != kept {
        return Some(format!(
            "kept {kept} samples, but {kc} correct + {ki} incorrect"
        ));
    }
    let (want_c, want_i) = match Mode::parse(mode)? {
        Mode::Psr => (c, 0.0),
        Mode::Nsr => (0.0, i),
        Mode::Grpo | Mode::WReinforce => (c, i),
    };
    (kc != want_c || ki != want_i).then(|| {
        format!(
            "{mode} kept {kc} correct and {ki} incorrect of {c} correct and {i} incorrect samples; it should keep {want_c} and {want_i}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kept: f64, kc: f64, ki: f64, c: f64, i: f64) -> BTreeMap<&'static str, f64> {
        [
            ("kept", kept),
            ("kept_correct", kc),
            ("kept_incorrect", ki),
            ("correct", c),
            ("incorrect", i),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn each_mode_must_keep_exactly_its_samples() {
        assert_eq!(filter_fault("psr", &step(3.0, 3.0, 0.0, 3.0, 5.0)), None);
        assert!(filter_fault("psr", &step(4.0, 3.0, 1.0, 3.0, 5.0)).is_some());
        assert!(filter_fault("psr", &step(2.0, 2.0, 0.0, 3.0, 5.0)).is_some());
        assert_eq!(filter_fault("nsr", &step(5.0, 0.0, 5.0, 3.0, 5.0)), None);
        assert!(filter_fault("nsr", &step(8.0, 3.0, 5.0, 3.0, 5.0)).is_some());
        assert_eq!(filter_fault("grpo", &step(8.0, 3.0, 5.0, 3.0, 5.0)), None);
        assert!(filter_fault("w-reinforce", &step(5.0, 0.0, 5.0, 3.0, 5.0)).is_some());
        assert!(filter_fault("psr", &step(3.0, 1.0, 1.0, 3.0, 5.0)).is_some());
        let mut missing = step(3.0, 3.0, 0.0, 3.0, 5.0);
        missing.remove("kept_correct");
        assert!(filter_fault("psr", &missing)
            .unwrap()
            .contains("not recorded"));
    }
}
