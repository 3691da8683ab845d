//! Claims are leases: heartbeats renew them, drafts are saved with them and outlive them, the
//! SLA clock releases an expired lease back to the lane, and an operator's break-lock releases
//! one at once. A reviewer who lost the lease is told so (409); the next reviewer continues
//! from the draft.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use contract::v1;
use domain::RequestState::{Claimed, Released};
use sqlx::PgPool;
use tests::fixtures::ecg_request;
use tests::sla::{
    OwnDispatcher, clock_row, expire_lease, lease_call, relay_without_dispatcher, wait_for_events,
    wait_for_row,
};
use tests::{HOSPITAL_A, TestRelay, report_body, tokens};
use uuid::Uuid;

async fn publish_and_claim(relay: &TestRelay, request_id: &str, token: &str) -> Uuid {
    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            request_id,
            v1::Priority::Urgent,
            "HR06001",
        ))
        .await;
    let id = relay.request_uuid(HOSPITAL_A, request_id).await;
    let claimed = relay.claim_next(token).await;
    assert_eq!(claimed["request_uuid"], id.to_string());
    assert!(claimed["draft"].is_null(), "a fresh claim has no draft");
    id
}

fn draft(findings: &str) -> serde_json::Value {
    serde_json::json!({ "findings": findings, "conclusion": "pending" })
}

fn expiry(body: &serde_json::Value) -> DateTime<Utc> {
    body["lease_expires_at"]
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .unwrap_or_else(|| panic!("no lease_expires_at in {body}"))
        .with_timezone(&Utc)
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_heartbeat_renews_the_holders_lease_and_only_the_holders(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let id = publish_and_claim(&relay, "LEASE-HEARTBEAT", tokens::ECG).await;
    // Let the lease nearly run out, then renew it.
    sqlx::query!(
        "update review_requests set claim_expires_at = now() + interval '20 seconds' where id = $1",
        id
    )
    .execute(&relay.db)
    .await
    .unwrap();
    let (status, body) = lease_call(&relay, tokens::ECG, &id.to_string(), None).await;
    assert_eq!(status, 200, "{body}");
    let renewed = expiry(&body);
    assert!(
        renewed > Utc::now() + chrono::Duration::minutes(14),
        "{renewed}"
    );

    let (status, body) = lease_call(&relay, tokens::ECG_SECOND, &id.to_string(), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let (status, _) = lease_call(&relay, tokens::IMAGING, &id.to_string(), None).await;
    assert_eq!(status, 404, "another pool's reviewer cannot even see it");
    dispatcher.stop().await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_lease_expiring_mid_report_is_released_and_the_next_reviewer_continues_the_draft(
    db: PgPool,
) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let id = publish_and_claim(&relay, "LEASE-EXPIRY", tokens::ECG).await;
    let (status, body) = lease_call(
        &relay,
        tokens::ECG,
        &id.to_string(),
        Some(draft("sinus rhythm, ST segments under review")),
    )
    .await;
    assert_eq!(status, 200, "saving a draft renews the lease: {body}");
    expiry(&body);

    // The reviewer is called away; the lease runs out and the clock gives the request back.
    expire_lease(&relay.db, id).await;
    wait_for_row(&relay.db, id, "the clock to release the lease", |row| {
        row.state == "routed"
    })
    .await;
    let released = wait_for_events(&relay.db, id, Released, 1).await;
    assert_eq!(released[0].0, "service:sla-clock");
    assert!(released[0].1.starts_with("lease expired"), "{released:?}");

    let next = relay.claim_next(tokens::ECG_SECOND).await;
    assert_eq!(next["request_uuid"], id.to_string());
    assert_eq!(
        next["draft"]["findings"],
        "sinus rhythm, ST segments under review"
    );
    assert_eq!(next["draft"]["saved_by"], "xy-ecg-liu");
    assert!(next["draft"]["saved_at"].is_string());

    // The first reviewer comes back and submits: too late, and told why.
    let (status, body) = relay
        .report(tokens::ECG, &id.to_string(), report_body(false))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("another reviewer holds"),
        "{body}"
    );
    let (status, _) = lease_call(&relay, tokens::ECG, &id.to_string(), Some(draft("late"))).await;
    assert_eq!(status, 409, "nor can they overwrite the draft");

    let (status, _) = relay
        .report(tokens::ECG_SECOND, &id.to_string(), report_body(false))
        .await;
    assert_eq!(status, 201);
    dispatcher.stop().await;
    relay.stop().await;
}

/// Injects: a reviewer's lease runs out while no SLA clock runs (the dispatcher is stopped), so
/// nothing has released it, and another request waits in the same lane. The next claim in the
/// pool takes the expired one first, as a claim of its own with the reason; the first reviewer's
/// late report is refused; the waiting request comes next.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_expired_lease_is_claimed_again_by_the_next_reviewer_before_the_queue(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let id = publish_and_claim(&relay, "LEASE-TAKEN-OVER", tokens::ECG).await;
    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            "LEASE-WAITING",
            v1::Priority::Urgent,
            "HR06002",
        ))
        .await;
    let waiting = relay.request_uuid(HOSPITAL_A, "LEASE-WAITING").await;
    // Stopping drains the dispatcher's outbox: the waiting request's lane message is out.
    dispatcher.stop().await;
    expire_lease(&relay.db, id).await;

    let next = relay.claim_next(tokens::ECG_SECOND).await;
    assert_eq!(
        next["request_uuid"],
        id.to_string(),
        "the expired lease first"
    );
    let claims = wait_for_events(&relay.db, id, Claimed, 2).await;
    assert_eq!(claims[1].0, "reviewer:xy-ecg-tan");
    assert_eq!(
        claims[1].1,
        "lease of the previous reviewer expired; claimed again"
    );
    let (status, _) = relay
        .report(tokens::ECG, &id.to_string(), report_body(false))
        .await;
    assert_eq!(status, 409, "the first reviewer's lease is gone");
    assert_eq!(
        relay.claim_next(tokens::ECG).await["request_uuid"],
        waiting.to_string()
    );
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_break_lock_releases_at_once_keeps_the_draft_and_is_audited(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let id = publish_and_claim(&relay, "LEASE-BREAK", tokens::ECG).await;
    let (status, _) = lease_call(
        &relay,
        tokens::ECG,
        &id.to_string(),
        Some(draft("QT prolonged?")),
    )
    .await;
    assert_eq!(status, 200);

    let names = &relay.topology.names;
    let outcome = relayctl::requests::break_lock(&relay.db, names, id, "ops-zhang", "desk frozen")
        .await
        .unwrap();
    assert_eq!(
        outcome,
        relayctl::requests::BreakLock::Released {
            holder: "xy-ecg-liu".into()
        }
    );
    let row = clock_row(&relay.db, id).await;
    assert_eq!((row.state.as_str(), row.claimed_by), ("routed", None));
    let released = wait_for_events(&relay.db, id, Released, 1).await;
    assert_eq!(released[0].0, "operator:ops-zhang");
    assert!(released[0].1.contains("desk frozen"), "{released:?}");

    // The holder learns the lease is gone; the next reviewer gets the request and the draft.
    let (status, body) = lease_call(&relay, tokens::ECG, &id.to_string(), None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("released"),
        "{body}"
    );
    let next = relay.claim_next(tokens::ECG_SECOND).await;
    assert_eq!(next["request_uuid"], id.to_string());
    assert_eq!(next["draft"]["findings"], "QT prolonged?");

    // Breaking a lock nobody holds is refused, and changes nothing.
    let (status, _) = relay
        .report(tokens::ECG_SECOND, &id.to_string(), report_body(false))
        .await;
    assert_eq!(status, 201);
    let outcome = relayctl::requests::break_lock(&relay.db, names, id, "ops-zhang", "")
        .await
        .unwrap();
    assert_eq!(
        outcome,
        relayctl::requests::BreakLock::NotClaimed {
            state: "reported".into()
        }
    );
    assert_eq!(
        relayctl::requests::break_lock(&relay.db, names, Uuid::new_v4(), "ops-zhang", "")
            .await
            .unwrap(),
        relayctl::requests::BreakLock::NotFound
    );
    dispatcher.stop().await;
    relay.stop().await;
}
