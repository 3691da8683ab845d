//! `relayctl report`: requests driven through a real relay for several pairings and kinds —
//! reported, reported late, returned, left open past due, critical values acknowledged or not —
//! and the report's figures checked against an independent computation, in Rust, from a plain
//! SELECT of the raw rows in PostgreSQL; a request received outside the window is left out; the
//! CSV parses back to the same numbers; the HTML names every pairing and draws SVG charts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use sqlx::PgPool;
use store::reports::{Report, Window};
use tests::fixtures::{ecg_request, imaging_request};
use tests::reports::{
    Outcome, acknowledge_next_critical, assert_same, db_clock, drive, expected_figures, parse_csv,
    registry,
};
use tests::{HOSPITAL_A, HOSPITAL_B, TestRelay, tokens, wait_until};

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
