//! Harness for the report tests: a registry named as in Hunan, requests driven to an outcome,
//! and the report's figures computed independently from the raw rows (plain SELECTs, grouped and
//! counted in Rust) to compare with `store::reports`.

use crate::critical::{
    FINDING, acknowledged_line, acknowledgement, next_critical, publish_acknowledgement,
};
use crate::{HOSPITAL_A, HOSPITAL_B, TestRelay, report_body};
use chrono::{DateTime, Utc};
use contract::v1;
use prost::Message;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use store::reports::{Figures, PairingKey, Window};
use uuid::Uuid;

/// The test registry with `guest` as the broker user of `guest_hospital`, hospitals named as
/// they are in Hunan (the report must carry Chinese names through), the guest hospital listed
/// last so that a reload moves the broker user without colliding with the unique constraint.
pub fn registry(guest_hospital: &str) -> store::registry::RegistryFile {
    let mut registry = crate::test_registry(guest_hospital);
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

pub async fn db_clock(db: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar!(r#"select clock_timestamp() as "now!""#)
        .fetch_one(db)
        .await
        .unwrap()
}

/// What a reviewer does with a request.
#[derive(Clone, Copy, PartialEq)]
pub enum Outcome {
    Report {
        critical: bool,
    },
    /// Reported after its due time (the test moves `due_at` into the past first).
    ReportLate,
    Return,
}

/// Publishes a request as `origin`, waits until it is recorded, claims it (it must be the one
/// handed out) and settles it; returns its id.
pub async fn drive(
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
pub async fn acknowledge_next_critical(relay: &TestRelay, origin: &str) {
    let notification = next_critical(relay, origin).await;
    let ack = acknowledgement(&notification, origin, FINDING);
    publish_acknowledgement(relay, origin, ack.encode_to_vec()).await;
    acknowledged_line(relay, &notification.notification_id).await;
}

/// `percentile_cont`: linear interpolation between the two nearest ranks.
pub fn percentile(values: &[f64], fraction: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let last = sorted.len().checked_sub(1)?;
    let position = fraction * last as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    Some(sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64))
}

pub fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap() as f64 / 1e6
}

/// The report's figures computed independently: raw rows, grouped and counted in Rust.
pub async fn expected_figures(
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
pub fn assert_same(what: &str, got: &Figures, expected: &Figures) {
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
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
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
