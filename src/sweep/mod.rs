//! Sweeps that leave one machine: a script's plan frozen into a file, one array task per run,
//! each writing its own store (SQLite cannot be shared between nodes), merged afterwards.
//! The dispatch goes through a [`Scheduler`]: Slurm's own commands, called as processes the
//! way submitit does, or a fake in tests.

pub mod plan;
pub mod slurm;

use std::path::{Path, PathBuf};

pub use plan::{assign_stages, PlanFile, PlannedKind, PlannedRun};
pub use slurm::{QueueEntry, Scheduler, Slurm, SlurmOptions, SubmitOutcome};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plan file {path}: {msg}")]
    BadPlan { path: PathBuf, msg: String },
    /// A Slurm command failed or could not be run.
    #[error("`{command}`: {msg}")]
    Scheduler { command: String, msg: String },
    #[error("task {task} ({name}) waits for `{upstream}`, which has not finished: {why}")]
    Upstream {
        task: usize,
        name: String,
        upstream: String,
        why: String,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl SweepError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        SweepError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The runs root: the main store's directory, where every run directory lives.
pub fn root(db: &Path) -> PathBuf {
    db.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// The store the task of planned run `key` writes: a file of its own in the runs root,
/// beside the run directories (so checkpoint paths, relative to the root, stay valid when
/// its runs are merged into the main store).
pub fn task_store(db: &Path, key: &str) -> PathBuf {
    root(db).join(format!("task-{}.db", &key[..16.min(key.len())]))
}

/// Where `slurm submit` keeps its plans, sbatch scripts and logs.
pub fn slurm_dir(db: &Path) -> PathBuf {
    root(db).join("slurm")
}

/// The per-run stores beside `db`, by name.
pub fn task_stores(db: &Path) -> Result<Vec<PathBuf>, SweepError> {
    let dir = root(db);
    let mut out: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("task-") && n.ends_with(".db"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(SweepError::io(&dir, e)),
    };
    out.sort();
    Ok(out)
}

/// Brings into the task's store the runs planned run `task` (`me`) builds on: from the main store
/// when they were done before the submission, else from their own task's store.
pub fn gather_upstream(
    plan: &PlanFile,
    task: usize,
    me: &PlannedRun,
    store: &mut crate::store::Store,
) -> Result<(), SweepError> {
    use crate::store::Pick;
    for up in plan.upstream(&me.key) {
        let missing = |why: String| SweepError::Upstream {
            task,
            name: me.name.clone(),
            upstream: up.name.clone(),
            why,
        };
        let (from, pick) = match (&up.identity, up.status.as_str()) {
            (Some(id), "done") => (plan.db.clone(), Pick::Keys(vec![id.clone()])),
            _ => (
                task_store(&plan.db, &up.key),
                Pick::Keys(vec![up.key.clone()]),
            ),
        };
        if !from.is_file() {
            return Err(missing(format!("{} does not exist", from.display())));
        }
        let got = store.merge_from(&from, &pick)?;
        if got.added + got.replaced + got.present == 0 {
            return Err(missing(format!("{} holds it unfinished", from.display())));
        }
    }
    Ok(())
}

/// Folds every finished run of the per-run stores beside `db` into `db`.
pub fn merge_all(
    store: &mut crate::store::Store,
) -> Result<Vec<(PathBuf, crate::store::MergeOutcome)>, SweepError> {
    let mut out = Vec::new();
    for path in task_stores(store.path())? {
        let o = store.merge_from(&path, &crate::store::Pick::Done)?;
        out.push((path, o));
    }
    Ok(out)
}

/// The main store as `chartrl runs` and `chartrl report` see it: with the finished runs of
/// per-run stores not merged yet folded into a temporary copy, so a sweep's results show
/// while it runs. Neither the main store nor the task stores are written; the copy is
/// removed when the view is dropped.
pub struct StoreView {
    pub store: crate::store::Store,
    copy: Option<PathBuf>,
}

impl StoreView {
    /// The store at `db`, or the merged copy when a per-run store holds something it lacks.
    pub fn open(db: &Path) -> Result<Self, SweepError> {
        use crate::store::{Pick, Store};
        let tasks = task_stores(db)?;
        // A sweep submitted before anything ran here has task stores and no main store.
        let mut main = match Store::open_existing(db) {
            Err(crate::store::StoreError::Missing(_)) if !tasks.is_empty() => None,
            other => Some(other?),
        };
        let mut unmerged = Vec::new();
        for t in tasks {
            if main.as_mut().map_or(Ok(true), |m| m.lacks_from(&t))? {
                unmerged.push(t);
            }
        }
        let main = match main {
            Some(m) if unmerged.is_empty() => {
                return Ok(Self {
                    store: m,
                    copy: None,
                })
            }
            other => other,
        };
        let copy = std::env::temp_dir().join(format!(
            "chartrl-view-{}-{}.db",
            std::process::id(),
            crate::store::now().to_bits()
        ));
        if let Some(m) = &main {
            m.copy_to(&copy)?;
        }
        let mut view = Self {
            store: Store::open(&copy)?,
            copy: Some(copy),
        };
        for t in &unmerged {
            view.store.merge_from(t, &Pick::Done)?;
        }
        Ok(view)
    }

    /// Whether the view is a merged copy (else it is the main store itself).
    pub fn unmerged(&self) -> bool {
        self.copy.is_some()
    }
}

impl Drop for StoreView {
    fn drop(&mut self) {
        if let Some(copy) = &self.copy {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", copy.display()));
            }
        }
    }
}
