//! The critical-value (危急值) loop across two hospitals: notification on the origin's own
//! critical lane at once, acknowledgement with read-back, refusals with a reason to the sender,
//! reminders and escalation until acknowledged, and the register.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use prost::Message;
use sqlx::PgPool;
use std::collections::BTreeMap;
use tests::critical::{
    FINDING, acknowledged_line, acknowledgement, critical_report, next_critical,
    publish_acknowledgement, reasons_of, register_line, signed_report,
};
use tests::{HOSPITAL_A, HOSPITAL_B, TestRelay};

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_critical_report_reaches_the_origins_critical_lane_at_once_as_well_as_its_results(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    let id = critical_report(&relay, "ECG-CRIT-LANE").await;

    let notification = next_critical(&relay, HOSPITAL_A).await;
    assert_eq!(notification.request_id, "ECG-CRIT-LANE");
    assert_eq!(notification.finding, FINDING);
    assert_eq!(notification.reminder, 0);
    assert_eq!(notification.report_version, 1);
    assert_eq!(notification.reviewer_id, "xy-ecg-liu");
    assert_eq!(notification.reviewer_hospital, "HN-XY");
    let (reported, due) = (
        notification.reported_at.unwrap(),
        notification.acknowledge_by.unwrap(),
    );
    assert_eq!(
        due.seconds - reported.seconds,
        15 * 60,
        "15 minutes to acknowledge by default"
    );

    let notice = relay.broker.next_notice(HOSPITAL_A).await;
    let Some(v1::origin_notice::Notice::Result(result)) = notice.notice else {
        panic!("{notice:?}")
    };
    assert!(
        result.critical,
        "the result still reaches the results queue"
    );

    let line = register_line(&relay, &notification.notification_id).await;
    assert!(line.is_open());
    assert_eq!((line.origin.as_str(), line.reminders_sent), (HOSPITAL_A, 0));
    tests::wait_until("the critical_notified event", || async {
        reasons_of(&relay, id, "critical_notified").await.len() == 1
    })
    .await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_acknowledgement_with_read_back_closes_it_and_the_register_shows_who_when_and_how_long(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    let id = critical_report(&relay, "ECG-CRIT-ACK").await;
    let notification = next_critical(&relay, HOSPITAL_A).await;
    let ack = acknowledgement(&notification, HOSPITAL_A, "Read back: acute inferior STEMI");
    let published = publish_acknowledgement(&relay, HOSPITAL_A, ack.encode_to_vec()).await;

    let line = acknowledged_line(&relay, &notification.notification_id).await;
    assert_eq!(line.clinician_id.as_deref(), Some("HH-ED-0042"));
    assert_eq!(line.clinician_name.as_deref(), Some("Dr. Yang Li"));
    assert_eq!(
        line.read_back.as_deref(),
        Some("Read back: acute inferior STEMI")
    );
    assert_eq!(line.read_back_matches, Some(true));
    let took = line.minutes_to_acknowledge.unwrap();
    assert!((0.0..1.0).contains(&took), "took {took} min");
    assert!(line.acknowledged_at.unwrap() >= line.notified_at);

    let table = relayctl::critical::render_table(std::slice::from_ref(&line));
    assert!(table.contains("HH-ED-0042 Dr. Yang Li"), "{table}");
    assert!(table.contains("matches"), "{table}");
    let csv = relayctl::critical::render_csv(&[line]);
    assert!(csv.contains(",acknowledged,"), "{csv}");

    let acknowledged = tests::wait_for("the acknowledged event", || async {
        reasons_of(&relay, id, "acknowledged").await.pop()
    })
    .await;
    assert!(acknowledged.contains("HH-ED-0042"), "{acknowledged}");
    assert!(acknowledged.contains("min"), "{acknowledged}");
    let message_id: Option<String> = sqlx::query_scalar!(
        "select ack_message_id from critical_notifications where id = $1",
        uuid::Uuid::parse_str(&notification.notification_id).unwrap()
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(message_id, Some(published.message_id));

    let open = store::critical::register(
        &relay.db,
        &store::critical::RegisterQuery {
            open_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(open.is_empty(), "--open lists no acknowledged notification");
    relay
        .assert_no_dead_letters("a valid acknowledgement")
        .await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_repeated_acknowledgement_changes_nothing(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let id = critical_report(&relay, "ECG-CRIT-TWICE").await;
    let notification = next_critical(&relay, HOSPITAL_A).await;
    let notification_id = uuid::Uuid::parse_str(&notification.notification_id).unwrap();
    let first = acknowledgement(&notification, HOSPITAL_A, FINDING);
    let closing = publish_acknowledgement(&relay, HOSPITAL_A, first.encode_to_vec()).await;
    let closed = acknowledged_line(&relay, &notification.notification_id).await;

    // The same acknowledgement again (a county's retry), then another clinician's.
    publish_acknowledgement(&relay, HOSPITAL_A, first.encode_to_vec()).await;
    let mut second = acknowledgement(&notification, HOSPITAL_A, "something else entirely");
    second.clinician_id = "HH-ED-0099".into();
    publish_acknowledgement(&relay, HOSPITAL_A, second.encode_to_vec()).await;
    let receipts = tests::wait_for("all three acknowledgements recorded", || async {
        let receipts = sqlx::query!(
            r#"select message_key, clinician_id, closed_it from critical_acknowledgements
               where notification_id = $1 order by received_at"#,
            notification_id
        )
        .fetch_all(&relay.db)
        .await
        .unwrap();
        (receipts.len() == 3).then_some(receipts)
    })
    .await;
    let closers: Vec<_> = receipts.iter().filter(|r| r.closed_it).collect();
    assert_eq!(closers.len(), 1);
    assert_eq!(closers[0].message_key, closing.message_id);

    let now = register_line(&relay, &notification.notification_id).await;
    assert_eq!(
        (
            now.clinician_id,
            now.read_back,
            now.acknowledged_at,
            now.minutes_to_acknowledge
        ),
        (
            closed.clinician_id,
            closed.read_back,
            closed.acknowledged_at,
            closed.minutes_to_acknowledge
        ),
        "the first acknowledgement stands"
    );
    tests::wait_until("the acknowledged event", || async {
        !reasons_of(&relay, id, "acknowledged").await.is_empty()
    })
    .await;
    assert_eq!(reasons_of(&relay, id, "acknowledged").await.len(), 1);
    let refused: i64 =
        sqlx::query_scalar!(r#"select count(*) as "n!" from critical_acknowledgement_refusals"#)
            .fetch_one(&relay.db)
            .await
            .unwrap();
    assert_eq!(refused, 0, "a repeat is not a refusal");
    relay.assert_no_dead_letters("repeats are idempotent").await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_acknowledgement_for_an_unknown_notification_is_refused_to_its_sender_and_does_not_block_a_valid_one(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    critical_report(&relay, "ECG-CRIT-UNKNOWN").await;
    let notification = next_critical(&relay, HOSPITAL_A).await;

    let mut unknown = acknowledgement(&notification, HOSPITAL_A, FINDING);
    unknown.notification_id = uuid::Uuid::new_v4().to_string();
    let mut no_read_back = acknowledgement(&notification, HOSPITAL_A, "  ");
    no_read_back.clinician_name = String::new();
    let bad = [
        (unknown.encode_to_vec(), "unknown_notification"),
        (no_read_back.encode_to_vec(), "missing_field"),
        (b"\xff\xfe not protobuf".to_vec(), "malformed"),
    ];
    let mut expected = BTreeMap::new();
    for (body, reason) in bad {
        let published = publish_acknowledgement(&relay, HOSPITAL_A, body).await;
        expected.insert(published.message_id, reason.to_owned());
    }
    // Without a user_id the broker vouches for nobody: refused, and there is no one to tell.
    let anonymous = relay
        .broker
        .publish_to(
            &relay.topology.names.acknowledgements_exchange(),
            &format!("{HOSPITAL_A}.critical"),
            acknowledgement(&notification, HOSPITAL_A, FINDING).encode_to_vec(),
            None,
        )
        .await;
    // A valid acknowledgement right behind the refused ones.
    let valid = acknowledgement(&notification, HOSPITAL_A, FINDING);
    publish_acknowledgement(&relay, HOSPITAL_A, valid.encode_to_vec()).await;
    acknowledged_line(&relay, &notification.notification_id).await;

    let mut notices = BTreeMap::new();
    let mut result_seen = false;
    while notices.len() < expected.len() {
        let notice = relay.broker.next_notice(HOSPITAL_A).await;
        match notice.notice {
            Some(v1::origin_notice::Notice::AcknowledgementRefused(refused)) => {
                assert!(!refused.detail.is_empty());
                assert!(refused.refused_at.is_some());
                notices.insert(refused.message_id, refused.reason);
            }
            Some(v1::origin_notice::Notice::Result(_)) => result_seen = true,
            other => panic!("unexpected notice {other:?}"),
        }
    }
    assert_eq!(
        notices, expected,
        "each registered sender is told why, with a stable code"
    );
    assert!(result_seen, "the report itself reached the results queue");

    let mut dead = BTreeMap::new();
    expected.insert(anonymous.message_id, "unknown_sender".to_owned());
    for _ in 0..expected.len() {
        let letter = relay.next_dead_letter().await;
        assert_eq!(
            letter.source_queue.as_deref(),
            Some(
                relay
                    .topology
                    .names
                    .recorder_acknowledgements_queue()
                    .as_str()
            )
        );
        dead.insert(letter.message_id.unwrap(), letter.reason.unwrap());
    }
    assert_eq!(
        dead, expected,
        "every refused acknowledgement is dead-lettered with its reason"
    );
    let closed = register_line(&relay, &notification.notification_id).await;
    assert_eq!(closed.clinician_id.as_deref(), Some("HH-ED-0042"));
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_forged_acknowledgement_from_another_hospitals_user_is_refused_and_leaves_it_open(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    critical_report(&relay, "ECG-CRIT-FORGED").await;
    let notification = next_critical(&relay, HOSPITAL_A).await;

    // From now on the tests' broker user is hospital B's: B acknowledges A's notification,
    // even claiming to be A in the body.
    set_guest_hospital(&relay, HOSPITAL_B).await;
    let forged = acknowledgement(&notification, HOSPITAL_A, FINDING);
    let published = publish_acknowledgement(&relay, HOSPITAL_B, forged.encode_to_vec()).await;

    let notice = relay.broker.next_notice(HOSPITAL_B).await;
    let Some(v1::origin_notice::Notice::AcknowledgementRefused(refused)) = notice.notice else {
        panic!("the real sender is told: {notice:?}")
    };
    assert_eq!(refused.reason, "not_your_notification");
    assert_eq!(refused.message_id, published.message_id);
    assert_eq!(refused.notification_id, notification.notification_id);
    let letter = relay.next_dead_letter().await;
    assert_eq!(letter.reason.as_deref(), Some("not_your_notification"));
    assert!(
        register_line(&relay, &notification.notification_id)
            .await
            .is_open(),
        "a forgery acknowledges nothing"
    );

    // The real origin then acknowledges.
    set_guest_hospital(&relay, HOSPITAL_A).await;
    let real = acknowledgement(&notification, HOSPITAL_A, FINDING);
    publish_acknowledgement(&relay, HOSPITAL_A, real.encode_to_vec()).await;
    acknowledged_line(&relay, &notification.notification_id).await;
    relay.stop().await;
}

/// Makes the tests' broker user `guest` the broker user of `hospital` (and gives the other
/// hospital that had it a user nobody connects as).
async fn set_guest_hospital(relay: &TestRelay, hospital: &str) {
    sqlx::query!(
        "update hospitals set broker_user = lower(code) || '-his' where broker_user = 'guest'"
    )
    .execute(&relay.db)
    .await
    .unwrap();
    sqlx::query!(
        "update hospitals set broker_user = 'guest' where code = $1",
        hospital
    )
    .execute(&relay.db)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn reminders_repeat_with_escalation_until_acknowledged_and_stop_after(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let id = critical_report(&relay, "ECG-CRIT-REMIND").await;
    let notification = next_critical(&relay, HOSPITAL_A).await;
    let notification_id = uuid::Uuid::parse_str(&notification.notification_id).unwrap();

    // Nobody acknowledges: move the clock 16 minutes on (acknowledge-by is 15 minutes).
    sqlx::query!(
        "update critical_notifications set notified_at = notified_at - interval '16 minutes',
                acknowledge_by = acknowledge_by - interval '16 minutes',
                last_sent_at = last_sent_at - interval '16 minutes'
         where id = $1",
        notification_id
    )
    .execute(&relay.db)
    .await
    .unwrap();
    let first = next_critical(&relay, HOSPITAL_A).await;
    assert_eq!(
        (first.notification_id.as_str(), first.reminder),
        (notification.notification_id.as_str(), 1)
    );
    assert_eq!(first.finding, FINDING);

    // Five more minutes (the repeat interval): reminder 2.
    sqlx::query!(
        "update critical_notifications set notified_at = notified_at - interval '5 minutes',
                last_sent_at = last_sent_at - interval '5 minutes'
         where id = $1",
        notification_id
    )
    .execute(&relay.db)
    .await
    .unwrap();
    let second = next_critical(&relay, HOSPITAL_A).await;
    assert_eq!(second.reminder, 2);
    let escalations = tests::wait_for("two escalated events", || async {
        Some(reasons_of(&relay, id, "escalated").await).filter(|reasons| reasons.len() == 2)
    })
    .await;
    assert!(
        escalations[0].contains("unacknowledged for 16 min, reminder 1"),
        "{escalations:?}"
    );
    assert!(
        escalations[1].contains("unacknowledged for 21 min, reminder 2"),
        "{escalations:?}"
    );

    publish_acknowledgement(
        &relay,
        HOSPITAL_A,
        acknowledgement(&notification, HOSPITAL_A, FINDING).encode_to_vec(),
    )
    .await;
    let line = acknowledged_line(&relay, &notification.notification_id).await;
    assert_eq!(line.reminders_sent, 2);
    assert!(line.minutes_to_acknowledge.unwrap() >= 21.0);

    // Acknowledged: however much time passes, the clock sends nothing more.
    sqlx::query!(
        "update critical_notifications set last_sent_at = last_sent_at - interval '1 hour' where id = $1",
        notification_id
    )
    .execute(&relay.db)
    .await
    .unwrap();
    let sent = store::critical::send_due_reminders(
        &relay.db,
        &relay.topology.names,
        chrono::Duration::minutes(5),
        100,
    )
    .await
    .unwrap();
    assert_eq!(sent, 0, "no reminder after the acknowledgement");
    let sends: i64 = sqlx::query_scalar!(
        r#"select count(*) as "n!" from critical_notification_sends where notification_id = $1"#,
        notification_id
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(
        sends, 3,
        "the register of sends: the notification and two reminders"
    );
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_report_that_is_not_critical_opens_no_notification(db: PgPool) {
    let relay = TestRelay::start(db).await;
    signed_report(&relay, "ECG-NORMAL", false).await;
    let notice = relay.broker.next_notice(HOSPITAL_A).await;
    let Some(v1::origin_notice::Notice::Result(result)) = notice.notice else {
        panic!("{notice:?}")
    };
    assert!(!result.critical);
    // A notification would have been queued before the result, in the same transaction.
    let queue = relay
        .topology
        .names
        .origin_critical_queue(&domain::HospitalCode::parse(HOSPITAL_A).unwrap());
    assert_eq!(relay.broker.depth(&queue).await, 0);
    let opened: i64 = sqlx::query_scalar!(r#"select count(*) as "n!" from critical_notifications"#)
        .fetch_one(&relay.db)
        .await
        .unwrap();
    assert_eq!(opened, 0);
    relay.stop().await;
}
