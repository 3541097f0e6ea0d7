//! Rewards on the shape of a completion (open-r1 definitions): `format`, `tag_count`,
//! `reasoning_steps`.

use std::sync::OnceLock;

use regex::Regex;

/// 1.0 when the whole completion is `<think>\n…\n</think>\n<answer>\n…\n</answer>`, else 0.0.
///
/// open-r1's pattern, anchored at both ends. open-r1 compiles it with MULTILINE, so its `$`
/// also accepts text on lines after `</answer>`; chartrl does not (trailing text fails).
pub fn format(completion: &str) -> f64 {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"(?s)\A<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>\z")
            .expect("valid regex")
    });
    if re.is_match(completion) {
        1.0
    } else {
        0.0
    }
}

/// 0.25 for each of `<think>\n`, `\n</think>\n`, `\n<answer>\n`, `\n</answer>` appearing
/// exactly once (open-r1 `tag_count_reward`).
pub fn tag_count(completion: &str) -> f64 {
    ["<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>"]
        .iter()
        .filter(|tag| completion.matches(*tag).count() == 1)
        .count() as f64
        * 0.25
}

/// `min(1, steps / 3)`, counting matches of open-r1's step pattern
/// `Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,` (`^` only at the very start).
pub fn reasoning_steps(completion: &str) -> f64 {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"(Step \d+:|\A\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)")
            .expect("valid regex")
    });
    (re.find_iter(completion).count() as f64 / 3.0).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_table() {
        let cases: &[(&str, f64)] = &[
            ("<think>\nx\n</think>\n<answer>\n1\n</answer>", 1.0),
            (
                "<think>\nmulti\nline\n</think>\n<answer>\nCanada\n</answer>",
                1.0,
            ),
            ("<think>\n\n</think>\n<answer>\n\n</answer>", 1.0),
            ("<think>x</think><answer>1</answer>", 0.0), // no newlines
            ("<think>\nx\n</think>\n<answer>\n1\n</answer>\n", 0.0), // trailing text
            ("hi <think>\nx\n</think>\n<answer>\n1\n</answer>", 0.0), // leading text
            ("<think>\nx\n</think>\n", 0.0),             // missing answer
            ("", 0.0),
        ];
        for &(c, want) in cases {
            assert_eq!(format(c), want, "{c:?}");
        }
    }

    #[test]
    fn tag_count_table() {
        let cases: &[(&str, f64)] = &[
            ("<think>\nx\n</think>\n<answer>\n1\n</answer>", 1.0),
            ("<think>\nx\n</think>\n", 0.5),
            (
                "<think>\n<think>\nx\n</think>\n<answer>\n1\n</answer>",
                0.75,
            ), // two openers
            ("<think>x</think><answer>1</answer>", 0.0),
            ("", 0.0),
        ];
        for &(c, want) in cases {
            assert_eq!(tag_count(c), want, "{c:?}");
        }
    }

    #[test]
    fn reasoning_steps_table() {
        let cases: &[(&str, f64)] = &[
            ("Step 1: a\nStep 2: b\nStep 3: c", 1.0),
            ("Step 1: a\nStep 2: b", 2.0 / 3.0),
            ("First, a. Next, b.", 2.0 / 3.0),
            ("1. a\n2. b", 1.0 / 3.0), // `^` only at the start
            ("\n- a\n- b\n- c\n- d", 1.0),
            ("", 0.0),
            ("no steps here", 0.0),
        ];
        for &(c, want) in cases {
            assert!((reasoning_steps(c) - want).abs() < 1e-12, "{c:?}");
        }
    }
}
