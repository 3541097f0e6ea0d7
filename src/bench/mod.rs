//! The benchmark behind `chartrl bench`: the cost of one GRPO step's rollout and update on a
//! preset model, measured as medians after a warm-up. Returns figures; the CLI prints them.

mod report;
mod reward;
mod store;

pub use report::{report_cost, ReportFigure};
pub use reward::{reward_cost, RewardFigure};
pub use store::{store_overhead, StoreFigure};

use crate::train::observe::median;
use std::time::Instant;

use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::{Generator, PromptTemplate, Split};
use crate::model::{ModelError, Policy, Preset, SamplingParams};
use crate::train::objective::{advantages, group_loss, Normaliser};
use crate::train::{backward_pieces, clip_factor, global_norm, AdamW, AdamWConfig, LossType, Mode};

/// The workload: `prompts` groups of `completions` samples each, prompts of `prompt_tokens`,
/// `new_tokens` generated per completion (end-of-text ignored so every run does the same work).
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
    /// Median seconds of one repetition (all prompts).
    pub seconds: f64,
    pub seconds_min: f64,
    pub seconds_max: f64,
    /// Generated tokens per second (rollout only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_tokens_per_s: Option<f64>,
    /// Worker threads over groups (`CHARTRL_THREADS`).
    pub threads: usize,
    /// Threads inside each candle kernel (`RAYON_NUM_THREADS`).
    pub kernel_threads: usize,
    pub peak_rss_mb: f64,
    pub workload: Workload,
}

/// Runs both figures (`rollout`, then `train_step`) on a freshly initialised preset model.
/// `rollout_only` skips the training step (for profiling sampling alone).
pub fn run(
    preset_name: &str,
    preset: &Preset,
    workload: &Workload,
    device: &Device,
    rollout_only: bool,
) -> Result<Vec<Figure>, ModelError> {
    let policy = Policy::from_preset(preset, crate::model::TOKENIZER_CORPUS, 0, device)?;
    let prompts = bench_prompts(&policy, workload)?;
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        max_new_tokens: workload.new_tokens,
        stop_at_eos: false,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut groups = Vec::new();
    let rollout = time_reps(workload, || {
        groups = policy.sample_groups(&prompts, workload.completions, &params, &mut rng)?;
        Ok(())
    })?;
    let new_tokens = (workload.prompts * workload.completions * workload.new_tokens) as f64;
    let completions: Vec<Vec<Vec<u32>>> = groups
        .iter()
        .map(|g| g.iter().map(|c| c.tokens.clone()).collect())
        .collect();
    let tps = new_tokens / median(&rollout);
    let figure = |name, times: Vec<f64>, tps| Figure {
        figure: name,
        preset: preset_name.to_string(),
        parameters: policy.params.num_parameters(),
        seconds: median(&times),
        seconds_min: times.iter().copied().fold(f64::INFINITY, f64::min),
        seconds_max: times.iter().copied().fold(0.0, f64::max),
        new_tokens_per_s: tps,
        threads: crate::parallel::worker_threads(),
        kernel_threads: candle_core::utils::get_num_threads(),
        peak_rss_mb: peak_rss_mb(),
        workload: workload.clone(),
    };
    let mut figures = vec![figure("rollout", rollout, Some(tps))];
    if !rollout_only {
        let mut opt = AdamW::new(AdamWConfig::default());
        let train = time_reps(workload, || {
            train_step(&policy, &prompts, &completions, &mut opt)
        })?;
        figures.push(figure("train_step", train, None));
    }
    Ok(figures)
}

/// One RL update over the sampled groups, as the trainer takes it: per-group forward with
/// gradients (groups in parallel), the clipped-surrogate token-mean loss with W-REINFORCE
/// advantages (alternating correct/incorrect), clipping and AdamW.
fn train_step(
    policy: &Policy,
    prompts: &[Vec<u32>],
    groups: &[Vec<Vec<u32>>],
    opt: &mut AdamW,
) -> Result<(), ModelError> {
    let tokens: usize = groups.iter().flatten().map(Vec::len).sum();
    let norm = Normaliser {
        loss_type: LossType::TokenMean,
        kept_tokens: tokens as f64,
        kept_sequences: groups.iter().map(Vec::len).sum::<usize>() as f64,
        max_completion_length: groups.iter().flatten().map(Vec::len).max().unwrap_or(1),
    };
    let (grads, _) = backward_pieces(&policy.params, prompts.len(), |i| {
        let out = policy
            .group_logprobs(&prompts[i], &groups[i], 1.0, true)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let correct: Vec<bool> = (0..groups[i].len()).map(|j| j % 2 == 0).collect();
        let rewards: Vec<f64> = correct.iter().map(|&c| if c { 1.0 } else { 0.0 }).collect();
        let shaping = vec![0.0; rewards.len()];
        let (adv, kept) = advantages(Mode::WReinforce, &rewards, &shaping, &correct, 0.1);
        let (loss, _) = group_loss(&out.logp, &out.mask, &adv, &kept, None, 0.0, 0.2, &norm)?;
        Ok((loss, ()))
    })?;
    let factor = clip_factor(global_norm(&grads)?, 1.0);
    opt.step(&policy.params, &grads, 1e-5, factor)?;
    Ok(())
}

/// `prompts` prompts of exactly `prompt_tokens` tokens, cut from rendered synthetic samples.
fn bench_prompts(policy: &Policy, w: &Workload) -> Result<Vec<Vec<u32>>, ModelError> {
    let template = PromptTemplate::default();
    let gen = Generator::new(Split::Test, 0);
    let mut out = Vec::new();
    let mut i = 0;
    for _ in 0..w.prompts {
        let mut ids = Vec::new();
        while ids.len() < w.prompt_tokens {
            ids.extend(policy.tokenizer.encode(&template.render(&gen.sample(i)))?);
            i += 1;
        }
        ids.truncate(w.prompt_tokens);
        out.push(ids);
    }
    Ok(out)
}

fn time_reps<F>(w: &Workload, mut f: F) -> Result<Vec<f64>, ModelError>
where
    F: FnMut() -> Result<(), ModelError>,
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
