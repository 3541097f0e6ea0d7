//! `chartrl exec` on small scripts through the real binary and the real SQLite file: sweeps,
//! reuse, script rewards, parameters, dry runs, edits, and every kind of script error.

mod common;

use std::path::Path;

use chartrl::store::Store;
use common::{chartrl, ok, stderr, stdout, user_error};

/// Two modes on 4 samples, 2 steps each.
const SWEEP: &str = r#"
let n = param("n", 4);
let modes = param("modes", "nsr,psr").split(",");
let base = model("tiny");
for mode in modes {
    let run = train(#{ mode: mode, model: base, data: chart_data(#{ size: 100 }).take(n),
                       batch_size: 2, num_generations: 2, max_completion_length: 12 });
    print(`${run.name} ${run.status}`);
}
"#;

/// How many runs of the closing summary table ended with `action`.
fn count(out: &str, action: &str) -> usize {
    out.lines()
        .skip_while(|l| !l.contains(" runs ("))
        .filter(|l| l.starts_with("  ") && l.contains(&format!(" {action} ")))
        .count()
}

/// Creates the tiny preset model (so dry runs can name the runs that train it).
fn init(dir: &Path) {
    write(dir, "init.rhai", "model(\"tiny\");");
    ok(&["exec", "init.rhai"], dir);
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn runs_in(dir: &Path) -> Vec<(String, String)> {
    let db = dir.join("runs/chartrl.db");
    if !db.is_file() {
        return Vec::new();
    }
    let store = Store::open(&db).unwrap();
    store
        .list_runs()
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.status.as_str().to_string()))
        .collect()
}

#[test]
fn a_sweep_runs_then_is_reused_and_an_edit_trains_only_the_new_run() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "sweep.rhai", SWEEP);
    let out = ok(&["exec", "sweep.rhai"], tmp.path());
    assert!(out.contains("2 runs (did)"), "{out}");
    assert_eq!(count(&out, "trained"), 2, "{out}");
    let runs = runs_in(tmp.path());
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|(_, s)| s == "done"), "{runs:?}");

    let again = ok(&["exec", "sweep.rhai"], tmp.path());
    assert_eq!(count(&again, "reused"), 2, "{again}");
    assert_eq!(count(&again, "trained"), 0, "{again}");

    // The script edited: a third mode.
    write(
        tmp.path(),
        "sweep.rhai",
        &SWEEP.replace("\"nsr,psr\"", "\"nsr,psr,grpo\""),
    );
    let edited = ok(&["exec", "sweep.rhai"], tmp.path());
    assert_eq!(count(&edited, "reused"), 2, "{edited}");
    assert_eq!(count(&edited, "trained"), 1, "{edited}");
    assert!(edited.contains("grpo-n4-"), "{edited}");
    assert_eq!(runs_in(tmp.path()).len(), 3);
}

#[test]
fn set_changes_the_plan_and_a_dry_run_trains_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "sweep.rhai", SWEEP);
    let plan = ok(&["exec", "sweep.rhai", "--dry-run"], tmp.path());
    assert_eq!(count(&plan, "would start"), 2, "{plan}");
    assert!(
        !tmp.path().join("runs/chartrl.db").exists(),
        "a dry run created the store"
    );
    assert!(
        !tmp.path().join("runs/models").exists(),
        "a dry run created the model"
    );

    init(tmp.path());
    let plan = ok(&["exec", "sweep.rhai", "--dry-run"], tmp.path());
    assert_eq!(count(&plan, "would start"), 2, "{plan}");
    assert!(plan.contains("nsr-n4-") && plan.contains("0/2"), "{plan}");

    let plan6 = ok(
        &[
            "exec",
            "sweep.rhai",
            "--dry-run",
            "--set",
            "n=6",
            "--set",
            "modes=grpo",
        ],
        tmp.path(),
    );
    assert_eq!(count(&plan6, "would start"), 1, "{plan6}");
    assert!(
        plan6.contains("grpo-n6-") && plan6.contains("0/3"),
        "{plan6}"
    );

    ok(&["exec", "sweep.rhai"], tmp.path());
    let after = ok(
        &["exec", "sweep.rhai", "--dry-run", "--set", "modes=nsr,grpo"],
        tmp.path(),
    );
    assert_eq!(count(&after, "would reuse"), 1, "{after}");
    assert_eq!(count(&after, "would start"), 1, "{after}");
    assert_eq!(runs_in(tmp.path()).len(), 2);

    let typo = ok(
        &["exec", "sweep.rhai", "--dry-run", "--set", "sizes=3"],
        tmp.path(),
    );
    assert!(
        typo.contains("--set sizes was given but the script never asks"),
        "{typo}"
    );
}

#[test]
fn a_script_reward_is_recorded_and_changes_the_total() {
    let tmp = tempfile::tempdir().unwrap();
    let script = |extra: &str| {
        format!(
            r#"
let run = train(#{{ mode: "nsr", model: model("tiny"), data: chart_data(#{{ size: 4 }}),
                   batch_size: 2, num_generations: 2, max_completion_length: 12,
                   rewards: [#{{ name: "format", weight: 1.0 }}{extra}] }});
print(`total ${{run.metric("reward")}}`);
"#
        )
    };
    write(tmp.path(), "plain.rhai", &script(""));
    write(
        tmp.path(),
        "custom.rhai",
        &script(
            r#", #{ name: "always_two", weight: 0.5, score: |c, s| if s.answer != "" { 2 } else { 0 } }"#,
        ),
    );
    let plain = ok(&["exec", "plain.rhai"], tmp.path());
    let custom = ok(&["exec", "custom.rhai"], tmp.path());
    let total = |out: &str| -> f64 {
        out.lines()
            .find_map(|l| l.strip_prefix("total "))
            .unwrap_or_else(|| panic!("{out}"))
            .parse()
            .unwrap()
    };
    assert!(
        (total(&custom) - total(&plain) - 1.0).abs() < 1e-9,
        "{plain}\n{custom}"
    );
    let store = Store::open(&tmp.path().join("runs/chartrl.db")).unwrap();
    let runs = store.list_runs().unwrap();
    assert_eq!(
        runs.len(),
        2,
        "the closure reward gave the run a new identity"
    );
    let run = store.find_run(&runs[1].name).unwrap();
    let rows = store.metrics(run.id).unwrap();
    let custom_rows: Vec<_> = rows
        .iter()
        .filter(|m| m.key == "rewards/always_two/mean")
        .collect();
    assert_eq!(custom_rows.len(), 2);
    assert!(custom_rows.iter().all(|m| m.value == Some(2.0)));
}

/// Runs a broken script; asserts exit 1, a message with `script.rhai:LINE:COL`, and that the
/// store holds what it held before.
fn broken(dir: &Path, body: &str, line: usize, needles: &[&str]) {
    write(dir, "bad.rhai", body);
    let before = runs_in(dir);
    let err = user_error(&["exec", "bad.rhai"], dir);
    assert!(
        err.contains(&format!("bad.rhai:{line}:")),
        "no position for line {line}:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "`{n}` missing from:\n{err}");
    }
    assert_eq!(runs_in(dir), before, "the store changed");
}

#[test]
fn script_errors_point_at_the_line_exit_1_and_leave_the_store_alone() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "sweep.rhai", SWEEP);
    ok(&["exec", "sweep.rhai", "--set", "modes=nsr"], tmp.path());
    assert_eq!(runs_in(tmp.path()).len(), 1);
    let d = tmp.path();
    broken(
        d,
        "let x = 1;\nlet y = (2 + ;\n",
        2,
        &["Syntax error", "let y = (2 + ;"],
    );
    broken(
        d,
        "let m = model(\"tiny\");\ntrain(#{ mode: \"nsr\", model: m, num_generation: 3 });\n",
        2,
        &["unknown trainer option `num_generation`", "num_generations"],
    );
    broken(
        d,
        "let m = model(\"tiny\");\n\ntrain(#{ mode: \"nsr\", model: m, batch_size: \"two\" });\n",
        3,
        &["option `batch_size`", "invalid type"],
    );
    broken(
        d,
        "let d = chart_data(#{ difficulty: \"extreme\" });\n",
        1,
        &["unknown difficulty `extreme`", "easy, medium or hard"],
    );
    broken(
        d,
        "let d = data(\"missing.jsonl\");\n",
        1,
        &["missing.jsonl"],
    );
    broken(
        d,
        "let d = data(\"../outside.jsonl\");\n",
        1,
        &["outside the working directory"],
    );
    broken(
        d,
        "import \"../../etc/x\" as x;\n",
        1,
        &["may only import modules from"],
    );
    broken(
        d,
        "let i = 0;\nwhile true { i += 1; }\n",
        2,
        &["ran more than 50 million operations"],
    );
    broken(
        d,
        "let m = model(\"huge\");\n",
        1,
        &["no preset of that name"],
    );
}

#[test]
fn a_failing_run_names_itself_and_stops_the_script_unless_told_to_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let script = |keep_going: bool| {
        format!(
            r#"
let m = model("tiny");
let bad = train(#{{ mode: "nsr", model: m, data: chart_data(#{{ size: 4 }}), max_completion_length: 12,
                   batch_size: 2, num_generations: 2, continue_on_error: {keep_going},
                   rewards: [#{{ name: "boom", weight: 1.0, score: |c, s| throw "boom" }}] }});
print(`after: ${{bad.name}} ${{bad.status}}`);
"#
        )
    };
    write(tmp.path(), "stop.rhai", &script(false));
    let err = user_error(&["exec", "stop.rhai"], tmp.path());
    assert!(
        err.contains("stop.rhai:3:") && err.contains("run `nsr-n4-") && err.contains("boom"),
        "{err}"
    );
    let runs = runs_in(tmp.path());
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].1, "failed");

    write(tmp.path(), "go.rhai", &script(true));
    let o = chartrl(&["exec", "go.rhai"], tmp.path());
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("after: nsr-n4-") && out.contains(" failed"),
        "{out}"
    );
    assert_eq!(count(&out, "failed"), 1, "{out}");
    assert!(stderr(&o).contains("1 run failed"), "{}", stderr(&o));
}

/// Runs `args` with `CHARTRL_FAULT` set to `fault`.
fn with_fault(args: &[&str], dir: &Path, fault: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_chartrl"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("CHARTRL_FAULT", fault)
        .output()
        .unwrap()
}

#[test]
fn a_kernel_failure_exits_2_inside_a_script_as_on_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(
        d,
        "k.rhai",
        r#"
let m = model("tiny");
let r = train(#{ mode: "nsr", model: m, data: chart_data(#{ size: 4 }), max_completion_length: 12,
                 batch_size: 2, num_generations: 2 });
"#,
    );
    let o = with_fault(&["exec", "k.rhai"], d, "kernel:1");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("k.rhai:3:") && err.contains("injected kernel failure"),
        "{err}"
    );
    assert_eq!(runs_in(d)[0].1, "failed");
    let cli = with_fault(
        &[
            "train",
            "--mode",
            "nsr",
            "--model",
            "runs/models/tiny",
            "--subset-size",
            "4",
            "--batch-size",
            "2",
            "--num-generations",
            "2",
            "--max-completion-length",
            "12",
            "--name",
            "cli-run",
        ],
        d,
        "kernel:1",
    );
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));

    // A script that catches the failure reads its message and goes on; the failed run
    // still makes the script's exit status 1.
    write(
        d,
        "catch.rhai",
        r#"
let m = model("tiny");
try {
    train(#{ mode: "psr", model: m, data: chart_data(#{ size: 4 }), max_completion_length: 12,
             batch_size: 2, num_generations: 2 });
} catch (e) {
    print(`caught: ${e}`);
}
"#,
    );
    let o = with_fault(&["exec", "catch.rhai"], d, "kernel:0");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("caught: run `psr-n4-"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn ctrl_c_stops_the_script_with_the_run_checkpointed_and_exec_again_resumes_it() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "long.rhai",
        r#"
let run = train(#{ mode: "nsr", model: model("tiny"), data: chart_data(#{ size: 40 }),
                   batch_size: 2, num_generations: 2, max_completion_length: 12, save_steps: 5 });
print(`finished ${run.name}`);
"#,
    );
    let db = tmp.path().join("runs/chartrl.db");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_chartrl"))
        .args(["exec", "long.rhai"])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let step = db
            .is_file()
            .then(|| {
                Store::open(&db)
                    .ok()?
                    .list_runs()
                    .ok()?
                    .first()
                    .map(|r| r.step)
            })
            .flatten()
            .unwrap_or(0);
        if step >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached step 2"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("long.rhai:2:") && err.contains("stopped"),
        "{err}"
    );
    let runs = runs_in(tmp.path());
    assert_eq!(runs[0].1, "interrupted");

    let again = ok(&["exec", "long.rhai"], tmp.path());
    assert_eq!(count(&again, "resumed"), 1, "{again}");
    assert!(again.contains("finished nsr-n40-"), "{again}");
}

#[test]
fn a_script_evaluates_with_pass_at_k_and_writes_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let script = SWEEP.replace(
        "    print(`${run.name} ${run.status}`);",
        r#"    let e = evaluate(run, chart_data(#{ split: "test" }).take(3), #{ n: 2, k: [1, 2], max_tokens: 8 });
    print(`${run.name}: ${e.questions} questions, n ${e.n}, accuracy ${e.accuracy}, pass@2 ${e.pass_at_k["2"]}`);"#,
    ) + "evaluate(base, chart_data(#{ split: \"test\" }).take(3), #{ n: 2, k: [1, 2], max_tokens: 8 });\n"
        + "print(`report in ${report(#{ out: \"reports/ev\" })}`);\n";
    write(tmp.path(), "ev.rhai", &script);
    let out = ok(&["exec", "ev.rhai"], tmp.path());
    assert_eq!(
        out.matches(": 3 questions, n 2, accuracy ").count(),
        2,
        "{out}"
    );
    // The two runs, and the bare model they started from as the model before RL.
    assert!(out.contains("report of 3 runs written to"), "{out}");
    let md = std::fs::read_to_string(tmp.path().join("reports/ev/report.md")).unwrap();
    assert!(md.contains("| NSR | 4 | tiny |"), "{md}");
    for f in [
        "report.html",
        "report.md",
        "pass_at_k.png",
        "mode_metrics.png",
    ] {
        assert!(tmp.path().join("reports/ev").join(f).is_file(), "{f}");
    }
    let store = Store::open(&tmp.path().join("runs/chartrl.db")).unwrap();
    let evals: usize = store
        .list_runs()
        .unwrap()
        .iter()
        .map(|r| {
            store
                .evaluations(store.find_run(&r.name).unwrap().id)
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(evals, 3);
    drop(store);

    // Again: runs reused, evaluations read back with the same numbers.
    let again = ok(&["exec", "ev.rhai"], tmp.path());
    let lines = |o: &str| -> Vec<String> {
        o.lines()
            .filter(|l| l.contains("pass@2"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(lines(&out), lines(&again));

    write(
        tmp.path(),
        "bad.rhai",
        "let r = train(#{ mode: \"nsr\", model: model(\"tiny\"), data: chart_data(#{ size: 100 }).take(4), batch_size: 2, num_generations: 2, max_completion_length: 12 });\nevaluate(r, chart_data(#{ split: \"test\" }).take(3), #{ n: 2, k: [4] });",
    );
    let err = user_error(&["exec", "bad.rhai"], tmp.path());
    assert!(
        err.contains("bad.rhai:2") && err.contains("pass@4 needs at least 4 samples"),
        "{err}"
    );
}

#[test]
fn the_checklist_passes_real_runs_and_fails_a_run_whose_filter_broke() {
    let tmp = tempfile::tempdir().unwrap();
    let script = SWEEP.replace(
        "    print(`${run.name} ${run.status}`);",
        "    let c = run.checklist();\n    print(`${run.name} ${run.mode} passed=${c.passed} ${c.problems}`);",
    );
    write(tmp.path(), "check.rhai", &script);
    let out = ok(&["exec", "check.rhai"], tmp.path());
    assert_eq!(out.matches(" passed=true").count(), 2, "{out}");

    // What an NSR trainer whose filter let a correct sample through would have recorded at
    // its last step: one kept sample counted correct.
    let db = tmp.path().join("runs/chartrl.db");
    let mut store = Store::open(&db).unwrap();
    let nsr = store
        .list_runs()
        .unwrap()
        .into_iter()
        .find(|r| r.name.starts_with("nsr-"))
        .unwrap();
    let run = store.find_run(&nsr.name).unwrap();
    let last = run.step - 1;
    let at = |key: &str| {
        store
            .metrics(run.id)
            .unwrap()
            .iter()
            .find(|m| m.key == key && m.step == last)
            .and_then(|m| m.value)
            .unwrap()
    };
    let (kept, correct) = (at("kept"), at("correct"));
    let values: std::collections::BTreeMap<String, f64> = [
        ("kept".to_string(), kept + 1.0),
        ("kept_correct".to_string(), 1.0),
        ("correct".to_string(), correct.max(1.0)),
    ]
    .into_iter()
    .collect();
    store
        .log_step(
            run.id,
            &chartrl::store::write::StepRecord {
                step: last,
                values: Some(&values),
                events: &[],
                samples: &[],
                lease: None,
            },
        )
        .unwrap();
    drop(store);
    let out = ok(&["exec", "check.rhai"], tmp.path());
    let line = out
        .lines()
        .find(|l| l.contains(" nsr passed="))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("passed=false") && line.contains(&format!("step {last}: nsr kept 1 correct")),
        "{line}"
    );
    assert_eq!(out.matches(" passed=true").count(), 1, "{out}");
}

#[test]
fn a_script_picks_training_questions_by_their_per_question_results() {
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"
let pool = chart_data(#{ size: 100 }).take(6);
let e = evaluate(model("tiny"), pool, #{ n: 2, max_tokens: 8 });
let total = 0;
for c in e.correct { if c < 0 || c > 2 { throw `count ${c}`; } total += c; }
print(`counts ${e.correct.len()}, consistent ${total / 12.0 == e.accuracy}`);
let picked = pool.pick([4, 1]);
print(`picked ${picked.len()}: ${picked}`);
print(`types ${pool.types()} ${pool.pick([5, 0]).types()}`);
let run = train(#{ mode: "nsr", model: model("tiny"), data: picked, batch_size: 2,
                   num_generations: 2, max_completion_length: 12 });
print(`${run.name} ${run.status}`);
// The same size from the first samples: a different run, never pooled with the pick's.
train(#{ mode: "nsr", model: model("tiny"), data: pool.take(2), batch_size: 2,
         num_generations: 2, max_completion_length: 12 });
report(#{ out: "rep" });
"#;
    write(tmp.path(), "pick.rhai", script);
    let out = ok(&["exec", "pick.rhai"], tmp.path());
    assert!(out.contains("counts 6, consistent true"), "{out}");
    assert!(
        out.contains("picked 2: pick(synthetic train split, seed 2025, easy, 2 picked)"),
        "{out}"
    );
    // The generator's own types, in data order, and a pick's in pick order.
    ok(
        &[
            "data",
            "gen",
            "--size",
            "6",
            "--difficulty",
            "easy",
            "--out",
            "six.jsonl",
        ],
        tmp.path(),
    );
    // Each type as JSON writes it, quoted, as Rhai prints a string in an array.
    let gen: Vec<String> = std::fs::read_to_string(tmp.path().join("six.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["question_type"].to_string())
        .collect();
    assert_ne!(gen[5], gen[0], "the pick must tell the order apart");
    let expect = format!("types [{}] [{}, {}]", gen.join(", "), gen[5], gen[0]);
    assert!(out.contains(&expect), "want {expect}:\n{out}");
    let store = Store::open(&tmp.path().join("runs/chartrl.db")).unwrap();
    let name = store
        .list_runs()
        .unwrap()
        .into_iter()
        .find(|r| r.name.starts_with("nsr-n2-"))
        .expect("the nsr run on the pick")
        .name;
    let run = store.find_run(&name).unwrap();
    assert_eq!(run.status.as_str(), "done");
    let data = run.config["data"].as_str().unwrap().to_string();
    assert!(data.starts_with("subset:synthetic:"), "{data}");
    drop(store);
    let md = std::fs::read_to_string(tmp.path().join("rep/report.md")).unwrap();
    for label in [
        "NSR (data synthetic train split, seed 2025, easy, 2 picked)",
        "NSR (data synthetic train split, seed 2025, easy)",
    ] {
        assert!(md.contains(label), "no row for {label}:\n{md}");
    }
    // The same pick is the same run.
    let again = ok(&["exec", "pick.rhai"], tmp.path());
    assert_eq!(count(&again, "reused"), 2, "{again}");

    write(
        tmp.path(),
        "bad.rhai",
        "let pool = chart_data(#{ size: 100 }).take(6);\npool.pick([2, 6]);",
    );
    let err = user_error(&["exec", "bad.rhai"], tmp.path());
    assert!(
        err.contains("bad.rhai:2") && err.contains("`6` is not a position in this data (0 to 5)"),
        "{err}"
    );
}
