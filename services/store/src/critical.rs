//! Critical values (危急值): the closed loop between a reviewer's critical finding and the
//! clinician at the origin who acknowledges it with a read-back.
//!
//! - [`notify_if_critical`] opens the notification in the transaction that signs a critical
//!   report version, and queues the notification (to the origin's own critical lane) and the
//!   `critical_notified` event in the outbox.
//! - [`acknowledgements`] records the first valid acknowledgement (closing the notification) or
//!   a refusal, for the recorder.
//! - [`send_due_reminders`] is the critical clock's step: every open notification past its
//!   `acknowledge_by` is sent again every repeat interval, with an `escalated` event, until
//!   acknowledged. Rows are taken `for update skip locked`, so several recorders share the work.
//! - [`register`] answers who was told what, when, who acknowledged and how long it took.

pub mod acknowledgements;
pub mod register;

pub use register::{RegisterLine, RegisterQuery, register};

use bus::{Names, OutgoingMessage, messages};
use chrono::{DateTime, Utc};
use contract::v1;
use domain::{HospitalCode, LifecycleFact, RequestState};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// What a send of a notification (the first, or a reminder) needs to say.
struct Send {
    id: Uuid,
    request_uuid: Uuid,
    report_version: i32,
    origin: String,
    request_id: String,
    correlation_id: String,
    pool: Option<String>,
    finding: String,
    reviewer_id: String,
    reviewer_hospital: String,
    reported_at: DateTime<Utc>,
    acknowledge_by: DateTime<Utc>,
}

/// If report `version` of `request` is critical, opens its notification and queues it for the
/// origin's critical lane with a `critical_notified` event, in the caller's transaction (the one
/// that records the report). Returns the notification id, or `None` for a report that is not
/// critical. Opening the same version twice is a no-op that returns `None`.
pub async fn notify_if_critical(
    conn: &mut PgConnection,
    names: &Names,
    request: Uuid,
    version: i32,
    acknowledge_within: chrono::Duration,
) -> sqlx::Result<Option<Uuid>> {
    let id = Uuid::new_v4();
    let opened = sqlx::query!(
        r#"with clock as (select clock_timestamp() as at)
           insert into critical_notifications
               (id, request_uuid, report_version, origin_hospital, request_id, correlation_id, finding,
                reviewer_id, reviewer_hospital, notified_at, acknowledge_by, last_sent_at)
           select $1, q.id, r.version, q.origin_hospital, q.request_id, q.correlation_id,
                  coalesce(nullif(r.critical_finding, ''), r.conclusion),
                  r.reviewer_id, p.hospital_code, clock.at, clock.at + make_interval(secs => $4), clock.at
           from clock, review_results r
           join review_requests q on q.id = r.request_uuid
           join reviewers v on v.id = r.reviewer_id
           join reviewer_pools p on p.code = v.pool_code
           where r.request_uuid = $2 and r.version = $3 and r.critical
           on conflict (request_uuid, report_version) do nothing
           returning notified_at"#,
        id,
        request,
        version,
        seconds(acknowledge_within),
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(opened) = opened else {
        return Ok(None);
    };
    let send = load_send(conn, id).await?;
    let message = notification_message(names, &send, 0)?;
    record_send(conn, id, 0, &message.message_id, opened.notified_at).await?;
    let event = event(
        &send,
        RequestState::CriticalNotified,
        format!("reviewer:{}", send.reviewer_id),
        format!(
            "critical value of report version {} sent to {}'s critical lane (notification {id}); acknowledge by {}",
            send.report_version,
            send.origin,
            send.acknowledge_by.to_rfc3339()
        ),
        opened.notified_at,
    );
    crate::outbox::enqueue(conn, &[message, messages::lifecycle_event(names, &event)]).await?;
    Ok(Some(id))
}

/// The critical clock's step: sends the next reminder of every open notification that is due,
/// up to `limit`, each with an `escalated` event; returns how many were sent. A notification is
/// due once `acknowledge_by` has passed (first reminder) and then every `repeat`. Several
/// recorders may run this at once: each row is taken by one of them (`skip locked`).
pub async fn send_due_reminders(
    db: &PgPool,
    names: &Names,
    repeat: chrono::Duration,
    limit: i64,
) -> sqlx::Result<usize> {
    let mut tx = db.begin().await?;
    let due = sqlx::query!(
        r#"select id from critical_notifications
           where acknowledged_at is null
             and acknowledge_by <= clock_timestamp()
             and (reminders_sent = 0 or last_sent_at + make_interval(secs => $1) <= clock_timestamp())
           order by last_sent_at
           limit $2
           for update skip locked"#,
        seconds(repeat),
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut outgoing = Vec::with_capacity(due.len() * 2);
    for row in &due {
        let sent = sqlx::query!(
            r#"update critical_notifications
               set reminders_sent = reminders_sent + 1, last_sent_at = clock_timestamp()
               where id = $1
               returning reminders_sent, last_sent_at,
                         (extract(epoch from last_sent_at - notified_at) / 60)::float8 as "open_minutes!""#,
            row.id,
        )
        .fetch_one(&mut *tx)
        .await?;
        let send = load_send(&mut tx, row.id).await?;
        let reminder = u32::try_from(sent.reminders_sent).unwrap_or_default();
        let message = notification_message(names, &send, reminder)?;
        record_send(
            &mut tx,
            row.id,
            sent.reminders_sent,
            &message.message_id,
            sent.last_sent_at,
        )
        .await?;
        let event = event(
            &send,
            RequestState::Escalated,
            "service:recorder".into(),
            format!(
                "critical value unacknowledged for {} min, reminder {reminder} (notification {})",
                sent.open_minutes.floor(),
                send.id
            ),
            sent.last_sent_at,
        );
        // Several requests' reminders go out in this one transaction: each pair is stamped with
        // its own request's trace here, as no single trace is current.
        let mut pair = [message, messages::lifecycle_event(names, &event)];
        let trace = crate::trace::of_request(&mut *tx, send.request_uuid).await?;
        if let Some(trace) = &trace {
            pair.iter_mut().for_each(|message| message.stamp(trace));
        }
        bus::trace::span_of(trace).in_scope(|| {
            tracing::info!(notification = %send.id, request_uuid = %send.request_uuid, reminder,
                "critical value unacknowledged: reminder queued");
        });
        outgoing.extend(pair);
    }
    crate::outbox::enqueue(&mut tx, &outgoing).await?;
    tx.commit().await?;
    Ok(due.len())
}

async fn load_send(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Send> {
    sqlx::query_as!(
        Send,
        r#"select n.id, n.request_uuid, n.report_version, n.origin_hospital as origin, n.request_id,
                  n.correlation_id, q.pool_code as pool, n.finding, n.reviewer_id, n.reviewer_hospital,
                  r.reported_at, n.acknowledge_by
           from critical_notifications n
           join review_requests q on q.id = n.request_uuid
           join review_results r on r.request_uuid = n.request_uuid and r.version = n.report_version
           where n.id = $1"#,
        id,
    )
    .fetch_one(conn)
    .await
}

async fn record_send(
    conn: &mut PgConnection,
    id: Uuid,
    reminder: i32,
    message_id: &str,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"insert into critical_notification_sends (notification_id, reminder, message_id, sent_at)
           values ($1, $2, $3, $4)"#,
        id,
        reminder,
        message_id,
        at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

fn notification_message(
    names: &Names,
    send: &Send,
    reminder: u32,
) -> sqlx::Result<OutgoingMessage> {
    let notification = v1::CriticalNotification {
        notification_id: send.id.to_string(),
        request_id: send.request_id.clone(),
        report_version: u32::try_from(send.report_version).unwrap_or_default(),
        finding: send.finding.clone(),
        reviewer_id: send.reviewer_id.clone(),
        reviewer_hospital: send.reviewer_hospital.clone(),
        reported_at: Some(domain::wire::timestamp(send.reported_at)),
        acknowledge_by: Some(domain::wire::timestamp(send.acknowledge_by)),
        reminder,
    };
    // The hospitals table checks the same shape, so a stored code always parses.
    let origin = HospitalCode::parse(&send.origin)
        .map_err(|why| sqlx::Error::Decode(format!("stored origin: {why}").into()))?;
    Ok(messages::critical_notification(
        names,
        &origin,
        &notification,
        send.correlation_id.clone(),
    ))
}

fn event(
    send: &Send,
    state: RequestState,
    actor: String,
    reason: String,
    at: DateTime<Utc>,
) -> LifecycleFact {
    LifecycleFact {
        event_id: Uuid::new_v4(),
        request_uuid: Some(send.request_uuid),
        request_id: send.request_id.clone(),
        origin: send.origin.clone(),
        state,
        actor,
        reason,
        pool: send.pool.clone(),
        correlation_id: send.correlation_id.clone(),
        occurred_at: at,
    }
}

/// A duration as the seconds `make_interval` takes.
fn seconds(duration: chrono::Duration) -> f64 {
    duration.num_milliseconds() as f64 / 1000.0
}

/// A text reduced to what a read-back must repeat: lower case, letters and digits only (any
/// script, so 急性下壁心肌梗死 compares as itself), no spaces or punctuation.
pub fn normalise(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a clinician's read-back repeats the whole finding: after [`normalise`], the read-back
/// contains the finding ("confirmed: acute inferior STEMI" matches "Acute inferior STEMI.").
/// A read-back that repeats only part of the finding does not match.
pub fn read_back_matches(finding: &str, read_back: &str) -> bool {
    let finding = normalise(finding);
    !finding.is_empty() && normalise(read_back).contains(&finding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_back_matches_when_it_repeats_the_whole_finding() {
        let finding = "Acute inferior STEMI.";
        assert!(read_back_matches(finding, "acute inferior stemi"));
        assert!(read_back_matches(
            finding,
            "Confirmed: acute  inferior STEMI!"
        ));
        assert!(!read_back_matches(finding, "STEMI"));
        assert!(!read_back_matches(finding, "acute anterior STEMI"));
        assert!(read_back_matches(
            "急性下壁心肌梗死",
            "急性下壁 心肌梗死，已复述"
        ));
        assert!(!read_back_matches("", "anything"));
    }
}
