//! The report's text as blocks, written out twice: `report.md` (images by file name) and a
//! self-contained `report.html` (images embedded as data URIs, so the one file can be mailed).

use std::fmt::Write;
use std::path::Path;

use base64::Engine as _;

use super::ReportError;

#[derive(Debug, Clone)]
pub enum Block {
    Heading(u8, String),
    Para(String),
    Table {
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Image {
        file: String,
        alt: String,
    },
    Pre(String),
    List(Vec<String>),
}

pub fn markdown(blocks: &[Block]) -> String {
    let mut md = String::new();
    for b in blocks {
        match b {
            Block::Heading(level, t) => {
                let _ = writeln!(md, "{} {t}\n", "#".repeat(*level as usize));
            }
            Block::Para(t) => {
                let _ = writeln!(md, "{t}\n");
            }
            Block::Table { header, rows } => {
                let cell = |s: &String| s.replace('|', "\\|").replace('\n', " ");
                let line = |cells: &[String]| {
                    format!(
                        "| {} |",
                        cells.iter().map(cell).collect::<Vec<_>>().join(" | ")
                    )
                };
                let _ = writeln!(md, "{}", line(header));
                let _ = writeln!(md, "|{}", "---|".repeat(header.len()));
                for r in rows {
                    let _ = writeln!(md, "{}", line(r));
                }
                md.push('\n');
            }
            Block::Image { file, alt } => {
                let _ = writeln!(md, "![{alt}]({file})\n");
            }
            Block::Pre(t) => {
                let fence = if t.contains("```") { "~~~~" } else { "```" };
                let _ = writeln!(md, "{fence}text\n{}\n{fence}\n", t.trim_end());
            }
            Block::List(items) => {
                for i in items {
                    let _ = writeln!(md, "- {}", i.replace('\n', " "));
                }
                md.push('\n');
            }
        }
    }
    md
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:-apple-system,Segoe UI,DejaVu Sans,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}img{max-width:100%;border:1px solid #ddd}
pre{background:#f6f6f6;padding:10px;overflow-x:auto;white-space:pre-wrap}";

/// The HTML page; images are read from `dir` and embedded.
pub fn html(title: &str, blocks: &[Block], dir: &Path) -> Result<String, ReportError> {
    let mut h = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n",
        escape(title)
    );
    for b in blocks {
        match b {
            Block::Heading(level, t) => {
                let _ = writeln!(h, "<h{level}>{}</h{level}>", escape(t));
            }
            Block::Para(t) => {
                let _ = writeln!(h, "<p>{}</p>", escape(t));
            }
            Block::Table { header, rows } => {
                h.push_str("<table><tr>");
                for c in header {
                    let _ = write!(h, "<th>{}</th>", escape(c));
                }
                h.push_str("</tr>\n");
                for r in rows {
                    h.push_str("<tr>");
                    for c in r {
                        let _ = write!(h, "<td>{}</td>", escape(c));
                    }
                    h.push_str("</tr>\n");
                }
                h.push_str("</table>\n");
            }
            Block::Image { file, alt } => {
                let path = dir.join(file);
                let bytes = std::fs::read(&path).map_err(|e| ReportError::io(&path, e))?;
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                let _ = writeln!(
                    h,
                    "<p><img alt=\"{}\" src=\"data:image/png;base64,{data}\"></p>",
                    escape(alt)
                );
            }
            Block::Pre(t) => {
                let _ = writeln!(h, "<pre>{}</pre>", escape(t.trim_end()));
            }
            Block::List(items) => {
                h.push_str("<ul>");
                for i in items {
                    let _ = write!(h, "<li>{}</li>", escape(i));
                }
                h.push_str("</ul>\n");
            }
        }
    }
    h.push_str("</body></html>\n");
    Ok(h)
}
