//! Which runs and series go into each figure, with the caption the documents show.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::data::{display_mode, mode_rank, RunData};
use super::plots::{
    curves_png, message_png, mode_color, panels_png, pass_at_k_png, Curve, Panel, PassCurve,
};
use super::questions::{chance_of, summary_where, Set};
use super::ReportError;
use crate::eval::{EvalSummary, StoredEval};
use crate::train::observe::mean_std;

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
    let sizes: Vec<Option<usize>> = curves_of
        .iter()
        .map(|d| d.size)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let color = |d: &RunData| {
        let rank = sizes.iter().position(|s| *s == d.size).unwrap_or(0);
        mode_color(&d.mode, rank, sizes.len())
    };
    let curves = |runs: &[&RunData], key: &str, suffix: &str| -> Vec<Curve> {
        runs.iter()
            .filter_map(|d| {
                let s = d.series.get(key)?;
                Some(Curve {
                    label: format!("{}{suffix}", d.label),
                    color: color(d),
                    points: s.iter().map(|(x, y)| (*x as f64, *y)).collect(),
                })
            })
            .collect()
    };
    let mut figs = Vec::new();
    let mut line = |file: &str, title: &str, y: &str, key: &str, caption: &str| {
        curves_png(&out.join(file), title, y, &curves(&curves_of, key, ""))?;
        figs.push((file.to_string(), caption.to_string()));
        Ok::<_, ReportError>(())
    };
    line(
        "training_loss.png",
        "Training loss",
        "loss",
        "loss",
        "Training loss per step (bold: exponential moving average; faint: raw). For RL runs this is the clipped surrogate, which on-policy equals minus the mean advantage of the kept tokens: flat by construction for PSR and NSR.",
    )?;
    line(
        "learning_rate.png",
        "Learning rate",
        "learning rate",
        "learning_rate",
        "Learning rate per step.",
    )?;
    line(
        "gradient_norm.png",
        "Gradient norm (before clipping)",
        "global L2 norm",
        "grad_norm",
        "Global gradient norm per step, before clipping to max_grad_norm.",
    )?;
    let rewards = curves(&rl, "reward", "");
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

    let of_mode =
        |m: &str| -> Vec<&RunData> { rl.iter().copied().filter(|d| d.mode == m).collect() };
    let mut wr = curves(&of_mode("w-reinforce"), "positive_ratio", " positive");
    wr.extend(
        curves(&of_mode("w-reinforce"), "negative_ratio", " negative")
            .into_iter()
            .map(|mut c| {
                c.color = super::plots::mode_color("nsr", 0, 1);
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
            curves(&of_mode("psr"), "positive_ratio", ""),
        ),
        ratio(
            "NSR: negative ratio",
            "incorrect / completions",
            curves(&of_mode("nsr"), "negative_ratio", ""),
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
    figs.push((
        "mode_metrics.png".into(),
        "Mode-specific sample ratios per step, and the average reward of every mode.".into(),
    ));

    let path = out.join("pass_at_k.png");
    match eval {
        Some((name, e)) => {
            figs.push(pass_figure(out, data, name, e, headline, "pass_at_k.png")?);
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
        }
        None => {
            message_png(
                &path,
                "pass@k",
                "no sampled evaluation stored: run `chartrl eval --run RUN` first",
            )?;
            figs.push((
                "pass_at_k.png".into(),
                "pass@k: no sampled evaluation is stored for these runs.".into(),
            ));
        }
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
    let mut panels = pass_panels(data, name, set, &|d: &RunData| mode_color(&d.mode, 0, 1));
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
type ModeRuns<'a> = BTreeMap<(usize, String), Vec<&'a RunData>>;

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
            .entry((mode_rank(&d.mode), d.mode.clone()))
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
                        label: format!("{}{seeds}", display_mode(&runs[0].mode)),
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
