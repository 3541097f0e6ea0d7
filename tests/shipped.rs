//! The shipped base model (models/tiny-base) and the shipped experiment scripts, read from the
//! repository itself: the base loads and answers, and the POC and the sweep plan their runs
//! from it without training a warm start.

mod common;

use std::path::{Path, PathBuf};

use common::ok;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A working directory with the repository's experiments, modules and shipped base.
fn project() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["experiments", "scripts", "models/tiny-base"] {
        copy_dir(&repo().join(dir), &tmp.path().join(dir));
    }
    tmp
}

/// A dry run of `script` with `sets`: the runs it would start, and how many are warm starts.
fn plan(dir: &Path, script: &str, sets: &[&str]) -> (usize, usize, String) {
    let mut args = vec!["exec", script, "--dry-run"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = ok(&args, dir);
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains(" runs ("))
        .filter(|l| l.starts_with("  ") && l.contains("would start"))
        .collect();
    let warm = rows.iter().filter(|l| l.contains(" warm-start ")).count();
    (rows.len(), warm, out)
}

#[test]
fn the_shipped_base_loads_and_answers_held_out_questions() {
    let tmp = project();
    let out = ok(
        &[
            "eval",
            "--model",
            "models/tiny-base",
            "--questions",
            "24",
            "-n",
            "1",
            "--temperature",
            "0",
            "--json",
        ],
        tmp.path(),
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let (acc, format) = (
        v["result"]["accuracy"].as_f64().unwrap(),
        v["result"]["format_rate"].as_f64().unwrap(),
    );
    // A random model gets 0 and no format; the shipped base answers in format and is right
    // on a good share of easy held-out questions.
    assert!(format > 0.9 && acc > 0.25, "{out}");
}

#[test]
fn the_poc_and_the_sweep_start_from_the_shipped_base() {
    let tmp = project();
    let (starts, warm, out) = plan(tmp.path(), "experiments/poc.rhai", &[]);
    assert_eq!((starts, warm), (4, 0), "{out}");
    // The 100-sample stage, 4 modes x 2 seeds; a dry run cannot know the checklist that
    // gates the 1K stage, so it plans the first stage only.
    let sweep = ["scale=1k", "seeds=2"];
    let (starts, warm, out) = plan(tmp.path(), "experiments/nsr_sweep.rhai", &sweep);
    assert_eq!((starts, warm), (8, 0), "{out}");
    let (starts, warm, out) = plan(tmp.path(), "experiments/poc.rhai", &["base=train"]);
    assert_eq!((starts, warm), (5, 1), "{out}");
    assert!(!tmp.path().join("runs/chartrl.db").exists());
}

/// A gold completion that does not fit the completion budget can never be sampled: the
/// question's accuracy is capped below 100% for every mode alike. Every easy gold trace of
/// every split, tokenised by the shipped base's tokenizer, fits the default budgets of
/// evaluation and of RL (end-of-text included).
#[test]
fn every_easy_gold_trace_fits_the_default_completion_budget() {
    use chartrl::data::{gold_completion, Difficulty, Generator, Split};
    let tok =
        tokenizers::Tokenizer::from_file(repo().join("models/tiny-base/tokenizer.json")).unwrap();
    let eval_budget = chartrl::eval::EvalConfig::default().max_new_tokens;
    let rl_budget = chartrl::train::TrainConfig::builtin()
        .unwrap()
        .max_completion_length;
    let mut longest = (0, String::new());
    for split in [Split::Warmup, Split::Train, Split::Test] {
        for s in Generator::with_difficulty(split, 2025, Difficulty::Easy).take(2000) {
            let ids = tok.encode(gold_completion(&s), false).unwrap();
            let tokens = ids.len() + 1;
            if tokens > longest.0 {
                longest = (tokens, s.id.clone());
            }
        }
    }
    assert!(
        longest.0 <= eval_budget && longest.0 <= rl_budget,
        "{} needs {} tokens; budgets: evaluation {eval_budget}, RL {rl_budget}",
        longest.1,
        longest.0
    );
}

/// The shipped base's warm-start data (`warmup_data` in scripts/base.rhai) keeps every
/// `difference`, `ratio` and `share` of the split, half of `sum` and `average` and a third of
/// each guessable type, in the split's order: exactly the size asked for, weighted as the
/// base's README says.
#[test]
fn the_warm_start_data_is_weighted_to_the_arithmetic() {
    let tmp = project();
    let script = r#"
import "base" as base;
let d = base::warmup_data(3000);
let all = chart_data(#{ split: "warmup", seed: 2025 }).take(8000).types();
let picked = d.types();
let count = |ts, t| { let n = 0; for x in ts { if x == t { n += 1; } } n };
print(`size ${d.len()}`);
for t in ["difference", "ratio", "sum", "lookup"] {
    print(`${t} ${count.call(picked, t)} ${count.call(all.extract(0, d.len() * 2), t)}`);
}
print(`first ${picked[0]} ${all[0]}`);
"#;
    std::fs::write(tmp.path().join("mix.rhai"), script).unwrap();
    let out = ok(&["exec", "mix.rhai"], tmp.path());
    let line = |k: &str| -> Vec<String> {
        let l = out
            .lines()
            .find(|l| l.starts_with(&format!("{k} ")))
            .unwrap();
        l.split_whitespace().skip(1).map(String::from).collect()
    };
    assert_eq!(line("size"), ["3000"], "{out}");
    let share = |t: &str| {
        let v = line(t);
        let (kept, pool) = (v[0].parse::<f64>().unwrap(), v[1].parse::<f64>().unwrap());
        kept / pool
    };
    // Against the split's first 6,000 samples, of which the pick walks about 5,850 (51% kept):
    // all of a kept type, about half, about a third.
    assert!(share("difference") > 0.9, "{out}");
    assert!(share("ratio") > 0.9, "{out}");
    assert!((0.4..0.6).contains(&share("sum")), "{out}");
    assert!((0.25..0.42).contains(&share("lookup")), "{out}");
    // The split's first sample is always kept (one in N keeps the first of each type).
    let first = line("first");
    assert_eq!(first[0], first[1], "{out}");
}
