//! `chartrl bench`: prints one JSON object per measured figure.

use clap::Args;

use crate::bench::{self, Workload};

/// Measure one GRPO step's rollout (2 prompts x 4 completions, 200-token prompts, 64 new
/// tokens) and its training step (forward, backward, AdamW) on a preset model.
///
/// Example: chartrl bench --preset tiny
/// Threads: RAYON_NUM_THREADS (default: the physical cores).
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Built-in preset (tiny, small) or a preset .yaml file
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Timed repetitions (the median is reported), after one warm-up
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Measure the rollout only
    #[arg(long)]
    rollout_only: bool,
    /// Also measure what the run store and checkpoints cost a real training step (N steps)
    #[arg(long, value_name = "STEPS", num_args = 0..=1, default_missing_value = "20")]
    store: Option<usize>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let dev = super::device(&a.device)?;
    let workload = Workload {
        reps: a.reps,
        ..Workload::default()
    };
    let figures = bench::run(&a.preset, &workload, &dev, a.rollout_only)?;
    for figure in &figures {
        println!("{}", serde_json::to_string(figure)?);
    }
    if let Some(step) = figures.iter().find(|f| f.figure == "train_step") {
        let completions = workload.prompts * workload.completions;
        let figure =
            bench::reward_cost(step.seconds, completions, 200).map_err(anyhow::Error::msg)?;
        println!("{}", serde_json::to_string(&figure)?);
    }
    if let Some(steps) = a.store {
        let figure = bench::store_overhead(&a.preset, steps.max(1))?;
        println!("{}", serde_json::to_string(&figure)?);
    }
    Ok(())
}
