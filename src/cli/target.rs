//! The `--run RUN | --model DIR` and `--data FILE` arguments `eval` and `sample` share.

use std::path::PathBuf;

use clap::Args;

use crate::data::Split;
use crate::runs::{DataSpec, SYNTHETIC_SEED};

/// A run's model or a model directory: exactly one.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A run, by name or identity prefix: its final model, or its latest checkpoint
    #[arg(long)]
    pub run: Option<String>,
    /// A model directory
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// Held-out questions.
#[derive(Args, Debug)]
pub struct Questions {
    /// Questions: .jsonl or ChartQA .json; default: the synthetic test split (seed 2025)
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl Questions {
    pub fn spec(&self) -> DataSpec {
        match &self.data {
            Some(p) => DataSpec::File(p.clone()),
            None => DataSpec::Synthetic {
                split: Split::Test,
                seed: SYNTHETIC_SEED,
            },
        }
    }
}
