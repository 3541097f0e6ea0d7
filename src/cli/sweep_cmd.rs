//! The command line of sweeps beyond one process: `exec --plan`, one task of a frozen plan
//! (`exec --plan-file F --task N`, what a Slurm array task runs), `chartrl slurm submit`,
//! `chartrl slurm status` and `chartrl runs merge`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::exec_cmd::{parse_sets, print_summary, run_with_console, Silent};
use super::train_cmd::DEFAULT_DB;
use crate::device::DeviceSpec;
use crate::script::{self, Action, ExecOptions, Pass};
use crate::store::Store;
use crate::sweep::{self, PlanFile, PlannedRun, Scheduler, Slurm, SlurmOptions};

/// Prints a plan as a table, or as JSON.
pub fn print_plan(script: &Path, plan: &[PlannedRun], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(plan)?);
        return Ok(());
    }
    let stages = plan.iter().map(|r| r.stage + 1).max().unwrap_or(0);
    println!(
        "plan of {}: {} runs in {stages} stage{}",
        script.display(),
        plan.len(),
        if stages == 1 { "" } else { "s" }
    );
    println!(
        "  {:>3} {:>5}  {:<11} {:<40} {:>6} {:>5}  {:<8} WAITS FOR",
        "#", "STAGE", "MODE", "NAME", "SIZE", "SEED", "STATUS"
    );
    for (i, r) in plan.iter().enumerate() {
        let mut waits: Vec<usize> = r
            .depends_on
            .iter()
            .filter_map(|k| plan.iter().position(|p| p.key == *k))
            .collect();
        waits.sort();
        let waits: Vec<String> = waits.iter().map(|j| format!("#{j}")).collect();
        println!(
            "  {i:>3} {:>5}  {:<11} {:<40} {:>6} {:>5}  {:<8} {}",
            r.stage,
            r.mode,
            r.name,
            r.size,
            r.seed.map_or("-".into(), |s| s.to_string()),
            r.status,
            if waits.is_empty() {
                "-".into()
            } else {
                waits.join(" ")
            }
        );
    }
    Ok(())
}

/// Where a Slurm task stands: its job, array task and restart count.
struct SlurmEnv {
    /// `JOB_TASK` for an array task, else the job id.
    job_task: Option<String>,
    restarts: u32,
}

impl SlurmEnv {
    fn read() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let job_task = match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
            (Some(j), Some(t)) => Some(format!("{j}_{t}")),
            _ => var("SLURM_JOB_ID"),
        };
        let restarts = var("SLURM_RESTART_COUNT")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Self { job_task, restarts }
    }

    /// What the run's record keeps.
    fn record(&self) -> Option<serde_json::Value> {
        let job_task = self.job_task.as_ref()?;
        let (job, task) = job_task.split_once('_').unwrap_or((job_task, ""));
        Some(serde_json::json!({
            "scheduler": "slurm", "job": job, "task": task, "restarts": self.restarts,
        }))
    }
}

/// Runs task `task` of the plan in `file`: brings what it builds on into its own store, then
/// runs the frozen script carrying out only that run (and its evaluations).
pub fn run_task(
    file: &Path,
    task: usize,
    max_requeues: u32,
    log_every: usize,
    device: Option<DeviceSpec>,
) -> anyhow::Result<()> {
    let plan = PlanFile::load(file)?;
    let entry = plan.task(file, task)?.clone();
    let db = sweep::task_store(&plan.db, &entry.key);
    {
        let mut store = Store::open(&db)?;
        sweep::gather_upstream(&plan, task, &entry, &mut store)?;
    }
    let env = SlurmEnv::read();
    let stop = super::signals::stop_flag_with_warning()?;
    let opts = ExecOptions {
        script: plan.frozen_script.clone(),
        sets: plan.sets.clone(),
        dry_run: false,
        db: db.clone(),
        stop: Some(stop.clone()),
        time_limit: std::time::Duration::from_secs(60),
        device,
        pass: Pass::Task {
            key: entry.key.clone(),
            scheduler: env.record(),
        },
        modules: Some(plan.frozen_modules.clone()),
    };
    println!(
        "task {task} of {}: {} ({}), writing {}",
        file.display(),
        entry.name,
        entry.mode,
        db.display()
    );
    match run_with_console(&opts, log_every, &stop) {
        Ok(summary) => {
            if !reached(&plan, &entry, &summary.plan)? {
                return Ok(());
            }
            // The other runs of the plan are other tasks' work.
            let mut summary = summary;
            summary.runs.retain(|r| {
                !matches!(
                    r.action,
                    Action::WouldStart | Action::WouldResume | Action::WouldReuse
                )
            });
            print_summary(&summary, "did", &plan.script)
        }
        Err(e) if super::signals::is_warning(stop.load(std::sync::atomic::Ordering::Relaxed)) => {
            requeue(&env, max_requeues, e)
        }
        Err(e) => Err(e),
    }
}

/// After the warning signal the run has checkpointed: the task puts itself back in the
/// queue (it resumes from the checkpoint), unless it has used up its requeues.
fn requeue(env: &SlurmEnv, max: u32, stopped: anyhow::Error) -> anyhow::Result<()> {
    let Some(job_task) = &env.job_task else {
        return Err(stopped.context("not requeued: not running under Slurm"));
    };
    if env.restarts >= max {
        return Err(stopped.context(format!(
            "not requeued: {} restarts already (--max-requeues {max})",
            env.restarts
        )));
    }
    Slurm.requeue(job_task)?;
    println!(
        "{}\ncheckpointed and requeued {job_task} (restart {} of at most {max}): Slurm starts it again and it resumes from the checkpoint",
        super::one_line(&stopped),
        env.restarts + 1
    );
    Ok(())
}

/// Whether the script asked for the task's run. A script that no longer does either closed
/// a gate (nothing to do) or changed since the plan was frozen (an error).
fn reached(plan: &PlanFile, entry: &PlannedRun, seen: &[PlannedRun]) -> anyhow::Result<bool> {
    if seen.iter().any(|r| r.key == entry.key) {
        return Ok(true);
    }
    if let Some(new) = seen
        .iter()
        .find(|r| !plan.runs.iter().any(|p| p.key == r.key))
    {
        anyhow::bail!(
            "the script now asks for `{}`, which the frozen plan does not have: a configuration, model or data file changed since the submission; submit the sweep again",
            new.name
        );
    }
    println!(
        "the script did not ask for {} this time: a check it waits for did not pass (see `chartrl runs`); nothing to do",
        entry.name
    );
    Ok(false)
}

#[derive(Subcommand, Debug)]
pub enum SlurmCommand {
    /// Submit a script's runs as Slurm job arrays, one per stage, each after the one before
    ///
    /// Example: chartrl slurm submit experiments/nsr_sweep.rhai --set scale=1k --max-parallel 8 --time 8:00:00
    Submit(SubmitArgs),
    /// The runs of a submitted sweep: Slurm's state (squeue) and progress (the stores)
    Status {
        /// The plan (default: the latest submitted beside the store)
        #[arg(long)]
        plan_file: Option<PathBuf>,
        /// The main run store
        #[arg(long, default_value = DEFAULT_DB)]
        db: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The script (.rhai)
    script: PathBuf,
    /// A script parameter, read with param("NAME", default)
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// The main run store
    #[arg(long, default_value = DEFAULT_DB)]
    db: PathBuf,
    /// At most this many tasks of an array at once
    #[arg(long)]
    max_parallel: Option<usize>,
    /// Each task's time limit (Slurm's format, e.g. 8:00:00)
    #[arg(long)]
    time: Option<String>,
    /// The partition
    #[arg(long)]
    partition: Option<String>,
    /// One more #SBATCH option, as given (repeatable): --sbatch-arg=--gres=gpu:1
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    sbatch_arg: Vec<String>,
    /// How often a task may requeue itself on the warning signal
    #[arg(long, default_value_t = 3)]
    max_requeues: u32,
    /// Write the plan and the sbatch scripts and print them; submit nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn slurm(cmd: SlurmCommand) -> anyhow::Result<()> {
    match cmd {
        SlurmCommand::Submit(a) => submit(a),
        SlurmCommand::Status { plan_file, db } => status(plan_file, &db),
    }
}

fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir()?;
    let db = absolute(&cwd, &a.db);
    let opts = ExecOptions {
        script: a.script.clone(),
        sets: parse_sets(&a.set)?,
        dry_run: false,
        db: db.clone(),
        stop: None,
        time_limit: std::time::Duration::from_secs(60),
        device: None,
        pass: Pass::Plan,
        modules: None,
    };
    let summary = script::exec(&opts, Box::new(Silent))?;
    if summary.plan.iter().all(|r| !r.unfinished()) {
        println!(
            "nothing to submit: every run of {} is done",
            a.script.display()
        );
        return Ok(());
    }
    let name = experiment_name(&a.script);
    let dir = sweep::slurm_dir(&db).join(format!("{name}-{}", crate::store::now() as u64));
    let (plan, plan_file) = freeze_plan(&opts, summary.plan, &dir)?;
    let slurm_opts = SlurmOptions {
        max_parallel: a.max_parallel,
        time: a.time,
        partition: a.partition,
        extra: a.sbatch_arg,
        binary: std::env::current_exe()?,
        workdir: cwd,
        max_requeues: a.max_requeues,
    };
    let o = sweep::slurm::submit(&plan, &plan_file, &name, &slurm_opts, &mut Slurm, a.dry_run)?;
    for j in &o.jobs {
        if a.dry_run {
            println!("# {}", j.script.display());
            print!("{}", std::fs::read_to_string(&j.script)?);
            println!();
        } else {
            println!(
                "stage {}: job {} ({} task{})",
                j.stage,
                j.job.as_deref().unwrap_or("-"),
                j.tasks.len(),
                if j.tasks.len() == 1 { "" } else { "s" }
            );
        }
    }
    let jobs: Vec<serde_json::Value> = o
        .jobs
        .iter()
        .map(|j| serde_json::json!({"stage": j.stage, "job": j.job, "tasks": j.tasks}))
        .collect();
    crate::fsx::write(
        &dir.join("jobs.json"),
        serde_json::to_string_pretty(&jobs)?.as_bytes(),
    )?;
    println!(
        "plan: {}\nwatch: chartrl slurm status\nwhen every task has ended: chartrl runs merge, then chartrl exec {} (it reuses every run, evaluates what is left and writes the report)",
        plan_file.display(),
        a.script.display()
    );
    Ok(())
}

/// The experiment a script names: its file stem.
fn experiment_name(script: &Path) -> String {
    script
        .file_stem()
        .map_or("sweep".into(), |s| s.to_string_lossy().into_owned())
}

/// Freezes `runs`, planned from `opts`, into `dir`: the plan file and copies of the script
/// and its modules, which the tasks run whatever happens to the originals.
fn freeze_plan(
    opts: &ExecOptions,
    runs: Vec<PlannedRun>,
    dir: &Path,
) -> anyhow::Result<(PlanFile, PathBuf)> {
    let cwd = std::env::current_dir()?;
    let plan = PlanFile {
        script: absolute(&cwd, &opts.script),
        frozen_script: freeze(&opts.script, &dir.join("script"))?,
        frozen_modules: freeze_modules(&cwd.join("scripts"), &dir.join("scripts"))?,
        sets: opts.sets.clone(),
        db: absolute(&cwd, &opts.db),
        runs,
    };
    let file = dir.join("plan.json");
    plan.save(&file)?;
    Ok((plan, file))
}

fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// Copies the script into `dir` under its own name (the experiment's name).
fn freeze(script: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let text =
        std::fs::read_to_string(script).with_context(|| format!("reading {}", script.display()))?;
    let to = dir.join(script.file_name().context("the script has no file name")?);
    crate::fsx::write(&to, text.as_bytes())?;
    Ok(to)
}

/// Copies the project's `scripts/*.rhai` (what `import` reads) into `to`.
fn freeze_modules(from: &Path, to: &Path) -> anyhow::Result<PathBuf> {
    crate::fsx::create_dir_all(to)?;
    if let Ok(entries) = std::fs::read_dir(from) {
        for e in entries.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "rhai") {
                freeze(&p, to)?;
            }
        }
    }
    Ok(to.to_path_buf())
}

/// The latest plan submitted beside `db`.
fn latest_plan(db: &Path) -> anyhow::Result<PathBuf> {
    let dir = sweep::slurm_dir(db);
    let mut plans: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("no sweep submitted beside {}", db.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("plan.json"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    plans.sort();
    plans
        .pop()
        .map(|(_, p)| p)
        .with_context(|| format!("no plan.json under {}", dir.display()))
}

fn status(plan_file: Option<PathBuf>, db: &Path) -> anyhow::Result<()> {
    let file = match plan_file {
        Some(f) => f,
        None => latest_plan(db)?,
    };
    let plan = PlanFile::load(&file)?;
    let jobs_file = file.with_file_name("jobs.json");
    let jobs: Vec<serde_json::Value> = std::fs::read_to_string(&jobs_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let job_of = |task: usize| {
        jobs.iter().find_map(|j| {
            let has = j["tasks"]
                .as_array()?
                .iter()
                .any(|t| t.as_u64() == Some(task as u64));
            has.then(|| j["job"].as_str().map(str::to_string)).flatten()
        })
    };
    let ids: Vec<String> = jobs
        .iter()
        .filter_map(|j| j["job"].as_str().map(str::to_string))
        .collect();
    let queue = match Slurm.queue(&ids) {
        Ok(q) => q,
        Err(e) => {
            println!("(squeue: {e})");
            Vec::new()
        }
    };
    let main = Store::open_existing(&plan.db).ok();
    println!("sweep {}", file.display());
    println!(
        "  {:>3} {:>5}  {:<40} {:<14} {:<12} STEP",
        "#", "STAGE", "NAME", "SLURM", "STORE"
    );
    for (i, r) in plan.runs.iter().enumerate() {
        let slurm_state = match job_of(i) {
            None => "-".to_string(),
            Some(j) => queue
                .iter()
                .find(|q| q.id == format!("{j}_{i}"))
                .map_or("ended".to_string(), |q| q.state.to_lowercase()),
        };
        let (name, state, step) = progress(&plan, r, main.as_ref());
        println!(
            "  {i:>3} {:>5}  {:<40} {:<14} {:<12} {step}",
            r.stage, name, slurm_state, state
        );
    }
    Ok(())
}

/// A planned run's name (the real one once it has started), status and step, from its
/// task's store, else the main store.
fn progress(plan: &PlanFile, r: &PlannedRun, main: Option<&Store>) -> (String, String, String) {
    let in_task = Store::open_existing(&sweep::task_store(&plan.db, &r.key))
        .ok()
        .and_then(|s| s.run_by_plan_key(&r.key).ok().flatten());
    let in_main = || {
        let id = r.identity.as_ref()?;
        main?.run_by_identity(id).ok().flatten()
    };
    match in_task.or_else(in_main) {
        Some(run) => (
            run.name,
            run.status.as_str().to_string(),
            format!("{}/{}", run.step, run.total_steps),
        ),
        None => (r.name.clone(), r.status.clone(), "-".into()),
    }
}

/// `chartrl runs merge`: folds the finished runs of the per-run stores into the main store.
pub fn merge(db: &Path) -> anyhow::Result<()> {
    let mut store = Store::open(db)?;
    let merged = sweep::merge_all(&mut store)?;
    if merged.is_empty() {
        println!(
            "no per-run stores (task-*.db) in {}",
            sweep::root(db).display()
        );
    }
    let (mut added, mut replaced, mut evals) = (0, 0, 0);
    for (path, o) in &merged {
        println!(
            "{}: {} added, {} replaced, {} already here, {} evaluations added",
            path.display(),
            o.added,
            o.replaced,
            o.present,
            o.evaluations_added
        );
        added += o.added;
        replaced += o.replaced;
        evals += o.evaluations_added;
    }
    println!(
        "merged into {}: {added} runs added, {replaced} replaced, {evals} evaluations added",
        db.display()
    );
    Ok(())
}

/// `chartrl exec SCRIPT --jobs K`: the script's plan run on this machine, K tasks at a time
/// (each a `chartrl exec --plan-file F --task N` process writing its own store, as on
/// Slurm), a run started once everything it waits for has finished; then the stores are
/// merged and the script runs over them (reusing every run) for its evaluations and report.
pub fn run_jobs(opts: &ExecOptions, jobs: usize, log_every: usize) -> anyhow::Result<()> {
    let mut plan_opts = opts.clone();
    plan_opts.pass = Pass::Plan;
    let summary = script::exec(&plan_opts, Box::new(Silent))?;
    let dir = sweep::root(&opts.db).join("local").join(format!(
        "{}-{}",
        experiment_name(&opts.script),
        crate::store::now() as u64
    ));
    let (plan, file) = freeze_plan(&plan_opts, summary.plan, &dir)?;
    let failed = local::run_tasks(&plan, &file, jobs, opts.stop.as_deref())?;
    let mut store = Store::open(&opts.db)?;
    sweep::merge_all(&mut store)?;
    drop(store);
    if let Some(stop) = &opts.stop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) != 0 {
            anyhow::bail!("stopped: the finished runs are merged; run the same command again to resume the others");
        }
    }
    let stop = opts.stop.clone().unwrap_or_default();
    let summary = run_with_console(opts, log_every, &stop)?;
    print_summary(&summary, "did", &opts.script)?;
    if !failed.is_empty() {
        anyhow::bail!(
            "{} task{} failed (logs: {}): {}",
            failed.len(),
            if failed.len() == 1 { "" } else { "s" },
            dir.join("logs").display(),
            failed.join(", ")
        );
    }
    Ok(())
}

mod local {
    //! Running a frozen plan's tasks as child processes, K at a time, in dependency order.

    use std::collections::BTreeSet;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use crate::sweep::PlanFile;

    /// Runs every unfinished task; returns the names of those that failed (and of those
    /// that waited for a failed one).
    pub fn run_tasks(
        plan: &PlanFile,
        file: &Path,
        jobs: usize,
        stop: Option<&AtomicUsize>,
    ) -> anyhow::Result<Vec<String>> {
        let logs = file.with_file_name("logs");
        crate::fsx::create_dir_all(&logs)?;
        // The tasks share this process's threads; results do not depend on the split.
        let threads = (crate::parallel::worker_threads() / jobs.max(1)).max(1);
        let mut finished: BTreeSet<String> = plan
            .runs
            .iter()
            .filter(|r| !r.unfinished())
            .map(|r| r.key.clone())
            .collect();
        let mut failed: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<usize> = (0..plan.runs.len())
            .filter(|&i| plan.runs[i].unfinished())
            .collect();
        let mut running: Vec<(usize, Child)> = Vec::new();
        let stopped = || stop.is_some_and(|s| s.load(Ordering::Relaxed) != 0);
        while !todo.is_empty() || !running.is_empty() {
            // A task whose upstream failed cannot run.
            todo.retain(|&i| {
                let blocked = plan.runs[i].depends_on.iter().any(|d| failed.contains(d));
                if blocked {
                    failed.insert(plan.runs[i].key.clone());
                }
                !blocked
            });
            while running.len() < jobs.max(1) && !stopped() {
                let Some(pos) = todo
                    .iter()
                    .position(|&i| plan.runs[i].depends_on.iter().all(|d| finished.contains(d)))
                else {
                    break;
                };
                let i = todo.remove(pos);
                let log = std::fs::File::create(logs.join(format!("{i}.log")))?;
                let child = Command::new(std::env::current_exe()?)
                    .args(["exec", "--plan-file"])
                    .arg(file)
                    .args(["--task", &i.to_string()])
                    .env("CHARTRL_THREADS", threads.to_string())
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()?;
                running.push((i, child));
            }
            if stopped() && running.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            let mut still = Vec::new();
            for (i, mut child) in running {
                match child.try_wait()? {
                    Some(status) if status.success() => {
                        finished.insert(plan.runs[i].key.clone());
                    }
                    Some(_) => {
                        failed.insert(plan.runs[i].key.clone());
                    }
                    None => still.push((i, child)),
                }
            }
            running = still;
        }
        Ok(plan
            .runs
            .iter()
            .filter(|r| failed.contains(&r.key))
            .map(|r| r.name.clone())
            .collect())
    }
}
