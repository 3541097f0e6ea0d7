//! Chart question answering data: the chart and sample types, the synthetic generator (the
//! offline default), prompt rendering, and loaders for chartrl JSONL and ChartQA layouts.

mod chart;
mod difficulty;
mod load;
mod prompt;
mod qtype;
mod questions;
mod render;
mod synthetic;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use chart::{format_number, Chart, ChartKind, Sample, Series};
pub use difficulty::Difficulty;
pub use load::{load_chartqa, load_jsonl, write_jsonl};
pub use prompt::{gold_completion, PromptFormat, PromptTemplate};
pub use qtype::{chance, chance_pass_at_k, AnswerKind, Family, QuestionType};
pub use render::render_chart;
pub use synthetic::{partition, Generator, Split, FULL_TRAIN_SIZE};

/// Errors reading or checking data. Each names the file, and the line where there is one.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}{}: {msg}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Invalid {
        path: PathBuf,
        line: usize,
        msg: String,
    },
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where a dataset comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// The built-in generator: samples `0..size` of `(split, seed)`.
    Synthetic {
        split: Split,
        seed: u64,
        size: usize,
    },
    /// chartrl JSONL.
    Jsonl { path: PathBuf },
    /// A ChartQA question JSON with `tables/` beside it.
    ChartQa { path: PathBuf },
}

impl DataSource {
    /// A file by extension: `.jsonl` is chartrl JSONL, `.json` a ChartQA question list.
    pub fn from_path(path: &Path) -> Result<Self, DataError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => Ok(DataSource::Jsonl { path: path.to_path_buf() }),
            Some("json") => Ok(DataSource::ChartQa { path: path.to_path_buf() }),
            _ => Err(DataError::Invalid {
                path: path.to_path_buf(),
                line: 0,
                msg: "unknown data format (use .jsonl for chartrl JSONL, .json for a ChartQA question list)".into(),
            }),
        }
    }

    /// Every sample, in order.
    pub fn load(&self) -> Result<Vec<Sample>, DataError> {
        match self {
            DataSource::Synthetic { split, seed, size } => {
                Ok(Generator::new(*split, *seed).take(*size).collect())
            }
            DataSource::Jsonl { path } => load_jsonl(path),
            DataSource::ChartQa { path } => load_chartqa(path),
        }
    }
}

/// Text to train the tokenizer on: prompts and gold completions of the synthetic warm-up
/// split (never the RL or test questions).
pub fn tokenizer_corpus(n: usize, seed: u64) -> impl Iterator<Item = String> + Send {
    let template = PromptTemplate::default();
    let gen = Generator::new(Split::Warmup, seed);
    (0..n).map(move |i| {
        let s = gen.sample(i);
        format!(
            "{}{}<|endoftext|>",
            template.render(&s),
            gold_completion(&s)
        )
    })
}
