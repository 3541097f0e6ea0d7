//! `chartrl report` on a store built by hand: every file is written, the tables hold the
//! stored numbers, and each warning fires on the run built to trigger it (and on no other).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use chartrl::eval::{EvalConfig, EvalSummary, QuestionResult, StoredEval};
use chartrl::store::{write::StepRecord, Kind, NewRun, SampleRow, Store};
use common::{ok, user_error};

/// A run of the experiment `exp` whose step `i` logs `f(i)` for each key.
fn add_run(
    store: &mut Store,
    name: &str,
    kind: Kind,
    mode: Option<&str>,
    options: serde_json::Value,
    steps: usize,
    f: impl Fn(usize) -> Vec<(&'static str, f64)>,
) -> i64 {
    let (run, _) = store
        .find_or_create_run(&NewRun {
            identity: format!("id-{name}"),
            name: name.into(),
            experiment: Some("exp".into()),
            kind,
            mode: mode.map(str::to_string),
            config: serde_json::json!({ "options": options }),
            total_steps: steps,
        })
        .unwrap();
    for step in 0..steps {
        let values: BTreeMap<String, f64> = f(step)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let samples: Vec<SampleRow> = [("best", 2.0), ("worst", 0.0)]
            .iter()
            .map(|(rank, reward)| SampleRow {
                step,
                rank: rank.to_string(),
                prompt_id: format!("p{step}"),
                completion: format!("<answer>{name} {rank} {step}</answer>"),
                rewards: serde_json::json!({"accuracy": reward / 2.0, "format": 1.0}),
                reward: *reward,
                advantage: 0.0,
            })
            .collect();
        let samples = if kind == Kind::Train {
            samples
        } else {
            Vec::new()
        };
        store
            .log_step(
                run.id,
                &StepRecord {
                    step,
                    values: Some(&values),
                    events: &[],
                    samples: &samples,
                    lease: None,
                },
            )
            .unwrap();
    }
    store.mark_done(run.id).unwrap();
    run.id
}

/// A healthy RL step: reward rising from 1 to 2, a few of each kind of sample.
fn rl_step(i: usize, steps: usize) -> Vec<(&'static str, f64)> {
    let p = i as f64 / steps as f64;
    vec![
        ("loss", 0.0),
        ("grad_norm", 0.5 + 0.01 * (i % 3) as f64),
        ("learning_rate", 1e-5),
        ("reward", 1.0 + p),
        ("positive_ratio", 0.5),
        ("negative_ratio", 0.5),
        ("correct", 4.0),
        ("incorrect", 4.0),
        ("clipped_ratio", 0.0),
        ("step_time", 0.5),
    ]
}

fn with(
    mut v: Vec<(&'static str, f64)>,
    key: &'static str,
    value: f64,
) -> Vec<(&'static str, f64)> {
    for kv in v.iter_mut().filter(|kv| kv.0 == key) {
        kv.1 = value;
    }
    v
}

fn train_opts(mode: &str, size: usize, seed: u64) -> serde_json::Value {
    serde_json::json!({"mode": mode, "subset_size": size, "seed": seed})
}

/// Evaluation results with `correct[i]` of `n` right on question `i`.
fn add_eval(store: &mut Store, run: i64, step: usize, n: usize, correct: &[usize]) -> StoredEval {
    let config = EvalConfig {
        n,
        ..EvalConfig::default()
    };
    let qs: Vec<QuestionResult> = correct
        .iter()
        .enumerate()
        .map(|(i, c)| QuestionResult {
            index: i,
            prompt_id: format!("t{i}"),
            n,
            correct: *c,
            formatted: n,
            truncated: 0,
            tokens: 10 * n,
        })
        .collect();
    let name = config.name("synthetic:test", qs.len());
    store.add_eval_questions(run, step, &name, &qs).unwrap();
    let stored = StoredEval {
        data: "synthetic test split, seed 2025".into(),
        config,
        summary: EvalSummary::from_questions(&qs).unwrap(),
    };
    store
        .add_evaluation(run, step, &name, &serde_json::to_value(&stored).unwrap())
        .unwrap();
    stored
}

fn build_store(db: &Path) {
    let mut s = Store::open(db).unwrap();
    let n = 40;
    // Two seeds of a healthy GRPO run, evaluated (n = 4): accuracies 50% and 25%.
    let g1 = add_run(
        &mut s,
        "grpo-s1",
        Kind::Train,
        Some("grpo"),
        train_opts("grpo", 100, 1),
        n,
        |i| rl_step(i, n),
    );
    let g2 = add_run(
        &mut s,
        "grpo-s2",
        Kind::Train,
        Some("grpo"),
        train_opts("grpo", 100, 2),
        n,
        |i| with(rl_step(i, n), "step_time", 1.5),
    );
    add_eval(&mut s, g1, n, 4, &[4, 0, 2, 2]);
    add_eval(&mut s, g2, n, 4, &[1, 0, 2, 1]);
    // One run per warning.
    add_run(
        &mut s,
        "nsr-all-correct",
        Kind::Train,
        Some("nsr"),
        train_opts("nsr", 100, 1),
        n,
        |i| {
            let v = rl_step(i, n);
            if i % 5 == 0 {
                with(with(v, "incorrect", 0.0), "correct", 8.0)
            } else {
                v
            }
        },
    );
    add_run(
        &mut s,
        "psr-none-correct",
        Kind::Train,
        Some("psr"),
        train_opts("psr", 100, 1),
        n,
        |i| {
            let v = rl_step(i, n);
            if i == 7 {
                with(with(v, "correct", 0.0), "incorrect", 8.0)
            } else {
                v
            }
        },
    );
    add_run(
        &mut s,
        "w-gradient-spike",
        Kind::Train,
        Some("w-reinforce"),
        train_opts("w-reinforce", 100, 1),
        n,
        |i| {
            let v = rl_step(i, n);
            if i == 30 {
                with(v, "grad_norm", 15.8)
            } else {
                v
            }
        },
    );
    add_run(
        &mut s,
        "grpo-truncated",
        Kind::Train,
        Some("grpo"),
        train_opts("grpo", 1000, 1),
        n,
        |i| {
            let v = rl_step(i, n);
            if i > 35 {
                with(v, "clipped_ratio", 1.0)
            } else {
                v
            }
        },
    );
    add_run(
        &mut s,
        "grpo-flat-reward",
        Kind::Train,
        Some("grpo"),
        train_opts("grpo", 1000, 2),
        n,
        |i| with(rl_step(i, n), "reward", 1.5 - 0.001 * i as f64),
    );
    let sft = |loss: f64| {
        vec![
            ("loss", loss),
            ("grad_norm", 1.0),
            ("learning_rate", 1e-4),
            ("step_time", 0.2),
        ]
    };
    add_run(
        &mut s,
        "warm-healthy",
        Kind::WarmStart,
        None,
        serde_json::json!({"samples": 64, "seed": 1}),
        n,
        |i| sft(3.0 * (-(i as f64) / 15.0).exp() + 0.5),
    );
    add_run(
        &mut s,
        "warm-oscillating",
        Kind::WarmStart,
        None,
        serde_json::json!({"samples": 64, "seed": 2}),
        n,
        |i| sft(4.0 - 2.0 * i as f64 / n as f64 + if i % 2 == 0 { 1.5 } else { -1.5 }),
    );
    add_run(
        &mut s,
        "warm-flat",
        Kind::WarmStart,
        None,
        serde_json::json!({"samples": 64, "seed": 3}),
        n,
        |i| sft(3.0 - 0.001 * i as f64),
    );
}

#[test]
fn report_writes_every_file_with_the_stored_numbers_and_each_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("runs/chartrl.db");
    build_store(&db);
    let out = ok(
        &["report", "exp", "--out", "rep", "--db", "runs/chartrl.db"],
        tmp.path(),
    );
    let rep = tmp.path().join("rep");

    for f in [
        "training_loss.png",
        "learning_rate.png",
        "gradient_norm.png",
        "rewards.png",
        "mode_metrics.png",
        "pass_at_k.png",
    ] {
        let bytes = std::fs::read(rep.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 5000,
            "{f}"
        );
    }
    let names = [
        "grpo-s1",
        "grpo-s2",
        "nsr-all-correct",
        "psr-none-correct",
        "w-gradient-spike",
        "grpo-truncated",
        "grpo-flat-reward",
        "warm-healthy",
        "warm-oscillating",
        "warm-flat",
    ];
    let summaries: BTreeMap<&str, String> = names
        .iter()
        .map(|n| {
            (
                *n,
                std::fs::read_to_string(rep.join("runs").join(n).join("summary.txt")).unwrap(),
            )
        })
        .collect();

    // Each warning fires on its run, and only there; healthy runs have none.
    let expected = [
        ("nsr-all-correct", "no_negative_samples"),
        ("psr-none-correct", "no_positive_samples"),
        ("w-gradient-spike", "exploding_gradient"),
        ("grpo-truncated", "all_truncated"),
        ("grpo-flat-reward", "reward_not_increasing"),
        ("warm-oscillating", "oscillating_loss"),
        ("warm-flat", "loss_not_decreasing"),
    ];
    for (run, kind) in expected {
        assert!(
            out.contains(&format!("warning: {run}: {kind}:")),
            "{run} {kind}:\n{out}"
        );
        assert!(summaries[run].contains(kind), "{run}: {}", summaries[run]);
        for (other, text) in &summaries {
            if *other != run {
                assert!(
                    !text.contains(kind),
                    "{kind} also fired on {other}:\n{text}"
                );
            }
        }
    }
    assert_eq!(out.matches("warning: ").count(), expected.len(), "{out}");
    assert!(out.contains("  fix: raise num_generations"), "{out}");
    for healthy in ["grpo-s1", "grpo-s2", "warm-healthy"] {
        assert!(
            summaries[healthy].contains("Warnings: none"),
            "{}",
            summaries[healthy]
        );
    }
    assert!(summaries["nsr-all-correct"].contains("at 8 of 40 steps (first at step 0)"));
    assert!(summaries["w-gradient-spike"].contains("worst at step 30: 15.800"));

    // Summaries: loss reduction over the first and last windows (5 steps of 40).
    let h = &summaries["warm-healthy"];
    assert!(
        h.contains("Total steps: 40 of 40") && h.contains("Training time: 8 s"),
        "{h}"
    );
    assert!(
        h.contains("Loss reduction: ") && h.contains("means of the first and last 5 steps"),
        "{h}"
    );
    assert!(
        summaries["grpo-s1"].contains("Reward: 1.050 → 1.925 (gain +0.875"),
        "{}",
        summaries["grpo-s1"]
    );
    assert!(summaries["grpo-s1"].contains("Evaluation at step 40: accuracy 50.0%"));

    // The comparison table holds the stored numbers: mean ± std over the two GRPO seeds.
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    // Final reward: mean over the last 5 steps = 1 + 37/40 for both seeds.
    // Accuracy: 50% and 25%; pass@4: 75% and 75%.
    let row = md
        .lines()
        .find(|l| l.starts_with("| GRPO | 100 |"))
        .unwrap_or_else(|| panic!("no GRPO n=100 row:\n{md}"));
    assert_eq!(
        row, "| GRPO | 100 | 2 | 1.925 ± 0.000 | 37.5 ± 17.7 | 37.5 ± 17.7 | 75.0 ± 0.0 | 40 s |",
        "{md}"
    );
    assert!(md.contains("| mode | train size | seeds | final reward | accuracy % (n=4) | pass@1 % (n=4) | pass@4 % (n=4) | time |"), "{md}");
    assert!(
        md.contains(
            "4 questions of the synthetic test split, seed 2025, n = 4 completions per question"
        ),
        "{md}"
    );
    assert!(md.contains("![") && md.contains("(pass_at_k.png)"));
    assert!(
        md.contains("Best completion of the last 5 steps: step 39"),
        "{md}"
    );
    assert!(md.contains("<answer>grpo-s1 best 39</answer>"));

    let html = std::fs::read_to_string(rep.join("report.html")).unwrap();
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 6);
    assert!(!html.contains("src=\"training_loss.png\""));
    assert!(html.contains("&lt;answer&gt;grpo-s1 best 39&lt;/answer&gt;"));
    assert!(html.contains("<td>37.5 ± 17.7</td>"));
}

#[test]
fn report_selects_runs_and_refuses_unknown_names() {
    let tmp = tempfile::tempdir().unwrap();
    build_store(&tmp.path().join("runs/chartrl.db"));
    let out = ok(
        &["report", "warm-flat", "grpo-s1", "--out", "two"],
        tmp.path(),
    );
    assert!(out.contains("report of 2 runs"), "{out}");
    let err = user_error(&["report", "nope"], tmp.path());
    assert!(
        err.contains("`nope` is neither an experiment nor a run"),
        "{err}"
    );
    let err = user_error(&["report", "exp", "--db", "missing/chartrl.db"], tmp.path());
    assert!(err.contains("missing/chartrl.db"), "{err}");
}
