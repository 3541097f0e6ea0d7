//! Answer extraction and ChartQA relaxed accuracy.

use std::sync::OnceLock;

use regex::Regex;

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
