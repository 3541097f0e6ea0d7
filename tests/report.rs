//! `chartrl report` on a store built by hand: every file is written, the tables hold the
//! stored numbers, and each warning fires on the run built to trigger it (and on no other).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use chartrl::data::PromptTemplate;
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

/// The types of the hand-built evaluations' questions: two open-answer, two guessable.
const TYPES: [(&str, f64); 4] = [
    ("sum", 0.0),
    ("difference", 0.0),
    ("trend", 0.5),
    ("max_label", 0.25),
];

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
            question_type: TYPES[i % 4].0.into(),
            chance: Some(TYPES[i % 4].1),
        })
        .collect();
    let name = config.name("synthetic:test", &PromptTemplate::default(), qs.len());
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
    add_eval(&mut s, g2, n, 4, &[2, 0, 2, 0]);
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
        "pass_at_k_guessable.png",
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
    // Open-answer questions (0, 1): accuracy (4/4 + 0)/2 = 50% and (2/4 + 0)/2 = 25%, pass@4
    // 50% and 50%. Guessable (2, 3): accuracy (2/4 + 2/4)/2 = 50% and (2/4 + 0)/2 = 25%,
    // pass@4 100% and 50%. These runs record no updates, kept samples or rewards.
    let row = md
        .lines()
        .find(|l| l.starts_with("| GRPO | 100 |"))
        .unwrap_or_else(|| panic!("no GRPO n=100 row:\n{md}"));
    assert_eq!(
        row,
        "| GRPO | 100 | 2 | - | - | - | 1.925 ± 0.000 | 37.5 ± 17.7 | 50.0 ± 0.0 | 37.5 ± 17.7 | 75.0 ± 35.4 | 40 s |",
        "{md}"
    );
    assert!(md.contains("| mode | train size | seeds | rewards | updates | kept | final reward | open-answer accuracy % | open-answer pass@4 % | guessable accuracy % | guessable pass@4 % | time |"), "{md}");
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
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 7);
    assert!(!html.contains("src=\"training_loss.png\""));
    assert!(html.contains("&lt;answer&gt;grpo-s1 best 39&lt;/answer&gt;"));
    assert!(html.contains("<td>37.5 ± 17.7</td>"));
    // Per-type results: the trend question (index 2) was right 2 of 4 times for both seeds.
    assert!(
        md.contains("| trend | 1 | 50.0 | 93.8 | 50.0 | 100.0 |"),
        "{md}"
    );
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

/// Exact pass@k: `1 - C(n-c, k) / C(n, k)` in integers (independent of chartrl's product).
fn exact_pass(n: u64, c: u64, k: u64) -> f64 {
    fn choose(n: u64, k: u64) -> u128 {
        if k > n {
            return 0;
        }
        (0..k).fold(1u128, |acc, i| acc * (n - i) as u128 / (i + 1) as u128)
    }
    1.0 - choose(n - c, k) as f64 / choose(n, k) as f64
}

/// A small xorshift generator: the test's own randomness, unrelated to chartrl's.
struct XorShift(u64);
impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The two-level paired bootstrap written out plainly: `a[s][j]`, `b[s][j]` per seed and
/// question; returns (estimate, 2.5% and 97.5% percentiles).
fn bootstrap(a: &[Vec<f64>], b: &[Vec<f64>], reps: usize) -> (f64, f64, f64) {
    let q = a[0].len();
    let diff = |qs: &[usize], sa: &[usize], sb: &[usize]| {
        let mut total = 0.0;
        for &j in qs {
            let ma: f64 = sa.iter().map(|&s| a[s][j]).sum::<f64>() / sa.len() as f64;
            let mb: f64 = sb.iter().map(|&s| b[s][j]).sum::<f64>() / sb.len() as f64;
            total += ma - mb;
        }
        total / qs.len() as f64
    };
    let all: Vec<usize> = (0..q).collect();
    let est = diff(
        &all,
        &(0..a.len()).collect::<Vec<_>>(),
        &(0..b.len()).collect::<Vec<_>>(),
    );
    let mut rng = XorShift(0x9e3779b97f4a7c15);
    let mut stats: Vec<f64> = (0..reps)
        .map(|_| {
            let qs: Vec<usize> = (0..q).map(|_| rng.below(q)).collect();
            let sa: Vec<usize> = (0..a.len()).map(|_| rng.below(a.len())).collect();
            let sb: Vec<usize> = (0..b.len()).map(|_| rng.below(b.len())).collect();
            diff(&qs, &sa, &sb)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let pos = p * (reps - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        stats[lo] + (stats[hi] - stats[lo]) * (pos - lo as f64)
    };
    (est, at(0.025), at(0.975))
}

/// `+12.5 [+9.4, +15.7] higher` → (12.5, 9.4, 15.7, "higher").
fn parse_cell(cell: &str) -> (f64, f64, f64, String) {
    let (est, rest) = cell.trim().split_once(" [").unwrap();
    let (lo, rest) = rest.split_once(", ").unwrap();
    let (hi, verdict) = rest.split_once("] ").unwrap();
    let num = |s: &str| s.trim_start_matches('+').parse::<f64>().unwrap();
    (num(est), num(lo), num(hi), verdict.to_string())
}

/// Asserts that a report cell holds the independent (estimate, lo, hi), in points: the estimate
/// to its printed digit, the bounds within `tail` points; returns the cell's verdict.
fn check_cell(cell: &str, (est, lo, hi): (f64, f64, f64), tail: f64, line: &str) -> String {
    let (got_est, got_lo, got_hi, verdict) = parse_cell(cell);
    assert!((got_est - 100.0 * est).abs() < 0.051, "{line}: {est}");
    assert!((got_lo - 100.0 * lo).abs() < tail, "lo: {line}: {lo}");
    assert!((got_hi - 100.0 * hi).abs() < tail, "hi: {line}: {hi}");
    verdict
}

#[test]
fn intervals_and_per_type_tables_match_an_independent_computation() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("runs/chartrl.db");
    let mut s = Store::open(&db).unwrap();
    let (n, q) = (16usize, 26usize);
    let types = [
        "lookup",
        "max_label",
        "min_label",
        "max_value",
        "min_value",
        "difference",
        "sum",
        "average",
        "ratio",
        "share",
        "count_above",
        "trend",
        "compare_series",
    ];
    // The warm start's counts, and each RL run's: the base plus a per-question change, so the
    // runs are correlated with the base question by question (pairing matters).
    let base: Vec<usize> = (0..q).map(|j| (j * 7) % 9).collect();
    type Delta = fn(usize) -> usize;
    let runs: [(&str, &str, u64, Delta); 4] = [
        ("grpo-1", "grpo", 1, |j| (j % 3 == 0) as usize),
        ("grpo-2", "grpo", 2, |j| (j % 4 == 1) as usize),
        ("nsr-1", "nsr", 1, |j| 2 + (j % 2)),
        ("nsr-2", "nsr", 2, |j| 1 + 2 * (j % 3 == 2) as usize),
    ];
    let eval_of = |counts: &[usize]| -> Vec<QuestionResult> {
        counts
            .iter()
            .enumerate()
            .map(|(j, &c)| QuestionResult {
                index: j,
                prompt_id: format!("t{j}"),
                n,
                correct: c.min(n),
                formatted: n,
                truncated: 0,
                tokens: 10 * n,
                question_type: types[j % types.len()].into(),
                chance: Some(if (5..10).contains(&(j % 13)) {
                    0.0
                } else {
                    0.25
                }),
            })
            .collect()
    };
    let config = EvalConfig {
        n,
        ..EvalConfig::default()
    };
    let name = config.name("synthetic:test", &PromptTemplate::default(), q);
    let store_eval = |s: &mut Store, id: i64, step: usize, qs: &[QuestionResult]| {
        s.add_eval_questions(id, step, &name, qs).unwrap();
        let stored = StoredEval {
            data: "synthetic test split, seed 2025".into(),
            config: config.clone(),
            summary: EvalSummary::from_questions(qs).unwrap(),
        };
        s.add_evaluation(id, step, &name, &serde_json::to_value(&stored).unwrap())
            .unwrap();
    };
    let warm = add_run(
        &mut s,
        "warm",
        Kind::WarmStart,
        None,
        serde_json::json!({"samples": 64, "seed": 9}),
        10,
        |_| vec![("loss", 1.0)],
    );
    store_eval(&mut s, warm, 10, &eval_of(&base));
    let mut counts: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (run, mode, seed, delta) in &runs {
        let mut opts = train_opts(mode, 100, *seed);
        opts["rewards"] = serde_json::json!([{"name": "accuracy", "weight": 1.0}]);
        let (r, _) = s
            .find_or_create_run(&NewRun {
                identity: format!("id-{run}"),
                name: run.to_string(),
                experiment: Some("exp".into()),
                kind: Kind::Train,
                mode: Some(mode.to_string()),
                config: serde_json::json!({"options": opts, "model_path": "runs/warm/model"}),
                total_steps: 5,
            })
            .unwrap();
        for step in 0..5 {
            let v: BTreeMap<String, f64> = [
                ("reward", 0.5),
                ("skipped", (step == 0) as u8 as f64),
                ("kept", 8.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            s.log_step(
                r.id,
                &StepRecord {
                    step,
                    values: Some(&v),
                    events: &[],
                    samples: &[],
                    lease: None,
                },
            )
            .unwrap();
        }
        s.mark_done(r.id).unwrap();
        let c: Vec<usize> = (0..q).map(|j| (base[j] + delta(j)).min(n)).collect();
        store_eval(&mut s, r.id, 5, &eval_of(&c));
        counts.insert(run, c);
    }
    // A GRPO run on shaped rewards (not evaluated): a row of its own, never averaged in.
    let mut shaped = train_opts("grpo", 100, 3);
    shaped["rewards"] =
        serde_json::json!([{"name": "accuracy"}, {"name": "format", "weight": 0.5}]);
    add_run(
        &mut s,
        "grpo-shaped",
        Kind::Train,
        Some("grpo"),
        shaped,
        5,
        |_| vec![("reward", 1.0)],
    );
    drop(s);
    ok(&["report", "exp", "--out", "rep"], tmp.path());
    let md = std::fs::read_to_string(tmp.path().join("rep/report.md")).unwrap();
    let grpo_rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| GRPO | 100 |"))
        .collect();
    assert!(
        grpo_rows[0].starts_with("| GRPO | 100 | 2 | accuracy |"),
        "{md}"
    );
    assert!(
        grpo_rows[1].starts_with("| GRPO | 100 | 1 | accuracy + 0.5 format |"),
        "{md}"
    );

    // Every run applied 4 of its 5 updates and kept 8 samples a step.
    let row = md.lines().find(|l| l.starts_with("| NSR | 100 |")).unwrap();
    assert!(
        row.starts_with("| NSR | 100 | 2 | accuracy | 4/5, 4/5 | 40 ± 0 |"),
        "{row}"
    );

    // The intervals on the open-answer questions, against an independent bootstrap.
    let open: Vec<usize> = (0..q).filter(|j| (5..10).contains(&(j % 13))).collect();
    let per_q = |c: &[usize], k: usize| -> Vec<f64> {
        open.iter()
            .map(|&j| exact_pass(n as u64, c[j] as u64, k as u64))
            .collect()
    };
    let section = md.split("### On the open-answer types").nth(1).unwrap();
    for (against, b_runs) in [
        ("warm", vec![&base]),
        ("GRPO", vec![&counts["grpo-1"], &counts["grpo-2"]]),
    ] {
        let line = section
            .lines()
            .find(|l| l.starts_with("| NSR | 100 |") && l.contains(&format!("| {against}")))
            .unwrap_or_else(|| panic!("no NSR vs {against} row:\n{section}"));
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        assert_eq!(cells[3].trim(), open.len().to_string(), "{line}");
        for (i, k) in [1usize, 4, 16].iter().enumerate() {
            let a = vec![per_q(&counts["nsr-1"], *k), per_q(&counts["nsr-2"], *k)];
            let b: Vec<Vec<f64>> = b_runs.iter().map(|c| per_q(c, *k)).collect();
            let (est, lo, hi) = bootstrap(&a, &b, 20_000);
            // Monte Carlo error of 2,000 replicates: well under a point.
            let at_k = format!("pass@{k} vs {against}: {line}");
            let verdict = check_cell(cells[5 + i], (est, lo, hi), 1.0, &at_k);
            let want = if lo > 0.0 {
                "higher"
            } else if hi < 0.0 {
                "lower"
            } else {
                "unresolved"
            };
            if (lo.abs() > 0.01) && (hi.abs() > 0.01) {
                assert_eq!(verdict, want, "{line}");
            }
        }
    }

    // Per open-answer type: NSR against the warm start on the sum questions alone (indices 6
    // and 19), pass@1 and pass@16, against the independent bootstrap.
    let per_type = md.split("### Per open-answer type").nth(1).unwrap();
    let header = per_type
        .lines()
        .find(|l| l.starts_with("| mode |"))
        .unwrap();
    let col = header
        .trim_matches('|')
        .split(" | ")
        .position(|c| c.trim() == "sum pass@1 (pp, 2 q)")
        .unwrap_or_else(|| panic!("no sum column: {header}"));
    let rows: Vec<&str> = per_type
        .lines()
        .filter(|l| l.starts_with("| NSR | 100 | warm start n=64 |"))
        .collect();
    assert_eq!(rows.len(), 2, "one row per k:\n{per_type}");
    for (line, k) in rows.iter().zip([1u64, 16]) {
        let cell = line.trim_matches('|').split(" | ").nth(col).unwrap();
        let at = |c: &[usize]| {
            vec![
                exact_pass(16, c[6] as u64, k),
                exact_pass(16, c[19] as u64, k),
            ]
        };
        let a = vec![at(&counts["nsr-1"]), at(&counts["nsr-2"])];
        // Two questions make a coarse bootstrap distribution: its tails within a few points.
        check_cell(
            cell,
            bootstrap(&a, &[at(&base)], 20_000),
            3.0,
            &format!("pass@{k}: {line}"),
        );
    }
    assert!(
        !per_type.contains("| GRPO | 100 | warm start n=64 | 3 |"),
        "the unevaluated shaped run has no row:\n{per_type}"
    );

    // Per-type table: the sum questions (indices 6 and 19), by hand.
    let sum_row = md
        .lines()
        .find(|l| l.starts_with("| sum |"))
        .unwrap_or_else(|| panic!("no sum row:\n{md}"));
    let cells: Vec<f64> = sum_row
        .trim_matches('|')
        .split(" | ")
        .skip(1)
        .map(|c| c.trim().parse().unwrap())
        .collect();
    let mean_acc = |c: &[usize]| (c[6] + c[19]) as f64 / (2 * n) as f64;
    let mean_pass =
        |c: &[usize]| (exact_pass(16, c[6] as u64, 16) + exact_pass(16, c[19] as u64, 16)) / 2.0;
    let nsr_acc = (mean_acc(&counts["nsr-1"]) + mean_acc(&counts["nsr-2"])) / 2.0;
    let want = [
        2.0,
        0.0,
        0.0,
        100.0 * mean_acc(&base),
        100.0 * mean_pass(&base),
        100.0 * (mean_acc(&counts["grpo-1"]) + mean_acc(&counts["grpo-2"])) / 2.0,
        100.0 * (mean_pass(&counts["grpo-1"]) + mean_pass(&counts["grpo-2"])) / 2.0,
        100.0 * nsr_acc,
        100.0 * (mean_pass(&counts["nsr-1"]) + mean_pass(&counts["nsr-2"])) / 2.0,
    ];
    assert_eq!(cells.len(), want.len(), "{sum_row}");
    for (got, want) in cells.iter().zip(want) {
        assert!((got - want).abs() < 0.051, "{sum_row}: {got} vs {want}");
    }
    // A guessable type shows its chance: 25% a guess, 1 - 0.75^16 over 16.
    let trend = md.lines().find(|l| l.starts_with("| trend |")).unwrap();
    assert!(trend.starts_with("| trend | 2 | 25.0 | 99.0 |"), "{trend}");
}

/// Runs of one mode and size that differ in a trainer option (here the learning rate, as in
/// `experiments/lr_probe.rhai`) are compared side by side, never pooled as seeds of one mode.
#[test]
fn runs_that_differ_in_more_than_the_seed_are_not_pooled() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("runs/chartrl.db");
    {
        let mut s = Store::open(&db).unwrap();
        let base = add_run(
            &mut s,
            "base",
            Kind::Eval,
            None,
            serde_json::json!({}),
            0,
            |_| Vec::new(),
        );
        add_eval(&mut s, base, 0, 4, &[1, 2, 3, 0, 1, 2, 3, 0]);
        for (name, lr, correct) in [
            ("grpo-slow", 1e-5, [1, 2, 3, 0, 1, 2, 3, 0]),
            ("grpo-fast", 5e-5, [4, 4, 4, 4, 4, 4, 4, 4]),
        ] {
            let mut opts = train_opts("grpo", 100, 2025);
            opts["learning_rate"] = serde_json::json!(lr);
            let run = add_run(&mut s, name, Kind::Train, Some("grpo"), opts, 10, |i| {
                rl_step(i, 10)
            });
            add_eval(&mut s, run, 10, 4, &correct);
        }
    }
    ok(&["report", "exp", "--out", "out"], tmp.path());
    let md = std::fs::read_to_string(tmp.path().join("out/report.md")).unwrap();
    for label in ["GRPO (learning_rate 1e-5)", "GRPO (learning_rate 5e-5)"] {
        assert!(md.contains(label), "no row for {label}:\n{md}");
    }
    assert!(
        !md.contains("2025, 2025"),
        "two learning rates pooled as seeds:\n{md}"
    );
    let fast = md
        .lines()
        .find(|l| l.starts_with("| GRPO (learning_rate 5e-5) | 100 | 1 |"))
        .unwrap_or_else(|| panic!("no one-seed row for the fast run:\n{md}"));
    assert!(
        fast.contains("| 100.0 | 100.0 | 100.0 | 100.0 |"),
        "the fast run's own accuracy, not a mean with the slow one: {fast}"
    );
}
