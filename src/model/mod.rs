//! The policy: a Qwen2-architecture causal language model in candle.
//!
//! One implementation serves both uses. Training runs the forward with differentiable ops so
//! every parameter gets a gradient; sampling runs the same weights through fused kernels and a
//! KV cache with no autograd graph. Models are read and written as Hugging Face directories
//! (`config.json`, `*.safetensors`, `tokenizer.json`), so a downloaded Qwen2.5 checkpoint loads
//! through the same path as a preset created here.

mod attention;
mod chat;
mod config;
mod decode;
mod export;
pub(crate) mod few_rows;
mod fused;
mod generate;
pub(crate) mod grad_sink;
mod heads;
mod init;
mod kv_cache;
mod linear;
mod ops;
mod params;
mod policy;
mod product;
mod qwen2;
mod sampling;
mod swiglu;
pub(crate) mod team;
pub mod testing;
mod tokenizer;
mod transpose;

use std::path::{Path, PathBuf};

pub use chat::{ChatMessage, ChatTemplate};
pub use config::{Preset, Qwen2Config, TokenIds, IGNORED_FIELDS};
pub use export::copy_model_files;
pub use init::init_params;
pub use params::Params;
pub use policy::{default_dtype, GroupLogprobs, Policy, SeqLogprobs, KEPT_FILES};
pub use qwen2::{Attend, Qwen2, Rope};
pub use sampling::{Completion, SamplingParams};
pub use tokenizer::{ChatTokenizer, SPECIAL_TOKENS};

/// Synthetic texts the tokenizer of a preset model is trained on: one number, so every preset
/// model of a given preset and seed is the same model, whoever creates it.
pub const TOKENIZER_CORPUS: usize = 4000;

/// Errors from loading, saving, running or sampling a model. Every file error names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("{path}: unsupported architecture `{found}` (chartrl loads Qwen2 / Qwen2.5 models)")]
    UnknownArchitecture { path: PathBuf, found: String },
    #[error("{path}: `{field}` is {value}, which chartrl does not implement: {why}")]
    Unsupported {
        path: PathBuf,
        field: String,
        value: String,
        why: String,
    },
    #[error("unknown model preset `{name}` (built in: {known}; or give a path to a preset .yaml)")]
    UnknownPreset { name: String, known: String },
    #[error("{path}: not a valid safetensors file: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    /// Writing a weights file failed (a full disk, a read-only directory).
    #[error("{path}: cannot write: {msg}")]
    Write { path: PathBuf, msg: String },
    #[error("{dir}: tensor `{name}` is missing")]
    MissingTensor { dir: PathBuf, name: String },
    #[error("{dir}: tensor `{name}` holds NaN or infinite values (a diverged training run?)")]
    NonFinite { dir: PathBuf, name: String },
    #[error("{dir}: tensor `{name}` has shape {found:?}, the config implies {expected:?}")]
    ShapeMismatch {
        dir: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tokenizer: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    #[error("tokenizer: {0}")]
    Encode(String),
    #[error("{0} is not a model directory (no config.json)")]
    NotAModelDir(PathBuf),
    #[error("sequence of {len} tokens exceeds max_position_embeddings {max}")]
    TooLong { len: usize, max: usize },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn json(path: &Path, source: serde_json::Error) -> Self {
        ModelError::Json {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;
