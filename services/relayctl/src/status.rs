//! `relayctl status`: the relay at a glance, from the broker (queue depths) and PostgreSQL
//! (requests by state, oldest waiting per lane, refusals).

use bus::lapin::options::QueueDeclareOptions;
use bus::lapin::types::FieldTable;
use domain::Priority;
use runtime::BrokerConfig;
use sqlx::PgPool;
use std::fmt::Write as _;

pub async fn show(broker: &BrokerConfig, db: &PgPool, watch: Option<u64>) -> anyhow::Result<()> {
    loop {
        let text = render(broker, db).await?;
        if watch.is_some() {
            // Clear the screen and home the cursor for a refreshing view.
            print!("\x1b[2J\x1b[H");
        }
        println!("{text}");
        let Some(seconds) = watch else { return Ok(()) };
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(seconds.max(1))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// The status report as text.
pub async fn render(broker: &BrokerConfig, db: &PgPool) -> anyhow::Result<String> {
    let topology = broker.topology()?;
    let names = &topology.names;
    let connection = bus::connect(&broker.addresses()?, "relayctl-status", 0).await?;
    let now = chrono::Utc::now();
    let mut out = String::new();
    writeln!(
        out,
        "telerelay status at {} (namespace {})",
        now.format("%Y-%m-%d %H:%M:%S UTC"),
        names.namespace()
    )?;

    writeln!(out, "\nqueues (messages waiting / consumers)")?;
    let mut queues = vec![
        names.dispatcher_queue(),
        names.recorder_events_queue(),
        names.recorder_results_queue(),
        names.dead_letter_queue(),
    ];
    for pool in store::registry::pool_codes(db).await? {
        queues.extend(
            Priority::LANES_MOST_URGENT_FIRST
                .iter()
                .map(|priority| names.review_lane(&pool, *priority)),
        );
    }
    for queue in queues {
        // A passive declare only reads the counters. A missing queue closes the channel, so each
        // check gets its own.
        let channel = connection.create_channel().await?;
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = channel
            .queue_declare(queue.as_str().into(), options, FieldTable::default())
            .await;
        if found.is_ok() {
            channel.close(200, "counted".into()).await.ok();
        }
        match found {
            Ok(found)
                if found.message_count() > 0
                    || found.consumer_count() > 0
                    || !queue.contains(".review.") =>
            {
                writeln!(
                    out,
                    "  {queue:<48} {:>8} / {}",
                    found.message_count(),
                    found.consumer_count()
                )?;
            }
            Ok(_) => {}
            Err(_) => writeln!(out, "  {queue:<48} (not declared)")?,
        }
    }
    connection.close(200, "done".into()).await.ok();

    writeln!(
        out,
        "\nopen work per lane (waiting = routed, not claimed; SLA: at risk / overdue)"
    )?;
    let lanes = store::status::open_work_per_lane(db).await?;
    if lanes.is_empty() {
        writeln!(out, "  none")?;
    }
    for lane in lanes {
        let oldest = lane.oldest_routed_at.map_or("-".to_owned(), |at| {
            format!("{} s", (now - at).num_seconds())
        });
        writeln!(
            out,
            "  {:<16} {:<8} {:>6} waiting (oldest {oldest:>7}) {:>4} in reading | {:>4} at risk {:>4} overdue",
            lane.pool, lane.priority, lane.waiting, lane.in_reading, lane.at_risk, lane.overdue
        )?;
    }

    let clock = store::status::clock_summary(db).await?;
    writeln!(out, "\nSLA clock and claims")?;
    writeln!(
        out,
        "  open: {} at risk, {} overdue, {} escalated | last 24 h: {} at-risk warnings, {} escalation steps",
        clock.at_risk,
        clock.overdue,
        clock.escalated_open,
        clock.at_risk_warnings_24h,
        clock.escalations_24h
    )?;
    let compliance = match clock.reported_24h {
        0 => "-".to_owned(),
        reported => format!(
            "{:.1} %",
            100.0 * clock.reported_in_time_24h as f64 / reported as f64
        ),
    };
    writeln!(
        out,
        "  reported in the last 24 h: {} ({} in time, SLA compliance {compliance}) | leases held {}, expired {}",
        clock.reported_24h, clock.reported_in_time_24h, clock.leases_held, clock.leases_expired
    )?;

    let critical = store::status::critical_summary(db).await?;
    writeln!(out, "\ncritical values (危急值; relayctl critical)")?;
    let oldest = critical.oldest_open_at.map_or("-".to_owned(), |at| {
        format!("{} s", (now - at).num_seconds())
    });
    let median = critical
        .median_minutes_to_acknowledge_24h
        .map_or("-".to_owned(), |minutes| format!("{minutes:.1} min"));
    writeln!(
        out,
        "  open {} (oldest {oldest}, {} past acknowledge-by) | acknowledged in the last 24 h {}, median {median}, read-back mismatches {}",
        critical.open,
        critical.overdue,
        critical.acknowledged_24h,
        critical.read_back_mismatches_24h
    )?;

    let second_reads = store::status::second_read_summary(db).await?;
    writeln!(
        out,
        "\nsecond reads: {} pending, {} in reading | last 24 h: {} agree, {} discordant",
        second_reads.pending,
        second_reads.in_reading,
        second_reads.agreed_24h,
        second_reads.discordant_24h
    )?;

    writeln!(out, "\nrequests by state")?;
    for (state, count) in store::status::requests_by_state(db).await? {
        writeln!(out, "  {state:<14} {count:>8}")?;
    }
    writeln!(out, "\nrefused messages by reason")?;
    for (reason, count) in store::status::refusals_by_reason(db).await? {
        writeln!(out, "  {reason:<22} {count:>8}")?;
    }
    writeln!(
        out,
        "\ndead letters not yet replayed, by reason (relayctl dead-letters list)"
    )?;
    let dead_letters = store::dead_letters::waiting_by_reason(db).await?;
    if dead_letters.is_empty() {
        writeln!(out, "  none")?;
    }
    for (reason, count) in dead_letters {
        writeln!(out, "  {reason:<22} {count:>8}")?;
    }
    Ok(out)
}

/// The reconciliation table (`relayctl reconcile`), with a verdict line per origin.
pub async fn reconciliation(db: &PgPool) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "{:<12} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9} {:>8} {:>7} {:>10} {:>12}  check",
        "origin",
        "accepted",
        "audited",
        "routed",
        "claimed",
        "reported",
        "delivered",
        "returned",
        "refused",
        "duplicates",
        "dead letters"
    )?;
    for books in store::status::reconciliation(db).await? {
        let placed =
            books.routed + books.claimed + books.reported + books.delivered + books.returned;
        let verdict = if books.audited == books.accepted && placed == books.accepted {
            "ok".to_owned()
        } else {
            format!(
                "MISMATCH: {} accepted, {} audited, {} in a known state",
                books.accepted, books.audited, placed
            )
        };
        writeln!(
            out,
            "{:<12} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9} {:>8} {:>7} {:>10} {:>12}  {verdict}",
            books.origin,
            books.accepted,
            books.audited,
            books.routed,
            books.claimed,
            books.reported,
            books.delivered,
            books.returned,
            books.refused,
            books.duplicates,
            books.dead_letters_open
        )?;
    }
    Ok(out)
}
