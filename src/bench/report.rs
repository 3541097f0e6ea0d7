//! What `chartrl report` costs on a sweep-sized store: 16 runs (4 modes x 2 sizes x 2 seeds)
//! of 1,000 steps, each step with the metrics and kept completions an RL step records, each
//! run with a 100-question, n = 16 evaluation. The store is filled through the same writes
//! training makes, then the report is built and timed.

use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::QuestionType;
use crate::eval::{EvalConfig, EvalSummary, QuestionResult, StoredEval};
use crate::report::{self, ReportError};
use crate::runs::sample_rows;
use crate::store::{write::StepRecord, Kind, NewRun, Store};
use crate::train::{Example, Mode, Phase, RlStepMetrics, StepMetrics};

#[derive(Debug, Clone, Serialize)]
pub struct ReportFigure {
    pub figure: &'static str,
    pub runs: usize,
    pub steps_per_run: usize,
    pub metric_rows: usize,
    pub db_mb: f64,
    /// Seconds to fill the store (not part of the report).
    pub fill_seconds: f64,
    /// Seconds of `report::select` + `report::build`: reading, figures, documents.
    pub report_seconds: f64,
    pub files: usize,
}

/// Fills a store in `dir` (created; left in place) and times the report of it.
pub fn report_cost(dir: &Path, steps: usize) -> Result<ReportFigure, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let db = dir.join("chartrl.db");
    let _ = std::fs::remove_file(&db);
    let mut store = Store::open(&db)?;
    let t = Instant::now();
    let mut rows = 0;
    let mut runs = 0;
    for size in [1000usize, 10000] {
        for mode in Mode::ALL {
            for seed in [1u64, 2] {
                rows += fill_run(&mut store, mode, size, seed, steps)?;
                runs += 1;
            }
        }
    }
    let fill_seconds = t.elapsed().as_secs_f64();
    let db_mb = std::fs::metadata(&db)
        .map(|m| m.len() as f64 / 1e6)
        .unwrap_or(0.0);

    let t = Instant::now();
    let selected = report::select(&store, &["bench".to_string()])?;
    let out = report::build(&store, &selected, &dir.join("report"), "bench")?;
    Ok(ReportFigure {
        figure: "report",
        runs,
        steps_per_run: steps,
        metric_rows: rows,
        db_mb,
        fill_seconds,
        report_seconds: t.elapsed().as_secs_f64(),
        files: out.files.len(),
    })
}

/// One run with `steps` steps of plausible metrics; returns the metric rows written.
fn fill_run(
    store: &mut Store,
    mode: Mode,
    size: usize,
    seed: u64,
    steps: usize,
) -> Result<usize, ReportError> {
    let name = mode.name();
    let (run, _) = store.find_or_create_run(&NewRun {
        identity: format!("bench-{name}-{size}-{seed}"),
        name: format!("{name}-n{size}-s{seed}"),
        experiment: Some("bench".into()),
        kind: Kind::Train,
        mode: Some(name.into()),
        config: serde_json::json!({"options": {"mode": name, "subset_size": size, "seed": seed}}),
        total_steps: steps,
    })?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed * 31 + size as u64);
    let lift = 0.05 * Mode::ALL.iter().position(|m| *m == mode).unwrap_or(0) as f64;
    let mut rows = 0;
    for step in 0..steps {
        let m = plausible_step(&mut rng, mode, step, steps, size, lift);
        let values = m.values();
        store.log_step(
            run.id,
            &StepRecord {
                step,
                values: Some(&values),
                events: &[],
                samples: &sample_rows(&m),
                lease: None,
            },
        )?;
        rows += values.len();
    }
    let config = EvalConfig::default();
    let questions = plausible_questions(&mut rng, config.n);
    let name = config.name(
        "synthetic:bench",
        &crate::data::PromptTemplate::default(),
        questions.len(),
    );
    store.add_eval_questions(run.id, steps, &name, &questions)?;
    let summary = EvalSummary::from_questions(&questions)?;
    let stored = StoredEval {
        data: "synthetic test split (bench)".into(),
        config,
        summary,
    };
    let json = serde_json::to_value(&stored).unwrap_or_default();
    store.add_evaluation(run.id, steps, &name, &json)?;
    store.mark_done(run.id)?;
    Ok(rows)
}

/// An RL step of 8 completions whose accuracy rises over the run, with noise.
fn plausible_step(
    rng: &mut ChaCha8Rng,
    mode: Mode,
    step: usize,
    steps: usize,
    size: usize,
    lift: f64,
) -> StepMetrics {
    let progress = step as f64 / steps as f64;
    let acc = (0.2 + lift + 0.4 * progress + rng.random_range(-0.1..0.1)).clamp(0.0, 1.0);
    let correct = (8.0 * acc).round() as usize;
    let example = |rank: &'static str, reward: f64| Example {
        rank,
        prompt_id: format!("q{}", step % size),
        completion: "<think>\nThe bar for 2021 is 42.\n</think>\n<answer>\n42\n</answer>".into(),
        rewards: [("accuracy".to_string(), reward)].into(),
        reward,
        advantage: 0.5,
    };
    StepMetrics {
        phase: Phase::Rl(mode),
        step,
        total_steps: steps,
        learning_rate: 5e-5 * (1.0 - progress),
        loss: Some(1.0 - 2.0 * acc),
        grad_norm: Some(0.5 + rng.random::<f64>()),
        step_time: 0.7 + 0.1 * rng.random::<f64>(),
        tokens: None,
        rl: Some(RlStepMetrics {
            lambda_psr: 0.1,
            samples: 8,
            correct,
            incorrect: 8 - correct,
            kept: 8,
            kept_correct: correct,
            kept_incorrect: 8 - correct,
            informative: 8,
            skipped: false,
            reward: acc,
            reward_std: rng.random(),
            rewards: vec![("accuracy".into(), acc, rng.random())],
            frac_reward_zero_std: rng.random(),
            completion_length: (60.0, 20.0, 128.0),
            clipped_ratio: 0.05,
            entropy: Some(rng.random()),
            clip_fraction: Some(rng.random()),
            kl: Some(rng.random()),
            tokens_per_s: 1000.0 * rng.random::<f64>(),
            rollout_time: rng.random(),
            update_time: rng.random(),
        }),
        examples: vec![example("best", 1.0), example("worst", 0.0)],
        phases: None,
    }
}

/// 100 question results of `n` samples, every question type in turn.
fn plausible_questions(rng: &mut ChaCha8Rng, n: usize) -> Vec<QuestionResult> {
    (0..100)
        .map(|i| QuestionResult {
            index: i,
            prompt_id: format!("t{i}"),
            n,
            correct: rng.random_range(0..=n) / if i % 2 == 0 { 1 } else { 4 },
            formatted: n,
            truncated: 0,
            tokens: 60 * n,
            question_type: QuestionType::ALL[i % QuestionType::ALL.len()].name().into(),
            chance: Some(0.1),
        })
        .collect()
}
