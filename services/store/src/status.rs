//! What `relayctl status` shows from PostgreSQL: requests by state and the oldest waiting
//! request per lane (queue depths come from the broker).

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

/// Requests routed to a lane and not yet claimed.
#[derive(Clone, Debug)]
pub struct LaneBacklog {
    pub pool: String,
    pub priority: String,
    pub waiting: i64,
    pub oldest_routed_at: DateTime<Utc>,
}

pub async fn waiting_per_lane(db: &PgPool) -> sqlx::Result<Vec<LaneBacklog>> {
    sqlx::query_as!(
        LaneBacklog,
        r#"select pool_code as "pool!", priority, count(*) as "waiting!", min(routed_at) as "oldest_routed_at!"
           from review_requests where state = 'routed' and pool_code is not null
           group by pool_code, priority order by pool_code, priority"#,
    )
    .fetch_all(db)
    .await
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
