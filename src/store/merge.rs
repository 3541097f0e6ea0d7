//! Folding one store into another: how the per-run stores of a Slurm sweep reach the main
//! store (`chartrl runs merge`), and how a task brings the runs it builds on into its own
//! store. SQLite cannot be shared between nodes, so each task writes a file of its own and
//! the files are merged afterwards, the way W&B's offline runs are synced.
//!
//! A run is matched by its identity. A done run is copied whole (metrics, checkpoints,
//! events, kept completions, evaluations) unless this store has it done already; one this
//! store holds unfinished is replaced. Evaluations of a done run this store lacks are added
//! either way. Merging the same file twice therefore changes nothing.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{schema, Store, StoreError};

/// Which runs of the other store to fold in.
#[derive(Debug, Clone)]
pub enum Pick {
    /// Every done run.
    Done,
    /// The done runs with these identities or plan keys.
    Keys(Vec<String>),
}

/// What a merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MergeOutcome {
    /// Runs this store did not have.
    pub added: usize,
    /// Runs this store had unfinished, now replaced by the done copy.
    pub replaced: usize,
    /// Done runs both stores had (only their missing evaluations were added).
    pub present: usize,
    pub evaluations_added: usize,
}

/// The columns of `runs` copied as they are (the id and experiment are mapped).
const RUN_COPY: &str = "identity, name, kind, mode, config, status, step, total_steps,
    created_at, updated_at, started_at, finished_at, host, pid, pid_start, lease, heartbeat_at,
    error, version, plan_key, scheduler";

impl Store {
    /// Folds the runs `pick` selects from the store at `other` into this one.
    pub fn merge_from(&mut self, other: &Path, pick: &Pick) -> Result<MergeOutcome, StoreError> {
        // Opening it brings an older file's schema up to date (and refuses a newer one).
        drop(Store::open_existing(other)?);
        let path = self.path.clone();
        self.with_attached(other, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = merge_picked(&tx, pick)?;
            tx.commit()?;
            Ok(out)
        })
        .map_err(|e| e.at(&path))
    }

    /// Runs `f` with the store at `other` attached as `src`, detaching it afterwards
    /// whatever `f` returned.
    fn with_attached<T>(
        &mut self,
        other: &Path,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn
            .execute("ATTACH DATABASE ?1 AS src", [other.display().to_string()])
            .map_err(|e| StoreError::Open {
                path: other.to_path_buf(),
                source: e,
            })?;
        let result = f(&mut self.conn);
        let detached = self.conn.execute("DETACH DATABASE src", []);
        let out = result?;
        detached?;
        Ok(out)
    }
}

fn merge_picked(tx: &Transaction, pick: &Pick) -> Result<MergeOutcome, StoreError> {
    let version: u32 = tx.query_row("PRAGMA src.user_version", [], |r| r.get(0))?;
    if version != schema::CURRENT {
        return Err(StoreError::NewerSchema {
            found: version,
            supported: schema::CURRENT,
        });
    }
    let mut stmt = tx.prepare(
        "SELECT id, identity, name, plan_key FROM src.runs WHERE status = 'done' ORDER BY id",
    )?;
    let candidates: Vec<(i64, String, String, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    drop(stmt);
    let mut out = MergeOutcome::default();
    for (src_id, identity, name, plan_key) in candidates {
        let wanted = match pick {
            Pick::Done => true,
            Pick::Keys(keys) => keys
                .iter()
                .any(|k| *k == identity || plan_key.as_deref() == Some(k)),
        };
        if wanted {
            merge_run(tx, src_id, &identity, &name, &mut out)?;
        }
    }
    Ok(out)
}

/// Folds run `src_id` of `src` into `main`.
fn merge_run(
    tx: &Transaction,
    src_id: i64,
    identity: &str,
    name: &str,
    out: &mut MergeOutcome,
) -> Result<(), StoreError> {
    let here: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, status FROM main.runs WHERE identity = ?1",
            [identity],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let id = match here {
        Some((id, status)) if status == "done" => {
            out.present += 1;
            id
        }
        other => {
            if let Some((id, _)) = other {
                tx.execute("DELETE FROM main.runs WHERE id = ?1", [id])?;
                out.replaced += 1;
            } else {
                out.added += 1;
            }
            copy_run(tx, src_id, identity, name)?
        }
    };
    out.evaluations_added += copy_evaluations(tx, src_id, id)?;
    Ok(())
}

/// Copies the run row and everything it recorded; returns its id in `main`.
fn copy_run(tx: &Transaction, src_id: i64, identity: &str, name: &str) -> Result<i64, StoreError> {
    let clash: Option<String> = tx
        .query_row(
            "SELECT identity FROM main.runs WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(other) = clash {
        return Err(StoreError::NameTaken {
            name: name.to_string(),
            identity: format!(
                "{} here, {} in the merged store",
                &other[..12.min(other.len())],
                &identity[..12.min(identity.len())]
            ),
        });
    }
    let experiment: Option<(String, f64)> = tx
        .query_row(
            "SELECT e.name, e.created_at FROM src.runs r JOIN src.experiments e
             ON e.id = r.experiment_id WHERE r.id = ?1",
            [src_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let experiment_id: Option<i64> = match experiment {
        Some((e, created)) => {
            tx.execute(
                "INSERT OR IGNORE INTO main.experiments (name, created_at) VALUES (?1, ?2)",
                params![e, created],
            )?;
            Some(tx.query_row(
                "SELECT id FROM main.experiments WHERE name = ?1",
                [e],
                |r| r.get(0),
            )?)
        }
        None => None,
    };
    tx.execute(
        &format!(
            "INSERT INTO main.runs (experiment_id, {RUN_COPY})
             SELECT ?1, {RUN_COPY} FROM src.runs WHERE id = ?2"
        ),
        params![experiment_id, src_id],
    )?;
    let id = tx.last_insert_rowid();
    for (table, columns) in [
        ("metrics", "key, step, value, time"),
        ("latest_metrics", "key, step, value, time"),
        ("checkpoints", "step, path, sha256, size, created_at"),
        ("events", "step, level, kind, message, time"),
        (
            "samples",
            "step, rank, prompt_id, completion, rewards, reward, advantage",
        ),
    ] {
        tx.execute(
            &format!(
                "INSERT INTO main.{table} (run_id, {columns})
                 SELECT ?1, {columns} FROM src.{table} WHERE run_id = ?2"
            ),
            params![id, src_id],
        )?;
    }
    Ok(id)
}

/// Adds the evaluations (and their per-question rows) of `src_id` that `id` lacks.
fn copy_evaluations(tx: &Transaction, src_id: i64, id: i64) -> Result<usize, StoreError> {
    let added = tx.execute(
        "INSERT OR IGNORE INTO main.evaluations (run_id, step, name, metrics, created_at)
         SELECT ?1, step, name, metrics, created_at FROM src.evaluations WHERE run_id = ?2",
        params![id, src_id],
    )?;
    let columns = "step, name, idx, prompt_id, n, correct, formatted, truncated, tokens, qtype,
        chance";
    tx.execute(
        &format!(
            "INSERT OR IGNORE INTO main.eval_questions (run_id, {columns})
             SELECT ?1, {columns} FROM src.eval_questions WHERE run_id = ?2"
        ),
        params![id, src_id],
    )?;
    Ok(added)
}

impl Store {
    /// Records where a run was planned and placed: its plan key and, under a scheduler, the
    /// job, task and restart count (JSON).
    pub fn set_placement(
        &mut self,
        run_id: i64,
        plan_key: &str,
        scheduler: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.conn
            .execute(
                "UPDATE runs SET plan_key = ?1, scheduler = COALESCE(?2, scheduler) WHERE id = ?3",
                params![plan_key, scheduler.map(|v| v.to_string()), run_id],
            )
            .map_err(|e| StoreError::from(e).at(&path))?;
        Ok(())
    }

    /// A run's plan key and scheduler record, where it has them.
    pub fn placement(
        &self,
        run_id: i64,
    ) -> Result<(Option<String>, Option<serde_json::Value>), StoreError> {
        let (key, sched): (Option<String>, Option<String>) = self.conn.query_row(
            "SELECT plan_key, scheduler FROM runs WHERE id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let sched = sched.and_then(|s| serde_json::from_str(&s).ok());
        Ok((key, sched))
    }

    /// The run planned under `key` (see [`Store::set_placement`]).
    pub fn run_by_plan_key(&self, key: &str) -> Result<Option<super::Run>, StoreError> {
        let id: Option<i64> = self
            .conn
            .query_row("SELECT id FROM runs WHERE plan_key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        id.map(|id| self.run_by_id(id)).transpose()
    }
}

impl Store {
    /// Whether the store at `other` holds a done run, or an evaluation of one, that this
    /// store lacks (what [`Store::merge_from`] with [`Pick::Done`] would add). Writes nothing.
    pub fn lacks_from(&mut self, other: &Path) -> Result<bool, StoreError> {
        self.with_attached(other, |conn| {
            Ok(conn.query_row(
                "SELECT EXISTS (
                 SELECT 1 FROM src.runs s WHERE s.status = 'done' AND NOT EXISTS (
                     SELECT 1 FROM main.runs m WHERE m.identity = s.identity AND m.status = 'done'))
             OR EXISTS (
                 SELECT 1 FROM src.evaluations e JOIN src.runs s ON s.id = e.run_id
                 WHERE s.status = 'done' AND NOT EXISTS (
                     SELECT 1 FROM main.evaluations me JOIN main.runs m ON m.id = me.run_id
                     WHERE m.identity = s.identity AND me.step = e.step AND me.name = e.name))",
                [],
                |r| r.get::<_, bool>(0),
            )?)
        })
    }

    /// Writes a copy of this store to `path` (`VACUUM INTO`).
    pub fn copy_to(&self, path: &Path) -> Result<(), StoreError> {
        self.conn
            .execute("VACUUM INTO ?1", [path.display().to_string()])
            .map_err(|e| StoreError::from(e).at(path))?;
        Ok(())
    }
}
