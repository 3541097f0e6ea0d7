//! `chartrl model ...`, `sample` and `bench` through the real binary.

mod common;

use common::{chartrl, ok, stderr, user_error};

fn init_tiny(dir: &std::path::Path) {
    common::tiny_model(dir, "m");
}

#[test]
fn init_info_and_logprobs() {
    let tmp = tempfile::tempdir().unwrap();
    init_tiny(tmp.path());
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(tmp.path().join("m").join(f).is_file(), "{f} missing");
    }
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["model", "info", "m"], tmp.path())).unwrap();
    assert_eq!(info["hidden_size"], 256);
    assert_eq!(info["num_hidden_layers"], 4);
    let n = info["parameters"].as_u64().unwrap();
    assert!((2_500_000..3_500_000).contains(&n), "{n} parameters");

    let out = ok(
        &[
            "model",
            "logprobs",
            "m",
            "--text",
            "<think>\n12 + 3 = 15\n</think>",
        ],
        tmp.path(),
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ids = v["ids"].as_array().unwrap();
    let lps = v["logprobs"].as_array().unwrap();
    assert_eq!(ids.len(), lps.len());
    assert_eq!(v["tokens"].as_array().unwrap().len(), ids.len());
    assert!(lps[0].is_null());
    assert!(lps[1..].iter().all(|x| x.as_f64().unwrap() < 0.0));
    assert_eq!(v["tokens"][0], "<think>");
}

#[test]
fn sampling_is_deterministic_for_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    init_tiny(tmp.path());
    let run = |seed: &str| {
        let out = ok(
            &[
                "sample",
                "--model",
                "m",
                "--index",
                "3",
                "-n",
                "3",
                "--max-new-tokens",
                "12",
                "--seed",
                seed,
            ],
            tmp.path(),
        );
        // Drop the timing line, which differs between runs.
        out.lines()
            .filter(|l| !l.contains("tokens/s"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(run("5"), run("5"));
    assert_ne!(run("5"), run("6"));
}

#[test]
fn broken_model_directories_are_user_errors_that_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = user_error(&["model", "info", "nowhere"], tmp.path());
    assert!(err.contains("nowhere"), "{err}");

    init_tiny(tmp.path());
    let m = tmp.path().join("m");
    let good_cfg = std::fs::read_to_string(m.join("config.json")).unwrap();

    // Truncated safetensors.
    let st = std::fs::read(m.join("model.safetensors")).unwrap();
    std::fs::write(m.join("model.safetensors"), &st[..st.len() / 2]).unwrap();
    let err = user_error(&["model", "info", "m"], tmp.path());
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::write(m.join("model.safetensors"), &st).unwrap();

    // Bad JSON.
    std::fs::write(m.join("config.json"), "{\"vocab_size\": 512,").unwrap();
    let err = user_error(&["model", "info", "m"], tmp.path());
    assert!(err.contains("config.json") && err.contains("JSON"), "{err}");

    // Unknown architecture.
    std::fs::write(
        m.join("config.json"),
        good_cfg
            .replace("\"qwen2\"", "\"llama\"")
            .replace("Qwen2ForCausalLM", "LlamaForCausalLM"),
    )
    .unwrap();
    let err = user_error(&["model", "info", "m"], tmp.path());
    assert!(
        err.contains("config.json") && err.contains("llama"),
        "{err}"
    );
    std::fs::write(m.join("config.json"), &good_cfg).unwrap();

    // Missing and corrupt tokenizer.
    let tok = std::fs::read(m.join("tokenizer.json")).unwrap();
    std::fs::write(m.join("tokenizer.json"), b"not json").unwrap();
    let err = user_error(&["model", "logprobs", "m", "--text", "hi"], tmp.path());
    assert!(err.contains("tokenizer.json"), "{err}");
    std::fs::remove_file(m.join("tokenizer.json")).unwrap();
    let err = user_error(&["model", "info", "m"], tmp.path());
    assert!(err.contains("tokenizer.json"), "{err}");
    std::fs::write(m.join("tokenizer.json"), &tok).unwrap();
    ok(&["model", "info", "m"], tmp.path());

    let err = user_error(
        &["model", "init", "--preset", "huge", "--out", "x"],
        tmp.path(),
    );
    assert!(err.contains("huge") && err.contains("tiny"), "{err}");
}

#[test]
fn bench_prints_one_json_object_per_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(
        &["bench", "--preset", "tiny", "--reps", "1", "--store", "2"],
        tmp.path(),
    );
    let figures: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(figures.len(), 6, "{out}");
    assert_eq!(figures[0]["figure"], "rollout");
    let sampled = figures[0]["new_tokens_per_s"].as_f64().unwrap();
    assert!(sampled > 0.0);
    // Rows x the longest completion: never fewer than the tokens sampled.
    assert!(figures[0]["decoded_tokens_per_s"].as_f64().unwrap() >= sampled);
    assert_eq!(figures[1]["figure"], "update");
    assert!(figures[1]["seconds"].as_f64().unwrap() > 0.0);
    assert!(figures[1]["peak_rss_mb"].as_f64().unwrap() > 0.0);
    assert_eq!(figures[2]["figure"], "script_reward");
    assert!(figures[2]["script_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(figures[3]["figure"], "grpo_step");
    assert_eq!(figures[3]["sequences"], 8);
    let rollout = figures[3]["rollout_seconds"].as_f64().unwrap();
    assert!(rollout > 0.0 && rollout < figures[3]["seconds"].as_f64().unwrap());
    // 8 prompts of about 200 tokens and their completions.
    assert!(figures[3]["tokens"].as_u64().unwrap() > 1600, "{out}");
    assert_eq!(figures[4]["figure"], "sft_step");
    assert_eq!(figures[4]["sequences"], 32);
    assert!(figures[4]["tokens_per_s"].as_f64().unwrap() > 0.0);
    // The update's phases: forward and backward summed over threads, passes and the
    // optimizer in wall time, within the update's own time.
    for f in [&figures[1], &figures[3], &figures[4]] {
        let p = &f["phases"];
        let get = |k: &str| p[k].as_f64().unwrap_or_else(|| panic!("{k} in {f}"));
        assert!(get("forward") > 0.0 && get("backward") > 0.0 && get("optimizer") > 0.0);
        assert!(
            get("passes") + get("optimizer") <= f["seconds"].as_f64().unwrap(),
            "{f}"
        );
    }
    assert!(figures[0].get("phases").is_none());
    assert_eq!(figures[5]["figure"], "store");
    assert_eq!(figures[5]["steps"], 2);
    assert!(figures[5]["store_seconds"].as_f64().unwrap() > 0.0);
    assert!(figures[5]["checkpoint_mb"].as_f64().unwrap() > 1.0);
    let only = ok(
        &[
            "bench",
            "--reps",
            "1",
            "--figure",
            "rollout",
            "--prompts",
            "3",
            "--completions",
            "2",
        ],
        tmp.path(),
    );
    assert_eq!(only.lines().count(), 1, "{only}");
    let rollout: serde_json::Value = serde_json::from_str(&only).unwrap();
    assert_eq!(rollout["figure"], "rollout");
    assert_eq!(rollout["workload"]["prompts"], 3);
    assert_eq!(rollout["workload"]["completions"], 2);
    let o = chartrl(&["bench", "--prompts", "0"], tmp.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let o = chartrl(&["model", "init"], tmp.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = chartrl(&["--help"], tmp.path());
    assert_eq!(o.status.code(), Some(0));
    for sub in [
        &["model", "init", "--help"][..],
        &["sample", "--help"],
        &["bench", "--help"],
        &["model", "logprobs", "--help"],
    ] {
        let o = chartrl(sub, tmp.path());
        assert!(
            common::stdout(&o).contains("Example"),
            "{sub:?} --help has no example"
        );
    }
}
