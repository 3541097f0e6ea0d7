//! The synthetic generator and the loaders, through the library and the real binary.

mod common;

use std::collections::HashSet;

use chartrl::data::{
    load_chartqa, load_jsonl, AnswerKind, Chart, Difficulty, Generator, QuestionType, Sample, Split,
};
use common::{ok, user_error};

#[test]
fn generation_is_deterministic_and_nested() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = |size: &str, out: &str| {
        ok(
            &[
                "data", "gen", "--split", "train", "--size", size, "--seed", "2025", "--out", out,
            ],
            tmp.path(),
        )
    };
    gen("34000", "full.jsonl");
    gen("34000", "again.jsonl");
    gen("100", "poc.jsonl");
    gen("1000", "1k.jsonl");
    let read = |f: &str| std::fs::read(tmp.path().join(f)).unwrap();
    let full = read("full.jsonl");
    assert_eq!(full, read("again.jsonl"), "same seed, different bytes");
    assert!(full.starts_with(&read("poc.jsonl")));
    assert!(full.starts_with(&read("1k.jsonl")));
    assert_eq!(full.iter().filter(|&&b| b == b'\n').count(), 34000);
}

fn key(s: &Sample) -> String {
    format!(
        "{}\u{0}{}",
        serde_json::to_string(&s.chart).unwrap(),
        s.question
    )
}

#[test]
fn warmup_train_and_test_share_no_chart_question_pair() {
    let train: HashSet<String> = Generator::new(Split::Train, 2025)
        .take(34000)
        .map(|s| key(&s))
        .collect();
    let warmup: HashSet<String> = Generator::new(Split::Warmup, 2025)
        .take(50000)
        .map(|s| key(&s))
        .collect();
    assert!(warmup.is_disjoint(&train), "warmup and train overlap");
    let test: Vec<Sample> = Generator::new(Split::Test, 2025).take(5000).collect();
    assert!(
        test.iter().all(|s| !train.contains(&key(s))),
        "test and train overlap"
    );
    assert!(
        test.iter().all(|s| !warmup.contains(&key(s))),
        "test and warmup overlap"
    );
    // Disjoint by construction, whatever the seeds: each pair belongs to one split.
    for (split, seed) in [(Split::Train, 7), (Split::Warmup, 1), (Split::Test, 3)] {
        let class = Split::ALL.iter().position(|x| *x == split).unwrap() as u64;
        for s in Generator::new(split, seed).take(200) {
            assert_eq!(chartrl::data::partition(&s.chart, &s.question), class);
        }
    }
    // Different seeds give different data too.
    let other = Generator::new(Split::Train, 7).sample(0);
    assert_ne!(
        key(&other),
        key(&Generator::new(Split::Train, 2025).sample(0))
    );
}

#[test]
fn every_question_type_appears_in_1000_samples() {
    let seen: HashSet<String> = Generator::new(Split::Train, 2025)
        .take(1000)
        .map(|s| s.question_type)
        .collect();
    for t in QuestionType::ALL {
        assert!(
            seen.contains(t.name()),
            "no `{}` question in 1000 samples",
            t.name()
        );
    }
}

/// Names of `names` that occur in `text`, in order of appearance.
fn mentioned<'a>(text: &str, names: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut found: Vec<(usize, &String)> = names
        .filter_map(|n| text.find(n.as_str()).map(|p| (p, n)))
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

/// Recomputes the gold answer from the chart and the question text alone.
fn recompute(s: &Sample) -> String {
    let c: &Chart = &s.chart;
    let q = &s.question;
    let series = if c.series.len() == 1 {
        &c.series[0]
    } else {
        c.series
            .iter()
            .find(|x| q.contains(&format!(" {} ", x.name)))
            .unwrap_or(&c.series[0])
    };
    let labels = mentioned(q, c.labels.iter());
    let value = |l: &String| series.values[c.labels.iter().position(|x| x == l).unwrap()];
    let vals = &series.values;
    let num = |x: f64| format!("{x}");
    match s.question_type.as_str() {
        "lookup" => num(value(labels[0])),
        "max_label" | "min_label" => {
            let mut best = 0;
            for i in 0..vals.len() {
                let better = if s.question_type == "max_label" {
                    vals[i] > vals[best]
                } else {
                    vals[i] < vals[best]
                };
                if better {
                    best = i;
                }
            }
            c.labels[best].clone()
        }
        "max_value" => num(vals.iter().cloned().fold(f64::MIN, f64::max)),
        "min_value" => num(vals.iter().cloned().fold(f64::MAX, f64::min)),
        "difference" => num((value(labels[0]) - value(labels[1])).abs()),
        "sum" => num(vals.iter().sum()),
        "average" => num(vals.iter().sum::<f64>() / vals.len() as f64),
        "ratio" => num(value(labels[0]) / value(labels[1])),
        "share" => num(value(labels[0]) / vals.iter().sum::<f64>() * 100.0),
        "count_above" => {
            let t: f64 = q
                .split("above ")
                .nth(1)
                .unwrap()
                .trim_end_matches('?')
                .parse()
                .unwrap();
            vals.iter().filter(|v| **v > t).count().to_string()
        }
        "trend" => if vals[vals.len() - 1] > vals[0] {
            "increase"
        } else {
            "decrease"
        }
        .to_string(),
        "compare_series" => {
            let names = mentioned(q, c.series.iter().map(|x| &x.name));
            let at = c.labels.iter().position(|x| x == labels[0]).unwrap();
            let v = |n: &String| c.series.iter().find(|x| &x.name == n).unwrap().values[at];
            if v(names[0]) > v(names[1]) {
                names[0].clone()
            } else {
                names[1].clone()
            }
        }
        other => panic!("unknown question type {other}"),
    }
}

#[test]
fn gold_answers_match_an_independent_recomputation() {
    let mut year_labels = 0;
    let samples = Difficulty::ALL
        .iter()
        .map(|&d| Generator::with_difficulty(Split::Train, 2025, d))
        .flat_map(|g| (0..1000).map(move |i| g.sample(i)));
    for s in samples {
        // Every answer carries its kind, in the JSONL record too.
        let kind = QuestionType::parse(&s.question_type).unwrap().answer_kind();
        assert_eq!(s.answer_kind, Some(kind), "{}", s.id);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["answer_kind"], serde_json::json!(kind), "{}", s.id);
        if kind == AnswerKind::Label && s.answer.parse::<f64>().is_ok() {
            year_labels += 1;
        }
        let expected = recompute(&s);
        match (expected.parse::<f64>(), s.answer.parse::<f64>()) {
            (Ok(e), Ok(a)) => assert!(
                (e - a).abs() <= 0.0051,
                "{}: {} -> {a}, recomputed {e}",
                s.id,
                s.question
            ),
            _ => assert_eq!(expected, s.answer, "{}: {}", s.id, s.question),
        }
        assert!(
            s.reasoning.ends_with('.') && s.reasoning.contains(&s.answer),
            "{}: {}",
            s.id,
            s.reasoning
        );
    }
    // Years used as labels exist, and are matched as labels, not numbers.
    assert!(year_labels > 10, "{year_labels} numeric-looking labels");
}

#[test]
fn malformed_jsonl_is_an_error_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = Generator::new(Split::Train, 1).sample(0);
    let good = serde_json::to_string(&sample).unwrap();
    let answer_field = format!("\"answer\":\"{}\"", sample.answer);
    let cases = [
        (
            format!("{good}\n{good}\n{{not json\n"),
            ":3",
            "key must be a string",
        ),
        (
            format!("{good}\n{}\n", good.replace("\"question\"", "\"questio\"")),
            ":2",
            "question",
        ),
        (
            format!(
                "{good}\n{}\n",
                good.replace("\"values\":[", "\"values\":[1,")
            ),
            ":2",
            "values",
        ),
        (
            format!("{}\n", good.replace(&answer_field, "\"answer\":\" \"")),
            ":1",
            "field `answer` is empty",
        ),
        (
            format!(
                "{}\n",
                good.replace("\"question\"", "\"extra\":1,\"question\"")
            ),
            ":1",
            "unknown field `extra`",
        ),
        (String::new(), "data.jsonl", "empty"),
    ];
    for (text, loc, field) in cases {
        let path = tmp.path().join("data.jsonl");
        std::fs::write(&path, text).unwrap();
        let err = load_jsonl(&path).unwrap_err().to_string();
        assert!(
            err.contains("data.jsonl") && err.contains(loc) && err.contains(field),
            "{err}"
        );
    }
    // Not UTF-8, on line 2.
    let path = tmp.path().join("bad.jsonl");
    let mut bytes = format!("{good}\n").into_bytes();
    bytes.extend([0xff, 0xfe, b'\n']);
    std::fs::write(&path, bytes).unwrap();
    let err = load_jsonl(&path).unwrap_err().to_string();
    assert!(
        err.contains("bad.jsonl:2") && err.contains("UTF-8"),
        "{err}"
    );
    // Through the binary: exit 1 with the same message.
    let err = user_error(&["data", "stats", "bad.jsonl"], tmp.path());
    assert!(err.contains("bad.jsonl:2"), "{err}");
}

#[test]
fn chartqa_layout_loads_and_reports_missing_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("train");
    std::fs::create_dir_all(dir.join("tables")).unwrap();
    std::fs::write(
        dir.join("tables/123.csv"),
        "Year,Sales,Costs\n2019,12.5,3\n2020,\"1,200\",4%\n",
    )
    .unwrap();
    let questions = dir.join("train_augmented.json");
    std::fs::write(
        &questions,
        r#"[{"imgname": "123.png", "query": "What were sales in 2020?", "label": "1200"}]"#,
    )
    .unwrap();
    let samples = load_chartqa(&questions).unwrap();
    assert_eq!(samples.len(), 1);
    let c = &samples[0].chart;
    assert_eq!(c.labels, vec!["2019", "2020"]);
    assert_eq!(c.series[0].values, vec![12.5, 1200.0]);
    assert_eq!(c.series[1].name, "Costs");

    std::fs::write(
        &questions,
        r#"[{"imgname": "missing.png", "query": "q", "label": "1"}]"#,
    )
    .unwrap();
    let err = load_chartqa(&questions).unwrap_err().to_string();
    assert!(
        err.contains("train_augmented.json") && err.contains("missing.csv"),
        "{err}"
    );

    std::fs::write(dir.join("tables/123.csv"), "Year,Sales\n2019,twelve\n").unwrap();
    std::fs::write(
        &questions,
        r#"[{"imgname": "123.png", "query": "q", "label": "1"}]"#,
    )
    .unwrap();
    let err = load_chartqa(&questions).unwrap_err().to_string();
    assert!(err.contains("123.csv:2") && err.contains("Sales"), "{err}");
}

#[test]
fn show_stats_and_render_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    ok(
        &[
            "data", "gen", "--split", "test", "--size", "50", "--out", "t.jsonl",
        ],
        tmp.path(),
    );
    let shown = ok(&["data", "show", "t.jsonl", "--index", "7"], tmp.path());
    assert!(
        shown.contains("Question:") && shown.contains("<answer>"),
        "{shown}"
    );
    let stats = ok(&["data", "stats", "t.jsonl"], tmp.path());
    assert!(
        stats.contains("50 samples") && stats.contains("chart kind"),
        "{stats}"
    );
    for i in 0..8 {
        let out = format!("c{i}.png");
        ok(
            &[
                "data",
                "render",
                "t.jsonl",
                "--index",
                &i.to_string(),
                "--out",
                &out,
            ],
            tmp.path(),
        );
        let png = std::fs::read(tmp.path().join(&out)).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5000,
            "{out}: {} bytes",
            png.len()
        );
    }
    let err = user_error(&["data", "show", "t.jsonl", "--index", "99"], tmp.path());
    assert!(err.contains("out of range"), "{err}");
}

#[test]
fn rewards_score_prints_every_builtin_per_completion() {
    let tmp = tempfile::tempdir().unwrap();
    ok(
        &[
            "data", "gen", "--split", "test", "--size", "5", "--out", "t.jsonl",
        ],
        tmp.path(),
    );
    let samples = load_jsonl(&tmp.path().join("t.jsonl")).unwrap();
    let gold = chartrl::data::gold_completion(&samples[0]);
    let lines = [
        serde_json::json!({"id": samples[0].id, "completion": gold}),
        serde_json::json!({"id": samples[1].id, "completion": "no tags at all"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(tmp.path().join("c.jsonl"), text).unwrap();
    let out = ok(
        &[
            "rewards",
            "score",
            "--data",
            "t.jsonl",
            "--completions",
            "c.jsonl",
        ],
        tmp.path(),
    );
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["accuracy"], 1.0);
    assert_eq!(rows[0]["format"], 1.0);
    assert_eq!(rows[0]["answer"], samples[0].answer);
    assert_eq!(rows[1]["accuracy"], 0.0);
    assert!(rows[1]["answer"].is_null());
    for name in chartrl::reward::BUILTIN_NAMES {
        assert!(rows[0][name].is_number(), "missing {name}");
    }
    std::fs::write(
        tmp.path().join("c.jsonl"),
        "{\"id\": \"nope\", \"completion\": \"x\"}\n",
    )
    .unwrap();
    let err = user_error(
        &[
            "rewards",
            "score",
            "--data",
            "t.jsonl",
            "--completions",
            "c.jsonl",
        ],
        tmp.path(),
    );
    assert!(err.contains("c.jsonl:1") && err.contains("nope"), "{err}");
}

/// `A op B = C.` read from a trace step, when the step computes something.
fn operation(step: &str) -> Option<(f64, char, f64, f64)> {
    let (lhs, rhs) = step.split_once(" = ")?;
    let c: f64 = rhs.trim_end_matches('.').parse().ok()?;
    for op in ['+', '-', '*', '/'] {
        if let Some((a, b)) = lhs.split_once(&format!(" {op} ")) {
            return Some((a.parse().ok()?, op, b.parse().ok()?, c));
        }
    }
    None
}

#[test]
fn every_trace_step_does_one_operation_and_gets_it_right() {
    let mut checked = 0;
    for d in Difficulty::ALL {
        for s in Generator::with_difficulty(Split::Warmup, 7, d).take(1500) {
            for line in s.reasoning.lines() {
                let step = line.split_once(": ").map(|(_, t)| t).unwrap_or(line);
                if !step.contains(" = ") {
                    continue;
                }
                let (a, op, b, c) = operation(step)
                    .unwrap_or_else(|| panic!("{}: not one operation: {line}", s.id));
                let exact = match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ => a / b,
                };
                assert!(
                    ((exact * 100.0).round() / 100.0 - c).abs() < 1e-9,
                    "{}: {line} (exactly {exact})",
                    s.id
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 3000, "{checked} steps checked");
}

#[test]
fn every_row_read_copies_a_table_row_and_names_a_value_in_it() {
    let mut checked = 0;
    for d in Difficulty::ALL {
        for s in Generator::with_difficulty(Split::Warmup, 11, d).take(1500) {
            let table = s.chart.to_table();
            for line in s.reasoning.lines() {
                let Some((_, read)) = line.split_once(": Row ") else {
                    continue;
                };
                let (row, said) = read
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("{}: {line}", s.id));
                assert!(
                    table.lines().any(|l| l == row),
                    "{}: `{row}` is not a row of\n{table}",
                    s.id
                );
                let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
                for part in said.trim_end_matches('.').split(" and ") {
                    let (who, value) = part.rsplit_once(" is ").unwrap();
                    assert!(
                        who.starts_with(cells[0]) || s.chart.series.len() > 1,
                        "{line}"
                    );
                    assert!(cells[1..].contains(&value), "{}: {line}", s.id);
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "{checked} reads checked");
}

#[test]
fn difficulty_bounds_rows_series_and_numbers() {
    for (d, rows, series, limit, whole) in [
        (Difficulty::Easy, 4, 2, 100.0, true),
        (Difficulty::Medium, 5, 2, 1000.0, false),
        (Difficulty::Hard, 6, 3, f64::INFINITY, false),
    ] {
        let mut most_rows = 0;
        for s in Generator::with_difficulty(Split::Train, 2025, d).take(2000) {
            let c = &s.chart;
            most_rows = most_rows.max(c.labels.len());
            assert!(
                c.labels.len() <= rows && c.series.len() <= series,
                "{d}: {}",
                s.id
            );
            for v in c.series.iter().flat_map(|x| &x.values) {
                assert!(v.abs() < limit, "{d}: {} has {v}", s.id);
                assert!(!whole || v.fract() == 0.0, "{d}: {} has {v}", s.id);
            }
        }
        assert_eq!(most_rows, rows, "{d}");
    }
}
