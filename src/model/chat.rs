//! Chat templates: the Jinja template an instruction-tuned checkpoint ships, so its prompts
//! are rendered the way the model was trained to read them. Found where Hugging Face keeps
//! it (`chat_template.jinja` beside the tokenizer, or `chat_template` in
//! `tokenizer_config.json`) and rendered with minijinja, the engine Hugging Face's Rust stack
//! uses, with the settings of `transformers`' `apply_chat_template` (blocks trimmed and
//! left-stripped, `raise_exception`, Python string methods).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{ModelError, Result};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A model's chat template and the special tokens templates may refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplate {
    source: String,
    /// Where it was read from, for errors.
    origin: PathBuf,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl ChatTemplate {
    /// A template from its source; `origin` names it in errors. Compiled once to check it.
    pub fn new(
        source: &str,
        origin: &Path,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self> {
        let t = Self {
            source: source.to_string(),
            origin: origin.to_path_buf(),
            bos_token,
            eos_token,
        };
        t.environment()?;
        Ok(t)
    }

    /// The template a model directory ships, if any: `chat_template.jinja`, else the
    /// `chat_template` of `tokenizer_config.json` (a string, or a list of named templates of
    /// which the `default` one is used).
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path)
                .map_err(|e| ModelError::io(&config_path, e))?;
            serde_json::from_str(&text).map_err(|e| ModelError::json(&config_path, e))?
        } else {
            serde_json::Value::Null
        };
        let token = |k: &str| match &config[k] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
            _ => None,
        };
        let jinja = dir.join("chat_template.jinja");
        let (source, origin) = if jinja.is_file() {
            let text = std::fs::read_to_string(&jinja).map_err(|e| ModelError::io(&jinja, e))?;
            (text, jinja)
        } else {
            match template_in_config(&config) {
                Some(s) => (s, config_path),
                None => return Ok(None),
            }
        };
        Self::new(&source, &origin, token("bos_token"), token("eos_token")).map(Some)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn environment(&self) -> Result<minijinja::Environment<'_>> {
        let mut env = minijinja::Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| self.error(&e))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", &self.source)
            .map_err(|e| self.error(&e))?;
        Ok(env)
    }

    fn error(&self, e: &minijinja::Error) -> ModelError {
        ModelError::Config {
            path: self.origin.clone(),
            msg: format!("chat template: {e:#}"),
        }
    }

    /// The conversation as the model reads it; with `add_generation_prompt`, ending where the
    /// assistant's reply begins.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let env = self.environment()?;
        let template = env.get_template("chat").map_err(|e| self.error(&e))?;
        template
            .render(minijinja::context! {
                messages => messages
                    .iter()
                    .map(|m| minijinja::Value::from_pairs([
                        ("role", m.role.as_str()),
                        ("content", m.content.as_str()),
                    ]))
                    .collect::<Vec<_>>(),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.clone().unwrap_or_default(),
                eos_token => self.eos_token.clone().unwrap_or_default(),
            })
            .map_err(|e| self.error(&e))
    }
}

/// `chat_template` of a `tokenizer_config.json`: a string, or the `default` of a list of
/// `{name, template}`.
fn template_in_config(config: &serde_json::Value) -> Option<String> {
    match &config["chat_template"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_exception_and_python_methods_work_as_in_transformers() {
        let t = ChatTemplate::new(
            "{% if messages|length == 0 %}{{ raise_exception('no messages') }}{% endif %}{{ messages[0].content.strip().upper() }}",
            Path::new("tokenizer_config.json"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "  hi ")], false)
                .unwrap(),
            "HI"
        );
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(
            e.contains("no messages") && e.contains("tokenizer_config.json"),
            "{e}"
        );
        let bad = ChatTemplate::new("{% if %}", Path::new("x.jinja"), None, None).unwrap_err();
        assert!(bad.to_string().contains("x.jinja"), "{bad}");
    }

    #[test]
    fn a_named_template_list_uses_the_default() {
        let config = serde_json::json!({"chat_template": [
            {"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]});
        assert_eq!(template_in_config(&config).as_deref(), Some("D"));
    }
}
