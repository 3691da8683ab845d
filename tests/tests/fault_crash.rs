//! Fault test (#4): a service killed with SIGKILL at each crash point, then restarted, leaves
//! exactly one effect.
//!
//! The service under test runs as a process of its own (`tests::service_process`) with one
//! crash point armed (`TELERELAY_CRASH_AT`, see the `crash-point` crate): when it gets there it
//! sends itself SIGKILL. The test checks that it died of SIGKILL — proof that the point was
//! reached — restarts it unarmed, lets it finish, stops it with SIGTERM so that every count is
//! final, and counts the effects. The rest of the relay runs in-process on the shared broker
//! (a namespace of the test's own) and the test's own database, as in every other test.
//!
//! The guarantee under test (ARCHITECTURE.md, "Ack after durable" and "Exactly-once effects"):
//! one row per request, one `received` and one `routed` event per request, every later event
//! and every delivery recorded once, nothing refused, nothing dead-lettered but what the test
//! injected for that purpose, and that stored once in `dead_letters`. The outbox publishes
//! at least once, so a crash between a publish and the deletion of its rows may put a second
//! copy of a request in its lane (the review desk acks such copies away); each test states how
//! many copies its crash point allows, and the lane never holds a message of any other request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::RequestState::{self, Claimed, Delivered, Received, Reported, Routed};
use domain::{PoolCode, Priority};
use sqlx::PgPool;
use std::collections::BTreeSet;
use tests::fixtures::ecg_request;
use tests::service_process::{Launcher, Service};
use tests::{HOSPITAL_A, InProcess, TestRelay, report_body, test_registry, tokens, wait_until};
use uuid::Uuid;

/// This crate's binary that runs one service as a process.
const RELAY_SERVICE: &str = env!("CARGO_BIN_EXE_relay-service");

/// Requests each test publishes.
const REQUESTS: usize = 10;

/// The CinC 2021 records the requests are built from, used in turn.
const RECORDS: [&str; 5] = ["E07500", "E07501", "E07502", "E07503", "E07504"];

/// How many copies of its lane message each request may have once the relay is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LaneCopies {
    /// Nothing was committed before the crash, so nothing was published before it: exactly one.
    One,
    /// The outbox relay may have been publishing when the process died; what it did not see
    /// confirmed it publishes again after the restart: at least one.
    AtLeastOne,
    /// The crash came after the broker confirmed an outbox batch holding a lane message and
    /// before its rows were deleted: that batch goes out again, so some request has two.
    SomeTwice,
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn dispatcher_killed_before_its_first_commit_routes_each_request_once(db: PgPool) {
    // Injected: SIGKILL of the dispatcher with its first accept transaction written and not
    // committed, while it holds the other requests unacked.
    dispatcher_killed_at(db, "dispatcher.before_commit@1", LaneCopies::One).await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn dispatcher_killed_before_a_commit_mid_stream_routes_each_request_once(db: PgPool) {
    // Injected: SIGKILL of the dispatcher with its fourth accept transaction written and not
    // committed, after three requests were committed (and maybe acked and published).
    dispatcher_killed_at(db, "dispatcher.before_commit@4", LaneCopies::AtLeastOne).await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn dispatcher_killed_after_a_commit_before_its_ack_routes_each_request_once(db: PgPool) {
    // Injected: SIGKILL of the dispatcher after the third request's transaction committed and
    // before its delivery was acked: the broker delivers it again to the restarted dispatcher.
    dispatcher_killed_at(
        db,
        "dispatcher.after_commit_before_ack@3",
        LaneCopies::AtLeastOne,
    )
    .await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn outbox_killed_after_a_publish_before_its_confirm_routes_each_request_once(db: PgPool) {
    // Injected: SIGKILL of the dispatcher while its outbox relay has written its first batch
    // to the broker and not yet seen a confirm: the rows stay, and go out again. (The first
    // batch, because a second one exists only if the relay flushed before every commit.)
    dispatcher_killed_at(
        db,
        "outbox.after_publish_before_confirm@1",
        LaneCopies::AtLeastOne,
    )
    .await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn outbox_killed_after_a_confirm_before_the_delete_routes_each_request_once(db: PgPool) {
    // Injected: SIGKILL of the dispatcher after the broker confirmed the outbox relay's first
    // batch and before its rows were deleted: the batch is published a second time.
    dispatcher_killed_at(
        db,
        "outbox.after_confirm_before_delete@1",
        LaneCopies::SomeTwice,
    )
    .await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn recorder_killed_before_a_commit_records_each_event_once(db: PgPool) {
    // Injected: SIGKILL of the recorder just before its seventh write commits (an event of the
    // routing, while it holds other events unacked).
    recorder_killed_at(db, "recorder.before_commit@7", Poison::None).await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn recorder_killed_after_recording_an_event_before_its_ack_records_it_once(db: PgPool) {
    // Injected: SIGKILL of the recorder after the seventh event committed and before its ack.
    recorder_killed_at(
        db,
        "recorder-events.after_commit_before_ack@7",
        Poison::None,
    )
    .await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn recorder_killed_after_recording_a_delivery_before_its_ack_records_it_once(db: PgPool) {
    // Injected: SIGKILL of the recorder after the third result delivery committed (the request
    // stamped delivered, the event written) and before its ack.
    recorder_killed_at(
        db,
        "recorder-results.after_commit_before_ack@3",
        Poison::None,
    )
    .await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn recorder_killed_after_publishing_a_dead_letter_before_its_confirm_keeps_it_once(
    db: PgPool,
) {
    // Injected: an event the recorder cannot decode, which it dead-letters itself; SIGKILL of
    // the recorder once the dead-letter copy is written to the broker and before its confirm.
    // The event is delivered again and dead-lettered again: the dead-letter queue may get two
    // copies, and the recorder keeps one.
    recorder_killed_at(
        db,
        "recorder.dead_letter_after_publish_before_confirm@1",
        Poison::MalformedEvent,
    )
    .await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn recorder_killed_after_keeping_a_dead_letter_before_its_ack_keeps_it_once(db: PgPool) {
    // Injected: an event the recorder cannot decode; SIGKILL of the recorder after it stored the
    // dead-letter copy in `dead_letters` and before it acked the copy, which comes back.
    recorder_killed_at(
        db,
        "recorder-dead-letters.after_commit_before_ack@1",
        Poison::MalformedEvent,
    )
    .await;
}

/// Starts the relay without its dispatcher, runs the dispatcher as a process armed at `point`,
/// publishes [`REQUESTS`] routine ECGs, waits for the crash, restarts the dispatcher unarmed, and
/// checks that each request was routed exactly once.
async fn dispatcher_killed_at(db: PgPool, point: &str, lane_copies: LaneCopies) {
    let relay = start_relay(
        db,
        InProcess {
            dispatcher: false,
            recorder: true,
            ..InProcess::ALL
        },
    )
    .await;
    let launcher = Launcher::for_relay(RELAY_SERVICE, &relay);
    let mut dispatcher = launcher.start(Service::Dispatcher, &[(crash_point::ENV, point)]);
    let requests = routine_ecgs();
    for request in &requests {
        relay.broker.publish_request(request).await;
    }
    dispatcher.wait_for_crash().await;
    let dispatcher = launcher.start(Service::Dispatcher, &[]);

    let db = &relay.db;
    let n = REQUESTS as i64;
    wait_until(
        "every request recorded, both its events recorded and the outbox empty",
        || async {
            count(db, "select count(*) from review_requests").await == n
                && count(db, "select count(*) from lifecycle_events").await >= 2 * n
                && count(db, "select count(*) from outbox").await == 0
        },
    )
    .await;
    // SIGTERM: the dispatcher acks what it holds and flushes its outbox; every count is final.
    dispatcher.stop().await;
    let names = &relay.topology.names;
    assert_eq!(
        relay.broker.depth(&names.dispatcher_queue()).await,
        0,
        "every delivery was acked"
    );
    wait_until("the recorder to take every event", || async {
        relay.broker.depth(&names.recorder_events_queue()).await == 0
    })
    .await;

    let rows = assert_one_row_per_request(&relay, &requests, "routed").await;
    for (request_id, id) in &rows {
        assert_history(db, *id, &[Received, Routed], request_id).await;
    }
    assert_eq!(
        count(db, "select count(*) from lifecycle_events").await,
        2 * n,
        "one received and one routed event per request, nothing else"
    );
    assert_nothing_refused_or_left(&relay).await;
    relay
        .assert_no_dead_letters("a crash is not the message's fault")
        .await;

    let lane = names.review_lane(&PoolCode::parse("xy-ecg").unwrap(), Priority::Routine);
    let copies = take_lane(&lane).await;
    let in_lane: BTreeSet<Uuid> = copies.iter().copied().collect();
    let routed: BTreeSet<Uuid> = rows.iter().map(|(_, id)| *id).collect();
    assert_eq!(
        in_lane, routed,
        "the lane holds every routed request and nothing else"
    );
    match lane_copies {
        LaneCopies::One => assert_eq!(copies.len(), REQUESTS, "one lane message per request"),
        LaneCopies::AtLeastOne => {}
        LaneCopies::SomeTwice => assert!(
            copies.len() > REQUESTS,
            "the confirmed batch was published again: {} lane messages",
            copies.len()
        ),
    }
    let duplicates = count(
        db,
        "select coalesce(sum(duplicates_received), 0)::bigint from review_requests",
    )
    .await;
    assert_eq!(
        duplicates, 0,
        "each request was published once: a redelivery after the crash is the relay's own retry, \
         not a duplicate the origin sent"
    );
    println!(
        "{point}: {} rows, {} lane messages for {} requests",
        rows.len(),
        copies.len(),
        in_lane.len()
    );
    relay.stop().await;
}

/// What a recorder test injects besides the requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Poison {
    None,
    /// A message on the events exchange that is no `LifecycleEvent`: the recorder dead-letters it.
    MalformedEvent,
}

/// Starts the relay without its recorder, runs the recorder as a process armed at `point`,
/// publishes `poison` and [`REQUESTS`] routine ECGs and has each claimed and reported, waits for
/// the crash, restarts the recorder unarmed, and checks that every event and every delivery was
/// recorded exactly once, and the poison dead-lettered once.
async fn recorder_killed_at(db: PgPool, point: &str, poison: Poison) {
    let relay = start_relay(
        db,
        InProcess {
            dispatcher: true,
            recorder: false,
            ..InProcess::ALL
        },
    )
    .await;
    let launcher = Launcher::for_relay(RELAY_SERVICE, &relay);
    let mut recorder = launcher.start(Service::Recorder, &[(crash_point::ENV, point)]);
    let names = &relay.topology.names;
    let poisoned = match poison {
        Poison::None => None,
        Poison::MalformedEvent => Some(
            relay
                .broker
                .publish_to(
                    &names.events_exchange(),
                    &format!("{HOSPITAL_A}.routed"),
                    b"not a lifecycle event".to_vec(),
                    None,
                )
                .await,
        ),
    };
    let requests = routine_ecgs();
    for request in &requests {
        relay.broker.publish_request(request).await;
    }
    for _ in &requests {
        let claimed = relay.claim_next(tokens::ECG).await;
        let id = claimed["request_uuid"].as_str().unwrap();
        let (status, body) = relay.report(tokens::ECG, id, report_body(false)).await;
        assert_eq!(status, 201, "{body}");
    }
    recorder.wait_for_crash().await;
    let recorder = launcher.start(Service::Recorder, &[]);

    let db = &relay.db;
    let n = REQUESTS as i64;
    let dead_letters = i64::from(poisoned.is_some());
    wait_until(
        "every event, every delivery and the dead letter recorded",
        || async {
            count(db, "select count(*) from lifecycle_events").await >= 5 * n
                && count(
                    db,
                    "select count(*) from review_results where delivered_at is not null",
                )
                .await
                    == n
                && count(db, "select count(*) from dead_letters").await >= dead_letters
        },
    )
    .await;
    // SIGTERM: the recorder finishes and acks what it holds; every count is final.
    recorder.stop().await;
    for queue in [
        names.recorder_events_queue(),
        names.recorder_results_queue(),
        names.dead_letter_queue(),
    ] {
        assert_eq!(
            relay.broker.depth(&queue).await,
            0,
            "{queue}: every delivery was acked"
        );
    }

    let rows = assert_one_row_per_request(&relay, &requests, "delivered").await;
    for (request_id, id) in &rows {
        assert_history(
            db,
            *id,
            &[Received, Routed, Claimed, Reported, Delivered],
            request_id,
        )
        .await;
    }
    assert_eq!(
        count(db, "select count(*) from lifecycle_events").await,
        5 * n,
        "five events per request, nothing else"
    );
    let results: Vec<(i32, bool)> = sqlx::query_as(
        "select version, delivered_at is not null from review_results order by request_uuid",
    )
    .fetch_all(db)
    .await
    .unwrap();
    assert_eq!(
        results,
        vec![(1, true); REQUESTS],
        "one result per request, each delivered"
    );
    assert_nothing_refused_or_left(&relay).await;
    match &poisoned {
        None => relay.assert_no_dead_letters("nothing was poisoned").await,
        Some(published) => {
            let kept: Vec<(String, String, String)> =
                sqlx::query_as("select message_id, reason, source_queue from dead_letters")
                    .fetch_all(db)
                    .await
                    .unwrap();
            assert_eq!(
                kept,
                [(
                    published.message_id.clone(),
                    "malformed_event".to_owned(),
                    names.recorder_events_queue()
                )],
                "the malformed event is kept once, with the recorder's reason"
            );
        }
    }
    println!(
        "{point}: {} requests, {} events, {} deliveries, {} dead letters recorded",
        rows.len(),
        count(db, "select count(*) from lifecycle_events").await,
        results.len(),
        count(db, "select count(*) from dead_letters").await
    );
    relay.stop().await;
}

async fn start_relay(db: PgPool, in_process: InProcess) -> TestRelay {
    TestRelay::start_running(
        db,
        &tests::amqp_url(),
        &test_registry(HOSPITAL_A),
        in_process,
    )
    .await
}

/// [`REQUESTS`] routine ECGs from hospital A, each with its own request id.
fn routine_ecgs() -> Vec<v1::ReviewRequest> {
    (0..REQUESTS)
        .map(|i| {
            ecg_request(
                HOSPITAL_A,
                &format!("ECG-CRASH-{i:02}"),
                v1::Priority::Routine,
                RECORDS[i % RECORDS.len()],
            )
        })
        .collect()
}

/// Checks that the relay holds exactly one row per request, each in `state`; returns
/// (request id, relay id) per request.
async fn assert_one_row_per_request(
    relay: &TestRelay,
    requests: &[v1::ReviewRequest],
    state: &str,
) -> Vec<(String, Uuid)> {
    let rows: Vec<(String, Uuid, String)> = sqlx::query_as(
        "select request_id, id, state from review_requests where origin_hospital = $1 order by request_id",
    )
    .bind(HOSPITAL_A)
    .fetch_all(&relay.db)
    .await
    .unwrap();
    let recorded: Vec<&str> = rows.iter().map(|(id, _, _)| id.as_str()).collect();
    let mut expected: Vec<&str> = requests.iter().map(|r| r.request_id.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(recorded, expected, "exactly one row per request");
    assert_eq!(
        count(&relay.db, "select count(*) from review_requests").await,
        REQUESTS as i64,
        "no row for anything else"
    );
    for (request_id, _, found) in &rows {
        assert_eq!(found, state, "state of {request_id}");
    }
    rows.into_iter()
        .map(|(request_id, id, _)| (request_id, id))
        .collect()
}

async fn assert_history(db: &PgPool, id: Uuid, expected: &[RequestState], request_id: &str) {
    assert_eq!(
        store::audit::states(db, id).await.unwrap(),
        expected,
        "history of {request_id}"
    );
}

/// Nothing refused, nothing waiting in the outbox.
async fn assert_nothing_refused_or_left(relay: &TestRelay) {
    let db = &relay.db;
    assert_eq!(
        count(db, "select count(*) from rejected_messages").await,
        0,
        "nothing refused"
    );
    assert_eq!(
        count(db, "select count(*) from outbox").await,
        0,
        "the outbox is flushed"
    );
}

/// Takes every message of a lane; returns the relay's request id each one names.
async fn take_lane(queue: &str) -> Vec<Uuid> {
    tests::take_all(queue)
        .await
        .iter()
        .map(|delivery| {
            let headers = delivery.properties.headers().as_ref();
            let id = bus::header_str(headers, bus::messages::RELAY_REQUEST_UUID_HEADER)
                .expect("a lane message names its request");
            id.parse().unwrap()
        })
        .collect()
}

/// A `count(*)` query without parameters. Plain `query_scalar` rather than `query!`, so that this
/// file needs no entries in the committed `.sqlx/` metadata.
async fn count(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}
