//! Helpers shared by the integration tests: run the real `chartrl` binary.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub fn chartrl(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chartrl"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("running chartrl")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs chartrl and asserts it succeeded, returning stdout.
pub fn ok(args: &[&str], cwd: &Path) -> String {
    let o = chartrl(args, cwd);
    assert!(
        o.status.success(),
        "chartrl {args:?} failed:\n{}",
        stderr(&o)
    );
    stdout(&o)
}

/// Runs chartrl, asserts exit code 1 (a user error), and returns stderr.
pub fn user_error(args: &[&str], cwd: &Path) -> String {
    let o = chartrl(args, cwd);
    assert_eq!(
        o.status.code(),
        Some(1),
        "chartrl {args:?}: expected exit 1, got {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

/// Creates a tiny preset model (a 300-text tokenizer corpus, for speed) at `dir/name`.
pub fn tiny_model(dir: &Path, name: &str) {
    ok(
        &[
            "model",
            "init",
            "--preset",
            "tiny",
            "--out",
            name,
            "--corpus-size",
            "300",
        ],
        dir,
    );
}
