//! `chartrl runs`: the runs table, one run in detail, and a run's metrics exported as CSV or
//! JSONL.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use super::train_cmd::DEFAULT_DB;
use crate::store::{CheckpointRow, EvaluationRow, EventRow, MetricRow, Run, RunListing, Store};

#[derive(Args, Debug)]
pub struct RunsArgs {
    /// The run store
    #[arg(long, global = true, default_value = DEFAULT_DB)]
    db: PathBuf,
    #[command(subcommand)]
    command: Option<RunsCommand>,
}

#[derive(Subcommand, Debug)]
enum RunsCommand {
    /// A run's configuration, latest metrics, checkpoints, events and last examples
    Show {
        /// Run name (first column of `chartrl runs`) or a prefix of its identity hash
        run: String,
        /// Print everything as one JSON object instead
        #[arg(long)]
        json: bool,
    },
    /// A run's metric history: CSV `step,key,value,time` (one row per metric per step) or
    /// JSONL (one object per step)
    Export {
        /// The run (name or identity prefix)
        run: String,
        /// csv or jsonl
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Write to this file instead of stdout
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fold the finished runs of the per-run stores (runs/task-*.db, written by Slurm tasks)
    /// into the store; merging again changes nothing
    Merge,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    Csv,
    Jsonl,
}

pub fn run(a: RunsArgs) -> anyhow::Result<()> {
    let open = || Store::open_existing(&a.db);
    match a.command {
        None => {
            let view = crate::sweep::StoreView::open(&a.db)?;
            if view.unmerged() {
                println!("(with the finished runs of per-run stores not merged yet: `chartrl runs merge` folds them in)");
            }
            let runs = view.store.list_runs()?;
            if runs.is_empty() {
                println!("no runs in {} yet", a.db.display());
            } else {
                print!("{}", table(&runs, crate::store::now(), 80));
            }
            Ok(())
        }
        Some(RunsCommand::Show { run, json }) => show(&open()?, &run, json),
        Some(RunsCommand::Export { run, format, out }) => {
            let store = open()?;
            let run = store.find_run(&run)?;
            let rows = store.metrics(run.id)?;
            let write = |sink: &mut dyn Write| -> anyhow::Result<()> {
                match format {
                    Format::Csv => write_csv(&rows, sink),
                    Format::Jsonl => write_jsonl(&rows, sink),
                }
            };
            match &out {
                Some(p) => {
                    let mut file = crate::fsx::AtomicFile::create(p)?;
                    write(&mut file).with_context(|| p.display().to_string())?;
                    file.commit()?;
                }
                None => {
                    let mut sink = std::io::BufWriter::new(std::io::stdout().lock());
                    write(&mut sink)?;
                    sink.flush()?;
                }
            }
            Ok(())
        }
        Some(RunsCommand::Merge) => super::sweep_cmd::merge(&a.db),
    }
}

/// The runs table, at most `width` columns wide (the name column gives way first).
fn table(runs: &[RunListing], now: f64, width: usize) -> String {
    let header = ["NAME", "MODE", "STATUS", "STEP", "REWARD", "UPDATED"];
    let rows: Vec<[String; 6]> = runs
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.mode
                    .clone()
                    .unwrap_or_else(|| r.kind.as_str().to_string()),
                if r.crashed {
                    "crashed".to_string()
                } else {
                    r.status.as_str().to_string()
                },
                format!("{}/{}", r.step, r.total_steps),
                r.reward
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "-".into()),
                age(now - r.updated_at),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = (0..6)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let others: usize = widths[1..].iter().sum::<usize>() + 2 * 5;
    widths[0] = widths[0].min(width.saturating_sub(others).max(8));
    let line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let c = clip(c, widths[i]);
            // Numbers right-aligned, text left-aligned.
            if i == 3 || i == 4 {
                s.push_str(&format!("{c:>w$}", w = widths[i]));
            } else {
                s.push_str(&format!("{c:<w$}", w = widths[i]));
            }
            if i < 5 {
                s.push_str("  ");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
    }
    out
}

/// `text` cut to `width` characters, with `…` marking the cut.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// `42s ago`, `5m ago`, `3h ago`, `2d ago`.
fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn show(store: &Store, query: &str, json: bool) -> anyhow::Result<()> {
    let run = store.find_run(query)?;
    let latest = store.latest_metrics(run.id)?;
    let checkpoints = store.checkpoints(run.id)?;
    let events = store.events(run.id)?;
    let evaluations = store.evaluations(run.id)?;
    let samples = store.samples(run.id, run.step.saturating_sub(1))?;
    let last_step = samples.last().map(|s| s.step);
    let last: Vec<_> = samples
        .into_iter()
        .filter(|s| Some(s.step) == last_step)
        .collect();
    let (plan_key, scheduler) = store.placement(run.id)?;
    if json {
        let doc = serde_json::json!({
            "run": run,
            "plan_key": plan_key,
            "scheduler": scheduler,
            "latest_metrics": latest,
            "checkpoints": checkpoints,
            "events": events,
            "examples": last,
            "evaluations": evaluations,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    print_header(&run);
    if let Some(sched) = &scheduler {
        println!(
            "scheduler: {} job {} task {}, {} restart(s)",
            sched["scheduler"].as_str().unwrap_or("?"),
            sched["job"].as_str().unwrap_or("?"),
            sched["task"].as_str().unwrap_or("?"),
            sched["restarts"]
        );
    }
    println!("\nconfiguration:");
    let options = run.config.get("options").unwrap_or(&run.config);
    for line in serde_yaml::to_string(options)?.lines() {
        println!("  {line}");
    }
    println!(
        "\nlatest metrics (step {}):",
        latest.iter().map(|m| m.step).max().unwrap_or(0)
    );
    for m in &latest {
        let v = m.value.map(number).unwrap_or_else(|| "NaN".into());
        println!("  {:<28} {v:>12}", m.key);
    }
    print_checkpoints(&checkpoints);
    print_evaluations(&evaluations);
    print_events(&run, &events);
    for s in &last {
        println!(
            "\n{} completion of step {} (prompt {}, reward {:.3}, advantage {:.3}):\n  {}",
            s.rank,
            s.step,
            s.prompt_id,
            s.reward,
            s.advantage,
            s.completion.replace('\n', "\n  ")
        );
    }
    Ok(())
}

fn print_checkpoints(checkpoints: &[CheckpointRow]) {
    println!("\ncheckpoints (newest first):");
    if checkpoints.is_empty() {
        println!("  none");
    }
    for c in checkpoints {
        println!(
            "  step {:>6}  {:>8.1} MB  sha256 {}…  {}",
            c.step,
            c.size as f64 / 1e6,
            &c.sha256[..12.min(c.sha256.len())],
            c.path
        );
    }
}

fn print_evaluations(evaluations: &[EvaluationRow]) {
    if evaluations.is_empty() {
        return;
    }
    println!("\nevaluations:");
    for e in evaluations {
        match crate::eval::StoredEval::from_json(&e.metrics) {
            Some(s) => println!("  step {:>6}  {}", e.step, s.describe()),
            None => println!("  step {:>6}  {}  {}", e.step, e.name, e.metrics),
        }
    }
}

/// The latest 20 events, oldest first.
fn print_events(run: &Run, events: &[EventRow]) {
    println!("\nevents:");
    if events.is_empty() {
        println!("  none");
    }
    for e in events.iter().rev().take(20).rev() {
        println!("  step {:>6}  {:<8} {}", e.step, e.level, e.message);
    }
    if events.len() > 20 {
        println!(
            "  ({} earlier events: `chartrl runs show {} --json`)",
            events.len() - 20,
            run.name
        );
    }
}

/// A metric value for reading: four decimals, or scientific notation for small magnitudes.
fn number(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

fn print_header(run: &Run) {
    let when = |t: Option<f64>| {
        t.map(|t| age(crate::store::now() - t))
            .unwrap_or_else(|| "-".into())
    };
    println!("run        {}", run.name);
    println!("identity   {}", run.identity);
    if let Some(e) = &run.experiment {
        println!("experiment {e}");
    }
    println!(
        "kind       {}{}",
        run.kind.as_str(),
        run.mode
            .as_ref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    println!("status     {}", run.status.as_str());
    println!("step       {}/{}", run.step, run.total_steps);
    println!(
        "created    {}; started {}; updated {}; finished {}",
        when(Some(run.created_at)),
        when(run.started_at),
        when(Some(run.updated_at)),
        when(run.finished_at)
    );
    if let (Some(host), Some(pid)) = (&run.host, run.pid) {
        println!("owner      pid {pid} on {host}");
    }
    let text = |key: &str| {
        run.config
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    if let Some(p) = text("model_path") {
        let hash = text("model").unwrap_or_default();
        println!("model      {p} (sha256 {}…)", &hash[..12.min(hash.len())]);
    }
    if let Some(d) = text("data") {
        println!(
            "data       {}{d}",
            text("data_path")
                .map(|p| format!("{p}: "))
                .unwrap_or_default()
        );
    }
    if let Some(e) = &run.error {
        println!("error      {e}");
    }
}

fn write_csv(rows: &[MetricRow], out: &mut dyn Write) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["step", "key", "value", "time"])?;
    for r in rows {
        w.write_record([
            r.step.to_string(),
            r.key.clone(),
            r.value.map(|v| v.to_string()).unwrap_or_default(),
            format!("{:.3}", r.time),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// One object per step: `{"step": 0, "time": ..., "loss": ..., ...}`.
fn write_jsonl(rows: &[MetricRow], out: &mut dyn Write) -> anyhow::Result<()> {
    let mut i = 0;
    while i < rows.len() {
        let step = rows[i].step;
        let mut obj = serde_json::Map::new();
        obj.insert("step".into(), step.into());
        let mut time = 0.0f64;
        while i < rows.len() && rows[i].step == step {
            obj.insert(rows[i].key.clone(), serde_json::json!(rows[i].value));
            time = time.max(rows[i].time);
            i += 1;
        }
        obj.insert("time".into(), serde_json::json!(time));
        writeln!(out, "{}", serde_json::Value::Object(obj))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Kind, Status};

    #[test]
    fn the_table_fits_80_columns_with_long_names() {
        let now = 1_000_000.0;
        let runs: Vec<RunListing> = [
            "w-reinforce-n34000-0123abcd-with-a-very-long-suffix",
            "nsr-n100-1a2b3c4d",
        ]
        .iter()
        .map(|name| RunListing {
            name: name.to_string(),
            kind: Kind::Train,
            mode: Some("w-reinforce".into()),
            status: Status::Interrupted,
            step: 12_345,
            total_steps: 17_000,
            reward: Some(-1.25),
            updated_at: now - 4000.0,
            crashed: false,
        })
        .collect();
        let t = table(&runs, now, 80);
        for line in t.lines() {
            assert!(line.chars().count() <= 80, "{line}");
        }
        assert!(
            t.contains("nsr-n100-1a2b3c4d") && t.contains("…") && t.contains("1h ago"),
            "{t}"
        );
    }

    #[test]
    fn jsonl_groups_rows_by_step() {
        let row = |step, key: &str, value| MetricRow {
            step,
            key: key.into(),
            value,
            time: step as f64,
        };
        let rows = vec![
            row(0, "loss", Some(1.0)),
            row(0, "reward", None),
            row(1, "loss", Some(0.5)),
        ];
        let mut out = Vec::new();
        write_jsonl(&rows, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "{\"loss\":1.0,\"reward\":null,\"step\":0,\"time\":0.0}\n{\"loss\":0.5,\"step\":1,\"time\":1.0}\n"
        );
    }
}
