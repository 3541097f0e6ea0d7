//! Reading and writing datasets: chartrl's JSONL schema (one [`Sample`] per line) and the
//! ChartQA layout (a JSON list of `{imgname, query, label}` plus a CSV table per chart).
//!
//! A malformed record is an error naming the file, the line (or the chart's CSV file) and the
//! field; an empty file is an error. Nothing half-loaded is returned.

use std::io::Write;
use std::path::Path;

use serde::Deserialize;

use super::chart::{Chart, ChartKind, Sample, Series};
use super::DataError;

fn invalid(path: &Path, line: usize, msg: impl Into<String>) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        line,
        msg: msg.into(),
    }
}

/// A UTF-8 byte-order mark, which some editors put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The file's bytes without a leading byte-order mark.
fn read_text_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.starts_with(BOM) {
        bytes.drain(..BOM.len());
    }
    Ok(bytes)
}

/// The lines of a UTF-8 text file, with a clear error on invalid UTF-8 (naming the line). A
/// leading byte-order mark is skipped.
fn read_lines(path: &Path) -> Result<Vec<String>, DataError> {
    let bytes = read_text_bytes(path)?;
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, raw)| {
            String::from_utf8(raw.to_vec())
                .map(|s| s.trim_end_matches('\r').to_string())
                .map_err(|e| invalid(path, i + 1, format!("not valid UTF-8 ({e})")))
        })
        .collect()
}

/// Loads chartrl JSONL: one sample object per line; blank lines are skipped.
pub fn load_jsonl(path: &Path) -> Result<Vec<Sample>, DataError> {
    let mut samples = Vec::new();
    for (i, line) in read_lines(path)?.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let sample: Sample =
            serde_json::from_str(line).map_err(|e| invalid(path, i + 1, e.to_string()))?;
        check_sample(&sample).map_err(|msg| invalid(path, i + 1, msg))?;
        samples.push(sample);
    }
    if samples.is_empty() {
        return Err(invalid(path, 0, "no samples (the file is empty)"));
    }
    Ok(samples)
}

fn check_sample(s: &Sample) -> Result<(), String> {
    if s.id.trim().is_empty() {
        return Err("field `id` is empty".into());
    }
    if s.question.trim().is_empty() {
        return Err(format!("sample `{}`: field `question` is empty", s.id));
    }
    if s.answer.trim().is_empty() {
        return Err(format!("sample `{}`: field `answer` is empty", s.id));
    }
    s.chart
        .validate()
        .map_err(|m| format!("sample `{}`: field `chart`: {m}", s.id))
}

/// Writes samples as chartrl JSONL, one per line. `keep_going` is called per sample; once it
/// says no, the write stops with an error. The file appears only once complete: an
/// interrupted write leaves the old file or none.
pub fn write_jsonl<I>(
    path: &Path,
    samples: I,
    mut keep_going: impl FnMut() -> bool,
) -> Result<usize, DataError>
where
    I: IntoIterator<Item = Sample>,
{
    let file_err = |e: crate::fsx::FileError| DataError::io(&e.path, e.source);
    let mut w = crate::fsx::AtomicFile::create(path).map_err(file_err)?;
    let mut n = 0;
    for s in samples {
        let line = serde_json::to_string(&s).map_err(|e| invalid(path, n + 1, e.to_string()))?;
        writeln!(w, "{line}").map_err(|e| DataError::io(path, e))?;
        n += 1;
        if !keep_going() {
            return Err(invalid(
                path,
                0,
                format!("stopped after {n} samples; the file was not written"),
            ));
        }
    }
    w.commit().map_err(file_err)?;
    Ok(n)
}

#[derive(Deserialize)]
struct ChartQaRecord {
    imgname: String,
    query: String,
    label: String,
}

/// Loads a ChartQA-style split: `path` is the question JSON (a list of `{imgname, query,
/// label}`); each chart's table is `tables/<imgname without extension>.csv` beside it, its
/// header row naming the label column and the series.
pub fn load_chartqa(path: &Path) -> Result<Vec<Sample>, DataError> {
    let text = String::from_utf8(read_text_bytes(path)?)
        .map_err(|e| invalid(path, 0, format!("not valid UTF-8 ({e})")))?;
    let records: Vec<ChartQaRecord> = serde_json::from_str(&text).map_err(|e| {
        invalid(
            path,
            e.line(),
            format!("{e} (expected a list of {{imgname, query, label}})"),
        )
    })?;
    if records.is_empty() {
        return Err(invalid(path, 0, "no questions (the list is empty)"));
    }
    let tables = path.parent().unwrap_or(Path::new(".")).join("tables");
    let mut samples = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let stem = Path::new(&r.imgname)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let csv_path = tables.join(format!("{stem}.csv"));
        if !csv_path.is_file() {
            return Err(invalid(
                path,
                0,
                format!(
                    "question {i} (imgname `{}`): table {} not found",
                    r.imgname,
                    csv_path.display()
                ),
            ));
        }
        let chart = read_chart_csv(&csv_path, &stem)?;
        samples.push(Sample {
            id: format!("{stem}-{i}"),
            chart,
            question: r.query.clone(),
            answer: r.label.clone(),
            question_type: "chartqa".to_string(),
            answer_kind: None,
            reasoning: String::new(),
        });
    }
    Ok(samples)
}

/// A chart from a ChartQA table: header `label column, series...`, then one row per label.
fn read_chart_csv(path: &Path, title: &str) -> Result<Chart, DataError> {
    let text = String::from_utf8(read_text_bytes(path)?)
        .map_err(|e| invalid(path, 0, format!("not valid UTF-8 ({e})")))?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| invalid(path, 1, e.to_string()))?
        .clone();
    if header.len() < 2 {
        return Err(invalid(
            path,
            1,
            "header needs a label column and at least one series",
        ));
    }
    let mut labels = Vec::new();
    let mut series: Vec<Series> = header
        .iter()
        .skip(1)
        .map(|n| Series {
            name: n.trim().to_string(),
            values: Vec::new(),
        })
        .collect();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| invalid(path, line, e.to_string()))?;
        labels.push(row.get(0).unwrap_or_default().trim().to_string());
        for (j, s) in series.iter_mut().enumerate() {
            let cell = row.get(j + 1).unwrap_or_default();
            let v = parse_cell(cell).ok_or_else(|| {
                invalid(
                    path,
                    line,
                    format!("column `{}`: `{cell}` is not a number", s.name),
                )
            })?;
            s.values.push(v);
        }
    }
    let chart = Chart {
        title: title.to_string(),
        kind: if series.len() > 1 {
            ChartKind::GroupedBar
        } else {
            ChartKind::Bar
        },
        x_label: header.get(0).unwrap_or_default().trim().to_string(),
        y_label: series.first().map(|s| s.name.clone()).unwrap_or_default(),
        unit: String::new(),
        labels,
        series,
    };
    chart.validate().map_err(|m| invalid(path, 0, m))?;
    Ok(chart)
}

/// A table cell as a number: `12.5`, `12.5%`, `$1,200`, `3*` (ChartQA footnote marks).
fn parse_cell(cell: &str) -> Option<f64> {
    let cleaned: String = cell
        .trim()
        .trim_end_matches(['%', '*'])
        .trim_start_matches('$')
        .chars()
        .filter(|c| *c != ',')
        .collect();
    cleaned.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_parse_like_chartqa_tables() {
        assert_eq!(parse_cell(" 12.5 "), Some(12.5));
        assert_eq!(parse_cell("45%"), Some(45.0));
        assert_eq!(parse_cell("$1,200"), Some(1200.0));
        assert_eq!(parse_cell("3*"), Some(3.0));
        assert_eq!(parse_cell("n/a"), None);
    }
}
