//! What a reward written in a script costs a training step: the `concise` closure of
//! `experiments/custom_reward.rhai` scoring one step's completions (2 prompts x 4), against the
//! built-in `format` reward on the same batch and the step time measured by `train_step`.

use std::time::Instant;

use serde::Serialize;

use crate::data::{gold_completion, Generator, Split};
use crate::reward::{Builtin, Reward, Scored};

/// The closure measured: word count against a limit, as in `experiments/custom_reward.rhai`.
pub const CONCISE: &str = r#"
let max_words = 40;
|completion, sample| {
    let words = completion.split(" ").len();
    if words <= max_words { 1.0 } else { (2.0 - words.to_float() / max_words.to_float()).max(0.0) }
}
"#;

#[derive(Debug, Clone, Serialize)]
pub struct RewardFigure {
    pub figure: &'static str,
    pub completions_per_step: usize,
    /// Mean seconds to score one step's completions with the script closure.
    pub script_seconds: f64,
    /// The same with the built-in `format` reward (Rust).
    pub builtin_seconds: f64,
    /// The training step it is compared with (the `train_step` figure's median).
    pub step_seconds: f64,
    pub script_pct_of_step: f64,
}

/// Scores `completions` gold completions `reps` times with each reward.
pub fn reward_cost(
    step_seconds: f64,
    completions: usize,
    reps: usize,
) -> Result<RewardFigure, String> {
    let script = crate::script::reward_from_source("concise", CONCISE)?;
    let builtin = Builtin::Format;
    let samples: Vec<_> = Generator::new(Split::Train, crate::runs::SYNTHETIC_SEED)
        .take(completions)
        .collect();
    let texts: Vec<String> = samples.iter().map(gold_completion).collect();
    let batch: Vec<Scored> = samples
        .iter()
        .zip(&texts)
        .map(|(s, t)| Scored {
            sample: s,
            completion: t,
            tokens: t.len() / 4,
        })
        .collect();
    let time = |r: &dyn Reward| -> Result<f64, String> {
        r.score(&batch).map_err(|e| e.to_string())?;
        let t = Instant::now();
        for _ in 0..reps {
            r.score(&batch).map_err(|e| e.to_string())?;
        }
        Ok(t.elapsed().as_secs_f64() / reps as f64)
    };
    let script_seconds = time(&script)?;
    let builtin_seconds = time(&builtin)?;
    Ok(RewardFigure {
        figure: "script_reward",
        completions_per_step: completions,
        script_seconds,
        builtin_seconds,
        step_seconds,
        script_pct_of_step: 100.0 * script_seconds / step_seconds,
    })
}
