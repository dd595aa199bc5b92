//! One report shape for every benchmark: a table of rows (this run next to the published
//! GAR-1B / GAR-8B numbers), rendered as terminal text, Markdown, JSON and an SVG bar chart.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::published::Published;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub label: String,
    /// This run's value (`None` when it cannot be computed offline).
    pub value: Option<f64>,
    /// Counts or other context shown next to the value, e.g. `34/69`.
    pub detail: String,
    pub gar_1b: Option<f64>,
    pub gar_8b: Option<f64>,
}

impl Row {
    pub fn new(label: impl Into<String>, value: Option<f64>, detail: impl Into<String>) -> Self {
        Row {
            label: label.into(),
            value,
            detail: detail.into(),
            gar_1b: None,
            gar_8b: None,
        }
    }

    /// Attaches the published numbers of the same metric.
    pub fn published(mut self, p: Option<Published>) -> Self {
        self.gar_1b = p.map(|p| p.gar_1b);
        self.gar_8b = p.map(|p| p.gar_8b);
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub title: String,
    /// What the numbers are, e.g. "accuracy (%)".
    pub metric: String,
    /// Decimals shown in tables (the precision the reference prints).
    pub decimals: usize,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    /// The scorer's full result, written to `summary.json`.
    pub result: serde_json::Value,
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

impl Report {
    /// Aligned plain-text table for the terminal.
    pub fn to_text(&self) -> String {
        let d = self.decimals;
        let header = ["", "this run", "", "GAR-1B (pub.)", "GAR-8B (pub.)"];
        let body: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.label.clone(),
                    cell(r.value, d),
                    r.detail.clone(),
                    cell(r.gar_1b, d),
                    cell(r.gar_8b, d),
                ]
            })
            .collect();
        let width = |i: usize| {
            body.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..5).map(width).collect();
        let mut out = format!("{} — {}\n", self.title, self.metric);
        let mut line = |cols: [&str; 5]| {
            let mut s = String::new();
            for (i, c) in cols.iter().enumerate() {
                let _ = if i == 0 {
                    write!(s, "{c:<w$}  ", w = widths[i])
                } else {
                    write!(s, "{c:>w$}  ", w = widths[i])
                };
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(header);
        for r in &body {
            line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }

    pub fn to_markdown(&self) -> String {
        let d = self.decimals;
        let mut out = format!("# {}\n\nMetric: {}\n\n", self.title, self.metric);
        out.push_str("| | this run | | GAR-1B (published) | GAR-8B (published) |\n|---|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.label,
                cell(r.value, d),
                r.detail,
                cell(r.gar_1b, d),
                cell(r.gar_8b, d)
            );
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n\n");
            for n in &self.notes {
                let _ = writeln!(out, "* {n}");
            }
        }
        out
    }

    /// Grouped bar chart: per row, this run next to the published GAR-1B and GAR-8B values.
    pub fn to_svg(&self) -> String {
        let series: [Series; 3] = [
            ("this run", "#1f77b4", |r| r.value),
            ("GAR-1B (published)", "#bbbbbb", |r| r.gar_1b),
            ("GAR-8B (published)", "#666666", |r| r.gar_8b),
        ];
        let values: Vec<f64> = self
            .rows
            .iter()
            .flat_map(|r| series.iter().filter_map(|s| (s.2)(r)))
            .collect();
        let hi = nice_ceiling(values.iter().copied().fold(0.0, f64::max));
        let lo = values.iter().copied().fold(0.0, f64::min).min(0.0);
        // Labels are rotated by 30°: leave room for the longest one left of and below the axis
        // (about 6.5 px per character at 11 px).
        let label_px = self
            .rows
            .iter()
            .map(|r| r.label.chars().count())
            .max()
            .unwrap_or(0) as f64
            * 6.5;
        let (top, plot_h, group_w, bar_w) = (40.0, 240.0, 90.0, 22.0);
        let left = (label_px * 0.87 - 30.0).max(60.0);
        let title = format!("{} — {}", self.title, self.metric);
        let plot_right = left + group_w * self.rows.len().max(1) as f64;
        let width = (plot_right + 20.0).max(title.chars().count() as f64 * 7.5 + 20.0);
        let height = top + plot_h + label_px * 0.5 + 50.0;
        let y = |v: f64| top + plot_h * (hi - v) / (hi - lo).max(f64::EPSILON);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
             <text x=\"10\" y=\"20\" font-size=\"14\">{}</text>\n",
            xml(&title)
        );
        for i in 0..=4 {
            let v = lo + (hi - lo) * f64::from(i) / 4.0;
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e0e0e0\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                plot_right,
                left - 4.0,
                y(v) + 4.0,
                trim_num(v),
                y = y(v)
            );
        }
        for (gi, row) in self.rows.iter().enumerate() {
            let gx = left + group_w * gi as f64 + 10.0;
            for (si, (name, color, get)) in series.iter().enumerate() {
                let Some(v) = get(row) else { continue };
                let (y0, y1) = (y(v.max(0.0)), y(v.min(0.0)));
                let _ = writeln!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{y0:.1}\" width=\"{bar_w}\" height=\"{:.1}\" fill=\"{color}\"><title>{}: {} = {v}</title></rect>",
                    gx + bar_w * si as f64,
                    (y1 - y0).max(0.5),
                    xml(&row.label),
                    name
                );
            }
            let lx = gx + bar_w * 1.5;
            let ly = top + plot_h + 14.0;
            let _ = writeln!(
                s,
                "<text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"end\" transform=\"rotate(-30 {lx:.1} {ly:.1})\">{}</text>",
                xml(&row.label)
            );
        }
        for (si, (name, color, _)) in series.iter().enumerate() {
            let lx = left + 150.0 * si as f64;
            let ly = height - 14.0;
            let _ = writeln!(
                s,
                "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{ly}\">{name}</text>",
                ly - 9.0,
                lx + 14.0
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes `summary.md`, `summary.json` and `chart.svg` into `dir` (created if needed).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| EvalError::Write { path, source })
        };
        std::fs::create_dir_all(dir).map_err(|source| EvalError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        write("summary.md", self.to_markdown())?;
        let json = serde_json::to_string_pretty(self).unwrap_or_default();
        write("summary.json", json + "\n")?;
        write("chart.svg", self.to_svg())
    }
}

/// A chart series: legend, colour, and which value of a row it shows.
type Series = (&'static str, &'static str, fn(&Row) -> Option<f64>);

/// Smallest 1/2/5×10^k at or above `v` (the chart's top).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * mag)
}

fn trim_num(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            title: "T <x>".into(),
            metric: "accuracy (%)".into(),
            decimals: 1,
            rows: vec![Row::new("a", Some(50.0), "1/2").published(Some(
                crate::published::Published {
                    label: "a",
                    gar_1b: 40.0,
                    gar_8b: 60.0,
                },
            ))],
            notes: vec!["n".into()],
            result: serde_json::json!({"x": 1}),
        }
    }

    #[test]
    fn renders_every_format() {
        let r = sample();
        assert!(r.to_text().contains("1/2"));
        assert!(r.to_markdown().contains("| a | 50.0 | 1/2 | 40.0 | 60.0 |"));
        let svg = r.to_svg();
        assert!(
            svg.starts_with("<svg")
                && svg.contains("T &lt;x&gt;")
                && svg.matches("<rect").count() == 6
        );
    }

    #[test]
    fn ceilings() {
        assert_eq!(nice_ceiling(57.8), 100.0);
        assert_eq!(nice_ceiling(0.77), 1.0);
        assert_eq!(nice_ceiling(178.6), 200.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }
}
