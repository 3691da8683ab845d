//! `relayctl report --from --to`: per pairing (origin hospital → reviewer pool) and kind, the
//! figures the hospitals of the pairing programme publish by hand today — requests, remote
//! diagnoses, returns, turnaround, SLA compliance, critical values and their acknowledgement —
//! as a terminal table, CSV, or a self-contained HTML page with charts.
//!
//! The figures come from [`store::reports`]; this module only reads the arguments and renders.
//! What each figure means is documented there and in docs/reports.md.

mod html;

use crate::duration::format_duration;
use anyhow::Context as _;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Offset as _, TimeZone as _, Utc};
use clap::{Args, ValueEnum};
use std::fmt::Write as _;
use std::path::PathBuf;
use store::reports::{Figures, Report, ReportLine, Window};

pub use html::render_html;

#[derive(Clone, Debug, Args)]
#[command(after_long_help = "\
The window: a request is in the report when the relay RECEIVED it at or after --from and before \
--to. Everything that happened to those requests since counts, up to the moment the report runs \
(reports, returns, acknowledgements after --to included), so adjoining windows never count a \
request twice. Open requests and unacknowledged critical values are counted as of that moment.

Times: RFC 3339 (2026-11-01T00:00:00+08:00), 'YYYY-MM-DD HH:MM[:SS]' or a date, read in \
--utc-offset. A date in --from is the start of that day; a date in --to is the END of that day, \
so '--from 2026-11-01 --to 2026-11-30' is the whole of November.

Example: relayctl report --from 2026-11-01 --to 2026-11-30 --utc-offset +08:00 --format html --out november.html")]
pub struct ReportArgs {
    /// Requests received at or after this time (a date: that day's start).
    #[arg(long, value_parser = parse_time_arg)]
    pub from: TimeArg,
    /// Requests received before this time (a date: that day's end, inclusive).
    #[arg(long, value_parser = parse_time_arg)]
    pub to: TimeArg,
    /// The offset from UTC that dates and times without one are read in (China: +08:00).
    #[arg(long, default_value = "+00:00", value_parser = parse_offset)]
    pub utc_offset: FixedOffset,
    /// table for a terminal, csv (RFC 4180, header row) for a spreadsheet, html for a page with charts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Html,
}

/// A time as the operator wrote it: an instant, or a wall-clock time or date still to be placed
/// in `--utc-offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeArg {
    Instant(DateTime<Utc>),
    Local(NaiveDateTime),
    Date(NaiveDate),
}

/// Accepts RFC 3339, `YYYY-MM-DD HH:MM[:SS]` or `YYYY-MM-DD`.
pub fn parse_time_arg(text: &str) -> Result<TimeArg, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(TimeArg::Instant(at.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(TimeArg::Local(at));
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(TimeArg::Date)
        .map_err(|_| format!("{text:?} is not a time (RFC 3339, YYYY-MM-DD HH:MM or YYYY-MM-DD)"))
}

/// Accepts `+08:00`, `-05:00`, `+0800`, `Z`.
pub fn parse_offset(text: &str) -> Result<FixedOffset, String> {
    if text.eq_ignore_ascii_case("z") || text.eq_ignore_ascii_case("utc") {
        return Ok(Utc.fix());
    }
    text.parse::<FixedOffset>()
        .map_err(|_| format!("{text:?} is not an offset from UTC (e.g. +08:00)"))
}

/// Which end of the window a time is: a bare date means the start of the day for `--from` and
/// the end of the day for `--to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    From,
    To,
}

impl TimeArg {
    pub fn resolve(self, offset: FixedOffset, end: End) -> anyhow::Result<DateTime<Utc>> {
        let local = match self {
            TimeArg::Instant(at) => return Ok(at),
            TimeArg::Local(at) => at,
            TimeArg::Date(date) => {
                let day = match end {
                    End::From => date,
                    End::To => date
                        .succ_opt()
                        .context("the date is the last chrono knows")?,
                };
                day.and_hms_opt(0, 0, 0)
                    .context("midnight exists on every day")?
            }
        };
        offset
            .from_local_datetime(&local)
            .single()
            .map(|at| at.with_timezone(&Utc))
            .with_context(|| format!("{local} is not a time at {offset}"))
    }
}

/// The window the arguments name; refuses an empty or inverted one.
pub fn window(args: &ReportArgs) -> anyhow::Result<Window> {
    let from = args.from.resolve(args.utc_offset, End::From)?;
    let to = args.to.resolve(args.utc_offset, End::To)?;
    anyhow::ensure!(
        from < to,
        "--from ({from}) must be before --to ({to}): the window is received >= from and < to"
    );
    Ok(Window { from, to })
}

pub async fn run(args: ReportArgs, db: &sqlx::PgPool) -> anyhow::Result<()> {
    let window = window(&args)?;
    let report = store::reports::report(db, window)
        .await
        .context("computing the report")?;
    let text = match args.format {
        Format::Table => render_table(&report, args.utc_offset),
        Format::Csv => render_csv(&report),
        Format::Html => render_html(&report, args.utc_offset),
    };
    match args.out {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// Seconds as an operator reads a turnaround: `42.5s` under a minute, else `12m30s`, `2h05m`
/// style through [`format_duration`]; `-` when there is nothing to measure.
pub fn format_seconds(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 60.0 => format!("{s:.1}s"),
        Some(s) => format_duration(s.round() as u64),
    }
}

/// A share as a percentage with one decimal, `-` when there is none.
pub fn format_share(share: Option<f64>) -> String {
    share.map_or("-".into(), |share| format!("{:.1} %", 100.0 * share))
}

/// The window and the moment of the report, in the operator's offset.
pub fn describe_window(report: &Report, offset: FixedOffset) -> String {
    let at = |time: DateTime<Utc>| time.with_timezone(&offset).format("%Y-%m-%d %H:%M:%S %:z");
    format!(
        "requests received from {} (inclusive) to {} (exclusive); as of {}",
        at(report.window.from),
        at(report.window.to),
        at(report.as_of)
    )
}

/// A pairing's label with codes only: `HN-HH-001 → xy-ecg`.
pub fn pairing_label(line: &ReportLine) -> String {
    format!(
        "{} → {}",
        line.key.origin,
        line.key.pool.as_deref().unwrap_or("(not routed)")
    )
}

const TABLE_HEADER: [&str; 14] = [
    "requests", "reported", "returned", "open", "TAT p50", "TAT p90", "in time", "late", "overdue",
    "SLA", "critical", "ack p50", "ack p90", "unacked",
];

const TABLE_WIDTHS: [usize; 14] = [8, 8, 8, 5, 8, 8, 7, 5, 7, 7, 8, 8, 8, 7];

/// The report as a terminal table: codes in the rows (they keep the columns aligned), the
/// registry's names in a legend below.
pub fn render_table(report: &Report, offset: FixedOffset) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "telerelay report: {}", describe_window(report, offset));
    let _ = writeln!(
        out,
        "TAT = received → first report. SLA = in time / (in time + late + open overdue).\n"
    );
    let _ = write!(out, "{:<32} {:<10}", "pairing (origin → pool)", "kind");
    for (title, width) in TABLE_HEADER.iter().zip(TABLE_WIDTHS) {
        let _ = write!(out, " {title:>width$}");
    }
    out.push('\n');
    for line in &report.lines {
        let _ = writeln!(
            out,
            "{:<32} {:<10}{}",
            pairing_label(line),
            line.key.kind,
            table_cells(&line.figures)
        );
    }
    let _ = writeln!(
        out,
        "{:<32} {:<10}{}",
        "total",
        "",
        table_cells(&report.total)
    );
    if report.lines.is_empty() {
        let _ = writeln!(out, "(no requests received in this window)");
    }
    let legend = legend(report);
    if !legend.is_empty() {
        let _ = writeln!(out, "\n{legend}");
    }
    out
}

/// A line's figures as the text of its cells, in column order: one source for the table and the
/// HTML page (the CSV keeps full precision).
fn display_cells(figures: &Figures) -> [String; 14] {
    [
        figures.requests.to_string(),
        figures.reported.to_string(),
        figures.returned.to_string(),
        figures.open.to_string(),
        format_seconds(figures.turnaround_median_seconds),
        format_seconds(figures.turnaround_p90_seconds),
        figures.sla_in_time.to_string(),
        figures.sla_late.to_string(),
        figures.sla_open_overdue.to_string(),
        format_share(figures.sla_compliance()),
        figures.critical.to_string(),
        format_seconds(figures.critical_ack_median_seconds),
        format_seconds(figures.critical_ack_p90_seconds),
        figures.critical_unacknowledged().to_string(),
    ]
}

fn table_cells(figures: &Figures) -> String {
    let cells = display_cells(figures);
    let mut out = String::new();
    for (cell, width) in cells.iter().zip(TABLE_WIDTHS) {
        let _ = write!(out, " {cell:>width$}");
    }
    out
}

/// Code → name for every hospital and pool in the report.
fn legend(report: &Report) -> String {
    let mut entries = std::collections::BTreeMap::new();
    for line in &report.lines {
        entries.insert(line.key.origin.clone(), line.names.origin_name.clone());
        if let (Some(pool), Some(name)) = (&line.key.pool, &line.names.pool_name) {
            let hospital = match (
                &line.names.reviewer_hospital,
                &line.names.reviewer_hospital_name,
            ) {
                (Some(code), Some(hospital)) => format!(" — {code} {hospital}"),
                _ => String::new(),
            };
            entries.insert(pool.clone(), format!("{name}{hospital}"));
        }
    }
    let mut out = String::new();
    for (code, name) in entries {
        let _ = writeln!(out, "  {code:<14} {name}");
    }
    out
}

/// The CSV columns, in order. Durations are seconds, the SLA share a percentage; an empty field
/// means "nothing to measure" (no reported request, no acknowledged critical value).
pub const CSV_HEADER: [&str; 24] = [
    "line",
    "origin",
    "origin_name",
    "pool",
    "pool_name",
    "reviewer_hospital",
    "reviewer_hospital_name",
    "kind",
    "requests",
    "reported",
    "returned",
    "open",
    "turnaround_median_seconds",
    "turnaround_p90_seconds",
    "sla_in_time",
    "sla_late",
    "sla_open_overdue",
    "sla_compliance_percent",
    "critical_values",
    "critical_acknowledged",
    "critical_unacknowledged",
    "critical_ack_median_seconds",
    "critical_ack_p90_seconds",
    "window",
];

/// The report as CSV (RFC 4180: CRLF line ends, fields quoted when they hold a comma, quote or
/// line break), one record per pairing × kind and a last record `total`.
pub fn render_csv(report: &Report) -> String {
    let window = format!(
        "{}/{}",
        report.window.from.to_rfc3339(),
        report.window.to.to_rfc3339()
    );
    let mut out = csv_record(CSV_HEADER.iter().map(|title| title.to_string()));
    for line in &report.lines {
        let names = &line.names;
        let mut fields = vec![
            "pairing".to_owned(),
            line.key.origin.clone(),
            names.origin_name.clone(),
            line.key.pool.clone().unwrap_or_default(),
            names.pool_name.clone().unwrap_or_default(),
            names.reviewer_hospital.clone().unwrap_or_default(),
            names.reviewer_hospital_name.clone().unwrap_or_default(),
            line.key.kind.clone(),
        ];
        fields.extend(csv_figures(&line.figures));
        fields.push(window.clone());
        out.push_str(&csv_record(fields));
    }
    let mut fields = vec!["total".to_owned()];
    fields.extend(std::iter::repeat_n(String::new(), 7));
    fields.extend(csv_figures(&report.total));
    fields.push(window);
    out.push_str(&csv_record(fields));
    out
}

fn csv_figures(figures: &Figures) -> Vec<String> {
    let seconds = |value: Option<f64>| value.map(|s| format!("{s:.3}")).unwrap_or_default();
    vec![
        figures.requests.to_string(),
        figures.reported.to_string(),
        figures.returned.to_string(),
        figures.open.to_string(),
        seconds(figures.turnaround_median_seconds),
        seconds(figures.turnaround_p90_seconds),
        figures.sla_in_time.to_string(),
        figures.sla_late.to_string(),
        figures.sla_open_overdue.to_string(),
        figures
            .sla_compliance()
            .map(|share| format!("{:.2}", 100.0 * share))
            .unwrap_or_default(),
        figures.critical.to_string(),
        figures.critical_acknowledged.to_string(),
        figures.critical_unacknowledged().to_string(),
        seconds(figures.critical_ack_median_seconds),
        seconds(figures.critical_ack_p90_seconds),
    ]
}

fn csv_record(fields: impl IntoIterator<Item = String>) -> String {
    let quoted: Vec<String> = fields.into_iter().map(|field| csv_field(&field)).collect();
    format!("{}\r\n", quoted.join(","))
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests;
