//! The audit trail (written by the recorder) and the questions asked of it.

use chrono::{DateTime, Utc};
use domain::{LifecycleFact, RequestState};
use sqlx::PgPool;
use uuid::Uuid;

/// Stores an event once; returns false for an event id already recorded (a redelivery).
pub async fn record_event(db: &PgPool, fact: &LifecycleFact) -> sqlx::Result<bool> {
    // Autocommit: the last moment before this statement's commit is before it is sent.
    crash_point::reached("recorder.before_commit");
    let inserted = sqlx::query!(
        r#"insert into lifecycle_events
               (event_id, request_uuid, origin_hospital, request_id, state, actor, reason, pool_code, correlation_id, occurred_at)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           on conflict (event_id) do nothing"#,
        fact.event_id,
        fact.request_uuid,
        fact.origin,
        fact.request_id,
        fact.state.as_str(),
        fact.actor,
        fact.reason,
        fact.pool,
        fact.correlation_id,
        fact.occurred_at,
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The namespace of the deterministic ids of delivery events: the same delivery always gets the
/// same event id, so recording it twice is impossible.
const DELIVERY_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6d2f_4c0e_9a57_4c55_b1d4_2c8a_7f3e_0d11);

/// What recording a delivery found.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// Recorded now; with the turnaround from the first report to this delivery when it is the
    /// request's first delivery.
    Recorded(Option<Turnaround>),
    AlreadyRecorded,
    /// No such request or version: a result from another relay or a forged one.
    Unknown,
}

/// Records that report `version` of (origin, request id) sits in the origin's results queue:
/// stamps the result, moves the request to `delivered` and appends the event, all once.
pub async fn record_delivery(
    db: &PgPool,
    origin: &str,
    request_id: &str,
    version: i32,
    actor: &str,
) -> sqlx::Result<Delivery> {
    let mut tx = db.begin().await?;
    let stamped = sqlx::query!(
        r#"update review_results r set delivered_at = clock_timestamp()
           from review_requests q
           where q.origin_hospital = $1 and q.request_id = $2 and r.request_uuid = q.id and r.version = $3
             and r.delivered_at is null
           returning q.id, q.correlation_id, q.pool_code, r.delivered_at as "delivered_at!""#,
        origin,
        request_id,
        version,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(stamped) = stamped else {
        let known = sqlx::query_scalar!(
            r#"select 1 as "known!" from review_results r join review_requests q on r.request_uuid = q.id
               where q.origin_hospital = $1 and q.request_id = $2 and r.version = $3"#,
            origin,
            request_id,
            version,
        )
        .fetch_optional(&mut *tx)
        .await?;
        return Ok(if known.is_some() {
            Delivery::AlreadyRecorded
        } else {
            Delivery::Unknown
        });
    };
    let first_delivery = sqlx::query!(
        "update review_requests set state = 'delivered' where id = $1 and state = 'reported'",
        stamped.id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    // The first delivery of a request, measured from its first report, both by the database's
    // clock.
    let turnaround = if first_delivery {
        sqlx::query_as!(
            Turnaround,
            r#"select q.kind, q.priority, q.origin_hospital as origin, coalesce(q.pool_code, '') as "pool!",
                      extract(epoch from $2 - min(r.reported_at))::float8 as "seconds!"
               from review_requests q join review_results r on r.request_uuid = q.id
               where q.id = $1
               group by q.id"#,
            stamped.id,
            stamped.delivered_at,
        )
        .fetch_optional(&mut *tx)
        .await?
    } else {
        None
    };
    let event_id = Uuid::new_v5(
        &DELIVERY_EVENT_NAMESPACE,
        format!("{}:{version}", stamped.id).as_bytes(),
    );
    sqlx::query!(
        r#"insert into lifecycle_events
               (event_id, request_uuid, origin_hospital, request_id, state, actor, reason, pool_code, correlation_id, occurred_at)
           values ($1, $2, $3, $4, 'delivered', $5, $6, $7, $8, $9)
           on conflict (event_id) do nothing"#,
        event_id,
        stamped.id,
        origin,
        request_id,
        actor,
        format!("report version {version} is in the origin's results queue"),
        stamped.pool_code,
        stamped.correlation_id,
        stamped.delivered_at,
    )
    .execute(&mut *tx)
    .await?;
    crash_point::reached("recorder.before_commit");
    tx.commit().await?;
    Ok(Delivery::Recorded(turnaround))
}

/// One request's time between two stages, with the labels its metric carries (registry codes
/// only, never patient data).
#[derive(Clone, Debug, PartialEq)]
pub struct Turnaround {
    pub kind: String,
    pub priority: String,
    pub origin: String,
    pub pool: String,
    pub seconds: f64,
}

/// From receipt (the dispatcher's commit) to the request's first report, by the database clock;
/// `None` for a request without a report.
pub async fn received_to_reported(db: &PgPool, request: Uuid) -> sqlx::Result<Option<Turnaround>> {
    sqlx::query_as!(
        Turnaround,
        r#"select q.kind, q.priority, q.origin_hospital as origin, coalesce(q.pool_code, '') as "pool!",
                  extract(epoch from min(r.reported_at) - q.received_at)::float8 as "seconds!"
           from review_requests q join review_results r on r.request_uuid = q.id
           where q.id = $1
           group by q.id"#,
        request,
    )
    .fetch_optional(db)
    .await
}

/// Why a returned request was handed back (its `ReturnReason` code), and its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnFacts {
    pub reason: String,
    pub kind: String,
}

pub async fn return_facts(db: &PgPool, request: Uuid) -> sqlx::Result<Option<ReturnFacts>> {
    sqlx::query_as!(
        ReturnFacts,
        r#"select t.reason, q.kind from request_returns t join review_requests q on q.id = t.request_uuid
           where t.request_uuid = $1"#,
        request,
    )
    .fetch_optional(db)
    .await
}

/// One line of a request's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryLine {
    pub state: String,
    pub actor: String,
    pub reason: String,
    pub occurred_at: DateTime<Utc>,
}

/// A request's full history, oldest first.
pub async fn history(db: &PgPool, request: Uuid) -> sqlx::Result<Vec<HistoryLine>> {
    sqlx::query_as!(
        HistoryLine,
        r#"select state, actor, reason, occurred_at from lifecycle_events
           where request_uuid = $1
           -- Events of one transaction share a timestamp; the lifecycle order breaks the tie.
           order by occurred_at,
                    array_position(array['received', 'routed', 'claimed', 'released', 'reported', 'delivered',
                                         'acknowledged', 'returned', 'escalated', 'rejected', 'cancelled', 'expired'],
                                   state),
                    recorded_at"#,
        request,
    )
    .fetch_all(db)
    .await
}

/// The states of a request's history, oldest first.
pub async fn states(db: &PgPool, request: Uuid) -> sqlx::Result<Vec<RequestState>> {
    Ok(history(db, request)
        .await?
        .iter()
        .filter_map(|line| RequestState::parse(&line.state))
        .collect())
}
