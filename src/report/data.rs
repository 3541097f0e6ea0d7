//! What a report reads of each run: the metric series it plots and checks, its stored
//! evaluations, its kept completions, and what it is (mode, data size, seed) for grouping.

use crate::train::keys;
use std::collections::BTreeMap;

use crate::eval::{QuestionResult, StoredEval};
use crate::reward::RewardSpec;
use crate::runs::config::RunConfig;
use crate::store::{Kind, Run, SampleRow, Store, StoreError};

/// The metrics a report uses; a run lacking one simply has no such curve.
pub const SERIES: [&str; 13] = [
    keys::LOSS,
    keys::LEARNING_RATE,
    keys::GRAD_NORM,
    keys::REWARD,
    keys::POSITIVE_RATIO,
    keys::NEGATIVE_RATIO,
    keys::CORRECT,
    keys::INCORRECT,
    keys::CLIPPED_RATIO,
    keys::STEP_TIME,
    keys::SKIPPED,
    keys::KEPT,
    keys::INFORMATIVE,
];

/// A run with the numbers a report needs.
#[derive(Debug, Clone)]
pub struct RunData {
    pub run: Run,
    /// The training mode (`grpo`, ...) or `warm-start` / `eval`.
    pub mode: String,
    /// Training samples: `subset_size` of an RL run, `samples` of a warm start.
    pub size: Option<usize>,
    pub seed: Option<u64>,
    /// Legend and table label, unique within the report.
    pub label: String,
    pub series: BTreeMap<&'static str, Vec<(usize, f64)>>,
    /// Complete evaluations, by step then name.
    pub evals: Vec<(usize, String, StoredEval)>,
    /// Each evaluation's per-question results at its latest step, by name.
    pub questions: BTreeMap<String, Vec<QuestionResult>>,
    /// What the run trained on: `accuracy`, or `accuracy + 0.5 format` (RL runs).
    pub rewards: Option<String>,
    /// The trainer options (other than mode, size, seed and rewards) in which this RL run
    /// differs from others of the report, e.g. `learning_rate 5e-5`: runs that differ in
    /// more than the seed are never pooled as seeds of one mode. `None` when all agree.
    pub variant: Option<String>,
    /// Its stored configuration.
    pub config: RunConfig,
    /// Metrics that were NaN or infinite at some step (stored empty), with the first step.
    pub non_finite: BTreeMap<String, usize>,
    /// The step at which training diverged and what the run said, when it did: a run stops
    /// at a non-finite loss, gradient norm or weight before recording that step.
    pub diverged: Option<(usize, String)>,
    /// Kept completions of the last window of steps (see [`super::window`]).
    pub samples: Vec<SampleRow>,
}

impl RunData {
    pub fn load(store: &Store, run: &Run) -> Result<Self, StoreError> {
        let mut series = BTreeMap::new();
        for key in SERIES {
            let s = store.series(run.id, key)?;
            if !s.is_empty() {
                series.insert(key, s);
            }
        }
        let evals: Vec<(usize, String, StoredEval)> = store
            .evaluations(run.id)?
            .into_iter()
            .filter_map(|e| StoredEval::from_json(&e.metrics).map(|s| (e.step, e.name, s)))
            .collect();
        let mut questions = BTreeMap::new();
        for (step, name, _) in &evals {
            questions.insert(name.clone(), store.eval_questions(run.id, *step, name)?);
        }
        let config = RunConfig::of(run);
        let mode = run
            .mode
            .clone()
            .unwrap_or_else(|| run.kind.as_str().to_string());
        Ok(Self {
            mode,
            size: config.size(),
            seed: config.seed(),
            label: run.name.clone(),
            config: config.clone(),
            series,
            evals,
            questions,
            rewards: config.rewards().as_deref().and_then(reward_description),
            variant: None,
            non_finite: store.non_finite_steps(run.id)?.into_iter().collect(),
            diverged: store
                .events(run.id)?
                .into_iter()
                .find(|e| e.kind == "non_finite")
                .map(|e| (e.step, e.message)),
            samples: store.samples(run.id, run.step.saturating_sub(super::window(run.step)))?,
            run: run.clone(),
        })
    }

    pub fn is_rl(&self) -> bool {
        self.run.kind == Kind::Train
    }

    pub fn values(&self, key: &str) -> Vec<f64> {
        self.series
            .get(key)
            .map(|s| s.iter().map(|p| p.1).collect())
            .unwrap_or_default()
    }

    /// Seconds spent in training steps (restarts and waiting excluded).
    pub fn seconds(&self) -> f64 {
        self.values(keys::STEP_TIME).iter().fold(0.0, |a, b| a + b)
    }

    /// Steps whose update was applied (not skipped) and steps that recorded whether, when the
    /// run recorded it.
    pub fn updates(&self) -> Option<(usize, usize)> {
        let s = self.series.get(keys::SKIPPED)?;
        Some((s.iter().filter(|(_, v)| *v == 0.0).count(), s.len()))
    }

    /// Samples that entered the loss, over all steps.
    pub fn kept_total(&self) -> Option<f64> {
        self.series
            .get(keys::KEPT)
            .map(|s| s.iter().map(|(_, v)| v).sum())
    }

    /// The per-question results of the evaluation `name`.
    pub fn questions(&self, name: &str) -> Option<&[QuestionResult]> {
        self.questions.get(name).map(Vec::as_slice)
    }

    /// The evaluation called `name` at the run's latest evaluated step.
    pub fn eval(&self, name: &str) -> Option<&StoredEval> {
        self.evals
            .iter()
            .rev()
            .find(|(_, n, _)| n == name)
            .map(|(_, _, e)| e)
    }
}

/// A run's rewards as people write them: `accuracy`, `accuracy + 0.5 format`,
/// `accuracy + overlong{"cache":16}`; `None` when the run has none (a warm start).
pub fn reward_description(specs: &[RewardSpec]) -> Option<String> {
    let terms: Vec<String> = specs
        .iter()
        .map(|s| {
            let weight = if s.weight == 1.0 {
                String::new()
            } else {
                format!("{} ", s.weight)
            };
            let params = if s.params.is_null() {
                String::new()
            } else {
                s.params.to_string()
            };
            format!("{weight}{}{params}", s.name)
        })
        .collect();
    (!terms.is_empty()).then(|| terms.join(" + "))
}

/// Trainer options that tell runs apart without being what a report compares them by.
const NOT_VARIANTS: [&str; 6] = [
    "mode",
    "subset_size",
    "seed",
    "rewards",
    "save_steps",
    "save_total_limit",
];

/// Sets each RL run's [`RunData::variant`]: the trainer options that every RL run of the
/// report records and that do not have the same value in all of them, and the start model
/// and training data when those differ (a pick and the first N of the same size are not
/// seeds of one mode).
pub fn mark_variants(runs: &mut [RunData]) {
    let rl: Vec<BTreeMap<String, Setting>> =
        runs.iter().filter(|d| d.is_rl()).map(settings).collect();
    let Some(first) = rl.first() else { return };
    let varying: Vec<&String> = first
        .keys()
        .filter(|k| rl.iter().all(|o| o.contains_key(*k)))
        .filter(|k| rl.iter().any(|o| o[*k].value != first[*k].value))
        .collect();
    if varying.is_empty() {
        return;
    }
    let shown: BTreeMap<&String, BTreeMap<&str, String>> = varying
        .iter()
        .map(|k| (*k, distinct_shows(rl.iter().map(|o| &o[*k]))))
        .collect();
    for (d, o) in runs.iter_mut().filter(|d| d.is_rl()).zip(&rl) {
        let parts: Vec<String> = varying
            .iter()
            .filter_map(|k| Some(format!("{k} {}", shown[k][o.get(*k)?.value.as_str()])))
            .collect();
        d.variant = Some(parts.join(", "));
    }
}

/// One thing a run was made with: what tells it apart, and how a label shows it.
#[derive(Debug, Clone)]
struct Setting {
    value: String,
    show: String,
}

/// A run's trainer options (those a report does not group by), its start model and its data.
fn settings(d: &RunData) -> BTreeMap<String, Setting> {
    let mut out: BTreeMap<String, Setting> = d
        .config
        .options
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !NOT_VARIANTS.contains(&k.as_str()))
        .map(|(k, v)| {
            let value = option_value(v);
            (
                k.clone(),
                Setting {
                    show: value.clone(),
                    value,
                },
            )
        })
        .collect();
    let model_name = d
        .config
        .model_path
        .as_deref()
        .and_then(|p| std::path::Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    let inputs = [
        ("model", &d.config.model, model_name),
        ("data", &d.config.data, d.config.data_label.clone()),
    ];
    for (key, identity, label) in inputs {
        if let Some(value) = identity.clone() {
            let show = label.unwrap_or_else(|| short_identity(&value));
            out.insert(key.into(), Setting { value, show });
        }
    }
    out
}

/// How each distinct value shows: its own label, with a short hash of the value where two
/// values would otherwise show alike (two picks of the same size).
fn distinct_shows<'a>(settings: impl Iterator<Item = &'a Setting>) -> BTreeMap<&'a str, String> {
    let mut by_value: BTreeMap<&str, &str> = BTreeMap::new();
    for s in settings {
        by_value.insert(&s.value, &s.show);
    }
    let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
    for show in by_value.values() {
        *uses.entry(show).or_default() += 1;
    }
    by_value
        .into_iter()
        .map(|(value, show)| {
            let shown = if uses[show] > 1 {
                format!("{show} #{}", short_identity(value))
            } else {
                show.to_string()
            };
            (value, shown)
        })
        .collect()
}

/// The first 8 hex digits of a hash of `value`.
fn short_identity(value: &str) -> String {
    crate::runs::identity::identity_of(&serde_json::json!(value))[..8].to_string()
}

/// An option's value as a label shows it: `5e-5` rather than `0.00005`, strings unquoted.
fn option_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f != 0.0 && f.abs() < 1e-3 => format!("{f:e}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// `GRPO`, or `GRPO (learning_rate 5e-5)` for a run with a variant.
pub fn mode_label(mode: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("{} ({v})", display_mode(mode)),
        None => display_mode(mode),
    }
}

/// Gives each run a short label: `NSR n=100`, with its variant where it has one, the seed when
/// runs share mode, variant and size, and the run name when even that is ambiguous.
pub fn label_runs(runs: &mut [RunData]) {
    let key = |d: &RunData| (d.mode.clone(), d.variant.clone(), d.size);
    let mut groups: BTreeMap<(String, Option<String>, Option<usize>), usize> = BTreeMap::new();
    for d in runs.iter() {
        *groups.entry(key(d)).or_default() += 1;
    }
    for d in runs.iter_mut() {
        let mut label = mode_label(&d.mode, d.variant.as_deref());
        if d.mode == "eval" {
            // An evaluated model directory (a shipped base) goes by its directory's name.
            let dir = d.config.model_path.as_deref().map(std::path::Path::new);
            if let Some(name) = dir.and_then(|p| p.file_name()) {
                label = name.to_string_lossy().into_owned();
            }
        }
        if let Some(n) = d.size {
            label.push_str(&format!(" n={n}"));
        }
        if groups[&key(d)] > 1 {
            if let Some(s) = d.seed {
                label.push_str(&format!(" seed {s}"));
            }
        }
        d.label = label;
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for d in runs.iter() {
        *seen.entry(d.label.clone()).or_default() += 1;
    }
    for d in runs.iter_mut() {
        if seen[&d.label] > 1 {
            d.label = format!("{} ({})", d.label, d.run.name);
        }
    }
}

/// `grpo` → `GRPO`, `w-reinforce` → `W-REINFORCE`, `warm-start` → `warm start`.
pub fn display_mode(mode: &str) -> String {
    match mode {
        "warm-start" => "warm start".into(),
        "eval" => "model".into(),
        m => m.to_uppercase(),
    }
}

/// The four modes in the paper's order, then anything else.
pub fn mode_rank(mode: &str) -> usize {
    crate::train::Mode::ALL
        .iter()
        .position(|m| m.name() == mode)
        .unwrap_or(crate::train::Mode::ALL.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(value: &str, show: &str) -> Setting {
        Setting {
            value: value.into(),
            show: show.into(),
        }
    }

    #[test]
    fn values_that_would_show_alike_get_a_short_hash() {
        let all = [
            setting("subset:a", "train, 2 picked"),
            setting("subset:b", "train, 2 picked"),
            setting("synthetic", "train"),
            setting("subset:a", "train, 2 picked"),
        ];
        let shows = distinct_shows(all.iter());
        assert_eq!(shows.len(), 3);
        assert_eq!(shows["synthetic"], "train");
        let (a, b) = (&shows["subset:a"], &shows["subset:b"]);
        assert_ne!(a, b);
        assert_eq!(
            a,
            &format!("train, 2 picked #{}", short_identity("subset:a"))
        );
        assert_eq!(short_identity("subset:a").len(), 8);
    }
}
