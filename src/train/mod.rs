//! Training: the configuration, the four RL objectives, the supervised warm start and the RL
//! loop, with gradients and the optimizer they share.

pub mod config;
pub mod cursor;
pub mod fit;
pub mod grads;
pub mod metrics;
pub mod objective;
pub mod observe;
pub mod optim;
pub mod rl;
pub mod rollout;
pub mod sft;
pub mod update;

pub use config::{LossType, Mode, Schedule, TrainConfig};

/// Stops a step whose `quantity` came out NaN or infinite, with the options to change.
pub(crate) fn ensure_finite(
    step: usize,
    quantity: &str,
    value: f64,
    learning_rate: f64,
    max_grad_norm: f64,
) -> Result<(), TrainError> {
    if value.is_finite() {
        return Ok(());
    }
    let clip = if max_grad_norm > 0.0 {
        format!("max_grad_norm is {max_grad_norm}")
    } else {
        "max_grad_norm is 0: clipping is off".to_string()
    };
    Err(TrainError::NonFinite {
        step,
        quantity: quantity.to_string(),
        value,
        fix: format!(
            "lower learning_rate (it is {learning_rate:e}) or clip gradients with max_grad_norm, e.g. 1.0 ({clip})"
        ),
    })
}

/// After an update: the first parameter that is no longer finite stops the run.
pub(crate) fn ensure_finite_weights(
    step: usize,
    params: &crate::model::Params,
    learning_rate: f64,
    max_grad_norm: f64,
) -> Result<(), TrainError> {
    match params.first_non_finite()? {
        Some(name) => ensure_finite(
            step,
            &format!("weight `{name}` after the update"),
            f64::NAN,
            learning_rate,
            max_grad_norm,
        ),
        None => Ok(()),
    }
}
pub use cursor::{derive_seed, Cursor};
pub use fit::{fit, Fit, FitHook, Trainer};
pub use grads::{backward_pieces, clip_factor, global_norm, Grads};
pub use metrics::{keys, Example, Phases, RlStepMetrics, StepMetrics, TIMING_KEYS};
pub use observe::{Event, Level, Observer, Phase, Recorder};
pub use optim::{AdamW, AdamWConfig};
pub use rl::RlTrainer;
pub use rollout::Rollout;
pub use sft::{SftTrainer, WarmStartConfig};
pub use update::Update;

/// Errors of the trainer, naming the option, run or step involved.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{origin}: {msg}")]
    Config { origin: String, msg: String },
    #[error(transparent)]
    Options(#[from] crate::options::OptionsError),
    #[error("step {step}: {source}")]
    Step {
        step: usize,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Training diverged: a loss, gradient norm or updated weight is NaN or infinite.
    #[error("step {step}: the {quantity} is {value}: training diverged ({fix})")]
    NonFinite {
        step: usize,
        quantity: String,
        value: f64,
        fix: String,
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
