//! Which evaluated questions a result is computed on. The headline uses the open-answer
//! types (numbers computed from the chart, found nowhere in the prompt); the guessable types
//! (a label, a count, a binary choice, a number read off the table) are reported beside them,
//! never mixed in, since pass@16 saturates on them for any model that keeps the format.

use crate::data::{chance_pass_at_k, QuestionType};
use crate::eval::{EvalSummary, QuestionResult};

/// A set of questions of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// Questions of an open-answer type (see `QuestionType::is_open`).
    Open,
    /// Questions of a known type that is not open-answer.
    Guessable,
    /// Every question: the headline for data without known types (a ChartQA file).
    All,
}

impl Set {
    pub fn contains(self, q: &QuestionResult) -> bool {
        let t = QuestionType::parse(&q.question_type);
        match self {
            Set::Open => t.is_some_and(|t| t.is_open()),
            Set::Guessable => t.is_some_and(|t| !t.is_open()),
            Set::All => true,
        }
    }

    /// How tables and captions name the set.
    pub fn label(self) -> &'static str {
        match self {
            Set::Open => "open-answer types",
            Set::Guessable => "guessable types",
            Set::All => "all questions",
        }
    }
}

/// The set the headline reports for these questions: the open-answer types when the
/// questions' types are known, else every question (a ChartQA file).
pub fn headline(questions: &[QuestionResult]) -> Set {
    let known = |q: &QuestionResult| QuestionType::parse(&q.question_type).is_some();
    if questions.iter().any(known) {
        Set::Open
    } else {
        Set::All
    }
}

/// Accuracy and pass@k over the questions for which `keep` holds; `None` when there are none.
pub fn summary_where(
    questions: &[QuestionResult],
    keep: impl Fn(&QuestionResult) -> bool,
) -> Option<EvalSummary> {
    let qs: Vec<QuestionResult> = questions.iter().filter(|q| keep(q)).cloned().collect();
    if qs.is_empty() {
        return None;
    }
    EvalSummary::from_questions(&qs).ok()
}

/// The mean chance level of the questions and the mean pass@k of a guesser at `k`; `None`
/// when a question's chance is unknown.
pub fn chance_of(questions: &[&QuestionResult], k: usize) -> Option<(f64, f64)> {
    let ps: Vec<f64> = questions.iter().map(|q| q.chance).collect::<Option<_>>()?;
    if ps.is_empty() {
        return None;
    }
    let n = ps.len() as f64;
    Some((
        ps.iter().sum::<f64>() / n,
        ps.iter().map(|p| chance_pass_at_k(*p, k)).sum::<f64>() / n,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(t: &str, correct: usize, chance: Option<f64>) -> QuestionResult {
        QuestionResult {
            index: 0,
            prompt_id: "p".into(),
            n: 4,
            correct,
            formatted: 4,
            truncated: 0,
            tokens: 40,
            question_type: t.into(),
            chance,
        }
    }

    #[test]
    fn the_headline_is_the_open_types_when_there_are_any() {
        let qs = [q("sum", 1, Some(0.0)), q("trend", 4, Some(0.5))];
        assert_eq!(headline(&qs), Set::Open);
        let open = summary_where(&qs, |x| Set::Open.contains(x)).unwrap();
        assert_eq!((open.questions, open.accuracy), (1, 0.25));
        let guess = summary_where(&qs, |x| Set::Guessable.contains(x)).unwrap();
        assert_eq!(guess.accuracy, 1.0);
        assert_eq!(headline(&qs[1..]), Set::Open, "known types, none open");
        let chartqa = [q("chartqa", 1, None)];
        assert_eq!(headline(&chartqa), Set::All);
        assert!(summary_where(&chartqa, |x| Set::Open.contains(x)).is_none());
        let refs: Vec<&QuestionResult> = qs.iter().collect();
        let (p, p2) = chance_of(&refs, 2).unwrap();
        assert_eq!((p, p2), (0.25, 0.375));
        assert_eq!(chance_of(&[&chartqa[0]], 2), None);
    }
}
