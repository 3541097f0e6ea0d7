//! What `chartrl report` costs on a sweep-sized store: 16 runs (4 modes x 2 sizes x 2 seeds)
//! of 1,000 steps, each step with the metrics and kept completions an RL step records, each
//! run with a 100-question, n = 16 evaluation. The store is filled through the same writes
//! training makes, then the report is built and timed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::QuestionType;
use crate::eval::{EvalConfig, EvalSummary, QuestionResult, StoredEval};
use crate::report::{self, ReportError};
use crate::store::{write::StepRecord, Kind, NewRun, SampleRow, Store};

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

const MODES: [&str; 4] = ["grpo", "psr", "nsr", "w-reinforce"];

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
        for mode in MODES {
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
    mode: &str,
    size: usize,
    seed: u64,
    steps: usize,
) -> Result<usize, ReportError> {
    let (run, _) = store.find_or_create_run(&NewRun {
        identity: format!("bench-{mode}-{size}-{seed}"),
        name: format!("{mode}-n{size}-s{seed}"),
        experiment: Some("bench".into()),
        kind: Kind::Train,
        mode: Some(mode.into()),
        config: serde_json::json!({"options": {"mode": mode, "subset_size": size, "seed": seed}}),
        total_steps: steps,
    })?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed * 31 + size as u64);
    let lift = 0.05 * MODES.iter().position(|m| *m == mode).unwrap_or(0) as f64;
    let mut rows = 0;
    for step in 0..steps {
        let progress = step as f64 / steps as f64;
        let acc = (0.2 + lift + 0.4 * progress + rng.random_range(-0.1..0.1)).clamp(0.0, 1.0);
        let mut v = BTreeMap::new();
        for key in [
            "clip_fraction",
            "completion_length/max",
            "completion_length/min",
            "entropy",
            "frac_reward_zero_std",
            "kept",
            "kl",
            "reward_std",
            "rewards/accuracy/std",
            "rewards/format/mean",
            "rewards/format/std",
            "rewards/tag_count/mean",
            "rewards/tag_count/std",
            "rollout_time",
            "skipped",
            "tokens_per_s",
            "update_time",
        ] {
            v.insert(key.to_string(), rng.random::<f64>());
        }
        v.insert("loss".into(), 1.0 - 2.0 * acc);
        v.insert("grad_norm".into(), 0.5 + rng.random::<f64>());
        v.insert("learning_rate".into(), 5e-5 * (1.0 - progress));
        v.insert("reward".into(), 1.0 + acc);
        v.insert("rewards/accuracy/mean".into(), acc);
        v.insert("positive_ratio".into(), acc);
        v.insert("negative_ratio".into(), 1.0 - acc);
        v.insert("correct".into(), (8.0 * acc).round());
        v.insert("incorrect".into(), 8.0 - (8.0 * acc).round());
        v.insert("clipped_ratio".into(), 0.05);
        v.insert("completion_length/mean".into(), 60.0);
        v.insert("step_time".into(), 0.7 + 0.1 * rng.random::<f64>());
        let samples: Vec<SampleRow> = ["best", "worst"]
            .iter()
            .map(|rank| SampleRow {
                step,
                rank: rank.to_string(),
                prompt_id: format!("q{}", step % size),
                completion: "<think>\nThe bar for 2021 is 42.\n</think>\n<answer>\n42\n</answer>"
                    .into(),
                rewards: serde_json::json!({"accuracy": 1.0, "format": 1.0}),
                reward: if *rank == "best" { 2.0 } else { 0.0 },
                advantage: 0.5,
            })
            .collect();
        store.log_step(
            run.id,
            &StepRecord {
                step,
                values: Some(&v),
                events: &[],
                samples: &samples,
                lease: None,
            },
        )?;
        rows += v.len();
    }
    let config = EvalConfig::default();
    let questions: Vec<QuestionResult> = (0..100)
        .map(|i| QuestionResult {
            index: i,
            prompt_id: format!("t{i}"),
            n: config.n,
            correct: rng.random_range(0..=config.n) / if i % 2 == 0 { 1 } else { 4 },
            formatted: config.n,
            truncated: 0,
            tokens: 60 * config.n,
            question_type: QuestionType::ALL[i % QuestionType::ALL.len()].name().into(),
            chance: Some(0.1),
        })
        .collect();
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
