//! Evaluation on held-out questions: sampled completions scored for correctness and format,
//! reduced to accuracy and unbiased pass@k. `runs::evaluate` stores the results; reports read
//! them back.

mod passk;
mod sampled;

pub use passk::{mean_pass_at_k, pass_at_k, PassKError};
pub use sampled::{evaluate_chunk, EvalConfig, EvalSummary, QuestionResult, CHUNK};

use serde::{Deserialize, Serialize};

/// What the store keeps of a finished evaluation: what was evaluated, how, and the aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEval {
    /// What the questions were (`synthetic test split, seed 2025` or a file name).
    pub data: String,
    pub config: EvalConfig,
    #[serde(flatten)]
    pub summary: EvalSummary,
}

impl StoredEval {
    /// Reads a stored metrics object; `None` for one this module did not write.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    /// One line: accuracy, pass@1 and pass@n, and what they were measured on.
    pub fn describe(&self) -> String {
        let s = &self.summary;
        let last = s.pass_at_k.last().copied().unwrap_or(f64::NAN);
        format!(
            "accuracy {:.1}%, pass@1 {:.1}%, pass@{} {:.1}%, format {:.1}%, {:.0} tokens ({} questions of {}, n = {}, temperature {}, top-p {})",
            100.0 * s.accuracy,
            100.0 * s.pass_at_k.first().copied().unwrap_or(f64::NAN),
            s.n,
            100.0 * last,
            100.0 * s.format_rate,
            s.mean_length,
            s.questions,
            self.data,
            s.n,
            self.config.temperature,
            self.config.top_p
        )
    }
}
