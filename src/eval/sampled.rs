//! Sampled evaluation: `n` completions per held-out question, scored with the accuracy and
//! format rewards, reduced to per-question counts that pass@k and the other aggregates are
//! computed from. Questions are sampled in fixed chunks, each with its own seed, so a chunk's
//! results do not depend on which other chunks were sampled in the same process: an
//! evaluation stopped half-way resumes and ends with the same numbers.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::passk::{mean_pass_at_k, PassKError};
use crate::data::{chance, PromptFormat, PromptTemplate, Sample};
use crate::model::{ModelError, Policy, SamplingParams};
use crate::reward::{is_correct, Builtin, Reward};
use crate::train::derive_seed;

/// Questions sampled together (one decode batch of `CHUNK x n` rows, spread over workers).
pub const CHUNK: usize = 16;

/// How completions are drawn for an evaluation. The defaults are the NSR paper's evaluation
/// settings (temperature 0.6, top-p 0.95).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Completions per question.
    pub n: usize,
    /// 0 decodes greedily (then `n` must be 1).
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
    pub seed: u64,
    /// `raw`, or `chat`: the prompt as the user turn of the model's chat template.
    #[serde(default)]
    pub prompt_format: PromptFormat,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            n: 16,
            temperature: 0.6,
            top_p: 0.95,
            max_new_tokens: 160,
            seed: 0,
            prompt_format: PromptFormat::Raw,
        }
    }
}

impl EvalConfig {
    /// Checks the options, naming the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.n == 0 {
            return Err("`n` (completions per question) must be at least 1".into());
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "`temperature` must be >= 0, got {}",
                self.temperature
            ));
        }
        if self.temperature == 0.0 && self.n > 1 {
            return Err(format!(
                "`temperature` 0 decodes greedily: the {} completions would be identical (use n = 1)",
                self.n
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("`top_p` must be in (0, 1], got {}", self.top_p));
        }
        if self.max_new_tokens == 0 {
            return Err("`max_new_tokens` must be at least 1".into());
        }
        Ok(())
    }

    /// The k values to show: `asked`, or by default powers of two up to `n` and `n`;
    /// each must be between 1 and `n`.
    pub fn ks(&self, asked: &[usize]) -> Result<Vec<usize>, PassKError> {
        if asked.is_empty() {
            return Ok(EvalSummary::default_ks(self.n));
        }
        for &k in asked {
            if k == 0 {
                return Err(PassKError::ZeroK);
            }
            if k > self.n {
                return Err(PassKError::KAboveN { n: self.n, k });
            }
        }
        Ok(asked.to_vec())
    }

    /// The stored name of an evaluation of `questions` questions of the data `data_id` with
    /// `prompt` under these options: an evaluation is reused only when all of them match.
    pub fn name(&self, data_id: &str, prompt: &PromptTemplate, questions: usize) -> String {
        format!(
            "sampled:{data_id}:prompt-{}-{}:q{questions}:n{}:t{}:p{}:max{}:s{}",
            &prompt.identity()[..12],
            self.prompt_format.name(),
            self.n,
            self.temperature,
            self.top_p,
            self.max_new_tokens,
            self.seed
        )
    }

    fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens,
            stop_at_eos: true,
        }
    }
}

/// What `n` completions of one question came to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuestionResult {
    /// The question's position in the evaluated data.
    pub index: usize,
    pub prompt_id: String,
    pub n: usize,
    /// Completions whose answer is relaxed-correct (accuracy reward 1).
    pub correct: usize,
    /// Completions with the expected `<think>`/`<answer>` layout (format reward 1).
    pub formatted: usize,
    /// Completions that hit `max_new_tokens` before end-of-text.
    pub truncated: usize,
    /// Completion tokens over the `n` completions.
    pub tokens: usize,
    /// The question's type (`sum`, `trend`, ...; `chartqa` for a ChartQA file).
    pub question_type: String,
    /// The chance that one uniform guess is right (see `data::chance`); `None` for a type
    /// the generator does not ask.
    pub chance: Option<f64>,
}

/// Samples and scores the questions `samples` (at positions `first_index..`) under `cfg`.
/// The chunk's RNG derives from `cfg.seed` and `first_index` alone.
pub fn evaluate_chunk(
    policy: &Policy,
    samples: &[Sample],
    first_index: usize,
    template: &PromptTemplate,
    cfg: &EvalConfig,
) -> Result<Vec<QuestionResult>, ModelError> {
    let prompts: Vec<Vec<u32>> = samples
        .iter()
        .map(|s| {
            let text = policy.prompt_text(&template.render(s), cfg.prompt_format)?;
            let ids = policy.tokenizer.encode(&text)?;
            policy
                .check_fits(ids.len(), cfg.max_new_tokens)
                .map_err(|e| ModelError::Invalid(format!("question `{}`: {e}", s.id)))?;
            Ok(ids)
        })
        .collect::<Result<_, ModelError>>()?;
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, first_index as u64));
    let groups = policy.sample_groups(&prompts, cfg.n, &cfg.sampling(), &mut rng)?;
    let mut out = Vec::with_capacity(samples.len());
    for (i, (sample, group)) in samples.iter().zip(&groups).enumerate() {
        let scored = crate::train::rollout::scored(sample, group);
        let format = Builtin::Format
            .score(&scored)
            .map_err(|e| ModelError::Invalid(e.to_string()))?;
        out.push(QuestionResult {
            index: first_index + i,
            prompt_id: sample.id.clone(),
            n: group.len(),
            correct: scored.iter().filter(|s| is_correct(s)).count(),
            formatted: format.iter().filter(|f| **f >= 1.0).count(),
            truncated: group.iter().filter(|c| !c.finished).count(),
            tokens: group.iter().map(|c| c.tokens.len()).sum(),
            question_type: sample.question_type.clone(),
            chance: chance(sample),
        });
    }
    Ok(out)
}

/// An evaluation's aggregate over its questions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    pub questions: usize,
    /// Completions per question.
    pub n: usize,
    /// Mean over questions of the fraction correct (equals pass@1).
    pub accuracy: f64,
    pub format_rate: f64,
    /// Mean completion length in tokens.
    pub mean_length: f64,
    pub truncated_rate: f64,
    /// `pass_at_k[k - 1]` is the mean unbiased pass@k over questions, for every k <= n.
    pub pass_at_k: Vec<f64>,
}

impl EvalSummary {
    /// Aggregates question results that all have the same `n`.
    pub fn from_questions(results: &[QuestionResult]) -> Result<Self, PassKError> {
        let n = results.first().map_or(0, |q| q.n);
        let q = results.len().max(1) as f64;
        let total = (results.len() * n).max(1) as f64;
        let sum = |f: fn(&QuestionResult) -> usize| results.iter().map(f).sum::<usize>() as f64;
        let counts: Vec<(usize, usize)> = results.iter().map(|r| (r.n, r.correct)).collect();
        let pass = (1..=n)
            .map(|k| mean_pass_at_k(&counts, k))
            .collect::<Result<Vec<f64>, _>>()?;
        Ok(Self {
            questions: results.len(),
            n,
            accuracy: results
                .iter()
                .map(|r| r.correct as f64 / r.n.max(1) as f64)
                .sum::<f64>()
                / q,
            format_rate: sum(|r| r.formatted) / total,
            mean_length: sum(|r| r.tokens) / total,
            truncated_rate: sum(|r| r.truncated) / total,
            pass_at_k: pass,
        })
    }

    /// pass@k, or why it is not defined (`k` above `n`, or 0).
    pub fn pass_at(&self, k: usize) -> Result<f64, PassKError> {
        if k == 0 {
            return Err(PassKError::ZeroK);
        }
        self.pass_at_k
            .get(k - 1)
            .copied()
            .ok_or(PassKError::KAboveN { k, n: self.n })
    }

    /// The summary of an evaluation not run yet (a script's dry pass): its shape, with NaN
    /// for everything sampling would measure.
    pub fn unmeasured(questions: usize, n: usize) -> Self {
        Self {
            questions,
            n,
            accuracy: f64::NAN,
            format_rate: f64::NAN,
            mean_length: f64::NAN,
            truncated_rate: f64::NAN,
            pass_at_k: vec![f64::NAN; n],
        }
    }

    /// The k values a table shows by default: powers of two up to `n`, and `n`.
    pub fn default_ks(n: usize) -> Vec<usize> {
        let mut ks: Vec<usize> = std::iter::successors(Some(1usize), |k| k.checked_mul(2))
            .take_while(|k| *k <= n)
            .collect();
        if n > 0 && ks.last() != Some(&n) {
            ks.push(n);
        }
        ks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(index: usize, n: usize, correct: usize) -> QuestionResult {
        QuestionResult {
            index,
            prompt_id: format!("q{index}"),
            n,
            correct,
            formatted: n,
            truncated: 0,
            tokens: 10 * n,
            question_type: "sum".into(),
            chance: Some(0.0),
        }
    }

    #[test]
    fn ks_default_to_powers_of_two_and_n_and_must_lie_in_1_to_n() {
        let c = EvalConfig {
            n: 12,
            ..EvalConfig::default()
        };
        assert_eq!(c.ks(&[]).unwrap(), vec![1, 2, 4, 8, 12]);
        assert_eq!(c.ks(&[3, 12]).unwrap(), vec![3, 12]);
        assert_eq!(c.ks(&[0]), Err(PassKError::ZeroK));
        assert_eq!(c.ks(&[13]), Err(PassKError::KAboveN { n: 12, k: 13 }));
    }

    #[test]
    fn pass_at_1_is_mean_accuracy_and_pass_at_n_is_any_correct() {
        let results = [q(0, 4, 0), q(1, 4, 1), q(2, 4, 4), q(3, 4, 2)];
        let s = EvalSummary::from_questions(&results).unwrap();
        assert_eq!(s.n, 4);
        assert!((s.accuracy - (0.0 + 0.25 + 1.0 + 0.5) / 4.0).abs() < 1e-12);
        assert!((s.pass_at(1).unwrap() - s.accuracy).abs() < 1e-12);
        assert!((s.pass_at(4).unwrap() - 0.75).abs() < 1e-12);
        // Question 1 (1 of 4 correct) at k = 2: 1 - C(3,2)/C(4,2) = 0.5; question 3: 1 - 1/6.
        let k2 = (0.0 + 0.5 + 1.0 + (1.0 - 1.0 / 6.0)) / 4.0;
        assert!((s.pass_at(2).unwrap() - k2).abs() < 1e-12);
        assert!(s.pass_at_k.windows(2).all(|w| w[0] <= w[1] + 1e-12));
        assert_eq!(s.mean_length, 10.0);
        assert!(matches!(
            s.pass_at(5),
            Err(PassKError::KAboveN { k: 5, n: 4 })
        ));
        assert!(matches!(s.pass_at(0), Err(PassKError::ZeroK)));
    }

    #[test]
    fn default_ks_are_powers_of_two_and_n() {
        assert_eq!(EvalSummary::default_ks(16), vec![1, 2, 4, 8, 16]);
        assert_eq!(EvalSummary::default_ks(10), vec![1, 2, 4, 8, 10]);
        assert_eq!(EvalSummary::default_ks(1), vec![1]);
    }

    #[test]
    fn greedy_with_several_samples_is_refused() {
        let cfg = EvalConfig {
            temperature: 0.0,
            ..EvalConfig::default()
        };
        assert!(cfg.validate().unwrap_err().contains("n = 1"));
        let cfg = EvalConfig {
            temperature: 0.0,
            n: 1,
            ..EvalConfig::default()
        };
        assert!(cfg.validate().is_ok());
        assert!(EvalConfig {
            top_p: 0.0,
            ..EvalConfig::default()
        }
        .validate()
        .unwrap_err()
        .contains("top_p"));
    }
}
