//! The model's parameters by Hugging Face name, and their safetensors IO.
//!
//! Parameters are candle `Var`s so the optimizer can update them in place; the sampling path
//! reads detached views of the same storage, so it always sees the latest weights for free.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use super::{ModelError, Qwen2Config, Result};

/// Named parameters, ordered by name (deterministic iteration for the optimizer and for files).
#[derive(Clone)]
pub struct Params {
    vars: BTreeMap<String, Var>,
}

impl Params {
    pub fn from_tensors(tensors: BTreeMap<String, Tensor>) -> Result<Self> {
        let mut vars = BTreeMap::new();
        for (name, t) in tensors {
            vars.insert(name, Var::from_tensor(&t)?);
        }
        Ok(Self { vars })
    }

    /// A copy with every parameter converted to `dtype` (the same parameters when it matches).
    pub fn to_dtype(self, dtype: DType) -> Result<Self> {
        if self.dtype() == dtype {
            return Ok(self);
        }
        let mut tensors = BTreeMap::new();
        for (name, var) in self.vars {
            tensors.insert(name, var.as_tensor().to_dtype(dtype)?);
        }
        Self::from_tensors(tensors)
    }

    /// Independent copies of every parameter (new storage): a frozen reference policy.
    pub fn deep_copy(&self) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        for (name, var) in &self.vars {
            tensors.insert(name.clone(), var.as_tensor().copy()?);
        }
        Self::from_tensors(tensors)
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The name of the first parameter that holds a NaN or an infinity, if any. `x * 0` is 0
    /// for a finite `x` and NaN otherwise: one sum per tensor and a single read-back.
    pub fn first_non_finite(&self) -> Result<Option<String>> {
        let sums = self
            .vars
            .values()
            .map(|v| (v.as_tensor().to_dtype(DType::F32)? * 0.0)?.sum_all())
            .collect::<candle_core::Result<Vec<Tensor>>>()?;
        if sums.is_empty() {
            return Ok(None);
        }
        let values = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?;
        Ok(values
            .iter()
            .zip(self.vars.keys())
            .find(|(v, _)| !v.is_finite())
            .map(|(_, name)| name.clone()))
    }

    pub fn num_parameters(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    pub fn dtype(&self) -> DType {
        self.vars
            .values()
            .next()
            .map(|v| v.dtype())
            .unwrap_or(DType::F32)
    }

    /// Every tensor the config implies, with its shape (Hugging Face names).
    pub fn expected_shapes(cfg: &Qwen2Config) -> Vec<(String, Vec<usize>)> {
        let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let q = cfg.num_attention_heads * cfg.head_dim();
        let kv = cfg.num_key_value_heads * cfg.head_dim();
        let mut out = vec![
            ("model.embed_tokens.weight".to_string(), vec![v, h]),
            ("model.norm.weight".to_string(), vec![h]),
        ];
        if !cfg.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![v, h]));
        }
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            out.extend([
                (format!("{p}.input_layernorm.weight"), vec![h]),
                (format!("{p}.post_attention_layernorm.weight"), vec![h]),
                (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
                (format!("{p}.self_attn.q_proj.bias"), vec![q]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.k_proj.bias"), vec![kv]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.v_proj.bias"), vec![kv]),
                (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
                (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
                (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
                (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
            ]);
        }
        out
    }

    /// Loads `model.safetensors`, or the shards listed in `model.safetensors.index.json`,
    /// converting every tensor to `dtype` on `device` and checking names and shapes.
    pub fn load_dir(dir: &Path, cfg: &Qwen2Config, dtype: DType, device: &Device) -> Result<Self> {
        let files = safetensors_files(dir)?;
        let mut found: HashMap<String, Tensor> = HashMap::new();
        for file in &files {
            found.extend(read_safetensors(file, device)?);
        }
        let mut tensors = BTreeMap::new();
        for (name, shape) in Self::expected_shapes(cfg) {
            let t = found
                .remove(&name)
                .ok_or_else(|| ModelError::MissingTensor {
                    dir: dir.to_path_buf(),
                    name: name.clone(),
                })?;
            if t.dims() != shape.as_slice() {
                return Err(ModelError::ShapeMismatch {
                    dir: dir.to_path_buf(),
                    name,
                    expected: shape,
                    found: t.dims().to_vec(),
                });
            }
            tensors.insert(name, t.to_dtype(dtype)?);
        }
        let params = Self::from_tensors(tensors)?;
        if let Some(name) = params.first_non_finite()? {
            return Err(ModelError::NonFinite {
                dir: dir.to_path_buf(),
                name,
            });
        }
        Ok(params)
    }

    /// Writes every parameter to one safetensors file in `dtype`, atomically (temp + rename).
    pub fn save(&self, path: &Path, dtype: DType) -> Result<()> {
        let mut tensors = Vec::with_capacity(self.vars.len());
        for (name, var) in &self.vars {
            let t = var.as_tensor().to_dtype(dtype)?.to_device(&Device::Cpu)?;
            tensors.push((name.clone(), t));
        }
        let tmp = crate::fsx::temp_path(path);
        candle_core::safetensors::save(
            &tensors.into_iter().collect::<HashMap<String, Tensor>>(),
            &tmp,
        )
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            ModelError::Write {
                path: path.to_path_buf(),
                msg: e.to_string(),
            }
        })?;
        // safetensors writes through a private (0600) temporary; give it the usual mode.
        crate::fsx::default_mode(&tmp).map_err(|e| ModelError::io(&e.path, e.source))?;
        std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
    }
}

/// The safetensors files of a model directory: one file, or the shards of an index.
fn safetensors_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::json(&index, e))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Config {
                path: index.clone(),
                msg: "missing `weight_map` object".into(),
            })?;
        let mut shards: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        return Ok(shards.into_iter().map(|s| dir.join(s)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelError::MissingTensor {
        dir: dir.to_path_buf(),
        name: "model.safetensors (or model.safetensors.index.json)".into(),
    })
}

fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| ModelError::Safetensors {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}
