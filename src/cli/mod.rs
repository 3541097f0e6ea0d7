//! The command-line layer: argument parsing (clap), logging setup, progress display and exit
//! codes. The only place that knows clap and indicatif.

mod bench_cmd;
mod data_cmd;
mod eval_cmd;
mod exec_cmd;
mod model_cmd;
mod progress;
mod report_cmd;
mod rewards_cmd;
mod runs_cmd;
mod sample_cmd;
mod signals;
mod sweep_cmd;
mod target;
mod train_cmd;
mod values;

use data_cmd::progress as progress_bar;

use std::path::Path;

use clap::{Parser, Subcommand};

/// Reinforcement learning for language models that reason about charts.
#[derive(Parser, Debug)]
#[command(name = "chartrl", version, about, long_about = None)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an experiment script (Rhai): finished runs are reused, interrupted ones resumed
    ///
    /// Example: chartrl exec experiments/poc.rhai
    Exec(exec_cmd::ExecArgs),
    /// Create, inspect and query models (Hugging Face Qwen2 directories)
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
    /// Generate, inspect and draw chart-QA data
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Score completions with the built-in rewards
    #[command(subcommand)]
    Rewards(rewards_cmd::RewardsCommand),
    /// Fine-tune on gold reasoning traces (supervised warm start)
    ///
    /// Example: chartrl warm-start --model models/tiny --out models/tiny-warm
    WarmStart(train_cmd::WarmStartArgs),
    /// Train with RL: grpo, psr, nsr or w-reinforce
    ///
    /// Options default to configs/trainer.yaml; flags override them. The run is recorded in
    /// the store (--db); the same command again resumes it after a crash or Ctrl-C.
    ///
    /// Example: chartrl train --mode nsr --model models/tiny-warm --subset-size 100
    Train(Box<train_cmd::TrainArgs>),
    /// List runs; `runs show RUN` for one run, `runs export RUN` for its metrics
    ///
    /// Example: chartrl runs; chartrl runs show nsr-n100-1a2b3c4d; chartrl runs export nsr-n100-1a2b3c4d --format csv
    Runs(runs_cmd::RunsArgs),
    /// Sample completions of a prompt (by default a synthetic test question) from a model
    ///
    /// Example: chartrl sample --model models/tiny --index 7 -n 4
    Sample(sample_cmd::SampleArgs),
    /// Evaluate a run or model: n completions per question, accuracy and pass@k (stored)
    ///
    /// Example: chartrl eval --run nsr-n100-1a2b3c4d --n 16 --k 1,2,4,8,16
    Eval(eval_cmd::EvalArgs),
    /// Compare runs: figures, per-run summaries, warnings, report.md and report.html
    ///
    /// Example: chartrl report poc --out reports/poc
    Report(report_cmd::ReportArgs),
    /// The live summary of a run: progress, latest metrics, convergence and warnings
    ///
    /// Example: chartrl monitor nsr-n100-1a2b3c4d --follow
    Monitor(report_cmd::MonitorArgs),
    /// Measure rollout tokens/s and training-step time; prints one JSON object per line
    ///
    /// The workload is one GRPO step: 2 prompts x 4 completions, 200-token prompts, 64 new
    /// tokens; the training step is forward, backward and AdamW over those 8 sequences.
    /// Threads: CHARTRL_THREADS workers (default: all cores), RAYON_NUM_THREADS per kernel
    /// (default 1).
    ///
    /// Example: chartrl bench --preset tiny
    Bench(bench_cmd::BenchArgs),
    /// Run a script's sweep as Slurm job arrays (one per stage), and follow it
    ///
    /// Example: chartrl slurm submit experiments/nsr_sweep.rhai --set scale=1k --max-parallel 8
    #[command(subcommand)]
    Slurm(sweep_cmd::SlurmCommand),
}

/// Parses the command line, runs the command, and returns the process exit code:
/// 0 on success, 1 on a user error (bad input, missing file), 2 on an internal error.
pub fn main() -> i32 {
    single_threaded_kernels();
    quiet_broken_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Exec(args) => exec_cmd::run(args),
        Command::Model(cmd) => model_cmd::run(cmd),
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Rewards(cmd) => rewards_cmd::run(cmd),
        Command::WarmStart(args) => train_cmd::warm(args),
        Command::Train(args) => train_cmd::train(*args),
        Command::Runs(args) => runs_cmd::run(args),
        Command::Sample(args) => sample_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Report(args) => report_cmd::report(args),
        Command::Monitor(args) => report_cmd::monitor(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Slurm(cmd) => sweep_cmd::slurm(cmd),
    };
    match result {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            exit_code(&err)
        }
    }
}

/// The error and its causes on one line, each said once: a message that already quotes its
/// cause (`runs/x: Is a directory`) is not followed by that cause again.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A run stopped by a signal: exits 128 + the signal's number, as shells expect.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Interrupted {
    pub code: i32,
    pub message: String,
}

/// Internal errors (tensor kernels, a broken invariant, the store's SQLite) exit 2; a run
/// stopped by a signal exits 128 + its number; everything else is the user's input and exits 1.
fn exit_code(err: &anyhow::Error) -> i32 {
    if let Some(i) = err.downcast_ref::<Interrupted>() {
        return i.code;
    }
    if err.chain().any(internal) {
        2
    } else {
        1
    }
}

/// Whether an error is chartrl's fault rather than its input's: a tensor kernel failure or
/// an SQLite failure other than opening the file.
fn internal(e: &(dyn std::error::Error + 'static)) -> bool {
    use crate::model::ModelError;
    use crate::runs::RunError;
    use crate::store::StoreError;
    use crate::train::TrainError;
    if e.is::<candle_core::Error>() {
        return true;
    }
    if let Some(sql) = e.downcast_ref::<rusqlite::Error>() {
        return !crate::store::environmental(sql);
    }
    if let Some(m) = e.downcast_ref::<ModelError>() {
        return matches!(m, ModelError::Candle(_));
    }
    if let Some(t) = e.downcast_ref::<TrainError>() {
        return match t {
            TrainError::Candle(_) => true,
            TrainError::Model(m) => internal(m),
            TrainError::Step { source, .. } => internal(source.as_ref()),
            _ => false,
        };
    }
    if let Some(s) = e.downcast_ref::<StoreError>() {
        return match s {
            StoreError::Sql(e) | StoreError::Migration { source: e, .. } => {
                !crate::store::environmental(e)
            }
            _ => false,
        };
    }
    if let Some(r) = e.downcast_ref::<crate::report::ReportError>() {
        use crate::report::ReportError;
        return match r {
            ReportError::Store(s) => internal(s),
            ReportError::Plot { .. } => true,
            _ => false,
        };
    }
    if let Some(s) = e.downcast_ref::<crate::script::ScriptError>() {
        return s.failure().and_then(|f| f.cause()).is_some_and(internal);
    }
    if let Some(r) = e.downcast_ref::<RunError>() {
        return match r {
            RunError::Candle(_) => true,
            RunError::Model(m) => internal(m),
            RunError::Train(t) => internal(t),
            RunError::Store(s) => internal(s),
            RunError::InRun { source, .. } => internal(source.as_ref()),
            _ => false,
        };
    }
    false
}

/// Runs candle's kernels on one thread unless the user set `RAYON_NUM_THREADS`: chartrl
/// parallelises over groups instead (see `parallel`). Called first thing in `main`, before any
/// thread exists, which is what makes setting the variable sound.
fn single_threaded_kernels() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
}

/// Ends the process quietly when stdout's reader goes away (`chartrl runs export RUN | head`)
/// instead of panicking in `println!`: the default SIGPIPE action, as other Unix tools have.
fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A model directory argument that must exist.
fn model_dir(path: &Path) -> anyhow::Result<&Path> {
    if path.is_file() {
        anyhow::bail!(
            "{}: a file, not a model directory (a model is a directory with config.json, model.safetensors and tokenizer.json)",
            path.display()
        );
    }
    if !path.is_dir() {
        anyhow::bail!(
            "{}: no such model directory (create one with `chartrl model init --preset tiny --out {}`)",
            path.display(),
            path.display()
        );
    }
    Ok(path)
}

/// Refuses to write a model into `dir` when something is there already, unless `force`;
/// `how` says how the user may ask for it.
fn refuse_to_overwrite(dir: &Path, force: bool, how: &str) -> anyhow::Result<()> {
    if dir.is_file() {
        anyhow::bail!(
            "{}: a file is in the way of the model directory",
            dir.display()
        );
    }
    let entries: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => return Ok(()),
    };
    if !entries.is_empty() && !force {
        let mut shown = entries;
        shown.sort();
        shown.truncate(4);
        anyhow::bail!(
            "{} is not empty ({}); {how}",
            dir.display(),
            shown.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::TrainError;

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(21);
        let e = anyhow::Error::from(crate::fsx::FileError::new(Path::new("runs/x"), io));
        let once = "runs/x: Is a directory (os error 21)";
        assert_eq!(one_line(&e), once);
        let e = e.context("writing the report");
        assert_eq!(one_line(&e), format!("writing the report: {once}"));
    }

    #[test]
    fn environment_failures_exit_1() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let e = crate::store::StoreError::Sql(full).at(Path::new("runs/chartrl.db"));
        assert!(e.to_string().starts_with("runs/chartrl.db: "), "{e}");
        assert_eq!(exit_code(&anyhow::Error::from(e)), 1);
    }

    #[test]
    fn kernel_failures_exit_2_and_bad_input_exits_1() {
        let kernel = || candle_core::Error::Msg("kernel".into());
        assert_eq!(exit_code(&anyhow::Error::from(kernel())), 2);
        assert_eq!(
            exit_code(&anyhow::Error::from(TrainError::Candle(kernel()))),
            2
        );
        let in_step = TrainError::Step {
            step: 3,
            source: Box::new(TrainError::Candle(kernel())),
        };
        assert_eq!(exit_code(&anyhow::Error::from(in_step)), 2);
        let bad = crate::data::DataError::Invalid {
            path: "x.jsonl".into(),
            line: 2,
            msg: "bad".into(),
        };
        assert_eq!(exit_code(&anyhow::Error::from(bad)), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("unknown split")), 1);

        use crate::runs::RunError;
        use crate::store::StoreError;
        let in_run = RunError::InRun {
            run: "r".into(),
            source: Box::new(RunError::Train(TrainError::Step {
                step: 1,
                source: Box::new(TrainError::Candle(kernel())),
            })),
        };
        assert_eq!(exit_code(&anyhow::Error::from(in_run)), 2);
        let sql = StoreError::Sql(rusqlite::Error::InvalidQuery);
        assert_eq!(exit_code(&anyhow::Error::from(RunError::Store(sql))), 2);
        let busy = StoreError::Busy {
            name: "r".into(),
            host: "h".into(),
            pid: 1,
            age_s: 0.0,
        };
        assert_eq!(exit_code(&anyhow::Error::from(busy)), 1);
        let stopped = Interrupted {
            code: signals::exit_code(2),
            message: "stopped".into(),
        };
        assert_eq!(exit_code(&anyhow::Error::from(stopped)), 130);
    }
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    /// Every option and argument of every command, with the command path, that has no help.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if ["help", "version"].contains(&id) || arg.is_hide_set() {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} --{id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                out.push(format!("{path} {} (the command)", sub.get_name()));
            }
            undocumented(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_of_every_command_has_help_text() {
        let mut missing = Vec::new();
        undocumented(&super::Cli::command(), "chartrl", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
