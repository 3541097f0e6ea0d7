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
}
