//! `chartrl report` (figures, tables and summaries of stored runs) and `chartrl monitor` (the
//! live summary of one run).

use crate::train::keys;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::train_cmd::DEFAULT_DB;
use crate::report::{self, summarise, summary_text, warnings, RunData};
use crate::store::{Status, Store};

/// Compare runs: PNG figures, summary.txt per run, report.md and a self-contained report.html.
///
/// Example: chartrl report nsr_sweep --out reports/nsr_sweep
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Experiments (all their runs) or runs (name or identity prefix); none: every run
    selectors: Vec<String>,
    /// Output directory (default: reports/FIRST-SELECTOR, or reports/all)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Report title (default: the selectors)
    #[arg(long)]
    title: Option<String>,
    /// The run store
    #[arg(long, default_value = DEFAULT_DB)]
    db: PathBuf,
}

pub fn report(a: ReportArgs) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    // A sweep's per-run stores not merged yet are read too (from a temporary merged copy).
    let view = crate::sweep::StoreView::open(&a.db)?;
    if view.unmerged() {
        println!("reading the finished runs of per-run stores not merged yet as well (`chartrl runs merge` folds them in)");
    }
    let store = &view.store;
    let runs = report::select(store, &a.selectors)?;
    let name = a.selectors.first().cloned().unwrap_or_else(|| "all".into());
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from("reports").join(&name));
    let title = a.title.unwrap_or_else(|| {
        format!(
            "chartrl report: {}",
            if a.selectors.is_empty() {
                "all runs".into()
            } else {
                a.selectors.join(", ")
            }
        )
    });
    let o = report::build(store, &runs, &out, &title)?;
    for (run, w) in &o.warnings {
        println!(
            "warning: {run}: {}: {}\n  fix: {}",
            w.kind, w.message, w.fix
        );
    }
    println!(
        "report of {} runs in {} ({} files, {} warnings) in {:.2}s: open {}",
        o.runs,
        out.display(),
        o.files.len(),
        o.warnings.len(),
        start.elapsed().as_secs_f64(),
        out.join("report.html").display()
    );
    Ok(())
}

/// The live summary of a run: progress, latest metrics, convergence and warnings.
///
/// Example: chartrl monitor nsr-n100-1a2b3c4d --follow
#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// The run (name or identity prefix)
    run: String,
    /// Print the summary again every --every seconds until the run stops running
    #[arg(long, short)]
    follow: bool,
    /// Seconds between summaries with --follow
    #[arg(long, default_value_t = 30)]
    every: u64,
    /// The run store
    #[arg(long, default_value = DEFAULT_DB)]
    db: PathBuf,
}

/// The latest metrics worth a glance, in display order.
const GLANCE: [&str; 10] = [
    keys::REWARD,
    "rewards/accuracy/mean",
    keys::POSITIVE_RATIO,
    keys::NEGATIVE_RATIO,
    keys::LOSS,
    keys::GRAD_NORM,
    keys::LEARNING_RATE,
    "entropy",
    "completion_length/mean",
    keys::CLIPPED_RATIO,
];

pub fn monitor(a: MonitorArgs) -> anyhow::Result<()> {
    loop {
        let store = Store::open_existing(&a.db)?;
        let run = store.find_run(&a.run)?;
        let crashed = store
            .list_runs()?
            .iter()
            .any(|l| l.name == run.name && l.crashed);
        print!("{}", monitor_text(&store, &run, crashed)?);
        if !a.follow || run.status != Status::Running || crashed {
            return Ok(());
        }
        drop(store);
        std::thread::sleep(Duration::from_secs(a.every.max(1)));
        println!();
    }
}

fn monitor_text(store: &Store, run: &crate::store::Run, crashed: bool) -> anyhow::Result<String> {
    use std::fmt::Write;
    let d = RunData::load(store, run)?;
    let s = summarise(&d);
    let w = warnings(&d);
    let mut t = String::new();
    let status = if crashed {
        "running in the store, but its process is gone (the same command resumes it)".to_string()
    } else {
        run.status.as_str().to_string()
    };
    let steps = d.values(keys::STEP_TIME);
    let recent = &steps[steps.len().saturating_sub(20)..];
    let per_step = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
    let left = run.total_steps.saturating_sub(run.step);
    let _ = writeln!(
        t,
        "{} — {} — step {}/{}",
        run.name, status, run.step, run.total_steps
    );
    if !recent.is_empty() {
        let eta = if run.status == Status::Running && left > 0 {
            format!(", ETA {}", report::duration(per_step * left as f64))
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "  {:.2} s/step over the last {} steps{eta}",
            per_step,
            recent.len()
        );
    }
    let latest = store.latest_metrics(run.id)?;
    let _ = writeln!(t, "  latest:");
    for key in GLANCE {
        if let Some(m) = latest.iter().find(|m| m.key == key) {
            let v = m.value.map_or("NaN".into(), |v| format!("{v:.4}"));
            let _ = writeln!(t, "    {key:<24} {v:>12}  (step {})", m.step);
        }
    }
    for e in store.events(run.id)?.iter().rev().take(5).rev() {
        let _ = writeln!(t, "  event at step {}: {} {}", e.step, e.level, e.message);
    }
    t.push_str(&summary_text(&d, &s, &w));
    Ok(t)
}
