//! The figures `relayctl report` publishes per pairing and kind: what the hospitals of a pairing
//! programme (结对帮扶) report by hand today, computed from the rows the relay keeps.
//!
//! The window is a cohort: a request belongs to a report when the relay *received* it inside
//! `[from, to)`. Everything that later happened to those requests counts, whenever it happened
//! (up to the moment the report runs, `as_of`): a request received on the last evening of the
//! window and reported the next morning is in the window's turnaround figures. So a report for
//! a closed month changes only while that month's requests are still open, and two reports for
//! adjoining windows never count a request twice.
//!
//! A pairing is the origin hospital and the reviewer pool that holds the request: the pool that
//! read it for a reported or returned request (a claim is only ever made in the request's own
//! pool, and escalation never moves a request being read), the pool it waits in for an open one.
//! Percentiles are PostgreSQL's `percentile_cont` (linear interpolation between the two nearest
//! values), computed over the whole group, so the total line's median is the median of every
//! request, not a mean of medians.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::BTreeMap;

/// What the report covers: requests received in `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Which pairing and kind a line is about; `None` for the total line.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PairingKey {
    pub origin: String,
    /// `None` for requests never routed to a pool.
    pub pool: Option<String>,
    pub kind: String,
}

/// The names the registry gives a pairing's hospitals and pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairingNames {
    pub origin_name: String,
    pub pool_name: Option<String>,
    /// The provincial hospital the pool belongs to.
    pub reviewer_hospital: Option<String>,
    pub reviewer_hospital_name: Option<String>,
}

/// One line of the report: a pairing × kind, or the total.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Requests received in the window.
    pub requests: i64,
    /// Of those, reported at least once (remote diagnoses).
    pub reported: i64,
    /// Of those, returned by the reviewer (no diagnosis).
    pub returned: i64,
    /// Neither reported nor returned yet (waiting or being read).
    pub open: i64,
    /// Received → first report version signed, over the reported requests.
    pub turnaround_median_seconds: Option<f64>,
    pub turnaround_p90_seconds: Option<f64>,
    /// Reported requests whose first report was signed by `due_at`, and after it.
    pub sla_in_time: i64,
    pub sla_late: i64,
    /// Requests neither reported nor returned whose `due_at` had passed when the report ran:
    /// they can only be late, so they count against compliance now.
    pub sla_open_overdue: i64,
    /// Critical notifications (危急值) sent for the window's requests (one per critical report
    /// version), acknowledged, and how long acknowledgement took (notified → acknowledged).
    pub critical: i64,
    pub critical_acknowledged: i64,
    pub critical_ack_median_seconds: Option<f64>,
    pub critical_ack_p90_seconds: Option<f64>,
}

impl Figures {
    /// Share of the requests whose SLA outcome is settled that met it: in time ÷ (in time +
    /// late + open overdue). `None` when nothing is settled. Requests without an SLA policy, open
    /// requests not yet due, and returned requests are not counted either way.
    pub fn sla_compliance(&self) -> Option<f64> {
        let settled = self.sla_in_time + self.sla_late + self.sla_open_overdue;
        (settled > 0).then(|| self.sla_in_time as f64 / settled as f64)
    }

    /// Critical notifications not yet acknowledged when the report ran.
    pub fn critical_unacknowledged(&self) -> i64 {
        self.critical - self.critical_acknowledged
    }
}

/// One pairing × kind with its names and figures.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportLine {
    pub key: PairingKey,
    pub names: PairingNames,
    pub figures: Figures,
}

/// The whole report: one line per pairing × kind (ordered by origin, pool, kind) and the total.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub window: Window,
    /// The database's clock when the report ran: open requests and open critical values are
    /// counted as of this moment.
    pub as_of: DateTime<Utc>,
    pub lines: Vec<ReportLine>,
    pub total: Figures,
}

/// Computes the report for requests received in `window`.
pub async fn report(db: &PgPool, window: Window) -> sqlx::Result<Report> {
    let as_of = sqlx::query_scalar!(r#"select now() as "now!""#)
        .fetch_one(db)
        .await?;
    let mut lines: BTreeMap<PairingKey, ReportLine> = BTreeMap::new();
    let mut total = Figures::default();

    // `grouping sets (…, ())` adds the total line to the per-pairing lines in the same pass, so
    // its percentiles are over every request of the window.
    let requests = sqlx::query!(
        r#"with cohort as (
               select r.origin_hospital, r.pool_code, r.kind, r.received_at, r.due_at,
                      first_report.reported_at,
                      exists (select 1 from request_returns x where x.request_uuid = r.id) as returned
               from review_requests r
               left join lateral (select min(v.reported_at) as reported_at from review_results v
                                  where v.request_uuid = r.id) first_report on true
               where r.received_at >= $1 and r.received_at < $2
           )
           select grouping(origin_hospital, pool_code, kind) <> 0 as "is_total!",
                  origin_hospital as "origin?", pool_code as "pool?", kind as "kind?",
                  count(*) as "requests!",
                  count(reported_at) as "reported!",
                  count(*) filter (where returned) as "returned!",
                  count(*) filter (where reported_at is null and not returned) as "open!",
                  percentile_cont(0.5) within group
                      (order by extract(epoch from reported_at - received_at)::float8) as turnaround_median,
                  percentile_cont(0.9) within group
                      (order by extract(epoch from reported_at - received_at)::float8) as turnaround_p90,
                  count(*) filter (where reported_at <= due_at) as "in_time!",
                  count(*) filter (where reported_at > due_at) as "late!",
                  count(*) filter (where reported_at is null and not returned and due_at <= $3) as "open_overdue!"
           from cohort
           group by grouping sets ((origin_hospital, pool_code, kind), ())"#,
        window.from,
        window.to,
        as_of,
    )
    .fetch_all(db)
    .await?;
    for row in requests {
        let figures = Figures {
            requests: row.requests,
            reported: row.reported,
            returned: row.returned,
            open: row.open,
            turnaround_median_seconds: row.turnaround_median,
            turnaround_p90_seconds: row.turnaround_p90,
            sla_in_time: row.in_time,
            sla_late: row.late,
            sla_open_overdue: row.open_overdue,
            ..Figures::default()
        };
        if row.is_total {
            total = figures;
            continue;
        }
        let key = PairingKey {
            origin: row.origin.unwrap_or_default(),
            pool: row.pool,
            kind: row.kind.unwrap_or_default(),
        };
        lines.insert(
            key.clone(),
            ReportLine {
                key,
                names: PairingNames::default(),
                figures,
            },
        );
    }

    let critical = sqlx::query!(
        r#"select grouping(r.origin_hospital, r.pool_code, r.kind) <> 0 as "is_total!",
                  r.origin_hospital as "origin?", r.pool_code as "pool?", r.kind as "kind?",
                  count(*) as "notified!",
                  count(n.acknowledged_at) as "acknowledged!",
                  percentile_cont(0.5) within group
                      (order by extract(epoch from n.acknowledged_at - n.notified_at)::float8) as ack_median,
                  percentile_cont(0.9) within group
                      (order by extract(epoch from n.acknowledged_at - n.notified_at)::float8) as ack_p90
           from critical_notifications n
           join review_requests r on r.id = n.request_uuid
           where r.received_at >= $1 and r.received_at < $2
           group by grouping sets ((r.origin_hospital, r.pool_code, r.kind), ())"#,
        window.from,
        window.to,
    )
    .fetch_all(db)
    .await?;
    for row in critical {
        let figures = if row.is_total {
            &mut total
        } else {
            let key = PairingKey {
                origin: row.origin.unwrap_or_default(),
                pool: row.pool,
                kind: row.kind.unwrap_or_default(),
            };
            // Every notification's request is in the cohort, so its line exists; the entry API
            // keeps that an assumption rather than a panic.
            &mut lines
                .entry(key.clone())
                .or_insert_with(|| ReportLine {
                    key,
                    names: PairingNames::default(),
                    figures: Figures::default(),
                })
                .figures
        };
        figures.critical = row.notified;
        figures.critical_acknowledged = row.acknowledged;
        figures.critical_ack_median_seconds = row.ack_median;
        figures.critical_ack_p90_seconds = row.ack_p90;
    }

    let names = hospital_names(db).await?;
    let pool_names = pool_names(db).await?;
    for line in lines.values_mut() {
        line.names.origin_name = names
            .get(&line.key.origin)
            .cloned()
            .unwrap_or_else(|| line.key.origin.clone());
        if let Some(pool) = line.key.pool.as_ref().and_then(|pool| pool_names.get(pool)) {
            line.names.pool_name = Some(pool.name.clone());
            line.names.reviewer_hospital = Some(pool.hospital.clone());
            line.names.reviewer_hospital_name = names.get(&pool.hospital).cloned();
        }
    }
    Ok(Report {
        window,
        as_of,
        lines: lines.into_values().collect(),
        total,
    })
}

/// Hospital code → name, from the registry.
async fn hospital_names(db: &PgPool) -> sqlx::Result<BTreeMap<String, String>> {
    let rows = sqlx::query!("select code, name from hospitals")
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| (row.code, row.name)).collect())
}

struct PoolName {
    name: String,
    hospital: String,
}

/// Pool code → its name and hospital, from the registry.
async fn pool_names(db: &PgPool) -> sqlx::Result<BTreeMap<String, PoolName>> {
    let rows = sqlx::query!("select code, name, hospital_code from reviewer_pools")
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                row.code,
                PoolName {
                    name: row.name,
                    hospital: row.hospital_code,
                },
            )
        })
        .collect())
}
