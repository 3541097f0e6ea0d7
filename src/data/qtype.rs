//! The synthetic generator's question types, what kind of answer each has, and how often a
//! guesser gets it right. Reports use this to keep guessable questions out of the headline:
//! a binary question is answered correctly half the time by a coin, so its pass@16 says
//! nothing about reasoning.

use serde::{Deserialize, Serialize};

use super::chart::Sample;

/// How an answer is matched (see `reward::accuracy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerKind {
    /// A number: correct within 5% relative (ChartQA's relaxed accuracy).
    Number,
    /// A name, a year used as a label, a series name, a word: exact after normalising case
    /// and whitespace.
    Label,
}

/// Where a question's answer comes from, which decides how guessable it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// A number computed from the chart (a sum, a ratio...): it appears nowhere in the
    /// prompt, so guessing almost never works. The headline results use these.
    Computed,
    /// One of the table's numbers (a lookup, a maximum): a guess among the cells can hit.
    Read,
    /// One of a few options (a label, a count, increase/decrease, one of two series).
    Choice,
}

/// Every question type the generator asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuestionType {
    Lookup,
    MaxLabel,
    MinLabel,
    MaxValue,
    MinValue,
    Difference,
    Sum,
    Average,
    Ratio,
    Share,
    CountAbove,
    Trend,
    CompareSeries,
}

impl QuestionType {
    pub const ALL: [QuestionType; 13] = [
        QuestionType::Lookup,
        QuestionType::MaxLabel,
        QuestionType::MinLabel,
        QuestionType::MaxValue,
        QuestionType::MinValue,
        QuestionType::Difference,
        QuestionType::Sum,
        QuestionType::Average,
        QuestionType::Ratio,
        QuestionType::Share,
        QuestionType::CountAbove,
        QuestionType::Trend,
        QuestionType::CompareSeries,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuestionType::Lookup => "lookup",
            QuestionType::MaxLabel => "max_label",
            QuestionType::MinLabel => "min_label",
            QuestionType::MaxValue => "max_value",
            QuestionType::MinValue => "min_value",
            QuestionType::Difference => "difference",
            QuestionType::Sum => "sum",
            QuestionType::Average => "average",
            QuestionType::Ratio => "ratio",
            QuestionType::Share => "share",
            QuestionType::CountAbove => "count_above",
            QuestionType::Trend => "trend",
            QuestionType::CompareSeries => "compare_series",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    pub fn family(self) -> Family {
        use QuestionType::*;
        match self {
            Difference | Sum | Average | Ratio | Share => Family::Computed,
            Lookup | MaxValue | MinValue => Family::Read,
            MaxLabel | MinLabel | CountAbove | Trend | CompareSeries => Family::Choice,
        }
    }

    /// Whether the answer is a number computed from the chart (not found in the prompt).
    pub fn is_open(self) -> bool {
        self.family() == Family::Computed
    }

    pub fn answer_kind(self) -> AnswerKind {
        use QuestionType::*;
        match self {
            MaxLabel | MinLabel | Trend | CompareSeries => AnswerKind::Label,
            _ => AnswerKind::Number,
        }
    }
}

/// The chance that one uniform guess among the answers the question allows is right: one of
/// the table's cells for a lookup, one of the asked series' values for a maximum or minimum,
/// one of the labels, a count from 0 to the number of labels, one of two options; 0 for a
/// computed number. `None` for a question type the generator does not ask.
pub fn chance(sample: &Sample) -> Option<f64> {
    use QuestionType::*;
    let t = QuestionType::parse(&sample.question_type)?;
    let labels = sample.chart.labels.len().max(1) as f64;
    let cells = labels * sample.chart.series.len().max(1) as f64;
    Some(match t {
        Difference | Sum | Average | Ratio | Share => 0.0,
        Lookup => 1.0 / cells,
        MaxValue | MinValue | MaxLabel | MinLabel => 1.0 / labels,
        CountAbove => 1.0 / (labels + 1.0),
        Trend | CompareSeries => 0.5,
    })
}

/// pass@k of a guesser that guesses uniformly `k` times with chance `p` each: `1 - (1-p)^k`.
pub fn chance_pass_at_k(p: f64, k: usize) -> f64 {
    1.0 - (1.0 - p).powi(k as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_families_partition_the_types() {
        for t in QuestionType::ALL {
            assert_eq!(QuestionType::parse(t.name()), Some(t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.name())
            );
        }
        let open: Vec<&str> = QuestionType::ALL
            .iter()
            .filter(|t| t.is_open())
            .map(|t| t.name())
            .collect();
        assert_eq!(open, ["difference", "sum", "average", "ratio", "share"]);
        assert_eq!(QuestionType::MaxLabel.answer_kind(), AnswerKind::Label);
        assert_eq!(QuestionType::CountAbove.answer_kind(), AnswerKind::Number);
        assert!((chance_pass_at_k(0.5, 2) - 0.75).abs() < 1e-12);
        assert_eq!(chance_pass_at_k(0.0, 16), 0.0);
    }
}
