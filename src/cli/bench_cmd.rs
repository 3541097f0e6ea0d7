//! `chartrl bench`: prints one JSON object per measured figure.

use clap::Args;

use crate::bench::{self, Workload};

/// Measure a real RL step on a preset model (2 prompts x 4 completions, 200-token prompts, 64
/// new tokens): its rollout, its update (forward, backward, AdamW), a whole GRPO step with its
/// store write, and a warm-start step's tokens per second.
///
/// Example: chartrl bench --preset tiny --figure grpo-step
/// Threads: RAYON_NUM_THREADS (default: the physical cores).
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Built-in preset (tiny, small) or a preset .yaml file
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Timed repetitions (the median is reported), after one warm-up
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Prompts (groups) a step samples and trains on
    #[arg(long, default_value_t = 2, value_parser = at_least_one())]
    prompts: usize,
    /// Completions per prompt
    #[arg(long, default_value_t = 4, value_parser = at_least_one())]
    completions: usize,
    /// The figures to measure (repeat the flag; default: all four)
    #[arg(long, value_enum)]
    figure: Vec<StepFigureName>,
    /// Also measure what the run store and checkpoints cost a real training step (N steps)
    #[arg(long, value_name = "STEPS", num_args = 0..=1, default_missing_value = "20")]
    store: Option<usize>,
    /// Measure `chartrl report` instead, on a store of 16 runs x STEPS steps (kept in
    /// --report-dir)
    #[arg(long, value_name = "STEPS", num_args = 0..=1, default_missing_value = "1000")]
    report: Option<usize>,
    /// Where the --report store and report are written (default: a temporary directory,
    /// removed afterwards)
    #[arg(long)]
    report_dir: Option<std::path::PathBuf>,
    /// cpu, cuda or cuda:N (default: CHARTRL_DEVICE, else cpu)
    #[arg(long)]
    device: Option<crate::device::DeviceSpec>,
}

/// The figures of a training step `chartrl bench` measures.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum StepFigureName {
    /// Sampling and scoring one step's completions (new tokens/s)
    Rollout,
    /// The update alone: forward with gradients, loss, backward, clipping, AdamW
    Update,
    /// One GRPO step end to end: rollout, scoring, update, store write
    GrpoStep,
    /// One warm-start step (tokens/s over prompts and completions)
    SftStep,
    /// A decoding step's weight products alone, split by rows and by weights, over every
    /// layer and over one layer: whether sampling waits on memory or on arithmetic (only when
    /// asked for)
    Products,
}

fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    if let Some(steps) = a.report {
        let (dir, keep) = match &a.report_dir {
            Some(d) => (d.clone(), true),
            None => (
                std::env::temp_dir().join(format!("chartrl-bench-report-{}", std::process::id())),
                false,
            ),
        };
        let figure = bench::report_cost(&dir, steps.max(1));
        if !keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        println!("{}", serde_json::to_string(&figure?)?);
        return Ok(());
    }
    let dev = crate::device::DeviceSpec::resolve(a.device)?.open()?;
    let ws = crate::workspace::Workspace::current();
    let preset = ws.preset(&a.preset)?;
    let workload = Workload {
        reps: a.reps,
        prompts: a.prompts,
        completions: a.completions,
        ..Workload::default()
    };
    let wants = |f| (a.figure.is_empty() && f != StepFigureName::Products) || a.figure.contains(&f);
    let (rollout, update) = (
        wants(StepFigureName::Rollout),
        wants(StepFigureName::Update),
    );
    if rollout || update {
        let figures = bench::run(&a.preset, &preset, &workload, &dev, !update)?;
        for figure in figures.iter().filter(|f| rollout || f.figure != "rollout") {
            println!("{}", serde_json::to_string(figure)?);
        }
        if let Some(step) = figures.iter().find(|f| f.figure == "update") {
            let completions = workload.prompts * workload.completions;
            let figure = bench::reward_cost(step.time.seconds, completions, 200)
                .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string(&figure)?);
        }
    }
    if wants(StepFigureName::GrpoStep) {
        let figure = bench::grpo_step(&a.preset, &preset, &workload, &dev)?;
        println!("{}", serde_json::to_string(&figure)?);
    }
    if wants(StepFigureName::SftStep) {
        let defaults = ws.warm_start_defaults()?;
        let prompt = ws.prompt_template()?;
        let figure = bench::sft_step(&a.preset, &preset, &workload, &defaults, &prompt, &dev)?;
        println!("{}", serde_json::to_string(&figure)?);
    }
    if wants(StepFigureName::Products) {
        let threads = crate::parallel::worker_threads();
        for figure in bench::decode_products(&a.preset, &preset, &workload, threads)? {
            println!("{}", serde_json::to_string(&figure)?);
        }
    }
    if let Some(steps) = a.store {
        let defaults = ws.trainer_defaults()?;
        let figure = bench::store_overhead(
            &a.preset,
            &preset,
            &defaults,
            &ws.prompt_template()?,
            steps.max(1),
        )?;
        println!("{}", serde_json::to_string(&figure)?);
    }
    Ok(())
}
