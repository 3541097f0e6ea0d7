//! `summary.txt`: a run's training summary in the words of the original project's
//! `monitor_training.py`, with its evaluations and warnings.

use crate::train::keys;
use std::fmt::Write;

use super::analysis::{Convergence, Summary, Warning, CONVERGED_BELOW};
use super::data::RunData;

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// Seconds as `42 s`, `12.5 min` or `3.20 h`.
pub fn duration(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.2} h", s / 3600.0)
    }
}

/// The whole `summary.txt` of one run.
pub fn summary_text(d: &RunData, s: &Summary, warnings: &[Warning]) -> String {
    let mut t = String::new();
    if d.run.kind == crate::store::Kind::Eval {
        let _ = writeln!(
            t,
            "MODEL EVALUATIONS: {} ({})",
            d.run.name,
            d.config.model_path.as_deref().unwrap_or("-")
        );
        for (_, _, e) in &d.evals {
            let _ = writeln!(t, "  {}", e.describe());
        }
        return t;
    }
    header(&mut t, d, s);
    loss(&mut t, d, s);
    progress(&mut t, d, s);
    for (step, _, e) in &d.evals {
        let _ = writeln!(t, "  Evaluation at step {step}: {}", e.describe());
    }
    if warnings.is_empty() {
        let _ = writeln!(t, "  Warnings: none");
    } else {
        let _ = writeln!(t, "  Warnings:");
        for w in warnings {
            let _ = writeln!(t, "    ⚠ {}: {}\n      fix: {}", w.kind, w.message, w.fix);
        }
    }
    t
}

/// The run's name, status, steps, rewards and update accounting.
fn header(t: &mut String, d: &RunData, s: &Summary) {
    let r = &d.run;
    let _ = writeln!(t, "TRAINING SUMMARY: {} ({})", r.name, d.label);
    let _ = writeln!(
        t,
        "  Status: {} | kind {} | seed {}",
        r.status.as_str(),
        r.kind.as_str(),
        d.seed.map_or("-".into(), |s| s.to_string())
    );
    let _ = writeln!(t, "  Total steps: {} of {}", s.steps, r.total_steps);
    if let Some(rewards) = &d.rewards {
        let _ = writeln!(t, "  Rewards: {rewards}");
    }
    if let Some((applied, steps)) = d.updates() {
        let _ = writeln!(
            t,
            "  Updates: {applied} of {steps} steps applied ({} skipped with nothing to learn from) | kept samples: {}",
            steps - applied,
            d.kept_total().map_or("-".into(), |k| format!("{k:.0}"))
        );
    }
}

/// The final loss (or where it diverged) and how far it fell.
fn loss(t: &mut String, d: &RunData, s: &Summary) {
    let diverged_at = d
        .non_finite
        .get(keys::LOSS)
        .copied()
        .or(d.diverged.as_ref().map(|(step, _)| *step));
    let _ = match diverged_at {
        Some(step) => writeln!(
            t,
            "  Final loss: not finite (training diverged at step {step}; the last finite loss was {})",
            num(s.final_loss, 4)
        ),
        None => writeln!(t, "  Final loss: {}", num(s.final_loss, 4)),
    };
    let _ = match s.loss_reduction_pct() {
        Some(p) => {
            let p = if p.abs() < 0.05 { 0.0 } else { p };
            writeln!(
                t,
                "  Loss reduction: {p:.1}% ({} → {}, means of the first and last {} steps)",
                num(s.loss_first, 4),
                num(s.loss_last, 4),
                s.window
            )
        }
        None => writeln!(t, "  Loss reduction: - (too few steps)"),
    };
    if d.is_rl() {
        let _ = writeln!(
            t,
            "    (RL loss is the clipped surrogate: on-policy it equals minus the mean advantage, so it does not measure progress; see the reward)"
        );
    }
}

/// The final learning rate, the training time, the reward's gain and the verdict.
fn progress(t: &mut String, d: &RunData, s: &Summary) {
    let _ = writeln!(
        t,
        "  Final LR: {}",
        s.final_lr.map_or("-".into(), |v| format!("{v:.3e}"))
    );
    let _ = writeln!(
        t,
        "  Training time: {} (sum of step times)",
        duration(s.seconds)
    );
    if d.is_rl() {
        let _ = writeln!(
            t,
            "  Reward: {} → {} (gain {}, means of the first and last {} steps)",
            num(s.reward_first, 3),
            num(s.reward_last, 3),
            s.reward_gain().map_or("-".into(), |g| format!("{g:+.3}")),
            s.window
        );
    }
    let _ = writeln!(t, "  {}", verdict(&s.convergence, s.window));
}

/// `✓ Converged (...)` with the rule that decided it.
pub fn verdict(c: &Convergence, window: usize) -> String {
    match c {
        Convergence::Converged { signal, rel_std } => format!(
            "✓ Converged ({signal} std/|mean| over the last {window} steps = {rel_std:.4} < {CONVERGED_BELOW})"
        ),
        Convergence::NotConverged { signal, rel_std } => format!(
            "✗ Not converged ({signal} std/|mean| over the last {window} steps = {rel_std:.4}, not below {CONVERGED_BELOW})"
        ),
        Convergence::TooShort { steps } => format!(
            "? Convergence not judged: {steps} steps, fewer than two windows of {window}"
        ),
    }
}
