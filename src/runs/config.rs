//! A run's stored configuration, read through one type: the options it trained with (the
//! trainer's or the warm start's), and where its model and data came from. Every reader of a
//! stored run (reports, `sample`, checkpoints, evaluations) goes through here rather than
//! through key paths into the JSON.

use serde::Deserialize;

use crate::reward::RewardSpec;
use crate::store::{Kind, Run};
use crate::train::{TrainConfig, WarmStartConfig};

/// What `runs::plan` stored for a run.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunConfig {
    /// The resolved options, as the trainer or warm start had them.
    #[serde(default)]
    pub options: serde_json::Value,
    /// The input model directory, as the request named it (not part of the identity).
    #[serde(default)]
    pub model_path: Option<String>,
    #[serde(default)]
    pub data_path: Option<String>,
    /// The identity of the input model (its content hash) and of the data.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
    /// What the data is, for people (`DataSpec::label`; not part of the identity, and absent
    /// from runs made before it was recorded).
    #[serde(default)]
    pub data_label: Option<String>,
    /// The sha256 of the prompt template (runs made before it was recorded have none).
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(skip)]
    kind: Option<Kind>,
}

impl RunConfig {
    /// The configuration of `run`; an unreadable one reads as empty.
    pub fn of(run: &Run) -> Self {
        let mut c: Self = serde_json::from_value(run.config.clone()).unwrap_or_default();
        c.kind = Some(run.kind);
        c
    }

    fn option<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        serde_json::from_value(self.options.get(key)?.clone()).ok()
    }

    /// The trainer's options of an RL run.
    pub fn train(&self) -> Option<TrainConfig> {
        serde_json::from_value(self.options.clone()).ok()
    }

    /// The options of a warm start.
    pub fn warm_start(&self) -> Option<WarmStartConfig> {
        serde_json::from_value(self.options.clone()).ok()
    }

    /// Training samples: `subset_size` of an RL run, `samples` of a warm start.
    pub fn size(&self) -> Option<usize> {
        self.option("subset_size")
            .or_else(|| self.option("samples"))
    }

    pub fn seed(&self) -> Option<u64> {
        self.option("seed")
    }

    /// The rewards an RL run trained on.
    pub fn rewards(&self) -> Option<Vec<RewardSpec>> {
        self.option("rewards")
    }

    /// How often the run checkpoints and how many it keeps: its own options, else the
    /// defaults of its kind.
    pub fn save_policy(&self) -> (usize, usize) {
        let defaults = match self.kind {
            Some(Kind::WarmStart) => WarmStartConfig::builtin()
                .map(|c| (c.save_steps, c.save_total_limit))
                .ok(),
            _ => TrainConfig::builtin()
                .map(|c| (c.save_steps, c.save_total_limit))
                .ok(),
        };
        let (steps, keep) = defaults.unwrap_or((0, 0));
        (
            self.option("save_steps").unwrap_or(steps),
            self.option("save_total_limit").unwrap_or(keep),
        )
    }
}
