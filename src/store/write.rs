//! Writes: a step's metrics (with its events and kept completions) in one transaction,
//! checkpoints, evaluations, and the truncation a resume starts with.

use std::collections::BTreeMap;

use rusqlite::TransactionBehavior;

use super::{now, CheckpointRow, EventRow, SampleRow, Store, StoreError};

/// Everything one training step records.
#[derive(Debug, Clone, Default)]
pub struct StepRecord<'a> {
    pub step: usize,
    pub values: Option<&'a BTreeMap<String, f64>>,
    pub events: &'a [EventRow],
    pub samples: &'a [SampleRow],
    /// When given, the write happens only while this lease holds the run; otherwise it fails
    /// with [`StoreError::LeaseLost`] (another process took the run over).
    pub lease: Option<&'a str>,
}

impl Store {
    /// Records one step: its metrics (history and latest value), events and kept completions,
    /// and moves the run's step counter, all in one transaction.
    pub fn log_step(&mut self, run_id: i64, rec: &StepRecord) -> Result<(), StoreError> {
        let path = self.path.clone();
        (|| -> Result<(), StoreError> {
            let t = now();
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(token) = rec.lease {
                let (holder, name): (Option<String>, String) = tx
                    .prepare_cached("SELECT lease, name FROM runs WHERE id = ?1")?
                    .query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                if holder.as_deref() != Some(token) {
                    return Err(StoreError::LeaseLost(name));
                }
            }
            {
                let mut metric = tx.prepare_cached(
                    "INSERT OR REPLACE INTO metrics (run_id, key, step, value, time)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                let mut latest = tx.prepare_cached(
                    "INSERT INTO latest_metrics (run_id, key, step, value, time)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (run_id, key) DO UPDATE
                 SET step = excluded.step, value = excluded.value, time = excluded.time
                 WHERE excluded.step >= latest_metrics.step",
                )?;
                for (key, value) in rec.values.into_iter().flatten() {
                    let v = value.is_finite().then_some(*value);
                    let params = rusqlite::params![run_id, key, rec.step as i64, v, t];
                    metric.execute(params)?;
                    latest.execute(params)?;
                }
                if !rec.events.is_empty() {
                    let mut event = tx.prepare_cached(
                        "INSERT INTO events (run_id, step, level, kind, message, time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for e in rec.events {
                        event.execute(rusqlite::params![
                            run_id,
                            e.step as i64,
                            e.level,
                            e.kind,
                            e.message,
                            e.time
                        ])?;
                    }
                }
                if !rec.samples.is_empty() {
                    let mut sample = tx.prepare_cached(
                        "INSERT OR REPLACE INTO samples
                 (run_id, step, rank, prompt_id, completion, rewards, reward, advantage)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?;
                    for s in rec.samples {
                        sample.execute(rusqlite::params![
                            run_id,
                            s.step as i64,
                            s.rank,
                            s.prompt_id,
                            s.completion,
                            s.rewards.to_string(),
                            s.reward,
                            s.advantage
                        ])?;
                    }
                }
                tx.prepare_cached(
                    "UPDATE runs SET step = MAX(step, ?2), updated_at = ?3, heartbeat_at = ?3
                 WHERE id = ?1",
                )?
                .execute(rusqlite::params![run_id, rec.step as i64 + 1, t])?;
            }
            tx.commit()?;
            Ok(())
        })()
        .map_err(|e| e.at(&path))
    }

    /// Runs one statement in its own `BEGIN IMMEDIATE` transaction.
    fn execute_one(&mut self, sql: &str, params: impl rusqlite::Params) -> Result<(), StoreError> {
        let path = self.path.clone();
        (|| -> Result<(), StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(sql, params)?;
            tx.commit()?;
            Ok(())
        })()
        .map_err(|e| e.at(&path))
    }

    /// One event outside a step's record (a skipped checkpoint, a resume).
    pub fn add_event(&mut self, run_id: i64, e: &EventRow) -> Result<(), StoreError> {
        self.execute_one(
            "INSERT INTO events (run_id, step, level, kind, message, time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![run_id, e.step as i64, e.level, e.kind, e.message, e.time],
        )
    }

    /// Forgets everything a run recorded at steps `>= step` (metrics, events, completions,
    /// evaluations) and sets its step counter to `step`: what a resume from a checkpoint
    /// taken after `step` steps starts with.
    pub fn truncate_from(&mut self, run_id: i64, step: usize) -> Result<(), StoreError> {
        let path = self.path.clone();
        (|| -> Result<(), StoreError> {
            let s = step as i64;
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            for table in [
                "metrics",
                "events",
                "samples",
                "evaluations",
                "eval_questions",
            ] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE run_id = ?1 AND step >= ?2"),
                    rusqlite::params![run_id, s],
                )?;
            }
            tx.execute("DELETE FROM latest_metrics WHERE run_id = ?1", [run_id])?;
            tx.execute(
                "INSERT INTO latest_metrics (run_id, key, step, value, time)
             SELECT m.run_id, m.key, m.step, m.value, m.time FROM metrics m
             WHERE m.run_id = ?1
               AND m.step = (SELECT MAX(step) FROM metrics WHERE run_id = ?1 AND key = m.key)",
                [run_id],
            )?;
            tx.execute(
                "UPDATE runs SET step = ?2, updated_at = ?3 WHERE id = ?1",
                rusqlite::params![run_id, s, now()],
            )?;
            tx.commit()?;
            Ok(())
        })()
        .map_err(|e| e.at(&path))
    }

    /// Records a checkpoint whose files are already durable on disk.
    pub fn add_checkpoint(&mut self, run_id: i64, c: &CheckpointRow) -> Result<(), StoreError> {
        self.execute_one(
            "INSERT OR REPLACE INTO checkpoints (run_id, step, path, sha256, size, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                run_id,
                c.step as i64,
                c.path,
                c.sha256,
                c.size as i64,
                c.created_at
            ],
        )
    }

    pub fn delete_checkpoint(&mut self, run_id: i64, step: usize) -> Result<(), StoreError> {
        self.execute_one(
            "DELETE FROM checkpoints WHERE run_id = ?1 AND step = ?2",
            rusqlite::params![run_id, step as i64],
        )
    }

    /// Records (or replaces) a named evaluation of a run at a step; `metrics` is a JSON object.
    pub fn add_evaluation(
        &mut self,
        run_id: i64,
        step: usize,
        name: &str,
        metrics: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.execute_one(
            "INSERT OR REPLACE INTO evaluations (run_id, step, name, metrics, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![run_id, step as i64, name, metrics.to_string(), now()],
        )
    }
}

impl Store {
    /// Marks a queued run done: for runs that only hold evaluations of a model.
    pub fn mark_done(&mut self, run_id: i64) -> Result<(), StoreError> {
        let t = now();
        self.execute_one(
            "UPDATE runs SET status = 'done', updated_at = ?2, finished_at = ?2
             WHERE id = ?1 AND status = 'queued'",
            rusqlite::params![run_id, t],
        )
    }
}
