//! Script errors as people read them: `file:line:column`, the offending line with a caret,
//! and the message.

use std::path::{Path, PathBuf};

use rhai::{EvalAltResult, Position};

use super::host::{HostError, HostFailure};

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A syntax or runtime error in the script, or a failure of something it asked for.
    #[error("{location}: {message}{snippet}")]
    Script {
        location: String,
        message: String,
        snippet: String,
    },
    /// Something the script asked for failed (a run, an evaluation, a report); the library's
    /// error is kept whole (see [`ScriptError::failure`]).
    #[error("{location}: {failure}{snippet}")]
    Host {
        location: String,
        failure: HostFailure,
        snippet: String,
    },
    /// Ctrl-C or SIGTERM stopped the script (the current run was checkpointed).
    #[error("{location}: stopped: {message}")]
    Interrupted { location: String, message: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The project's files (`configs/`) did not read.
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
}

impl ScriptError {
    /// The error of the primitive that stopped the script, if one did.
    pub fn failure(&self) -> Option<&HostError> {
        match self {
            ScriptError::Host { failure, .. } => Some(&failure.0),
            _ => None,
        }
    }
}

/// Turns a Rhai error into a [`ScriptError`] pointing into `source` (the text of `path`).
pub(crate) fn from_rhai(path: &Path, source: &str, err: &EvalAltResult) -> ScriptError {
    let (err, file, text) = innermost(path, source, err);
    let pos = err.position();
    let location = locate(&file, pos);
    if let EvalAltResult::ErrorTerminated(reason, _) = err {
        if let Some(super::engine::TimeLimit(message)) = reason.clone().try_cast() {
            return ScriptError::Script {
                location,
                message,
                snippet: snippet(&text, pos),
            };
        }
        return ScriptError::Interrupted {
            location,
            message: reason.to_string(),
        };
    }
    if let EvalAltResult::ErrorRuntime(value, _) = err {
        if let Some(failure) = value.clone().try_cast::<HostFailure>() {
            return ScriptError::Host {
                location,
                failure,
                snippet: snippet(&text, pos),
            };
        }
    }
    ScriptError::Script {
        location,
        message: message(err),
        snippet: snippet(&text, pos),
    }
}

/// The error that caused `err`, with the file (and text) it happened in: errors inside a
/// function call or an imported module are reported where they happened.
fn innermost<'a>(
    path: &Path,
    source: &str,
    err: &'a EvalAltResult,
) -> (&'a EvalAltResult, PathBuf, String) {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, src, inner, _) => {
            if src.is_empty() {
                innermost(path, source, inner)
            } else {
                let file = PathBuf::from(src);
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                innermost(&file, &text, inner)
            }
        }
        EvalAltResult::ErrorInModule(name, inner, _) => {
            let file = PathBuf::from(format!("scripts/{name}.rhai"));
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            (inner, file, text)
        }
        other => (other, path.to_path_buf(), source.to_string()),
    }
}

fn locate(file: &Path, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}", file.display()),
        (Some(l), None) => format!("{}:{l}", file.display()),
        _ => file.display().to_string(),
    }
}

/// The message without Rhai's own ` (line L, position C)` suffix, which the location says.
fn message(err: &EvalAltResult) -> String {
    let text = match err {
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "the script ran more than {} million operations (a loop that never ends?)",
            super::engine::MAX_OPERATIONS / 1_000_000
        ),
        EvalAltResult::ErrorStackOverflow(_) => format!(
            "calls nested more than {} deep (a function that calls itself without end?)",
            super::engine::MAX_CALL_LEVELS
        ),
        other => other.to_string(),
    };
    match text.rfind(" (line ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

/// The line at `pos` with a caret under the column, indented; empty when unknown.
fn snippet(text: &str, pos: Position) -> String {
    let Some(line) = pos.line() else {
        return String::new();
    };
    let Some(code) = text.lines().nth(line.saturating_sub(1)) else {
        return String::new();
    };
    let col = pos.position().unwrap_or(1).max(1);
    format!("\n  {code}\n  {}^", " ".repeat(col - 1))
}
