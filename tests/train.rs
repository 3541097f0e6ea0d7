//! The RL trainer on a micro model: every mode runs, nothing-kept steps are skipped with a
//! warning, and runs are deterministic.

use candle_core::DType;
use chartrl::data::{Generator, PromptTemplate, Sample, Split};
use chartrl::model::testing::micro_policy;
use chartrl::reward::{CustomRewards, Reward, RewardError, Scored};
use chartrl::train::{Mode, Recorder, RlTrainer, TrainConfig};

/// An `accuracy` reward that calls every completion correct, so a random model has samples
/// for PSR, GRPO and W-REINFORCE to learn from (and none for NSR).
struct AllCorrect;

impl Reward for AllCorrect {
    fn name(&self) -> &str {
        "accuracy"
    }
    fn score(&self, batch: &[Scored<'_>]) -> Result<Vec<f64>, RewardError> {
        Ok(vec![1.0; batch.len()])
    }
}

/// An `accuracy` reward that calls completions of an even token count correct: rewards that
/// differ within a group, whatever the model.
struct EvenLength;

impl Reward for EvenLength {
    fn name(&self) -> &str {
        "accuracy"
    }
    fn score(&self, batch: &[Scored<'_>]) -> Result<Vec<f64>, RewardError> {
        Ok(batch
            .iter()
            .map(|s| f64::from(u8::from(s.tokens % 2 == 0)))
            .collect())
    }
}

fn custom(r: impl Reward + 'static) -> CustomRewards {
    let mut c = CustomRewards::default();
    c.0.insert("accuracy".into(), std::sync::Arc::new(r));
    c
}

fn all_correct() -> CustomRewards {
    custom(AllCorrect)
}

fn config(mode: Mode, overrides: serde_json::Value) -> TrainConfig {
    let mut o = serde_json::Map::new();
    o.insert("mode".into(), mode.name().into());
    o.insert("subset_size".into(), 4.into());
    o.insert("batch_size".into(), 2.into());
    o.insert("num_generations".into(), 3.into());
    o.insert("max_completion_length".into(), 12.into());
    o.insert("learning_rate".into(), 1e-3.into());
    for (k, v) in overrides.as_object().unwrap() {
        o.insert(k.clone(), v.clone());
    }
    TrainConfig::builtin().unwrap().with_overrides(&o).unwrap()
}

fn data() -> Vec<Sample> {
    Generator::new(Split::Train, 1).take(4).collect()
}

fn run(cfg: TrainConfig) -> (Recorder, RlTrainer) {
    run_with(cfg, &CustomRewards::default())
}

fn run_with(cfg: TrainConfig, rewards: &CustomRewards) -> (Recorder, RlTrainer) {
    let policy = micro_policy(true, 3, DType::F32).unwrap();
    let mut trainer =
        RlTrainer::with_rewards(cfg, policy, &data(), PromptTemplate::default(), rewards).unwrap();
    let mut rec = Recorder::default();
    chartrl::train::fit(&mut trainer, &mut (), &mut rec).unwrap();
    (rec, trainer)
}

#[test]
fn every_mode_trains_with_finite_metrics_and_moves_the_weights() {
    for mode in Mode::ALL {
        let before = micro_policy(true, 3, DType::F32).unwrap();
        // Every completion correct for PSR and W-REINFORCE, so a random model has samples to
        // learn from; rewards that differ within a group for GRPO. NSR keeps the random
        // model's wrong answers.
        let rewards = match mode {
            Mode::Nsr => CustomRewards::default(),
            Mode::Grpo => custom(EvenLength),
            _ => all_correct(),
        };
        let (rec, trainer) = run_with(config(mode, serde_json::json!({"beta": 0.1})), &rewards);
        assert_eq!(rec.steps.len(), 2, "{mode:?}");
        for m in &rec.steps {
            for (k, v) in &m.values() {
                assert!(v.is_finite(), "{mode:?} step {}: {k} = {v}", m.step);
            }
            assert_eq!(m.values()["skipped"], 0.0, "{mode:?}");
            assert!(
                m.values().contains_key("rewards/accuracy/mean") && m.values().contains_key("kl")
            );
            assert!(!m.console_line().is_empty());
        }
        let w0 = before
            .params
            .get("model.norm.weight")
            .unwrap()
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        let w1 = trainer
            .policy
            .params
            .get("model.norm.weight")
            .unwrap()
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        assert_ne!(w0, w1, "{mode:?}: weights did not change");
    }
}

#[test]
fn nsr_with_every_sample_correct_is_skipped_with_a_warning() {
    let (rec, trainer) = run_with(config(Mode::Nsr, serde_json::json!({})), &all_correct());
    assert_eq!(rec.steps.len(), 2);
    for m in &rec.steps {
        assert_eq!(m.values()["skipped"], 1.0);
        assert_eq!(m.rl.as_ref().unwrap().kept, 0);
        assert!(m.values().values().all(|v| v.is_finite()));
        assert!(
            m.console_line().contains("0/6 negative samples"),
            "{}",
            m.console_line()
        );
    }
    assert!(
        rec.events.iter().any(|e| e.kind == "no_negative_samples"),
        "{:?}",
        rec.events
    );
    // Nothing was updated.
    let fresh = micro_policy(true, 3, DType::F32).unwrap();
    let name = "model.embed_tokens.weight";
    let a = fresh
        .params
        .get(name)
        .unwrap()
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = trainer
        .policy
        .params
        .get(name)
        .unwrap()
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn psr_with_no_correct_sample_is_skipped_with_a_warning() {
    // A random model answers nothing correctly.
    let (rec, _) = run(config(Mode::Psr, serde_json::json!({})));
    assert!(rec
        .steps
        .iter()
        .all(|m| m.values()["skipped"] == 1.0 && !m.values().contains_key("loss")));
    assert!(rec.events.iter().any(|e| e.kind == "no_positive_samples"));
}

#[test]
fn grpo_with_equal_rewards_everywhere_is_skipped_with_a_warning() {
    let (rec, _) = run_with(config(Mode::Grpo, serde_json::json!({})), &all_correct());
    for m in &rec.steps {
        assert_eq!(m.values()["skipped"], 1.0);
        assert_eq!(
            (m.rl.as_ref().unwrap().kept, m.values()["informative"]),
            (6, 0.0)
        );
        assert!(
            m.console_line().contains("every advantage is 0"),
            "{}",
            m.console_line()
        );
    }
    assert!(rec.events.iter().any(|e| e.kind == "no_reward_variance"));
    // With the KL term a tie still has a gradient: nothing is skipped.
    let (rec, _) = run_with(
        config(Mode::Grpo, serde_json::json!({"beta": 0.1})),
        &all_correct(),
    );
    assert!(rec.steps.iter().all(|m| m.values()["skipped"] == 0.0));
}

#[test]
fn each_step_records_the_correctness_of_what_it_kept() {
    for mode in Mode::ALL {
        let (rec, _) = run_with(config(mode, serde_json::json!({})), &custom(EvenLength));
        for m in &rec.steps {
            let v = |k: &str| m.values()[k] as usize;
            assert_eq!(
                v("kept_correct") + v("kept_incorrect"),
                m.rl.as_ref().unwrap().kept,
                "{mode:?}"
            );
            let (kc, ki) = match mode {
                Mode::Psr => (m.rl.as_ref().unwrap().correct, 0),
                Mode::Nsr => (0, m.rl.as_ref().unwrap().incorrect),
                _ => (
                    m.rl.as_ref().unwrap().correct,
                    m.rl.as_ref().unwrap().incorrect,
                ),
            };
            assert_eq!(
                (v("kept_correct"), v("kept_incorrect")),
                (kc, ki),
                "{mode:?}"
            );
        }
    }
}

#[test]
fn every_mode_sees_the_same_prompts_in_the_same_order() {
    let batches = |mode: Mode| {
        let policy = micro_policy(true, 3, DType::F32).unwrap();
        let cfg = config(mode, serde_json::json!({"num_epochs": 3}));
        let t = RlTrainer::new(cfg, policy, &data(), PromptTemplate::default()).unwrap();
        // The sampling seed of a step derives from (seed, step) alone; the batch is the data.
        (0..t.total_steps())
            .map(|s| t.batch_indices(s))
            .collect::<Vec<_>>()
    };
    let grpo = batches(Mode::Grpo);
    assert_eq!(grpo.len(), 6);
    for mode in [Mode::Psr, Mode::Nsr, Mode::WReinforce] {
        assert_eq!(batches(mode), grpo, "{mode:?}");
    }
}

#[test]
fn two_identical_runs_give_identical_metrics_and_weights() {
    let cfg = config(Mode::Grpo, serde_json::json!({"num_epochs": 2}));
    let (a, ta) = run_with(cfg.clone(), &custom(EvenLength));
    let (b, tb) = run_with(cfg, &custom(EvenLength));
    assert!(a.steps.iter().any(|m| m.values()["skipped"] == 0.0));
    assert_eq!(a.steps.len(), 4);
    for (x, y) in a.steps.iter().zip(&b.steps) {
        let strip = |m: &chartrl::train::StepMetrics| {
            m.values()
                .iter()
                .filter(|(k, _)| !k.ends_with("_time") && k.as_str() != "tokens_per_s")
                .map(|(k, v)| (k.clone(), v.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(x), strip(y), "step {}", x.step);
    }
    for (name, var) in ta.policy.params.iter() {
        let v = tb.policy.params.get(name).unwrap();
        let d = (var.as_tensor() - v.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "{name}");
    }
}

#[test]
fn each_epoch_visits_every_sample_once_in_a_seeded_order() {
    let policy = micro_policy(true, 3, DType::F32).unwrap();
    let cfg = config(Mode::Grpo, serde_json::json!({"num_epochs": 2}));
    let t = RlTrainer::new(cfg, policy, &data(), PromptTemplate::default()).unwrap();
    for epoch in 0..2 {
        let mut seen: Vec<usize> = (0..2)
            .flat_map(|s| t.batch_indices(epoch * 2 + s))
            .collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3]);
    }
    assert_ne!(
        t.batch_indices(0),
        t.batch_indices(2),
        "epochs should reshuffle"
    );
}
