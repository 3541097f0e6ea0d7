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

    /// Reads `config.json` from a model directory, rejecting other architectures.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::json(path, e))?;
        check_architecture(path, &value)?;
        let cfg: Qwen2Config =
            serde_json::from_value(value).map_err(|e| ModelError::json(path, e))?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The `config.json` chartrl writes: Hugging Face's fields plus the architecture tags that
    /// `transformers.AutoModelForCausalLM` needs.
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
    let is_qwen2 = model_type == Some("qwen2") || archs.contains(&"Qwen2ForCausalLM");
    if is_qwen2 || (model_type.is_none() && archs.is_empty()) {
        return Ok(());
    }
    let found = model_type
        .map(str::to_string)
        .unwrap_or_else(|| archs.join(", "));
    Err(ModelError::UnknownArchitecture {
        path: path.to_path_buf(),
        found,
    })
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

    /// A preset by name (`tiny`, `small`), or a path to a preset YAML file.
    ///
    /// `configs/models/NAME.yaml` under the working directory wins over the copy compiled into
    /// the binary, so a user can edit a preset without recompiling.
    pub fn load(name_or_path: &str) -> Result<Self, ModelError> {
        let as_path = Path::new(name_or_path);
        if name_or_path.ends_with(".yaml") || name_or_path.ends_with(".yml") {
            return Self::from_yaml_file(as_path);
        }
        let local = Path::new("configs/models").join(format!("{name_or_path}.yaml"));
        if local.is_file() {
            return Self::from_yaml_file(&local);
        }
        let text = EMBEDDED_PRESETS
            .iter()
            .find(|(n, _)| *n == name_or_path)
            .map(|(_, t)| *t)
            .ok_or_else(|| ModelError::UnknownPreset {
                name: name_or_path.to_string(),
                known: Self::names().join(", "),
            })?;
        Self::from_yaml(
            text,
            Path::new(&format!("<built-in preset {name_or_path}>")),
        )
    }

    fn from_yaml_file(path: &Path) -> Result<Self, ModelError> {
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
        let tiny = Preset::load("tiny").unwrap();
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
        let small = Preset::load("small").unwrap();
        assert_eq!((small.hidden_size, small.num_hidden_layers), (512, 8));
        assert!(!small.tie_word_embeddings);
    }

    #[test]
    fn unknown_preset_lists_the_known_ones() {
        let err = Preset::load("huge").unwrap_err().to_string();
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
