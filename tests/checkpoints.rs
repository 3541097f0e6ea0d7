//! Real checkpoints and every device, with fixtures written by hand (no PyTorch): a Qwen2
//! directory in transformers 4's config layout and in transformers 5's gives the same
//! log-probs, and those agree with an f64 forward pass written here; fields chartrl does not
//! implement are refused by name; chat templates render exactly; CUDA from a CPU build is a
//! clear error on every command; an edited prompt template is a new run.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use chartrl::model::{ChatMessage, ChatTemplate, Policy};
use common::{ok, user_error};

/// The architecture of the fixture: GQA 4:1, untied, RoPE base 1e6.
const HIDDEN: usize = 64;
const HEADS: usize = 8;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const FF: usize = 96;
const LAYERS: usize = 2;
const THETA: f64 = 1e6;
const EPS: f64 = 1e-6;

/// A deterministic pseudo-random stream in [-scale, scale).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, scale: f64) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
    }
}

/// Every weight of the fixture, rounded through bf16 (what the shards store), as f64.
fn weights(vocab: usize) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let mut rng = Lcg(7);
    let mut w = HashMap::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f64, offset: f64| {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|_| half::bf16::from_f64(offset + rng.next(scale)).to_f64())
            .collect();
        w.insert(name, (shape, v));
    };
    put(
        "model.embed_tokens.weight".into(),
        vec![vocab, HIDDEN],
        0.5,
        0.0,
    );
    put("lm_head.weight".into(), vec![vocab, HIDDEN], 0.3, 0.0);
    put("model.norm.weight".into(), vec![HIDDEN], 0.2, 1.0);
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        put(
            format!("{p}.input_layernorm.weight"),
            vec![HIDDEN],
            0.2,
            1.0,
        );
        put(
            format!("{p}.post_attention_layernorm.weight"),
            vec![HIDDEN],
            0.2,
            1.0,
        );
        put(
            format!("{p}.self_attn.q_proj.weight"),
            vec![HEADS * HEAD_DIM, HIDDEN],
            0.3,
            0.0,
        );
        put(
            format!("{p}.self_attn.q_proj.bias"),
            vec![HEADS * HEAD_DIM],
            0.1,
            0.0,
        );
        put(
            format!("{p}.self_attn.k_proj.weight"),
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
            0.3,
            0.0,
        );
        put(
            format!("{p}.self_attn.k_proj.bias"),
            vec![KV_HEADS * HEAD_DIM],
            0.1,
            0.0,
        );
        put(
            format!("{p}.self_attn.v_proj.weight"),
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
            0.3,
            0.0,
        );
        put(
            format!("{p}.self_attn.v_proj.bias"),
            vec![KV_HEADS * HEAD_DIM],
            0.1,
            0.0,
        );
        put(
            format!("{p}.self_attn.o_proj.weight"),
            vec![HIDDEN, HEADS * HEAD_DIM],
            0.3,
            0.0,
        );
        put(
            format!("{p}.mlp.gate_proj.weight"),
            vec![FF, HIDDEN],
            0.3,
            0.0,
        );
        put(
            format!("{p}.mlp.up_proj.weight"),
            vec![FF, HIDDEN],
            0.3,
            0.0,
        );
        put(
            format!("{p}.mlp.down_proj.weight"),
            vec![HIDDEN, FF],
            0.3,
            0.0,
        );
    }
    w
}

/// The config in transformers 4's layout (`rope_theta`) or transformers 5's (`rope_parameters`).
fn config(vocab: usize, current: bool) -> serde_json::Value {
    let mut c = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "vocab_size": vocab, "hidden_size": HIDDEN, "intermediate_size": FF,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "max_position_embeddings": 256,
        "rms_norm_eps": EPS, "tie_word_embeddings": false, "hidden_act": "silu",
        "torch_dtype": "bfloat16", "use_sliding_window": false, "sliding_window": 4096,
        "attention_dropout": 0.0, "eos_token_id": 0, "bos_token_id": 0,
    });
    if current {
        c["rope_parameters"] = serde_json::json!({"rope_theta": THETA, "rope_type": "default"});
        c["dtype"] = "bfloat16".into();
        c["layer_types"] = serde_json::json!(vec!["full_attention"; LAYERS]);
    } else {
        c["rope_theta"] = THETA.into();
        c["rope_scaling"] = serde_json::Value::Null;
    }
    c
}

/// A model directory: `tokenizer.json` from a chartrl tiny model, the config, and the
/// weights in two bf16 shards with their index.
fn write_fixture(dir: &Path, tokenizer: &Path, vocab: usize, current: bool) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).unwrap();
    std::fs::write(dir.join("config.json"), config(vocab, current).to_string()).unwrap();
    let mut names: Vec<String> = weights(vocab).keys().cloned().collect();
    names.sort();
    let all = weights(vocab);
    let mut index = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let tensors: HashMap<String, Tensor> = part
            .iter()
            .map(|n| {
                let (shape, v) = &all[n];
                let t = Tensor::from_vec(v.clone(), shape.as_slice(), &Device::Cpu)
                    .unwrap()
                    .to_dtype(DType::BF16)
                    .unwrap();
                index.insert(n.clone(), file.clone().into());
                (n.clone(), t)
            })
            .collect();
        candle_core::safetensors::save(&tensors, dir.join(&file)).unwrap();
    }
    let idx = serde_json::json!({"metadata": {}, "weight_map": index});
    std::fs::write(dir.join("model.safetensors.index.json"), idx.to_string()).unwrap();
}

/// `x W^T (+ b)` for a row `x` and a `(out, in)` matrix.
fn linear(x: &[f64], w: &[f64], out: usize, b: Option<&[f64]>) -> Vec<f64> {
    let inp = x.len();
    (0..out)
        .map(|o| {
            let dot: f64 = (0..inp).map(|i| x[i] * w[o * inp + i]).sum();
            dot + b.map_or(0.0, |b| b[o])
        })
        .collect()
}

fn rms_norm(x: &[f64], w: &[f64]) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + EPS).sqrt();
    x.iter().zip(w).map(|(v, g)| v * r * g).collect()
}

/// RoPE as transformers' Qwen2 applies it: `x * cos + rotate_half(x) * sin` per head.
fn rope(head: &mut [f64], pos: usize) {
    let half = HEAD_DIM / 2;
    let orig = head.to_vec();
    for i in 0..half {
        let inv = 1.0 / THETA.powf(2.0 * i as f64 / HEAD_DIM as f64);
        let (sin, cos) = (pos as f64 * inv).sin_cos();
        head[i] = orig[i] * cos - orig[i + half] * sin;
        head[i + half] = orig[i + half] * cos + orig[i] * sin;
    }
}

/// The log-prob of each token after the first, from an f64 forward pass.
fn reference_logprobs(ids: &[u32], vocab: usize) -> Vec<f64> {
    let w = weights(vocab);
    let g = |n: &str| w[n].1.as_slice();
    let t = ids.len();
    let mut x: Vec<Vec<f64>> = ids
        .iter()
        .map(|&id| g("model.embed_tokens.weight")[id as usize * HIDDEN..][..HIDDEN].to_vec())
        .collect();
    for l in 0..LAYERS {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let h: Vec<Vec<f64>> = x
            .iter()
            .map(|r| rms_norm(r, g(&p("input_layernorm.weight"))))
            .collect();
        let proj = |name: &str, out: usize| -> Vec<Vec<f64>> {
            h.iter()
                .map(|r| {
                    linear(
                        r,
                        g(&p(&format!("self_attn.{name}.weight"))),
                        out,
                        Some(g(&p(&format!("self_attn.{name}.bias")))),
                    )
                })
                .collect()
        };
        let (mut q, mut k, v) = (
            proj("q_proj", HIDDEN),
            proj("k_proj", KV_HEADS * HEAD_DIM),
            proj("v_proj", KV_HEADS * HEAD_DIM),
        );
        for pos in 0..t {
            for hd in 0..HEADS {
                rope(&mut q[pos][hd * HEAD_DIM..][..HEAD_DIM], pos);
            }
            for hd in 0..KV_HEADS {
                rope(&mut k[pos][hd * HEAD_DIM..][..HEAD_DIM], pos);
            }
        }
        let mut attn = vec![vec![0.0; HIDDEN]; t];
        for hd in 0..HEADS {
            let kv = hd / (HEADS / KV_HEADS);
            for i in 0..t {
                let qi = &q[i][hd * HEAD_DIM..][..HEAD_DIM];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let kj = &k[j][kv * HEAD_DIM..][..HEAD_DIM];
                        qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>()
                            / (HEAD_DIM as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for d in 0..HEAD_DIM {
                        attn[i][hd * HEAD_DIM + d] += ej / z * v[j][kv * HEAD_DIM + d];
                    }
                }
            }
        }
        for i in 0..t {
            let o = linear(&attn[i], g(&p("self_attn.o_proj.weight")), HIDDEN, None);
            x[i].iter_mut().zip(o).for_each(|(a, b)| *a += b);
            let h2 = rms_norm(&x[i], g(&p("post_attention_layernorm.weight")));
            let gate = linear(&h2, g(&p("mlp.gate_proj.weight")), FF, None);
            let up = linear(&h2, g(&p("mlp.up_proj.weight")), FF, None);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = linear(&act, g(&p("mlp.down_proj.weight")), HIDDEN, None);
            x[i].iter_mut().zip(down).for_each(|(a, b)| *a += b);
        }
    }
    (0..t - 1)
        .map(|i| {
            let h = rms_norm(&x[i], g("model.norm.weight"));
            let logits = linear(&h, g("lm_head.weight"), vocab, None);
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + logits.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
            logits[ids[i + 1] as usize] - lse
        })
        .collect()
}

#[test]
fn both_config_layouts_load_a_sharded_bf16_qwen2_that_agrees_with_an_f64_reference() {
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_model(tmp.path(), "tok");
    let tok = tmp.path().join("tok/tokenizer.json");
    let vocab: usize = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(tmp.path().join("tok/config.json")).unwrap(),
    )
    .unwrap()["vocab_size"]
        .as_u64()
        .unwrap() as usize;
    write_fixture(&tmp.path().join("v4"), &tok, vocab, false);
    write_fixture(&tmp.path().join("v5"), &tok, vocab, true);
    let ids: Vec<u32> = (0..24).map(|i| ((i * 37 + 11) % vocab) as u32).collect();
    let load = |d: &str| Policy::load(&tmp.path().join(d), &Device::Cpu, DType::F32).unwrap();
    let (v4, v5) = (load("v4"), load("v5"));
    assert_eq!(v4.config.rope_theta, THETA);
    assert_eq!(
        v5.config.rope_theta, THETA,
        "transformers 5's rope_parameters read"
    );
    let a: Vec<f32> = v4
        .token_logprobs(&ids)
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let b: Vec<f32> = v5
        .token_logprobs(&ids)
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(a, b, "the two layouts give different log-probs");
    let want = reference_logprobs(&ids, vocab);
    let worst = a
        .iter()
        .zip(&want)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-5,
        "f32 against the f64 reference: max |diff| {worst:e}"
    );

    // What chartrl saves reads back the same, in a layout both transformers versions read.
    v5.save(&tmp.path().join("saved")).unwrap();
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("saved/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["rope_theta"], THETA);
    assert_eq!(saved["rope_parameters"]["rope_theta"], THETA);
    let c: Vec<f32> = load("saved")
        .token_logprobs(&ids)
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let back = a
        .iter()
        .zip(&c)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(back < 1e-6, "saved (f32) and reloaded: {back:e}");
}

#[test]
fn every_field_chartrl_does_not_implement_is_refused_by_name_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_model(tmp.path(), "m");
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("m/config.json")).unwrap())
            .unwrap();
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            "rope_scaling.rope_type",
        ),
        (
            "rope_scaling",
            serde_json::json!({"type": "linear", "factor": 2.0}),
            "rope_scaling.rope_type",
        ),
        (
            "rope_parameters",
            serde_json::json!({"rope_theta": 1e6, "rope_type": "dynamic"}),
            "rope_parameters.rope_type",
        ),
        (
            "rope_parameters",
            serde_json::json!({"rope_theta": 1e6, "rope_type": "llama3"}),
            "rope_parameters.rope_type",
        ),
        (
            "use_sliding_window",
            serde_json::json!(true),
            "use_sliding_window",
        ),
        ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
        ("model_type", serde_json::json!("qwen3"), "qwen3"),
        (
            "architectures",
            serde_json::json!(["Qwen3ForCausalLM"]),
            "Qwen3ForCausalLM",
        ),
        ("attention_bias", serde_json::json!(false), "attention_bias"),
        ("head_dim", serde_json::json!(128), "head_dim"),
    ];
    for (i, (field, value, needle)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("bad{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["tokenizer.json", "model.safetensors"] {
            std::fs::copy(tmp.path().join("m").join(f), dir.join(f)).unwrap();
        }
        let mut c = base.clone();
        if *field == "rope_parameters" {
            c.as_object_mut().unwrap().remove("rope_theta");
        }
        c[*field] = value.clone();
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        let err = user_error(&["model", "info", dir.to_str().unwrap()], tmp.path());
        assert!(err.contains(needle), "{field}: {err}");
        assert!(
            err.contains("config.json"),
            "{field}: names the file: {err}"
        );
        let shown = match value {
            serde_json::Value::Object(o) => {
                o.get("rope_type").or(o.get("type")).unwrap().to_string()
            }
            v => v.to_string(),
        };
        if !["model_type", "architectures"].contains(field) {
            assert!(
                err.contains(&shown),
                "{field}: names the value {shown}: {err}"
            );
        }
    }
}

/// A Qwen2.5-style chat template: a system turn (given, or Qwen's default), user turns, and
/// the assistant's opening.
const QWEN_TEMPLATE: &str = r#"{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- else %}
    {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

#[test]
fn a_chat_template_renders_exactly_and_chat_prompts_use_it() {
    let t = ChatTemplate::new(
        QWEN_TEMPLATE,
        Path::new("tokenizer_config.json"),
        None,
        None,
    )
    .unwrap();
    let out = t
        .render(
            &[
                ChatMessage::new("system", "Answer about charts."),
                ChatMessage::new("user", "What is 2 + 2?"),
            ],
            true,
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nAnswer about charts.<|im_end|>\n<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let out = t.render(&[ChatMessage::new("user", "Hi")], false).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );

    // Through the binary: a model with the template in tokenizer_config.json.
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_model(tmp.path(), "m");
    let chat = serde_json::json!({"chat_template": QWEN_TEMPLATE, "eos_token": "<|endoftext|>"});
    std::fs::write(tmp.path().join("m/tokenizer_config.json"), chat.to_string()).unwrap();
    let out = ok(
        &[
            "sample",
            "--model",
            "m",
            "--prompt",
            "Q?",
            "-n",
            "1",
            "--max-new-tokens",
            "2",
            "--prompt-format",
            "chat",
        ],
        tmp.path(),
    );
    assert!(
        out.contains("--- prompt ---\n<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"),
        "{out}"
    );
    // The template is part of the model: kept through a save, and in its identity.
    common::tiny_model(tmp.path(), "plain");
    let err = user_error(
        &[
            "sample",
            "--model",
            "plain",
            "--prompt",
            "Q?",
            "-n",
            "1",
            "--prompt-format",
            "chat",
        ],
        tmp.path(),
    );
    assert!(
        err.contains("chat template") && err.contains("raw"),
        "{err}"
    );
}

#[test]
fn cuda_from_a_cpu_build_is_a_clear_error_on_every_command() {
    if cfg!(feature = "cuda") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_model(tmp.path(), "m");
    std::fs::write(
        tmp.path().join("s.rhai"),
        r#"train(#{ mode: "nsr", model: model("m"), data: chart_data().take(2), device: "cuda" });"#,
    )
    .unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["train", "--model", "m", "--device", "cuda"],
        vec!["warm-start", "--model", "m", "--device", "cuda:1"],
        vec!["eval", "--model", "m", "--device", "cuda"],
        vec!["sample", "--model", "m", "--device", "cuda"],
        vec!["bench", "--device", "cuda"],
        vec!["exec", "s.rhai", "--device", "cuda"],
        vec!["exec", "s.rhai"],
    ];
    for cmd in commands {
        let err = user_error(&cmd, tmp.path());
        assert!(
            err.contains("built without CUDA") && err.contains("--features cuda"),
            "{cmd:?}: {err}"
        );
    }
    // The variable sets the default.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_chartrl"))
        .args(["sample", "--model", "m"])
        .current_dir(tmp.path())
        .env("CHARTRL_DEVICE", "cuda")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--features cuda"));
}

#[test]
fn an_edited_prompt_template_is_a_new_run() {
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_model(tmp.path(), "m");
    let train = [
        "train",
        "--model",
        "m",
        "--mode",
        "nsr",
        "--subset-size",
        "2",
        "--batch-size",
        "2",
        "--num-generations",
        "2",
        "--max-completion-length",
        "8",
    ];
    ok(&train, tmp.path());
    assert!(ok(&train, tmp.path()).contains("already done"));
    std::fs::create_dir_all(tmp.path().join("configs")).unwrap();
    let default =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/prompt.txt"))
            .unwrap();
    std::fs::write(
        tmp.path().join("configs/prompt.txt"),
        format!("Look closely.\n{default}"),
    )
    .unwrap();
    let out = ok(&train, tmp.path());
    assert!(!out.contains("already done"), "{out}");
    let runs = ok(&["runs"], tmp.path());
    assert_eq!(
        runs.lines().filter(|l| l.starts_with("nsr-n2-")).count(),
        2,
        "{runs}"
    );
    // The same for evaluations: a new prompt is a new evaluation.
    let eval = [
        "eval",
        "--model",
        "m",
        "--questions",
        "2",
        "-n",
        "1",
        "--temperature",
        "0",
        "--max-new-tokens",
        "4",
    ];
    let first = ok(&eval, tmp.path());
    std::fs::remove_file(tmp.path().join("configs/prompt.txt")).unwrap();
    let second = ok(&eval, tmp.path());
    assert!(
        first.contains("sampled") && second.contains("2 questions sampled"),
        "{second}"
    );
}
