//! What the run machinery needs from a trainer to step it, checkpoint it and restore it:
//! implemented by the RL trainer and the supervised warm start.

use crate::model::Policy;
use crate::train::{
    AdamW, Cursor, Observer, Phase, RlTrainer, SftTrainer, StepMetrics, TrainError,
};

pub trait Resumable {
    fn phase(&self) -> Phase;
    /// Steps done: the next step to take.
    fn step(&self) -> usize;
    fn total_steps(&self) -> usize;
    fn train_step(&mut self, obs: &mut dyn Observer) -> Result<StepMetrics, TrainError>;
    fn policy(&self) -> &Policy;
    fn optimizer(&self) -> &AdamW;
    fn cursor(&self) -> Cursor;
    fn restore(&mut self, step: usize, optimizer: AdamW);
    /// The resolved options, as recorded in a checkpoint and checked on restore.
    fn config_value(&self) -> serde_json::Value;
}

impl Resumable for RlTrainer {
    fn phase(&self) -> Phase {
        Phase::Rl(self.config.mode)
    }
    fn step(&self) -> usize {
        self.step
    }
    fn total_steps(&self) -> usize {
        RlTrainer::total_steps(self)
    }
    fn train_step(&mut self, obs: &mut dyn Observer) -> Result<StepMetrics, TrainError> {
        RlTrainer::train_step(self, obs)
    }
    fn policy(&self) -> &Policy {
        &self.policy
    }
    fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }
    fn cursor(&self) -> Cursor {
        RlTrainer::cursor(self)
    }
    fn restore(&mut self, step: usize, optimizer: AdamW) {
        RlTrainer::restore(self, step, optimizer)
    }
    fn config_value(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

impl Resumable for SftTrainer {
    fn phase(&self) -> Phase {
        Phase::WarmStart
    }
    fn step(&self) -> usize {
        self.step
    }
    fn total_steps(&self) -> usize {
        SftTrainer::total_steps(self)
    }
    fn train_step(&mut self, obs: &mut dyn Observer) -> Result<StepMetrics, TrainError> {
        SftTrainer::train_step(self, obs)
    }
    fn policy(&self) -> &Policy {
        &self.policy
    }
    fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }
    fn cursor(&self) -> Cursor {
        SftTrainer::cursor(self)
    }
    fn restore(&mut self, step: usize, optimizer: AdamW) {
        SftTrainer::restore(self, step, optimizer)
    }
    fn config_value(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}
