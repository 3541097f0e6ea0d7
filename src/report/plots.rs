//! The report's figures, drawn with plotters: step curves (a smoothed line over the faint raw
//! one, legend beside the plot so it never hides a curve), the four mode panels, and pass@k
//! against k on a log2 axis, one panel per training-set size.

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::analysis::{smooth, smoothing_weight};
use super::ReportError;
use crate::plot::{color, ensure_fonts};
use crate::store::Kind;
use crate::train::Mode;

pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 700;
const LEGEND_WIDTH: u32 = 300;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// One line of a figure.
#[derive(Debug, Clone)]
pub struct Curve {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// The colour of a mode (Okabe & Ito), lightened for smaller training sets so the largest
/// size of each mode is the strongest line.
pub fn mode_color(mode: &str, size_rank: usize, sizes: usize) -> RGBColor {
    let base = match Mode::parse(mode) {
        Some(Mode::Grpo) => color(0),
        Some(Mode::Psr) => color(2),
        Some(Mode::Nsr) => color(5),
        Some(Mode::WReinforce) => color(3),
        None if mode == Kind::WarmStart.as_str() => color(7),
        None => color(1),
    };
    if sizes < 2 {
        return base;
    }
    lighten(
        base,
        0.6 * (sizes - 1 - size_rank) as f64 / (sizes - 1) as f64,
    )
}

fn lighten(c: RGBColor, f: f64) -> RGBColor {
    let mix = |x: u8| (x as f64 + (255.0 - x as f64) * f).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

fn fail(path: &Path, e: impl std::fmt::Display) -> ReportError {
    ReportError::Plot {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

fn canvas(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> DrawResult,
) -> Result<(), ReportError> {
    ensure_fonts();
    crate::fsx::write_with(path, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(path, e))?;
        draw(&root).map_err(|e| fail(path, e))?;
        root.present().map_err(|e| fail(path, e))
    })
    .map_err(|e| match e {
        crate::fsx::WriteWithError::Writer(e) => e,
        crate::fsx::WriteWithError::File(e) => e.into(),
    })
}

/// A figure of step curves with the legend in a column on the right.
pub fn curves_png(
    path: &Path,
    title: &str,
    y_label: &str,
    curves: &[Curve],
) -> Result<(), ReportError> {
    canvas(path, (WIDTH, HEIGHT), |root| {
        let (plot, legend) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        draw_curves(&plot, title, "step", y_label, curves, None, false)?;
        draw_legend(&legend, curves)
    })
}

/// One panel of a grid: its curves, and a fixed y range where the quantity has one.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub curves: Vec<Curve>,
    pub y_range: Option<Range<f64>>,
}

/// A 2 x 2 grid of step-curve panels, each with its own legend.
pub fn panels_png(path: &Path, panels: &[Panel]) -> Result<(), ReportError> {
    canvas(path, (WIDTH + 200, HEIGHT + 300), |root| {
        for (area, p) in root.split_evenly((2, 2)).iter().zip(panels) {
            draw_curves(
                area,
                &p.title,
                "step",
                &p.y_label,
                &p.curves,
                p.y_range.clone(),
                true,
            )?;
        }
        Ok(())
    })
}

/// Where an in-plot legend hides least: the corner (or right-hand middle) of the plot that
/// the fewest curve points fall in.
fn legend_corner(curves: &[Curve], x: &Range<f64>, y: &Range<f64>) -> SeriesLabelPosition {
    use SeriesLabelPosition::*;
    let (w, h) = (x.end - x.start, y.end - y.start);
    let side = |p: f64, left: bool| {
        if left {
            p < x.start + 0.4 * w
        } else {
            p > x.end - 0.4 * w
        }
    };
    let band = |p: f64, at: f64| (p - (y.start + at * h)).abs() < 0.2 * h;
    let candidates = [
        (UpperRight, false, 0.85),
        (LowerRight, false, 0.15),
        (MiddleRight, false, 0.5),
        (UpperLeft, true, 0.85),
        (LowerLeft, true, 0.15),
    ];
    let points = || curves.iter().flat_map(|c| c.points.iter());
    candidates
        .into_iter()
        .min_by_key(|(_, left, at)| {
            points()
                .filter(|p| side(p.0, *left) && band(p.1, *at))
                .count()
        })
        .map_or(UpperRight, |c| c.0)
}

/// An image that says why a figure is empty.
pub fn message_png(path: &Path, title: &str, text: &str) -> Result<(), ReportError> {
    canvas(path, (WIDTH, HEIGHT / 2), |root| message(root, title, text))
}

fn message(area: &Area, title: &str, text: &str) -> DrawResult {
    let area = area.titled(title, ("sans-serif", 24))?;
    let (_, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        text.to_string(),
        (30, (h / 2) as i32 - 10),
        ("sans-serif", 18).into_font().color(&BLACK.mix(0.7)),
    ))?;
    Ok(())
}

fn padded(lo: f64, hi: f64) -> Range<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            1.0
        };
        return (lo - pad)..(hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad)..(hi + pad)
}

/// The x range of the curves' points (widened when they all share one x), and the lowest
/// and highest y.
fn extent(curves: &[Curve]) -> (Range<f64>, (f64, f64)) {
    let points = || curves.iter().flat_map(|c| c.points.iter());
    let (x0, x1) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.0), b.max(p.0))
    });
    let y = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.1), b.max(p.1))
    });
    let x_range = if x1 > x0 {
        x0..x1
    } else {
        (x0 - 1.0)..(x1 + 1.0)
    };
    (x_range, y)
}

/// A y-axis label on an axis whose largest magnitude is `scale`: scientific outside
/// [0.01, 1e5), three decimals below 0.1, else two; rounding noise near 0 shows as 0.
fn y_label_text(y: f64, scale: f64) -> String {
    let y = if y.abs() < 1e-12 * scale.max(1e-300) {
        0.0
    } else {
        y
    };
    if !(1e-2..1e5).contains(&scale) {
        format!("{y:.1e}")
    } else if scale < 0.1 {
        format!("{y:.3}")
    } else {
        format!("{y:.2}")
    }
}

fn draw_curves(
    area: &Area,
    title: &str,
    x_label: &str,
    y_label: &str,
    curves: &[Curve],
    y_range: Option<Range<f64>>,
    inline_legend: bool,
) -> DrawResult {
    let points = || curves.iter().flat_map(|c| c.points.iter());
    if points().next().is_none() {
        return message(area, title, "no data for this figure in the selected runs");
    }
    let (x_range, (y0, y1)) = extent(curves);
    let y_range = y_range.unwrap_or_else(|| padded(y0, y1));
    let y_scale = y_range.start.abs().max(y_range.end.abs());
    let corner = legend_corner(curves, &x_range, &y_range);
    let y_tick = move |y: &f64| y_label_text(*y, y_scale);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&y_tick)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for c in curves {
        let ys: Vec<f64> = c.points.iter().map(|p| p.1).collect();
        let weight = smoothing_weight(ys.len());
        let style = ShapeStyle::from(&c.color).stroke_width(2);
        if c.points.len() == 1 {
            chart
                .draw_series(std::iter::once(Circle::new(c.points[0], 4, style.filled())))?
                .label(c.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            continue;
        }
        if weight > 0.0 {
            chart.draw_series(LineSeries::new(
                c.points.iter().copied(),
                ShapeStyle::from(&lighten(c.color, 0.65)).stroke_width(1),
            ))?;
        }
        let smoothed = smooth(&ys, weight);
        chart
            .draw_series(LineSeries::new(
                c.points.iter().zip(smoothed).map(|(p, s)| (p.0, s)),
                style,
            ))?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    if inline_legend {
        chart
            .configure_series_labels()
            .position(corner)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    Ok(())
}

fn draw_legend(area: &Area, curves: &[Curve]) -> DrawResult {
    let (_, h) = area.dim_in_pixel();
    let row = 22;
    let fits = ((h as i32 - 90) / row).max(1) as usize;
    area.draw(&Text::new(
        "runs (bold: smoothed)",
        (10, 40),
        ("sans-serif", 16),
    ))?;
    for (i, c) in curves.iter().enumerate().take(fits) {
        let y = 72 + row * i as i32;
        area.draw(&PathElement::new(
            vec![(10, y), (40, y)],
            ShapeStyle::from(&c.color).stroke_width(3),
        ))?;
        area.draw(&Text::new(c.label.clone(), (48, y - 9), ("sans-serif", 15)))?;
    }
    if curves.len() > fits {
        let y = 72 + row * fits as i32;
        area.draw(&Text::new(
            format!("… and {} more", curves.len() - fits),
            (10, y - 9),
            ("sans-serif", 15),
        ))?;
    }
    Ok(())
}

/// One pass@k line: a mode's mean over seeds (and std where there are several) per k.
#[derive(Debug, Clone)]
pub struct PassCurve {
    pub label: String,
    pub color: RGBColor,
    /// `(k, mean, std)`.
    pub points: Vec<(usize, f64, f64)>,
}

/// pass@k against k (log2 axis), one panel per training-set size.
pub fn pass_at_k_png(
    path: &Path,
    panels: &[(String, Vec<PassCurve>)],
    x_desc: &str,
) -> Result<(), ReportError> {
    let cols = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(cols).max(1);
    let size = (WIDTH, (HEIGHT * rows as u32).min(HEIGHT * 2));
    canvas(path, size, |root| {
        for (area, (title, curves)) in root.split_evenly((rows, cols)).iter().zip(panels) {
            pass_panel(area, title, curves, x_desc)?;
        }
        Ok(())
    })
}

fn pass_panel(area: &Area, title: &str, curves: &[PassCurve], x_desc: &str) -> DrawResult {
    let k_max = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(2);
    let x_hi = (k_max as f64).log2();
    let top = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1 + p.2))
        .fold(0.0, f64::max);
    let y_hi = (top * 1.15 + 0.02).clamp(0.1, 1.02);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.15..x_hi + 0.15, 0.0..y_hi)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("pass@k")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .x_labels(x_hi.ceil() as usize + 1)
        .x_label_formatter(&|x| {
            let r = x.round();
            if (x - r).abs() < 1e-6 && r >= 0.0 {
                format!("{}", 2f64.powf(r) as u64)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for c in curves {
        let style = ShapeStyle::from(&c.color).stroke_width(2);
        let pts: Vec<(f64, f64)> = c
            .points
            .iter()
            .map(|p| ((p.0 as f64).log2(), p.1))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), style))?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, style.filled())))?;
        chart.draw_series(c.points.iter().filter(|p| p.2 > 0.0).map(|p| {
            let x = (p.0 as f64).log2();
            ErrorBar::new_vertical(x, (p.1 - p.2).max(0.0), p.1, (p.1 + p.2).min(1.0), style, 6)
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}
