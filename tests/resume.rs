//! Crash safety through the real binary and the real SQLite file: a run killed with SIGKILL at
//! a random step, or in the middle of writing a checkpoint, and then re-run with the same
//! command ends with the same weights and the same metric rows as a run never interrupted; a
//! corrupted checkpoint is skipped with a warning; two processes never train one run at once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chartrl::runs::identity::sha256_file;
use chartrl::store::{MetricRow, SampleRow, Store};
use chartrl::train::TIMING_KEYS;
use common::{ok, stderr};

const RUN: &str = "crash";
/// 12 steps, a checkpoint every 2, the last 3 kept.
const TRAIN: &[&str] = &[
    "train",
    "--model",
    "m",
    "--mode",
    "nsr",
    "--subset-size",
    "8",
    "--batch-size",
    "2",
    "--num-generations",
    "2",
    "--max-completion-length",
    "16",
    "--num-epochs",
    "3",
    "--save-steps",
    "2",
    "--learning-rate",
    "1e-3",
    "--name",
    RUN,
];

fn init_model(dir: &Path) {
    common::tiny_model(dir, "m");
}

/// 12 warm-start steps, a checkpoint every 2.
const WARM: &[&str] = &[
    "warm-start",
    "--model",
    "m",
    "--samples",
    "24",
    "--batch-size",
    "4",
    "--epochs",
    "2",
    "--save-steps",
    "2",
    "--eval-size",
    "2",
    "--name",
    RUN,
];

fn spawn(dir: &Path, fault: Option<&str>) -> Child {
    spawn_args(dir, TRAIN, fault)
}

fn spawn_args(dir: &Path, args: &[&str], fault: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chartrl"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(f) = fault {
        cmd.env("CHARTRL_FAULT", f);
    }
    cmd.spawn().expect("spawning chartrl")
}

/// What a finished run left: its metric rows (wall-clock values blanked), kept completions,
/// and the hash of its final weights.
#[derive(Debug)]
struct Record {
    metrics: Vec<MetricRow>,
    samples: Vec<SampleRow>,
    weights: String,
}

fn record(dir: &Path) -> Record {
    let store = Store::open(&dir.join("runs/chartrl.db")).unwrap();
    let run = store.find_run(RUN).unwrap();
    assert_eq!(run.status.as_str(), "done");
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let metrics = store
        .metrics(run.id)
        .unwrap()
        .into_iter()
        .map(|mut m| {
            m.time = 0.0;
            if TIMING_KEYS.contains(&m.key.as_str()) {
                m.value = None;
            }
            m
        })
        .collect();
    let (weights, _) =
        sha256_file(&dir.join("runs").join(RUN).join("model/model.safetensors")).unwrap();
    Record {
        metrics,
        samples: store.samples(run.id, 0).unwrap(),
        weights,
    }
}

/// The uninterrupted run, trained once for every test in this file.
fn reference() -> &'static Record {
    static REFERENCE: OnceLock<Record> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        init_model(tmp.path());
        ok(TRAIN, tmp.path());
        let r = record(tmp.path());
        assert_eq!(r.metrics.iter().map(|m| m.step).max(), Some(11));
        assert!(r.metrics.len() > 12 * 20, "{}", r.metrics.len());
        r
    })
}

/// Asserts two records are equal, naming the first difference.
fn assert_same(got: &Record, want: &Record, context: &str) {
    assert_eq!(got.weights, want.weights, "{context}: final weights differ");
    assert_eq!(
        got.metrics.len(),
        want.metrics.len(),
        "{context}: metric row count"
    );
    if let Some((g, w)) = got.metrics.iter().zip(&want.metrics).find(|(g, w)| g != w) {
        panic!("{context}: first differing metric row: got {g:?}, want {w:?}");
    }
    assert_eq!(
        got.samples, want.samples,
        "{context}: kept completions differ"
    );
}

fn db_step(db: &Path) -> Option<usize> {
    let store = Store::open(db).ok()?;
    store.find_run(RUN).ok().map(|r| r.step)
}

fn kill_when_step_reaches(dir: &Path, target: usize) -> usize {
    let db = dir.join("runs/chartrl.db");
    let mut child = spawn(dir, None);
    wait_for_step(&db, target, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    db_step(&db).unwrap_or(0)
}

/// Waits until the run in `db` has done `target` steps.
fn wait_for_step(db: &Path, target: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !db.is_file() || db_step(db).unwrap_or(0) < target {
        assert!(Instant::now() < deadline, "run never reached step {target}");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before step {target}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_run_killed_at_a_random_step_resumes_to_identical_weights_and_metrics() {
    let want = reference();
    let tmp = tempfile::tempdir().unwrap();
    init_model(tmp.path());
    let target = std::env::var("CHARTRL_TEST_KILL_STEP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as usize;
            1 + nanos % 10
        });
    let at = kill_when_step_reaches(tmp.path(), target);
    eprintln!("killed at step {at} (CHARTRL_TEST_KILL_STEP={target} reproduces)");
    let table = ok(&["runs"], tmp.path());
    assert!(
        table.contains("crash  ") && table.contains("crashed"),
        "{table}"
    );
    let out = ok(TRAIN, tmp.path());
    assert!(out.contains("NSR `crash`"), "{out}");
    assert_same(&record(tmp.path()), want, &format!("killed at step {at}"));
}

#[test]
fn a_run_killed_while_writing_a_checkpoint_resumes_exactly() {
    let want = reference();
    for fault in [
        "checkpoint-files:4",
        "checkpoint-rename:6",
        "checkpoint-commit:8",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        init_model(tmp.path());
        let status = spawn(tmp.path(), Some(fault)).wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{fault}: {status:?}");
        let ckpts = tmp.path().join("runs").join(RUN).join("checkpoints");
        let leftovers: Vec<PathBuf> = std::fs::read_dir(&ckpts)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!leftovers.is_empty(), "{fault}: nothing written");
        let out = ok(TRAIN, tmp.path());
        assert!(out.contains("resumed `crash`"), "{fault}: {out}");
        assert_same(&record(tmp.path()), want, fault);
        let names: Vec<String> = std::fs::read_dir(&ckpts)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with(".tmp")),
            "{fault}: {names:?}"
        );
    }
}

#[test]
fn a_truncated_latest_checkpoint_falls_back_to_the_previous_one_with_a_warning() {
    let want = reference();
    let tmp = tempfile::tempdir().unwrap();
    init_model(tmp.path());
    spawn(tmp.path(), Some("checkpoint-commit:8"))
        .wait()
        .unwrap();
    let weights = tmp
        .path()
        .join("runs")
        .join(RUN)
        .join("checkpoints/checkpoint-6/model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = ok(TRAIN, tmp.path());
    assert!(out.contains("from its checkpoint at step 4"), "{out}");
    assert_same(&record(tmp.path()), want, "fallback");
    let store = Store::open(&tmp.path().join("runs/chartrl.db")).unwrap();
    let run = store.find_run(RUN).unwrap();
    let events = store.events(run.id).unwrap();
    let warning = events
        .iter()
        .find(|e| e.kind == "checkpoint_corrupt")
        .expect("a checkpoint_corrupt event");
    assert_eq!(warning.level, "warning");
    assert!(
        warning.message.contains("step 6") && warning.message.contains("does not match"),
        "{}",
        warning.message
    );
}

#[test]
fn two_processes_on_one_run_train_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    init_model(tmp.path());
    let a = spawn(tmp.path(), None);
    let b = spawn(tmp.path(), None);
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
    let loser = outs
        .iter()
        .find(|o| o.status.code() == Some(1))
        .unwrap_or_else(|| {
            let errs: Vec<String> = outs.iter().map(stderr).collect();
            panic!("expected one process to refuse, got {codes:?}: {errs:#?}")
        });
    assert!(outs.iter().any(|o| o.status.success()), "{codes:?}");
    let msg = stderr(loser);
    assert!(msg.contains("is being trained by pid"), "{msg}");
    let store = Store::open(&tmp.path().join("runs/chartrl.db")).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    assert_eq!(store.find_run(RUN).unwrap().status.as_str(), "done");
    assert_same(&record(tmp.path()), reference(), "two processes");
}

#[test]
fn ctrl_c_and_sigterm_stop_between_steps_with_a_checkpoint_and_resume_exactly() {
    let want = reference();
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let tmp = tempfile::tempdir().unwrap();
        init_model(tmp.path());
        let db = tmp.path().join("runs/chartrl.db");
        let child = spawn(tmp.path(), None);
        let deadline = Instant::now() + Duration::from_secs(120);
        while db_step(&db).unwrap_or(0) < 3 {
            assert!(
                Instant::now() < deadline,
                "SIG{signal}: the run never reached step 3"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let out = child.wait_with_output().unwrap();
        let msg = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "SIG{signal}: {msg}");
        assert!(
            msg.contains("checkpoint saved; run the same command to resume"),
            "{msg}"
        );

        let store = Store::open(&db).unwrap();
        let run = store.find_run(RUN).unwrap();
        assert_eq!(run.status.as_str(), "interrupted");
        assert!(run.step >= 3 && run.step < 12, "stopped at {}", run.step);
        assert_eq!(store.checkpoints(run.id).unwrap()[0].step, run.step);
        drop(store);

        let out = ok(TRAIN, tmp.path());
        assert!(
            out.contains(&format!("from its checkpoint at step {}", run.step)),
            "{out}"
        );
        assert_same(&record(tmp.path()), want, &format!("SIG{signal}"));
    }
}

#[test]
fn an_interrupted_warm_start_resumes_exactly_and_is_reused_when_done() {
    let straight = tempfile::tempdir().unwrap();
    init_model(straight.path());
    let out = ok(WARM, straight.path());
    assert!(out.contains("held-out greedy accuracy"), "{out}");
    let want = record(straight.path());

    let tmp = tempfile::tempdir().unwrap();
    init_model(tmp.path());
    let db = tmp.path().join("runs/chartrl.db");
    let mut child = spawn_args(tmp.path(), WARM, None);
    wait_for_step(&db, 5, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = ok(WARM, tmp.path());
    assert!(
        out.contains("resumed `crash` from its checkpoint at step"),
        "{out}"
    );
    assert_same(&record(tmp.path()), &want, "warm start");

    let again = ok(WARM, tmp.path());
    assert!(again.contains("already done (12/12 steps)"), "{again}");
    let store = Store::open(&db).unwrap();
    let run = store.find_run(RUN).unwrap();
    assert_eq!(run.kind.as_str(), "warm-start");
    assert_eq!(store.evaluations(run.id).unwrap().len(), 1);
}

/// A warm start's pieces do not follow the thread count, and their gradients are summed in
/// piece order, so one thread and three give the same run bit for bit.
#[test]
fn a_warm_start_gives_the_same_run_on_any_thread_count() {
    let mut records = Vec::new();
    for threads in ["1", "3"] {
        let tmp = tempfile::tempdir().unwrap();
        init_model(tmp.path());
        let status = Command::new(env!("CARGO_BIN_EXE_chartrl"))
            .args(WARM)
            .current_dir(tmp.path())
            .env_remove("RUST_LOG")
            .env("CHARTRL_THREADS", threads)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "CHARTRL_THREADS={threads}");
        records.push(record(tmp.path()));
    }
    assert_same(&records[1], &records[0], "3 threads against 1");
}

#[test]
fn a_copied_runs_directory_resumes_elsewhere() {
    let want = reference();
    let here = tempfile::tempdir().unwrap();
    init_model(here.path());
    spawn(here.path(), Some("checkpoint-commit:8"))
        .wait()
        .unwrap();
    // Another machine: the model and runs/ copied to a different absolute path.
    let there = tempfile::tempdir().unwrap();
    let copied = Command::new("cp")
        .args(["-a", "m", "runs"])
        .arg(there.path())
        .current_dir(here.path())
        .status()
        .unwrap();
    assert!(copied.success());
    drop(here);
    let out = ok(TRAIN, there.path());
    assert!(out.contains("from its checkpoint at step 6"), "{out}");
    assert_same(&record(there.path()), want, "copied");
}
