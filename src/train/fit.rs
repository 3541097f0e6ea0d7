//! The one training loop. It drives any [`Trainer`] (the RL trainer, the supervised warm
//! start) step by step until the end or until the observer asks it to stop, and hands each
//! step, with the events it raised, to a [`FitHook`]: `runs` implements the hook over the
//! store and checkpoint files, tests and benchmarks use the no-op `()`.

use super::cursor::Cursor;
use super::metrics::StepMetrics;
use super::observe::{Event, Observer, Phase};
use super::optim::AdamW;
use super::TrainError;
use crate::model::Policy;

/// What the loop, checkpoints and a resume need of a trainer.
pub trait Trainer {
    fn phase(&self) -> Phase;
    /// Steps done: the next step to take.
    fn step(&self) -> usize;
    fn total_steps(&self) -> usize;
    /// Takes the next step; events (warnings) go to `obs` (the loop reports the step).
    fn train_step(&mut self, obs: &mut dyn Observer) -> Result<StepMetrics, TrainError>;
    fn policy(&self) -> &Policy;
    fn optimizer(&self) -> &AdamW;
    /// Where the data and random streams stand before the next step.
    fn cursor(&self) -> Cursor;
    /// Continues from a checkpoint: `step` steps done, with their optimizer state (the
    /// weights are restored into the policy by the caller).
    fn restore(&mut self, step: usize, optimizer: AdamW);
    /// The resolved options, as a checkpoint records them.
    fn config_value(&self) -> serde_json::Value;
}

/// What happens around the loop's steps.
pub trait FitHook {
    type Error: From<TrainError>;
    /// After each step: `events` are the ones the step raised.
    fn after_step(
        &mut self,
        _trainer: &dyn Trainer,
        _metrics: &StepMetrics,
        _events: &[Event],
    ) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Once the loop ends, `stopped` when the observer stopped it early.
    fn at_end(&mut self, _trainer: &dyn Trainer, _stopped: bool) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// No hook: the loop alone.
impl FitHook for () {
    type Error = TrainError;
}

/// How a call to [`fit`] went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// The step it started from (0, or a restored checkpoint's).
    pub first_step: usize,
    pub steps_done: usize,
    pub total_steps: usize,
    /// The observer asked to stop before the last step.
    pub stopped: bool,
}

/// Runs `trainer` from its current step to its last, stopping between steps when
/// `obs.should_stop()`.
pub fn fit<H: FitHook>(
    trainer: &mut dyn Trainer,
    hook: &mut H,
    obs: &mut dyn Observer,
) -> Result<Fit, H::Error> {
    let first = trainer.step();
    let total = trainer.total_steps();
    obs.on_start(trainer.phase(), first, total);
    let mut stopped = false;
    while trainer.step() < total {
        if obs.should_stop() {
            stopped = true;
            break;
        }
        let mut tee = Tee {
            inner: obs,
            events: Vec::new(),
        };
        injected_fault(trainer.step())?;
        let m = trainer.train_step(&mut tee)?;
        let events = tee.events;
        tracing::debug!(step = m.step, "step done");
        obs.on_step(&m);
        hook.after_step(&*trainer, &m, &events)?;
    }
    hook.at_end(&*trainer, stopped)?;
    Ok(Fit {
        first_step: first,
        steps_done: trainer.step() - first,
        total_steps: total,
        stopped,
    })
}

/// A fault to inject for exit-code tests: `CHARTRL_FAULT=kernel:STEP` fails step STEP the
/// way a tensor kernel fails.
fn injected_fault(step: usize) -> Result<(), TrainError> {
    match std::env::var("CHARTRL_FAULT") {
        Ok(spec) if spec == format!("kernel:{step}") => Err(TrainError::Candle(
            candle_core::Error::Msg("injected kernel failure (CHARTRL_FAULT)".into()),
        )),
        _ => Ok(()),
    }
}

/// Forwards everything to the caller's observer and keeps the step's events for the hook.
struct Tee<'a> {
    inner: &'a mut dyn Observer,
    events: Vec<Event>,
}

impl Observer for Tee<'_> {
    fn on_start(&mut self, phase: Phase, start: usize, total: usize) {
        self.inner.on_start(phase, start, total);
    }
    fn on_step(&mut self, m: &StepMetrics) {
        self.inner.on_step(m);
    }
    fn on_event(&mut self, e: &Event) {
        self.events.push(e.clone());
        self.inner.on_event(e);
    }
    fn should_stop(&self) -> bool {
        self.inner.should_stop()
    }
}
