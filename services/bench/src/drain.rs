//! Scenarios 1 and 3: a backlog of mixed requests drained through the whole relay (dispatch,
//! review lanes, automated reviewers on the desk's HTTP API, results, recording in
//! PostgreSQL), beside the raw lapin pipe of the same hops and sizes; and the services'
//! resident memory and CPU, at idle and under that drain.

use crate::load::{self, County, ReviewStats};
use crate::raw_pipe::RawPipe;
use crate::relay::{Bench, Running};
use crate::services::{Footprint, Service};
use crate::setup::POOLS;
use std::sync::Arc;
use std::time::Duration;

/// A service's resident memory under load must stay below this (issue 6).
const RSS_TARGET_MIB: f64 = 50.0;

pub struct DrainFigures {
    pub summary: Vec<String>,
    /// The relay's rate over the raw pipe's.
    pub ratio: f64,
}

/// Runs the drain; returns the summary lines (drain, footprint).
pub async fn run(
    bench: &mut Bench,
    n: usize,
    deadline: Duration,
    round: usize,
) -> anyhow::Result<DrainFigures> {
    let prefix = format!("DRAIN{round}");
    let prefix = prefix.as_str();
    let requests = load::mixed_requests(&bench.catalog, prefix, n);
    let bytes: usize = requests.iter().map(|r| r.body.len()).sum();
    let ecgs = requests
        .iter()
        .filter(|r| r.routing_key.ends_with(".ecg"))
        .count();

    // Idle: every service started, consuming, nothing to do.
    let mut running = Running::default();
    running
        .processes
        .push(bench.start(Service::Recorder, &format!("recorder-{round}"))?);
    running
        .processes
        .push(bench.start(Service::ReviewDesk, &format!("review-desk-{round}"))?);
    running
        .processes
        .push(bench.start(Service::Dispatcher, &format!("dispatcher-idle-{round}"))?);
    bench.wait_ready(1, 1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = running.footprints()?;

    // The hub was down: the backlog waits in the dispatcher's queue.
    running
        .stop_one(&format!("dispatcher-idle-{round}"))
        .await?;
    let county =
        County::connect(&bench.env.amqp_url, bench.env.names().requests_exchange()).await?;
    county.send_all(&requests).await?;
    county.close().await;
    let stats = Arc::new(ReviewStats::default());
    let pools: Vec<&str> = POOLS.iter().map(|(pool, _)| *pool).collect();
    let reviewers = bench.reviewers(&pools, stats.clone());

    let t0 = bench.db_now().await?;
    running
        .processes
        .push(bench.start(Service::Dispatcher, &format!("dispatcher-{round}"))?);
    let mut under_load = running.footprints()?;
    let elapsed = bench
        .wait_delivered(prefix, n, t0, &mut running, &mut under_load, deadline)
        .await?;
    running.update(&mut under_load)?;
    reviewers.stop().await;
    running.stop().await?;

    let relay_rate = n as f64 / elapsed.as_secs_f64();
    let raw = RawPipe::new(bench.env.names().namespace());
    bench.env.extra_queues.extend(raw.queues.iter().cloned());
    // One run of six hung before the raw pipe had a broker connection (BENCHMARKS.md): a
    // deadline turns that into an error with a reason instead of a bench that never ends.
    let raw_elapsed = tokio::time::timeout(deadline, raw.drain(&bench.env.amqp_url, &requests))
        .await
        .map_err(|_| anyhow::anyhow!("raw pipe: not drained within {deadline:?}"))??;
    let raw_rate = n as f64 / raw_elapsed.as_secs_f64();
    let ratio = relay_rate / raw_rate;

    let drain_line = format!(
        "drain: {n} requests ({ecgs} ECG with waveforms, {} imaging/pathology; mean {:.1} KiB) \
         recorded in {:.1} s = {relay_rate:.0} requests/s; raw 3-hop lapin pipe {:.1} s = \
         {raw_rate:.0} msgs/s; relay/raw = {:.2} (target >= 0.50: {}); reviewer HTTP errors {}",
        n - ecgs,
        bytes as f64 / n as f64 / 1024.0,
        elapsed.as_secs_f64(),
        raw_elapsed.as_secs_f64(),
        ratio,
        met(ratio >= 0.5),
        stats.errors.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(DrainFigures {
        summary: vec![drain_line, footprint_line(&idle, &under_load, n)],
        ratio,
    })
}

/// Idle RSS per service, peak RSS under the drain, and CPU time per request.
fn footprint_line(idle: &[Footprint], under_load: &[Footprint], n: usize) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut parts = Vec::new();
    let mut worst = 0.0_f64;
    let mut total_cpu = Duration::ZERO;
    // The same services in the same order: recorder, desk, dispatcher (the idle one stands for
    // the dispatcher, which is restarted for the drain).
    for (footprint, idle) in under_load.iter().zip(idle) {
        let peak = mib(footprint.peak_rss_kib);
        worst = worst.max(peak);
        total_cpu += footprint.cpu();
        parts.push(format!(
            "{} idle {:.1} MiB, peak under load {peak:.1} MiB, CPU {:.2} ms/request",
            footprint.label,
            mib(idle.last.rss_kib),
            footprint.cpu().as_secs_f64() * 1000.0 / n as f64,
        ));
    }
    format!(
        "footprint: {}; all services {:.2} ms CPU/request; highest peak {worst:.1} MiB \
         (target < {RSS_TARGET_MIB:.0} MiB: {})",
        parts.join("; "),
        total_cpu.as_secs_f64() * 1000.0 / n as f64,
        met(worst < RSS_TARGET_MIB),
    )
}

pub fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
