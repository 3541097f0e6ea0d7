//! Faults and bad input through the real binary: a diverged run fails loudly and keeps its
//! last good checkpoint, nothing overwrites a model, scripts are bounded, interrupted writes
//! leave whole files, validation happens before a run exists, errors name what is wrong and
//! exit with the right code, and a full disk stops a run that then resumes exactly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chartrl::store::Store;
use common::{chartrl, ok, stderr, stdout, user_error};

fn tiny(dir: &Path) {
    common::tiny_model(dir, "m");
}

/// Arguments of a short NSR run (NSR always has a wrong answer to push down).
fn nsr(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "--model",
        "m",
        "--mode",
        "nsr",
        "--subset-size",
        "4",
        "--batch-size",
        "2",
        "--num-generations",
        "2",
        "--max-completion-length",
        "8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn store(dir: &Path) -> Store {
    Store::open(&dir.join("runs/chartrl.db")).unwrap()
}

#[test]
fn a_diverged_run_fails_keeps_its_last_good_checkpoint_and_writes_no_model() {
    let tmp = tempfile::tempdir().unwrap();
    tiny(tmp.path());
    let cmd = nsr(&[
        "--learning-rate",
        "1e30",
        "--set",
        "max_grad_norm=0",
        "--save-steps",
        "1",
        "--num-epochs",
        "3",
        "--name",
        "boom",
    ]);
    let err = user_error(&args(&cmd), tmp.path());
    assert!(err.contains("training diverged"), "{err}");
    assert!(
        err.contains("lower learning_rate") && err.contains("max_grad_norm"),
        "{err}"
    );
    assert_eq!(
        err.matches("training diverged").count(),
        1,
        "said once: {err}"
    );
    let s = store(tmp.path());
    let run = s.find_run("boom").unwrap();
    assert_eq!(run.status.as_str(), "failed");
    let event = s
        .events(run.id)
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "non_finite")
        .expect("a non_finite event");
    assert!(
        event.message.contains(&format!("step {}", event.step)),
        "{event:?}"
    );
    assert!(
        ["loss", "gradient norm", "weight"]
            .iter()
            .any(|q| event.message.contains(q)),
        "{event:?}"
    );
    // The last checkpoint was taken before the failing step, and no final model exists.
    let ckpts = s.checkpoints(run.id).unwrap();
    assert!(!ckpts.is_empty());
    assert!(ckpts[0].step <= event.step);
    assert!(!tmp.path().join("runs/boom/model").exists());
    // Reports say the loss diverged instead of printing an old value as final.
    let out = ok(&["monitor", "boom"], tmp.path());
    assert!(out.contains("Final loss: not finite"), "{out}");
    assert!(out.contains("non_finite"), "{out}");

    // A model with a NaN tensor does not load: the error names the tensor.
    let ck = tmp.path().join("runs").join(&ckpts[0].path);
    let mut weights =
        candle_core::safetensors::load(ck.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let name = "model.norm.weight".to_string();
    let t = weights[&name].clone();
    weights.insert(name.clone(), (t * f64::NAN).unwrap());
    candle_core::safetensors::save(&weights, ck.join("model.safetensors")).unwrap();
    let err = user_error(&["model", "info", ck.to_str().unwrap()], tmp.path());
    assert!(
        err.contains("model.norm.weight") && err.contains("NaN"),
        "{err}"
    );
}

#[test]
fn model_init_never_overwrites_a_model_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    tiny(tmp.path());
    let weights = tmp.path().join("m/model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let err = user_error(
        &[
            "model",
            "init",
            "--out",
            "m",
            "--corpus-size",
            "300",
            "--seed",
            "9",
        ],
        tmp.path(),
    );
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&weights).unwrap(),
        before,
        "weights untouched"
    );
    ok(
        &[
            "model",
            "init",
            "--out",
            "m",
            "--corpus-size",
            "300",
            "--seed",
            "9",
            "--force",
        ],
        tmp.path(),
    );
    assert_ne!(std::fs::read(&weights).unwrap(), before);
    // Every file it writes has the usual mode (safetensors' own temporaries are 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| {
            std::fs::metadata(tmp.path().join("m").join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("model.safetensors"), mode("config.json"));
        assert_ne!(mode("model.safetensors"), 0o600);
    }
    // Nothing but the model is left beside it.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

fn script(dir: &Path, text: &str, extra: &[&str]) -> std::process::Output {
    std::fs::write(dir.join("s.rhai"), text).unwrap();
    let mut a = vec!["exec", "s.rhai"];
    a.extend_from_slice(extra);
    chartrl(&a, dir)
}

#[test]
fn scripts_are_bounded_in_time_and_pushes_are_linear() {
    let tmp = tempfile::tempdir().unwrap();
    // Two million pushes: quadratic before (about 20 minutes); well inside 60 s now.
    let o = script(
        tmp.path(),
        "let a = []; for i in 0..2000000 { a.push(i); } print(a.len());",
        &["--time-limit", "60"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2000000"), "{}", stdout(&o));
    // The time limit stops a script that runs on (here: at once, with a limit of 0 s).
    let o = script(
        tmp.path(),
        "let x = 0; loop { x += 1; }",
        &["--time-limit", "0"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("s.rhai:1") && err.contains("more than 0 s outside training"),
        "{err}"
    );
}

#[test]
fn an_interrupted_data_gen_leaves_the_old_file_whole() {
    let tmp = tempfile::tempdir().unwrap();
    ok(
        &["data", "gen", "--size", "200", "--out", "d.jsonl"],
        tmp.path(),
    );
    let before = std::fs::read(tmp.path().join("d.jsonl")).unwrap();
    for signal in ["INT", "TERM", "KILL"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chartrl"))
            .args(["data", "gen", "--size", "3000000", "--out", "d.jsonl"])
            .current_dir(tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until it is writing its temporary file.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !temp_files(tmp.path()).iter().any(|f| f.contains("d.tmp")) {
            assert!(Instant::now() < deadline, "no temporary file appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "{signal}");
        assert_eq!(
            std::fs::read(tmp.path().join("d.jsonl")).unwrap(),
            before,
            "{signal}: the old file changed"
        );
        let out = ok(&["data", "stats", "d.jsonl"], tmp.path());
        assert!(out.contains("200 samples"), "{out}");
        if signal != "KILL" {
            // A handled signal also removes the temporary file.
            assert_eq!(status.code(), Some(if signal == "INT" { 130 } else { 143 }));
            assert!(
                temp_files(tmp.path()).is_empty(),
                "{:?}",
                temp_files(tmp.path())
            );
        }
    }
    let err = user_error(
        &["data", "gen", "--size", "0", "--out", "e.jsonl"],
        tmp.path(),
    );
    assert!(err.contains("--size 0"), "{err}");
    assert!(!tmp.path().join("e.jsonl").exists());
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

#[test]
fn bad_options_data_and_models_are_refused_before_a_run_exists_and_said_once() {
    let tmp = tempfile::tempdir().unwrap();
    tiny(tmp.path());
    ok(
        &["data", "gen", "--size", "3", "--out", "three.jsonl"],
        tmp.path(),
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            nsr(&["--data", "three.jsonl"]),
            "`subset_size` is 4 but the data has only 3",
        ),
        (
            nsr(&["--set", r#"rewards=[{"name":"acuracy"}]"#]),
            "unknown reward `acuracy`",
        ),
        (
            nsr(&["--set", "max_completion_length=100000"]),
            "sample 1 (`train-2025-0`)",
        ),
        (
            nsr(&["--set", "batch_size=8"]),
            "`batch_size` (8) is larger than `subset_size` (4)",
        ),
    ];
    for (cmd, needle) in &cases {
        let err = user_error(&args(cmd), tmp.path());
        assert!(err.contains(needle), "{cmd:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.contains(needle)).count(),
            1,
            "{err}"
        );
        assert_eq!(err.matches(needle).count(), 1, "said once: {err}");
    }
    if tmp.path().join("runs/chartrl.db").is_file() {
        assert!(
            store(tmp.path()).list_runs().unwrap().is_empty(),
            "a run was recorded"
        );
    }
    let err = user_error(
        &[
            "warm-start",
            "--model",
            "m",
            "--data",
            "three.jsonl",
            "--samples",
            "10",
            "--batch-size",
            "2",
        ],
        tmp.path(),
    );
    assert!(
        err.contains("`samples` is 10 but the data has only 3"),
        "{err}"
    );
}

#[test]
fn errors_name_the_file_the_line_or_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    tiny(tmp.path());
    let d = tmp.path();
    // A byte-order mark at the start of a JSONL file is skipped, not an error.
    ok(&["data", "gen", "--size", "2", "--out", "plain.jsonl"], d);
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(std::fs::read(d.join("plain.jsonl")).unwrap());
    std::fs::write(d.join("bom.jsonl"), bom).unwrap();
    assert!(ok(&["data", "stats", "bom.jsonl"], d).contains("2 samples"));
    // A store whose directory is a file.
    std::fs::write(d.join("afile"), "x").unwrap();
    let err = user_error(&["runs", "--db", "afile/chartrl.db"], d);
    assert!(err.contains("afile"), "{err}");
    let err = user_error(&args(&nsr(&["--db", "afile/chartrl.db"])), d);
    assert!(err.contains("afile: a file, not a directory"), "{err}");
    // A model path that is a file.
    let err = user_error(&["train", "--model", "plain.jsonl"], d);
    assert!(
        err.contains("a file, not a model directory") && !err.contains("model init"),
        "{err}"
    );
    // An io error is said once, not once per layer.
    std::fs::create_dir(d.join("adir.jsonl")).unwrap();
    let err = user_error(&["data", "gen", "--size", "2", "--out", "adir.jsonl"], d);
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    assert!(err.contains("adir.jsonl"), "{err}");
}

#[test]
fn user_and_environment_errors_exit_1_not_2() {
    let tmp = tempfile::tempdir().unwrap();
    tiny(tmp.path());
    let d = tmp.path();
    std::fs::write(d.join("notdb.db"), "just some text, not SQLite at all").unwrap();
    let err = user_error(&["runs", "--db", "notdb.db"], d);
    assert!(
        err.contains("notdb.db") && err.contains("not an SQLite database"),
        "{err}"
    );
    // A tokenizer with more tokens than the embedding has rows.
    let cfg = d.join("m/config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c["vocab_size"] = 100.into();
    std::fs::write(&cfg, c.to_string()).unwrap();
    let err = user_error(&["sample", "--model", "m", "-n", "1"], d);
    assert!(
        err.contains("tokenizer.json") && err.contains("vocab_size 100"),
        "{err}"
    );
}

#[test]
fn silent_surprises_are_said() {
    let tmp = tempfile::tempdir().unwrap();
    tiny(tmp.path());
    let d = tmp.path();
    // Checkpoints deleted before a resume: the restart from zero is announced.
    let run = nsr(&["--save-steps", "1", "--num-epochs", "2", "--name", "again"]);
    ok(&args(&run), d);
    {
        let mut s = store(d);
        let r = s.find_run("again").unwrap();
        // Make it resumable (as a crash would), with its checkpoints gone.
        for c in s.checkpoints(r.id).unwrap() {
            s.delete_checkpoint(r.id, c.step).unwrap();
        }
    }
    std::fs::remove_dir_all(d.join("runs/again/checkpoints")).unwrap();
    let db = d.join("runs/chartrl.db");
    let conn_sql = "UPDATE runs SET status = 'interrupted' WHERE name = 'again'";
    sqlite(&db, conn_sql);
    let out = chartrl(&args(&run), d);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("starting over from step 0"), "{said}");

    // A second exec while the first trains: the run is busy, not failed.
    std::fs::write(
        d.join("long.rhai"),
        r#"train(#{ mode: "nsr", model: model("m"), data: chart_data().take(40), batch_size: 2,
                    num_generations: 2, max_completion_length: 16, num_epochs: 3, name: "long" });"#,
    )
    .unwrap();
    let mut first = Command::new(env!("CARGO_BIN_EXE_chartrl"))
        .args(["exec", "long.rhai"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store(d).find_run("long").map(|r| r.step).unwrap_or(0) < 1 {
        assert!(Instant::now() < deadline, "the first exec never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = chartrl(&["exec", "long.rhai"], d);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(1));
    let said = format!("{}{}", stdout(&second), stderr(&second));
    assert!(said.contains("busy (another process trains it)"), "{said}");
    assert!(!said.contains("failed ("), "{said}");
    assert!(said.contains("is being trained by pid"), "{said}");
}

/// Runs one SQL statement with the system's sqlite3 module (through python3).
fn sqlite(db: &Path, sql: &str) {
    let status = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import sqlite3;c=sqlite3.connect({:?});c.execute({sql:?});c.commit()",
                db.display().to_string()
            ),
        ])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_store_deleted_under_a_running_trainer_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    tiny(tmp.path());
    let d = tmp.path();
    let run = nsr(&[
        "--set",
        "subset_size=40",
        "--num-epochs",
        "5",
        "--name",
        "gone",
    ]);
    let child = Command::new(env!("CARGO_BIN_EXE_chartrl"))
        .args(args(&run))
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store(d).find_run("gone").map(|r| r.step).unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    for f in ["chartrl.db", "chartrl.db-wal", "chartrl.db-shm"] {
        let _ = std::fs::remove_file(d.join("runs").join(f));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("was deleted"), "{}", stderr(&out));
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` where this process may not mount (not root): the caller skips, except in CI.
    fn mount(dir: &Path, megabytes: usize) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, megabytes: usize) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={megabytes}m")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Metric rows of a done run, wall-clock figures blanked.
fn metrics(db: &Path, name: &str) -> Vec<chartrl::store::MetricRow> {
    let s = Store::open(db).unwrap();
    let r = s.find_run(name).unwrap();
    assert_eq!(r.status.as_str(), "done");
    s.metrics(r.id)
        .unwrap()
        .into_iter()
        .map(|mut m| {
            m.time = 0.0;
            if chartrl::train::TIMING_KEYS.contains(&m.key.as_str()) {
                m.value = None;
            }
            m
        })
        .collect()
}

/// ENOSPC from a real file system: the runs directory on a 64 MB tmpfs, where one checkpoint
/// (37 MB: weights and two AdamW moments) fits and a second does not.
#[test]
fn a_full_disk_interrupts_the_run_cleanly_and_it_resumes_exactly_once_freed() {
    let tmp = tempfile::tempdir().unwrap();
    tiny(tmp.path());
    let d = tmp.path();
    let Some(fs) = Tmpfs::mount(&d.join("small"), 64) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs for the full-disk test (run as root)"
        );
        eprintln!("skipped: cannot mount a tmpfs here (not root)");
        return;
    };
    let db = fs.0.join("runs/chartrl.db");
    let db_arg = db.to_str().unwrap();
    let run = nsr(&[
        "--save-steps",
        "1",
        "--num-epochs",
        "2",
        "--name",
        "full",
        "--db",
        db_arg,
    ]);
    let err = user_error(&args(&run), d);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(fs.0.to_str().unwrap()),
        "names the path: {err}"
    );
    assert_eq!(err.matches("No space left").count(), 1, "said once: {err}");
    let leftovers: Vec<String> = walk(&fs.0)
        .into_iter()
        .filter(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".tmp"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    {
        let s = Store::open(&db).unwrap();
        let r = s.find_run("full").unwrap();
        assert_eq!(r.status.as_str(), "interrupted");
        assert!(s
            .events(r.id)
            .unwrap()
            .iter()
            .any(|e| e.kind == "disk_full"));
    }
    // Read-only commands work with the disk completely full.
    let filler = fs.0.join("filler");
    let _ = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=1M",
            "count=64",
        ])
        .stderr(Stdio::null())
        .status();
    ok(&["runs", "--db", db_arg], d);
    ok(&["runs", "show", "full", "--db", db_arg], d);
    ok(&["monitor", "full", "--db", db_arg], d);
    std::fs::remove_file(&filler).unwrap();
    // Space freed: the same command resumes and ends exactly as a run never interrupted.
    fs.resize(256);
    let out = ok(&args(&run), d);
    assert!(out.contains("resumed"), "{out}");
    let clean = nsr(&["--save-steps", "1", "--num-epochs", "2", "--name", "full"]);
    ok(&args(&clean), d);
    assert_eq!(
        metrics(&db, "full"),
        metrics(&d.join("runs/chartrl.db"), "full")
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.display().to_string());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}
