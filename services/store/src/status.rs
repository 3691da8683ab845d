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
