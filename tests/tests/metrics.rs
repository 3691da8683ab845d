//! Metrics (`docs/metrics.md`): every metric moves when, and only when, its event happens in the
//! real relay, by exactly as much as the event says, and gauges come back down. The catalogue's
//! agreement with the exposition and `/ready` are in `metrics_catalogue.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::RequestState::{Claimed, Delivered, Received, Reported, Routed};
use sqlx::PgPool;
use store::dead_letters::Selection;
use tests::critical::{acknowledgement, critical_report, next_critical, publish_acknowledgement};
use tests::fixtures::{ecg_request, imaging_request};
use tests::metrics::{Service, status_of, total, url, wait_for_value, wait_metric};
use tests::sla::{
    OwnDispatcher, expire_lease, pass_at_risk_mark, pass_due_time, publish_ecg,
    relay_without_dispatcher, wait_for_row,
};
use tests::{
    HOSPITAL_A, HOSPITAL_C, TestRelay, report_body, test_registry, tokens, wait_for, wait_until,
};

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn one_request_end_to_end_moves_each_counter_of_every_service_exactly_once(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let names = &relay.topology.names;
    for service in [Service::Desk, Service::Dispatcher, Service::Recorder] {
        let base = url(&relay, service);
        assert_eq!(status_of(&relay, &format!("{base}/health")).await, 200);
        assert_eq!(status_of(&relay, &format!("{base}/ready")).await, 200);
        let scrape = relay.scrape(service).await;
        assert_eq!(scrape.value("telerelay_broker_session_up", &[]), 1.0);
        assert_eq!(scrape.value("telerelay_broker_reconnects_total", &[]), 0.0);
    }
    let before = relay.scrape(Service::Dispatcher).await;
    assert_eq!(before.value("telerelay_requests_received_total", &[]), 0.0);

    let request = ecg_request(HOSPITAL_A, "ECG-METRICS-1", v1::Priority::Stat, "HR06001");
    relay.broker.publish_request(&request).await;
    let id = relay.request_uuid(HOSPITAL_A, &request.request_id).await;
    relay.claim_next(tokens::ECG).await;
    let (status, body) = relay
        .report(tokens::ECG, &id.to_string(), report_body(false))
        .await;
    assert_eq!(status, 201, "{body}");
    relay
        .wait_for_history(id, &[Received, Routed, Claimed, Reported, Delivered])
        .await;

    // Published once each, by whichever outbox relay took the row: the lane copy, four events
    // (received, routed, claimed, reported) and the result.
    let confirmed = |exchange| [("exchange", exchange), ("outcome", "confirmed")];
    wait_until("the four events to be confirmed", || async {
        total(&relay, "telerelay_published_total", &confirmed("events")).await == 4.0
    })
    .await;
    for (exchange, count) in [("review", 1.0), ("results", 1.0)] {
        assert_eq!(
            total(&relay, "telerelay_published_total", &confirmed(exchange)).await,
            count,
            "{exchange}"
        );
        assert_eq!(
            total(
                &relay,
                "telerelay_publish_confirm_seconds_count",
                &[("exchange", exchange)]
            )
            .await,
            count,
            "{exchange}"
        );
    }
    assert_eq!(
        total(&relay, "telerelay_published_total", &[]).await,
        6.0,
        "nothing else was published, nothing unroutable, nacked or timed out"
    );

    // The dispatcher: received and routed once, its delivery done.
    let ecg_stat = [("kind", "ecg"), ("priority", "stat")];
    let dispatcher_queue = names.dispatcher_queue();
    let dispatcher = wait_metric(
        &relay,
        Service::Dispatcher,
        "telerelay_deliveries_total",
        &[("queue", &dispatcher_queue), ("outcome", "done")],
        1.0,
    )
    .await;
    assert_eq!(
        dispatcher.value("telerelay_requests_received_total", &ecg_stat),
        1.0
    );
    assert_eq!(
        dispatcher.value(
            "telerelay_requests_routed_total",
            &[
                ("kind", "ecg"),
                ("priority", "stat"),
                ("pool", "xy-ecg"),
                ("overflow", "false")
            ]
        ),
        1.0
    );
    assert_eq!(
        dispatcher.value("telerelay_deliveries_total", &[]),
        1.0,
        "no other outcome"
    );
    assert_eq!(
        dispatcher.value(
            "telerelay_deliveries_in_flight",
            &[("queue", &dispatcher_queue)]
        ),
        0.0
    );
    assert_eq!(
        dispatcher.value("telerelay_requests_rejected_total", &[]),
        0.0
    );
    assert_eq!(
        dispatcher.value("telerelay_requests_duplicate_total", &[]),
        0.0
    );

    // The desk: one claim, one first report, each call counted by its route template.
    let desk = relay.scrape(Service::Desk).await;
    assert_eq!(
        desk.value(
            "telerelay_claims_total",
            &[("pool", "xy-ecg"), ("priority", "stat")]
        ),
        1.0
    );
    assert_eq!(
        desk.value(
            "telerelay_reports_total",
            &[("kind", "ecg"), ("critical", "false"), ("version", "first")]
        ),
        1.0
    );
    assert_eq!(
        desk.value(
            "telerelay_http_requests_total",
            &[("route", "/v1/worklist/next"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        desk.value(
            "telerelay_http_requests_total",
            &[("route", "/v1/requests/{id}/report"), ("status", "201")]
        ),
        1.0
    );

    // The recorder: each event once, one result delivered, both turnarounds observed once.
    wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_deliveries_total",
        &[
            ("queue", &names.recorder_events_queue()),
            ("outcome", "done"),
        ],
        4.0,
    )
    .await;
    let recorder = wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_deliveries_total",
        &[
            ("queue", &names.recorder_results_queue()),
            ("outcome", "done"),
        ],
        1.0,
    )
    .await;
    for state in ["received", "routed", "claimed", "reported"] {
        assert_eq!(
            recorder.value("telerelay_events_recorded_total", &[("state", state)]),
            1.0,
            "{state}"
        );
    }
    let labels = |stage| {
        [
            ("stage", stage),
            ("kind", "ecg"),
            ("priority", "stat"),
            ("origin", HOSPITAL_A),
            ("pool", "xy-ecg"),
        ]
    };
    for stage in ["received_to_reported", "reported_to_delivered"] {
        assert_eq!(
            recorder.value("telerelay_turnaround_seconds_count", &labels(stage)),
            1.0,
            "{stage}"
        );
        assert_eq!(
            recorder.value(
                "telerelay_turnaround_seconds_bucket",
                &[labels(stage).as_slice(), &[("le", "+Inf")]].concat()
            ),
            1.0
        );
    }

    // The county sends the same request again: received again, a duplicate, nothing routed.
    relay.broker.publish_request(&request).await;
    let dispatcher = wait_metric(
        &relay,
        Service::Dispatcher,
        "telerelay_requests_duplicate_total",
        &[("conflicting", "false")],
        1.0,
    )
    .await;
    assert_eq!(
        dispatcher.value("telerelay_requests_received_total", &ecg_stat),
        2.0
    );
    assert_eq!(
        dispatcher.value("telerelay_requests_routed_total", &[]),
        1.0
    );
    // And the same id with other content: a conflicting duplicate, refused.
    let mut conflicting = request.clone();
    conflicting.clinical_question = "another question".into();
    relay.broker.publish_request(&conflicting).await;
    let dispatcher = wait_metric(
        &relay,
        Service::Dispatcher,
        "telerelay_requests_rejected_total",
        &[("reason", "conflicting_duplicate")],
        1.0,
    )
    .await;
    assert_eq!(
        dispatcher.value(
            "telerelay_requests_duplicate_total",
            &[("conflicting", "true")]
        ),
        1.0
    );
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_refusal_its_dead_letter_and_its_replay_move_counters_once_and_the_gauge_back_down(
    db: PgPool,
) {
    // Hospital C has no imaging pairing: its imaging request is refused (no_pairing).
    let mut registry = test_registry(HOSPITAL_C);
    let relay = TestRelay::start_with(db, &registry).await;
    let request = imaging_request(HOSPITAL_C, "CT-METRICS-1", v1::Priority::Urgent);
    relay.broker.publish_request(&request).await;
    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("no_pairing"));

    let dispatcher = wait_metric(
        &relay,
        Service::Dispatcher,
        "telerelay_requests_rejected_total",
        &[("reason", "no_pairing")],
        1.0,
    )
    .await;
    assert_eq!(
        dispatcher.value("telerelay_requests_routed_total", &[]),
        0.0
    );
    let dispatcher_queue = relay.topology.names.dispatcher_queue();
    let recorder = wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_dead_letters_unreplayed",
        &[("reason", "no_pairing")],
        1.0,
    )
    .await;
    assert_eq!(
        recorder.value(
            "telerelay_dead_letters_total",
            &[("reason", "no_pairing"), ("queue", &dispatcher_queue)]
        ),
        1.0
    );
    assert_eq!(
        recorder.value("telerelay_events_recorded_total", &[("state", "rejected")]),
        1.0
    );

    // The operator pairs C's imaging and replays the dead letter: it is routed, the open dead
    // letters gauge goes back to 0, and no new dead letter is counted.
    registry.pairings.push(store::registry::PairingEntry {
        origin: HOSPITAL_C.into(),
        department: None,
        kind: "imaging".into(),
        subspecialty: None,
        pool: "xy-imaging".into(),
        backups: vec![],
    });
    store::registry::load(&relay.db, &registry).await.unwrap();
    let selection = Selection {
        ids: vec![dead.id],
        ..Default::default()
    };
    store::dead_letters::replay(&relay.db, &selection, "ops-zhang", "pairing added")
        .await
        .unwrap();
    wait_metric(
        &relay,
        Service::Dispatcher,
        "telerelay_requests_routed_total",
        &[("kind", "imaging"), ("pool", "xy-imaging")],
        1.0,
    )
    .await;
    let recorder = wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_dead_letters_unreplayed",
        &[("reason", "no_pairing")],
        0.0,
    )
    .await;
    assert_eq!(recorder.value("telerelay_dead_letters_total", &[]), 1.0);
    assert_eq!(
        relay
            .scrape(Service::Dispatcher)
            .await
            .value("telerelay_requests_rejected_total", &[]),
        1.0
    );
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_return_is_counted_by_reason_and_the_lane_gauges_rise_and_fall(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let lane = relay.topology.names.review_lane(
        &domain::PoolCode::parse("xy-ecg").unwrap(),
        domain::Priority::Routine,
    );
    let xy_routine = [("pool", "xy-ecg"), ("priority", "routine")];
    // Every lane shows from the first refresh, empty ones at 0.
    let recorder = wait_for("the gauges' first refresh", || async {
        let scrape = relay.scrape(Service::Recorder).await;
        (scrape.has("telerelay_lane_waiting", &xy_routine)
            && scrape.has("telerelay_queue_messages", &[("queue", &lane)]))
        .then_some(scrape)
    })
    .await;
    assert_eq!(recorder.value("telerelay_lane_waiting", &xy_routine), 0.0);
    assert_eq!(
        recorder.value("telerelay_queue_messages", &[("queue", &lane)]),
        0.0
    );

    let request = ecg_request(
        HOSPITAL_A,
        "ECG-METRICS-RET",
        v1::Priority::Routine,
        "E07501",
    );
    relay.broker.publish_request(&request).await;
    let id = relay.request_uuid(HOSPITAL_A, &request.request_id).await;
    wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_lane_waiting",
        &xy_routine,
        1.0,
    )
    .await;
    wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_queue_messages",
        &[("queue", &lane)],
        1.0,
    )
    .await;
    wait_until("the oldest waiting age to show", || async {
        relay
            .scrape(Service::Recorder)
            .await
            .value("telerelay_lane_oldest_waiting_seconds", &xy_routine)
            > 0.0
    })
    .await;

    relay.claim_next(tokens::ECG).await;
    let recorder = wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_lane_waiting",
        &xy_routine,
        0.0,
    )
    .await;
    assert_eq!(
        recorder.value("telerelay_lane_oldest_waiting_seconds", &xy_routine),
        0.0
    );
    wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_queue_messages",
        &[("queue", &lane)],
        0.0,
    )
    .await;

    let (status, body) = relay
        .return_request(tokens::ECG, &id.to_string(), "unreadable_signal")
        .await;
    assert_eq!(status, 200, "{body}");
    let recorder = wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_returns_total",
        &[("reason", "unreadable_signal"), ("kind", "ecg")],
        1.0,
    )
    .await;
    assert_eq!(recorder.value("telerelay_returns_total", &[]), 1.0);
    assert_eq!(
        recorder.value("telerelay_events_recorded_total", &[("state", "returned")]),
        1.0
    );
    assert_eq!(
        recorder.value("telerelay_turnaround_seconds_count", &[]),
        0.0,
        "a returned request has no report"
    );
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_sla_clock_counts_expired_leases_warnings_breaches_and_ladder_steps(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let base = dispatcher.metrics_url.clone();
    wait_until("the dispatcher to be ready", || async {
        status_of(&relay, &format!("{base}/ready")).await == 200
    })
    .await;
    let id = publish_ecg(&relay, "ECG-METRICS-SLA", v1::Priority::Stat).await;

    // A lease that runs out is released once.
    relay.claim_next(tokens::ECG).await;
    expire_lease(&relay.db, id).await;
    wait_for_value(&relay, &base, "telerelay_leases_expired_total", &[], 1.0).await;

    let ecg_stat = [("kind", "ecg"), ("priority", "stat")];
    pass_at_risk_mark(&relay.db, id).await;
    wait_for_value(&relay, &base, "telerelay_sla_at_risk_total", &ecg_stat, 1.0).await;
    wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_sla_open_at_risk",
        &[],
        1.0,
    )
    .await;

    pass_due_time(&relay.db, id).await;
    wait_for_value(
        &relay,
        &base,
        "telerelay_sla_breached_total",
        &ecg_stat,
        1.0,
    )
    .await;
    // The default ladder's first step (reroute to a backup pool) follows the breach at once.
    let scrape = wait_for_value(
        &relay,
        &base,
        "telerelay_escalations_total",
        &[("step", "1")],
        1.0,
    )
    .await;
    assert_eq!(scrape.value("telerelay_escalations_total", &[]), 1.0);
    assert_eq!(scrape.value("telerelay_sla_at_risk_total", &[]), 1.0);
    assert_eq!(scrape.value("telerelay_leases_expired_total", &[]), 1.0);
    let recorder = wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_sla_open_overdue",
        &[],
        1.0,
    )
    .await;
    assert_eq!(recorder.value("telerelay_sla_open_at_risk", &[]), 0.0);

    // Reported: the request is no longer open, the overdue gauge comes back down.
    wait_for_row(&relay.db, id, "the ladder step to be taken", |row| {
        row.escalation_level >= 1 && row.state == "routed"
    })
    .await;
    let token = match tests::sla::clock_row(&relay.db, id).await.pool.as_deref() {
        Some("pph-ecg") => tokens::BACKUP_ECG,
        _ => tokens::ECG,
    };
    relay.claim_next(token).await;
    let (status, body) = relay
        .report(token, &id.to_string(), report_body(false))
        .await;
    assert_eq!(status, 201, "{body}");
    wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_sla_open_overdue",
        &[],
        0.0,
    )
    .await;
    dispatcher.stop().await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_critical_value_is_counted_reminded_and_its_acknowledgement_time_observed(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let id = critical_report(&relay, "ECG-METRICS-CRIT").await;
    let notification = next_critical(&relay, HOSPITAL_A).await;
    let desk = relay.scrape(Service::Desk).await;
    assert_eq!(
        desk.value(
            "telerelay_reports_total",
            &[("kind", "ecg"), ("critical", "true"), ("version", "first")]
        ),
        1.0
    );
    wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_critical_open",
        &[],
        1.0,
    )
    .await;

    // Nobody acknowledges within the window: one reminder, and the notification is overdue.
    let notification_id = uuid::Uuid::parse_str(&notification.notification_id).unwrap();
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
    let reminder = next_critical(&relay, HOSPITAL_A).await;
    assert_eq!(reminder.reminder, 1);
    wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_critical_reminders_total",
        &[],
        1.0,
    )
    .await;
    wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_critical_overdue",
        &[],
        1.0,
    )
    .await;

    let ack = acknowledgement(&notification, HOSPITAL_A, "acute inferior STEMI");
    publish_acknowledgement(&relay, HOSPITAL_A, prost::Message::encode_to_vec(&ack)).await;
    let ecg_a = [("kind", "ecg"), ("origin", HOSPITAL_A)];
    let recorder = wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_critical_ack_seconds_count",
        &ecg_a,
        1.0,
    )
    .await;
    // Sixteen minutes by the database clock: in the 20-minute bucket, not the 15-minute one.
    assert_eq!(
        recorder.value(
            "telerelay_critical_ack_seconds_bucket",
            &[ecg_a.as_slice(), &[("le", "1200.0")]].concat()
        ),
        1.0
    );
    assert_eq!(
        recorder.value(
            "telerelay_critical_ack_seconds_bucket",
            &[ecg_a.as_slice(), &[("le", "900.0")]].concat()
        ),
        0.0
    );
    wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_critical_open",
        &[],
        0.0,
    )
    .await;
    wait_metric(
        &relay,
        Service::Recorder,
        "telerelay_critical_overdue",
        &[],
        0.0,
    )
    .await;

    // An addendum is a report version of its own.
    let response = relay
        .http
        .post(format!("{}/v1/requests/{id}/revisions", relay.desk_url))
        .bearer_auth(tokens::ECG)
        .json(&serde_json::json!({
            "kind": "addendum",
            "findings": "serial ECG attached",
            "conclusion": "unchanged",
            "reason": "serial ECG"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let desk = relay.scrape(Service::Desk).await;
    assert_eq!(
        desk.value(
            "telerelay_reports_total",
            &[
                ("kind", "ecg"),
                ("critical", "false"),
                ("version", "addendum")
            ]
        ),
        1.0
    );
    assert_eq!(desk.value("telerelay_reports_total", &[]), 2.0);
    relay.stop().await;
}
