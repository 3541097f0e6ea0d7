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

fn planned(out: &str, what: &str) -> usize {
    out.lines()
        .skip_while(|l| !l.contains(" runs ("))
        .filter(|l| l.starts_with("  ") && l.contains(what))
        .count()
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
    let poc = ok(&["exec", "experiments/poc.rhai", "--dry-run"], tmp.path());
    assert_eq!(planned(&poc, "would start"), 4, "{poc}");
    assert_eq!(planned(&poc, " warm-start "), 0, "{poc}");
    let sweep = ok(
        &[
            "exec",
            "experiments/nsr_sweep.rhai",
            "--set",
            "scale=1k",
            "--set",
            "seeds=2",
            "--dry-run",
        ],
        tmp.path(),
    );
    // The 100-sample stage, 4 modes x 2 seeds; a dry run cannot know the checklist that
    // gates the 1K stage, so it plans the first stage only.
    assert_eq!(planned(&sweep, "would start"), 8, "{sweep}");
    assert_eq!(planned(&sweep, " warm-start "), 0, "{sweep}");
    let own = ok(
        &[
            "exec",
            "experiments/poc.rhai",
            "--set",
            "base=train",
            "--dry-run",
        ],
        tmp.path(),
    );
    assert_eq!(planned(&own, " warm-start "), 1, "{own}");
    assert!(!tmp.path().join("runs/chartrl.db").exists());
}
