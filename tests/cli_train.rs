//! `chartrl warm-start` and `chartrl train` through the real binary on a tiny model.

mod common;

use common::{ok, user_error};

#[test]
fn warm_start_then_train_each_mode_briefly() {
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_model(tmp.path(), "m");
    let out = ok(
        &[
            "warm-start",
            "--model",
            "m",
            "--out",
            "w",
            "--samples",
            "8",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--eval-size",
            "4",
            "--log-every",
            "1",
        ],
        tmp.path(),
    );
    assert!(
        out.contains("SFT [Step 0]") && out.contains("held-out greedy accuracy"),
        "{out}"
    );
    for (mode, needle) in [
        ("grpo", "GRPO [Step 0]"),
        ("psr", "positive samples"),
        ("nsr", "negative samples"),
        ("w-reinforce", "pos (λ=0.1)"),
    ] {
        let run = format!("r-{mode}");
        let out = ok(
            &[
                "train",
                "--mode",
                mode,
                "--model",
                "w",
                "--subset-size",
                "2",
                "--batch-size",
                "2",
                "--num-generations",
                "2",
                "--max-completion-length",
                "8",
                "--name",
                &run,
            ],
            tmp.path(),
        );
        assert!(out.contains(needle), "{mode}: {out}");
        let csv = ok(&["runs", "export", &run], tmp.path());
        assert!(csv.starts_with("step,key,value,time\n0,"), "{csv}");
        assert!(tmp
            .path()
            .join("runs")
            .join(&run)
            .join("model/model.safetensors")
            .is_file());
    }
    inspect_trained_runs(tmp.path());

    let err = user_error(&["train", "--mode", "ppo", "--model", "w"], tmp.path());
    assert!(err.contains("ppo"), "{err}");
    let err = user_error(
        &["train", "--model", "w", "--set", "num_generation=3"],
        tmp.path(),
    );
    assert!(
        err.contains("num_generation") && err.contains("num_generations"),
        "{err}"
    );
    // Options that cannot make a fair run are refused, naming the option.
    for (args, needle) in [
        (
            &["--num-generations", "1"][..],
            "`num_generations` must be at least 2 for grpo",
        ),
        (
            &["--reward-threshold", "0"][..],
            "`reward_threshold` must be in (0, 1]",
        ),
        (
            &["--reward-threshold", "1.5"][..],
            "`reward_threshold` must be in (0, 1]",
        ),
        (
            &[
                "--set",
                r#"rewards=[{"name":"accuracy"},{"name":"overlong","params":{"cache":500}}]"#,
            ][..],
            "reward `overlong`: `cache` (500) must be between 1 and `max_completion_len` (160)",
        ),
    ] {
        let mut cmd = vec!["train", "--model", "w", "--subset-size", "2"];
        cmd.extend_from_slice(args);
        let err = user_error(&cmd, tmp.path());
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `chartrl` with a command line split on spaces.
fn line(cmd: &str, dir: &std::path::Path) -> String {
    ok(&cmd.split_whitespace().collect::<Vec<_>>(), dir)
}

/// The runs trained above through sample, monitor, eval and report.
fn inspect_trained_runs(dir: &std::path::Path) {
    let out = line("sample --run r-nsr --index 3 -n 2 --max-new-tokens 8", dir);
    assert!(
        out.contains("run r-nsr at step 1") && out.contains("gold answer"),
        "{out}"
    );
    // The runs trained on the default reward: correctness alone.
    for needle in ["accuracy ", "total ", "/2 correct ---"] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    line("data gen --split test --size 8 --out t.jsonl", dir);
    let out = line(
        "sample --run r-psr --data t.jsonl --index 7 -n 2 --max-new-tokens 8",
        dir,
    );
    assert!(
        out.contains("question 7 (") && out.contains("/2 correct ---"),
        "{out}"
    );
    let err = user_error(
        &[
            "sample", "--run", "r-psr", "--data", "t.jsonl", "--index", "8",
        ],
        dir,
    );
    assert!(err.contains("only 8 questions"), "{err}");
    let out = line(
        "eval --run r-psr --data t.jsonl -n 2 --max-new-tokens 8",
        dir,
    );
    assert!(out.contains("on 8 questions of the t.jsonl"), "{out}");
    let out = line("monitor r-nsr", dir);
    assert!(
        out.contains("r-nsr — done — step 1/1") && out.contains("TRAINING SUMMARY: r-nsr"),
        "{out}"
    );
    assert!(
        out.contains("negative_ratio") && out.contains("Reward:"),
        "{out}"
    );
    let out = line(
        "eval --run r-grpo --questions 3 -n 2 --max-new-tokens 8",
        dir,
    );
    assert!(
        out.contains("r-grpo at step 1 on 3 questions") && out.contains("pass@2"),
        "{out}"
    );
    let out = line("report r-grpo r-psr r-nsr r-w-reinforce --out rep", dir);
    assert!(out.contains("report of 4 runs"), "{out}");
    let md = std::fs::read_to_string(dir.join("rep/report.md")).unwrap();
    assert!(
        md.contains("pass@2 %") && md.contains("| GRPO | 2 | 1 | accuracy | 0/1"),
        "{md}"
    );
}
