#![allow(clippy::unwrap_used)]

use super::*;
use store::reports::{PairingKey, PairingNames};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn line(origin: &str, origin_name: &str, pool: &str, kind: &str, figures: Figures) -> ReportLine {
    ReportLine {
        key: PairingKey {
            origin: origin.into(),
            pool: Some(pool.into()),
            kind: kind.into(),
        },
        names: PairingNames {
            origin_name: origin_name.into(),
            pool_name: Some(format!("{pool} pool")),
            reviewer_hospital: Some("HN-XY".into()),
            reviewer_hospital_name: Some("湘雅医院".into()),
        },
        figures,
    }
}

fn sample() -> Report {
    let ecg = Figures {
        requests: 12,
        reported: 9,
        returned: 1,
        open: 2,
        turnaround_median_seconds: Some(250.0),
        turnaround_p90_seconds: Some(750.5),
        sla_in_time: 7,
        sla_late: 2,
        sla_open_overdue: 1,
        critical: 2,
        critical_acknowledged: 1,
        critical_ack_median_seconds: Some(185.0),
        critical_ack_p90_seconds: Some(185.0),
    };
    let imaging = Figures {
        requests: 3,
        open: 3,
        ..Figures::default()
    };
    Report {
        window: Window {
            from: at("2026-11-01T00:00:00+08:00"),
            to: at("2026-12-01T00:00:00+08:00"),
        },
        as_of: at("2026-12-06T10:00:00Z"),
        lines: vec![
            line(
                "HN-HH-001",
                "怀化市第一人民医院, \"总院\"",
                "xy-ecg",
                "ecg",
                ecg.clone(),
            ),
            line(
                "HN-ZJJ-001",
                "张家界市人民医院 <A&B>",
                "xy-imaging",
                "imaging",
                imaging,
            ),
        ],
        total: Figures {
            requests: 15,
            open: 5,
            ..ecg
        },
    }
}

/// Splits RFC 4180 CSV into records of fields (quoted fields, doubled quotes, CRLF).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    records
}

#[test]
fn a_date_in_to_is_the_end_of_that_day_in_the_given_offset() {
    let beijing = parse_offset("+08:00").unwrap();
    let args = ReportArgs {
        from: parse_time_arg("2026-11-01").unwrap(),
        to: parse_time_arg("2026-11-30").unwrap(),
        utc_offset: beijing,
        format: Format::Table,
        out: None,
    };
    let window = window(&args).unwrap();
    assert_eq!(window.from, at("2026-10-31T16:00:00Z"));
    assert_eq!(window.to, at("2026-11-30T16:00:00Z"));

    let instant = parse_time_arg("2026-11-01T08:00:00Z").unwrap();
    assert_eq!(
        instant.resolve(beijing, End::To).unwrap(),
        at("2026-11-01T08:00:00Z"),
        "an RFC 3339 time carries its own offset"
    );
    let local = parse_time_arg("2026-11-01 08:30").unwrap();
    assert_eq!(
        local.resolve(beijing, End::From).unwrap(),
        at("2026-11-01T00:30:00Z")
    );
    assert!(parse_time_arg("last month").is_err());
    assert!(parse_offset("Beijing").is_err());
    assert_eq!(parse_offset("Z").unwrap().local_minus_utc(), 0);
}

#[test]
fn an_inverted_window_is_refused() {
    let args = ReportArgs {
        from: parse_time_arg("2026-11-30").unwrap(),
        to: parse_time_arg("2026-11-01").unwrap(),
        utc_offset: Utc.fix(),
        format: Format::Csv,
        out: None,
    };
    assert!(window(&args).is_err());
}

#[test]
fn the_command_line_reads_the_report_arguments() {
    let cli = crate::Cli::parse_args([
        "relayctl",
        "report",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--format",
        "html",
        "--out",
        "/tmp/november.html",
    ])
    .unwrap();
    let crate::Command::Report(args) = cli.command else {
        panic!("{cli:?}")
    };
    assert_eq!(args.format, Format::Html);
    assert_eq!(args.out, Some(PathBuf::from("/tmp/november.html")));
    assert_eq!(args.utc_offset.local_minus_utc(), 0);
    assert!(crate::Cli::parse_args(["relayctl", "report", "--from", "2026-11-01"]).is_err());
}

#[test]
fn durations_and_shares_print_as_an_operator_reads_them() {
    assert_eq!(format_seconds(None), "-");
    assert_eq!(format_seconds(Some(0.25)), "0.2s");
    assert_eq!(format_seconds(Some(42.0)), "42.0s");
    assert_eq!(format_seconds(Some(750.5)), "12m31s");
    assert_eq!(format_seconds(Some(7_500.0)), "2h5m");
    assert_eq!(format_share(Some(0.7)), "70.0 %");
    assert_eq!(format_share(None), "-");
}

#[test]
fn the_table_has_a_row_per_pairing_a_total_and_a_legend_of_names() {
    let table = render_table(&sample(), parse_offset("+08:00").unwrap());
    assert!(
        table.contains("from 2026-11-01 00:00:00 +08:00 (inclusive) to 2026-12-01 00:00:00 +08:00"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|row| row.starts_with("HN-HH-001 → xy-ecg"))
        .unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[4..],
        [
            "12", "9", "1", "2", "4m10s", "12m31s", "7", "2", "1", "70.0", "%", "2", "3m5s",
            "3m5s", "1"
        ],
        "{table}"
    );
    let total = table.lines().find(|row| row.starts_with("total")).unwrap();
    assert!(total.contains(" 15 "), "{total}");
    assert!(
        table.contains("HN-ZJJ-001     张家界市人民医院 <A&B>"),
        "{table}"
    );
    assert!(
        table.contains("xy-ecg         xy-ecg pool — HN-XY 湘雅医院"),
        "{table}"
    );
}

#[test]
fn the_csv_is_rfc_4180_with_a_header_and_parses_back_to_the_figures() {
    let report = sample();
    let csv = render_csv(&report);
    assert!(csv.ends_with("\r\n"));
    let records = parse_csv(&csv);
    assert_eq!(records.len(), 1 + report.lines.len() + 1);
    assert_eq!(records[0], CSV_HEADER);
    for record in &records {
        assert_eq!(record.len(), CSV_HEADER.len(), "{record:?}");
    }
    let field = |record: &Vec<String>, name: &str| {
        let index = CSV_HEADER.iter().position(|title| *title == name).unwrap();
        record[index].clone()
    };
    let first = &records[1];
    assert_eq!(field(first, "origin_name"), "怀化市第一人民医院, \"总院\"");
    assert_eq!(field(first, "requests"), "12");
    assert_eq!(field(first, "turnaround_p90_seconds"), "750.500");
    assert_eq!(field(first, "sla_compliance_percent"), "70.00");
    assert_eq!(field(first, "critical_unacknowledged"), "1");
    assert_eq!(
        field(first, "window"),
        "2026-10-31T16:00:00+00:00/2026-11-30T16:00:00+00:00"
    );
    let imaging = &records[2];
    assert_eq!(field(imaging, "turnaround_median_seconds"), "");
    assert_eq!(field(imaging, "sla_compliance_percent"), "");
    let total = records.last().unwrap();
    assert_eq!(field(total, "line"), "total");
    assert_eq!(field(total, "origin"), "");
    assert_eq!(field(total, "requests"), "15");
}

#[test]
fn the_html_page_is_self_contained_utf8_with_svg_charts_and_escaped_names() {
    let html = render_html(&sample(), parse_offset("+08:00").unwrap());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<meta charset=\"utf-8\">"));
    assert!(
        html.contains("怀化市第一人民医院, &quot;总院&quot;"),
        "{html}"
    );
    assert!(html.contains("张家界市人民医院 &lt;A&amp;B&gt;"), "{html}");
    assert!(!html.contains("<A&B>"), "names are escaped");
    assert_eq!(
        html.matches("<svg").count(),
        3,
        "turnaround, SLA and critical charts"
    );
    assert!(html.contains("median 4m10s, p90 12m31s"), "{html}");
    assert!(html.contains("70.0 % (7 in time, 2 late, 1 open overdue)"));
    assert!(html.contains("2 critical, 1 unacknowledged"));
    for external in ["<script", "src=", "href=", "@import", "url(", "<link"] {
        assert!(
            !html.contains(external),
            "{external} in a page meant for offline intranets"
        );
    }
    // Every <svg> is closed, and the only URL is the SVG namespace.
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    assert_eq!(
        html.matches("http").count(),
        html.matches("http://www.w3.org/2000/svg").count()
    );
}

#[test]
fn an_empty_window_still_renders_every_format() {
    let empty = Report {
        lines: Vec::new(),
        total: Figures::default(),
        ..sample()
    };
    let table = render_table(&empty, Utc.fix());
    assert!(table.contains("(no requests received in this window)"));
    assert_eq!(parse_csv(&render_csv(&empty)).len(), 2);
    let html = render_html(&empty, Utc.fix());
    assert!(html.contains("no reported request in this window"));
    assert!(!html.contains("<svg"), "no chart without data");
}
