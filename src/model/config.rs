//! Qwen2 model configuration: the fields of a Hugging Face `config.json` that decide the
//! architecture, and the built-in presets (`configs/models/*.yaml`) that create new models.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// The architecture fields of a Hugging Face Qwen2 `config.json`.
///
/// Unknown fields in a real checkpoint's config (`torch_dtype`, `bos_token_id`, ...) are ignored;
/// the ones chartrl needs are checked when the file is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// End-of-sequence id(s); a real checkpoint may list several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
}

/// `eos_token_id` is an integer or a list of integers in Hugging Face configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

fn default_max_positions() -> usize {
    32768
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".to_string()
}

impl Qwen2Config {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Heads of the query that share one key/value head (grouped-query attention).
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Reads `config.json` from a model directory. Both layouts Hugging Face writes are read:
    /// the legacy one (`rope_theta`, `rope_scaling`, transformers 4) and the current one
    /// (`rope_parameters`, transformers 5). A field that would make the model compute
    /// something chartrl does not implement is an error naming the field, its value and the
    /// file (see [`refuse_unsupported`]); fields that change nothing chartrl computes are
    /// ignored (see [`IGNORED_FIELDS`]), and any other unknown field is logged as a warning.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::json(path, e))?;
        Self::from_json(path, value)
    }

    /// [`Qwen2Config::from_file`] on a parsed `config.json` (`path` names it in errors).
    pub fn from_json(path: &Path, mut value: serde_json::Value) -> Result<Self, ModelError> {
        check_architecture(path, &value)?;
        refuse_unsupported(path, &value)?;
        warn_unknown(path, &value);
        let theta = rope_theta(path, &value)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("rope_theta".into(), serde_json::json!(theta));
        }
        let cfg: Qwen2Config =
            serde_json::from_value(value).map_err(|e| ModelError::json(path, e))?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The `config.json` chartrl writes: Hugging Face's fields plus the architecture tags that
    /// `transformers.AutoModelForCausalLM` needs, with RoPE in both layouts (`rope_theta` for
    /// transformers 4, `rope_parameters` for transformers 5), so either reads it.
    pub fn to_hf_json(&self, torch_dtype: &str) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "architectures".into(),
                serde_json::json!(["Qwen2ForCausalLM"]),
            );
            obj.insert("model_type".into(), serde_json::json!("qwen2"));
            obj.insert("torch_dtype".into(), serde_json::json!(torch_dtype));
            obj.insert("use_sliding_window".into(), serde_json::json!(false));
            obj.insert(
                "sliding_window".into(),
                serde_json::json!(self.max_position_embeddings),
            );
            obj.insert(
                "max_window_layers".into(),
                serde_json::json!(self.num_hidden_layers),
            );
            obj.insert("attention_dropout".into(), serde_json::json!(0.0));
            obj.insert("use_cache".into(), serde_json::json!(true));
            obj.insert("rope_scaling".into(), serde_json::Value::Null);
            obj.insert(
                "rope_parameters".into(),
                serde_json::json!({"rope_theta": self.rope_theta, "rope_type": "default"}),
            );
        }
        v
    }

    pub fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |msg: String| ModelError::Config {
            path: path.to_path_buf(),
            msg,
        };
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return Err(bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(bad(format!(
                "head dimension {} must be even for RoPE",
                self.head_dim()
            )));
        }
        if self.hidden_act != "silu" {
            return Err(bad(format!(
                "hidden_act `{}` is not supported (Qwen2 uses `silu`)",
                self.hidden_act
            )));
        }
        Ok(())
    }
}

fn check_architecture(path: &Path, value: &serde_json::Value) -> Result<(), ModelError> {
    let model_type = value.get("model_type").and_then(|v| v.as_str());
    let archs: Vec<&str> = value
        .get("architectures")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    let other_arch = archs.iter().find(|a| **a != "Qwen2ForCausalLM");
    let qwen2_type = model_type.is_none_or(|t| t == "qwen2");
    if qwen2_type && other_arch.is_none() {
        return Ok(());
    }
    let found = match (qwen2_type, other_arch) {
        (true, Some(a)) => a.to_string(),
        _ => model_type.unwrap_or_default().to_string(),
    };
    Err(ModelError::UnknownArchitecture {
        path: path.to_path_buf(),
        found,
    })
}

/// Fields of a Qwen2 `config.json` that change nothing chartrl computes: what the weights are
/// stored in (chartrl chooses the compute precision), token ids it reads from the tokenizer,
/// initialisation, caching, bookkeeping, and the sliding-window sizes when the window is off.
pub const IGNORED_FIELDS: &[&str] = &[
    "_name_or_path",
    "architectures",
    "model_type",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "bos_token_id",
    "pad_token_id",
    "initializer_range",
    "use_cache",
    "sliding_window",
    "max_window_layers",
    "layer_types",
    "attention_dropout",
    "attention_bias",
    "use_mrope",
    "rope_scaling",
    "rope_parameters",
    "partial_rotary_factor",
    "head_dim",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "tie_encoder_decoder",
];

/// The fields [`Qwen2Config`] reads.
const READ_FIELDS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rope_theta",
    "rms_norm_eps",
    "tie_word_embeddings",
    "hidden_act",
    "eos_token_id",
];

/// An error for a field whose value chartrl does not implement.
fn unsupported(path: &Path, field: &str, value: &serde_json::Value, why: &str) -> ModelError {
    ModelError::Unsupported {
        path: path.to_path_buf(),
        field: field.to_string(),
        value: value.to_string(),
        why: why.to_string(),
    }
}

/// A field whose values chartrl computes only in part: the values it accepts, and why it
/// refuses the others.
struct Limit {
    field: &'static str,
    accepts: fn(&serde_json::Value) -> bool,
    why: &'static str,
}

/// The fields (of the ones Qwen2-family configs carry) whose value could make the model
/// compute something chartrl does not: a sliding window, attention without the q/k/v
/// biases, dropout, multimodal RoPE, quantized weights, another activation, partial RoPE.
const LIMITS: [Limit; 8] = [
    Limit {
        field: "use_sliding_window",
        accepts: |x| x == &serde_json::Value::Bool(false),
        why: "sliding-window attention is not implemented",
    },
    Limit {
        field: "layer_types",
        accepts: |x| {
            x.as_array()
                .is_some_and(|t| t.iter().all(|t| t.as_str() == Some("full_attention")))
        },
        why: "only full attention is implemented",
    },
    Limit {
        field: "attention_bias",
        accepts: |x| x == &serde_json::Value::Bool(true),
        why: "Qwen2 attention has q/k/v biases",
    },
    Limit {
        field: "attention_dropout",
        accepts: |x| x.as_f64() == Some(0.0),
        why: "dropout is not implemented",
    },
    Limit {
        field: "use_mrope",
        accepts: |x| x == &serde_json::Value::Bool(false),
        why: "multimodal RoPE is not implemented",
    },
    Limit {
        field: "quantization_config",
        accepts: |_| false,
        why: "quantized weights are not supported",
    },
    Limit {
        field: "hidden_act",
        accepts: |x| x.as_str() == Some("silu"),
        why: "Qwen2's MLP is SwiGLU with silu",
    },
    Limit {
        field: "partial_rotary_factor",
        accepts: |x| x.as_f64() == Some(1.0),
        why: "RoPE on part of each head is not implemented",
    },
];

/// Refuses the first field whose value chartrl does not implement (see [`LIMITS`]), and a
/// head size other than hidden / heads.
fn refuse_unsupported(path: &Path, v: &serde_json::Value) -> Result<(), ModelError> {
    use serde_json::Value;
    let get = |k: &str| v.get(k).filter(|x| !x.is_null());
    for limit in &LIMITS {
        if let Some(x) = get(limit.field).filter(|x| !(limit.accepts)(x)) {
            return Err(unsupported(path, limit.field, x, limit.why));
        }
    }
    let heads = v
        .get("num_attention_heads")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let hidden = v.get("hidden_size").and_then(Value::as_u64).unwrap_or(0);
    if let Some(x) = get("head_dim") {
        if heads == 0 || x.as_u64() != Some(hidden / heads) {
            return Err(unsupported(
                path,
                "head_dim",
                x,
                "the head size must be hidden_size / num_attention_heads",
            ));
        }
    }
    Ok(())
}

/// Logs the fields chartrl neither reads nor knows to be harmless, so none is silently lost.
fn warn_unknown(path: &Path, v: &serde_json::Value) {
    let Some(obj) = v.as_object() else { return };
    let unknown: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !READ_FIELDS.contains(k) && !IGNORED_FIELDS.contains(k))
        .filter(|k| *k != "use_sliding_window" && *k != "quantization_config")
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(
            file = %path.display(),
            fields = %unknown.join(", "),
            "config.json fields chartrl does not use"
        );
    }
}

/// The RoPE base from either layout, refusing any RoPE type but the default: the current
/// `rope_parameters` (`{"rope_theta": ..., "rope_type": "default"}`), the legacy top-level
/// `rope_theta` with `rope_scaling`, or 10,000 when neither says.
fn rope_theta(path: &Path, v: &serde_json::Value) -> Result<f64, ModelError> {
    use serde_json::Value;
    let check_type = |field: &str, params: &Value| -> Result<(), ModelError> {
        let kind = params.get("rope_type").or_else(|| params.get("type"));
        match kind {
            None => Ok(()),
            Some(k) if k.as_str() == Some("default") => Ok(()),
            Some(k) => Err(unsupported(
                path,
                &format!("{field}.rope_type"),
                k,
                "only the default RoPE is implemented (no yarn, dynamic, linear or llama3 scaling)",
            )),
        }
    };
    if let Some(scaling) = v.get("rope_scaling").filter(|x| !x.is_null()) {
        check_type("rope_scaling", scaling)?;
    }
    let legacy = v.get("rope_theta").and_then(Value::as_f64);
    let Some(params) = v.get("rope_parameters").filter(|x| !x.is_null()) else {
        return Ok(legacy.unwrap_or_else(default_rope_theta));
    };
    check_type("rope_parameters", params)?;
    if let Some(x) = params
        .get("partial_rotary_factor")
        .filter(|x| x.as_f64() != Some(1.0))
    {
        return Err(unsupported(
            path,
            "rope_parameters.partial_rotary_factor",
            x,
            "RoPE on part of each head is not implemented",
        ));
    }
    let theta = match params.get("rope_theta") {
        Some(t) => t.as_f64().ok_or_else(|| {
            unsupported(path, "rope_parameters.rope_theta", t, "it must be a number")
        })?,
        // Per-layer-type parameters (`{"full_attention": {...}, ...}`) have no top-level theta.
        None => {
            return Err(unsupported(
                path,
                "rope_parameters",
                params,
                "per-layer RoPE parameters are not implemented",
            ))
        }
    };
    if let Some(old) = legacy.filter(|old| *old != theta) {
        return Err(ModelError::Config {
            path: path.to_path_buf(),
            msg: format!("rope_parameters.rope_theta {theta} and rope_theta {old} disagree"),
        });
    }
    Ok(theta)
}

/// A built-in model size: the architecture plus how to initialise it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub initializer_range: f64,
}

/// Preset YAML files compiled into the binary, so a fresh machine needs no files to start.
const EMBEDDED_PRESETS: &[(&str, &str)] = &[
    ("tiny", include_str!("../../configs/models/tiny.yaml")),
    ("small", include_str!("../../configs/models/small.yaml")),
];

impl Preset {
    /// Names of the built-in presets.
    pub fn names() -> Vec<&'static str> {
        EMBEDDED_PRESETS.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in preset by name (`tiny`, `small`). The command line and scripts prefer the
    /// working directory's `configs/models/NAME.yaml` (see `workspace`).
    pub fn builtin(name: &str) -> Result<Self, ModelError> {
        let text = EMBEDDED_PRESETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| ModelError::UnknownPreset {
                name: name.to_string(),
                known: Self::names().join(", "),
            })?;
        Self::from_yaml(text, Path::new(&format!("<built-in preset {name}>")))
    }

    /// A preset from a YAML file.
    pub fn from_yaml_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_yaml(&text, path)
    }

    fn from_yaml(text: &str, path: &Path) -> Result<Self, ModelError> {
        serde_yaml::from_str(text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })
    }

    /// The architecture this preset describes, with the tokenizer's end-of-text id.
    pub fn to_config(&self, eos_token_id: u32) -> Qwen2Config {
        Qwen2Config {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            max_position_embeddings: self.max_position_embeddings,
            rope_theta: self.rope_theta,
            rms_norm_eps: self.rms_norm_eps,
            tie_word_embeddings: self.tie_word_embeddings,
            hidden_act: "silu".to_string(),
            eos_token_id: Some(TokenIds::One(eos_token_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_presets_parse_and_match_the_spec() {
        let tiny = Preset::builtin("tiny").unwrap();
        assert_eq!(
            (
                tiny.hidden_size,
                tiny.num_hidden_layers,
                tiny.num_attention_heads
            ),
            (256, 4, 4)
        );
        assert_eq!((tiny.num_key_value_heads, tiny.intermediate_size), (2, 704));
        assert!(tiny.tie_word_embeddings);
        let small = Preset::builtin("small").unwrap();
        assert_eq!((small.hidden_size, small.num_hidden_layers), (512, 8));
        assert!(!small.tie_word_embeddings);
    }

    #[test]
    fn unknown_preset_lists_the_known_ones() {
        let err = Preset::builtin("huge").unwrap_err().to_string();
        assert!(err.contains("huge") && err.contains("tiny"), "{err}");
    }

    #[test]
    fn config_rejects_other_architectures_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"model_type": "llama", "vocab_size": 10}"#).unwrap();
        let err = Qwen2Config::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("llama") && err.contains("config.json"),
            "{err}"
        );
    }

    fn base() -> serde_json::Value {
        serde_json::json!({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
            "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1})
    }

    fn with(mut v: serde_json::Value, k: &str, x: serde_json::Value) -> serde_json::Value {
        v[k] = x;
        v
    }

    #[test]
    fn both_rope_layouts_read_the_same_and_what_chartrl_writes_reads_back() {
        let p = Path::new("config.json");
        let legacy = with(base(), "rope_theta", serde_json::json!(1e6));
        let current = with(
            base(),
            "rope_parameters",
            serde_json::json!({"rope_theta": 1e6, "rope_type": "default"}),
        );
        let a = Qwen2Config::from_json(p, legacy).unwrap();
        let b = Qwen2Config::from_json(p, current).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.rope_theta, 1e6);
        let written = a.to_hf_json("float32");
        assert_eq!(written["rope_parameters"]["rope_theta"], 1e6);
        assert_eq!(Qwen2Config::from_json(p, written).unwrap(), a);
        // Neither layout: the Qwen2 default.
        assert_eq!(Qwen2Config::from_json(p, base()).unwrap().rope_theta, 1e4);
    }

    #[test]
    fn fields_chartrl_does_not_implement_are_refused_by_name() {
        let p = Path::new("m/config.json");
        let cases = [
            (
                "rope_scaling",
                serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
                "rope_scaling.rope_type",
            ),
            (
                "rope_scaling",
                serde_json::json!({"type": "dynamic"}),
                "rope_scaling.rope_type",
            ),
            (
                "rope_parameters",
                serde_json::json!({"rope_theta": 1e6, "rope_type": "llama3"}),
                "rope_parameters.rope_type",
            ),
            (
                "rope_parameters",
                serde_json::json!({"full_attention": {"rope_theta": 1e4}}),
                "rope_parameters",
            ),
            (
                "use_sliding_window",
                serde_json::json!(true),
                "use_sliding_window",
            ),
            (
                "layer_types",
                serde_json::json!(["full_attention", "sliding_attention"]),
                "layer_types",
            ),
            ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
            ("attention_bias", serde_json::json!(false), "attention_bias"),
            ("head_dim", serde_json::json!(128), "head_dim"),
            (
                "quantization_config",
                serde_json::json!({"quant_method": "gptq"}),
                "quantization_config",
            ),
            ("model_type", serde_json::json!("qwen3"), "qwen3"),
        ];
        for (k, x, needle) in cases {
            let e = Qwen2Config::from_json(p, with(base(), k, x.clone()))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(needle) && e.contains("m/config.json"),
                "{k}: {e}"
            );
        }
        let e = Qwen2Config::from_json(
            p,
            with(
                with(base(), "rope_theta", serde_json::json!(1e4)),
                "rope_parameters",
                serde_json::json!({"rope_theta": 1e6}),
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("disagree"), "{e}");
        // Harmless fields pass.
        let fine = with(
            with(base(), "sliding_window", serde_json::json!(4096)),
            "use_sliding_window",
            serde_json::json!(false),
        );
        assert!(Qwen2Config::from_json(p, fine).is_ok());
    }

    #[test]
    fn eos_may_be_a_list() {
        let cfg: Qwen2Config = serde_json::from_str(
            r#"{"vocab_size":8,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
                "num_attention_heads":2,"num_key_value_heads":1,"eos_token_id":[3,4]}"#,
        )
        .unwrap();
        assert_eq!(cfg.eos_token_id.unwrap().to_vec(), vec![3, 4]);
    }
}
