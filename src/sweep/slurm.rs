//! Dispatch to Slurm: one job array per stage of a frozen plan, chained with
//! `--dependency=afterok:` so a stage starts only when the one before has succeeded. Each
//! array task `exec`s `chartrl exec --plan-file F --task N` (so `--signal=B:USR1@120` reaches
//! chartrl, which checkpoints and requeues itself), logs to its own file in append mode, and
//! lists only runs that are not done yet. As submitit does, the Slurm commands are called as
//! processes: `sbatch --parsable`, `squeue`, `scontrol requeue`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{PlanFile, SweepError};

/// How to submit.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    /// At most this many tasks of an array at once (`%M`).
    pub max_parallel: Option<usize>,
    /// `--time` of each task (Slurm's format: `4:00:00`, `2-00:00:00`).
    pub time: Option<String>,
    pub partition: Option<String>,
    /// More `#SBATCH` lines, as given (`--gres=gpu:1`).
    pub extra: Vec<String>,
    /// The chartrl binary the tasks run.
    pub binary: PathBuf,
    /// The project directory tasks start in.
    pub workdir: PathBuf,
    /// Requeues a task may do after the warning signal before it gives up.
    pub max_requeues: u32,
}

/// One array of a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct StageJob {
    pub stage: usize,
    /// Plan indices: the array's task ids.
    pub tasks: Vec<usize>,
    pub script: PathBuf,
    /// The job id Slurm gave it (`None` on a dry run).
    pub job: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubmitOutcome {
    pub plan_file: PathBuf,
    pub jobs: Vec<StageJob>,
}

/// A live task's state, from `squeue`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    /// `JOB_TASK` (`1234_5`), or the job id for a pending array's remaining tasks.
    pub id: String,
    pub state: String,
    pub reason: String,
}

/// The commands a sweep needs from a scheduler.
pub trait Scheduler {
    /// Submits an sbatch script after `after` (a job id that must succeed first); returns
    /// the new job's id.
    fn submit(&mut self, script: &Path, after: Option<&str>) -> Result<String, SweepError>;
    /// Puts a running task back in the queue (`scontrol requeue JOB_TASK`).
    fn requeue(&mut self, task: &str) -> Result<(), SweepError>;
    /// The live tasks of these jobs.
    fn queue(&mut self, jobs: &[String]) -> Result<Vec<QueueEntry>, SweepError>;
}

/// Slurm's own commands.
pub struct Slurm;

fn run(cmd: &mut Command) -> Result<String, SweepError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| SweepError::Scheduler {
        command: shown.clone(),
        msg: format!("{e} (is Slurm installed and on PATH?)"),
    })?;
    if !out.status.success() {
        return Err(SweepError::Scheduler {
            command: shown,
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Scheduler for Slurm {
    fn submit(&mut self, script: &Path, after: Option<&str>) -> Result<String, SweepError> {
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable");
        if let Some(job) = after {
            cmd.arg(format!("--dependency=afterok:{job}"))
                .arg("--kill-on-invalid-dep=yes");
        }
        let out = run(cmd.arg(script))?;
        // `--parsable` prints `ID` or `ID;CLUSTER`.
        Ok(out.split(';').next().unwrap_or_default().to_string())
    }

    fn requeue(&mut self, task: &str) -> Result<(), SweepError> {
        run(Command::new("scontrol").arg("requeue").arg(task)).map(|_| ())
    }

    fn queue(&mut self, jobs: &[String]) -> Result<Vec<QueueEntry>, SweepError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let out = run(Command::new("squeue")
            .args(["-h", "-r", "-o", "%i|%T|%r", "-j"])
            .arg(jobs.join(",")))?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut f = l.split('|');
                Some(QueueEntry {
                    id: f.next()?.to_string(),
                    state: f.next()?.to_string(),
                    reason: f.next().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }
}

/// The sbatch script of one stage's array.
pub fn sbatch_text(
    plan_file: &Path,
    name: &str,
    stage: usize,
    tasks: &[usize],
    opts: &SlurmOptions,
    logs: &Path,
) -> String {
    let ids: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
    let mut array = ids.join(",");
    if let Some(m) = opts.max_parallel {
        array.push_str(&format!("%{m}"));
    }
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("#SBATCH --job-name={name}-stage{stage}"),
        format!("#SBATCH --array={array}"),
        format!("#SBATCH --output={}/%A_%a.log", logs.display()),
        "#SBATCH --open-mode=append".to_string(),
        "#SBATCH --signal=B:USR1@120".to_string(),
        "#SBATCH --requeue".to_string(),
        "#SBATCH --ntasks=1".to_string(),
    ];
    if let Some(t) = &opts.time {
        lines.push(format!("#SBATCH --time={t}"));
    }
    if let Some(p) = &opts.partition {
        lines.push(format!("#SBATCH --partition={p}"));
    }
    for a in &opts.extra {
        lines.push(format!("#SBATCH {a}"));
    }
    lines.push(String::new());
    lines.push(format!(
        "# Stage {stage} of the plan {}: one task per run, each writing its own store.",
        plan_file.display()
    ));
    lines.push(
        "# `exec` so the warning signal reaches chartrl, which checkpoints and requeues.".into(),
    );
    lines.push(format!("cd {}", quote(&opts.workdir)));
    lines.push(format!(
        "exec {} exec --plan-file {} --task \"$SLURM_ARRAY_TASK_ID\" --max-requeues {}",
        quote(&opts.binary),
        quote(plan_file),
        opts.max_requeues
    ));
    lines.join("\n") + "\n"
}

/// A path for a shell line, single-quoted when it needs to be.
fn quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Writes one sbatch script per stage that has unfinished runs into `dir` (beside the plan
/// file) and, unless `dry`, submits them in order, each after the one before.
pub fn submit(
    plan: &PlanFile,
    plan_file: &Path,
    name: &str,
    opts: &SlurmOptions,
    scheduler: &mut dyn Scheduler,
    dry: bool,
) -> Result<SubmitOutcome, SweepError> {
    let dir = plan_file.parent().unwrap_or(Path::new("."));
    let logs = dir.join("logs");
    crate::fsx::create_dir_all(&logs).map_err(|e| SweepError::io(&e.path, e.source))?;
    let last_stage = plan.runs.iter().map(|r| r.stage).max().unwrap_or(0);
    let mut jobs: Vec<StageJob> = Vec::new();
    for stage in 0..=last_stage {
        let tasks: Vec<usize> = (0..plan.runs.len())
            .filter(|&i| plan.runs[i].stage == stage && plan.runs[i].unfinished())
            .collect();
        if tasks.is_empty() {
            continue;
        }
        let script = dir.join(format!("stage{stage}.sbatch"));
        let text = sbatch_text(plan_file, name, stage, &tasks, opts, &logs);
        crate::fsx::write(&script, text.as_bytes())
            .map_err(|e| SweepError::io(&e.path, e.source))?;
        let job = if dry {
            None
        } else {
            let after = jobs.last().and_then(|j| j.job.as_deref());
            Some(scheduler.submit(&script, after)?)
        };
        jobs.push(StageJob {
            stage,
            tasks,
            script,
            job,
        });
    }
    Ok(SubmitOutcome {
        plan_file: plan_file.to_path_buf(),
        jobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::{PlannedKind, PlannedRun};

    /// Records what it is asked to submit and answers with job ids 100, 101, ...
    #[derive(Default)]
    struct Fake {
        submitted: Vec<(PathBuf, Option<String>)>,
    }

    impl Scheduler for Fake {
        fn submit(&mut self, script: &Path, after: Option<&str>) -> Result<String, SweepError> {
            self.submitted
                .push((script.to_path_buf(), after.map(str::to_string)));
            Ok((99 + self.submitted.len()).to_string())
        }
        fn requeue(&mut self, _task: &str) -> Result<(), SweepError> {
            Ok(())
        }
        fn queue(&mut self, _jobs: &[String]) -> Result<Vec<QueueEntry>, SweepError> {
            Ok(Vec::new())
        }
    }

    fn planned(key: &str, stage: usize, status: &str) -> PlannedRun {
        PlannedRun {
            key: key.into(),
            name: key.into(),
            provisional: false,
            kind: PlannedKind::Train,
            mode: "nsr".into(),
            size: 100,
            seed: Some(2025),
            stage,
            depends_on: Vec::new(),
            identity: None,
            status: status.into(),
            step: 0,
            total_steps: 4,
        }
    }

    fn options() -> SlurmOptions {
        SlurmOptions {
            max_parallel: Some(4),
            time: Some("4:00:00".into()),
            partition: Some("gpu".into()),
            extra: vec!["--gres=gpu:1".into()],
            binary: "/opt/chartrl/bin/chartrl".into(),
            workdir: "/home/me/my project".into(),
            max_requeues: 3,
        }
    }

    #[test]
    fn the_sbatch_script_matches_the_golden_file() {
        let text = sbatch_text(
            Path::new("/home/me/proj/runs/slurm/nsr_sweep-1/plan.json"),
            "nsr_sweep",
            1,
            &[1, 2, 3, 4],
            &options(),
            Path::new("/home/me/proj/runs/slurm/nsr_sweep-1/logs"),
        );
        assert_eq!(text, include_str!("testdata/stage1.sbatch"));
    }

    #[test]
    fn stages_are_chained_and_done_runs_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let plan = PlanFile {
            script: "s.rhai".into(),
            frozen_script: "f.rhai".into(),
            frozen_modules: "m".into(),
            sets: Default::default(),
            db: "runs/chartrl.db".into(),
            runs: vec![
                planned("warm", 0, "done"),
                planned("a", 1, "new"),
                planned("b", 1, "partial"),
                planned("c", 2, "done"),
                planned("d", 3, "new"),
            ],
        };
        let file = dir.path().join("plan.json");
        let mut fake = Fake::default();
        let o = submit(&plan, &file, "x", &options(), &mut fake, false).unwrap();
        let arrays: Vec<(usize, Vec<usize>, Option<String>)> = o
            .jobs
            .iter()
            .map(|j| (j.stage, j.tasks.clone(), j.job.clone()))
            .collect();
        assert_eq!(
            arrays,
            [
                (1, vec![1, 2], Some("100".into())),
                (3, vec![4], Some("101".into()))
            ]
        );
        let after: Vec<Option<String>> = fake.submitted.iter().map(|s| s.1.clone()).collect();
        assert_eq!(after, [None, Some("100".into())]);
        let stage3 = std::fs::read_to_string(dir.path().join("stage3.sbatch")).unwrap();
        assert!(stage3.contains("#SBATCH --array=4%4\n"), "{stage3}");

        let mut untouched = Fake::default();
        let dry = submit(&plan, &file, "x", &options(), &mut untouched, true).unwrap();
        assert!(untouched.submitted.is_empty());
        assert!(dry.jobs.iter().all(|j| j.job.is_none()));
    }
}
