//! The console observer: the per-step line researchers read, above a progress bar (steps,
//! s/it, ETA) that is hidden when stderr is not a terminal; warnings as they happen; and the
//! stop request of Ctrl-C or SIGTERM, passed to the trainer between steps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::train::{Event, Observer, Phase, StepMetrics};

pub struct ConsoleObserver {
    bar: ProgressBar,
    every: usize,
    /// The signal number that asked to stop (0: none).
    stop: Option<Arc<AtomicUsize>>,
    /// Warnings seen, by kind: the first of each kind is printed, the rest counted.
    warnings: std::collections::BTreeMap<&'static str, usize>,
}

impl ConsoleObserver {
    /// Prints every `every`-th step line.
    pub fn new(every: usize) -> anyhow::Result<Self> {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} steps  {per_sec}  ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Ok(Self {
            bar,
            every: every.max(1),
            stop: None,
            warnings: Default::default(),
        })
    }

    /// Like [`ConsoleObserver::new`], with the bar drawn below the other bars of `multi`.
    pub fn in_multi(every: usize, multi: &indicatif::MultiProgress) -> anyhow::Result<Self> {
        let mut me = Self::new(every)?;
        me.bar = multi.add(me.bar.clone());
        Ok(me)
    }

    /// Stops the run between steps once `flag` holds a signal number.
    pub fn stop_on(mut self, flag: Arc<AtomicUsize>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// A line on stdout, above the bar when one is drawn.
    pub fn line(&self, text: &str) {
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
    }
}

impl Observer for ConsoleObserver {
    fn on_start(&mut self, phase: Phase, start: usize, total: usize) {
        self.bar.reset();
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

    fn should_stop(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed) != 0)
    }
}
