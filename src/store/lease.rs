//! Who is training a run. A process claims a run by writing its host, pid (with the pid's
//! start time, so a recycled pid is not mistaken for the owner) and a random lease token;
//! a heartbeat thread refreshes the claim. A claim is stale when its process is gone (same
//! host) or its heartbeat is older than the stale limit (any host), and a stale run may be
//! claimed by the next process, which resumes it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior};

use super::{now, Run, Status, Store, StoreError};

/// This process, as a claimant.
#[derive(Debug, Clone)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    pub pid_start: Option<u64>,
    pub token: String,
}

impl Owner {
    pub fn current() -> Self {
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Self {
            host: hostname(),
            pid,
            pid_start: process_start(pid),
            token: format!("{pid:x}-{nanos:x}"),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The start time (clock ticks since boot) of a Linux process; `None` when unknown.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3; starttime is 22.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// How old another host's heartbeat must be before its claim counts as stale.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// Whether a run's recorded owner still holds it: its process runs (same host), or else its
/// heartbeat is younger than `stale_after`.
pub(crate) fn holder_alive(
    host: &str,
    pid: i64,
    pid_start: Option<i64>,
    heartbeat: Option<f64>,
    me: &Owner,
    stale_after: Duration,
) -> bool {
    owner_alive(host, pid, pid_start.map(|s| s as u64), me)
        .unwrap_or(now() - heartbeat.unwrap_or(0.0) < stale_after.as_secs_f64())
}

/// Whether the process recorded as a run's owner still runs. `None`: cannot tell from here.
fn owner_alive(host: &str, pid: i64, pid_start: Option<u64>, me: &Owner) -> Option<bool> {
    if host != me.host || !std::path::Path::new("/proc/self/stat").exists() {
        return None;
    }
    let Ok(pid) = u32::try_from(pid) else {
        return Some(false);
    };
    Some(match (process_start(pid), pid_start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    })
}

impl Store {
    /// Marks `run` as running under `me`, unless a live process holds it. `stale_after` is how
    /// old another host's heartbeat must be before its claim is ignored; `force` ignores any
    /// claim.
    pub fn claim(
        &mut self,
        run: &Run,
        me: &Owner,
        stale_after: Duration,
        force: bool,
    ) -> Result<Run, StoreError> {
        let path = self.path.clone();
        (|| -> Result<Run, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        type Holder = (
            String,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<f64>,
        );
        let (status, host, pid, pid_start, heartbeat): Holder = tx.query_row(
            "SELECT status, host, pid, pid_start, heartbeat_at FROM runs WHERE id = ?1",
            [run.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?;
        if status == Status::Running.as_str() && !force {
            if let (Some(host), Some(pid)) = (host, pid) {
                let age = now() - heartbeat.unwrap_or(0.0);
                if holder_alive(&host, pid, pid_start, heartbeat, me, stale_after) {
                    return Err(StoreError::Busy {
                        name: run.name.clone(),
                        host,
                        pid,
                        age_s: age,
                    });
                }
            }
        }
        let t = now();
        tx.execute(
            "UPDATE runs SET status = 'running', host = ?2, pid = ?3, pid_start = ?4, lease = ?5,
                             heartbeat_at = ?6, updated_at = ?6, started_at = COALESCE(started_at, ?6),
                             finished_at = NULL, error = NULL
             WHERE id = ?1",
            rusqlite::params![
                run.id,
                me.host,
                me.pid as i64,
                me.pid_start.map(|s| s as i64),
                me.token,
                t
            ],
        )?;
        tx.commit()?;
        self.run_by_id(run.id)
    })()
        .map_err(|e| e.at(&path))
    }

    /// Ends `me`'s claim on `run` with a final status (and the error text for `failed`).
    pub fn release(
        &mut self,
        run: &Run,
        me: &Owner,
        status: Status,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        (|| -> Result<(), StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let t = now();
            let finished = (status == Status::Done).then_some(t);
            let n = tx.execute(
                "UPDATE runs SET status = ?3, error = ?4, updated_at = ?5, finished_at = ?6,
                             lease = NULL, pid = NULL, pid_start = NULL
             WHERE id = ?1 AND lease = ?2",
                rusqlite::params![run.id, me.token, status.as_str(), error, t, finished],
            )?;
            tx.commit()?;
            if n == 0 {
                return Err(StoreError::LeaseLost(run.name.clone()));
            }
            Ok(())
        })()
        .map_err(|e| e.at(&path))
    }

    /// Refreshes `me`'s heartbeat; `false` when the claim is no longer `me`'s.
    pub fn heartbeat(&mut self, run_id: i64, token: &str) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE runs SET heartbeat_at = ?3 WHERE id = ?1 AND lease = ?2",
            rusqlite::params![run_id, token, now()],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    /// The token of the claim currently on `run_id`.
    pub fn lease_of(&self, run_id: i64) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT lease FROM runs WHERE id = ?1", [run_id], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
            .flatten())
    }
}

/// A background thread that refreshes a claim's heartbeat on its own connection, so a slow
/// step (a big model on CPU) never looks like a dead process. Stops when dropped.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(db: PathBuf, run_id: i64, token: String, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let Ok(mut store) = Store::open(&db) else {
                return;
            };
            let tick = Duration::from_millis(100);
            let mut waited = Duration::ZERO;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                waited += tick;
                if waited >= every {
                    waited = Duration::ZERO;
                    if !matches!(store.heartbeat(run_id, &token), Ok(true)) {
                        return;
                    }
                }
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
