//! Turning a sample into the text the policy reads, and the completion it should write.
//!
//! The template lives in `configs/prompt.txt` so users change the prompt without recompiling;
//! the copy compiled into the binary is used when the working directory has none (the command
//! line and scripts resolve which, see `workspace`). A template's hash is part of every run's
//! and evaluation's identity.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::chart::Sample;
use super::DataError;

const EMBEDDED_TEMPLATE: &str = include_str!("../../configs/prompt.txt");
const FIELDS: [&str; 5] = ["{title}", "{kind}", "{unit}", "{table}", "{question}"];

/// How the rendered prompt reaches the model: as it is (`raw`, for base models and chartrl's
/// own), or as the user turn of the model's own chat template (`chat`, for instruction-tuned
/// checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptFormat {
    #[default]
    Raw,
    Chat,
}

impl PromptFormat {
    pub fn name(self) -> &'static str {
        match self {
            PromptFormat::Raw => "raw",
            PromptFormat::Chat => "chat",
        }
    }
}

/// A prompt template with `{title}`, `{kind}`, `{unit}`, `{table}` and `{question}` slots.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTemplate {
    text: String,
}

impl Default for PromptTemplate {
    fn default() -> Self {
        Self {
            text: EMBEDDED_TEMPLATE.trim_end().to_string(),
        }
    }
}

impl PromptTemplate {
    /// The template's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The sha256 of the template's text: part of every run's and evaluation's identity, so
    /// an edited prompt never reuses results made with another.
    pub fn identity(&self) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(self.text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::parse(text.trim_end()).map_err(|msg| DataError::Invalid {
            path: path.to_path_buf(),
            line: 0,
            msg,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.contains("{question}") {
            return Err(format!(
                "prompt template has no {{question}} slot (slots: {})",
                FIELDS.join(", ")
            ));
        }
        Ok(Self {
            text: text.to_string(),
        })
    }

    /// The prompt for `sample`: its chart as a table and its question.
    pub fn render(&self, sample: &Sample) -> String {
        let c = &sample.chart;
        let unit = if c.unit.is_empty() { "count" } else { &c.unit };
        let title = c.title.as_str();
        let table = c.to_table();
        self.text
            .replace("{title}", title)
            .replace("{kind}", &c.kind.name().replace('_', " "))
            .replace("{unit}", unit)
            .replace("{table}", table.trim_end())
            .replace("{question}", &sample.question)
            + "\n"
    }
}

/// The completion a perfect policy writes: open-r1's strict think/answer layout.
pub fn gold_completion(sample: &Sample) -> String {
    format!(
        "<think>\n{}\n</think>\n<answer>\n{}\n</answer>",
        sample.reasoning, sample.answer
    )
}
