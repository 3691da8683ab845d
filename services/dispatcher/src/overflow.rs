//! Load-aware overflow: a pool whose lane is falling behind hands new work to its backups.
//!
//! Rule: when the routed pool's oldest request still waiting to be claimed (state `routed`) in the
//! new request's priority lane has waited longer than that lane's `overflow_after`
//! (`lane_policies`), the new request goes to the first backup pool of the pairing, in the
//! operator's order, whose own oldest waiting request in that lane has not waited that long.
//! When every backup is over the limit too, the request stays with the primary pool: moving it
//! would only trade one queue that is behind for another, and the primary is the pairing's own
//! reviewers. A lane with no `overflow_after` never overflows; a route without backups (the
//! province-wide pool) never overflows either. Only new requests move; what already waits stays.

use domain::{PoolCode, Priority};
use sqlx::PgPool;
use std::time::Duration;
use store::registry::Route;

/// The pool a request is placed in, and why it is not the routed one if it is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub pool: PoolCode,
    /// Set when the request overflowed, or when it would have and no backup could take it.
    pub overflow: Option<String>,
}

pub(crate) async fn place(
    db: &PgPool,
    route: &Route,
    priority: Priority,
) -> sqlx::Result<Placement> {
    let stay = |overflow| Placement {
        pool: route.pool.clone(),
        overflow,
    };
    if route.backups.is_empty() {
        return Ok(stay(None));
    }
    let Some(limit) = store::lanes::overflow_after(db, priority).await? else {
        return Ok(stay(None));
    };
    let mut pools = vec![route.pool.clone()];
    pools.extend(route.backups.iter().cloned());
    let waits = store::lanes::oldest_waiting(db, &pools, priority).await?;
    let waited = |pool: &PoolCode| {
        waits
            .iter()
            .find(|(code, _)| code == pool.as_str())
            .map(|(_, waited)| *waited)
            .unwrap_or(Duration::ZERO)
    };
    let primary_waited = waited(&route.pool);
    if primary_waited <= limit {
        return Ok(stay(None));
    }
    let why = format!(
        "pool {}'s oldest waiting {priority} request has waited {} (overflow after {})",
        route.pool,
        minutes(primary_waited),
        minutes(limit)
    );
    match route.backups.iter().find(|backup| waited(backup) <= limit) {
        Some(backup) => Ok(Placement {
            pool: backup.clone(),
            overflow: Some(format!("overflowed from pool {}: {why}", route.pool)),
        }),
        None => Ok(stay(Some(format!(
            "kept in pool {}: {why}, and every backup pool is over the limit too",
            route.pool
        )))),
    }
}

/// A duration as an operator reads it in an event: whole minutes, or seconds under one minute.
fn minutes(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs < 60 {
        format!("{secs} s")
    } else {
        format!("{} min", secs / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::minutes;
    use std::time::Duration;

    #[test]
    fn durations_read_as_minutes_or_seconds() {
        assert_eq!(minutes(Duration::from_secs(42)), "42 s");
        assert_eq!(minutes(Duration::from_secs(6 * 60 + 5)), "6 min");
    }
}
