//! `relayctl report`: requests driven through a real relay for several pairings and kinds —
//! reported, reported late, returned, left open past due, critical values acknowledged or not —
//! and the report's figures checked against an independent computation, in Rust, from a plain
//! SELECT of the raw rows in PostgreSQL; a request received outside the window is left out; the
//! CSV parses back to the same numbers; the HTML names every pairing and draws SVG charts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use contract::v1;
use prost::Message;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use store::reports::{Figures, PairingKey, Report, Window};
use tests::critical::{
    FINDING, acknowledged_line, acknowledgement, next_critical, publish_acknowledgement,
};
use tests::fixtures::{ecg_request, imaging_request};
use tests::{HOSPITAL_A, HOSPITAL_B, TestRelay, report_body, tokens, wait_until};
use uuid::Uuid;

/// The test registry with `guest` as the broker user of `guest_hospital`, hospitals named as
/// they are in Hunan (the report must carry Chinese names through), the guest hospital listed
/// last so that a reload moves the broker user without colliding with the unique constraint.
fn registry(guest_hospital: &str) -> store::registry::RegistryFile {
    let mut registry = tests::test_registry(guest_hospital);
    for hospital in &mut registry.hospitals {
        hospital.name = match hospital.code.as_str() {
            "HN-XY" => "中南大学湘雅医院".into(),
            "HN-PPH" => "湖南省人民医院".into(),
            HOSPITAL_A => "怀化市第一人民医院".into(),
            HOSPITAL_B => "张家界市人民医院".into(),
            _ => hospital.name.clone(),
        };
    }
    for pool in &mut registry.pools {
        pool.name = format!("{} 远程诊断组", pool.code);
    }
    registry
        .hospitals
        .sort_by_key(|hospital| hospital.broker_user.as_deref() == Some("guest"));
    registry
}

async fn db_clock(db: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar!(r#"select clock_timestamp() as "now!""#)
        .fetch_one(db)
        .await
        .unwrap()
}

/// What a reviewer does with a request.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Report {
        critical: bool,
    },
    /// Reported after its due time (the test moves `due_at` into the past first).
    ReportLate,
    Return,
}

/// Publishes a request as `origin`, waits until it is recorded, claims it (it must be the one
/// handed out) and settles it; returns its id.
async fn drive(
    relay: &TestRelay,
    origin: &str,
    request: v1::ReviewRequest,
    token: &str,
    outcome: Outcome,
) -> Uuid {
    let request_id = request.request_id.clone();
    relay.broker.publish_request(&request).await;
    let id = relay.request_uuid(origin, &request_id).await;
    let claimed = relay.claim_next(token).await;
    assert_eq!(
        claimed["request_uuid"].as_str(),
        Some(id.to_string().as_str())
    );
    let (status, body) = match outcome {
        Outcome::Report { critical } => {
            relay
                .report(token, &id.to_string(), report_body(critical))
                .await
        }
        Outcome::ReportLate => {
            sqlx::query!(
                "update review_requests set due_at = now() - interval '1 minute' where id = $1",
                id
            )
            .execute(&relay.db)
            .await
            .unwrap();
            relay
                .report(token, &id.to_string(), report_body(false))
                .await
        }
        Outcome::Return => {
            relay
                .return_request(token, &id.to_string(), "unreadable_signal")
                .await
        }
    };
    assert!(status == 201 || status == 200, "{status}: {body}");
    id
}

/// The next critical notification of `origin`, acknowledged by a clinician there.
async fn acknowledge_next_critical(relay: &TestRelay, origin: &str) {
    let notification = next_critical(relay, origin).await;
    let ack = acknowledgement(&notification, origin, FINDING);
    publish_acknowledgement(relay, origin, ack.encode_to_vec()).await;
    acknowledged_line(relay, &notification.notification_id).await;
}

/// `percentile_cont`: linear interpolation between the two nearest ranks.
fn percentile(values: &[f64], fraction: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let last = sorted.len().checked_sub(1)?;
    let position = fraction * last as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    Some(sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64))
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap() as f64 / 1e6
}

/// The report's figures computed independently: raw rows, grouped and counted in Rust.
async fn expected_figures(
    db: &PgPool,
    window: Window,
    as_of: DateTime<Utc>,
) -> BTreeMap<Option<PairingKey>, Figures> {
    let requests = sqlx::query!(
        "select id, origin_hospital, pool_code, kind, received_at, due_at from review_requests"
    )
    .fetch_all(db)
    .await
    .unwrap();
    let mut first_report: BTreeMap<Uuid, DateTime<Utc>> = BTreeMap::new();
    for row in sqlx::query!("select request_uuid, reported_at from review_results")
        .fetch_all(db)
        .await
        .unwrap()
    {
        let first = first_report
            .entry(row.request_uuid)
            .or_insert(row.reported_at);
        *first = (*first).min(row.reported_at);
    }
    let returned: BTreeSet<Uuid> = sqlx::query_scalar!("select request_uuid from request_returns")
        .fetch_all(db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let notifications = sqlx::query!(
        "select request_uuid, notified_at, acknowledged_at from critical_notifications"
    )
    .fetch_all(db)
    .await
    .unwrap();

    let mut turnarounds: BTreeMap<Option<PairingKey>, Vec<f64>> = BTreeMap::new();
    let mut ack_times: BTreeMap<Option<PairingKey>, Vec<f64>> = BTreeMap::new();
    let mut figures: BTreeMap<Option<PairingKey>, Figures> = BTreeMap::new();
    let mut key_of = BTreeMap::new();
    for request in requests
        .iter()
        .filter(|r| r.received_at >= window.from && r.received_at < window.to)
    {
        let key = PairingKey {
            origin: request.origin_hospital.clone(),
            pool: request.pool_code.clone(),
            kind: request.kind.clone(),
        };
        key_of.insert(request.id, key.clone());
        for group in [Some(key), None] {
            let line = figures.entry(group.clone()).or_default();
            line.requests += 1;
            let was_returned = returned.contains(&request.id);
            line.returned += i64::from(was_returned);
            match first_report.get(&request.id) {
                Some(reported_at) => {
                    line.reported += 1;
                    turnarounds
                        .entry(group)
                        .or_default()
                        .push(seconds(request.received_at, *reported_at));
                    if let Some(due) = request.due_at {
                        line.sla_in_time += i64::from(*reported_at <= due);
                        line.sla_late += i64::from(*reported_at > due);
                    }
                }
                None if !was_returned => {
                    line.open += 1;
                    line.sla_open_overdue +=
                        i64::from(request.due_at.is_some_and(|due| due <= as_of));
                }
                None => {}
            }
        }
    }
    for notification in &notifications {
        let Some(key) = key_of.get(&notification.request_uuid) else {
            continue;
        };
        for group in [Some(key.clone()), None] {
            let line = figures.entry(group.clone()).or_default();
            line.critical += 1;
            if let Some(acknowledged_at) = notification.acknowledged_at {
                line.critical_acknowledged += 1;
                ack_times
                    .entry(group)
                    .or_default()
                    .push(seconds(notification.notified_at, acknowledged_at));
            }
        }
    }
    for (group, line) in figures.iter_mut() {
        let times = turnarounds.get(group).cloned().unwrap_or_default();
        line.turnaround_median_seconds = percentile(&times, 0.5);
        line.turnaround_p90_seconds = percentile(&times, 0.9);
        let acks = ack_times.get(group).cloned().unwrap_or_default();
        line.critical_ack_median_seconds = percentile(&acks, 0.5);
        line.critical_ack_p90_seconds = percentile(&acks, 0.9);
    }
    figures
}

/// Equal, with floating-point durations equal to the microsecond.
fn assert_same(what: &str, got: &Figures, expected: &Figures) {
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-6,
        (a, b) => a == b,
    };
    let durations = |f: &Figures| {
        [
            f.turnaround_median_seconds,
            f.turnaround_p90_seconds,
            f.critical_ack_median_seconds,
            f.critical_ack_p90_seconds,
        ]
    };
    assert!(
        durations(got)
            .iter()
            .zip(durations(expected))
            .all(|(a, b)| close(*a, b)),
        "{what}: durations {got:?} != {expected:?}"
    );
    let counts = |f: &Figures| {
        [
            f.requests,
            f.reported,
            f.returned,
            f.open,
            f.sla_in_time,
            f.sla_late,
            f.sla_open_overdue,
            f.critical,
            f.critical_acknowledged,
        ]
    };
    assert_eq!(
        counts(got),
        counts(expected),
        "{what}: counts {got:?} != {expected:?}"
    );
}

/// Splits RFC 4180 CSV into records of fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut records, mut record, mut field, mut quoted) =
        (Vec::new(), Vec::new(), String::new(), false);
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

/// Checks the CSV against the report: every line's numbers read back as the report has them.
fn check_csv(report: &Report) {
    let records = parse_csv(&relayctl::report::render_csv(report));
    let header = &records[0];
    assert_eq!(header, &relayctl::report::CSV_HEADER);
    let column = |name: &str| header.iter().position(|title| title == name).unwrap();
    let number = |record: &[String], name: &str| -> Option<f64> {
        let text = &record[column(name)];
        (!text.is_empty()).then(|| text.parse().unwrap())
    };
    assert_eq!(records.len(), report.lines.len() + 2);
    let lines = report
        .lines
        .iter()
        .map(|line| &line.figures)
        .chain([&report.total]);
    for (record, figures) in records[1..].iter().zip(lines) {
        let close = |name: &str, expected: Option<f64>, tolerance: f64| {
            let got = number(record, name);
            assert!(
                match (got, expected) {
                    (Some(a), Some(b)) => (a - b).abs() <= tolerance,
                    (a, b) => a == b,
                },
                "{name}: csv {got:?}, report {expected:?}"
            );
        };
        close("requests", Some(figures.requests as f64), 0.0);
        close("reported", Some(figures.reported as f64), 0.0);
        close("returned", Some(figures.returned as f64), 0.0);
        close("open", Some(figures.open as f64), 0.0);
        close(
            "turnaround_median_seconds",
            figures.turnaround_median_seconds,
            5e-4,
        );
        close(
            "turnaround_p90_seconds",
            figures.turnaround_p90_seconds,
            5e-4,
        );
        close("sla_late", Some(figures.sla_late as f64), 0.0);
        close(
            "sla_open_overdue",
            Some(figures.sla_open_overdue as f64),
            0.0,
        );
        close(
            "sla_compliance_percent",
            figures.sla_compliance().map(|s| 100.0 * s),
            5e-3,
        );
        close("critical_values", Some(figures.critical as f64), 0.0);
        close(
            "critical_unacknowledged",
            Some(figures.critical_unacknowledged() as f64),
            0.0,
        );
        close(
            "critical_ack_median_seconds",
            figures.critical_ack_median_seconds,
            5e-4,
        );
        close(
            "critical_ack_p90_seconds",
            figures.critical_ack_p90_seconds,
            5e-4,
        );
    }
    let origins: Vec<&str> = records[1..]
        .iter()
        .map(|record| record[column("origin")].as_str())
        .collect();
    let expected: Vec<&str> = report
        .lines
        .iter()
        .map(|line| line.key.origin.as_str())
        .chain([""])
        .collect();
    assert_eq!(origins, expected);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_report_matches_the_rows_in_postgresql_per_pairing_and_kind(db: PgPool) {
    let relay = TestRelay::start_with(db, &registry(HOSPITAL_A)).await;
    let stat = v1::Priority::Stat;

    // Before the window opens: one ECG, reported.
    drive(
        &relay,
        HOSPITAL_A,
        ecg_request(HOSPITAL_A, "RPT-EARLY", stat, "HR06001"),
        tokens::ECG,
        Outcome::Report { critical: false },
    )
    .await;
    let from = db_clock(&relay.db).await;

    // Huaihua → Xiangya ECG: a critical report acknowledged, a report, a late report, a return.
    drive(
        &relay,
        HOSPITAL_A,
        ecg_request(HOSPITAL_A, "RPT-A-ECG-1", stat, "HR06001"),
        tokens::ECG,
        Outcome::Report { critical: true },
    )
    .await;
    acknowledge_next_critical(&relay, HOSPITAL_A).await;
    drive(
        &relay,
        HOSPITAL_A,
        ecg_request(HOSPITAL_A, "RPT-A-ECG-2", v1::Priority::Asap, "E07500"),
        tokens::ECG,
        Outcome::Report { critical: false },
    )
    .await;
    drive(
        &relay,
        HOSPITAL_A,
        ecg_request(HOSPITAL_A, "RPT-A-ECG-3", v1::Priority::Urgent, "E07501"),
        tokens::ECG,
        Outcome::ReportLate,
    )
    .await;
    drive(
        &relay,
        HOSPITAL_A,
        ecg_request(HOSPITAL_A, "RPT-A-ECG-4", v1::Priority::Routine, "E07502"),
        tokens::ECG,
        Outcome::Return,
    )
    .await;
    // Huaihua → Xiangya imaging: a critical report nobody acknowledges, and a report.
    drive(
        &relay,
        HOSPITAL_A,
        imaging_request(HOSPITAL_A, "RPT-A-CT-1", stat),
        tokens::IMAGING,
        Outcome::Report { critical: true },
    )
    .await;
    drive(
        &relay,
        HOSPITAL_A,
        imaging_request(HOSPITAL_A, "RPT-A-CT-2", v1::Priority::Urgent),
        tokens::IMAGING,
        Outcome::Report { critical: false },
    )
    .await;

    // Zhangjiajie → Xiangya ECG: the tests' broker user becomes Zhangjiajie's (an audited
    // registry load, as an operator would do it).
    store::registry::load(&relay.db, &registry(HOSPITAL_B))
        .await
        .unwrap();
    drive(
        &relay,
        HOSPITAL_B,
        ecg_request(HOSPITAL_B, "RPT-B-ECG-1", stat, "HR06002"),
        tokens::ECG,
        Outcome::Report { critical: true },
    )
    .await;
    acknowledge_next_critical(&relay, HOSPITAL_B).await;
    drive(
        &relay,
        HOSPITAL_B,
        ecg_request(HOSPITAL_B, "RPT-B-ECG-2", v1::Priority::Routine, "E07503"),
        tokens::ECG,
        Outcome::Report { critical: false },
    )
    .await;

    // Back to Huaihua: an ECG left waiting past its due time (the SLA clock reroutes it to the
    // province's backup ECG pool, a pairing of its own in the report) and a CT not yet due.
    store::registry::load(&relay.db, &registry(HOSPITAL_A))
        .await
        .unwrap();
    for request in [
        ecg_request(
            HOSPITAL_A,
            "RPT-A-ECG-OPEN",
            v1::Priority::Routine,
            "E07504",
        ),
        imaging_request(HOSPITAL_A, "RPT-A-CT-OPEN", v1::Priority::Routine),
    ] {
        relay.broker.publish_request(&request).await;
    }
    let overdue = relay.request_uuid(HOSPITAL_A, "RPT-A-ECG-OPEN").await;
    relay.request_uuid(HOSPITAL_A, "RPT-A-CT-OPEN").await;
    sqlx::query!(
        "update review_requests set due_at = now() - interval '1 minute' where id = $1",
        overdue
    )
    .execute(&relay.db)
    .await
    .unwrap();
    // The ladder's next step is 10 minutes away: nothing moves while the report is checked.
    wait_until("the overdue ECG rerouted to the backup pool", || async {
        sqlx::query_scalar!(
            "select pool_code from review_requests where id = $1 and escalation_level = 1",
            overdue
        )
        .fetch_optional(&relay.db)
        .await
        .unwrap()
        .flatten()
        .as_deref()
            == Some("pph-ecg")
    })
    .await;
    let window = Window {
        from,
        to: db_clock(&relay.db).await,
    };

    let report = store::reports::report(&relay.db, window).await.unwrap();
    let expected = expected_figures(&relay.db, window, report.as_of).await;

    let keys: Vec<(String, Option<String>, String)> = report
        .lines
        .iter()
        .map(|line| {
            (
                line.key.origin.clone(),
                line.key.pool.clone(),
                line.key.kind.clone(),
            )
        })
        .collect();
    let pairing = |origin: &str, pool: &str, kind: &str| {
        (origin.to_owned(), Some(pool.to_owned()), kind.to_owned())
    };
    assert_eq!(
        keys,
        [
            pairing(HOSPITAL_A, "pph-ecg", "ecg"),
            pairing(HOSPITAL_A, "xy-ecg", "ecg"),
            pairing(HOSPITAL_A, "xy-imaging", "imaging"),
            pairing(HOSPITAL_B, "xy-ecg", "ecg"),
        ]
    );
    assert_eq!(expected.len(), report.lines.len() + 1, "{expected:?}");
    for line in &report.lines {
        assert_same(
            &format!("{:?}", line.key),
            &line.figures,
            &expected[&Some(line.key.clone())],
        );
    }
    assert_same("total", &report.total, &expected[&None]);

    // The figures the scenario made, so that the independent computation cannot agree with the
    // report by both being wrong in the same way.
    let figures_of = |origin: &str, pool: &str| {
        &report
            .lines
            .iter()
            .find(|line| line.key.origin == origin && line.key.pool.as_deref() == Some(pool))
            .unwrap()
            .figures
    };
    let huaihua_ecg = figures_of(HOSPITAL_A, "xy-ecg");
    assert_eq!(
        (
            huaihua_ecg.requests,
            huaihua_ecg.reported,
            huaihua_ecg.returned,
            huaihua_ecg.sla_in_time,
            huaihua_ecg.sla_late
        ),
        (4, 3, 1, 2, 1)
    );
    assert_eq!(
        (huaihua_ecg.critical, huaihua_ecg.critical_acknowledged),
        (1, 1)
    );
    assert!(huaihua_ecg.critical_ack_median_seconds.is_some());
    let rerouted = figures_of(HOSPITAL_A, "pph-ecg");
    assert_eq!(
        (rerouted.requests, rerouted.open, rerouted.sla_open_overdue),
        (1, 1, 1)
    );
    assert_eq!(
        rerouted.sla_compliance(),
        Some(0.0),
        "open past due counts as missed"
    );
    let imaging = figures_of(HOSPITAL_A, "xy-imaging");
    assert_eq!(
        (
            imaging.requests,
            imaging.reported,
            imaging.open,
            imaging.sla_open_overdue
        ),
        (3, 2, 1, 0)
    );
    assert_eq!(
        (imaging.critical, imaging.critical_unacknowledged()),
        (1, 1)
    );
    assert_eq!(imaging.critical_ack_median_seconds, None);
    assert_eq!(
        (
            report.total.requests,
            report.total.reported,
            report.total.critical
        ),
        (10, 7, 3)
    );
    assert_eq!(
        report.total.sla_compliance(),
        Some(6.0 / 8.0),
        "6 in time of 7 reported, and 1 open overdue"
    );

    // Names from the registry.
    let zhangjiajie = report
        .lines
        .iter()
        .find(|line| line.key.origin == HOSPITAL_B)
        .unwrap();
    assert_eq!(zhangjiajie.names.origin_name, "张家界市人民医院");
    assert_eq!(
        zhangjiajie.names.pool_name.as_deref(),
        Some("xy-ecg 远程诊断组")
    );
    assert_eq!(
        zhangjiajie.names.reviewer_hospital_name.as_deref(),
        Some("中南大学湘雅医院")
    );

    // The request received before the window is in the earlier window, alone.
    let early = store::reports::report(
        &relay.db,
        Window {
            from: from - chrono::Duration::hours(1),
            to: from,
        },
    )
    .await
    .unwrap();
    assert_eq!(early.lines.len(), 1);
    assert_eq!((early.total.requests, early.total.reported), (1, 1));
    assert_eq!(early.lines[0].key.pool.as_deref(), Some("xy-ecg"));

    check_csv(&report);
    let html = relayctl::report::render_html(&report, utc());
    for name in [
        "怀化市第一人民医院",
        "张家界市人民医院",
        "中南大学湘雅医院",
        "湖南省人民医院",
    ] {
        assert!(html.contains(name), "{name} in the page");
    }
    for line in &report.lines {
        let label = relayctl::report::pairing_label(line);
        assert!(html.contains(&label), "{label} in the page");
    }
    assert!(html.contains("<svg"));
    let table = relayctl::report::render_table(&report, utc());
    assert!(
        table
            .lines()
            .any(|row| row.starts_with("total") && row.contains(" 10 ")),
        "{table}"
    );
    relay.stop().await;
}

fn utc() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(0).unwrap()
}
