//! Rewards: functions that score completions of chart questions.
//!
//! Built-ins follow open-r1 / TRL (each function documents its exact definition). A run
//! combines several with weights; every function's values are kept so each can be logged on
//! its own. Scripts add their own through the [`Reward`] trait.

mod accuracy;
mod length;
mod shape;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::data::Sample;

pub use accuracy::{answers, extract_answer, numbers_match, relaxed_correctness};
pub use length::CosineParams;

/// A completion to score, with the sample it answers and its length in tokens.
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    pub sample: &'a Sample,
    pub completion: &'a str,
    pub tokens: usize,
}

/// Errors from building or running reward functions.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    #[error("unknown reward `{name}` (built in: {known})")]
    Unknown { name: String, known: String },
    #[error("reward `{name}`: {msg}")]
    Params { name: String, msg: String },
    #[error("reward `{name}` failed: {msg}")]
    Failed { name: String, msg: String },
    #[error("reward `{name}` returned {got} scores for {expected} completions")]
    Count {
        name: String,
        got: usize,
        expected: usize,
    },
}

/// A reward function over a batch (batch-level so rewards like `length` can compare).
pub trait Reward: Send + Sync {
    fn name(&self) -> &str;
    fn score(&self, batch: &[Scored<'_>]) -> Result<Vec<f64>, RewardError>;
}

/// The built-in rewards and their parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Builtin {
    /// 1.0 when the extracted answer is correct (see [`answers`]: numbers within 5%, labels
    /// exactly); 0.0 for a wrong answer or a completion without an `<answer>` tag.
    Accuracy,
    Format,
    TagCount,
    ReasoningSteps,
    /// Kimi 1.5 length reward over the batch, correctness by `accuracy`.
    Length,
    Cosine(CosineParams),
    RepetitionPenalty {
        n: usize,
        max_penalty: f64,
    },
    /// Soft overlong punishment on tokens (DAPO). `max_completion_len` defaults to the run's
    /// `max_completion_length`, `cache` to a quarter of it.
    Overlong {
        max_completion_len: usize,
        cache: usize,
    },
}

/// Every built-in name, in the order `rewards score` prints them.
pub const BUILTIN_NAMES: [&str; 8] = [
    "accuracy",
    "format",
    "tag_count",
    "reasoning_steps",
    "length",
    "cosine",
    "repetition_penalty",
    "overlong",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RepetitionParams {
    n: usize,
    max_penalty: f64,
}

impl Default for RepetitionParams {
    fn default() -> Self {
        Self {
            n: 3,
            max_penalty: -1.0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct OverlongParams {
    max_completion_len: Option<usize>,
    cache: Option<usize>,
}

/// What a reward's defaults may depend on: the run it scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewardContext {
    /// The token limit of the completions (`overlong` punishes lengths near it).
    pub max_completion_length: usize,
}

impl OverlongParams {
    fn resolve(self, ctx: &RewardContext) -> Result<Builtin, RewardError> {
        let max_completion_len = self.max_completion_len.unwrap_or(ctx.max_completion_length);
        let cache = self.cache.unwrap_or(max_completion_len / 4);
        if max_completion_len == 0 || cache == 0 || cache > max_completion_len {
            return Err(RewardError::Params {
                name: "overlong".into(),
                msg: format!(
                    "`cache` ({cache}) must be between 1 and `max_completion_len` ({max_completion_len})"
                ),
            });
        }
        Ok(Builtin::Overlong {
            max_completion_len,
            cache,
        })
    }
}

impl Builtin {
    /// A built-in by name, with parameters from `params` (an object; unknown keys are errors)
    /// and defaults from the run `ctx` describes.
    pub fn from_name(
        name: &str,
        params: &serde_json::Value,
        ctx: &RewardContext,
    ) -> Result<Self, RewardError> {
        let bad = |e: serde_json::Error| RewardError::Params {
            name: name.to_string(),
            msg: e.to_string(),
        };
        let params = if params.is_null() {
            serde_json::json!({})
        } else {
            params.clone()
        };
        let no_params = |b: Builtin| -> Result<Builtin, RewardError> {
            match params.as_object() {
                Some(o) if !o.is_empty() => Err(RewardError::Params {
                    name: name.to_string(),
                    msg: format!(
                        "takes no parameters (got {})",
                        o.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                }),
                _ => Ok(b),
            }
        };
        match name {
            "accuracy" => no_params(Builtin::Accuracy),
            "format" => no_params(Builtin::Format),
            "tag_count" => no_params(Builtin::TagCount),
            "reasoning_steps" => no_params(Builtin::ReasoningSteps),
            "length" => no_params(Builtin::Length),
            "cosine" => Ok(Builtin::Cosine(
                serde_json::from_value(params).map_err(bad)?,
            )),
            "repetition_penalty" => {
                let p: RepetitionParams = serde_json::from_value(params).map_err(bad)?;
                if p.max_penalty > 0.0 {
                    return Err(RewardError::Params {
                        name: name.into(),
                        msg: format!("max_penalty must be <= 0, got {}", p.max_penalty),
                    });
                }
                Ok(Builtin::RepetitionPenalty {
                    n: p.n,
                    max_penalty: p.max_penalty,
                })
            }
            "overlong" => serde_json::from_value::<OverlongParams>(params)
                .map_err(bad)?
                .resolve(ctx),
            _ => Err(RewardError::Unknown {
                name: name.to_string(),
                known: BUILTIN_NAMES.join(", "),
            }),
        }
    }

    /// Every built-in with default parameters for completions of `ctx`.
    pub fn all(ctx: &RewardContext) -> Vec<Builtin> {
        BUILTIN_NAMES
            .iter()
            .filter_map(|n| Builtin::from_name(n, &serde_json::Value::Null, ctx).ok())
            .collect()
    }

    fn key(&self) -> &'static str {
        match self {
            Builtin::Accuracy => "accuracy",
            Builtin::Format => "format",
            Builtin::TagCount => "tag_count",
            Builtin::ReasoningSteps => "reasoning_steps",
            Builtin::Length => "length",
            Builtin::Cosine(_) => "cosine",
            Builtin::RepetitionPenalty { .. } => "repetition_penalty",
            Builtin::Overlong { .. } => "overlong",
        }
    }
}

/// Whether a completion answers its sample correctly: the extracted answer matched by the
/// answer's kind (see [`answers`]).
pub fn is_correct(s: &Scored<'_>) -> bool {
    extract_answer(s.completion).is_some_and(|a| answers(s.sample, &a))
}

impl Reward for Builtin {
    fn name(&self) -> &str {
        self.key()
    }

    fn score(&self, batch: &[Scored<'_>]) -> Result<Vec<f64>, RewardError> {
        let each = |f: &dyn Fn(&Scored<'_>) -> f64| batch.iter().map(f).collect::<Vec<f64>>();
        Ok(match self {
            Builtin::Accuracy => each(&|s| if is_correct(s) { 1.0 } else { 0.0 }),
            Builtin::Format => each(&|s| shape::format(s.completion)),
            Builtin::TagCount => each(&|s| shape::tag_count(s.completion)),
            Builtin::ReasoningSteps => each(&|s| shape::reasoning_steps(s.completion)),
            Builtin::Length => {
                let lens: Vec<usize> = batch.iter().map(|s| s.completion.chars().count()).collect();
                let ok: Vec<bool> = batch.iter().map(is_correct).collect();
                length::length(&lens, &ok)
            }
            Builtin::Cosine(p) => {
                each(&|s| length::cosine(s.completion.chars().count(), is_correct(s), p))
            }
            Builtin::RepetitionPenalty { n, max_penalty } => {
                each(&|s| length::repetition_penalty(s.completion, *n, *max_penalty))
            }
            Builtin::Overlong {
                max_completion_len,
                cache,
            } => each(&|s| length::overlong(s.tokens, *max_completion_len, *cache)),
        })
    }
}

/// Rewards defined outside the built-ins (by a script), by name.
#[derive(Clone, Default)]
pub struct CustomRewards(pub std::collections::BTreeMap<String, Arc<dyn Reward>>);

impl std::fmt::Debug for CustomRewards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// One reward of a run: a built-in name, its weight and parameters (as in `configs/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSpec {
    pub name: String,
    #[serde(default = "unit_weight")]
    pub weight: f64,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
}

fn unit_weight() -> f64 {
    1.0
}

/// Weighted rewards. The total is `sum_f weight_f * r_f`; each `r_f` is kept.
#[derive(Clone, Default)]
pub struct RewardSet {
    entries: Vec<(Arc<dyn Reward>, f64)>,
}

/// Scores of one batch: every function's values and the weighted total, per completion.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardScores {
    pub per_function: Vec<(String, Vec<f64>)>,
    pub total: Vec<f64>,
    /// The weighted sum of every reward but `accuracy`: what shaping adds to the +1/-1 of
    /// PSR, NSR and W-REINFORCE (GRPO normalises the total, which includes it).
    pub shaping: Vec<f64>,
}

impl RewardScores {
    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.per_function
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

impl RewardSet {
    pub fn from_specs(specs: &[RewardSpec], ctx: &RewardContext) -> Result<Self, RewardError> {
        Self::from_specs_with(specs, &CustomRewards::default(), ctx)
    }

    /// Like [`RewardSet::from_specs`], with `custom` rewards (a script's) taking precedence
    /// over built-ins of the same name.
    pub fn from_specs_with(
        specs: &[RewardSpec],
        custom: &CustomRewards,
        ctx: &RewardContext,
    ) -> Result<Self, RewardError> {
        let mut set = Self::default();
        for spec in specs {
            let reward: Arc<dyn Reward> = match custom.0.get(&spec.name) {
                Some(r) => r.clone(),
                None => Arc::new(Builtin::from_name(&spec.name, &spec.params, ctx)?),
            };
            set.push(reward, spec.weight);
        }
        Ok(set)
    }

    pub fn push(&mut self, reward: Arc<dyn Reward>, weight: f64) {
        self.entries.push((reward, weight));
    }

    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(r, _)| r.name().to_string())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn score(&self, batch: &[Scored<'_>]) -> Result<RewardScores, RewardError> {
        let mut total = vec![0.0; batch.len()];
        let mut shaping = vec![0.0; batch.len()];
        let mut per_function = Vec::with_capacity(self.entries.len());
        for (reward, weight) in &self.entries {
            let values = reward.score(batch)?;
            if values.len() != batch.len() {
                return Err(RewardError::Count {
                    name: reward.name().to_string(),
                    got: values.len(),
                    expected: batch.len(),
                });
            }
            for (t, v) in total.iter_mut().zip(&values) {
                *t += weight * v;
            }
            if reward.name() != "accuracy" {
                for (s, v) in shaping.iter_mut().zip(&values) {
                    *s += weight * v;
                }
            }
            per_function.push((reward.name().to_string(), values));
        }
        Ok(RewardScores {
            per_function,
            total,
            shaping,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Generator;

    #[test]
    fn weighted_total_keeps_each_function() {
        let sample = Generator::new(crate::data::Split::Train, 1).sample(0);
        let good = format!(
            "<think>\nok\n</think>\n<answer>\n{}\n</answer>",
            sample.answer
        );
        let batch = [
            Scored {
                sample: &sample,
                completion: &good,
                tokens: 10,
            },
            Scored {
                sample: &sample,
                completion: "no tags",
                tokens: 3,
            },
        ];
        let specs: Vec<RewardSpec> = serde_yaml::from_str(
            "- {name: accuracy, weight: 2.0}\n- {name: format, weight: 0.5}\n- {name: overlong, params: {max_completion_len: 10, cache: 5}}",
        )
        .unwrap();
        let set = RewardSet::from_specs(&specs, &CTX).unwrap();
        let s = set.score(&batch).unwrap();
        assert_eq!(s.get("accuracy").unwrap(), &[1.0, 0.0]);
        assert_eq!(s.get("format").unwrap(), &[1.0, 0.0]);
        assert_eq!(s.get("overlong").unwrap(), &[-1.0, 0.0]);
        assert_eq!(s.total, vec![2.0 + 0.5 - 1.0, 0.0]);
        assert_eq!(s.shaping, vec![0.5 - 1.0, 0.0], "everything but accuracy");
    }

    const CTX: RewardContext = RewardContext {
        max_completion_length: 128,
    };

    #[test]
    fn overlong_takes_its_length_from_the_run_unless_set() {
        let b = Builtin::from_name("overlong", &serde_json::Value::Null, &CTX).unwrap();
        assert_eq!(
            b,
            Builtin::Overlong {
                max_completion_len: 128,
                cache: 32
            }
        );
        let short = RewardContext {
            max_completion_length: 48,
        };
        let b = Builtin::from_name("overlong", &serde_json::Value::Null, &short).unwrap();
        assert_eq!(
            b,
            Builtin::Overlong {
                max_completion_len: 48,
                cache: 12
            }
        );
        let set = serde_json::json!({"max_completion_len": 256, "cache": 64});
        let b = Builtin::from_name("overlong", &set, &CTX).unwrap();
        assert_eq!(
            b,
            Builtin::Overlong {
                max_completion_len: 256,
                cache: 64
            }
        );
        let e = Builtin::from_name("overlong", &serde_json::json!({"cache": 500}), &CTX)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlong") && e.contains("cache"), "{e}");
    }

    #[test]
    fn bad_reward_specs_name_the_problem() {
        let e = Builtin::from_name("acuracy", &serde_json::Value::Null, &CTX)
            .unwrap_err()
            .to_string();
        assert!(e.contains("acuracy") && e.contains("accuracy"), "{e}");
        let e = Builtin::from_name("cosine", &serde_json::json!({"max_length": 5}), &CTX)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_length"), "{e}");
        let e = Builtin::from_name("format", &serde_json::json!({"x": 1}), &CTX)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no parameters"), "{e}");
        let e = Builtin::from_name(
            "repetition_penalty",
            &serde_json::json!({"max_penalty": 1.0}),
            &CTX,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("<= 0"), "{e}");
    }

    #[test]
    fn completions_without_an_answer_score_zero_accuracy() {
        let sample = Generator::new(crate::data::Split::Train, 1).sample(3);
        let long = "x".repeat(100_000);
        for c in ["", "<answer>", &long] {
            let b = [Scored {
                sample: &sample,
                completion: c,
                tokens: 0,
            }];
            assert_eq!(Builtin::Accuracy.score(&b).unwrap(), vec![0.0]);
        }
    }
}
