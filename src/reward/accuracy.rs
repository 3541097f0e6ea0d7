//! Answer extraction and answer matching: numbers within 5%, labels exactly, and ChartQA's
//! relaxed accuracy for answers of unknown kind.

use std::sync::OnceLock;

use regex::Regex;

use crate::data::{AnswerKind, Sample};

/// Whether `prediction` answers `sample`, by the kind of its answer:
///
/// - a number: correct within 5% relative of the target (a zero target needs exactly zero);
///   a prediction that is not a number is wrong;
/// - a label (a name, a year used as a label, a series name, a word): the same text after
///   trimming, lower-casing and collapsing runs of whitespace, so `2013` never answers `2015`;
/// - unknown (a ChartQA file): [`relaxed_correctness`], the benchmark's published metric.
pub fn answers(sample: &Sample, prediction: &str) -> bool {
    match sample.answer_kind {
        Some(AnswerKind::Number) => numbers_match(&sample.answer, prediction),
        Some(AnswerKind::Label) => normalise_label(&sample.answer) == normalise_label(prediction),
        None => relaxed_correctness(&sample.answer, prediction),
    }
}

/// Numbers within 5% relative of the target; exactly equal when the target is 0.
pub fn numbers_match(target: &str, prediction: &str) -> bool {
    match (to_float(prediction.trim()), to_float(target.trim())) {
        (Some(p), Some(t)) if t != 0.0 => (p - t).abs() / t.abs() <= 0.05,
        (Some(p), Some(t)) => p == t,
        _ => false,
    }
}

/// Lower case, trimmed, inner whitespace collapsed to single spaces.
fn normalise_label(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The text inside the last complete `<answer>…</answer>` pair, trimmed; `None` without one.
pub fn extract_answer(completion: &str) -> Option<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"(?s)<answer>(.*?)</answer>").expect("valid regex"));
    re.captures_iter(completion)
        .last()
        .map(|c| c[1].trim().to_string())
}

/// ChartQA relaxed correctness, as pix2struct's `relaxed_correctness` (max change 5%):
///
/// - both sides are parsed as numbers; a trailing `%` means "divide by 100";
/// - if the prediction parses and the target parses to a non-zero number, the answer is correct
///   when `|prediction - target| / |target| <= 0.05`;
/// - otherwise (either side not a number, or a zero target) it is a case-insensitive exact
///   string match.
///
/// Normalisations beyond the reference, both applied to target and prediction alike:
/// surrounding whitespace is trimmed (Python's `float()` already ignores it for numbers; here it
/// also applies to the string match), and thousands separators in a well-formed number
/// (`1,234,567.5`) are removed before parsing. Nothing else: no units, no currency signs.
pub fn relaxed_correctness(target: &str, prediction: &str) -> bool {
    let (t, p) = (target.trim(), prediction.trim());
    match (to_float(p), to_float(t)) {
        (Some(pf), Some(tf)) if tf != 0.0 => (pf - tf).abs() / tf.abs() <= 0.05,
        _ => p.to_lowercase() == t.to_lowercase(),
    }
}

fn to_float(s: &str) -> Option<f64> {
    let (body, scale) = match s.strip_suffix('%') {
        Some(b) => (b, 0.01),
        None => (s, 1.0),
    };
    let body = strip_thousands(body.trim());
    body.parse::<f64>().ok().map(|v| v * scale)
}

/// `1,234,567.89` → `1234567.89`; anything that is not a well-formed grouped number is kept.
fn strip_thousands(s: &str) -> std::borrow::Cow<'_, str> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re =
        RE.get_or_init(|| Regex::new(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$").expect("valid regex"));
    if re.is_match(s) {
        s.replace(',', "").into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(answer: &str, kind: Option<AnswerKind>) -> Sample {
        let mut s = crate::data::Generator::new(crate::data::Split::Train, 1).sample(0);
        s.answer = answer.into();
        s.answer_kind = kind;
        s
    }

    #[test]
    fn a_year_used_as_a_label_must_match_exactly() {
        let year = sample("2015", Some(AnswerKind::Label));
        assert!(answers(&year, "2015"));
        assert!(answers(&year, " 2015\n"));
        assert!(!answers(&year, "2013"), "a nearby year is a wrong label");
        assert!(!answers(&year, "2015.0"));
        // ChartQA's rule, for answers of unknown kind, accepts the nearby year.
        assert!(answers(&sample("2015", None), "2013"));
        let name = sample("In store", Some(AnswerKind::Label));
        assert!(answers(&name, "in  Store"));
        assert!(!answers(&name, "Online"));
        let word = sample("increase", Some(AnswerKind::Label));
        assert!(!answers(&word, "increasing"));
    }

    #[test]
    fn a_number_still_passes_within_five_percent() {
        let n = sample("100", Some(AnswerKind::Number));
        assert!(answers(&n, "104"));
        assert!(answers(&n, "95"));
        assert!(!answers(&n, "1,000"));
        assert!(!answers(&n, "105.01"));
        assert!(!answers(&n, "one hundred"));
        let pct = sample("23.5", Some(AnswerKind::Number));
        assert!(!answers(&pct, "23.5%"), "23.5% is 0.235");
        assert!(answers(&pct, "23.9"));
        let zero = sample("0", Some(AnswerKind::Number));
        assert!(answers(&zero, "0.0") && answers(&zero, "0") && !answers(&zero, "0.01"));
    }

    #[test]
    fn relaxed_accuracy_table() {
        // (target, prediction, correct)
        let cases: &[(&str, &str, bool)] = &[
            ("12", "12", true),
            ("12", "12.0", true),
            ("100", "105", true),     // exactly 5%
            ("100", "105.01", false), // just over
            ("100", "95", true),
            ("100", "94.9", false),
            ("-40", "-41", true), // negative numbers: relative to |target|
            ("-40", "40", false),
            ("-2.5", "-2.6", true), // 4%
            ("45%", "0.45", true),  // trailing % divides by 100
            ("45%", "45%", true),
            ("45", "45%", false), // 0.45 vs 45
            ("0.45", "45%", true),
            ("0", "0", true), // zero target: exact string match
            ("0", "0.0", false),
            ("0", "0.01", false),
            ("Canada", "canada", true), // text: case-insensitive exact
            ("Canada", "Canada.", false),
            ("increase", "Increase", true),
            ("increase", "increasing", false),
            ("  12  ", "12", true), // whitespace trimmed
            ("Acme", " Acme\n", true),
            ("1234", "1,234", true), // thousands separators
            ("1,234.5", "1234.5", true),
            ("1,23", "123", false), // not a grouped number: string compare
            ("12", "", false),
            ("", "", true),
            ("12", "twelve", false),
            ("3.5", "3.33", true), // 4.9%
            ("3.5", "3.3", false), // 5.7%
            ("1e3", "1000", true),
        ];
        for &(t, p, want) in cases {
            assert_eq!(
                relaxed_correctness(t, p),
                want,
                "target {t:?} prediction {p:?}"
            );
        }
        assert!(cases.len() >= 25);
    }

    #[test]
    fn answers_come_from_the_last_complete_answer_tag() {
        assert_eq!(
            extract_answer("<answer> 42 </answer>").as_deref(),
            Some("42")
        );
        assert_eq!(
            extract_answer("<answer>1</answer> then <answer>\n2\n</answer>").as_deref(),
            Some("2")
        );
        assert_eq!(extract_answer("<answer>unclosed"), None);
        assert_eq!(extract_answer(""), None);
        assert_eq!(extract_answer("<answer></answer>").as_deref(), Some(""));
    }
}
