//! `chartrl data gen | show | stats | render`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{
    gold_completion, render_chart, write_jsonl, DataSource, Generator, Sample, Split,
};

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Generate a synthetic chart-QA split as chartrl JSONL.
    ///
    /// Sample i depends only on (split, seed, i): a smaller set is a prefix of a larger one.
    ///
    /// Example: chartrl data gen --split train --size 34000 --seed 2025 --out data/train.jsonl
    Gen(GenArgs),
    /// Show one sample: its prompt, gold answer and reasoning.
    ///
    /// Example: chartrl data show data/train.jsonl --index 7
    Show(ShowArgs),
    /// Count samples by question type and chart kind.
    ///
    /// Example: chartrl data stats data/train.jsonl
    Stats(StatsArgs),
    /// Draw one sample's chart to PNG.
    ///
    /// Example: chartrl data render data/train.jsonl --index 7 --out chart.png
    Render(RenderArgs),
}

#[derive(Args, Debug)]
pub struct GenArgs {
    /// train (RL data), test (held-out questions) or warmup (the warm start's data); the
    /// three never share a (chart, question) pair
    #[arg(long, default_value = "train")]
    split: String,
    /// Samples to write (the first N of the split)
    #[arg(long, default_value_t = 1000)]
    size: usize,
    /// The split's seed (2025 is the one every default uses)
    #[arg(long, default_value_t = crate::runs::SYNTHETIC_SEED)]
    seed: u64,
    /// easy (3-4 rows, whole numbers below 100), medium (3-5 rows, below 1,000) or hard
    /// (3-6 rows, up to 3 series, the domain's full range)
    #[arg(long, default_value_t = crate::data::Difficulty::default())]
    difficulty: crate::data::Difficulty,
    /// The JSONL file to write (written whole or not at all)
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A .jsonl (chartrl) or .json (ChartQA) file
    file: PathBuf,
    /// Which sample (0-based)
    #[arg(long, default_value_t = 0)]
    index: usize,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// A .jsonl (chartrl) or .json (ChartQA) file
    file: PathBuf,
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// A .jsonl (chartrl) or .json (ChartQA) file
    file: PathBuf,
    /// Which sample (0-based)
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// The PNG file to write
    #[arg(long)]
    out: PathBuf,
    /// Image width in pixels
    #[arg(long, default_value_t = 900)]
    width: u32,
    /// Image height in pixels
    #[arg(long, default_value_t = 600)]
    height: u32,
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Gen(a) => gen(a),
        DataCommand::Show(a) => show(a),
        DataCommand::Stats(a) => stats(a),
        DataCommand::Render(a) => render(a),
    }
}

fn split(name: &str) -> anyhow::Result<Split> {
    Split::parse(name)
        .ok_or_else(|| anyhow::anyhow!("unknown split `{name}` (use train, test or warmup)"))
}

fn gen(a: GenArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    if a.size == 0 {
        anyhow::bail!("--size 0: a data file needs at least one sample");
    }
    let gen = Generator::with_difficulty(split(&a.split)?, a.seed, a.difficulty);
    let bar = super::progress_bar(a.size as u64, "generating");
    let stop = super::signals::stop_flag()?;
    let written = write_jsonl(&a.out, gen.take(a.size), || {
        bar.inc(1);
        stop.load(std::sync::atomic::Ordering::Relaxed) == 0
    });
    bar.finish_and_clear();
    let signal = stop.load(std::sync::atomic::Ordering::Relaxed);
    if signal != 0 {
        return Err(super::Interrupted {
            code: super::signals::exit_code(signal),
            message: format!(
                "{} stopped `data gen`; {} was left as it was",
                super::signals::name(signal),
                a.out.display()
            ),
        }
        .into());
    }
    let n = written?;
    println!(
        "wrote {n} {} samples (seed {}) to {} in {:.2}s",
        a.split,
        a.seed,
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn load(file: &std::path::Path) -> anyhow::Result<Vec<Sample>> {
    Ok(DataSource::from_path(file)?.load()?)
}

fn pick(samples: &[Sample], index: usize, file: &std::path::Path) -> anyhow::Result<Sample> {
    samples.get(index).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: index {index} out of range ({} samples)",
            file.display(),
            samples.len()
        )
    })
}

fn show(a: ShowArgs) -> anyhow::Result<()> {
    let samples = load(&a.file)?;
    let s = pick(&samples, a.index, &a.file)?;
    let prompt = crate::workspace::Workspace::current()
        .prompt_template()?
        .render(&s);
    println!(
        "id: {}\ntype: {} ({} chart)\n",
        s.id,
        s.question_type,
        s.chart.kind.name()
    );
    println!("--- prompt ---\n{prompt}");
    println!("--- gold completion ---\n{}\n", gold_completion(&s));
    println!("answer: {}", s.answer);
    Ok(())
}

fn stats(a: StatsArgs) -> anyhow::Result<()> {
    let samples = load(&a.file)?;
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &samples {
        *by_type.entry(&s.question_type).or_default() += 1;
        *by_kind.entry(s.chart.kind.name()).or_default() += 1;
    }
    println!("{}: {} samples\n", a.file.display(), samples.len());
    let table = |title: &str, m: &BTreeMap<&str, usize>| {
        println!("{title:<16} {:>7} {:>7}", "count", "share");
        for (k, v) in m {
            println!(
                "{k:<16} {v:>7} {:>6.1}%",
                100.0 * *v as f64 / samples.len() as f64
            );
        }
        println!();
    };
    table("question type", &by_type);
    table("chart kind", &by_kind);
    Ok(())
}

fn render(a: RenderArgs) -> anyhow::Result<()> {
    let samples = load(&a.file)?;
    let s = pick(&samples, a.index, &a.file)?;
    render_chart(&s.chart, &a.out, a.width, a.height)
        .with_context(|| format!("rendering sample {} of {}", a.index, a.file.display()))?;
    println!(
        "wrote {} ({} chart: {})",
        a.out.display(),
        s.chart.kind.name(),
        s.chart.title
    );
    Ok(())
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress(len: u64, msg: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(msg);
    bar
}
