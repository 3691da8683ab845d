//! Scenario 2: STAT under backlog. A backlog of routine requests waits for the dispatcher (the
//! hub was down) while it drains it and the reviewers work the routine lanes; then STAT
//! chest-pain ECGs arrive at a steady pace. Measured per STAT ECG: from the county's publish
//! to its lane message being delivered to a consumer on the pool's STAT lane, i.e. the moment a
//! reviewer's claim could take it.

use crate::drain::met;
use crate::load::{self, County, ReviewStats};
use crate::relay::{Bench, Running};
use crate::services::Service;
use crate::stats::{millis, percentile};
use anyhow::Context as _;
use bus::lapin::Connection;
use bus::lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use bus::lapin::types::FieldTable;
use contract::v1;
use domain::{PoolCode, Priority};
use futures::StreamExt as _;
use prost::Message as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The STAT p99 target of issue 6.
const P99_TARGET: Duration = Duration::from_millis(50);

/// How long after the last STAT publish the bench waits for the stragglers.
const STRAGGLER_WAIT: Duration = Duration::from_secs(60);

pub struct StatSettings {
    pub backlog: usize,
    pub stat: usize,
    pub per_second: f64,
    /// STAT published on the express lane's key (`<origin>.ecg.stat`), else on the plain key.
    pub express: bool,
}

pub async fn run(bench: &mut Bench, settings: &StatSettings) -> anyhow::Result<String> {
    let names = bench.env.names().clone();
    let mut running = Running::default();
    running
        .processes
        .push(bench.start(Service::Recorder, "stat-recorder")?);
    running
        .processes
        .push(bench.start(Service::ReviewDesk, "stat-review-desk")?);
    bench.wait_ready(0, 1).await?;

    // The backlog: routine imaging and pathology (claim checks, a kilobyte or two each), as a
    // county's HIS sends them once its link is back.
    let county = County::connect(&bench.env.amqp_url, names.requests_exchange()).await?;
    let publishing = Instant::now();
    for chunk_start in (0..settings.backlog).step_by(5_000) {
        let chunk: Vec<_> = (chunk_start..(chunk_start + 5_000).min(settings.backlog))
            .map(|i| {
                let kind = if i % 3 == 2 { "pathology" } else { "imaging" };
                load::prepare(
                    &bench.catalog,
                    &format!("BACKLOG-{i:07}"),
                    kind,
                    v1::Priority::Routine,
                    settings.express,
                )
            })
            .collect();
        county.send_all(&chunk).await?;
    }
    eprintln!(
        "bench: stat: {} routine requests waiting (published in {:.1?})",
        settings.backlog,
        publishing.elapsed()
    );

    // A consumer on the ECG pool's STAT lane stands for the reviewer's claim.
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let lane = names.review_lane(
        &PoolCode::parse("xy-ecg").map_err(anyhow::Error::msg)?,
        Priority::Stat,
    );
    let watcher = tokio::spawn(watch_lane(
        bench.env.amqp_url.clone(),
        lane,
        arrived.clone(),
    ));

    // Steady background load: the dispatcher drains the backlog, the reviewers work the
    // routine lanes and their results are recorded.
    let stats = Arc::new(ReviewStats::default());
    let reviewers = bench.reviewers(&["xy-imaging", "xy-pathology"], stats);
    running
        .processes
        .push(bench.start(Service::Dispatcher, "stat-dispatcher")?);
    bench.wait_ready(1, 1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let depth_before = bench.depth(&names.dispatcher_queue()).await?;

    let mut published: HashMap<String, Instant> = HashMap::new();
    let pace = Duration::from_secs_f64(1.0 / settings.per_second);
    let mut next = tokio::time::Instant::now();
    for i in 0..settings.stat {
        tokio::time::sleep_until(next).await;
        next += pace;
        let request = load::prepare(
            &bench.catalog,
            &format!("STAT-{i:05}"),
            "ecg",
            v1::Priority::Stat,
            settings.express,
        );
        let sent = Instant::now();
        county.send_confirmed(&request).await?;
        published.insert(request.request_id, sent);
    }
    let depth_after = bench.depth(&names.dispatcher_queue()).await?;
    let waiting_since = Instant::now();
    while arrived.lock().await.len() < settings.stat && waiting_since.elapsed() < STRAGGLER_WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    county.close().await;
    watcher.abort();
    reviewers.stop().await;
    running.stop().await?;
    bench.purge_all().await;

    let arrived = arrived.lock().await;
    let latencies: Vec<Duration> = published
        .iter()
        .filter_map(|(id, sent)| Some(arrived.get(id)?.saturating_duration_since(*sent)))
        .collect();
    let missing = settings.stat - latencies.len();
    let p50 = percentile(&latencies, 0.5).context("no STAT ECG reached its lane")?;
    let p99 = percentile(&latencies, 0.99).context("no STAT ECG reached its lane")?;
    let max = percentile(&latencies, 1.0).unwrap_or_default();
    Ok(format!(
        "stat: {} STAT ECGs ({} key) at {}/s behind a backlog of {} routine requests (dispatcher queue \
         {depth_before} deep at the first STAT, {depth_after} at the last): publish -> on the \
         STAT lane p50 {}, p99 {}, max {}{} (target p99 < {}: {})",
        settings.stat,
        if settings.express { "express" } else { "plain" },
        settings.per_second,
        settings.backlog,
        millis(p50),
        millis(p99),
        millis(max),
        if missing > 0 {
            format!(", {missing} not arrived within {STRAGGLER_WAIT:?} of the last publish")
        } else {
            String::new()
        },
        millis(P99_TARGET),
        met(p99 < P99_TARGET && missing == 0),
    ))
}

/// Consumes the lane, noting when each request (by its origin's request id) arrived.
async fn watch_lane(
    amqp_url: String,
    lane: String,
    arrived: Arc<Mutex<HashMap<String, Instant>>>,
) -> anyhow::Result<()> {
    let connection = Connection::connect(&amqp_url, Default::default()).await?;
    let channel = connection.create_channel().await?;
    channel.basic_qos(100, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            lane.as_str().into(),
            "bench-stat-watch".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let at = Instant::now();
        if let Ok(request) = v1::ReviewRequest::decode(delivery.data.as_slice()) {
            arrived.lock().await.entry(request.request_id).or_insert(at);
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}
