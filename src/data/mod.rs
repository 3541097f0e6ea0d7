//! Chart question answering data: the chart and sample types, the synthetic generator (the
//! offline default), prompt rendering, and loaders for chartrl JSONL and ChartQA layouts.

mod chart;
mod prompt;
mod synthetic;

use std::path::{Path, PathBuf};

pub use chart::{format_number, Chart, ChartKind, Sample, Series};
pub use prompt::{gold_completion, PromptTemplate};
pub use synthetic::{Generator, Split, QUESTION_TYPES};

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

/// Text to train the tokenizer on: prompts and gold completions of the synthetic train split.
pub fn tokenizer_corpus(n: usize, seed: u64) -> impl Iterator<Item = String> + Send {
    let template = PromptTemplate::default();
    let gen = Generator::new(Split::Train, seed);
    (0..n).map(move |i| {
        let s = gen.sample(i);
        format!(
            "{}{}<|endoftext|>",
            template.render(&s),
            gold_completion(&s)
        )
    })
}
