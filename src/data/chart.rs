//! Charts and chart-QA samples: the data a policy is asked about.

use serde::{Deserialize, Serialize};

use super::qtype::AnswerKind;

/// How a chart is drawn. The data is a table either way; the kind changes which questions are
/// natural (trends on lines, shares on pies) and how `data render` draws it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    Bar,
    GroupedBar,
    Line,
    Pie,
}

impl ChartKind {
    pub fn name(self) -> &'static str {
        match self {
            ChartKind::Bar => "bar",
            ChartKind::GroupedBar => "grouped_bar",
            ChartKind::Line => "line",
            ChartKind::Pie => "pie",
        }
    }
}

/// One named series: a value for every label of the chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// A chart: title, axis labels, kind, unit, category labels and one or more series over them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chart {
    pub title: String,
    pub kind: ChartKind,
    /// What the labels are (`Year`, `Country`), the header of the table's first column.
    pub x_label: String,
    /// What the values measure (`Revenue`).
    pub y_label: String,
    /// Unit of every value (`%`, `million USD`), empty when none.
    #[serde(default)]
    pub unit: String,
    pub labels: Vec<String>,
    pub series: Vec<Series>,
}

impl Chart {
    /// The chart as a Markdown-style table: the "chart-to-table" setting of ChartQA research.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("| {} |", self.x_label));
        for s in &self.series {
            out.push_str(&format!(" {} |", s.name));
        }
        out.push('\n');
        for i in 0..self.labels.len() {
            out.push_str(&self.row(i));
            out.push('\n');
        }
        out
    }

    /// Row `i` of [`Chart::to_table`]: `| July | 2 | 35 |`.
    pub fn row(&self, i: usize) -> String {
        let mut out = format!("| {} |", self.labels.get(i).map_or("", |l| l.as_str()));
        for s in &self.series {
            let v = s.values.get(i).copied().unwrap_or(f64::NAN);
            out.push_str(&format!(" {} |", format_number(v)));
        }
        out
    }

    /// Checks the shape: at least one label and series, a value per label in every series.
    pub fn validate(&self) -> Result<(), String> {
        if self.labels.is_empty() {
            return Err("chart has no labels".into());
        }
        if self.series.is_empty() {
            return Err("chart has no series".into());
        }
        for s in &self.series {
            if s.values.len() != self.labels.len() {
                return Err(format!(
                    "series `{}` has {} values for {} labels",
                    s.name,
                    s.values.len(),
                    self.labels.len()
                ));
            }
            if let Some(v) = s.values.iter().find(|v| !v.is_finite()) {
                return Err(format!("series `{}` has a non-finite value {v}", s.name));
            }
        }
        Ok(())
    }
}

/// A question about a chart with its gold answer and a gold reasoning trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub id: String,
    pub chart: Chart,
    pub question: String,
    pub answer: String,
    /// The question type (`lookup`, `max_label`, ...); free text for loaded datasets.
    pub question_type: String,
    /// How the answer is matched: `number` (within 5%) or `label` (exact after normalising
    /// case and whitespace). Absent: ChartQA's relaxed accuracy, which tries both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_kind: Option<AnswerKind>,
    /// A short step-by-step trace ending in the answer; used to warm-start the policy.
    #[serde(default)]
    pub reasoning: String,
}

/// Formats a value as the data tables and gold answers write it: at most two decimals,
/// trailing zeros dropped (`12`, `12.5`, `0.33`, `-4.1`).
pub fn format_number(v: f64) -> String {
    let rounded = (v * 100.0).round() / 100.0;
    let s = format!("{rounded:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format_compactly() {
        assert_eq!(format_number(12.0), "12");
        assert_eq!(format_number(12.5), "12.5");
        assert_eq!(format_number(1.0 / 3.0), "0.33");
        assert_eq!(format_number(-4.104), "-4.1");
        assert_eq!(format_number(-0.001), "0");
        assert_eq!(format_number(1250.0), "1250");
    }
}
