//! The report as one self-contained HTML page: the table with the registry's names, and bar
//! charts drawn as inline SVG. No script, stylesheet or font is fetched from anywhere, because
//! hospital intranets are often offline; the page declares UTF-8 so that Chinese hospital names
//! render, and names local CJK fonts only.

use super::{describe_window, display_cells, format_seconds, format_share, pairing_label};
use chrono::FixedOffset;
use std::fmt::Write as _;
use store::reports::{Figures, Report, ReportLine};

const STYLE: &str = "
body { font-family: system-ui, 'Noto Sans CJK SC', 'Noto Sans SC', 'Microsoft YaHei', 'PingFang SC', sans-serif;
       margin: 2em; color: #1f2933; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 2em; }
p.window { color: #52606d; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #cbd2d9; padding: 0.3em 0.5em; }
th { background: #f0f4f8; text-align: left; vertical-align: bottom; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; background: #f5f7fa; }
.code { color: #616e7c; font-size: 0.85em; }
svg text { font-size: 12px; fill: #1f2933; }
svg .p90 { fill: #9fb3c8; } svg .p50 { fill: #243b53; } svg .share { fill: #2f855a; }
svg .axis { stroke: #9aa5b1; stroke-width: 1; }
.key span { display: inline-block; width: 0.9em; height: 0.9em; margin: 0 0.3em 0 1em; vertical-align: -0.1em; }
dt { font-weight: bold; margin-top: 0.6em; }
";

/// The report as an HTML page.
pub fn render_html(report: &Report, offset: FixedOffset) -> String {
    let mut out = String::new();
    let window = describe_window(report, offset);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>telerelay report: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Remote diagnosis report (远程诊断统计)</h1>\n<p class=\"window\">{}</p>\n",
        escape(&window),
        escape(&window)
    );
    summary_table(&mut out, report);

    let mut rows: Vec<ChartRow> = report.lines.iter().map(ChartRow::of_line).collect();
    rows.push(ChartRow::total(&report.total));

    out.push_str("<h2>Turnaround: received → first report</h2>\n");
    out.push_str(KEY_MEDIAN_P90);
    let turnaround: Vec<_> = rows
        .iter()
        .filter(|row| row.figures.turnaround_median_seconds.is_some())
        .map(|row| {
            row.bars(
                row.figures.turnaround_median_seconds,
                row.figures.turnaround_p90_seconds,
            )
        })
        .collect();
    out.push_str(&bar_chart(
        &turnaround,
        "no reported request in this window",
    ));

    out.push_str("<h2>SLA compliance (in time ÷ settled)</h2>\n");
    let compliance: Vec<_> = rows
        .iter()
        .filter_map(|row| {
            let share = row.figures.sla_compliance()?;
            Some(Bars {
                label: row.label.clone(),
                title: row.title.clone(),
                bars: vec![(100.0 * share, "share")],
                note: format!(
                    "{} ({} in time, {} late, {} open overdue)",
                    format_share(Some(share)),
                    row.figures.sla_in_time,
                    row.figures.sla_late,
                    row.figures.sla_open_overdue
                ),
                scale_max: Some(100.0),
            })
        })
        .collect();
    out.push_str(&bar_chart(
        &compliance,
        "no request in this window has a settled SLA outcome",
    ));

    out.push_str("<h2>Critical values (危急值): notified → acknowledged</h2>\n");
    out.push_str(KEY_MEDIAN_P90);
    let critical: Vec<_> = rows
        .iter()
        .filter(|row| row.figures.critical > 0)
        .map(|row| {
            let mut bars = row.bars(
                row.figures.critical_ack_median_seconds,
                row.figures.critical_ack_p90_seconds,
            );
            let _ = write!(
                bars.note,
                " — {} critical, {} unacknowledged",
                row.figures.critical,
                row.figures.critical_unacknowledged()
            );
            bars
        })
        .collect();
    out.push_str(&bar_chart(
        &critical,
        "no critical value for this window's requests",
    ));

    out.push_str(DEFINITIONS);
    out.push_str("</body>\n</html>\n");
    out
}

const KEY_MEDIAN_P90: &str = "<p class=\"key\"><span style=\"background:#243b53\"></span>median \
     <span style=\"background:#9fb3c8\"></span>90th percentile</p>\n";

const DEFINITIONS: &str = "<h2>How the figures are counted</h2>\n<dl>\n\
<dt>Window</dt><dd>A request is counted when the relay received it inside the window. What happened \
to it afterwards counts whenever it happened, up to the moment of the report.</dd>\n\
<dt>Reported (remote diagnoses)</dt><dd>Requests with at least one signed report. Turnaround runs \
from the relay receiving the request to the first report version.</dd>\n\
<dt>Returned</dt><dd>Requests the reviewer handed back (unreadable, incomplete); they have no \
diagnosis and do not count for the SLA.</dd>\n\
<dt>SLA compliance</dt><dd>Requests first reported by their due time, divided by those whose \
outcome is settled: reported in time, reported late, and still open past their due time (these \
can only be late). Open requests not yet due are not counted.</dd>\n\
<dt>Critical values</dt><dd>Critical notifications sent for the window's requests (one per \
critical report version); acknowledgement time runs from the notification to the origin \
clinician's acknowledgement with read-back. Unacknowledged: still open when the report ran.</dd>\n\
</dl>\n";

fn summary_table(out: &mut String, report: &Report) {
    out.push_str(
        "<table>\n<thead><tr><th>Origin hospital (受援医院)</th><th>Reviewer pool (支援医院)</th>\
         <th>Kind</th><th>Requests</th><th>Reported</th><th>Returned</th><th>Open</th>\
         <th>Turnaround median</th><th>Turnaround p90</th><th>In time</th><th>Late</th>\
         <th>Open overdue</th><th>SLA compliance</th><th>Critical values</th>\
         <th>Ack median</th><th>Ack p90</th><th>Unacknowledged</th></tr></thead>\n<tbody>\n",
    );
    for line in &report.lines {
        let pool = match (&line.key.pool, &line.names.pool_name) {
            (Some(code), Some(name)) => format!(
                "{}<br><span class=\"code\">{} · {}</span>",
                escape(line.names.reviewer_hospital_name.as_deref().unwrap_or("")),
                escape(code),
                escape(name)
            ),
            (Some(code), None) => escape(code),
            (None, _) => "(not routed)".into(),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}<br><span class=\"code\">{}</span></td><td>{pool}</td><td>{}</td>{}</tr>",
            escape(&line.names.origin_name),
            escape(&line.key.origin),
            escape(&line.key.kind),
            figure_cells(&line.figures)
        );
    }
    let _ = write!(
        out,
        "<tr class=\"total\"><td colspan=\"3\">Total</td>{}</tr>\n</tbody>\n</table>\n",
        figure_cells(&report.total)
    );
}

fn figure_cells(figures: &Figures) -> String {
    display_cells(figures)
        .iter()
        .map(|cell| format!("<td class=\"n\">{}</td>", escape(cell)))
        .collect()
}

/// A report line as a chart row: a short label with codes, the full names as a tooltip.
struct ChartRow<'a> {
    label: String,
    title: String,
    figures: &'a Figures,
}

impl<'a> ChartRow<'a> {
    fn of_line(line: &'a ReportLine) -> Self {
        Self {
            label: format!("{} · {}", pairing_label(line), line.key.kind),
            title: format!(
                "{} → {} {}",
                line.names.origin_name,
                line.names.reviewer_hospital_name.as_deref().unwrap_or(""),
                line.names.pool_name.as_deref().unwrap_or("")
            ),
            figures: &line.figures,
        }
    }

    fn total(figures: &'a Figures) -> Self {
        Self {
            label: "total".into(),
            title: "every pairing and kind".into(),
            figures,
        }
    }

    /// A median bar over a p90 bar, with both values as the note.
    fn bars(&self, median: Option<f64>, p90: Option<f64>) -> Bars {
        let mut bars = Vec::new();
        if let Some(p90) = p90 {
            bars.push((p90, "p90"));
        }
        if let Some(median) = median {
            bars.push((median, "p50"));
        }
        Bars {
            label: self.label.clone(),
            title: self.title.clone(),
            bars,
            note: format!(
                "median {}, p90 {}",
                format_seconds(median),
                format_seconds(p90)
            ),
            scale_max: None,
        }
    }
}

/// One row of a horizontal bar chart: bars drawn over each other, longest first.
struct Bars {
    label: String,
    title: String,
    bars: Vec<(f64, &'static str)>,
    note: String,
    /// The value a full-width bar stands for; by default the largest value in the chart.
    scale_max: Option<f64>,
}

const LABEL_WIDTH: f64 = 300.0;
const PLOT_WIDTH: f64 = 420.0;
const NOTE_WIDTH: f64 = 360.0;
const ROW_HEIGHT: f64 = 26.0;

/// A horizontal bar chart as inline SVG, or a sentence when there is nothing to draw.
fn bar_chart(rows: &[Bars], when_empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p>({})</p>\n", escape(when_empty));
    }
    let largest = rows
        .iter()
        .flat_map(|row| row.bars.iter().map(|(value, _)| *value))
        .chain(rows.iter().filter_map(|row| row.scale_max))
        .fold(0.0_f64, f64::max);
    let scale = if largest > 0.0 {
        PLOT_WIDTH / largest
    } else {
        0.0
    };
    let width = LABEL_WIDTH + PLOT_WIDTH + NOTE_WIDTH;
    let height = ROW_HEIGHT * rows.len() as f64 + 8.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\">"
    );
    for (index, row) in rows.iter().enumerate() {
        let top = 4.0 + ROW_HEIGHT * index as f64;
        let middle = top + ROW_HEIGHT / 2.0 + 4.0;
        let _ = writeln!(
            svg,
            "<g><title>{}</title><text x=\"0\" y=\"{middle}\">{}</text>",
            escape(&row.title),
            escape(&row.label)
        );
        let mut longest = 0.0_f64;
        for (position, (value, class)) in row.bars.iter().enumerate() {
            let length = (value * scale).max(1.0);
            longest = longest.max(length);
            // The bar drawn on top is thinner, so both stay visible when they are equal.
            let inset = if position == 0 { 3.0 } else { 7.0 };
            let _ = writeln!(
                svg,
                "<rect class=\"{class}\" x=\"{LABEL_WIDTH}\" y=\"{}\" width=\"{length:.1}\" height=\"{}\"/>",
                top + inset,
                ROW_HEIGHT - 2.0 * inset
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{middle}\">{}</text></g>",
            LABEL_WIDTH + longest + 6.0,
            escape(&row.note)
        );
    }
    let _ = writeln!(
        svg,
        "<line class=\"axis\" x1=\"{LABEL_WIDTH}\" y1=\"0\" x2=\"{LABEL_WIDTH}\" y2=\"{height}\"/>\n</svg>"
    );
    svg
}

/// Text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
