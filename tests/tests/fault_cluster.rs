//! Fault test: one node of a three-node RabbitMQ cluster dies. The relay runs on a private
//! cluster on this machine (`tests::private_cluster`), where every queue is a quorum queue with a
//! replica on each node, and on a database of its own on the shared PostgreSQL server. The county
//! publishes through its own connection, as a real HIS would: to the first node that answers,
//! publishing again whatever the broker did not confirm.
//!
//! The guarantee under test (ARCHITECTURE.md, "Every queue is a durable quorum queue",
//! "Transient faults do not cost deliveries", "Exactly-once effects"): losing one node of three
//! loses nothing, records nothing twice, and does not stop the relay: the services reconnect to
//! the two others and work goes on while the node is down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use domain::RequestState::{Received, Routed};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tests::county::{County, RequestMix, county_requests};
use tests::inspector::{Inspector, TestDatabase};
use tests::private_cluster::{NODES, PrivateCluster, QuorumQueue};
use tests::{DEADLINE, HOSPITAL_A, TestRelay, test_registry, wait_for, wait_until};
use tokio::sync::watch;

/// Requests the county publishes: half ECGs (~120 KB each), half CT studies (a claim check).
const REQUESTS: usize = 240;

/// The connection names of the relay's services (`runtime::supervise`).
const SERVICES: [&str; 3] = ["dispatcher", "recorder", "review-desk"];

/// Injects: SIGKILL of one node of three, once a third of the requests are confirmed. The node
/// is found at run time: the leader of the dispatcher's queue, which is also the node the county
/// publishes through (and, when the cluster places leaders next to their declaring client, the
/// leader of every other queue and the node the services are connected to). The node stays down
/// until every request is routed, then restarts on the same data and rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_loses_nothing_and_traffic_goes_on_through_the_others() {
    let test_started = Instant::now();
    let database = TestDatabase::create("cluster").await;
    let mut cluster = PrivateCluster::start().await;
    let formed_in = test_started.elapsed();
    let registry = test_registry(HOSPITAL_A);
    let relay = TestRelay::start_on(database.pool.clone(), &cluster.addresses(), &registry).await;
    let names = relay.topology.names.clone();
    let ecg_lane = names.review_lane(
        &domain::PoolCode::parse("xy-ecg").unwrap(),
        domain::Priority::Routine,
    );
    let imaging_lane = names.review_lane(
        &domain::PoolCode::parse("xy-imaging").unwrap(),
        domain::Priority::Routine,
    );

    let everyone = cluster.node_names();
    let queues = namespace_queues(&cluster, &names).await;
    for used in [
        names.dispatcher_queue(),
        names.recorder_events_queue(),
        names.recorder_results_queue(),
        names.dead_letter_queue(),
        ecg_lane.clone(),
        imaging_lane.clone(),
    ] {
        assert!(queues.contains_key(&used), "{used} is a quorum queue");
    }
    for queue in queues.values() {
        assert_eq!(
            (&queue.members, &queue.online),
            (&everyone, &everyone),
            "{} has a running replica on every node",
            queue.name
        );
    }

    let leader = queues[&names.dispatcher_queue()]
        .leader
        .clone()
        .expect("the dispatcher's queue has a leader");
    let victim = cluster.index_of(&leader);
    let connections = wait_for("every service to be connected", || async {
        let connections = cluster.connections().await;
        SERVICES
            .iter()
            .all(|service| connections.iter().any(|c| c.name == *service))
            .then_some(connections)
    })
    .await;
    let services_on_victim: BTreeSet<&str> = connections
        .iter()
        .filter(|connection| connection.node == victim)
        .filter_map(|connection| SERVICES.iter().copied().find(|s| *s == connection.name))
        .collect();
    let leaders_on_victim = queues
        .values()
        .filter(|queue| queue.leader.as_deref() == Some(leader.as_str()))
        .count();

    let (progress, mut confirmed_so_far) = watch::channel(0);
    let county = County {
        addresses: bus::BrokerAddresses::parse(&cluster.addresses_from(victim)).unwrap(),
        exchange: names.requests_exchange(),
        progress,
    };
    let publishing =
        tokio::spawn(county.publish(county_requests(REQUESTS, "CLUSTER", RequestMix::EcgAndCt)));
    tokio::time::timeout(
        DEADLINE,
        confirmed_so_far.wait_for(|confirmed| *confirmed >= REQUESTS / 3),
    )
    .await
    .expect("a third of the requests confirmed in time")
    .expect("the county is publishing");
    cluster.node_mut(victim).kill_hard().await;
    let killed_at = Instant::now();
    // Whatever is confirmed from here on was confirmed by the two surviving nodes.
    let confirmed_at_kill = *confirmed_so_far.borrow();
    let county_log = tokio::time::timeout(DEADLINE, publishing)
        .await
        .expect("the county got every request confirmed by the surviving nodes")
        .expect("the county's publisher panicked");

    let confirmed: BTreeSet<String> = county_log.confirmed.iter().cloned().collect();
    assert_eq!(
        (county_log.confirmed.len(), confirmed.len()),
        (REQUESTS, REQUESTS),
        "the county saw each of its requests confirmed once"
    );
    assert!(
        confirmed_at_kill < REQUESTS && county_log.connections >= 2,
        "the kill came mid-stream ({confirmed_at_kill} confirmed, {} connections)",
        county_log.connections
    );

    // Traffic goes on while the node is down: every request, those the survivors confirmed
    // among them, is taken from the dispatcher's queue, routed and recorded, and the outboxes
    // publish everything they hold.
    let survivor = (victim + 1) % NODES;
    let inspector = Inspector::connect(&cluster.node(survivor).url()).await;
    let db = &relay.db;
    wait_until_processed(&cluster, &inspector, &names, db).await;
    let processed_after_kill = killed_at.elapsed();
    let mut survivors = everyone.clone();
    survivors.remove(&leader);
    assert_eq!(
        cluster.running_nodes().await,
        survivors,
        "the killed node is still down"
    );
    let connections = cluster.connections().await;
    for service in SERVICES {
        assert!(
            connections
                .iter()
                .any(|connection| connection.name == service),
            "{service} is connected to a surviving node"
        );
    }
    let dispatcher_queue = &namespace_queues(&cluster, &names).await[&names.dispatcher_queue()];
    assert!(
        dispatcher_queue
            .leader
            .as_ref()
            .is_some_and(|leader| survivors.contains(leader)),
        "the dispatcher's queue has a new leader on a surviving node: {dispatcher_queue:?}"
    );

    // The node comes back on its data and rejoins: every replica on it runs again.
    cluster.node_mut(victim).restart().await;
    wait_until("the restarted node to rejoin the cluster", || async {
        cluster.running_nodes().await == everyone
    })
    .await;
    wait_until(
        "every replica on the restarted node to run again",
        || async {
            namespace_queues(&cluster, &names)
                .await
                .values()
                .all(|queue| queue.online == everyone)
        },
    )
    .await;
    inspector.close().await;

    // Read the lanes through the restarted node before stopping the relay: `stop` deletes the
    // namespace when the harness's own connection (to the first node) survived.
    let inspector = Inspector::connect(&cluster.node(victim).url()).await;
    let ecg_copies = inspector.drain(&ecg_lane).await;
    let imaging_copies = inspector.drain(&imaging_lane).await;
    let dead_letters_waiting = inspector.depth(&names.dead_letter_queue()).await;
    inspector.close().await;
    relay.stop().await;

    let db = &database.pool;
    let recorded = sqlx::query!(
        "select id, request_id, kind, state from review_requests where origin_hospital = $1",
        HOSPITAL_A
    )
    .fetch_all(db)
    .await
    .unwrap();
    let recorded_ids: BTreeSet<String> = recorded.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(recorded.len(), REQUESTS, "one row per confirmed request");
    assert_eq!(recorded_ids, confirmed, "exactly the confirmed requests");
    for request in &recorded {
        assert_eq!(request.state, "routed", "{}", request.request_id);
        assert_eq!(
            store::audit::states(db, request.id).await.unwrap(),
            [Received, Routed],
            "history of {}",
            request.request_id
        );
    }
    let events = sqlx::query_scalar!(r#"select count(*) as "n!" from lifecycle_events"#)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(events, 2 * REQUESTS as i64, "no lifecycle event twice");
    let refused = sqlx::query_scalar!(r#"select count(*) as "n!" from rejected_messages"#)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(refused, 0, "nothing refused");
    assert_eq!(outbox_rows(db).await, 0, "the outbox is flushed");
    let dead_letters = sqlx::query_scalar!(r#"select count(*) as "n!" from dead_letters"#)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(
        (dead_letters_waiting, dead_letters),
        (0, 0),
        "no dead letters, waiting or stored"
    );
    let duplicates = sqlx::query_scalar!(
        r#"select coalesce(sum(duplicates_received), 0)::bigint as "n!" from review_requests"#
    )
    .fetch_one(db)
    .await
    .unwrap();

    // A lane may hold a copy twice (an outbox publish whose confirm died with the node is
    // published again; the review desk acks stale copies away), but it holds every request of
    // its kind and nothing else.
    let rows_of = |kind: &str| -> BTreeSet<uuid::Uuid> {
        recorded
            .iter()
            .filter(|request| request.kind == kind)
            .map(|request| request.id)
            .collect()
    };
    let ecg_in_lane: BTreeSet<uuid::Uuid> = ecg_copies.iter().copied().collect();
    let imaging_in_lane: BTreeSet<uuid::Uuid> = imaging_copies.iter().copied().collect();
    assert_eq!(ecg_in_lane, rows_of("ecg"), "the ECG lane holds every ECG");
    assert_eq!(
        imaging_in_lane,
        rows_of("imaging"),
        "the imaging lane holds every CT study"
    );
    assert_eq!(ecg_in_lane.len() + imaging_in_lane.len(), REQUESTS);

    println!(
        "cluster formed in {formed_in:?}; killed {leader} (leader of {leaders_on_victim} of {} \
         queues, services connected to it: {services_on_victim:?}); confirmed {} \
         ({confirmed_at_kill} before the kill, {} by the survivors); county re-published {} \
         times ({} requests) over {} connections ({} given up while open); all routed and \
         published {processed_after_kill:?} after the kill; restart {:?}; rows {}; \
         duplicates_received {duplicates}; lane copies {} ({} distinct); test ran {:?}",
        queues.len(),
        confirmed.len(),
        REQUESTS - confirmed_at_kill,
        county_log.republished,
        county_log.republished_ids.len(),
        county_log.connections,
        county_log.abandoned_connections,
        cluster.node(victim).last_start(),
        recorded.len(),
        ecg_copies.len() + imaging_copies.len(),
        ecg_in_lane.len() + imaging_in_lane.len(),
        test_started.elapsed(),
    );
    database.drop_database().await;
}

/// Waits until the relay has taken every copy from the dispatcher's queue, the audit trail
/// holds every request as routed and the outboxes are empty, or panics at the deadline with what
/// it saw last and the cluster's account of its queues.
async fn wait_until_processed(
    cluster: &PrivateCluster,
    inspector: &Inspector,
    names: &bus::Names,
    db: &PgPool,
) {
    let started = Instant::now();
    loop {
        let seen = (
            inspector.depth(&names.dispatcher_queue()).await,
            routed_events(db).await,
            outbox_rows(db).await,
        );
        if seen.0 == 0 && seen.1 >= REQUESTS as i64 && seen.2 == 0 {
            return;
        }
        if started.elapsed() > DEADLINE {
            panic!(
                "the relay did not process every request within {DEADLINE:?}: (dispatcher queue \
                 depth, routed events, outbox rows) = {seen:?}\n{}",
                cluster.report().await
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The relay's quorum queues (those of its namespace), by name.
async fn namespace_queues(
    cluster: &PrivateCluster,
    names: &bus::Names,
) -> BTreeMap<String, QuorumQueue> {
    let prefix = format!("{}.", names.namespace());
    cluster
        .quorum_queues()
        .await
        .into_iter()
        .filter(|queue| queue.name.starts_with(&prefix))
        .map(|queue| (queue.name.clone(), queue))
        .collect()
}

async fn routed_events(db: &PgPool) -> i64 {
    sqlx::query_scalar!(r#"select count(*) as "n!" from lifecycle_events where state = 'routed'"#)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn outbox_rows(db: &PgPool) -> i64 {
    sqlx::query_scalar!(r#"select count(*) as "n!" from outbox"#)
        .fetch_one(db)
        .await
        .unwrap()
}
