//! Evaluation results: per-question rows written chunk by chunk while an evaluation samples,
//! and the aggregate row written once every question is in. Reports read these and never
//! sample again.

use rusqlite::{OptionalExtension, TransactionBehavior};

use super::{Store, StoreError};
use crate::eval::QuestionResult;

/// One stored evaluation: the run step it evaluated, its name and its metrics object.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EvaluationRow {
    pub step: usize,
    pub name: String,
    pub metrics: serde_json::Value,
}

impl Store {
    /// Records question results of the evaluation `name` of a run at `step`, in one
    /// transaction (a chunk is either stored whole or not at all).
    pub fn add_eval_questions(
        &mut self,
        run_id: i64,
        step: usize,
        name: &str,
        rows: &[QuestionResult],
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        (|| -> Result<(), StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO eval_questions
                 (run_id, step, name, idx, prompt_id, n, correct, formatted, truncated, tokens,
                  qtype, chance)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                for q in rows {
                    insert.execute(rusqlite::params![
                        run_id,
                        step as i64,
                        name,
                        q.index as i64,
                        q.prompt_id,
                        q.n as i64,
                        q.correct as i64,
                        q.formatted as i64,
                        q.truncated as i64,
                        q.tokens as i64,
                        q.question_type,
                        q.chance,
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })()
        .map_err(|e| e.at(&path))
    }

    /// The stored question results of an evaluation, by question index.
    pub fn eval_questions(
        &self,
        run_id: i64,
        step: usize,
        name: &str,
    ) -> Result<Vec<QuestionResult>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, prompt_id, n, correct, formatted, truncated, tokens, qtype, chance
             FROM eval_questions WHERE run_id = ?1 AND step = ?2 AND name = ?3 ORDER BY idx",
        )?;
        let count = |r: &rusqlite::Row, i| r.get::<_, i64>(i).map(|v| v.max(0) as usize);
        let rows = stmt.query_map(rusqlite::params![run_id, step as i64, name], |r| {
            Ok(QuestionResult {
                index: count(r, 0)?,
                prompt_id: r.get(1)?,
                n: count(r, 2)?,
                correct: count(r, 3)?,
                formatted: count(r, 4)?,
                truncated: count(r, 5)?,
                tokens: count(r, 6)?,
                question_type: r
                    .get::<_, Option<String>>(7)?
                    .unwrap_or_else(|| "unknown".into()),
                chance: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The aggregate of evaluation `name` of a run at `step`, if it is complete.
    pub fn evaluation(
        &self,
        run_id: i64,
        step: usize,
        name: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT metrics FROM evaluations WHERE run_id = ?1 AND step = ?2 AND name = ?3",
                rusqlite::params![run_id, step as i64, name],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| parse_metrics(run_id, &t)).transpose()
    }

    /// Every complete evaluation of a run, by step then name.
    pub fn evaluations(&self, run_id: i64) -> Result<Vec<EvaluationRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT step, name, metrics FROM evaluations WHERE run_id = ?1 ORDER BY step, name",
        )?;
        let rows: Vec<(i64, String, String)> = stmt
            .query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(step, name, text)| {
                Ok(EvaluationRow {
                    step: step.max(0) as usize,
                    name,
                    metrics: parse_metrics(run_id, &text)?,
                })
            })
            .collect()
    }
}

fn parse_metrics(run_id: i64, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::BadValue {
        run: format!("#{run_id}"),
        column: "evaluations.metrics",
        value: format!("{e}"),
    })
}
