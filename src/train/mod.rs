//! Training: the configuration, the four RL objectives, the supervised warm start and the RL
//! loop, with gradients and the optimizer they share.

pub mod config;
pub mod grads;
pub mod objective;
pub mod observe;
pub mod optim;
pub mod rl;
pub mod sft;

pub use config::{LossType, Mode, Schedule, TrainConfig};
pub use grads::{backward_pieces, clip_factor, global_norm, Grads};
pub use observe::{Event, Example, Level, Observer, Phase, Recorder, StepMetrics, TIMING_KEYS};
pub use optim::{AdamW, AdamWConfig};
pub use rl::{derive_seed, Cursor, RlTrainer, RunSummary};
pub use sft::{SftTrainer, WarmStartConfig};

/// Errors of the trainer, naming the option, run or step involved.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{origin}: {msg}")]
    Config { origin: String, msg: String },
    #[error("unknown trainer option `{key}` (valid: {valid})")]
    UnknownOption { key: String, valid: String },
    #[error("step {step}: {source}")]
    Step {
        step: usize,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Reward(#[from] crate::reward::RewardError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
