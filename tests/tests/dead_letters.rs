//! Dead letters are kept in PostgreSQL by the recorder, listed by `relayctl dead-letters list`
//! and replayed by `relayctl dead-letters replay`: once, idempotently, with the replay in the
//! audit trail, and without letting anyone borrow a replay to pass as another sender.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::RequestState::{Received, Routed};
use prost::Message;
use sqlx::PgPool;
use store::dead_letters::{ReplayOutcome, Selection};
use tests::fixtures::{imaging_request, poison_event};
use tests::inspector::count;
use tests::{HOSPITAL_A, HOSPITAL_C, TestRelay, test_registry, wait_until};

/// What the operator does before replaying hospital C's refused imaging request: pair C's
/// imaging with Xiangya's pool (`relayctl registry load`).
async fn add_imaging_pairing_for_c(db: &PgPool, registry: &mut store::registry::RegistryFile) {
    registry.pairings.push(store::registry::PairingEntry {
        origin: HOSPITAL_C.into(),
        department: None,
        kind: "imaging".into(),
        subspecialty: None,
        pool: "xy-imaging".into(),
        backups: vec![],
    });
    store::registry::load(db, registry).await.unwrap();
}

fn only(id: i64) -> Selection {
    Selection {
        ids: vec![id],
        ..Default::default()
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_refused_request_replayed_after_the_pairing_is_added_is_routed_exactly_once(db: PgPool) {
    // Injected: an imaging request from hospital C, which has no imaging pairing and no
    // province-wide imaging backup, so the dispatcher refuses it (no_pairing).
    let mut registry = test_registry(HOSPITAL_C);
    let relay = TestRelay::start_with(db, &registry).await;
    let request = imaging_request(HOSPITAL_C, "CT-REPLAY-1", v1::Priority::Urgent);
    relay.broker.publish_request(&request).await;

    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("no_pairing"), "{dead:?}");
    assert_eq!(dead.body, request.encode_to_vec());
    let listed = store::dead_letters::list(&relay.db, &Selection::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].original_user_id.as_deref(), Some("guest"));
    let table = relayctl::dead_letters::render_list(&listed);
    assert!(
        table.contains("no_pairing") && table.contains(&relay.topology.names.dispatcher_queue()),
        "{table}"
    );
    assert!(
        !table.contains("CT-REPLAY-1"),
        "the listing shows no body content:\n{table}"
    );

    // The operator adds the missing pairing and replays the dead letter.
    add_imaging_pairing_for_c(&relay.db, &mut registry).await;
    let outcomes = store::dead_letters::replay(
        &relay.db,
        &only(dead.id),
        "ops-zhang",
        "imaging pairing added",
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes,
        vec![ReplayOutcome::Replayed {
            id: dead.id,
            exchange: String::new(),
            routing_key: relay.topology.names.dispatcher_queue(),
        }]
    );

    // The replay is judged as the original sender's publish: C's own broker user, although the
    // relay's user published it.
    let id = relay.request_uuid(HOSPITAL_C, "CT-REPLAY-1").await;
    relay.wait_for_history(id, &[Received, Routed]).await;

    // Replaying again, by id or with --all, does nothing.
    let again = store::dead_letters::replay(&relay.db, &only(dead.id), "ops-li", "")
        .await
        .unwrap();
    assert!(
        matches!(&again[..], [ReplayOutcome::AlreadyReplayed { id, by, .. }] if *id == dead.id && by == "ops-zhang"),
        "{again:?}"
    );
    assert_eq!(
        relayctl::dead_letters::render_replay(&again)
            .lines()
            .count(),
        1
    );
    let all = store::dead_letters::replay(&relay.db, &Selection::default(), "ops-li", "")
        .await
        .unwrap();
    assert!(
        all.iter()
            .all(|o| matches!(o, ReplayOutcome::AlreadyReplayed { .. })),
        "{all:?}"
    );

    // Exactly one effect: one request, one lane message, one routed event; the replay is in the
    // audit trail; no new dead letter.
    let lane = relay.topology.names.review_lane(
        &domain::PoolCode::parse("xy-imaging").unwrap(),
        domain::Priority::Urgent,
    );
    wait_until("the replayed request's lane message", || async {
        relay.broker.depth(&lane).await == 1
    })
    .await;
    assert_eq!(
        count(&relay.db, "select count(*) from review_requests").await,
        1
    );
    assert_eq!(
        count(
            &relay.db,
            "select count(*) from lifecycle_events where state = 'routed'"
        )
        .await,
        1
    );
    let audit =
        sqlx::query!("select dead_letter_id, operator, note, routing_key from dead_letter_replays")
            .fetch_all(&relay.db)
            .await
            .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].dead_letter_id,
            audit[0].operator.as_str(),
            audit[0].note.as_str()
        ),
        (dead.id, "ops-zhang", "imaging pairing added")
    );
    let pending = store::dead_letters::list(&relay.db, &Selection::default())
        .await
        .unwrap();
    assert!(pending.is_empty(), "nothing left to replay: {pending:?}");
    assert_eq!(
        count(&relay.db, "select count(*) from dead_letters").await,
        1,
        "the replay did not die"
    );
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_replayed_poison_message_is_re_injected_once_and_dies_again_as_a_new_dead_letter(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    let names = &relay.topology.names;
    // Injected: a lifecycle event about a request the relay never saw; recording it violates the
    // audit trail's foreign key every time, so the broker dead-letters it after the limit.
    let poison = poison_event(HOSPITAL_A);
    relay
        .broker
        .publish_with_headers(
            &names.events_exchange(),
            "HN-HH-001.routed",
            poison.encode_to_vec(),
            None,
            &[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )],
        )
        .await;
    let first = relay.next_dead_letter().await;
    assert_eq!(first.broker_reason.as_deref(), Some("delivery_limit"));
    let stored = store::dead_letters::list(&relay.db, &only(first.id))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stored.reason, "delivery_limit");
    assert_eq!(stored.source_queue, names.recorder_events_queue());

    let outcomes = store::dead_letters::replay(&relay.db, &only(first.id), "ops-zhang", "retry")
        .await
        .unwrap();
    assert!(matches!(&outcomes[..], [ReplayOutcome::Replayed { .. }]));

    // The replay goes back into the events queue once, fails the same way up to the limit, and
    // comes back as a new dead letter that names the one it replays; the publisher's own
    // headers travel with it.
    let second = relay.next_dead_letter().await;
    let stored_again = store::dead_letters::list(&relay.db, &only(second.id))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stored_again.replay_of, Some(first.id));
    assert_eq!(stored_again.reason, "delivery_limit");
    assert_eq!(stored_again.body, poison.encode_to_vec());
    assert_eq!(
        stored_again.headers["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(
        count(&relay.db, "select count(*) from dead_letters").await,
        2
    );
    assert_eq!(
        count(&relay.db, "select count(*) from dead_letter_replays").await,
        1
    );
    // The new dead letter is open; the replayed one is not offered again.
    let open = store::dead_letters::list(&relay.db, &Selection::default())
        .await
        .unwrap();
    assert_eq!(
        open.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![second.id]
    );
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_replay_header_lends_no_identity_without_an_operators_replay_of_that_very_message(
    db: PgPool,
) {
    // Injected: hospital C's imaging request refused for want of a pairing (its dead letter
    // records C's broker user as the sender); the pairing is then added. Next, the same bytes
    // are published by an unidentified sender (no user_id) with a replay header naming that dead
    // letter, which no operator has replayed; then, after the operator's replay, other bytes
    // with the same header. Honouring the header would accept either in C's name.
    let mut registry = test_registry(HOSPITAL_C);
    let relay = TestRelay::start_with(db, &registry).await;
    let request = imaging_request(HOSPITAL_C, "CT-FORGED-1", v1::Priority::Routine);
    relay.broker.publish_request(&request).await;
    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("no_pairing"));
    add_imaging_pairing_for_c(&relay.db, &mut registry).await;

    let routing_key = format!("{HOSPITAL_C}.imaging");
    let replay_of = dead.id.to_string();
    let forge = |body: Vec<u8>| {
        let (broker, exchange) = (&relay.broker, relay.topology.names.requests_exchange());
        let (routing_key, replay_of) = (routing_key.clone(), replay_of.clone());
        async move {
            broker
                .publish_with_headers(
                    &exchange,
                    &routing_key,
                    body,
                    None,
                    &[(bus::REPLAY_OF_HEADER, &replay_of)],
                )
                .await
        }
    };
    forge(request.encode_to_vec()).await;
    let refused = relay.next_dead_letter().await;
    assert_eq!(
        refused.reason.as_deref(),
        Some("sender_mismatch"),
        "no replay on record: judged by its real (missing) sender: {refused:?}"
    );

    store::dead_letters::replay(&relay.db, &only(dead.id), "ops-zhang", "pairing added")
        .await
        .unwrap();
    let id = relay.request_uuid(HOSPITAL_C, "CT-FORGED-1").await;
    relay.wait_for_history(id, &[Received, Routed]).await;

    let other = imaging_request(HOSPITAL_C, "CT-FORGED-2", v1::Priority::Routine);
    forge(other.encode_to_vec()).await;
    let refused = relay.next_dead_letter().await;
    assert_eq!(
        refused.reason.as_deref(),
        Some("sender_mismatch"),
        "a replay on record covers only its own bytes: {refused:?}"
    );
    let stored_ids: Vec<String> =
        sqlx::query_scalar!("select request_id from review_requests order by request_id")
            .fetch_all(&relay.db)
            .await
            .unwrap();
    assert_eq!(stored_ids, vec!["CT-FORGED-1".to_owned()]);
    relay.stop().await;
}
