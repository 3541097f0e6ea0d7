//! The store's schema as an ordered list of migrations, applied against SQLite's
//! `user_version` inside one `BEGIN IMMEDIATE` transaction, so processes that open a new file
//! at the same moment apply each migration exactly once.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Migration `i` takes a file from `user_version = i` to `i + 1`. Append; never edit.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: experiments, runs, metrics, checkpoints, events.
    r#"
    CREATE TABLE experiments (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        created_at  REAL NOT NULL
    );
    CREATE TABLE runs (
        id            INTEGER PRIMARY KEY,
        identity      TEXT NOT NULL UNIQUE,
        name          TEXT NOT NULL UNIQUE,
        experiment_id INTEGER REFERENCES experiments(id),
        kind          TEXT NOT NULL CHECK (kind IN ('warm-start', 'train', 'eval')),
        mode          TEXT,
        config        TEXT NOT NULL,
        status        TEXT NOT NULL
                      CHECK (status IN ('queued', 'running', 'interrupted', 'failed', 'done')),
        step          INTEGER NOT NULL DEFAULT 0,
        total_steps   INTEGER NOT NULL,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        started_at    REAL,
        finished_at   REAL,
        host          TEXT,
        pid           INTEGER,
        pid_start     INTEGER,
        lease         TEXT,
        heartbeat_at  REAL,
        error         TEXT,
        version       TEXT NOT NULL
    );
    CREATE TABLE metrics (
        run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        key     TEXT NOT NULL,
        step    INTEGER NOT NULL,
        value   REAL,
        time    REAL NOT NULL,
        PRIMARY KEY (run_id, key, step)
    ) WITHOUT ROWID;
    CREATE TABLE latest_metrics (
        run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        key     TEXT NOT NULL,
        step    INTEGER NOT NULL,
        value   REAL,
        time    REAL NOT NULL,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE checkpoints (
        run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step        INTEGER NOT NULL,
        path        TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (run_id, step)
    );
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY,
        run_id   INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step     INTEGER NOT NULL,
        level    TEXT NOT NULL,
        kind     TEXT NOT NULL,
        message  TEXT NOT NULL,
        time     REAL NOT NULL
    );
    CREATE INDEX events_by_run ON events(run_id, step);
    "#,
    // 2: evaluations and the best and worst completion of each step.
    r#"
    CREATE TABLE evaluations (
        id          INTEGER PRIMARY KEY,
        run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step        INTEGER NOT NULL,
        name        TEXT NOT NULL,
        metrics     TEXT NOT NULL,
        created_at  REAL NOT NULL,
        UNIQUE (run_id, step, name)
    );
    CREATE TABLE samples (
        run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step        INTEGER NOT NULL,
        rank        TEXT NOT NULL CHECK (rank IN ('best', 'worst')),
        prompt_id   TEXT NOT NULL,
        completion  TEXT NOT NULL,
        rewards     TEXT NOT NULL,
        reward      REAL NOT NULL,
        advantage   REAL NOT NULL,
        PRIMARY KEY (run_id, step, rank)
    );
    "#,
    // 3: per-question results of sampled evaluations (the aggregate stays in `evaluations`).
    r#"
    CREATE TABLE eval_questions (
        run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step        INTEGER NOT NULL,
        name        TEXT NOT NULL,
        idx         INTEGER NOT NULL,
        prompt_id   TEXT NOT NULL,
        n           INTEGER NOT NULL,
        correct     INTEGER NOT NULL,
        formatted   INTEGER NOT NULL,
        truncated   INTEGER NOT NULL,
        tokens      INTEGER NOT NULL,
        PRIMARY KEY (run_id, step, name, idx)
    ) WITHOUT ROWID;
    "#,
    // 4: each evaluated question's type and chance level, so reports can show results per
    // type and keep guessable types out of the headline (NULL for rows written before).
    r#"
    ALTER TABLE eval_questions ADD COLUMN qtype TEXT;
    ALTER TABLE eval_questions ADD COLUMN chance REAL;
    "#,
    // 5: where a run was planned and placed: its key in a frozen plan (`exec --plan`), and
    // the scheduler's job, task and restart count when a Slurm array trained it.
    r#"
    ALTER TABLE runs ADD COLUMN plan_key TEXT;
    ALTER TABLE runs ADD COLUMN scheduler TEXT;
    "#,
];

/// The schema version this build writes.
pub(crate) const CURRENT: u32 = MIGRATIONS.len() as u32;

/// Brings the file up to `target` (at most `CURRENT`); refuses a file from a newer chartrl.
pub(crate) fn migrate(conn: &mut Connection, target: u32) -> Result<u32, StoreError> {
    // Up to date: no write at all, so read-only commands work on a full disk.
    let seen: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if seen >= target && seen <= CURRENT {
        return Ok(seen);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > CURRENT {
        return Err(StoreError::NewerSchema {
            found,
            supported: CURRENT,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target as usize) {
        let to = i as u32 + 1;
        if to > found {
            tx.execute_batch(sql)
                .map_err(|e| StoreError::Migration { to, source: e })?;
        }
    }
    let version = found.max(target);
    tx.pragma_update(None, "user_version", version)?;
    tx.commit()?;
    Ok(version)
}
