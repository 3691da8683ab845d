//! Fault test (#7): a backlog. 200,000 requests queue up while no consumer runs; then the
//! dispatcher and the recorder start, as processes of their own, and drain it. The memory of
//! each stays bounded — prefetch bounds what a consumer holds, however deep its queue — and
//! nothing is lost or duplicated.
//!
//! It runs on a private RabbitMQ node (`tests::private_broker`), so that 200,000 messages in
//! quorum queues (which RabbitMQ 3.10 keeps in memory) never load the shared broker the other
//! tests use, and on a database of its own on the shared PostgreSQL server.
//!
//! Figures (peak RSS per service, publish and drain rates) are printed; run with
//! `--nocapture` to see them. Only memory is asserted, against a generous bound: boundedness is
//! the property, the figure is for the reader. `TELERELAY_TEST_BACKLOG=<n>` runs it with another
//! backlog size (the 200,000 by default).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bus::lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use bus::lapin::types::FieldTable;
use bus::lapin::{BasicProperties, Channel, Confirmation, Connection};
use contract::v1;
use domain::{PoolCode, Priority};
use futures::StreamExt as _;
use prost::Message as _;
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tests::fixtures::{imaging_request, pathology_request};
use tests::private_broker::PrivateBroker;
use tests::service_process::{Launcher, Service, ServiceProcess};
use tests::{DEADLINE, HOSPITAL_A, InProcess, TestRelay, test_registry};
use uuid::Uuid;

/// This crate's binary that runs one service as a process.
const RELAY_SERVICE: &str = env!("CARGO_BIN_EXE_relay-service");

/// The backlog of issue #7.
const DEFAULT_BACKLOG: usize = 200_000;

/// Publishes in flight before the county waits for their confirms.
const WINDOW: usize = 2_000;

/// The bound asserted on each service's peak resident memory. Generous on purpose: what matters
/// is that memory does not grow with the backlog (the printed figure shows how far below it is).
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// How often the drain is sampled (memory, progress).
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// How long the drain may take before the test fails: about ten times what it takes on a
/// two-core machine shared with other builds.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60 * 60);

/// The lanes the backlog is routed to: imaging and pathology, every priority.
const POOLS: [&str; 2] = ["xy-imaging", "xy-pathology"];

fn backlog_size() -> usize {
    std::env::var("TELERELAY_TEST_BACKLOG").map_or(DEFAULT_BACKLOG, |value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("TELERELAY_TEST_BACKLOG={value:?} is not a number"))
    })
}

/// Injects: a backlog of 200,000 requests (imaging and pathology claim checks, every priority,
/// each its own request id), published and confirmed while neither the dispatcher nor the
/// recorder runs; then both start at once, as processes, on the full queue.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_backlog_of_200_000_requests_drains_in_bounded_memory_each_routed_once(db: PgPool) {
    let test_started = Instant::now();
    let n = backlog_size();
    let broker = PrivateBroker::start().await;
    let relay = TestRelay::start_running(
        db,
        &broker.url(),
        &test_registry(HOSPITAL_A),
        InProcess::DESK_ONLY,
    )
    .await;
    let names = relay.topology.names.clone();
    let db = &relay.db;

    let publishing = Instant::now();
    let published = publish_backlog(&broker.url(), &names.requests_exchange(), n).await;
    let publish_time = publishing.elapsed();
    assert_eq!(published.len(), n);
    assert_eq!(
        relay.broker.depth(&names.dispatcher_queue()).await,
        n as u32,
        "the whole backlog waits in the dispatcher's queue"
    );

    let launcher = Launcher::for_relay(RELAY_SERVICE, &relay);
    let draining = Instant::now();
    let dispatcher = launcher.start(Service::Dispatcher, &[]);
    let recorder = launcher.start(Service::Recorder, &[]);
    let mut memory = [Memory::of(&dispatcher), Memory::of(&recorder)];
    let target = i64::try_from(n).unwrap();
    let mut last_report = Instant::now();
    loop {
        for (process, memory) in [&dispatcher, &recorder].into_iter().zip(&mut memory) {
            memory.sample(process);
        }
        let routed = count(db, "select count(*) from review_requests").await;
        let events = count(db, "select count(*) from lifecycle_events").await;
        if routed == target
            && events == 2 * target
            && count(db, "select count(*) from outbox").await == 0
            && relay.broker.depth(&names.dispatcher_queue()).await == 0
            && relay.broker.depth(&names.recorder_events_queue()).await == 0
        {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "backlog: {:?} in, {routed} routed, {events} events recorded; RSS dispatcher {} KiB, recorder {} KiB",
                draining.elapsed(),
                memory[0].last_kib,
                memory[1].last_kib
            );
            last_report = Instant::now();
        }
        assert!(
            draining.elapsed() < DRAIN_DEADLINE,
            "the backlog did not drain within {DRAIN_DEADLINE:?}: {routed} of {n} routed, {events} events"
        );
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let drain_time = draining.elapsed();
    for (process, memory) in [&dispatcher, &recorder].into_iter().zip(&mut memory) {
        memory.sample(process);
    }
    dispatcher.stop().await;
    recorder.stop().await;

    // Nothing lost, nothing duplicated: one row per published request, each routed once…
    assert_eq!(
        store::status::requests_by_state(db).await.unwrap(),
        vec![("routed".to_owned(), target)],
        "one row per request, each routed"
    );
    let recorded: BTreeSet<String> =
        sqlx::query_scalar("select request_id from review_requests where origin_hospital = $1")
            .bind(HOSPITAL_A)
            .fetch_all(db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert!(recorded == published, "exactly the published request ids");
    assert_eq!(
        count(
            db,
            "select coalesce(sum(duplicates_received), 0)::bigint from review_requests"
        )
        .await,
        0,
        "no request was delivered to the dispatcher twice"
    );
    // …each with exactly one `received` and one `routed` event…
    assert_eq!(
        count(db, "select count(*) from lifecycle_events").await,
        2 * target
    );
    assert_eq!(
        count(
            db,
            "select count(*) from (select request_uuid from lifecycle_events group by request_uuid
                 having count(*) = 2
                    and count(*) filter (where state = 'received') = 1
                    and count(*) filter (where state = 'routed') = 1) as complete"
        )
        .await,
        target,
        "every request has exactly one received and one routed event"
    );
    // …nothing refused, dead-lettered or left behind…
    assert_eq!(count(db, "select count(*) from rejected_messages").await, 0);
    assert_eq!(count(db, "select count(*) from outbox").await, 0);
    for queue in [
        names.dispatcher_queue(),
        names.recorder_events_queue(),
        names.dead_letter_queue(),
    ] {
        assert_eq!(relay.broker.depth(&queue).await, 0, "{queue} is empty");
    }
    // …and the lanes hold exactly one message per request.
    let lanes: Vec<String> = POOLS
        .iter()
        .flat_map(|pool| {
            let pool = PoolCode::parse(pool).unwrap();
            Priority::LANES_MOST_URGENT_FIRST.map(|priority| names.review_lane(&pool, priority))
        })
        .collect();
    let lane_ids = take_lanes(&broker.url(), &lanes).await;
    let distinct: BTreeSet<Uuid> = lane_ids.iter().copied().collect();
    let rows: BTreeSet<Uuid> = sqlx::query_scalar("select id from review_requests")
        .fetch_all(db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(lane_ids.len(), n, "one lane message per request");
    assert!(
        distinct == rows,
        "the lanes hold every routed request, once"
    );

    let seconds = drain_time.as_secs_f64();
    println!(
        "backlog of {n}: published in {publish_time:.1?} ({:.0} requests/s); drained in \
         {drain_time:.1?} ({:.0} requests/s, {:.0} events/s recorded)",
        n as f64 / publish_time.as_secs_f64(),
        n as f64 / seconds,
        2.0 * n as f64 / seconds,
    );
    for (service, memory) in ["dispatcher", "recorder"].iter().zip(&memory) {
        println!(
            "{service}: peak RSS {} KiB ({:.1} MiB; highest sample {} KiB, at the end {} KiB)",
            memory.peak_kib,
            memory.peak_kib as f64 / 1024.0,
            memory.highest_sample_kib,
            memory.last_kib
        );
        assert!(
            memory.peak_kib < RSS_BOUND_KIB,
            "{service}'s peak RSS {} KiB exceeds {RSS_BOUND_KIB} KiB",
            memory.peak_kib
        );
    }
    relay.stop().await;
    println!("test took {:.1?}", test_started.elapsed());
}

/// A service's memory during the drain.
struct Memory {
    /// The kernel's high-water mark (`VmHWM`): the true peak, between samples too.
    peak_kib: u64,
    highest_sample_kib: u64,
    last_kib: u64,
}

impl Memory {
    fn of(process: &ServiceProcess) -> Self {
        let mut memory = Self {
            peak_kib: 0,
            highest_sample_kib: 0,
            last_kib: 0,
        };
        memory.sample(process);
        memory
    }

    fn sample(&mut self, process: &ServiceProcess) {
        let (Some(rss), Some(peak)) = (process.rss_kib(), process.peak_rss_kib()) else {
            panic!(
                "{} is gone during the drain:\n{}",
                process.service().name(),
                process.log_tail()
            );
        };
        self.last_kib = rss;
        self.highest_sample_kib = self.highest_sample_kib.max(rss);
        self.peak_kib = self.peak_kib.max(peak);
    }
}

/// Publishes `n` requests as hospital A's HIS would (persistent, mandatory, `user_id` set),
/// [`WINDOW`] at a time before awaiting their confirms; returns the request ids, each confirmed
/// and routed.
async fn publish_backlog(url: &str, exchange: &str, n: usize) -> BTreeSet<String> {
    const PRIORITIES: [v1::Priority; 4] = [
        v1::Priority::Routine,
        v1::Priority::Urgent,
        v1::Priority::Asap,
        v1::Priority::Stat,
    ];
    let connection = Connection::connect(url, Default::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut published = BTreeSet::new();
    for window in (0..n).collect::<Vec<_>>().chunks(WINDOW) {
        let mut confirms = Vec::with_capacity(window.len());
        for &i in window {
            let request_id = format!("BACKLOG-{i:06}");
            let priority = PRIORITIES[i % PRIORITIES.len()];
            let (request, kind) = if i % 5 == 4 {
                (
                    pathology_request(HOSPITAL_A, &request_id, priority),
                    "pathology",
                )
            } else {
                (
                    imaging_request(HOSPITAL_A, &request_id, priority),
                    "imaging",
                )
            };
            confirms.push(publish(&channel, exchange, kind, &request).await);
            published.insert(request_id);
        }
        for confirm in futures::future::join_all(confirms).await {
            assert_eq!(
                confirm.unwrap(),
                Confirmation::Ack(None),
                "the broker confirms and routes every request"
            );
        }
    }
    connection.close(200, "backlog published".into()).await.ok();
    published
}

async fn publish(
    channel: &Channel,
    exchange: &str,
    kind: &str,
    request: &v1::ReviewRequest,
) -> bus::lapin::PublisherConfirm {
    let message_id = Uuid::new_v4().to_string();
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(contract::CONTENT_TYPE.into())
        .with_type(contract::message_type::REVIEW_REQUEST.into())
        .with_message_id(message_id.as_str().into())
        .with_correlation_id(message_id.as_str().into())
        .with_user_id("guest".into());
    channel
        .basic_publish(
            exchange.into(),
            format!("{HOSPITAL_A}.{kind}").as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &request.encode_to_vec(),
            properties,
        )
        .await
        .unwrap()
}

/// Takes every message of the lanes; returns the relay's request id each one names.
async fn take_lanes(url: &str, lanes: &[String]) -> Vec<Uuid> {
    let connection = Connection::connect(url, Default::default()).await.unwrap();
    let mut ids = Vec::new();
    for lane in lanes {
        let channel = connection.create_channel().await.unwrap();
        let depth = channel
            .queue_declare(
                lane.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count();
        if depth == 0 {
            continue;
        }
        channel
            .basic_qos(1_000, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = channel
            .basic_consume(
                lane.as_str().into(),
                "backlog-inspector".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for taken in 1..=depth {
            let delivery = tokio::time::timeout(DEADLINE, consumer.next())
                .await
                .unwrap_or_else(|_| panic!("{lane}: message {taken} of {depth} never came"))
                .expect("the consumer is open")
                .unwrap();
            let headers = delivery.properties.headers().as_ref();
            let id = bus::header_str(headers, bus::messages::RELAY_REQUEST_UUID_HEADER)
                .expect("a lane message names its request");
            ids.push(id.parse().unwrap());
            if taken % 500 == 0 || taken == depth {
                delivery
                    .acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .unwrap();
            }
        }
        channel
            .basic_cancel("backlog-inspector".into(), BasicCancelOptions::default())
            .await
            .unwrap();
        channel.close(200, "lane read".into()).await.ok();
    }
    connection.close(200, "lanes read".into()).await.ok();
    ids
}

/// A `count(*)` query without parameters. Plain `query_scalar` rather than `query!`, so that this
/// file needs no entries in the committed `.sqlx/` metadata.
async fn count(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}
