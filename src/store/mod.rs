//! The run store: one SQLite file that records every run's configuration, status, per-step
//! metrics, checkpoints, evaluations, sample completions and events. SQL stays inside this
//! module; the rest of chartrl calls typed methods.
//!
//! The file is opened in WAL mode with a generous `busy_timeout`, every write transaction is
//! `BEGIN IMMEDIATE` (a deferred transaction that reads then writes fails at once with
//! SQLITE_BUSY whatever the timeout), and `synchronous = NORMAL`: a power loss can drop the
//! last commits but never corrupts the file, and resume re-derives everything after the last
//! verified checkpoint anyway.

mod eval;
mod lease;
mod merge;
mod query;
mod schema;
pub mod write;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

pub use eval::EvaluationRow;
pub use lease::{Heartbeat, Owner, STALE_AFTER};
pub use merge::{MergeOutcome, Pick};
pub use query::{MetricRow, RunListing};

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the store's directory {path}: {msg}")]
    Dir { path: PathBuf, msg: String },
    #[error(
        "{0} is not a chartrl run store (not an SQLite database); pass --db with the store's path"
    )]
    NotADatabase(PathBuf),
    #[error("{0} is a directory; --db takes the store's file (e.g. runs/chartrl.db)")]
    NotAFile(PathBuf),
    #[error("the store {path} was {what} while this process used it; stopped, since nothing it records would be kept")]
    Vanished { path: PathBuf, what: &'static str },
    #[error("{0}: no run store here (train something first, or pass --db)")]
    Missing(PathBuf),
    #[error("the store's schema is version {found}, newer than this chartrl understands ({supported}); upgrade chartrl")]
    NewerSchema { found: u32, supported: u32 },
    #[error("schema migration to version {to}: {source}")]
    Migration { to: u32, source: rusqlite::Error },
    #[error("no run named `{0}` (see `chartrl runs`)")]
    NoSuchRun(String),
    #[error("`{query}` matches {n} runs: {names}")]
    Ambiguous {
        query: String,
        n: usize,
        names: String,
    },
    #[error("run name `{name}` already belongs to run {identity} with a different configuration; choose another name")]
    NameTaken { name: String, identity: String },
    #[error("run `{name}` is being trained by pid {pid} on {host} (last heartbeat {age_s:.0}s ago); wait for it to finish, or pass --force if that process is gone")]
    Busy {
        name: String,
        host: String,
        pid: i64,
        age_s: f64,
    },
    #[error("run `{0}` was taken over by another process; this process stops writing to it")]
    LeaseLost(String),
    #[error("run {run}: column `{column}` holds `{value}`, which this chartrl does not know")]
    BadValue {
        run: String,
        column: &'static str,
        value: String,
    },
    #[error("run {run}: configuration JSON: {source}")]
    Json {
        run: String,
        source: serde_json::Error,
    },
    /// The file system or the file failed the store, not chartrl: a full disk, a read-only
    /// directory, a file that is not a database. The user can fix it.
    #[error("{path}: {source}")]
    Environment {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

impl StoreError {
    /// This error with the store's path, when it is the environment's fault (see
    /// [`environmental`]).
    pub(crate) fn at(self, path: &Path) -> Self {
        match self {
            StoreError::Sql(e) if environmental(&e) => StoreError::Environment {
                path: path.to_path_buf(),
                source: e,
            },
            other => other,
        }
    }
}

/// Switches the file to WAL mode (a no-op once it is). On a new file two processes can race
/// to switch it; the switch needs the file to itself and SQLite then answers "database is
/// locked" at once, without waiting out the busy timeout, so the loser retries here.
fn wal_mode(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Whether an SQLite failure is the environment's (disk full, I/O, permissions, not a
/// database file) rather than a bug in chartrl's SQL.
pub fn environmental(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e.sqlite_error_code(),
        Some(
            DiskFull
                | SystemIoFailure
                | ReadOnly
                | CannotOpen
                | NotADatabase
                | DatabaseCorrupt
                | PermissionDenied
                | FileLockingProtocolFailed
        )
    )
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Interrupted,
    Failed,
    Done,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Interrupted => "interrupted",
            Status::Failed => "failed",
            Status::Done => "done",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Status::Queued,
            Status::Running,
            Status::Interrupted,
            Status::Failed,
            Status::Done,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    #[serde(rename = "warm-start")]
    WarmStart,
    #[serde(rename = "train")]
    Train,
    #[serde(rename = "eval")]
    Eval,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WarmStart => "warm-start",
            Kind::Train => "train",
            Kind::Eval => "eval",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Kind::WarmStart, Kind::Train, Kind::Eval]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// A run to find or create.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// sha256 of the fully resolved configuration (see `runs::identity`).
    pub identity: String,
    pub name: String,
    pub experiment: Option<String>,
    pub kind: Kind,
    pub mode: Option<String>,
    pub config: serde_json::Value,
    pub total_steps: usize,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: i64,
    pub identity: String,
    pub name: String,
    pub experiment: Option<String>,
    pub kind: Kind,
    pub mode: Option<String>,
    pub config: serde_json::Value,
    pub status: Status,
    /// Steps done (the next step to take).
    pub step: usize,
    pub total_steps: usize,
    pub created_at: f64,
    pub updated_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub host: Option<String>,
    pub pid: Option<i64>,
    pub heartbeat_at: Option<f64>,
    pub error: Option<String>,
    pub version: String,
}

/// A checkpoint's row: `path` is relative to the runs root (the store file's directory).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointRow {
    pub step: usize,
    pub path: String,
    pub sha256: String,
    pub size: u64,
    pub created_at: f64,
}

/// A warning or alert as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub step: usize,
    pub level: String,
    pub kind: String,
    pub message: String,
    pub time: f64,
}

/// One of the completions kept for a step (its best and its worst).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleRow {
    pub step: usize,
    /// `best` or `worst`.
    pub rank: String,
    pub prompt_id: String,
    pub completion: String,
    /// Score of each reward function by name.
    pub rewards: serde_json::Value,
    pub reward: f64,
    pub advantage: f64,
}

/// The run store. One connection; the type is `Send` but not shared between threads.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The opened file's (device, inode), to notice it being deleted or replaced.
    file_id: Option<(u64, u64)>,
}

/// A file's (device, inode) on Unix.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

impl Store {
    /// Opens (creating it and its directory if needed) the store at `path` and brings its
    /// schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_at(path, schema::CURRENT)
    }

    /// Opens a store that must already exist (for read-only commands). Where the normal
    /// opening fails for the environment's sake (a full disk: WAL's shared-memory index cannot
    /// grow), it opens in exclusive locking mode, where SQLite keeps that index in memory and
    /// needs no disk space; such a reader holds its lock until it exits.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        match Self::open_with(path, schema::CURRENT, false) {
            Err(StoreError::Environment { .. }) => Self::open_with(path, schema::CURRENT, true),
            Err(StoreError::Open { source, .. }) if environmental(&source) => {
                Self::open_with(path, schema::CURRENT, true)
            }
            other => other,
        }
    }

    /// Opens with the schema migrated only up to `version` (tests of migrations).
    pub(crate) fn open_at(path: &Path, version: u32) -> Result<Self, StoreError> {
        Self::open_with(path, version, false)
    }

    fn open_with(path: &Path, version: u32, exclusive: bool) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        if path.is_dir() {
            return Err(StoreError::NotAFile(path.to_path_buf()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::fsx::create_dir_all(dir).map_err(|e| StoreError::Dir {
                path: dir.to_path_buf(),
                msg: e.to_string(),
            })?;
        }
        let mut conn = Connection::open(path).map_err(open_err)?;
        // Before the first statement: a process creating the same store holds its lock for a
        // moment, and without a busy timeout the first read fails at once ("database is
        // locked") instead of waiting for it.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        if exclusive {
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
                .map_err(open_err)?;
        }
        // Reading the schema version fails at once on a file that is not an SQLite database.
        conn.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0))
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase) => {
                    StoreError::NotADatabase(path.to_path_buf())
                }
                _ => open_err(e),
            })?;
        wal_mode(&conn).map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        schema::migrate(&mut conn, version)?;
        Ok(Self {
            conn,
            file_id: file_id(path),
            path: path.to_path_buf(),
        })
    }

    /// Errs when the store's file is no longer the one this connection opened (deleted, or
    /// replaced by another file): writes would go nowhere anyone reads.
    pub fn check_still_here(&self) -> Result<(), StoreError> {
        let Some(opened) = self.file_id else {
            return Ok(());
        };
        let what = match file_id(&self.path) {
            None => "deleted",
            Some(now) if now != opened => "replaced by another file",
            Some(_) => return Ok(()),
        };
        Err(StoreError::Vanished {
            path: self.path.clone(),
            what,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory checkpoint and model paths are relative to: the store file's directory.
    pub fn root(&self) -> PathBuf {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// `PRAGMA integrity_check`: `ok` for a sound file.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    /// The run with this identity, or a new `queued` one. A name already used by another
    /// identity is an error.
    pub fn find_or_create_run(&mut self, new: &NewRun) -> Result<(Run, bool), StoreError> {
        let path = self.path.clone();
        (|| -> Result<(Run, bool), StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM runs WHERE identity = ?1",
                    [&new.identity],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                tx.commit()?;
                return Ok((self.run_by_id(id)?, false));
            }
            let clash: Option<String> = tx
                .query_row(
                    "SELECT identity FROM runs WHERE name = ?1",
                    [&new.name],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(identity) = clash {
                return Err(StoreError::NameTaken {
                    name: new.name.clone(),
                    identity: identity[..12.min(identity.len())].to_string(),
                });
            }
            let now = now();
            let experiment_id: Option<i64> = match &new.experiment {
                Some(name) => {
                    tx.execute(
                        "INSERT OR IGNORE INTO experiments (name, created_at) VALUES (?1, ?2)",
                        rusqlite::params![name, now],
                    )?;
                    Some(tx.query_row(
                        "SELECT id FROM experiments WHERE name = ?1",
                        [name],
                        |r| r.get(0),
                    )?)
                }
                None => None,
            };
            tx.execute(
                "INSERT INTO runs (identity, name, experiment_id, kind, mode, config, status, step,
                               total_steps, created_at, updated_at, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', 0, ?7, ?8, ?8, ?9)",
                rusqlite::params![
                    new.identity,
                    new.name,
                    experiment_id,
                    new.kind.as_str(),
                    new.mode,
                    new.config.to_string(),
                    new.total_steps as i64,
                    now,
                    env!("CARGO_PKG_VERSION"),
                ],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok((self.run_by_id(id)?, true))
        })()
        .map_err(|e| e.at(&path))
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
