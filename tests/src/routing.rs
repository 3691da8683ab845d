//! Helpers for the routing tests: a registry with more ECG pools, requests with a chosen
//! department and subspecialty, the operator's `relayctl pairing` / `lanes` run in-process, and
//! the database clock moved for waiting requests.

use crate::{HOSPITAL_A, TestRelay, test_registry, wait_for, wait_until};
use contract::v1;
use domain::{PoolCode, Priority};
use sqlx::PgPool;
use store::registry::{PoolEntry, RegistryFile, ReviewerEntry};
use uuid::Uuid;

/// Reviewer tokens of the extra pools.
pub mod tokens {
    pub const XY2_ECG: &str = "test-token-xy2-ecg-zhou";
    pub const XY3_ECG: &str = "test-token-xy3-ecg-wu";
}

/// [`test_registry`] (hospital A publishes as `guest`) with two more ECG pools at Xiangya,
/// `xy2-ecg` and `xy3-ecg`, each with one reviewer.
pub fn routing_registry() -> RegistryFile {
    let mut registry = test_registry(HOSPITAL_A);
    for (pool, reviewer, token) in [
        ("xy2-ecg", "xy2-ecg-zhou", tokens::XY2_ECG),
        ("xy3-ecg", "xy3-ecg-wu", tokens::XY3_ECG),
    ] {
        registry.pools.push(PoolEntry {
            code: pool.into(),
            hospital: "HN-XY".into(),
            kind: "ecg".into(),
            name: pool.into(),
            subspecialty: None,
        });
        registry.reviewers.push(ReviewerEntry {
            id: reviewer.into(),
            pool: pool.into(),
            name: reviewer.into(),
            token: token.into(),
        });
    }
    registry
}

/// An ECG request (a real record) from `origin` for `department`, naming `subspecialty`.
pub fn ecg_from(
    origin: &str,
    request_id: &str,
    priority: v1::Priority,
    department: &str,
    subspecialty: &str,
) -> v1::ReviewRequest {
    let mut request = crate::fixtures::ecg_request(origin, request_id, priority, "E07500");
    request.department = department.into();
    request.subspecialty = subspecialty.into();
    request
}

/// Runs a `relayctl pairing …` or `relayctl lanes …` command line as the operator would, on
/// `db`; returns what it prints, or the refusal.
pub async fn relayctl(db: &PgPool, args: &[&str]) -> anyhow::Result<String> {
    let argv = std::iter::once("relayctl").chain(args.iter().copied());
    match relayctl::Cli::parse_args(argv)?.command {
        relayctl::Command::Pairing(command) => relayctl::pairing::run_pairing(command, db).await,
        relayctl::Command::Lanes(command) => relayctl::pairing::run_lanes(command, db).await,
        other => panic!("not a registry edit: {other:?}"),
    }
}

/// The pool a recorded request was placed in.
pub async fn pool_of(db: &PgPool, request: Uuid) -> String {
    sqlx::query_scalar!(
        r#"select pool_code as "pool!" from review_requests where id = $1"#,
        request
    )
    .fetch_one(db)
    .await
    .unwrap()
}

/// The reason of the request's `routed` event, once the recorder has stored it.
pub async fn routed_reason(db: &PgPool, request: Uuid) -> String {
    wait_for("the routed event to be recorded", || async {
        sqlx::query_scalar!(
            "select reason from lifecycle_events where request_uuid = $1 and state = 'routed'",
            request
        )
        .fetch_optional(db)
        .await
        .unwrap()
    })
    .await
}

/// Moves a waiting request's `routed_at` `minutes` into the past, as if it had waited that long.
pub async fn make_wait(db: &PgPool, request: Uuid, minutes: i32) {
    let moved = sqlx::query!(
        "update review_requests set routed_at = now() - make_interval(mins => $2) where id = $1 and state = 'routed'",
        request,
        minutes
    )
    .execute(db)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(moved, 1, "request {request} is waiting");
}

/// Waits until `pool`'s `priority` lane holds `depth` messages (the outbox has published them).
pub async fn wait_for_lane_depth(relay: &TestRelay, pool: &str, priority: Priority, depth: u32) {
    let lane = relay
        .topology
        .names
        .review_lane(&PoolCode::parse(pool).unwrap(), priority);
    wait_until(&format!("{lane} to hold {depth}"), || async {
        relay.broker.depth(&lane).await == depth
    })
    .await;
}

/// How many rows the registry's audit holds.
pub async fn registry_changes(db: &PgPool) -> i64 {
    sqlx::query_scalar!(r#"select count(*) as "n!" from registry_changes"#)
        .fetch_one(db)
        .await
        .unwrap()
}
