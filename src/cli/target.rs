//! The `--run RUN | --model DIR` and `--data FILE` arguments `eval` and `sample` share.

use std::path::PathBuf;

use clap::Args;

use crate::data::{PromptFormat, Split};
use crate::device::DeviceSpec;
use crate::runs::DataSpec;

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
            None => DataSpec::synthetic(Split::Test),
        }
    }
}

/// Where a command computes and how prompts reach the model.
#[derive(Args, Debug, Clone)]
pub struct Compute {
    /// cpu, cuda or cuda:N (default: the CHARTRL_DEVICE variable, else cpu). Training keeps
    /// f32 weights on every device; sampling and evaluation use bf16 on CUDA
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// raw: the prompt as it is; chat: as the user turn of the model's own chat template (for
    /// instruction-tuned checkpoints) [default: raw]
    #[arg(long, value_enum)]
    pub prompt_format: Option<Format>,
}

/// `--prompt-format`.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Format {
    Raw,
    Chat,
}

impl From<Format> for PromptFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Raw => PromptFormat::Raw,
            Format::Chat => PromptFormat::Chat,
        }
    }
}

impl Compute {
    pub fn device(&self) -> Result<candle_core::Device, crate::device::DeviceError> {
        DeviceSpec::resolve(self.device)?.open()
    }

    pub fn format(&self) -> PromptFormat {
        self.prompt_format.map(Into::into).unwrap_or_default()
    }
}

/// How completions are drawn (`sample`, `eval`); defaults are the evaluation's.
#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct Sampling {
    /// Softmax temperature (0: greedy)
    #[arg(long, default_value_t = crate::eval::EvalConfig::default().temperature)]
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability
    #[arg(long, default_value_t = crate::eval::EvalConfig::default().top_p)]
    pub top_p: f64,
    /// Tokens per completion at most, end-of-text included
    #[arg(long, default_value_t = crate::eval::EvalConfig::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Seeds the sampling
    #[arg(long, default_value_t = crate::eval::EvalConfig::default().seed)]
    pub seed: u64,
}
