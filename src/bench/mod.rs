//! The benchmark behind `chartrl bench`: the cost of the two halves of a real RL step, the
//! trainer's own rollout and update, on the model the POC trains, measured as medians after
//! a warm-up. Returns figures; the CLI prints them.

mod products;
mod report;
mod reward;
mod step;
mod store;

pub use products::{decode_products, ProductsFigure};
pub use report::{report_cost, ReportFigure};
pub use reward::{reward_cost, RewardFigure};
pub use step::{grpo_step, sft_step, StepFigure};
pub use store::{store_overhead, StoreFigure};

use crate::train::observe::median;
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use crate::data::{Generator, PromptTemplate, Split};
use crate::model::{Policy, Preset};
use crate::train::{Mode, Phases, RlTrainer, TrainConfig, TrainError};

/// The workload: `prompts` groups of `completions` samples each, prompts of about
/// `prompt_tokens`, at most `new_tokens` generated per completion.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub prompts: usize,
    pub completions: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub warmup: usize,
    pub reps: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            prompts: 2,
            completions: 4,
            prompt_tokens: 200,
            new_tokens: 64,
            warmup: 1,
            reps: 5,
        }
    }
}

/// One measured figure, printed as a JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub figure: &'static str,
    pub preset: String,
    pub parameters: usize,
    /// Seconds of one repetition (all prompts).
    #[serde(flatten)]
    pub time: Timing,
    /// Mean prompt length in tokens.
    pub prompt_tokens: usize,
    /// Generated tokens per second (rollout only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_tokens_per_s: Option<f64>,
    /// Decoded positions per second: rows times the longest completion (rollout only; see
    /// [`crate::train::Rollout::decoded_tokens`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoded_tokens_per_s: Option<f64>,
    /// Worker threads over groups (`CHARTRL_THREADS`).
    pub threads: usize,
    /// Threads inside each candle kernel (`RAYON_NUM_THREADS`).
    pub kernel_threads: usize,
    pub peak_rss_mb: f64,
    /// The update's phases, each the median over the repetitions (see [`Phases`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
    pub workload: Workload,
}

/// Repeated timings: the median (`seconds`) and the range.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timing {
    pub seconds: f64,
    pub seconds_min: f64,
    pub seconds_max: f64,
}

impl Timing {
    pub fn of(times: &[f64]) -> Self {
        Self {
            seconds: median(times),
            seconds_min: times.iter().copied().fold(f64::INFINITY, f64::min),
            seconds_max: times.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// Runs both halves of a real RL step: [`RlTrainer::rollout`], then [`RlTrainer::update`],
/// on the model the POC trains (the preset with its standard tokenizer and seed), with
/// W-REINFORCE, which keeps every sample, so every update is a full one. `rollout_only` skips
/// the update (for profiling sampling alone).
pub fn run(
    preset_name: &str,
    preset: &Preset,
    workload: &Workload,
    device: &Device,
    rollout_only: bool,
) -> Result<Vec<Figure>, TrainError> {
    let policy = Policy::from_preset(preset, crate::model::TOKENIZER_CORPUS, 0, device)?;
    let parameters = policy.params.num_parameters();
    let mut trainer = bench_trainer(policy, workload)?;
    let mut rollout = None;
    let times = time_reps(workload, || {
        rollout = Some(trainer.rollout(0)?);
        Ok(())
    })?;
    let Some(rollout) = rollout else {
        return Ok(Vec::new());
    };
    let tps = rollout.new_tokens() as f64 / median(&times);
    let decoded = rollout.decoded_tokens() as f64 / median(&times);
    let prompt_tokens =
        rollout.prompts.iter().map(Vec::len).sum::<usize>() / rollout.prompts.len().max(1);
    let figure = |name, times: Vec<f64>, tps: Option<(f64, f64)>, phases| Figure {
        figure: name,
        preset: preset_name.to_string(),
        parameters,
        time: Timing::of(&times),
        new_tokens_per_s: tps.map(|t| t.0),
        decoded_tokens_per_s: tps.map(|t| t.1),
        prompt_tokens,
        threads: crate::parallel::worker_threads(),
        kernel_threads: candle_core::utils::get_num_threads(),
        peak_rss_mb: peak_rss_mb(),
        phases,
        workload: workload.clone(),
    };
    let mut figures = vec![figure("rollout", times, Some((tps, decoded)), None)];
    if !rollout_only {
        let mut phases = Vec::new();
        let update = time_reps(workload, || {
            phases.extend(trainer.update(&rollout)?.phases);
            Ok(())
        })?;
        // The warm-up's phases are not timed.
        let timed = &phases[phases.len().saturating_sub(update.len())..];
        figures.push(figure("update", update, None, median_phases(timed)));
    }
    Ok(figures)
}

/// An RL trainer of the workload's shape (`prompts` x `completions`, `new_tokens` at most)
/// over synthetic test questions whose prompts are padded to about `prompt_tokens`.
fn bench_trainer(policy: Policy, w: &Workload) -> Result<RlTrainer, TrainError> {
    let samples: Vec<_> = Generator::new(Split::Test, 0).take(w.prompts).collect();
    let mut config = TrainConfig::builtin()?;
    config.mode = Mode::WReinforce;
    config.subset_size = w.prompts;
    config.batch_size = w.prompts;
    config.num_generations = w.completions;
    config.max_completion_length = w.new_tokens;
    config.learning_rate = 1e-5;
    let template = bench_template(&policy, &samples[0], w.prompt_tokens)?;
    RlTrainer::new(config, policy, &samples, template)
}

/// The default prompt template with the chart's table repeated before it until a prompt
/// reaches about `tokens` tokens (the benchmark's prompt length).
pub(super) fn bench_template(
    policy: &Policy,
    sample: &crate::data::Sample,
    tokens: usize,
) -> Result<PromptTemplate, TrainError> {
    let base = PromptTemplate::default();
    let mut text = base.text().to_string();
    while policy
        .tokenizer
        .encode(&PromptTemplate::parse(&text).map_err(bad)?.render(sample))?
        .len()
        < tokens
    {
        text = format!("Context:\n{{table}}\n{text}");
    }
    PromptTemplate::parse(&text).map_err(bad)
}

fn bad(msg: String) -> TrainError {
    TrainError::Config {
        origin: "bench prompt".into(),
        msg,
    }
}

fn time_reps<F>(w: &Workload, mut f: F) -> Result<Vec<f64>, TrainError>
where
    F: FnMut() -> Result<(), TrainError>,
{
    for _ in 0..w.warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(w.reps);
    for _ in 0..w.reps.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(times)
}

/// Each phase's median over `phases`; `None` when there are none.
fn median_phases(phases: &[Phases]) -> Option<Phases> {
    let of = |f: fn(&Phases) -> f64| median(&phases.iter().map(f).collect::<Vec<_>>());
    (!phases.is_empty()).then(|| Phases {
        forward: of(|p| p.forward),
        backward: of(|p| p.backward),
        passes: of(|p| p.passes),
        optimizer: of(|p| p.optimizer),
    })
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
