//! The origin's critical lane (危急值): each county reads its own critical queue as its own
//! broker user. The clinician on duty reads the finding back and acknowledges it after a
//! realistic delay; now and then a notification is missed at first and only the relay's
//! reminders bring someone to acknowledge it.
//!
//! A notification is acked on the queue only after its acknowledgement is confirmed by the
//! broker, so a crash of the county leaves it to be delivered again. Reminders for a
//! notification already acknowledged (or being acknowledged) are taken off the queue at once.

use crate::county::OriginSession;
use crate::progress::Stats;
use crate::publish::{OriginMessage, publish_as_origin};
use bus::Handled;
use bus::lapin::Connection;
use bus::lapin::message::Delivery;
use bus::lapin::options::ConfirmSelectOptions;
use contract::v1;
use prost::Message;
use rand::Rng;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// Notifications being handled at once per origin: a clinician may be reading several.
const PREFETCH: u16 = 32;

/// Notification ids this origin has acknowledged or is acknowledging.
#[derive(Debug, Default)]
pub(crate) struct Acknowledged(Mutex<HashSet<String>>);

impl Acknowledged {
    /// Marks the id as being acknowledged; false when it already was.
    fn start(&self, id: &str) -> bool {
        self.0
            .lock()
            .map(|mut ids| ids.insert(id.to_owned()))
            .unwrap_or(false)
    }

    /// Forgets an id whose acknowledgement could not be sent, so the next reminder tries again.
    fn forget(&self, id: &str) {
        if let Ok(mut ids) = self.0.lock() {
            ids.remove(id);
        }
    }
}

pub(crate) async fn consume(
    session: &OriginSession<'_>,
    connection: &Connection,
    acknowledged: &Acknowledged,
) -> anyhow::Result<()> {
    let sim = session.sim;
    let queue = sim.names.origin_critical_queue(&session.origin.code);
    let channel = connection.create_channel().await?;
    let publishing = connection.create_channel().await?;
    publishing
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consumer_name = format!("simulator-critical-{}", session.origin.code);
    bus::consume_until(
        &channel,
        &queue,
        &consumer_name,
        PREFETCH,
        sim.shutdown.clone(),
        // A county's HIS, not a relay service: nothing to export.
        &telemetry::metrics::PipelineMetrics::default(),
        |delivery| handle(session, &publishing, acknowledged, delivery),
    )
    .await?;
    channel.close(200, "simulation stopped".into()).await.ok();
    Ok(())
}

async fn handle(
    session: &OriginSession<'_>,
    publishing: &bus::lapin::Channel,
    acknowledged: &Acknowledged,
    delivery: Delivery,
) -> anyhow::Result<Handled> {
    let sim = session.sim;
    let origin = &session.origin;
    let notification = match v1::CriticalNotification::decode(delivery.data.as_slice()) {
        Ok(notification) => notification,
        Err(error) => {
            tracing::error!(origin = %origin.code, error = %error, "undecodable critical notification; rejecting it");
            return Ok(Handled::Refused);
        }
    };
    Stats::add(&sim.stats.critical_notifications);
    if !acknowledged.start(&notification.notification_id) {
        return Ok(Handled::Done);
    }
    let config = &sim.config;
    let missed = rand::rng().random_bool(config.sim_missed_critical_probability);
    let seconds = if missed {
        config.sim_missed_critical_seconds
    } else {
        config.sim_critical_ack_seconds
    } * rand::rng().random_range(0.5..=2.0);
    tracing::info!(
        origin = %origin.code,
        notification_id = notification.notification_id,
        request_id = notification.request_id,
        reminder = notification.reminder,
        missed,
        "critical value received; the clinician on duty will acknowledge"
    );
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {}
        _ = sim.shutdown.cancelled() => {
            acknowledged.forget(&notification.notification_id);
            return Ok(Handled::Abandoned);
        }
    }
    let on_duty = rand::rng().random_range(1..=6);
    let acknowledgement = v1::CriticalAcknowledgement {
        notification_id: notification.notification_id.clone(),
        request_id: notification.request_id.clone(),
        origin_hospital: origin.code.to_string(),
        // Staff of the origin, never a patient: the duty roster's ids.
        clinician_id: format!("{}-duty-{on_duty:02}", origin.code.as_str().to_lowercase()),
        clinician_name: format!("Duty physician {on_duty:02}"),
        read_back: read_back(&notification.finding),
        acknowledged_at: Some(domain::wire::timestamp(chrono::Utc::now())),
    };
    let body = acknowledgement.encode_to_vec();
    // The acknowledgement answers the notification: it continues the notification's trace.
    let traceparent = bus::trace::Incoming::of_delivery(&delivery)
        .valid()
        .map(|trace| trace.child().to_string());
    let exchange = sim.names.acknowledgements_exchange();
    let routing_key = format!("{}.critical", origin.code);
    let message = OriginMessage {
        exchange: &exchange,
        routing_key: &routing_key,
        broker_user: &origin.broker_user,
        message_type: contract::message_type::CRITICAL_ACKNOWLEDGEMENT,
        body: &body,
        correlation_id: &notification.notification_id,
        traceparent: traceparent.as_deref(),
    };
    match publish_as_origin(publishing, &message, config.broker.confirm_timeout()).await {
        Ok(()) => {
            Stats::add(&sim.stats.critical_acknowledgements);
            Ok(Handled::Done)
        }
        Err(error) => {
            // The channel may be broken: end the session; the notification comes back.
            acknowledged.forget(&notification.notification_id);
            Err(error.into())
        }
    }
}

/// What the clinician reads back over the phone: the finding, now and then shortened the way
/// people do, which the relay records as a read-back that does not match.
fn read_back(finding: &str) -> String {
    if rand::rng().random_bool(0.05) {
        finding
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        finding.to_owned()
    }
}
