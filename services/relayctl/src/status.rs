//! `relayctl status`: the relay at a glance for an operator without Grafana, from the broker
//! (queue depths) and PostgreSQL: per lane the depth, the requests waiting and the oldest of
//! them, those being read, and how they stand against the SLA clock; open critical values per
//! origin; dead letters waiting in the queue and stored but not replayed, by reason; requests by
//! state and refusals. `--watch N` redraws it in place every N seconds.

use bus::lapin::Connection;
use bus::lapin::options::QueueDeclareOptions;
use bus::lapin::types::FieldTable;
use chrono::{DateTime, Utc};
use domain::Priority;
use runtime::BrokerConfig;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

/// Prints the status once, or with `watch` redraws it every `watch` seconds until Ctrl-C. While
/// watching, a broker or database that stops answering is shown in the view and tried again at
/// the next refresh, rather than ending it: that is when an operator most needs to watch.
pub async fn show(broker: &BrokerConfig, db: &PgPool, watch: Option<u64>) -> anyhow::Result<()> {
    let Some(seconds) = watch else {
        print!("{}", render(broker, db).await?);
        return Ok(());
    };
    let addresses = broker.addresses()?;
    let mut connection: Option<Connection> = None;
    // Clear once; each refresh then homes the cursor and overwrites, erasing what is left of
    // each line and below the text, so the view does not flicker.
    print!("\x1b[2J");
    loop {
        if !connection
            .as_ref()
            .is_some_and(|connection| connection.status().connected())
        {
            connection = bus::connect(&addresses, "relayctl-status", 0).await.ok();
        }
        let text = match render_on(broker, connection.as_ref(), db).await {
            Ok(text) => text,
            Err(error) => format!(
                "telerelay status at {}: unavailable ({error:#}); trying again in {seconds} s\n",
                Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
            ),
        };
        print!("{}", in_place(&text));
        std::io::stdout().flush().ok();
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(seconds.max(1))) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    if let Some(connection) = connection {
        connection.close(200, "done".into()).await.ok();
    }
    Ok(())
}

/// The text with the terminal codes that redraw it over the previous one: cursor home, erase to
/// the end of each line, erase below.
pub fn in_place(text: &str) -> String {
    format!("\x1b[H{}\x1b[J", text.replace('\n', "\x1b[K\n"))
}

/// The status report as text, with a connection of its own to the broker.
pub async fn render(broker: &BrokerConfig, db: &PgPool) -> anyhow::Result<String> {
    let connection = bus::connect(&broker.addresses()?, "relayctl-status", 0).await;
    let text = render_on(broker, connection.as_ref().ok(), db).await;
    if let Ok(connection) = connection {
        connection.close(200, "done".into()).await.ok();
    }
    text
}

/// The status report as text. Without a broker connection the depths show as unknown and the
/// rest, from PostgreSQL, is still shown.
pub async fn render_on(
    broker: &BrokerConfig,
    connection: Option<&Connection>,
    db: &PgPool,
) -> anyhow::Result<String> {
    let topology = broker.topology()?;
    let names = &topology.names;
    let now = Utc::now();
    let mut out = String::new();
    writeln!(
        out,
        "telerelay status at {} (namespace {})",
        now.format("%Y-%m-%d %H:%M:%S UTC"),
        names.namespace()
    )?;
    if connection.is_none() {
        writeln!(out, "  broker unreachable: queue depths unknown")?;
    }

    writeln!(out, "\ncore queues (messages waiting / consumers)")?;
    let dead_letter_queue = names.dead_letter_queue();
    let mut dead_letters_waiting = None;
    for queue in names.core_queues() {
        let depth = queue_depth(connection, &queue).await;
        if queue == dead_letter_queue {
            dead_letters_waiting = depth
                .and_then(|depth| depth.ok())
                .map(|(messages, _)| messages);
        }
        writeln!(out, "  {queue:<48} {}", describe_depth(depth))?;
    }

    lanes(&mut out, connection, names, db, now).await?;
    clock(&mut out, db).await?;
    critical(&mut out, db, now).await?;

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

    writeln!(out, "\ndead letters (relayctl dead-letters list)")?;
    writeln!(
        out,
        "  waiting in {dead_letter_queue} for the recorder: {}",
        dead_letters_waiting.map_or("unknown".to_owned(), |n| n.to_string())
    )?;
    let stored = store::status::unreplayed_dead_letters(db).await?;
    let total: i64 = stored.iter().map(|group| group.count).sum();
    writeln!(out, "  stored, not replayed: {total}")?;
    for group in stored {
        let Some(oldest) = group.oldest_stored_at else {
            continue; // every one of this reason was replayed
        };
        writeln!(
            out,
            "    {:<22} {:>8}   oldest {} ago",
            group.reason,
            group.count,
            age(now, oldest)
        )?;
    }
    Ok(out)
}

/// A queue's messages and consumers from a passive declare; `None` without a broker, an error
/// when the queue is not declared.
async fn queue_depth(
    connection: Option<&Connection>,
    queue: &str,
) -> Option<Result<(u32, u32), ()>> {
    let connection = connection?;
    // A passive declare only reads the counters. A missing queue closes the channel, so each
    // check gets its own.
    let Ok(channel) = connection.create_channel().await else {
        return Some(Err(()));
    };
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let found = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await;
    match found {
        Ok(found) => {
            channel.close(200, "counted".into()).await.ok();
            Some(Ok((found.message_count(), found.consumer_count())))
        }
        Err(_) => Some(Err(())),
    }
}

fn describe_depth(depth: Option<Result<(u32, u32), ()>>) -> String {
    match depth {
        None => "unknown".into(),
        Some(Err(())) => "(not declared)".into(),
        Some(Ok((messages, consumers))) => format!("{messages:>8} / {consumers}"),
    }
}

/// How long ago, in the largest units (`2m05s` style through the duration printer).
fn age(now: DateTime<Utc>, since: DateTime<Utc>) -> String {
    crate::duration::format_duration((now - since).num_seconds().max(0).unsigned_abs())
}

/// One line per lane that has anything: its broker depth beside the requests PostgreSQL says
/// wait there, so a lane whose depth and waiting disagree (stale lane messages after a claim or
/// a reroute, which the desk acks away) is visible.
async fn lanes(
    out: &mut String,
    connection: Option<&Connection>,
    names: &bus::Names,
    db: &PgPool,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "\nlanes (depth: messages in the lane queue; waiting: routed, not claimed; SLA: open requests at risk / overdue)"
    )?;
    writeln!(
        out,
        "  {:<16} {:<8} {:>6} {:>8} {:>10} {:>8} {:>8} {:>8}",
        "pool", "priority", "depth", "waiting", "oldest", "reading", "at risk", "overdue"
    )?;
    let work: BTreeMap<(String, String), store::status::LaneWork> =
        store::status::open_work_per_lane(db)
            .await?
            .into_iter()
            .map(|lane| ((lane.pool.clone(), lane.priority.clone()), lane))
            .collect();
    let mut shown = 0;
    for pool in store::registry::pool_codes(db).await? {
        for priority in Priority::LANES_MOST_URGENT_FIRST {
            let depth = match queue_depth(connection, &names.review_lane(&pool, priority)).await {
                None => "?".to_owned(),
                Some(Err(())) => "undecl".to_owned(),
                Some(Ok((messages, _))) => messages.to_string(),
            };
            let lane = work.get(&(pool.to_string(), priority.as_str().to_owned()));
            if lane.is_none() && depth == "0" {
                continue;
            }
            let (waiting, oldest, reading, at_risk, overdue) = match lane {
                Some(lane) => (
                    lane.waiting,
                    lane.oldest_routed_at
                        .map_or("-".to_owned(), |at| age(now, at)),
                    lane.in_reading,
                    lane.at_risk,
                    lane.overdue,
                ),
                None => (0, "-".to_owned(), 0, 0, 0),
            };
            writeln!(
                out,
                "  {:<16} {:<8} {depth:>6} {waiting:>8} {oldest:>10} {reading:>8} {at_risk:>8} {overdue:>8}",
                pool.as_str(),
                priority.as_str()
            )?;
            shown += 1;
        }
    }
    if shown == 0 {
        writeln!(out, "  (every lane empty)")?;
    }
    Ok(())
}

async fn clock(out: &mut String, db: &PgPool) -> anyhow::Result<()> {
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
    Ok(())
}

async fn critical(out: &mut String, db: &PgPool, now: DateTime<Utc>) -> anyhow::Result<()> {
    let critical = store::status::critical_summary(db).await?;
    writeln!(out, "\ncritical values (危急值; relayctl critical --open)")?;
    let oldest = critical
        .oldest_open_at
        .map_or("-".to_owned(), |at| age(now, at));
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
    for origin in store::status::open_critical_by_origin(db).await? {
        writeln!(
            out,
            "    {:<14} {:>4} open, {:>4} past acknowledge-by, oldest {}",
            origin.origin,
            origin.open,
            origin.overdue,
            age(now, origin.oldest_notified_at)
        )?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_redraws_in_place_erasing_what_the_last_one_left() {
        assert_eq!(
            in_place("lanes\n  xy-ecg\n"),
            "\x1b[Hlanes\x1b[K\n  xy-ecg\x1b[K\n\x1b[J"
        );
    }

    #[test]
    fn ages_print_in_the_largest_units() {
        let now = Utc::now();
        assert_eq!(age(now, now - chrono::Duration::seconds(125)), "2m5s");
        assert_eq!(age(now, now + chrono::Duration::seconds(3)), "0s");
    }

    #[test]
    fn an_unknown_or_missing_queue_says_so() {
        assert_eq!(describe_depth(None), "unknown");
        assert_eq!(describe_depth(Some(Err(()))), "(not declared)");
        assert_eq!(describe_depth(Some(Ok((3, 1)))), "       3 / 1");
    }
}
