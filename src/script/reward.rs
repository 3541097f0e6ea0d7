//! Rewards written in a script: a closure `|completion, sample| -> number` called for each
//! completion. It runs on its own engine over the script's AST (with the same limits), so the
//! trainer can call it from inside a training step.

use std::sync::Arc;

use rhai::{Dynamic, Engine, FnPtr, Map, AST};

use crate::reward::{Reward, RewardError, Scored};

pub struct ScriptReward {
    name: String,
    engine: Engine,
    ast: Arc<AST>,
    func: FnPtr,
}

impl ScriptReward {
    pub(crate) fn new(name: String, ast: Arc<AST>, func: FnPtr) -> Self {
        Self {
            name,
            engine: super::engine::reward_engine(),
            ast,
            func,
        }
    }

    /// What identifies the closure: Rhai names an anonymous function by a hash of its
    /// parameters and body, and captured values travel as curried arguments.
    pub(crate) fn identity(func: &FnPtr) -> serde_json::Value {
        let curried: Vec<String> = func.curry().iter().map(|v| format!("{v:?}")).collect();
        serde_json::json!({ "script_fn": func.fn_name(), "captured": curried })
    }
}

/// The sample fields a reward closure sees.
fn sample_map(s: &Scored<'_>) -> Map {
    let mut m = Map::new();
    m.insert("id".into(), s.sample.id.clone().into());
    m.insert("question".into(), s.sample.question.clone().into());
    m.insert("answer".into(), s.sample.answer.clone().into());
    m.insert(
        "question_type".into(),
        s.sample.question_type.clone().into(),
    );
    m.insert("tokens".into(), Dynamic::from(s.tokens as rhai::INT));
    m
}

impl Reward for ScriptReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, batch: &[Scored<'_>]) -> Result<Vec<f64>, RewardError> {
        let fail = |msg: String| RewardError::Failed {
            name: self.name.clone(),
            msg,
        };
        batch
            .iter()
            .map(|s| {
                let args = (s.completion.to_string(), sample_map(s));
                let v: Dynamic = self
                    .func
                    .call(&self.engine, &self.ast, args)
                    .map_err(|e| fail(e.to_string()))?;
                if let Ok(f) = v.as_float() {
                    Ok(f)
                } else if let Ok(i) = v.as_int() {
                    Ok(i as f64)
                } else if let Ok(b) = v.as_bool() {
                    Ok(if b { 1.0 } else { 0.0 })
                } else {
                    Err(fail(format!(
                        "returned {} ({}), not a number",
                        v,
                        v.type_name()
                    )))
                }
            })
            .collect()
    }
}

/// A reward from the source of a closure expression (`|completion, sample| ...`), as a script
/// would define it: for benchmarks and tests outside a script.
pub fn reward_from_source(name: &str, closure: &str) -> Result<ScriptReward, String> {
    let engine = super::engine::reward_engine();
    let ast = engine.compile(closure).map_err(|e| e.to_string())?;
    let func: FnPtr = engine
        .eval_ast::<FnPtr>(&ast)
        .map_err(|e| format!("{name}: the source must evaluate to a closure: {e}"))?;
    Ok(ScriptReward::new(name.to_string(), Arc::new(ast), func))
}
