//! The comparison table: one row per (mode, training-set size), each number the mean ± std
//! over the seeds that ran it.

use std::collections::BTreeMap;

use super::analysis::window;
use super::data::{display_mode, mode_rank, RunData};
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

#[derive(Debug, Clone)]
pub struct Row {
    pub mode: String,
    pub size: Option<usize>,
    pub runs: Vec<String>,
    /// Mean reward over each run's last window of steps.
    pub final_reward: Option<Cell>,
    pub accuracy: Option<Cell>,
    pub pass1: Option<Cell>,
    pub pass_max: Option<Cell>,
    pub seconds: Option<Cell>,
}

/// The table over `runs` (RL runs), with the evaluation `eval` (its name) for the accuracy
/// and pass@k columns.
pub fn comparison(runs: &[&RunData], eval: Option<&str>) -> Vec<Row> {
    let mut groups: BTreeMap<(usize, String, usize), Vec<&RunData>> = BTreeMap::new();
    for d in runs {
        let key = (mode_rank(&d.mode), d.mode.clone(), d.size.unwrap_or(0));
        groups.entry(key).or_default().push(d);
    }
    let mut rows: Vec<Row> = groups
        .into_values()
        .map(|ds| {
            let evals: Vec<&StoredEval> = ds.iter().filter_map(|d| d.eval(eval?)).collect();
            let pick = |f: &dyn Fn(&StoredEval) -> Option<f64>| {
                Cell::of(&evals.iter().filter_map(|e| f(e)).collect::<Vec<_>>())
            };
            let rewards: Vec<f64> = ds
                .iter()
                .filter_map(|d| {
                    let r = d.values("reward");
                    let w = window(r.len()).min(r.len());
                    (w > 0).then(|| mean_std(&r[r.len() - w..]).0)
                })
                .collect();
            Row {
                mode: ds[0].mode.clone(),
                size: ds[0].size,
                runs: ds.iter().map(|d| d.run.name.clone()).collect(),
                final_reward: Cell::of(&rewards),
                accuracy: pick(&|e| Some(e.summary.accuracy)),
                pass1: pick(&|e| e.summary.pass_at_k.first().copied()),
                pass_max: pick(&|e| e.summary.pass_at_k.last().copied()),
                seconds: Cell::of(&ds.iter().map(|d| d.seconds()).collect::<Vec<_>>()),
            }
        })
        .collect();
    rows.sort_by_key(|r| (r.size, mode_rank(&r.mode)));
    rows
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
        display_mode(&r.mode),
        r.size.map_or("-".into(), |s| s.to_string()),
    )
}
