//! `relayctl critical`: the critical-value (危急值) register. Per notification: the origin told,
//! the request, the finding, the reviewer, when it was sent, how many reminders, who
//! acknowledged (staff id and name), the read-back and whether it matched, and how long the
//! acknowledgement took; open notifications are shown as open with their age.

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::Args;
use std::fmt::Write as _;
use store::critical::{RegisterLine, RegisterQuery};

#[derive(Clone, Debug, Default, Args)]
pub struct CriticalArgs {
    /// Only notifications not yet acknowledged.
    #[arg(long)]
    pub open: bool,
    /// Only those notified at or after this time (RFC 3339, `YYYY-MM-DD HH:MM` UTC, or a date).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// Only those notified before this time (same forms as --from).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Comma-separated values with a header line, for a spreadsheet or the quality office.
    #[arg(long)]
    pub csv: bool,
}

pub async fn run(args: CriticalArgs, db: &sqlx::PgPool) -> anyhow::Result<()> {
    let query = RegisterQuery {
        open_only: args.open,
        from: args.from,
        to: args.to,
    };
    let lines = store::critical::register(db, &query)
        .await
        .context("reading the critical-value register")?;
    if args.csv {
        print!("{}", render_csv(&lines));
    } else {
        print!("{}", render_table(&lines));
    }
    Ok(())
}

/// Accepts RFC 3339, `YYYY-MM-DD HH:MM[:SS]` (UTC) or `YYYY-MM-DD` (midnight UTC).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(at.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc())
        .ok_or_else(|| format!("{text:?} is not a time (RFC 3339, YYYY-MM-DD HH:MM or YYYY-MM-DD)"))
}

/// The register as a table, one notification per line.
pub fn render_table(lines: &[RegisterLine]) -> String {
    let mut out = String::new();
    if lines.is_empty() {
        out.push_str("no critical notifications\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<12}  {:<20}  {:<16}  {:<14}  {:>9}  {:<34}  {:<11}  read-back  finding",
        "origin", "request", "notified (UTC)", "reviewer", "reminders", "acknowledged by", "took"
    );
    for line in lines {
        let (by, took, read_back) = if line.is_open() {
            (
                "OPEN".to_owned(),
                format!("open {:.0} min", line.age_minutes),
                "-".to_owned(),
            )
        } else {
            (
                format!(
                    "{} {}",
                    line.clinician_id.as_deref().unwrap_or_default(),
                    line.clinician_name.as_deref().unwrap_or_default()
                ),
                format!("{:.1} min", line.minutes_to_acknowledge.unwrap_or_default()),
                format!(
                    "{} \"{}\"",
                    if line.read_back_matches == Some(true) {
                        "matches"
                    } else {
                        "DIFFERS"
                    },
                    line.read_back.as_deref().unwrap_or_default()
                ),
            )
        };
        let _ = writeln!(
            out,
            "{:<12}  {:<20}  {:<16}  {:<14}  {:>9}  {:<34}  {:<11}  {read_back}  {}",
            line.origin,
            line.request_id,
            line.notified_at.format("%Y-%m-%d %H:%M"),
            line.reviewer_id,
            line.reminders_sent,
            by,
            took,
            line.finding,
        );
    }
    let open = lines.iter().filter(|line| line.is_open()).count();
    let _ = writeln!(out, "{} notifications, {open} open", lines.len());
    out
}

/// The register as CSV (RFC 4180 quoting), every column of [`RegisterLine`].
pub fn render_csv(lines: &[RegisterLine]) -> String {
    let mut out = String::from(
        "notification_id,origin,request_id,request_uuid,report_version,finding,reviewer_id,reviewer_hospital,\
         notified_at,acknowledge_by,reminders_sent,status,acknowledged_at,clinician_id,clinician_name,\
         read_back,read_back_matches,minutes_to_acknowledge,age_minutes\n",
    );
    for line in lines {
        let fields = [
            line.notification_id.to_string(),
            line.origin.clone(),
            line.request_id.clone(),
            line.request_uuid.to_string(),
            line.report_version.to_string(),
            line.finding.clone(),
            line.reviewer_id.clone(),
            line.reviewer_hospital.clone(),
            line.notified_at.to_rfc3339(),
            line.acknowledge_by.to_rfc3339(),
            line.reminders_sent.to_string(),
            if line.is_open() {
                "open"
            } else {
                "acknowledged"
            }
            .to_owned(),
            line.acknowledged_at
                .map(|at| at.to_rfc3339())
                .unwrap_or_default(),
            line.clinician_id.clone().unwrap_or_default(),
            line.clinician_name.clone().unwrap_or_default(),
            line.read_back.clone().unwrap_or_default(),
            line.read_back_matches
                .map(|m| m.to_string())
                .unwrap_or_default(),
            line.minutes_to_acknowledge
                .map(|m| format!("{m:.2}"))
                .unwrap_or_default(),
            format!("{:.2}", line.age_minutes),
        ];
        let quoted: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
        let _ = writeln!(out, "{}", quoted.join(","));
    }
    out
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_are_read_in_the_forms_an_operator_types() {
        let midnight = parse_time("2026-11-22").unwrap();
        assert_eq!(midnight.to_rfc3339(), "2026-11-22T00:00:00+00:00");
        assert_eq!(
            parse_time("2026-11-22 08:30").unwrap().to_rfc3339(),
            "2026-11-22T08:30:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-22T16:30:00+08:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-22T08:30:00+00:00"
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn csv_fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(csv_field("STEMI"), "STEMI");
        assert_eq!(csv_field("VT, sustained"), "\"VT, sustained\"");
        assert_eq!(csv_field("read \"back\""), "\"read \"\"back\"\"\"");
    }
}
