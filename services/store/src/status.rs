//! What `relayctl status` shows from PostgreSQL: requests by state, open work and the oldest
//! waiting request per lane, the SLA clock, open critical values, dead letters not replayed (queue
//! depths come from the broker); and what the recorder's gauges report.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

pub async fn requests_by_state(db: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"select state, count(*) as "count!" from review_requests group by state order by state"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.state, row.count)).collect())
}

/// The open work of one lane (pool × priority): waiting to be claimed, being read, and how it
/// stands against the SLA clock.
#[derive(Clone, Debug)]
pub struct LaneWork {
    pub pool: String,
    pub priority: String,
    pub waiting: i64,
    pub in_reading: i64,
    /// The oldest request waiting to be claimed; `None` when all are being read.
    pub oldest_routed_at: Option<DateTime<Utc>>,
    /// Past the at-risk mark, not yet due.
    pub at_risk: i64,
    /// Past the due time (breached), whether rerouted or not.
    pub overdue: i64,
}

/// Per lane, the requests routed or claimed (not yet reported or returned).
pub async fn open_work_per_lane(db: &PgPool) -> sqlx::Result<Vec<LaneWork>> {
    sqlx::query_as!(
        LaneWork,
        r#"select pool_code as "pool!", priority,
                  count(*) filter (where state = 'routed') as "waiting!",
                  count(*) filter (where state = 'claimed') as "in_reading!",
                  min(routed_at) filter (where state = 'routed') as oldest_routed_at,
                  count(*) filter (where at_risk_at <= now() and due_at > now()) as "at_risk!",
                  count(*) filter (where due_at <= now()) as "overdue!"
           from review_requests where state in ('routed', 'claimed') and pool_code is not null
           group by pool_code, priority order by pool_code, priority"#,
    )
    .fetch_all(db)
    .await
}

/// The SLA clock and claims over the whole relay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClockSummary {
    pub at_risk: i64,
    pub overdue: i64,
    /// Requests escalated at least once and not yet reported.
    pub escalated_open: i64,
    /// Escalation and at-risk events in the last 24 hours.
    pub escalations_24h: i64,
    pub at_risk_warnings_24h: i64,
    /// Claims held, and held past their lease (to be released by the clock).
    pub leases_held: i64,
    pub leases_expired: i64,
    /// Requests reported in the last 24 hours, and how many of them by their due time.
    pub reported_24h: i64,
    pub reported_in_time_24h: i64,
}

pub async fn clock_summary(db: &PgPool) -> sqlx::Result<ClockSummary> {
    let open = sqlx::query!(
        r#"select count(*) filter (where at_risk_at <= now() and due_at > now()) as "at_risk!",
                  count(*) filter (where due_at <= now()) as "overdue!",
                  count(*) filter (where escalation_level > 0) as "escalated_open!",
                  count(*) filter (where state = 'claimed') as "leases_held!",
                  count(*) filter (where state = 'claimed' and claim_expires_at < now()) as "leases_expired!"
           from review_requests where state in ('routed', 'claimed')"#
    )
    .fetch_one(db)
    .await?;
    let events = sqlx::query!(
        r#"select count(*) filter (where state = 'escalated') as "escalations!",
                  count(*) filter (where state = 'at_risk') as "at_risk!"
           from lifecycle_events where occurred_at > now() - interval '24 hours'"#
    )
    .fetch_one(db)
    .await?;
    let reported = sqlx::query!(
        r#"select count(*) as "reported!",
                  count(*) filter (where first.reported_at <= r.due_at) as "in_time!"
           from review_requests r
           join lateral (select min(reported_at) as reported_at from review_results
                         where request_uuid = r.id) first on true
           where first.reported_at > now() - interval '24 hours' and r.due_at is not null"#
    )
    .fetch_one(db)
    .await?;
    Ok(ClockSummary {
        at_risk: open.at_risk,
        overdue: open.overdue,
        escalated_open: open.escalated_open,
        escalations_24h: events.escalations,
        at_risk_warnings_24h: events.at_risk,
        leases_held: open.leases_held,
        leases_expired: open.leases_expired,
        reported_24h: reported.reported,
        reported_in_time_24h: reported.in_time,
    })
}

/// Critical values (危急值): what is open, and how fast the origins acknowledged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CriticalSummary {
    pub open: i64,
    /// Open and past their acknowledge-by time (reminders running).
    pub overdue: i64,
    pub oldest_open_at: Option<DateTime<Utc>>,
    pub acknowledged_24h: i64,
    pub median_minutes_to_acknowledge_24h: Option<f64>,
    pub read_back_mismatches_24h: i64,
}

pub async fn critical_summary(db: &PgPool) -> sqlx::Result<CriticalSummary> {
    let row = sqlx::query!(
        r#"select count(*) filter (where acknowledged_at is null) as "open!",
                  count(*) filter (where acknowledged_at is null and acknowledge_by < now()) as "overdue!",
                  min(notified_at) filter (where acknowledged_at is null) as oldest_open_at,
                  count(*) filter (where acknowledged_at > now() - interval '24 hours') as "acknowledged!",
                  percentile_cont(0.5) within group (order by extract(epoch from acknowledged_at - notified_at) / 60.0)
                      filter (where acknowledged_at > now() - interval '24 hours') as median_minutes,
                  count(*) filter (where acknowledged_at > now() - interval '24 hours' and not read_back_matches) as "mismatches!"
           from critical_notifications"#
    )
    .fetch_one(db)
    .await?;
    Ok(CriticalSummary {
        open: row.open,
        overdue: row.overdue,
        oldest_open_at: row.oldest_open_at,
        acknowledged_24h: row.acknowledged,
        median_minutes_to_acknowledge_24h: row.median_minutes,
        read_back_mismatches_24h: row.mismatches,
    })
}

/// Second reads by state, and the verdicts of the last 24 hours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecondReadSummary {
    pub pending: i64,
    pub in_reading: i64,
    pub agreed_24h: i64,
    pub discordant_24h: i64,
}

pub async fn second_read_summary(db: &PgPool) -> sqlx::Result<SecondReadSummary> {
    let row = sqlx::query!(
        r#"select count(*) filter (where state = 'pending') as "pending!",
                  count(*) filter (where state = 'claimed') as "in_reading!",
                  count(*) filter (where verdict = 'agree' and recorded_at > now() - interval '24 hours') as "agreed!",
                  count(*) filter (where verdict = 'discordant' and recorded_at > now() - interval '24 hours') as "discordant!"
           from second_reads"#
    )
    .fetch_one(db)
    .await?;
    Ok(SecondReadSummary {
        pending: row.pending,
        in_reading: row.in_reading,
        agreed_24h: row.agreed,
        discordant_24h: row.discordant,
    })
}

pub async fn refusals_by_reason(db: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(r#"select reason, count(*) as "count!" from rejected_messages group by reason order by reason"#)
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.reason, row.count))
        .collect())
}

/// One origin hospital's books: what the relay accepted from it and where each request is, so an
/// operator can show that nothing is missing. Every accepted request must appear in the audit
/// trail (`audited`) and in exactly one state; every refused message was dead-lettered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginBooks {
    pub origin: String,
    pub accepted: i64,
    /// Accepted requests whose `received` event reached the audit trail.
    pub audited: i64,
    pub routed: i64,
    pub claimed: i64,
    pub reported: i64,
    pub delivered: i64,
    pub returned: i64,
    /// Refused and dead-lettered with a reason (sent by this hospital's broker user).
    pub refused: i64,
    /// Identical copies the origin sent again, absorbed by deduplication (a broker redelivery of
    /// a message already recorded is the relay's own retry and is not counted).
    pub duplicates: i64,
    /// Dead letters first sent by this hospital's broker user (its refused requests, and any of
    /// its messages the broker gave up on) that no operator has replayed yet.
    pub dead_letters_open: i64,
}

pub async fn reconciliation(db: &PgPool) -> sqlx::Result<Vec<OriginBooks>> {
    sqlx::query_as!(
        OriginBooks,
        r#"select h.code as "origin!",
                  count(r.id) as "accepted!",
                  count(r.id) filter (where exists (select 1 from lifecycle_events e
                                                    where e.request_uuid = r.id and e.state = 'received')) as "audited!",
                  count(r.id) filter (where r.state = 'routed') as "routed!",
                  count(r.id) filter (where r.state = 'claimed') as "claimed!",
                  count(r.id) filter (where r.state = 'reported') as "reported!",
                  count(r.id) filter (where r.state = 'delivered') as "delivered!",
                  count(r.id) filter (where r.state = 'returned') as "returned!",
                  (select count(*) from rejected_messages m where m.sender_hospital = h.code) as "refused!",
                  coalesce(sum(r.duplicates_received), 0) as "duplicates!",
                  (select count(*) from dead_letters d
                   where d.original_user_id = h.broker_user
                     and not exists (select 1 from dead_letter_replays p where p.dead_letter_id = d.id)) as "dead_letters_open!"
           from hospitals h left join review_requests r on r.origin_hospital = h.code
           group by h.code
           having count(r.id) > 0 or exists (select 1 from rejected_messages m where m.sender_hospital = h.code)
           order by h.code"#,
    )
    .fetch_all(db)
    .await
}

/// One lane's waiting work, for the recorder's gauges.
#[derive(Clone, Debug, PartialEq)]
pub struct LaneWaiting {
    pub pool: String,
    pub priority: String,
    /// Routed, not claimed.
    pub waiting: i64,
    /// Age of the oldest of them by the database clock; 0 when none waits.
    pub oldest_seconds: f64,
}

/// Every lane of every registered pool, empty ones included (so a gauge falls back to 0).
pub async fn lanes_waiting(db: &PgPool) -> sqlx::Result<Vec<LaneWaiting>> {
    sqlx::query_as!(
        LaneWaiting,
        r#"select p.code as "pool!", l.priority as "priority!",
                  count(r.id) as "waiting!",
                  coalesce(extract(epoch from now() - min(r.routed_at))::float8, 0) as "oldest_seconds!"
           from reviewer_pools p
           cross join unnest(array['stat', 'asap', 'urgent', 'routine']) as l(priority)
           left join review_requests r
                  on r.pool_code = p.code and r.priority = l.priority and r.state = 'routed'
           group by p.code, l.priority
           order by p.code, l.priority"#,
    )
    .fetch_all(db)
    .await
}

/// The open critical notifications (危急值) of one origin hospital: whose clinicians the operator
/// may have to call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenCritical {
    pub origin: String,
    pub open: i64,
    /// Of those, past their acknowledge-by time (reminders running).
    pub overdue: i64,
    pub oldest_notified_at: DateTime<Utc>,
}

pub async fn open_critical_by_origin(db: &PgPool) -> sqlx::Result<Vec<OpenCritical>> {
    sqlx::query_as!(
        OpenCritical,
        r#"select origin_hospital as origin, count(*) as "open!",
                  count(*) filter (where acknowledge_by < now()) as "overdue!",
                  min(notified_at) as "oldest_notified_at!"
           from critical_notifications where acknowledged_at is null
           group by origin_hospital order by min(notified_at)"#
    )
    .fetch_all(db)
    .await
}

/// The open SLA and critical-value counts the recorder's gauges report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenCounts {
    /// Open requests past their at-risk mark, not yet due.
    pub sla_at_risk: i64,
    /// Open requests past their due time.
    pub sla_overdue: i64,
    /// Critical notifications not yet acknowledged.
    pub critical_open: i64,
    /// Of those, past their acknowledge-by time.
    pub critical_overdue: i64,
}

pub async fn open_counts(db: &PgPool) -> sqlx::Result<OpenCounts> {
    sqlx::query_as!(
        OpenCounts,
        r#"select
             (select count(*) from review_requests
              where state in ('routed', 'claimed') and at_risk_at <= now() and due_at > now()) as "sla_at_risk!",
             (select count(*) from review_requests
              where state in ('routed', 'claimed') and due_at <= now()) as "sla_overdue!",
             (select count(*) from critical_notifications where acknowledged_at is null) as "critical_open!",
             (select count(*) from critical_notifications
              where acknowledged_at is null and acknowledge_by < now()) as "critical_overdue!""#,
    )
    .fetch_one(db)
    .await
}

/// Stored dead letters no operator has replayed yet, of one reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreplayedDeadLetters {
    pub reason: String,
    /// 0 once every dead letter of this reason was replayed.
    pub count: i64,
    /// The oldest not replayed; `None` when none is left.
    pub oldest_stored_at: Option<DateTime<Utc>>,
}

/// Every reason ever stored (dead letters are append-only, so a reason never disappears and a
/// gauge falls back to 0), with what is left to replay: for `relayctl status` and the recorder's
/// gauges alike.
pub async fn unreplayed_dead_letters(db: &PgPool) -> sqlx::Result<Vec<UnreplayedDeadLetters>> {
    sqlx::query_as!(
        UnreplayedDeadLetters,
        r#"select d.reason, count(*) filter (where r.dead_letter_id is null) as "count!",
                  min(d.stored_at) filter (where r.dead_letter_id is null) as oldest_stored_at
           from dead_letters d
           left join dead_letter_replays r on r.dead_letter_id = d.id
           group by d.reason order by d.reason"#
    )
    .fetch_all(db)
    .await
}
