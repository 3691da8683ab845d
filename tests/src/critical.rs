//! Harness for the critical-value loop: a county's view of its critical lane, acknowledgements
//! published as the county's broker user, and the register.

use crate::fixtures::ecg_request;
use crate::{HOSPITAL_A, Published, TestRelay, report_body, tokens};
use contract::v1;
use prost::Message;
use store::critical::{RegisterLine, RegisterQuery};
use uuid::Uuid;

/// The finding of [`report_body`]`(true)`.
pub const FINDING: &str = "acute inferior STEMI";

/// Publishes a STAT ECG from hospital A, claims it as the ECG reviewer and signs a critical
/// report; returns the relay's id of the request.
pub async fn critical_report(relay: &TestRelay, request_id: &str) -> Uuid {
    signed_report(relay, request_id, true).await
}

/// As [`critical_report`], critical or not.
pub async fn signed_report(relay: &TestRelay, request_id: &str, critical: bool) -> Uuid {
    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            request_id,
            v1::Priority::Stat,
            "HR06001",
        ))
        .await;
    let id = relay.request_uuid(HOSPITAL_A, request_id).await;
    relay.claim_next(tokens::ECG).await;
    let (status, body) = relay
        .report(tokens::ECG, &id.to_string(), report_body(critical))
        .await;
    assert_eq!(status, 201, "{body}");
    id
}

/// The next message in an origin's critical queue, waiting up to the deadline.
pub async fn next_critical(relay: &TestRelay, origin: &str) -> v1::CriticalNotification {
    let queue = relay
        .topology
        .names
        .origin_critical_queue(&domain::HospitalCode::parse(origin).unwrap());
    let delivery = relay
        .broker
        .get_one(&queue, &format!("a critical notification for {origin}"))
        .await;
    assert_eq!(
        delivery.properties.kind().as_ref().map(|k| k.as_str()),
        Some(contract::message_type::CRITICAL_NOTIFICATION)
    );
    v1::CriticalNotification::decode(delivery.data.as_slice())
        .expect("critical queues hold CriticalNotifications")
}

/// A complete acknowledgement of `notification` by a named clinician of `origin`.
pub fn acknowledgement(
    notification: &v1::CriticalNotification,
    origin: &str,
    read_back: &str,
) -> v1::CriticalAcknowledgement {
    v1::CriticalAcknowledgement {
        notification_id: notification.notification_id.clone(),
        request_id: notification.request_id.clone(),
        origin_hospital: origin.into(),
        clinician_id: "HH-ED-0042".into(),
        clinician_name: "Dr. Yang Li".into(),
        read_back: read_back.into(),
        acknowledged_at: None,
    }
}

/// Publishes an acknowledgement body as a county does: to the acknowledgements exchange, routing
/// key `<origin>.critical`, with `user_id` = the tests' broker user `guest`.
pub async fn publish_acknowledgement(relay: &TestRelay, origin: &str, body: Vec<u8>) -> Published {
    relay
        .broker
        .publish_to(
            &relay.topology.names.acknowledgements_exchange(),
            &format!("{origin}.critical"),
            body,
            Some("guest"),
        )
        .await
}

/// The register line of one notification.
pub async fn register_line(relay: &TestRelay, notification_id: &str) -> RegisterLine {
    let id = Uuid::parse_str(notification_id).unwrap();
    store::critical::register(&relay.db, &RegisterQuery::default())
        .await
        .unwrap()
        .into_iter()
        .find(|line| line.notification_id == id)
        .expect("the notification is in the register")
}

/// Waits until the register shows the notification acknowledged.
pub async fn acknowledged_line(relay: &TestRelay, notification_id: &str) -> RegisterLine {
    crate::wait_for("the notification to be acknowledged", || async {
        Some(register_line(relay, notification_id).await).filter(|line| !line.is_open())
    })
    .await
}

/// The reasons of a request's audit trail in `state`, oldest first.
pub async fn reasons_of(relay: &TestRelay, request: Uuid, state: &str) -> Vec<String> {
    store::audit::history(&relay.db, request)
        .await
        .unwrap()
        .into_iter()
        .filter(|line| line.state == state)
        .map(|line| line.reason)
        .collect()
}
