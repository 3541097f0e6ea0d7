//! Which runs and series go into each figure, with the caption the documents show.

use crate::train::keys;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::data::{mode_label, mode_rank, RunData};
use super::plots::{
    curves_png, message_png, mode_color, panels_png, pass_at_k_png, Curve, Panel, PassCurve,
};
use super::questions::{chance_of, summary_where, Set};
use super::ReportError;
use crate::eval::{EvalSummary, StoredEval};
use crate::train::observe::mean_std;
use crate::train::Mode;

/// Draws every figure into `out`; returns `(file name, caption)` in document order.
pub fn draw_all(
    out: &Path,
    data: &[RunData],
    eval: Option<&(String, StoredEval)>,
    headline: Set,
) -> Result<Vec<(String, String)>, ReportError> {
    let rl: Vec<&RunData> = data.iter().filter(|d| d.is_rl()).collect();
    // Step curves compare the RL runs; a selection without any shows its warm starts.
    let curves_of: Vec<&RunData> = if rl.is_empty() {
        data.iter().filter(|d| !d.series.is_empty()).collect()
    } else {
        rl.clone()
    };
    let palette = Palette::of(&curves_of);
    let mut figs = step_figures(out, &palette, &curves_of)?;
    let rewards = palette.curves(&rl, keys::REWARD, "");
    curves_png(
        &out.join("rewards.png"),
        "Average reward",
        "mean reward of the step's completions",
        &rewards,
    )?;
    figs.push((
        "rewards.png".into(),
        "Mean total reward of each step's completions (bold: smoothed; faint: raw).".into(),
    ));
    figs.push(mode_figure(out, &palette, &rl, rewards)?);
    figs.extend(pass_figures(out, data, eval, headline)?);
    Ok(figs)
}

/// The colour of each run's curves: its mode's, shaded by its training-set size.
struct Palette {
    sizes: Vec<Option<usize>>,
}

impl Palette {
    fn of(runs: &[&RunData]) -> Self {
        let sizes = runs.iter().map(|d| d.size).collect::<BTreeSet<_>>();
        Self {
            sizes: sizes.into_iter().collect(),
        }
    }

    fn color(&self, d: &RunData) -> plotters::style::RGBColor {
        let rank = self.sizes.iter().position(|s| *s == d.size).unwrap_or(0);
        mode_color(&d.mode, rank, self.sizes.len())
    }

    /// The step series `key` of each of `runs` that has it, labelled with `suffix`.
    fn curves(&self, runs: &[&RunData], key: &str, suffix: &str) -> Vec<Curve> {
        runs.iter()
            .filter_map(|d| {
                let s = d.series.get(key)?;
                Some(Curve {
                    label: format!("{}{suffix}", d.label),
                    color: self.color(d),
                    points: s.iter().map(|(x, y)| (*x as f64, *y)).collect(),
                })
            })
            .collect()
    }
}

/// Loss, learning rate and gradient norm per step.
fn step_figures(
    out: &Path,
    palette: &Palette,
    runs: &[&RunData],
) -> Result<Vec<(String, String)>, ReportError> {
    let figures = [
        (
            "training_loss.png",
            "Training loss",
            "loss",
            keys::LOSS,
            "Training loss per step (bold: exponential moving average; faint: raw). For RL runs this is the clipped surrogate, which on-policy equals minus the mean advantage of the kept tokens: flat by construction for PSR and NSR.",
        ),
        (
            "learning_rate.png",
            "Learning rate",
            "learning rate",
            keys::LEARNING_RATE,
            "Learning rate per step.",
        ),
        (
            "gradient_norm.png",
            "Gradient norm (before clipping)",
            "global L2 norm",
            keys::GRAD_NORM,
            "Global gradient norm per step, before clipping to max_grad_norm.",
        ),
    ];
    let mut figs = Vec::new();
    for (file, title, y, key, caption) in figures {
        curves_png(&out.join(file), title, y, &palette.curves(runs, key, ""))?;
        figs.push((file.to_string(), caption.to_string()));
    }
    Ok(figs)
}

/// The sample ratios each mode trains on, beside the average reward of every mode.
fn mode_figure(
    out: &Path,
    palette: &Palette,
    rl: &[&RunData],
    rewards: Vec<Curve>,
) -> Result<(String, String), ReportError> {
    let of_mode =
        |m: Mode| -> Vec<&RunData> { rl.iter().copied().filter(|d| d.mode == m.name()).collect() };
    let mut wr = palette.curves(
        &of_mode(Mode::WReinforce),
        keys::POSITIVE_RATIO,
        " positive",
    );
    wr.extend(
        palette
            .curves(
                &of_mode(Mode::WReinforce),
                keys::NEGATIVE_RATIO,
                " negative",
            )
            .into_iter()
            .map(|mut c| {
                c.color = mode_color(Mode::Nsr.name(), 0, 1);
                c
            }),
    );
    let ratio = |title: &str, y: &str, curves: Vec<Curve>| Panel {
        title: title.into(),
        y_label: y.into(),
        curves,
        y_range: Some(-0.02..1.02),
    };
    let panels = vec![
        ratio(
            "PSR: positive ratio",
            "correct / completions",
            palette.curves(&of_mode(Mode::Psr), keys::POSITIVE_RATIO, ""),
        ),
        ratio(
            "NSR: negative ratio",
            "incorrect / completions",
            palette.curves(&of_mode(Mode::Nsr), keys::NEGATIVE_RATIO, ""),
        ),
        ratio(
            "W-REINFORCE: positive / negative ratio",
            "share of completions",
            wr,
        ),
        Panel {
            title: "Average reward by mode".into(),
            y_label: "mean reward".into(),
            curves: rewards,
            y_range: None,
        },
    ];
    panels_png(&out.join("mode_metrics.png"), &panels)?;
    Ok((
        "mode_metrics.png".into(),
        "Mode-specific sample ratios per step, and the average reward of every mode.".into(),
    ))
}

/// The pass@k figure of the headline questions, and of the guessable ones beside open ones;
/// a note in the figure's place when no evaluation is stored.
fn pass_figures(
    out: &Path,
    data: &[RunData],
    eval: Option<&(String, StoredEval)>,
    headline: Set,
) -> Result<Vec<(String, String)>, ReportError> {
    let Some((name, e)) = eval else {
        message_png(
            &out.join("pass_at_k.png"),
            "pass@k",
            "no sampled evaluation stored: run `chartrl eval --run RUN` first",
        )?;
        return Ok(vec![(
            "pass_at_k.png".into(),
            "pass@k: no sampled evaluation is stored for these runs.".into(),
        )]);
    };
    let mut figs = vec![pass_figure(out, data, name, e, headline, "pass_at_k.png")?];
    let guessable = data
        .iter()
        .filter_map(|d| d.questions(name))
        .any(|qs| qs.iter().any(|q| Set::Guessable.contains(q)));
    if headline == Set::Open && guessable {
        figs.push(pass_figure(
            out,
            data,
            name,
            e,
            Set::Guessable,
            "pass_at_k_guessable.png",
        )?);
    }
    Ok(figs)
}

/// The pass@k figure of the questions of `set`, with a guesser's curve where the chance
/// levels are known; returns `(file, caption)`.
fn pass_figure(
    out: &Path,
    data: &[RunData],
    name: &str,
    e: &StoredEval,
    set: Set,
    file: &str,
) -> Result<(String, String), ReportError> {
    let variants: std::collections::BTreeSet<Option<&str>> =
        data.iter().map(|d| d.variant.as_deref()).collect();
    let shade = |d: &RunData| {
        let rank = variants.iter().position(|v| *v == d.variant.as_deref());
        mode_color(&d.mode, rank.unwrap_or(0), variants.len())
    };
    let mut panels = pass_panels(data, name, set, &shade);
    let chance = chance_curve(data, name, set, e.summary.n);
    let questions = data
        .iter()
        .find_map(|d| d.questions(name))
        .map_or(0, |qs| qs.iter().filter(|q| set.contains(q)).count());
    if let Some(c) = &chance {
        for (_, curves) in &mut panels {
            curves.push(c.clone());
        }
    }
    let x = format!("k (log2 scale; n = {} samples per question)", e.summary.n);
    pass_at_k_png(&out.join(file), &panels, &x)?;
    let guesser = if chance.is_some() {
        " Grey: a guesser that picks uniformly among the answers each question allows."
    } else {
        ""
    };
    Ok((
        file.to_string(),
        format!(
            "pass@k against k on the {} ({questions} of {} questions), one line per mode (mean over seeds, bars: ± std), one panel per training-set size; unbiased estimator (Chen et al. 2021), n = {}.{guesser}",
            set.label(),
            e.summary.questions,
            e.summary.n
        ),
    ))
}

/// A guesser's pass@k on the questions of `set`, when every chance level is known.
fn chance_curve(data: &[RunData], name: &str, set: Set, n: usize) -> Option<PassCurve> {
    let qs: Vec<&crate::eval::QuestionResult> = data
        .iter()
        .find_map(|d| d.questions(name))?
        .iter()
        .filter(|q| set.contains(q))
        .collect();
    let points = EvalSummary::default_ks(n)
        .into_iter()
        .map(|k| chance_of(&qs, k).map(|(_, p)| (k, p, 0.0)))
        .collect::<Option<Vec<_>>>()?;
    Some(PassCurve {
        label: "chance".into(),
        color: plotters::style::RGBColor(150, 150, 150),
        points,
    })
}

/// Runs of one training-set size by (mode rank, mode).
type ModeRuns<'a> = BTreeMap<(usize, String, Option<String>), Vec<&'a RunData>>;

/// Per training-set size, one curve per mode (mean and std over seeds) plus the models the
/// RL runs started from, on the questions of `set`.
fn pass_panels(
    data: &[RunData],
    name: &str,
    set: Set,
    color: &dyn Fn(&RunData) -> plotters::style::RGBColor,
) -> Vec<(String, Vec<PassCurve>)> {
    let on = |d: &RunData| summary_where(d.questions(name)?, |q| set.contains(q));
    let mut by_size: BTreeMap<Option<usize>, ModeRuns> = BTreeMap::new();
    for d in data.iter().filter(|d| d.is_rl() && on(d).is_some()) {
        by_size
            .entry(d.size)
            .or_default()
            .entry((mode_rank(&d.mode), d.mode.clone(), d.variant.clone()))
            .or_default()
            .push(d);
    }
    let baselines: Vec<PassCurve> = data
        .iter()
        .filter(|d| !d.is_rl())
        .filter_map(|d| {
            let e = on(d)?;
            Some(PassCurve {
                label: format!("{} (before RL)", d.label),
                color: super::plots::mode_color("warm-start", 0, 1),
                points: EvalSummary::default_ks(e.pass_at_k.len())
                    .into_iter()
                    .map(|k| (k, e.pass_at_k[k - 1], 0.0))
                    .collect(),
            })
        })
        .collect();
    let mut panels: Vec<(String, Vec<PassCurve>)> = by_size
        .into_iter()
        .map(|(size, modes)| {
            let mut curves: Vec<PassCurve> = modes
                .into_values()
                .map(|runs| {
                    let evals: Vec<EvalSummary> = runs.iter().filter_map(|d| on(d)).collect();
                    let n = evals.iter().map(|e| e.pass_at_k.len()).min().unwrap_or(0);
                    let points = EvalSummary::default_ks(n)
                        .into_iter()
                        .map(|k| {
                            let at_k: Vec<f64> = evals.iter().map(|e| e.pass_at_k[k - 1]).collect();
                            let (m, s) = mean_std(&at_k);
                            (k, m, s)
                        })
                        .collect();
                    let seeds = if runs.len() > 1 {
                        format!(" ({} seeds)", runs.len())
                    } else {
                        String::new()
                    };
                    PassCurve {
                        label: format!(
                            "{}{seeds}",
                            mode_label(&runs[0].mode, runs[0].variant.as_deref())
                        ),
                        color: color(runs[0]),
                        points,
                    }
                })
                .collect();
            curves.extend(baselines.iter().cloned());
            let title = size.map_or("pass@k".into(), |s| format!("{s} training samples"));
            (title, curves)
        })
        .collect();
    if panels.is_empty() {
        panels.push(("models before RL".into(), baselines));
    }
    panels
}
