//! The first half of an RL step: sample `num_generations` completions of each of the step's
//! prompts, score them with the run's rewards, decide which are correct, and turn the rewards
//! into each mode's advantages and kept flags. Nothing here changes the weights.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::cursor::rollout_seed;
use super::metrics::Example;
use super::objective::{advantages, Normaliser};
use super::rl::RlTrainer;
use super::TrainError;
use crate::data::Sample;
use crate::model::{Completion, SamplingParams};
use crate::reward::{is_correct, RewardScores, Scored};

/// What a step's rollout produced, and everything its update needs.
pub struct Rollout {
    pub step: usize,
    /// The step's samples (indices into the subset), one group each.
    pub indices: Vec<usize>,
    pub prompts: Vec<Vec<u32>>,
    pub groups: Vec<Vec<Completion>>,
    pub scores: RewardScores,
    /// Per completion, group after group.
    pub correct: Vec<bool>,
    /// Per group: each completion's advantage and whether it enters the loss.
    pub advantages: Vec<(Vec<f64>, Vec<bool>)>,
    pub counts: KeptCounts,
    pub normaliser: Normaliser,
    /// Groups whose completions all got the same total reward.
    pub zero_std_groups: usize,
    /// Seconds spent sampling.
    pub seconds: f64,
}

impl Rollout {
    /// Completion tokens sampled.
    pub fn new_tokens(&self) -> usize {
        self.groups.iter().flatten().map(|c| c.tokens.len()).sum()
    }

    /// Positions the sampling loop decoded: every row for as many steps as the longest
    /// completion (a row that has finished rides along until the last one does). Unlike
    /// [`Rollout::new_tokens`], this does not depend on how early the other rows happened to
    /// end, so it is the work two samplers of the same batch can be compared by.
    pub fn decoded_tokens(&self) -> usize {
        let rows = self.groups.iter().map(Vec::len).sum::<usize>();
        let longest = self.groups.iter().flatten().map(|c| c.tokens.len()).max();
        rows * longest.unwrap_or(0)
    }

    /// Groups whose loss has a gradient: a kept sample with a non-zero advantage, or any kept
    /// sample when a KL term (`beta > 0`) applies. None: the step has nothing to learn from.
    pub fn active_groups(&self, beta: bool) -> Vec<usize> {
        (0..self.groups.len())
            .filter(|&i| {
                let (a, kept) = &self.advantages[i];
                kept.iter().zip(a).any(|(k, a)| *k && (*a != 0.0 || beta))
            })
            .collect()
    }
}

impl RlTrainer {
    /// Samples, scores and weighs step `step`'s completions.
    pub fn rollout(&self, step: usize) -> Result<Rollout, TrainError> {
        let cfg = &self.config;
        let t0 = Instant::now();
        let indices = self.batch_indices(step);
        let prompts: Vec<Vec<u32>> = indices.iter().map(|&i| self.prompts[i].clone()).collect();
        let sampling = SamplingParams {
            temperature: cfg.temperature,
            top_p: cfg.top_p,
            max_new_tokens: cfg.max_completion_length,
            stop_at_eos: true,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(rollout_seed(cfg.seed, step));
        let groups =
            self.policy
                .sample_groups(&prompts, cfg.num_generations, &sampling, &mut rng)?;
        let seconds = t0.elapsed().as_secs_f64();
        let (scores, correct) = self.score(&indices, &groups)?;
        let (advantages, counts, kept_tokens, zero_std_groups) =
            self.weigh(&groups, &scores, &correct);
        let normaliser = Normaliser {
            loss_type: cfg.loss_type,
            kept_tokens: kept_tokens as f64,
            kept_sequences: counts.kept as f64,
            max_completion_length: cfg.max_completion_length,
        };
        Ok(Rollout {
            step,
            indices,
            prompts,
            groups,
            scores,
            correct,
            advantages,
            counts,
            normaliser,
            zero_std_groups,
            seconds,
        })
    }

    /// Every completion of the step scored as one batch, and whether each is correct: its
    /// `accuracy` reward (the built-in one unless a script defines its own) reaches the
    /// threshold.
    fn score(
        &self,
        indices: &[usize],
        groups: &[Vec<Completion>],
    ) -> Result<(RewardScores, Vec<bool>), TrainError> {
        let scored: Vec<Scored> = groups
            .iter()
            .enumerate()
            .flat_map(|(g, cs)| scored(&self.samples[indices[g]], cs))
            .collect();
        let scores = self.rewards.score(&scored)?;
        let accuracy: Vec<f64> = match scores.get("accuracy") {
            Some(v) => v.to_vec(),
            None => scored
                .iter()
                .map(|s| f64::from(u8::from(is_correct(s))))
                .collect(),
        };
        let threshold = self.config.reward_threshold;
        let correct = accuracy.iter().map(|a| *a >= threshold).collect();
        Ok((scores, correct))
    }

    /// Each group's advantages and kept flags, what was kept, the kept tokens, and how many
    /// groups tied.
    #[allow(clippy::type_complexity)]
    fn weigh(
        &self,
        groups: &[Vec<Completion>],
        scores: &RewardScores,
        correct: &[bool],
    ) -> (Vec<(Vec<f64>, Vec<bool>)>, KeptCounts, usize, usize) {
        let cfg = &self.config;
        let g = cfg.num_generations;
        let mut adv = Vec::with_capacity(groups.len());
        let mut zero_std_groups = 0;
        let mut count = KeptCounts::default();
        let mut kept_tokens = 0usize;
        for (gi, group) in groups.iter().enumerate() {
            let span = gi * g..(gi + 1) * g;
            let r = &scores.total[span.clone()];
            let ok = &correct[span.clone()];
            if r.iter().all(|x| *x == r[0]) {
                zero_std_groups += 1;
            }
            let (a, kept) = advantages(cfg.mode, r, &scores.shaping[span], ok, cfg.lambda_psr);
            for (j, c) in group.iter().enumerate() {
                if kept[j] {
                    kept_tokens += c.tokens.len();
                    count.add(ok[j], a[j]);
                }
            }
            adv.push((a, kept));
        }
        (adv, count, kept_tokens, zero_std_groups)
    }

    /// The step's best and worst completions.
    pub(super) fn examples_of(&self, r: &Rollout) -> Vec<Example> {
        let flat: Vec<(usize, &Completion)> = r
            .groups
            .iter()
            .enumerate()
            .flat_map(|(g, cs)| cs.iter().map(move |c| (g, c)))
            .collect();
        examples(
            &flat,
            &r.indices,
            &self.samples,
            &r.scores,
            &r.advantages,
            self.config.num_generations,
        )
    }
}

/// The step's best and worst completions by total reward (the first of equals; only one
/// when all are equal).
fn examples(
    flat: &[(usize, &Completion)],
    idx: &[usize],
    samples: &[Sample],
    scores: &RewardScores,
    adv: &[(Vec<f64>, Vec<bool>)],
    g: usize,
) -> Vec<Example> {
    if flat.is_empty() {
        return Vec::new();
    }
    let total = &scores.total;
    let mut best = 0;
    let mut worst = 0;
    for i in 1..total.len() {
        if total[i] > total[best] {
            best = i;
        }
        if total[i] < total[worst] {
            worst = i;
        }
    }
    // When every completion scored the same, one example says it all.
    let ranks: &[(&'static str, usize)] = if total[best] == total[worst] {
        &[("best", best)]
    } else {
        &[("best", best), ("worst", worst)]
    };
    ranks
        .iter()
        .copied()
        .map(|(rank, i)| Example {
            rank,
            prompt_id: samples[idx[flat[i].0]].id.clone(),
            completion: flat[i].1.text.clone(),
            rewards: scores
                .per_function
                .iter()
                .map(|(name, v)| (name.clone(), v[i]))
                .collect(),
            reward: total[i],
            advantage: adv[i / g].0[i % g],
        })
        .collect()
}

/// What the step kept, counted from the kept flags the loss uses: the POC checklist reads
/// these to check each mode kept what it should.
#[derive(Debug, Default)]
pub struct KeptCounts {
    pub kept: usize,
    pub correct: usize,
    pub incorrect: usize,
    /// Kept samples with a non-zero advantage: the ones that move the weights.
    pub informative: usize,
}

impl KeptCounts {
    fn add(&mut self, correct: bool, advantage: f64) {
        self.kept += 1;
        if correct {
            self.correct += 1;
        } else {
            self.incorrect += 1;
        }
        if advantage != 0.0 {
            self.informative += 1;
        }
    }
}

/// One question's completions, ready for the reward functions.
pub fn scored<'a>(sample: &'a Sample, completions: &'a [Completion]) -> Vec<Scored<'a>> {
    completions
        .iter()
        .map(|c| Scored {
            sample,
            completion: &c.text,
            tokens: c.tokens.len(),
        })
        .collect()
}
