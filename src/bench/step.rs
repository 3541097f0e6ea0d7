//! The two figures a sweep's wall time is made of: one real GRPO step end to end (rollout,
//! scoring, update and the step's store write, as `chartrl train` takes it) and the tokens
//! per second of a real warm-start step. Both run the trainers the POC runs, on the model it
//! trains, so a change that speeds them up speeds up the POC.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::store::{tempfile_dir, BenchRun};
use super::{bench_template, median_phases, peak_rss_mb, Timing, Workload};
use crate::data::{Generator, PromptTemplate, Split};
use crate::model::{Policy, Preset};
use crate::reward::{CustomRewards, Reward, RewardError, RewardSpec, Scored};
use crate::runs::{RunError, SYNTHETIC_SEED};
use crate::train::observe::median;
use crate::train::{Mode, Phases, Recorder, RlTrainer, SftTrainer, TrainConfig, Trainer};

/// One step figure, printed as a JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct StepFigure {
    pub figure: &'static str,
    pub preset: String,
    pub parameters: usize,
    /// Seconds of one step.
    #[serde(flatten)]
    pub time: Timing,
    /// Sequences in the step (completions, or warm-start samples).
    pub sequences: usize,
    /// Tokens the step's forward passes read (prompts and completions, no padding).
    pub tokens: usize,
    pub tokens_per_s: f64,
    /// GRPO: the median seconds of the rollout (sampling and scoring) within the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_seconds: Option<f64>,
    /// GRPO: the median seconds of the step's store write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_seconds: Option<f64>,
    /// The update's phases, each the median over the steps (see [`Phases`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
    pub peak_rss_mb: f64,
    pub reps: usize,
}

/// A reward with variance in every group, so no GRPO group is skipped and every step takes
/// a full update (as TRL's does): the completion's length in characters, / 100. The peer
/// benchmark gives TRL the same function.
struct CharLength;

impl Reward for CharLength {
    fn name(&self) -> &str {
        "char_length"
    }
    fn score(&self, batch: &[Scored<'_>]) -> Result<Vec<f64>, RewardError> {
        Ok(batch
            .iter()
            .map(|s| s.completion.chars().count() as f64 / 100.0)
            .collect())
    }
}

/// `reps` GRPO steps after `w.warmup` (the workload's shape, `char_length` reward), each
/// followed by its store write to a temporary store.
pub fn grpo_step(
    preset_name: &str,
    preset: &Preset,
    w: &Workload,
    device: &candle_core::Device,
) -> Result<StepFigure, RunError> {
    let policy = Policy::from_preset(preset, crate::model::TOKENIZER_CORPUS, 0, device)?;
    let parameters = policy.params.num_parameters();
    let steps = w.warmup + w.reps.max(1);
    let mut trainer = grpo_trainer(policy, w, steps)?;
    let prompt_tokens: usize = trainer.prompts().iter().map(Vec::len).sum();
    let dir = tempfile_dir()?;
    let timed = (|| {
        let mut run = BenchRun::open(&dir, Mode::Grpo, &trainer.config, steps)?;
        let mut timed = GrpoTimes::default();
        for i in 0..steps {
            let t = Instant::now();
            let m = trainer.train_step(&mut Recorder::default())?;
            let t_store = Instant::now();
            run.log(&m)?;
            if let (Some(rl), true) = (&m.rl, i >= w.warmup) {
                timed.store.push(t_store.elapsed().as_secs_f64());
                timed.step.push(t.elapsed().as_secs_f64());
                timed.rollout.push(rl.rollout_time);
                timed.phases.extend(m.phases);
                let completion = rl.completion_length.0 * rl.samples as f64;
                timed.tokens = prompt_tokens * w.completions + completion.round() as usize;
            }
        }
        Ok::<_, RunError>(timed)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let t = timed?;
    Ok(StepFigure {
        rollout_seconds: Some(median(&t.rollout)),
        store_seconds: Some(median(&t.store)),
        phases: median_phases(&t.phases),
        ..figure(
            "grpo_step",
            preset_name,
            parameters,
            &t.step,
            (w.prompts * w.completions, t.tokens),
        )
    })
}

#[derive(Default)]
struct GrpoTimes {
    step: Vec<f64>,
    rollout: Vec<f64>,
    store: Vec<f64>,
    phases: Vec<Phases>,
    tokens: usize,
}

/// A GRPO trainer of the workload's shape over `steps` steps, rewarded by `char_length`.
fn grpo_trainer(policy: Policy, w: &Workload, steps: usize) -> Result<RlTrainer, RunError> {
    let samples: Vec<_> = Generator::new(Split::Test, 0).take(w.prompts).collect();
    let template = bench_template(&policy, &samples[0], w.prompt_tokens)?;
    let mut config = TrainConfig::builtin()?;
    config.mode = Mode::Grpo;
    config.subset_size = w.prompts;
    config.batch_size = w.prompts;
    config.num_epochs = steps;
    config.num_generations = w.completions;
    config.max_completion_length = w.new_tokens;
    config.rewards = vec![RewardSpec {
        name: "char_length".into(),
        weight: 1.0,
        params: serde_json::Value::Null,
    }];
    let custom = CustomRewards(
        [(
            "char_length".to_string(),
            Arc::new(CharLength) as Arc<dyn Reward>,
        )]
        .into(),
    );
    let trainer = RlTrainer::with_rewards(config, policy, &samples, template, &custom)?;
    Ok(trainer)
}

/// `reps` warm-start steps after `warmup`, with the warm start's defaults (its batch size,
/// its learning rate) on the held-apart `warmup` split the POC warm-starts on.
pub fn sft_step(
    preset_name: &str,
    preset: &Preset,
    w: &Workload,
    defaults: &crate::train::WarmStartConfig,
    prompt: &PromptTemplate,
    device: &candle_core::Device,
) -> Result<StepFigure, RunError> {
    let policy = Policy::from_preset(preset, crate::model::TOKENIZER_CORPUS, 0, device)?;
    let parameters = policy.params.num_parameters();
    let mut config = defaults.clone();
    let steps = w.warmup + w.reps.max(1);
    config.samples = steps * config.batch_size;
    config.epochs = 1;
    let samples: Vec<_> = Generator::new(Split::Warmup, SYNTHETIC_SEED)
        .take(config.samples)
        .collect();
    let sequences = config.batch_size;
    let mut trainer = SftTrainer::new(config, policy, &samples, prompt)?;
    let (mut step_s, mut tokens, mut phases) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..steps {
        let batch_tokens = trainer.batch_tokens();
        let t = Instant::now();
        let m = trainer.train_step(&mut Recorder::default())?;
        if i >= w.warmup {
            step_s.push(t.elapsed().as_secs_f64());
            tokens.push(batch_tokens);
            phases.extend(m.phases);
        }
    }
    let tokens = tokens.iter().sum::<usize>() / tokens.len().max(1);
    Ok(StepFigure {
        phases: median_phases(&phases),
        ..figure(
            "sft_step",
            preset_name,
            parameters,
            &step_s,
            (sequences, tokens),
        )
    })
}

fn figure(
    name: &'static str,
    preset: &str,
    parameters: usize,
    times: &[f64],
    (sequences, tokens): (usize, usize),
) -> StepFigure {
    let time = Timing::of(times);
    StepFigure {
        figure: name,
        preset: preset.to_string(),
        parameters,
        time,
        sequences,
        tokens,
        tokens_per_s: tokens as f64 / time.seconds,
        rollout_seconds: None,
        store_seconds: None,
        phases: None,
        peak_rss_mb: peak_rss_mb(),
        reps: times.len(),
    }
}
