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
    if route.backups.is_empty() {
        return Ok(decide(route, priority, None, &[]));
    }
    let limit = store::lanes::overflow_after(db, priority).await?;
    if limit.is_none() {
        return Ok(decide(route, priority, None, &[]));
    }
    let mut pools = vec![route.pool.clone()];
    pools.extend(route.backups.iter().cloned());
    let waits = store::lanes::oldest_waiting(db, &pools, priority).await?;
    Ok(decide(route, priority, limit, &waits))
}

/// The rule itself: `limit` is the lane's overflow age, `waits` how long the oldest waiting
/// request of each pool has waited (pools with nothing waiting absent).
fn decide(
    route: &Route,
    priority: Priority,
    limit: Option<Duration>,
    waits: &[(String, Duration)],
) -> Placement {
    let stay = |overflow| Placement {
        pool: route.pool.clone(),
        overflow,
    };
    let Some(limit) = limit else {
        return stay(None);
    };
    let waited = |pool: &PoolCode| {
        waits
            .iter()
            .find(|(code, _)| code == pool.as_str())
            .map(|(_, waited)| *waited)
            .unwrap_or(Duration::ZERO)
    };
    let primary_waited = waited(&route.pool);
    if primary_waited <= limit {
        return stay(None);
    }
    let why = format!(
        "pool {}'s oldest waiting {priority} request has waited {} (overflow after {})",
        route.pool,
        minutes(primary_waited),
        minutes(limit)
    );
    match route.backups.iter().find(|backup| waited(backup) <= limit) {
        Some(backup) => Placement {
            pool: backup.clone(),
            overflow: Some(format!("overflowed from pool {}: {why}", route.pool)),
        },
        None => stay(Some(format!(
            "kept in pool {}: {why}, and every backup pool is over the limit too",
            route.pool
        ))),
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use store::registry::RouteRule;

    const MIN: u64 = 60;

    fn route() -> Route {
        let pool = |code| PoolCode::parse(code).unwrap();
        Route {
            pool: pool("xy-ecg"),
            rule: RouteRule::HospitalPairing,
            backups: vec![pool("pph-ecg"), pool("xy2-ecg")],
        }
    }

    fn waits(list: &[(&str, u64)]) -> Vec<(String, Duration)> {
        list.iter()
            .map(|(pool, minutes)| ((*pool).to_owned(), Duration::from_secs(minutes * MIN)))
            .collect()
    }

    fn placed(limit: Option<u64>, list: &[(&str, u64)]) -> (String, Option<String>) {
        let limit = limit.map(|minutes| Duration::from_secs(minutes * MIN));
        let placement = decide(&route(), Priority::Stat, limit, &waits(list));
        (placement.pool.to_string(), placement.overflow)
    }

    #[test]
    fn under_the_age_or_without_a_policy_the_request_stays() {
        assert_eq!(placed(Some(5), &[("xy-ecg", 4)]), ("xy-ecg".into(), None));
        assert_eq!(placed(Some(5), &[]), ("xy-ecg".into(), None));
        assert_eq!(placed(None, &[("xy-ecg", 400)]), ("xy-ecg".into(), None));
    }

    #[test]
    fn over_the_age_the_first_backup_not_itself_behind_takes_it() {
        let (pool, why) = placed(Some(5), &[("xy-ecg", 6)]);
        assert_eq!(pool, "pph-ecg");
        assert_eq!(
            why.unwrap(),
            "overflowed from pool xy-ecg: pool xy-ecg's oldest waiting stat request has waited 6 min (overflow after 5 min)"
        );
        let (pool, _) = placed(Some(5), &[("xy-ecg", 6), ("pph-ecg", 9)]);
        assert_eq!(pool, "xy2-ecg");
    }

    #[test]
    fn when_every_backup_is_behind_too_the_request_stays_with_the_primary() {
        let (pool, why) = placed(Some(5), &[("xy-ecg", 6), ("pph-ecg", 9), ("xy2-ecg", 7)]);
        assert_eq!(pool, "xy-ecg");
        assert!(
            why.unwrap()
                .contains("every backup pool is over the limit too")
        );
    }

    #[test]
    fn durations_read_as_minutes_or_seconds() {
        assert_eq!(minutes(Duration::from_secs(42)), "42 s");
        assert_eq!(minutes(Duration::from_secs(6 * 60 + 5)), "6 min");
    }
}
