//! The recorder's writes for critical acknowledgements: the first valid acknowledgement closes
//! the notification (exactly once, with an `acknowledged` event); a refused one is recorded once
//! by its message key.

use bus::{Names, OutgoingMessage, messages};
use chrono::{DateTime, Utc};
use domain::{HospitalCode, LifecycleFact, RequestState};
use sqlx::PgConnection;
use uuid::Uuid;

/// An open or closed notification, as the acknowledgement check needs it.
#[derive(Clone, Debug)]
pub struct Notification {
    pub id: Uuid,
    pub request_uuid: Uuid,
    pub origin: String,
    pub request_id: String,
    pub correlation_id: String,
    pub pool: Option<String>,
    /// The study kind of the request (a metric label).
    pub kind: String,
    pub finding: String,
    pub notified_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// The notification `id`, locked for this transaction so that two acknowledgements racing for
/// it are recorded one after the other.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Notification>> {
    sqlx::query_as!(
        Notification,
        r#"select n.id, n.request_uuid, n.origin_hospital as origin, n.request_id, n.correlation_id,
                  q.pool_code as pool, q.kind, n.finding, n.notified_at, n.acknowledged_at
           from critical_notifications n join review_requests q on q.id = n.request_uuid
           where n.id = $1
           for update of n"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// A valid acknowledgement: who, their read-back, and the message that carried it.
#[derive(Clone, Debug)]
pub struct Acknowledgement<'a> {
    pub clinician_id: &'a str,
    pub clinician_name: &'a str,
    pub read_back: &'a str,
    /// When the clinician says they acknowledged (the origin's clock), if stated.
    pub stated_at: Option<DateTime<Utc>>,
    pub message_id: &'a str,
}

/// What closing a notification recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Closed {
    pub acknowledged_at: DateTime<Utc>,
    /// From notification to acknowledgement, by the database clock.
    pub minutes: f64,
    pub read_back_matches: bool,
}

/// Records a valid acknowledgement of a notification locked by [`lock`]. The first closes it and
/// queues the `acknowledged` event in the caller's transaction; a later one (a retry, another
/// clinician) is kept in `critical_acknowledgements` and changes nothing else: `None`.
pub async fn close(
    conn: &mut PgConnection,
    names: &Names,
    notification: &Notification,
    ack: &Acknowledgement<'_>,
) -> sqlx::Result<Option<Closed>> {
    let matches = super::read_back_matches(&notification.finding, ack.read_back);
    let closed = sqlx::query!(
        r#"update critical_notifications
           set acknowledged_at = clock_timestamp(), clinician_acknowledged_at = $2,
               clinician_id = $3, clinician_name = $4, read_back = $5, read_back_matches = $6,
               ack_message_id = $7
           where id = $1 and acknowledged_at is null
           returning acknowledged_at as "acknowledged_at!",
                     (extract(epoch from acknowledged_at - notified_at) / 60)::float8 as "minutes!""#,
        notification.id,
        ack.stated_at,
        ack.clinician_id,
        ack.clinician_name,
        ack.read_back,
        matches,
        ack.message_id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    // A redelivered message finds its receipt and is not recorded twice.
    sqlx::query!(
        r#"insert into critical_acknowledgements
               (message_key, notification_id, clinician_id, clinician_name, read_back, read_back_matches,
                clinician_acknowledged_at, closed_it)
           values ($1, $2, $3, $4, $5, $6, $7, $8)
           on conflict (message_key) do nothing"#,
        ack.message_id,
        notification.id,
        ack.clinician_id,
        ack.clinician_name,
        ack.read_back,
        matches,
        ack.stated_at,
        closed.is_some(),
    )
    .execute(&mut *conn)
    .await?;
    let Some(closed) = closed else {
        return Ok(None);
    };
    let fact = LifecycleFact {
        event_id: Uuid::new_v4(),
        request_uuid: Some(notification.request_uuid),
        request_id: notification.request_id.clone(),
        origin: notification.origin.clone(),
        state: RequestState::Acknowledged,
        actor: format!("hospital:{}", notification.origin),
        reason: format!(
            "critical value acknowledged by clinician {} ({}) after {:.1} min, read-back {} (notification {})",
            ack.clinician_id,
            ack.clinician_name,
            closed.minutes,
            if matches {
                "matches"
            } else {
                "DIFFERS from the finding"
            },
            notification.id
        ),
        pool: notification.pool.clone(),
        correlation_id: notification.correlation_id.clone(),
        occurred_at: closed.acknowledged_at,
    };
    crate::outbox::enqueue(conn, &[messages::lifecycle_event(names, &fact)]).await?;
    Ok(Some(Closed {
        acknowledged_at: closed.acknowledged_at,
        minutes: closed.minutes,
        read_back_matches: matches,
    }))
}

/// An acknowledgement the recorder refused.
#[derive(Clone, Debug)]
pub struct Refusal<'a> {
    /// The publish's message id, or the body's hash when it had none.
    pub message_key: &'a str,
    /// As the acknowledgement named it.
    pub notification_id: &'a str,
    pub sender: Option<&'a HospitalCode>,
    pub sender_user: Option<&'a str>,
    pub reason: &'a str,
    pub detail: &'a str,
}

/// Records a refusal once and, in the same transaction, queues what follows from it (the notice
/// to the sender, the dead-letter copy). Returns false, queueing nothing, when this message was
/// already refused (a redelivery).
pub async fn refuse(
    conn: &mut PgConnection,
    refusal: &Refusal<'_>,
    then: &[OutgoingMessage],
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        r#"insert into critical_acknowledgement_refusals
               (message_key, notification_id, sender_hospital, sender_user, reason, detail)
           values ($1, $2, $3, $4, $5, $6)
           on conflict (message_key) do nothing"#,
        refusal.message_key,
        refusal.notification_id,
        refusal.sender.map(HospitalCode::as_str),
        refusal.sender_user,
        refusal.reason,
        refusal.detail,
    )
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    crate::outbox::enqueue(conn, then).await?;
    Ok(true)
}
