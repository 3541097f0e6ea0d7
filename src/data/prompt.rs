//! Turning a sample into the text the policy reads, and the completion it should write.
//!
//! The template lives in `configs/prompt.txt` so users change the prompt without recompiling;
//! the copy compiled into the binary is used when the working directory has none.

use std::path::Path;

use super::chart::Sample;
use super::DataError;

const EMBEDDED_TEMPLATE: &str = include_str!("../../configs/prompt.txt");
const FIELDS: [&str; 5] = ["{title}", "{kind}", "{unit}", "{table}", "{question}"];

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
    /// `configs/prompt.txt` under the working directory if it exists, else the built-in one.
    pub fn load_default() -> Result<Self, DataError> {
        let local = Path::new("configs/prompt.txt");
        if local.is_file() {
            Self::from_file(local)
        } else {
            Ok(Self::default())
        }
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
