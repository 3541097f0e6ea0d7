//! Where in the task a mode moved: each mode's paired difference against the model it started
//! from, per open-answer question type, with 95% intervals. The aggregate intervals say
//! whether a mode moved; these say on which skill, for runs trained on several. With a
//! hundred or so questions a type they resolve only large moves, and there are many of them,
//! so the report calls them exploratory and counts them apart.

use super::compare::{base_of, intervals};
use super::data::{mode_label, RunData};
use super::doc::Block;
use super::intervals::{expected_by_chance, LEVEL};
use super::table::groups;
use crate::data::QuestionType;
use crate::eval::{QuestionResult, StoredEval};

/// The open-answer types among `questions`, in the generator's order, with their counts.
fn open_types(questions: &[QuestionResult]) -> Vec<(QuestionType, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for t in questions
        .iter()
        .filter_map(|q| QuestionType::parse(&q.question_type))
        .filter(|t| t.is_open())
    {
        *counts.entry(t).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// Per k of pass@1 and pass@n, a table of each mode's difference against its starting model
/// on each open-answer type. Nothing when the evaluation holds fewer than two such types (the
/// aggregate table already says it all).
pub fn type_interval_blocks(
    rl: &[&RunData],
    baselines: &[&RunData],
    name: &str,
    e: &StoredEval,
) -> Vec<Block> {
    let n = e.summary.n;
    let all = groups(rl);
    let against: Vec<(&super::table::Group, &RunData)> = all
        .iter()
        .filter_map(|g| Some((g, base_of(g.runs[0], baselines)?)))
        .collect();
    let Some(questions) = against.first().and_then(|(_, b)| b.questions(name)) else {
        return Vec::new();
    };
    let types = open_types(questions);
    if types.len() < 2 {
        return Vec::new();
    }
    let mut ks = vec![1, n];
    ks.dedup();
    let mut blocks = vec![Block::Heading(3, "Per open-answer type".into())];
    let mut count = 0;
    for k in ks {
        let mut header = vec![
            "mode".to_string(),
            "train size".into(),
            "against".into(),
            "seeds".into(),
        ];
        header.extend(
            types
                .iter()
                .map(|(t, q)| format!("{} pass@{k} (pp, {q} q)", t.name())),
        );
        let mut rows = Vec::new();
        for (g, base) in &against {
            let cells: Vec<Option<String>> = types
                .iter()
                .map(|(t, _)| {
                    let of_type = |q: &QuestionResult| q.question_type == t.name();
                    let (_, cells) = intervals(&g.runs, &[*base], name, &of_type, &[k])?;
                    Some(cells[0].show(100.0))
                })
                .collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            count += cells.iter().flatten().count();
            let mut row = vec![
                mode_label(&g.mode, g.variant.as_deref()),
                g.size.map_or("-".into(), |s| s.to_string()),
                base.label.clone(),
                g.seeds(),
            ];
            row.extend(cells.into_iter().map(|c| c.unwrap_or_else(|| "-".into())));
            rows.push(row);
        }
        if rows.is_empty() {
            return Vec::new();
        }
        blocks.push(Block::Table { header, rows });
    }
    blocks.push(Block::Para(format!(
        "Exploratory: the same paired intervals on each open-answer type alone. {count} intervals: at {:.0}%, about {} would exclude 0 by chance, and a type's few questions resolve only large moves; read them for where a move in the table above came from, not as findings of their own.",
        100.0 * LEVEL,
        expected_by_chance(count)
    )));
    blocks
}
