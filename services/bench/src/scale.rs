//! Scenario 4: scaling out. Two dispatchers and two recorders compete for their queues while
//! a backlog drains through the whole relay; every request must still be recorded exactly
//! once, with exactly one event of each step.

use crate::drain::met;
use crate::load::{self, County, ReviewStats};
use crate::relay::{Bench, Running};
use crate::services::Service;
use crate::setup::POOLS;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The steps every request of the drain takes, each recorded once.
const STEPS: [&str; 5] = ["received", "routed", "claimed", "reported", "delivered"];

pub async fn run(bench: &mut Bench, n: usize, deadline: Duration) -> anyhow::Result<String> {
    let prefix = "SCALE";
    let requests = load::mixed_requests(&bench.catalog, prefix, n);
    let mut running = Running::default();
    for label in ["scale-recorder-1", "scale-recorder-2"] {
        running
            .processes
            .push(bench.start(Service::Recorder, label)?);
    }
    running
        .processes
        .push(bench.start(Service::ReviewDesk, "scale-review-desk")?);
    bench.wait_ready(0, 2).await?;
    let county =
        County::connect(&bench.env.amqp_url, bench.env.names().requests_exchange()).await?;
    county.send_all(&requests).await?;
    county.close().await;
    let stats = Arc::new(ReviewStats::default());
    let pools: Vec<&str> = POOLS.iter().map(|(pool, _)| *pool).collect();
    let reviewers = bench.reviewers(&pools, stats);

    let t0 = bench.db_now().await?;
    for label in ["scale-dispatcher-1", "scale-dispatcher-2"] {
        running
            .processes
            .push(bench.start(Service::Dispatcher, label)?);
    }
    let mut footprints = running.footprints()?;
    let elapsed = bench
        .wait_delivered(prefix, n, t0, &mut running, &mut footprints, deadline)
        .await?;
    reviewers.stop().await;

    // Events travel on their own queue: wait until each step's event is in before counting.
    let n_events = i64::try_from(n * STEPS.len())?;
    let events_sql = "select count(*) from lifecycle_events where request_id like $1";
    let waiting = Instant::now();
    while bench.count(events_sql, prefix).await? < n_events
        && waiting.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    running.update(&mut footprints)?;
    // The CPU each instance spent shows that both of a pair competed for the work.
    let cpu_by_instance = footprints
        .iter()
        .map(|f| {
            format!(
                "{} {:.1} s",
                f.label.trim_start_matches("scale-"),
                f.cpu().as_secs_f64()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    running.stop().await?;

    let n_i64 = i64::try_from(n)?;
    let checks = [
        (
            "one request row each",
            bench
                .count("select count(*) from review_requests where request_id like $1", prefix)
                .await?,
            n_i64,
        ),
        (
            "no duplicate deliveries to a dispatcher",
            bench
                .count(
                    "select coalesce(sum(duplicates_received), 0)::bigint from review_requests
                      where request_id like $1",
                    prefix,
                )
                .await?,
            0,
        ),
        (
            "one delivered result each",
            bench
                .count(
                    "select count(*) from review_results r join review_requests q on q.id = r.request_uuid
                      where q.request_id like $1 and r.delivered_at is not null",
                    prefix,
                )
                .await?,
            n_i64,
        ),
        (
            "each step's event exactly once",
            bench
                .count(
                    "select count(*) from (select request_uuid from lifecycle_events
                      where request_id like $1 group by request_uuid
                     having count(*) filter (where state = 'received') = 1
                        and count(*) filter (where state = 'routed') = 1
                        and count(*) filter (where state = 'claimed') = 1
                        and count(*) filter (where state = 'reported') = 1
                        and count(*) filter (where state = 'delivered') = 1) as once",
                    prefix,
                )
                .await?,
            n_i64,
        ),
        ("no other events", bench.count(events_sql, prefix).await?, n_events),
        (
            "nothing refused",
            bench
                .count("select count(*) from rejected_messages where $1 <> ''", prefix)
                .await?,
            0,
        ),
    ];
    let failed: Vec<String> = checks
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(what, got, want)| format!("{what}: {got}, expected {want}"))
        .collect();
    let rate = n as f64 / elapsed.as_secs_f64();
    Ok(format!(
        "scale: 2 dispatchers + 2 recorders: {n} requests recorded in {:.1} s = {rate:.0} \
         requests/s; CPU {cpu_by_instance}; exactly-once counts {} ({})",
        elapsed.as_secs_f64(),
        if failed.is_empty() {
            "checked"
        } else {
            "WRONG"
        },
        if failed.is_empty() {
            format!("{} checks", checks.len())
        } else {
            failed.join("; ")
        } + ", "
            + met(failed.is_empty()),
    ))
}
