//! Reads: runs by id or name, the runs listing, metric history, checkpoints, events, kept
//! completions and evaluations.

use rusqlite::{OptionalExtension, Row};
use serde::Serialize;

use super::lease::{holder_alive, STALE_AFTER};
use super::{CheckpointRow, EventRow, Kind, Owner, Run, SampleRow, Status, Store, StoreError};

/// One line of `chartrl runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunListing {
    pub name: String,
    pub kind: Kind,
    pub mode: Option<String>,
    pub status: Status,
    pub step: usize,
    pub total_steps: usize,
    /// The latest `reward` metric.
    pub reward: Option<f64>,
    pub updated_at: f64,
    /// `running` in the store, but its process is gone: the same command resumes it.
    pub crashed: bool,
}

/// One metric value: the rows of `chartrl runs export`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRow {
    pub step: usize,
    pub key: String,
    /// `None` for a value that was not finite.
    pub value: Option<f64>,
    pub time: f64,
}

fn metric_row(r: &Row) -> rusqlite::Result<MetricRow> {
    Ok(MetricRow {
        step: r.get::<_, i64>(0)? as usize,
        key: r.get(1)?,
        value: r.get(2)?,
        time: r.get(3)?,
    })
}

const RUN_COLUMNS: &str = "r.id, r.identity, r.name, e.name, r.kind, r.mode, r.config, r.status,
     r.step, r.total_steps, r.created_at, r.updated_at, r.started_at, r.finished_at, r.host,
     r.pid, r.heartbeat_at, r.error, r.version";

/// A `runs` row with raw text where the Rust type needs checking.
struct RawRun {
    run: Run,
    kind: String,
    status: String,
    config: String,
}

fn raw_run(r: &Row) -> rusqlite::Result<RawRun> {
    Ok(RawRun {
        run: Run {
            id: r.get(0)?,
            identity: r.get(1)?,
            name: r.get(2)?,
            experiment: r.get(3)?,
            kind: Kind::Train,
            mode: r.get(5)?,
            config: serde_json::Value::Null,
            status: Status::Queued,
            step: r.get::<_, i64>(8)? as usize,
            total_steps: r.get::<_, i64>(9)? as usize,
            created_at: r.get(10)?,
            updated_at: r.get(11)?,
            started_at: r.get(12)?,
            finished_at: r.get(13)?,
            host: r.get(14)?,
            pid: r.get(15)?,
            heartbeat_at: r.get(16)?,
            error: r.get(17)?,
            version: r.get(18)?,
        },
        kind: r.get(4)?,
        status: r.get(7)?,
        config: r.get(6)?,
    })
}

fn finish(raw: RawRun) -> Result<Run, StoreError> {
    let mut run = raw.run;
    let bad = |column, value: String| StoreError::BadValue {
        run: run.name.clone(),
        column,
        value,
    };
    run.kind = Kind::parse(&raw.kind).ok_or_else(|| bad("kind", raw.kind.clone()))?;
    run.status = Status::parse(&raw.status).ok_or_else(|| bad("status", raw.status.clone()))?;
    run.config = serde_json::from_str(&raw.config).map_err(|source| StoreError::Json {
        run: run.name.clone(),
        source,
    })?;
    Ok(run)
}

impl Store {
    pub fn run_by_id(&self, id: i64) -> Result<Run, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs r LEFT JOIN experiments e
                     ON e.id = r.experiment_id WHERE r.id = ?1"
                ),
                [id],
                raw_run,
            )
            .optional()?
            .ok_or_else(|| StoreError::NoSuchRun(format!("#{id}")))?;
        finish(raw)
    }

    /// The run named `query`, or else the one run whose identity starts with it.
    pub fn find_run(&self, query: &str) -> Result<Run, StoreError> {
        let by_name: Option<i64> = self
            .conn
            .query_row("SELECT id FROM runs WHERE name = ?1", [query], |r| r.get(0))
            .optional()?;
        if let Some(id) = by_name {
            return self.run_by_id(id);
        }
        if query.len() >= 4 && query.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut stmt = self
                .conn
                .prepare("SELECT id, name FROM runs WHERE identity LIKE ?1 || '%'")?;
            let hits: Vec<(i64, String)> = stmt
                .query_map([query.to_lowercase()], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            match hits.len() {
                0 => {}
                1 => return self.run_by_id(hits[0].0),
                n => {
                    return Err(StoreError::Ambiguous {
                        query: query.into(),
                        n,
                        names: hits
                            .iter()
                            .map(|h| h.1.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        }
        Err(StoreError::NoSuchRun(query.into()))
    }

    /// Every run with its latest reward, oldest first.
    pub fn list_runs(&self) -> Result<Vec<RunListing>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT r.name, r.kind, r.mode, r.status, r.step, r.total_steps, l.value, r.updated_at,
                    r.host, r.pid, r.pid_start, r.heartbeat_at
             FROM runs r LEFT JOIN latest_metrics l ON l.run_id = r.id AND l.key = 'reward'
             ORDER BY r.created_at, r.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<f64>>(6)?,
                r.get::<_, f64>(7)?,
                (
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, Option<i64>>(9)?,
                    r.get::<_, Option<i64>>(10)?,
                    r.get::<_, Option<f64>>(11)?,
                ),
            ))
        })?;
        let me = Owner::current();
        let mut out = Vec::new();
        for row in rows {
            let (name, kind, mode, status, step, total, reward, updated_at, holder) = row?;
            let crashed = status == Status::Running.as_str()
                && match holder {
                    (Some(host), Some(pid), start, beat) => {
                        !holder_alive(&host, pid, start, beat, &me, STALE_AFTER)
                    }
                    _ => true,
                };
            let bad = |column, value: &str| StoreError::BadValue {
                run: name.clone(),
                column,
                value: value.to_string(),
            };
            out.push(RunListing {
                kind: Kind::parse(&kind).ok_or_else(|| bad("kind", &kind))?,
                status: Status::parse(&status).ok_or_else(|| bad("status", &status))?,
                name,
                mode,
                step: step as usize,
                total_steps: total as usize,
                reward,
                updated_at,
                crashed,
            });
        }
        Ok(out)
    }

    /// Every row `sql` (with `?1` = the run) returns, each made by `make`.
    fn run_rows<T>(
        &self,
        sql: &str,
        run_id: i64,
        make: impl FnMut(&Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map([run_id], make)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A run's metric history, by step then key.
    pub fn metrics(&self, run_id: i64) -> Result<Vec<MetricRow>, StoreError> {
        self.run_rows(
            "SELECT step, key, value, time FROM metrics WHERE run_id = ?1 ORDER BY step, key",
            run_id,
            metric_row,
        )
    }

    /// The latest value of each of a run's metrics, by key.
    pub fn latest_metrics(&self, run_id: i64) -> Result<Vec<MetricRow>, StoreError> {
        self.run_rows(
            "SELECT step, key, value, time FROM latest_metrics WHERE run_id = ?1 ORDER BY key",
            run_id,
            metric_row,
        )
    }

    /// A run's checkpoints, newest first.
    pub fn checkpoints(&self, run_id: i64) -> Result<Vec<CheckpointRow>, StoreError> {
        self.run_rows(
            "SELECT step, path, sha256, size, created_at FROM checkpoints
             WHERE run_id = ?1 ORDER BY step DESC",
            run_id,
            |r| {
                Ok(CheckpointRow {
                    step: r.get::<_, i64>(0)? as usize,
                    path: r.get(1)?,
                    sha256: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    created_at: r.get(4)?,
                })
            },
        )
    }

    /// A run's events in the order they happened.
    pub fn events(&self, run_id: i64) -> Result<Vec<EventRow>, StoreError> {
        self.run_rows(
            "SELECT step, level, kind, message, time FROM events WHERE run_id = ?1 ORDER BY id",
            run_id,
            |r| {
                Ok(EventRow {
                    step: r.get::<_, i64>(0)? as usize,
                    level: r.get(1)?,
                    kind: r.get(2)?,
                    message: r.get(3)?,
                    time: r.get(4)?,
                })
            },
        )
    }

    /// A run's kept completions (best and worst of each step) from step `from_step` on, by
    /// step.
    pub fn samples(&self, run_id: i64, from_step: usize) -> Result<Vec<SampleRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT step, rank, prompt_id, completion, rewards, reward, advantage FROM samples
             WHERE run_id = ?1 AND step >= ?2 ORDER BY step, rank",
        )?;
        let rows = stmt.query_map(rusqlite::params![run_id, from_step as i64], |r| {
            let rewards: String = r.get(4)?;
            Ok(SampleRow {
                step: r.get::<_, i64>(0)? as usize,
                rank: r.get(1)?,
                prompt_id: r.get(2)?,
                completion: r.get(3)?,
                rewards: serde_json::from_str(&rewards).unwrap_or(serde_json::Value::Null),
                reward: r.get(5)?,
                advantage: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Store {
    /// The run with this identity, if any.
    pub fn run_by_identity(&self, identity: &str) -> Result<Option<Run>, StoreError> {
        let id: Option<i64> = self
            .conn
            .query_row("SELECT id FROM runs WHERE identity = ?1", [identity], |r| {
                r.get(0)
            })
            .optional()?;
        id.map(|id| self.run_by_id(id)).transpose()
    }
}

impl Store {
    /// One metric's history for a run: `(step, value)` by step, non-finite values left out.
    pub fn series(&self, run_id: i64, key: &str) -> Result<Vec<(usize, f64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT step, value FROM metrics WHERE run_id = ?1 AND key = ?2 AND value IS NOT NULL
             ORDER BY step",
        )?;
        let rows = stmt.query_map(rusqlite::params![run_id, key], |r| {
            Ok((r.get::<_, i64>(0)?.max(0) as usize, r.get::<_, f64>(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// For each metric that was ever NaN or infinite (stored as NULL), the first such step.
    pub fn non_finite_steps(&self, run_id: i64) -> Result<Vec<(String, usize)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, MIN(step) FROM metrics WHERE run_id = ?1 AND value IS NULL
             GROUP BY key ORDER BY key",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as usize))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The runs of the experiment `name`, oldest first; `None` when there is no such
    /// experiment.
    pub fn experiment_runs(&self, name: &str) -> Result<Option<Vec<Run>>, StoreError> {
        let id: Option<i64> = self
            .conn
            .query_row("SELECT id FROM experiments WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(id) = id else { return Ok(None) };
        let ids: Vec<i64> = self.run_rows(
            "SELECT id FROM runs WHERE experiment_id = ?1 ORDER BY created_at, id",
            id,
            |r| r.get(0),
        )?;
        ids.into_iter()
            .map(|id| self.run_by_id(id))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}
