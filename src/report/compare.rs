//! What the sweep is for, as document blocks: each model's results per question type next to
//! the type's chance level, and each mode's paired difference against the model it started
//! from and against Mode::Grpo.name(), with 95% bootstrap intervals. An interval that contains 0 says
//! "unresolved": the report never ranks modes on it.

use super::data::{display_mode, mode_label, RunData};
use super::doc::Block;
use super::intervals::{expected_by_chance, paired_difference, Interval, LEVEL, RESAMPLES};
use super::questions::{chance_of, summary_where, Set};
use super::table::{groups, Group};
use crate::data::QuestionType;
use crate::eval::{pass_at_k, QuestionResult, StoredEval};
use crate::train::observe::mean_std;
use crate::train::Mode;

/// The model an RL run started from, among the runs evaluated before RL: the one whose model
/// directory the run names (a warm start's `RUNS/NAME/model`, or an evaluated directory),
/// else the only one there is.
pub fn base_of<'a>(rl: &RunData, baselines: &[&'a RunData]) -> Option<&'a RunData> {
    let path = rl.config.model_path.as_deref().unwrap_or("");
    let p = std::path::Path::new(path);
    let named = baselines.iter().copied().find(|b| {
        let own = b.config.model_path.as_deref();
        own == Some(path)
            || (p.file_name().is_some_and(|f| f == "model")
                && p.parent()
                    .and_then(|d| d.file_name())
                    .is_some_and(|n| n == b.run.name.as_str()))
    });
    named.or(match baselines {
        [only] => Some(*only),
        _ => None,
    })
}

/// A model as the tables show it: its runs (seeds) and its name.
struct Model<'a> {
    label: String,
    runs: Vec<&'a RunData>,
}

/// A table row's label and the questions it covers.
type RowKey = (String, Box<dyn Fn(&QuestionResult) -> bool>);

/// The rows of a per-type table: each question type present, then the sets.
fn row_keys(questions: &[QuestionResult]) -> Vec<RowKey> {
    let mut types: Vec<String> = questions.iter().map(|q| q.question_type.clone()).collect();
    types.sort_by_key(|t| {
        (
            QuestionType::parse(t).map_or(usize::MAX, |x| x as usize),
            t.clone(),
        )
    });
    types.dedup();
    let mut keys: Vec<RowKey> = types
        .into_iter()
        .map(|t| {
            let name = t.clone();
            (
                name,
                Box::new(move |q: &QuestionResult| q.question_type == t) as Box<_>,
            )
        })
        .collect();
    for set in [Set::Open, Set::Guessable, Set::All] {
        if questions.iter().any(|q| set.contains(q)) {
            let label = match set {
                Set::All => set.label().to_string(),
                _ => format!("all {}", set.label()),
            };
            keys.push((label, Box::new(move |q: &QuestionResult| set.contains(q))));
        }
    }
    keys
}

/// Per training-set size, a table of pass@1 and pass@n per question type for the model the
/// runs started from and each mode, with the type's chance level.
pub fn type_blocks(
    rl: &[&RunData],
    baselines: &[&RunData],
    name: &str,
    e: &StoredEval,
) -> Vec<Block> {
    let n = e.summary.n;
    let mut b = vec![
        Block::Heading(2, "Results per question type".into()),
        Block::Para(format!(
            "pass@1 (= accuracy) and pass@{n} per question type, {} questions of the {} with n = {n} (mean over seeds where several ran). Chance: a guesser that picks uniformly among the answers the question allows (one of the table's cells, one of the labels, a count, one of two options) each time; 0 for numbers computed from the chart. Open-answer types (difference, sum, average, ratio, share) are the headline; the others are guessable.",
            e.summary.questions, e.data
        )),
    ];
    let groups = groups(rl);
    let mut sizes: Vec<Option<usize>> = groups.iter().map(|g| g.size).collect();
    sizes.dedup();
    if sizes.is_empty() {
        sizes.push(None);
    }
    for size in sizes {
        let mut models: Vec<Model> = Vec::new();
        let at: Vec<&Group> = groups.iter().filter(|g| g.size == size).collect();
        let base = at
            .first()
            .and_then(|g| base_of(g.runs[0], baselines))
            .or(match baselines {
                [only] => Some(*only),
                _ => None,
            });
        if let Some(base) = base.filter(|d| d.questions(name).is_some()) {
            models.push(Model {
                label: base.label.clone(),
                runs: vec![base],
            });
        }
        for g in &at {
            models.push(Model {
                label: group_label(g, &at),
                runs: g.runs.clone(),
            });
        }
        models.retain(|m| m.runs.iter().all(|d| d.questions(name).is_some()));
        let Some(first) = models.first().and_then(|m| m.runs[0].questions(name)) else {
            continue;
        };
        if let Some(size) = size {
            b.push(Block::Heading(3, format!("{size} training samples")));
        }
        b.push(type_table(&models, first, name, n));
    }
    b
}

fn type_table(models: &[Model], questions: &[QuestionResult], name: &str, n: usize) -> Block {
    let mut header = vec![
        "question type".to_string(),
        "questions".into(),
        "chance pass@1 %".into(),
        format!("chance pass@{n} %"),
    ];
    for m in models {
        header.push(format!("{} pass@1 %", m.label));
        header.push(format!("{} pass@{n} %", m.label));
    }
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}", 100.0 * v));
    let rows = row_keys(questions)
        .into_iter()
        .map(|(label, keep)| {
            let these: Vec<&QuestionResult> = questions.iter().filter(|q| keep(q)).collect();
            let chance = chance_of(&these, n);
            let mut row = vec![
                label,
                these.len().to_string(),
                pct(chance.map(|c| c.0)),
                pct(chance.map(|c| c.1)),
            ];
            for m in models {
                let sums: Vec<_> = m
                    .runs
                    .iter()
                    .filter_map(|d| summary_where(d.questions(name)?, &keep))
                    .collect();
                let mean = |f: &dyn Fn(&crate::eval::EvalSummary) -> f64| {
                    (!sums.is_empty()).then(|| mean_std(&sums.iter().map(f).collect::<Vec<_>>()).0)
                };
                row.push(pct(mean(&|s| s.accuracy)));
                row.push(pct(mean(&|s| {
                    s.pass_at_k.last().copied().unwrap_or(f64::NAN)
                })));
            }
            row
        })
        .collect();
    Block::Table { header, rows }
}

/// `Mode::Grpo.name()`, or `Mode::Grpo.name() (accuracy + 0.5 format)` where a mode ran with several reward
/// specifications at this size.
fn group_label(g: &Group, at: &[&Group]) -> String {
    let mode = mode_label(&g.mode, g.variant.as_deref());
    let specs = at
        .iter()
        .filter(|o| o.mode == g.mode && o.variant == g.variant)
        .count();
    match (&g.rewards, specs > 1) {
        (Some(r), true) => format!("{mode} ({r})"),
        _ => mode,
    }
}

/// The k of the interval tables: 1, 4, 16 and n, those within n.
pub fn interval_ks(n: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = [1, 4, 16, n].into_iter().filter(|k| *k <= n).collect();
    ks.sort_unstable();
    ks.dedup();
    ks
}

/// Per question for which `keep` holds (by index), pass@k of each of `runs` (one row per
/// run); `None` when the runs were not evaluated on the same questions.
fn per_question(
    runs: &[&RunData],
    name: &str,
    keep: &dyn Fn(&QuestionResult) -> bool,
    k: usize,
) -> Option<(Vec<usize>, Vec<Vec<f64>>)> {
    let mut index: Option<Vec<usize>> = None;
    let mut rows = Vec::new();
    for d in runs {
        let qs: Vec<&QuestionResult> = d.questions(name)?.iter().filter(|q| keep(q)).collect();
        let idx: Vec<usize> = qs.iter().map(|q| q.index).collect();
        if index.get_or_insert_with(|| idx.clone()) != &idx {
            return None;
        }
        rows.push(
            qs.iter()
                .map(|q| pass_at_k(q.n, q.correct, k))
                .collect::<Result<Vec<f64>, _>>()
                .ok()?,
        );
    }
    Some((index?, rows))
}

/// One comparison: side A against side B on the questions for which `keep` holds, an
/// interval per k.
pub(super) fn intervals(
    a: &[&RunData],
    b: &[&RunData],
    name: &str,
    keep: &dyn Fn(&QuestionResult) -> bool,
    ks: &[usize],
) -> Option<(usize, Vec<Interval>)> {
    let mut out = Vec::new();
    let mut questions = 0;
    for &k in ks {
        let (ia, ra) = per_question(a, name, keep, k)?;
        let (ib, rb) = per_question(b, name, keep, k)?;
        if ia != ib || ia.is_empty() {
            return None;
        }
        questions = ia.len();
        out.push(paired_difference(&ra, &rb)?);
    }
    Some((questions, out))
}

/// The paired differences of each mode against the model it started from and against Mode::Grpo.name(),
/// on the headline questions and on the guessable ones.
pub fn interval_blocks(
    rl: &[&RunData],
    baselines: &[&RunData],
    name: &str,
    e: &StoredEval,
    headline: Set,
) -> Vec<Block> {
    let n = e.summary.n;
    let ks = interval_ks(n);
    let mut b = vec![
        Block::Heading(2, "Differences with 95% intervals".into()),
        Block::Para(format!(
            "Each cell: the difference in percentage points, [its {:.0}% bootstrap interval], and whether it is resolved: `higher` or `lower` when the interval excludes 0, `unresolved` when it contains 0 (no difference resolved, so no ranking). Paired by question: both sides were evaluated on the same {} questions of the {} with the same sampling seeds, n = {n} completions each (temperature {}, top-p {}). {RESAMPLES} resamples of the questions and, where a side ran several training seeds, of its seeds. pass@1 is the accuracy.",
            100.0 * LEVEL, e.summary.questions, e.data, e.config.temperature, e.config.top_p
        )),
    ];
    let mut header = vec![
        "mode".to_string(),
        "train size".into(),
        "against".into(),
        "questions".into(),
        "seeds (mode vs against)".into(),
    ];
    header.extend(ks.iter().map(|k| format!("pass@{k} (pp)")));
    let all = groups(rl);
    let mut count = 0;
    for set in [headline, Set::Guessable] {
        let mut rows = Vec::new();
        for g in &all {
            for (label, side, seeds) in sides_against(g, &all, baselines) {
                let cells = intervals(&g.runs, &side, name, &|q| set.contains(q), &ks);
                let Some((questions, cells)) = cells else {
                    continue;
                };
                let mut row = vec![
                    mode_label(&g.mode, g.variant.as_deref()),
                    g.size.map_or("-".into(), |s| s.to_string()),
                    label,
                    questions.to_string(),
                    format!("{} vs {seeds}", g.seeds()),
                ];
                row.extend(cells.iter().map(|c| c.show(100.0)));
                rows.push(row);
            }
        }
        if rows.is_empty() {
            continue;
        }
        count += rows.len() * ks.len();
        b.push(Block::Heading(3, format!("On the {}", set.label())));
        b.push(Block::Table {
            header: header.clone(),
            rows,
        });
    }
    if count > 0 {
        b.push(Block::Para(format!(
            "{count} intervals: at {:.0}%, about {} of them would exclude 0 by chance even if no mode differed, so a lone `higher` or `lower` is weak evidence; look for differences that hold across k, sizes and seeds.",
            100.0 * LEVEL,
            expected_by_chance(count)
        )));
    }
    b
}

/// What group `g` is compared with: the model it started from and, unless it is GRPO, GRPO
/// at the same size, rewards and variant; each with its label and seed list.
fn sides_against<'a>(
    g: &Group<'a>,
    all: &[Group<'a>],
    baselines: &[&'a RunData],
) -> Vec<(String, Vec<&'a RunData>, String)> {
    let mut against = Vec::new();
    if let Some(base) = base_of(g.runs[0], baselines) {
        against.push((base.label.clone(), vec![base], seed_list(&[base])));
    }
    let grpo = all.iter().find(|o| {
        o.mode == Mode::Grpo.name()
            && o.size == g.size
            && o.rewards == g.rewards
            && o.variant == g.variant
    });
    if let (Some(grpo), false) = (grpo, g.mode == Mode::Grpo.name()) {
        against.push((
            display_mode(Mode::Grpo.name()),
            grpo.runs.clone(),
            grpo.seeds(),
        ));
    }
    against
}

fn seed_list(runs: &[&RunData]) -> String {
    runs.iter()
        .map(|d| d.seed.map_or("-".into(), |s| s.to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}
