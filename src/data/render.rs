//! Drawing a chart to PNG with plotters: for people checking the data, and for future image
//! models. Bars, grouped bars and lines share one layout (labelled axes, legend for several
//! series); pies get a legend of shares.

use std::path::Path;

use plotters::prelude::*;

use super::chart::{format_number, Chart, ChartKind};
use super::DataError;
use crate::plot::{color, ensure_fonts};

fn draw_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        line: 0,
        msg: format!("drawing the chart: {e}"),
    }
}

/// Renders `chart` as a `width` x `height` PNG at `path`.
pub fn render_chart(chart: &Chart, path: &Path, width: u32, height: u32) -> Result<(), DataError> {
    ensure_fonts();
    chart.validate().map_err(|m| draw_err(path, m))?;
    if path
        .extension()
        .is_none_or(|e| !e.eq_ignore_ascii_case("png"))
        || path.is_dir()
    {
        return Err(DataError::Invalid {
            path: path.to_path_buf(),
            line: 0,
            msg: "charts are drawn as PNG: give a file name ending in .png".into(),
        });
    }
    crate::fsx::write_with(path, |tmp| {
        let root = BitMapBackend::new(tmp, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let result = match chart.kind {
            ChartKind::Pie => draw_pie(chart, &root),
            _ => draw_xy(chart, &root),
        };
        result.map_err(|e| draw_err(path, e))?;
        root.present().map_err(|e| draw_err(path, e))
    })
    .map_err(|e| match e {
        crate::fsx::WriteWithError::Writer(e) => e,
        crate::fsx::WriteWithError::File(e) => DataError::io(&e.path, e.source),
    })
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn title(chart: &Chart) -> String {
    if chart.unit.is_empty() || chart.kind == ChartKind::Pie {
        chart.title.clone()
    } else {
        format!("{} ({})", chart.title, chart.unit)
    }
}

fn draw_xy(chart: &Chart, root: &Area) -> DrawResult {
    let n = chart.labels.len();
    let all = chart.series.iter().flat_map(|s| s.values.iter().copied());
    let (lo, hi) = all.fold((0f64, 0f64), |(a, b), v| (a.min(v), b.max(v)));
    let pad = (hi - lo).max(1.0) * 0.1;
    let y_range = (if lo < 0.0 { lo - pad } else { 0.0 })..(hi + pad);
    let labels = chart.labels.clone();
    let mut ctx = ChartBuilder::on(root)
        .caption(title(chart), ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y_range)?;
    ctx.configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format_number(*y))
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    let k = chart.series.len();
    for (si, s) in chart.series.iter().enumerate() {
        let c = color(si);
        let drawn = if chart.kind == ChartKind::Line {
            let pts: Vec<(f64, f64)> = s
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64, *v))
                .collect();
            ctx.draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))?;
            ctx.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))?
        } else {
            let width = 0.8 / k as f64;
            ctx.draw_series(s.values.iter().enumerate().map(|(i, v)| {
                let x0 = i as f64 - 0.4 + si as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.95, *v)], c.filled())
            }))?
        };
        if k > 1 {
            drawn
                .label(s.name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        }
    }
    if k > 1 {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

fn draw_pie(chart: &Chart, root: &Area) -> DrawResult {
    let (w, h) = root.dim_in_pixel();
    let titled = root.titled(&title(chart), ("sans-serif", 26))?;
    let (pie_area, legend_area) = titled.split_horizontally((w as f64 * 0.6) as u32);
    let s = &chart.series[0];
    let colors: Vec<RGBColor> = (0..s.values.len()).map(color).collect();
    let labels: Vec<String> = chart.labels.iter().map(|_| String::new()).collect();
    let center = ((w as f64 * 0.3) as i32, (h as f64 * 0.45) as i32);
    let radius = (w.min(h) as f64 * 0.35).max(10.0);
    let mut pie = Pie::new(&center, &radius, &s.values, &colors, &labels);
    pie.label_style(("sans-serif", 1).into_font());
    pie_area.draw(&pie)?;
    for (i, (label, v)) in chart.labels.iter().zip(&s.values).enumerate() {
        let y = 40 + i as i32 * 34;
        legend_area.draw(&Rectangle::new([(10, y), (30, y + 20)], colors[i].filled()))?;
        legend_area.draw(&Text::new(
            format!("{label}: {}%", format_number(*v)),
            (40, y + 2),
            ("sans-serif", 18).into_font(),
        ))?;
    }
    Ok(())
}
