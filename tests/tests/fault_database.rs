//! Fault test 3: PostgreSQL goes away under a running relay. Each test runs the whole relay on a
//! private PostgreSQL cluster (see `tests::private_postgres`) that it stops or kills, and checks
//! that nothing is lost, nothing is doubled, nothing is dead-lettered, and that traffic resumes
//! by itself once the database is back: a database outage is waited out inside the process and
//! never costs a delivery attempt (ARCHITECTURE.md, "Transient faults do not cost deliveries").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::RequestState::{Claimed, Delivered, Received, Reported, Routed};
use domain::{PoolCode, Priority};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tests::fixtures::ecg_request;
use tests::private_postgres::PrivatePostgres;
use tests::{HOSPITAL_A, TestRelay, report_body, tokens, wait_until};
use tokio::sync::oneshot;

/// The CinC 2021 records the requests are built from, used in turn.
const RECORDS: [&str; 10] = [
    "E07500", "E07501", "E07502", "E07503", "E07504", "JS20000", "JS20001", "JS20002", "HR06000",
    "HR06001",
];

/// A relay whose services all use one pool on the private cluster. The pool is lazy and
/// reconnects by itself, as in production.
async fn relay_on(postgres: &PrivatePostgres) -> TestRelay {
    let db = store::connect_lazy(&postgres.url(), 8).expect("a pool on the private cluster");
    store::MIGRATOR
        .run(&db)
        .await
        .expect("migrating the private cluster");
    TestRelay::start_on(db, &tests::amqp_url(), &tests::test_registry(HOSPITAL_A)).await
}

/// `count` routine ECG requests from hospital A, each with its own request id.
fn routine_ecgs(prefix: &str, count: usize) -> Vec<v1::ReviewRequest> {
    (0..count)
        .map(|i| {
            ecg_request(
                HOSPITAL_A,
                &format!("{prefix}-{i:03}"),
                v1::Priority::Routine,
                RECORDS[i % RECORDS.len()],
            )
        })
        .collect()
}

/// The lane every routine ECG from hospital A is routed to.
fn routine_ecg_lane(relay: &TestRelay) -> String {
    relay
        .topology
        .names
        .review_lane(&PoolCode::parse("xy-ecg").unwrap(), Priority::Routine)
}

/// How many requests the relay has recorded, in any state.
async fn recorded_requests(relay: &TestRelay) -> i64 {
    store::status::requests_by_state(&relay.db)
        .await
        .unwrap()
        .iter()
        .map(|(_, count)| count)
        .sum()
}

/// Waits until every request has exactly one row and an audit trail of exactly
/// `received → routed` (so exactly one `routed` event), and checks that nothing else was recorded
/// and nothing refused.
async fn assert_each_routed_exactly_once(relay: &TestRelay, requests: &[v1::ReviewRequest]) {
    let expected = i64::try_from(requests.len()).unwrap();
    wait_until("every request to be recorded", || async {
        recorded_requests(relay).await >= expected
    })
    .await;
    for request in requests {
        // One row per (origin, request id) is the table's unique key; `request_uuid` finds it.
        let id = relay.request_uuid(HOSPITAL_A, &request.request_id).await;
        relay.wait_for_history(id, &[Received, Routed]).await;
    }
    assert_eq!(
        store::status::requests_by_state(&relay.db).await.unwrap(),
        vec![("routed".to_owned(), expected)],
        "exactly one row per request, each routed"
    );
    assert_eq!(
        store::status::refusals_by_reason(&relay.db).await.unwrap(),
        vec![],
        "nothing was refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_published_while_postgres_is_down_are_all_routed_once_it_returns_and_none_is_dead_lettered()
 {
    // Injected: a clean PostgreSQL shutdown (`pg_ctl stop -m fast`) before as many requests as
    // the dispatcher's prefetch are published, held for 60 s while the dispatcher holds every
    // one of them unacked.
    let n = usize::from(dispatcher::Config::default().prefetch);
    let postgres = PrivatePostgres::start().await;
    let relay = relay_on(&postgres).await;
    let names = relay.topology.names.clone();
    let dispatcher_queue = names.dispatcher_queue();
    let requests = routine_ecgs("ECG-DOWN", n);

    postgres.stop_fast().await;
    for request in &requests {
        // Each publish asserts the broker's confirm: the relay owns the request from here on.
        relay.broker.publish_request(request).await;
    }
    // The dispatcher's prefetch covers them all: none waits in the queue, all are in flight.
    wait_until("the dispatcher to take every request", || async {
        relay.broker.depth(&dispatcher_queue).await == 0
    })
    .await;

    // The one timed wait of the suite, and the point of this test: the database stays down for
    // 60 s of consumption, and all along no delivery is handed back to the queue (which would
    // count towards the delivery limit, and is the only way to the dead letters: the dispatcher
    // cannot record a refusal without the database). The recorder keeps dead letters in
    // PostgreSQL, so whether any arose is checked once it is back.
    let outage = Duration::from_secs(60);
    let down_since = Instant::now();
    while down_since.elapsed() < outage {
        assert_eq!(
            relay.broker.depth(&dispatcher_queue).await,
            0,
            "no delivery is handed back while PostgreSQL is down ({:?} into the outage)",
            down_since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    postgres.restart().await;
    assert_each_routed_exactly_once(&relay, &requests).await;
    // Every event is recorded, so the outbox has published every lane message at least once;
    // with no fault after the restart, it published each exactly once.
    let lane = routine_ecg_lane(&relay);
    assert_eq!(
        relay.broker.depth(&lane).await,
        n as u32,
        "one lane message per request"
    );
    relay
        .assert_no_dead_letters("an outage is not the messages' fault")
        .await;
    assert_eq!(relay.broker.depth(&dispatcher_queue).await, 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_stream_loses_nothing_and_doubles_nothing() {
    // Injected: SIGKILL of the postmaster while the dispatcher is routing the first third of a
    // stream of 60 requests, the second third published while PostgreSQL is dead, then a
    // restart (with crash recovery) while the dispatcher waits on them, before the last third.
    const N: usize = 60;
    let postgres = PrivatePostgres::start().await;
    let relay = relay_on(&postgres).await;
    let requests = routine_ecgs("ECG-CRASH", N);
    let thirds: Vec<&[v1::ReviewRequest]> = requests.chunks(N / 3).collect();
    let (killed, on_killed) = oneshot::channel();
    let (published_while_dead, on_published_while_dead) = oneshot::channel();
    let (restarted, on_restarted) = oneshot::channel();

    let publisher = async {
        for request in thirds[0] {
            relay.broker.publish_request(request).await;
        }
        on_killed.await.unwrap();
        for request in thirds[1] {
            relay.broker.publish_request(request).await;
        }
        published_while_dead.send(()).unwrap();
        on_restarted.await.unwrap();
        for request in thirds[2] {
            relay.broker.publish_request(request).await;
        }
    };
    let crasher = async {
        // Mid-stream: the dispatcher has committed its first request and is working on more,
        // and its outbox relay is publishing what was committed.
        wait_until("the dispatcher to route its first request", || async {
            recorded_requests(&relay).await > 0
        })
        .await;
        postgres.kill_hard().await;
        killed.send(()).unwrap();
        on_published_while_dead.await.unwrap();
        postgres.restart().await;
        restarted.send(()).unwrap();
    };
    tokio::join!(publisher, crasher);

    assert_each_routed_exactly_once(&relay, &requests).await;
    relay
        .assert_no_dead_letters("a crash is not the message's fault")
        .await;
    // The outbox publishes at least once: a crash between the broker's confirm and the commit
    // that deletes the outbox rows publishes those rows again (ARCHITECTURE.md, "Ack after
    // durable"), so the lane may hold a second copy of a request, never a request of its own.
    // What must hold is that no reviewer ever receives a request twice: the desk acks the stale
    // copy away. So the lane is drained through the desk.
    let lane = routine_ecg_lane(&relay);
    let copies = relay.broker.depth(&lane).await;
    assert!(
        copies >= N as u32,
        "every request has a lane message: {copies} for {N}"
    );
    let mut handed_out = BTreeMap::new();
    for _ in 0..N {
        let claimed = relay
            .take_next(tokens::ECG)
            .await
            .expect("every routed request is handed out");
        let request_id = claimed["request_id"].as_str().unwrap().to_owned();
        let id = claimed["request_uuid"].as_str().unwrap().parse().unwrap();
        assert!(
            handed_out.insert(request_id.clone(), id).is_none(),
            "{request_id} was handed out twice"
        );
    }
    assert!(
        relay.take_next(tokens::ECG).await.is_none(),
        "nothing is handed out beyond the {N} requests ({copies} lane messages)"
    );
    assert_eq!(
        handed_out.keys().collect::<Vec<_>>(),
        requests.iter().map(|r| &r.request_id).collect::<Vec<_>>(),
        "each request handed out exactly once"
    );
    assert_eq!(
        relay.broker.depth(&lane).await,
        0,
        "the copies were acked away"
    );
    for id in handed_out.values() {
        relay
            .wait_for_history(*id, &[Received, Routed, Claimed])
            .await;
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_desk_answers_503_while_postgres_is_down_and_recovers() {
    // Injected: a clean PostgreSQL shutdown while one routed request waits in its lane; a
    // reviewer asks for work during the outage, and again after the restart.
    let postgres = PrivatePostgres::start().await;
    let relay = relay_on(&postgres).await;
    let request = ecg_request(HOSPITAL_A, "ECG-DESK-1", v1::Priority::Routine, "E07505");
    relay.broker.publish_request(&request).await;
    let id = relay.request_uuid(HOSPITAL_A, &request.request_id).await;
    relay.wait_for_history(id, &[Received, Routed]).await;
    let lane = routine_ecg_lane(&relay);
    wait_until("the request to wait in its lane", || async {
        relay.broker.depth(&lane).await == 1
    })
    .await;

    postgres.stop_fast().await;
    let response = relay.worklist_next(tokens::ECG).await;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    assert_eq!(
        relay.broker.depth(&lane).await,
        1,
        "the refused call took nothing from the lane"
    );

    postgres.restart().await;
    let claimed = relay
        .take_next(tokens::ECG)
        .await
        .expect("the waiting request is handed out once PostgreSQL is back");
    assert_eq!(claimed["request_uuid"], id.to_string());
    let (status, body) = relay
        .report(tokens::ECG, &id.to_string(), report_body(false))
        .await;
    assert_eq!(status, 201, "{body}");
    let notice = relay.broker.next_notice(HOSPITAL_A).await;
    let Some(v1::origin_notice::Notice::Result(result)) = notice.notice else {
        panic!("expected a result, got {notice:?}")
    };
    assert_eq!(
        (result.request_id.as_str(), result.report_version),
        ("ECG-DESK-1", 1)
    );
    relay
        .wait_for_history(id, &[Received, Routed, Claimed, Reported, Delivered])
        .await;
    assert!(
        relay.take_next(tokens::ECG).await.is_none(),
        "nothing else waits"
    );
    assert_eq!(relay.broker.depth(&lane).await, 0);
    relay
        .assert_no_dead_letters("the desk's outage cost no message")
        .await;
    relay.stop().await;
}
