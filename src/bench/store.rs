//! What the run store and checkpoints cost a training step: the real RL trainer on a preset
//! model, each step followed by the store write it makes in `chartrl train`, timed apart, so
//! the overhead is a ratio measured within one process rather than the difference of two
//! noisy runs.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::data::{Generator, PromptTemplate, Split};
use crate::model::{Policy, Preset};
use crate::runs::{checkpoint, RunError};
use crate::store::{write::StepRecord, Kind, NewRun, Owner, Run, Store, STALE_AFTER};
use crate::train::{Mode, Recorder, RlTrainer, StepMetrics, TrainConfig, Trainer};

#[derive(Debug, Clone, Serialize)]
pub struct StoreFigure {
    pub figure: &'static str,
    pub preset: String,
    pub mode: &'static str,
    pub steps: usize,
    /// Mean seconds of a training step (rollout + update), store excluded.
    pub step_seconds: f64,
    /// Mean seconds of the step's store write (metrics, latest values, examples, events).
    pub store_seconds: f64,
    pub store_seconds_max: f64,
    /// `store_seconds / step_seconds`, in percent.
    pub store_overhead_pct: f64,
    pub metric_rows_per_step: usize,
    /// Seconds to write, fsync and hash one checkpoint.
    pub checkpoint_seconds: f64,
    pub checkpoint_mb: f64,
    /// Checkpoint cost per step at `save_steps`, in percent of a step.
    pub checkpoint_overhead_pct: f64,
    pub save_steps: usize,
}

/// Trains `steps` NSR steps of `preset` (random weights, so every step has incorrect samples
/// to push down and takes a full update) with the default trainer options, timing the step and
/// its store write (lease check included, as `chartrl train` makes it) separately, then one
/// checkpoint.
pub fn store_overhead(
    preset_name: &str,
    preset: &Preset,
    defaults: &TrainConfig,
    prompt: &PromptTemplate,
    steps: usize,
) -> Result<StoreFigure, RunError> {
    let dev = candle_core::Device::Cpu;
    let policy = Policy::from_preset(preset, crate::model::TOKENIZER_CORPUS, 0, &dev)?;
    let mut cfg = defaults.clone();
    cfg.mode = Mode::Nsr;
    cfg.subset_size = steps * cfg.batch_size;
    let samples: Vec<_> = Generator::new(Split::Train, crate::runs::SYNTHETIC_SEED)
        .take(cfg.subset_size)
        .collect();
    let save_steps = cfg.save_steps;
    let mut trainer = RlTrainer::new(cfg.clone(), policy, &samples, prompt.clone())?;

    let dir = tempfile_dir()?;
    let mut run = BenchRun::open(&dir, Mode::Nsr, &cfg, steps)?;
    let (mut step_s, mut store_s) = (Vec::new(), Vec::new());
    let mut rows = 0;
    for _ in 0..steps {
        let t = Instant::now();
        let m = trainer.train_step(&mut Recorder::default())?;
        step_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        rows = run.log(&m)?;
        store_s.push(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let row = checkpoint::write(&dir, "bench/checkpoints/checkpoint-bench", &trainer)?;
    let checkpoint_seconds = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (step_seconds, store_seconds) = (mean(&step_s), mean(&store_s));
    Ok(StoreFigure {
        figure: "store",
        preset: preset_name.to_string(),
        mode: "nsr",
        steps,
        step_seconds,
        store_seconds,
        store_seconds_max: store_s.iter().copied().fold(0.0, f64::max),
        store_overhead_pct: 100.0 * store_seconds / step_seconds,
        metric_rows_per_step: rows,
        checkpoint_seconds,
        checkpoint_mb: row.size as f64 / 1e6,
        checkpoint_overhead_pct: 100.0 * checkpoint_seconds / (save_steps as f64 * step_seconds),
        save_steps,
    })
}

/// A run in a bench store, claimed by this process, as `chartrl train` holds its run.
pub(super) struct BenchRun {
    store: Store,
    run: Run,
    me: Owner,
}

impl BenchRun {
    pub(super) fn open(
        dir: &Path,
        mode: Mode,
        cfg: &TrainConfig,
        steps: usize,
    ) -> Result<Self, RunError> {
        let mut store = Store::open(&dir.join("chartrl.db"))?;
        let (run, _) = store.find_or_create_run(&NewRun {
            identity: format!("bench-{}", mode.name()),
            name: format!("bench-{}", mode.name()),
            experiment: None,
            kind: Kind::Train,
            mode: Some(mode.name().into()),
            config: serde_json::to_value(cfg).unwrap_or_default(),
            total_steps: steps,
        })?;
        let me = Owner::current();
        store.claim(&run, &me, STALE_AFTER, false)?;
        Ok(Self { store, run, me })
    }

    /// Writes `m` as `chartrl train` does after a step (lease check included); returns the
    /// metric rows written.
    pub(super) fn log(&mut self, m: &StepMetrics) -> Result<usize, RunError> {
        let values = m.values();
        self.store.log_step(
            self.run.id,
            &StepRecord {
                step: m.step,
                values: Some(&values),
                events: &[],
                samples: &crate::runs::sample_rows(m),
                lease: Some(&self.me.token),
            },
        )?;
        Ok(values.len())
    }
}

/// A fresh directory under the system temporary directory.
pub(super) fn tempfile_dir() -> Result<std::path::PathBuf, RunError> {
    let dir = std::env::temp_dir().join(format!("chartrl-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
    Ok(dir)
}
