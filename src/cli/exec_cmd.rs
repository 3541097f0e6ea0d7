//! `chartrl exec SCRIPT`: runs a Rhai experiment script, with a progress bar for the sweep
//! above the bar of the current run, and a table of what happened to each run at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::progress::ConsoleObserver;
use super::train_cmd::DEFAULT_DB;
use crate::device::DeviceSpec;
use crate::script::{self, ExecObserver, ExecOptions, RunLine, ScriptError};
use crate::train::{Event, Observer, Phase, StepMetrics};

/// Run an experiment script (Rhai). Finished runs are reused, interrupted ones resumed.
///
/// Example: chartrl exec experiments/poc.rhai --set scale=poc
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The script (.rhai)
    #[arg(required_unless_present = "plan_file")]
    script: Option<PathBuf>,
    /// A script parameter, read with param("NAME", default)
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// List the runs the script would start, resume or reuse; train nothing
    #[arg(long)]
    dry_run: bool,
    /// The run store
    #[arg(long, default_value = DEFAULT_DB)]
    db: PathBuf,
    /// Print each run's step line every N steps
    #[arg(long, default_value_t = 10)]
    log_every: usize,
    /// Stop the script after this many seconds outside training, evaluation and reports
    /// (its own loops and prints)
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    time_limit: u64,
    /// The device of runs that do not name one: cpu, cuda or cuda:N (default: the
    /// CHARTRL_DEVICE variable, else cpu)
    #[arg(long)]
    device: Option<DeviceSpec>,
    /// List every run the script asks for (assuming each passes its checks), with its
    /// stage, the runs it waits for and its status; train nothing
    #[arg(long, conflicts_with = "dry_run")]
    plan: bool,
    /// With --plan: print the plan as JSON
    #[arg(long, requires = "plan")]
    json: bool,
    /// Run one task of a frozen plan (written by `chartrl slurm submit`)
    #[arg(long, requires = "task", value_name = "PLAN.json")]
    plan_file: Option<PathBuf>,
    /// With --plan-file: the plan index of the run to carry out ($SLURM_ARRAY_TASK_ID)
    #[arg(long, requires = "plan_file")]
    task: Option<usize>,
    /// With --plan-file: how often a task may requeue itself on Slurm's warning signal
    #[arg(long, default_value_t = 3)]
    max_requeues: u32,
    /// Train up to K runs at once, each in a process and a store of its own (merged after),
    /// a run starting once every run it waits for has finished (see --plan)
    #[arg(long, value_name = "K", conflicts_with_all = ["dry_run", "plan"])]
    jobs: Option<usize>,
}

/// `--set NAME=VALUE` flags as a map.
pub(super) fn parse_sets(flags: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut sets = BTreeMap::new();
    for kv in flags {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {kv}: expected NAME=VALUE"))?;
        sets.insert(k.to_string(), v.to_string());
    }
    Ok(sets)
}

pub fn run(a: ExecArgs) -> anyhow::Result<()> {
    if let (Some(file), Some(task)) = (&a.plan_file, a.task) {
        return super::sweep_cmd::run_task(file, task, a.max_requeues, a.log_every, a.device);
    }
    let script = a.script.clone().unwrap_or_default();
    let stop = super::signals::stop_flag()?;
    let opts = ExecOptions {
        script: script.clone(),
        sets: parse_sets(&a.set)?,
        dry_run: a.dry_run,
        db: a.db.clone(),
        stop: Some(stop.clone()),
        time_limit: std::time::Duration::from_secs(a.time_limit),
        device: a.device,
        pass: if a.plan {
            script::Pass::Plan
        } else {
            script::Pass::Normal
        },
        modules: None,
    };
    if a.plan {
        let summary = script::exec(&opts, Box::new(Silent))?;
        return super::sweep_cmd::print_plan(&script, &summary.plan, a.json);
    }
    // A device that cannot be had is said before anything runs.
    DeviceSpec::resolve(a.device)?.open()?;
    if let Some(k) = a.jobs.filter(|&k| k > 1) {
        return super::sweep_cmd::run_jobs(&opts, k, a.log_every);
    }
    let summary = run_with_console(&opts, a.log_every, &stop)?;
    let header = if a.dry_run { "would do" } else { "did" };
    print_summary(&summary, header, &script)
}

/// What happened to each run, the unused `--set`s and the time; an error if a run failed.
pub(super) fn print_summary(
    summary: &script::ExecSummary,
    header: &str,
    script: &std::path::Path,
) -> anyhow::Result<()> {
    println!("\n{} runs ({header}):", summary.runs.len());
    println!(
        "  {:<34} {:<12} {:<13} {:>11} {:>8}",
        "RUN", "WHAT", "ACTION", "STEP", "LAST"
    );
    for r in &summary.runs {
        println!(
            "  {:<34} {:<12} {:<13} {:>11} {:>8}",
            clip(&r.name, 34),
            r.what,
            r.action.as_str(),
            if r.total_steps > 0 {
                format!("{}/{}", r.step, r.total_steps)
            } else {
                "-".into()
            },
            r.last
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    for name in &summary.unused_sets {
        println!("warning: --set {name} was given but the script never asks for param(\"{name}\")");
    }
    println!("{} in {:.1}s", script.display(), summary.seconds);
    let failed: Vec<&str> = summary
        .runs
        .iter()
        .filter(|r| r.action == script::Action::Failed)
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "{} run{} failed: {} (`chartrl runs show NAME` for the error)",
            failed.len(),
            if failed.len() == 1 { "" } else { "s" },
            failed.join(", ")
        );
    }
    Ok(())
}

/// Runs the script with the sweep console; a signal's stop becomes [`super::Interrupted`].
pub(super) fn run_with_console(
    opts: &ExecOptions,
    log_every: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> anyhow::Result<script::ExecSummary> {
    let obs = SweepConsole::new(log_every, stop.clone())?;
    match script::exec(opts, Box::new(obs)) {
        Ok(s) => Ok(s),
        Err(ScriptError::Interrupted { location, message }) => {
            let signal = stop.load(std::sync::atomic::Ordering::Relaxed);
            Err(super::Interrupted {
                code: super::signals::exit_code(signal.max(2)),
                message: format!(
                    "{location}: {} stopped the script: {message}",
                    super::signals::name(signal.max(2))
                ),
            }
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The observer of a plan: it trains nothing, so there is nothing to show.
pub(super) struct Silent;

impl Observer for Silent {}

impl ExecObserver for Silent {}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// The console of a script: a sweep bar (runs done of planned) above each run's own bar.
struct SweepConsole {
    sweep: ProgressBar,
    run: ConsoleObserver,
}

impl SweepConsole {
    fn new(
        every: usize,
        stop: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> anyhow::Result<Self> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let sweep = multi.add(ProgressBar::new(0));
        sweep.set_style(
            ProgressStyle::with_template("sweep [{bar:30}] {pos}/{len} runs  ETA {eta}  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let run = ConsoleObserver::in_multi(every, &multi)?.stop_on(stop);
        Ok(Self { sweep, run })
    }
}

impl Observer for SweepConsole {
    fn on_start(&mut self, phase: Phase, start: usize, total: usize) {
        self.run.on_start(phase, start, total);
    }
    fn on_step(&mut self, m: &StepMetrics) {
        self.run.on_step(m);
    }
    fn on_event(&mut self, e: &Event) {
        self.run.on_event(e);
    }
    fn should_stop(&self) -> bool {
        self.run.should_stop()
    }
}

impl ExecObserver for SweepConsole {
    fn on_plan(&mut self, runs: usize) {
        self.sweep.set_length(runs as u64);
    }

    fn on_run(&mut self, name: &str, ended: Option<&RunLine>) {
        match ended {
            None => {
                self.sweep.set_message(name.to_string());
                self.run.line(&format!("── {name}"));
            }
            Some(line) => {
                self.run.finish();
                if matches!(
                    line.action,
                    script::Action::Trained | script::Action::Resumed
                ) {
                    self.sweep.inc(1);
                }
                self.run.line(&format!(
                    "── {name}: {} ({}/{} steps{})",
                    line.action.as_str(),
                    line.step,
                    line.total_steps,
                    line.last
                        .map(|v| format!(", last {v:.3}"))
                        .unwrap_or_default()
                ));
            }
        }
    }

    fn on_log(&mut self, message: &str) {
        self.run.line(message);
    }

    fn on_eval(&mut self, done: usize, total: usize) {
        self.sweep
            .set_message(format!("evaluating: {done}/{total} questions"));
    }
}

impl Drop for SweepConsole {
    fn drop(&mut self) {
        self.sweep.finish_and_clear();
    }
}
