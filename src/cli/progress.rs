//! The console observer: the per-step line researchers read, above a progress bar (steps,
//! s/it, ETA) that is hidden when stderr is not a terminal; warnings as they happen; and every
//! step's metrics appended to a JSONL file.

use std::io::Write;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::train::{Event, Observer, Phase, StepMetrics};

pub struct ConsoleObserver {
    bar: ProgressBar,
    every: usize,
    metrics: Option<std::io::BufWriter<std::fs::File>>,
    /// Warnings seen, by kind: the first of each kind is printed, the rest counted.
    warnings: std::collections::BTreeMap<&'static str, usize>,
}

impl ConsoleObserver {
    /// Prints every `every`-th step line; writes metrics to `metrics_path` when given.
    pub fn new(every: usize, metrics_path: Option<&Path>) -> anyhow::Result<Self> {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} steps  {per_sec}  ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let metrics = match metrics_path {
            Some(p) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                Some(std::io::BufWriter::new(f))
            }
            None => None,
        };
        Ok(Self {
            bar,
            every: every.max(1),
            metrics,
            warnings: Default::default(),
        })
    }

    /// A line on stdout, above the bar when one is drawn.
    fn line(&self, text: &str) {
        if self.bar.is_hidden() {
            println!("{text}");
        } else {
            self.bar.suspend(|| println!("{text}"));
        }
    }

    pub fn finish(&mut self) {
        self.bar.finish_and_clear();
        for (kind, n) in std::mem::take(&mut self.warnings) {
            if n > 1 {
                println!("warning `{kind}` occurred {n} times in all");
            }
        }
        if let Some(m) = &mut self.metrics {
            let _ = m.flush();
        }
    }
}

impl Observer for ConsoleObserver {
    fn on_start(&mut self, phase: Phase, start: usize, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(start as u64);
        self.bar.set_prefix(match phase {
            Phase::WarmStart => "warm start".to_string(),
            Phase::Rl(m) => m.name().to_uppercase(),
        });
    }

    fn on_step(&mut self, m: &StepMetrics) {
        self.bar.set_position(m.step as u64 + 1);
        if m.step.is_multiple_of(self.every) || m.step + 1 == m.total_steps {
            self.line(&m.console_line());
        }
        if let Some(w) = &mut self.metrics {
            let mut obj = serde_json::Map::new();
            obj.insert("step".into(), m.step.into());
            for (k, v) in &m.values {
                obj.insert(k.clone(), serde_json::json!(v));
            }
            // One flushed line per step: a killed run never leaves a torn record.
            let _ = writeln!(w, "{}", serde_json::Value::Object(obj)).and_then(|_| w.flush());
        }
    }

    fn on_event(&mut self, e: &Event) {
        let seen = self.warnings.entry(e.kind).or_default();
        *seen += 1;
        if *seen == 1 {
            self.line(&format!(
                "warning: {} [further `{}` warnings are counted]",
                e.message, e.kind
            ));
        }
    }
}
