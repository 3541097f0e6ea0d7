//! The comparison table: one row per (training-set size, mode, reward specification), each
//! number the mean ± std over the seeds that ran it. Runs trained on different rewards never
//! share a row: that would compare objectives, not modes.

use crate::train::keys;
use std::collections::BTreeMap;

use super::analysis::window;
use super::data::{mode_label, mode_rank, RunData};
use super::questions::{summary_where, Set};
use crate::eval::StoredEval;
use crate::train::observe::mean_std;

/// A mean over seeds, with its sample std and count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    pub mean: f64,
    pub std: f64,
    pub count: usize,
}

impl Cell {
    pub fn of(values: &[f64]) -> Option<Self> {
        let (mean, std) = mean_std(values);
        (!values.is_empty()).then_some(Self {
            mean,
            std,
            count: values.len(),
        })
    }

    /// `0.412 ± 0.031`, or `0.412` for one seed; `scale` 100 shows percentages.
    pub fn show(c: Option<Self>, scale: f64, digits: usize) -> String {
        match c {
            None => "-".into(),
            Some(c) if c.count > 1 => {
                format!("{:.digits$} ± {:.digits$}", c.mean * scale, c.std * scale)
            }
            Some(c) => format!("{:.digits$}", c.mean * scale),
        }
    }
}

/// The seeds of one (size, mode, variant, rewards) cell.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    pub mode: String,
    pub size: Option<usize>,
    pub rewards: Option<String>,
    /// See [`RunData::variant`].
    pub variant: Option<String>,
    pub runs: Vec<&'a RunData>,
}

impl Group<'_> {
    /// `2025` or `2025, 2026`.
    pub fn seeds(&self) -> String {
        self.runs
            .iter()
            .map(|d| d.seed.map_or("-".into(), |s| s.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The RL runs grouped by (size, mode, variant, rewards), in table order.
pub fn groups<'a>(runs: &[&'a RunData]) -> Vec<Group<'a>> {
    type Key = (Option<usize>, usize, String, Option<String>, Option<String>);
    let mut by: BTreeMap<Key, Vec<&RunData>> = BTreeMap::new();
    for d in runs {
        let key = (
            d.size,
            mode_rank(&d.mode),
            d.mode.clone(),
            d.variant.clone(),
            d.rewards.clone(),
        );
        by.entry(key).or_default().push(d);
    }
    by.into_iter()
        .map(|((size, _, mode, variant, rewards), runs)| Group {
            mode,
            size,
            rewards,
            variant,
            runs,
        })
        .collect()
}

/// One row of the comparison table.
#[derive(Debug, Clone)]
pub struct Row {
    pub mode: String,
    pub variant: Option<String>,
    pub size: Option<usize>,
    pub rewards: Option<String>,
    pub runs: Vec<String>,
    /// Mean reward over each run's last window of steps.
    pub final_reward: Option<Cell>,
    /// Per seed, the steps whose update was applied and the steps that recorded whether.
    pub updates: Vec<(usize, usize)>,
    /// Samples that entered the loss, over the run.
    pub kept: Option<Cell>,
    /// Accuracy (= pass@1) and pass@n on the headline questions...
    pub accuracy: Option<Cell>,
    pub pass_max: Option<Cell>,
    /// ...and on the guessable ones.
    pub guess_accuracy: Option<Cell>,
    pub guess_pass_max: Option<Cell>,
    pub seconds: Option<Cell>,
}

/// The table over the RL runs, with the evaluation `eval` (its name) for the accuracy and
/// pass@k columns, computed on the `headline` questions and on the guessable ones.
pub fn comparison(runs: &[&RunData], eval: Option<&str>, headline: Set) -> Vec<Row> {
    groups(runs)
        .into_iter()
        .map(|g| {
            let on = |set: Set, f: &dyn Fn(&crate::eval::EvalSummary) -> f64| {
                let values: Vec<f64> = g
                    .runs
                    .iter()
                    .filter_map(|d| d.questions(eval?))
                    .filter_map(|qs| summary_where(qs, |q| set.contains(q)))
                    .map(|s| f(&s))
                    .collect();
                Cell::of(&values)
            };
            let last =
                |s: &crate::eval::EvalSummary| s.pass_at_k.last().copied().unwrap_or(f64::NAN);
            let updates: Vec<(usize, usize)> = g.runs.iter().filter_map(|d| d.updates()).collect();
            Row {
                mode: g.mode.clone(),
                variant: g.variant.clone(),
                size: g.size,
                rewards: g.rewards.clone(),
                runs: g.runs.iter().map(|d| d.run.name.clone()).collect(),
                final_reward: Cell::of(
                    &g.runs
                        .iter()
                        .filter_map(|d| final_reward(d))
                        .collect::<Vec<_>>(),
                ),
                updates,
                kept: Cell::of(
                    &g.runs
                        .iter()
                        .filter_map(|d| d.kept_total())
                        .collect::<Vec<_>>(),
                ),
                accuracy: on(headline, &|s| s.accuracy),
                pass_max: on(headline, &last),
                guess_accuracy: on(Set::Guessable, &|s| s.accuracy),
                guess_pass_max: on(Set::Guessable, &last),
                seconds: Cell::of(&g.runs.iter().map(|d| d.seconds()).collect::<Vec<_>>()),
            }
        })
        .collect()
}

/// The mean reward over the run's last window of steps.
fn final_reward(d: &RunData) -> Option<f64> {
    let r = d.values(keys::REWARD);
    let w = window(r.len()).min(r.len());
    (w > 0).then(|| mean_std(&r[r.len() - w..]).0)
}

/// The evaluation most of `runs` have (ties: the one with more samples per question), which
/// the table and the pass@k figure compare them on.
pub fn primary_eval(runs: &[&RunData]) -> Option<(String, StoredEval)> {
    let mut count: BTreeMap<&str, (usize, &StoredEval)> = BTreeMap::new();
    for d in runs {
        let names: std::collections::BTreeSet<&str> =
            d.evals.iter().map(|(_, n, _)| n.as_str()).collect();
        for name in names {
            if let Some(e) = d.eval(name) {
                count.entry(name).or_insert((0, e)).0 += 1;
            }
        }
    }
    count
        .into_iter()
        .max_by_key(|(_, (c, e))| (*c, e.summary.n))
        .map(|(name, (_, e))| (name.to_string(), e.clone()))
}

pub fn row_label(r: &Row) -> (String, String) {
    (
        mode_label(&r.mode, r.variant.as_deref()),
        r.size.map_or("-".into(), |s| s.to_string()),
    )
}
