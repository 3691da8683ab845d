//! The SLA clock: due times from the county's publish, the at-risk warning, the breach and the
//! escalation ladder (reroute to the backup pool, page the pool head, page the on-call). Races
//! and restarts are in `sla_resilience.rs`. Time is moved by editing the request's timestamps in
//! the test database; the tests' dispatcher ticks every 100 ms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Utc;
use contract::v1;
use domain::Priority;
use domain::RequestState::{AtRisk, Escalated};
use domain::wire::timestamp;
use sqlx::PgPool;
use tests::fixtures::{catalog, ecg_request, imaging_request, pathology_request};
use tests::sla::{
    OwnDispatcher, Pager, RECORD, clock_row, events, lane, move_due_back, next_escalation,
    pass_at_risk_mark, pass_due_time, publish, publish_ecg, relay_without_dispatcher,
    two_clock_ticks, wait_for_events, wait_for_lane_depth, wait_for_row,
};
use tests::{HOSPITAL_A, report_body, tokens};

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_due_time_runs_from_the_county_publish_per_kind_priority_and_frozen_section(
    db: PgPool,
) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let published = Utc::now() - chrono::Duration::minutes(3);
    let at_publish = |mut request: v1::ReviewRequest| {
        request.requested_at = Some(timestamp(published));
        request
    };
    let cases = [
        (
            at_publish(ecg_request(
                HOSPITAL_A,
                "SLA-ECG-STAT",
                v1::Priority::Stat,
                RECORD,
            )),
            600.0,
            450.0,
        ),
        (
            at_publish(ecg_request(
                HOSPITAL_A,
                "SLA-ECG-ROUTINE",
                v1::Priority::Routine,
                RECORD,
            )),
            7_200.0,
            5_400.0,
        ),
        (
            at_publish(imaging_request(
                HOSPITAL_A,
                "SLA-CT-STAT",
                v1::Priority::Stat,
            )),
            1_800.0,
            1_350.0,
        ),
        (
            at_publish(imaging_request(
                HOSPITAL_A,
                "SLA-CT-ROUTINE",
                v1::Priority::Routine,
            )),
            86_400.0,
            64_800.0,
        ),
        (
            // A frozen section is due in 30 minutes whatever priority the lab chose.
            at_publish(pathology_request(
                HOSPITAL_A,
                "SLA-FROZEN",
                v1::Priority::Routine,
            )),
            1_800.0,
            1_350.0,
        ),
        (
            at_publish(catalog().pathology_request(
                HOSPITAL_A,
                "SLA-PATH-ROUTINE",
                v1::Priority::Routine,
                false,
            )),
            259_200.0,
            194_400.0,
        ),
    ];
    for (request, target, at_risk) in cases {
        let request_id = request.request_id.clone();
        let id = publish(&relay, request).await;
        let row = sqlx::query!(
            r#"select extract(epoch from due_at - requested_at)::float8 as "due!",
                      extract(epoch from at_risk_at - requested_at)::float8 as "at_risk!",
                      abs(extract(epoch from requested_at)::float8 - $2::float8) as "publish_offset!"
               from review_requests where id = $1"#,
            id,
            published.timestamp_micros() as f64 / 1e6,
        )
        .fetch_one(&relay.db)
        .await
        .unwrap();
        assert!(
            row.publish_offset < 0.001,
            "{request_id}: the clock starts at the publish"
        );
        assert_eq!((row.due, row.at_risk), (target, at_risk), "{request_id}");
    }

    // A county clock running fast does not buy time: the clock starts when the relay received it.
    let mut fast = ecg_request(HOSPITAL_A, "SLA-FAST-CLOCK", v1::Priority::Stat, RECORD);
    fast.requested_at = Some(timestamp(Utc::now() + chrono::Duration::minutes(5)));
    let id = publish(&relay, fast).await;
    let due_after_receipt = sqlx::query_scalar!(
        r#"select extract(epoch from due_at - received_at)::float8 as "due!" from review_requests where id = $1"#,
        id
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(due_after_receipt, 600.0);
    dispatcher.stop().await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_request_past_its_at_risk_mark_is_warned_about_once(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let id = publish_ecg(&relay, "SLA-AT-RISK", v1::Priority::Stat).await;
    let marker = publish_ecg(&relay, "SLA-MARKER", v1::Priority::Routine).await;
    pass_at_risk_mark(&relay.db, id).await;
    let warnings = wait_for_events(&relay.db, id, AtRisk, 1).await;
    assert_eq!(warnings[0].0, "service:sla-clock");
    assert!(warnings[0].1.starts_with("SLA at risk"), "{warnings:?}");

    two_clock_ticks(&relay.db, marker).await;
    wait_for_events(&relay.db, marker, AtRisk, 2).await;
    assert_eq!(events(&relay.db, id, AtRisk).await.len(), 1, "warned once");
    let row = clock_row(&relay.db, id).await;
    assert!(row.warned && !row.breached && !row.flagged, "{row:?}");
    dispatcher.stop().await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_breach_moves_a_waiting_request_to_the_backup_pool_and_tells_the_origin(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let id = publish_ecg(&relay, "SLA-BREACH", v1::Priority::Stat).await;
    let primary_lane = lane(&relay, "xy-ecg", Priority::Stat);
    wait_for_lane_depth(&relay, &primary_lane, 1).await;

    pass_due_time(&relay.db, id).await;
    wait_for_row(&relay.db, id, "the first ladder step", |row| {
        row.escalation_level >= 1
    })
    .await;
    let row = clock_row(&relay.db, id).await;
    assert_eq!(
        (
            row.state.as_str(),
            row.pool.as_deref(),
            row.flagged,
            row.breached
        ),
        ("routed", Some("pph-ecg"), true, true)
    );
    let escalated = next_escalation(&relay).await;
    assert_eq!(
        (
            escalated.request_id.as_str(),
            escalated.level,
            escalated.action.as_str()
        ),
        ("SLA-BREACH", 1, "rerouted_to_backup")
    );
    assert!(escalated.due_at.is_some() && escalated.escalated_at.is_some());
    let audit = wait_for_events(&relay.db, id, Escalated, 2).await;
    assert!(audit[0].1.starts_with("SLA breached"), "{audit:?}");
    assert_eq!(audit[1].2.as_deref(), Some("pph-ecg"), "{audit:?}");

    // The primary pool's lane message is stale: taken and acked away, nothing handed out.
    assert!(relay.take_next(tokens::ECG).await.is_none());
    assert_eq!(relay.broker.depth(&primary_lane).await, 0);
    // Exactly one copy is claimable in the backup pool.
    let claimed = relay.claim_next(tokens::BACKUP_ECG).await;
    assert_eq!(claimed["request_uuid"], id.to_string());
    assert_eq!(claimed["flagged"], true);
    assert!(relay.take_next(tokens::BACKUP_ECG).await.is_none());
    let (status, _) = relay
        .report(tokens::BACKUP_ECG, &id.to_string(), report_body(false))
        .await;
    assert_eq!(status, 201);
    dispatcher.stop().await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn later_ladder_steps_page_the_pool_head_then_the_on_call_once_each(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    assert!(
        store::sla_config::set_pool_head(&relay.db, "pph-ecg", Some("pph-ecg-head"))
            .await
            .unwrap()
    );
    let pager = Pager::connect(&relay).await;
    let id = publish_ecg(&relay, "SLA-LADDER", v1::Priority::Stat).await;
    let marker = publish_ecg(&relay, "SLA-LADDER-MARKER", v1::Priority::Routine).await;

    pass_due_time(&relay.db, id).await;
    wait_for_row(&relay.db, id, "step 1", |row| row.escalation_level == 1).await;
    assert_eq!(next_escalation(&relay).await.action, "rerouted_to_backup");

    // Step 2 runs 10 minutes after the due time: the head of the pool it now waits in.
    move_due_back(&relay.db, id, 601.0).await;
    let page = pager.next().await;
    assert_eq!(page.routing_key, "page.pph-ecg-head");
    assert_eq!(
        (
            page.escalated.request_id.as_str(),
            page.escalated.level,
            page.escalated.action.as_str()
        ),
        ("SLA-LADDER", 2, "paged_pool_head")
    );
    assert_eq!(next_escalation(&relay).await.action, "paged_pool_head");

    // Step 3, 30 minutes after: the province's on-call.
    move_due_back(&relay.db, id, 1_200.0).await;
    let page = pager.next().await;
    assert_eq!(page.routing_key, "page.hunan-on-call");
    assert_eq!(
        (page.escalated.level, page.escalated.action.as_str()),
        (3, "paged_on_call")
    );
    assert_eq!(next_escalation(&relay).await.action, "paged_on_call");

    // Each step once: the clock goes on ticking and nobody is paged again.
    two_clock_ticks(&relay.db, marker).await;
    assert_eq!(
        relay
            .broker
            .depth(&relay.topology.names.alerts_queue())
            .await,
        0
    );
    assert_eq!(clock_row(&relay.db, id).await.escalation_level, 3);
    wait_for_events(&relay.db, id, Escalated, 4).await;
    assert_eq!(
        events(&relay.db, id, Escalated).await.len(),
        4,
        "breach + 3 steps"
    );
    pager.close().await;
    dispatcher.stop().await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_request_being_read_at_its_breach_stays_with_its_reader_flagged(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let id = publish_ecg(&relay, "SLA-READING", v1::Priority::Stat).await;
    relay.claim_next(tokens::ECG).await;

    pass_due_time(&relay.db, id).await;
    wait_for_row(&relay.db, id, "step 1", |row| row.escalation_level == 1).await;
    let row = clock_row(&relay.db, id).await;
    assert_eq!(
        (
            row.state.as_str(),
            row.pool.as_deref(),
            row.claimed_by.as_deref(),
            row.flagged
        ),
        ("claimed", Some("xy-ecg"), Some("xy-ecg-liu"), true)
    );
    let escalated = next_escalation(&relay).await;
    assert_eq!(
        (escalated.level, escalated.action.as_str()),
        (1, "kept_with_reader")
    );
    assert_eq!(
        relay
            .broker
            .depth(&lane(&relay, "pph-ecg", Priority::Stat))
            .await,
        0
    );
    let (status, _) = relay
        .report(tokens::ECG, &id.to_string(), report_body(false))
        .await;
    assert_eq!(status, 201, "the reader keeps the request and reports it");
    dispatcher.stop().await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_changed_target_applies_to_requests_received_afterwards(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let before = publish_ecg(&relay, "SLA-POLICY-BEFORE", v1::Priority::Stat).await;
    store::sla_config::set_policy(
        &relay.db,
        &store::sla_config::Policy {
            kind: "ecg".into(),
            priority: "stat".into(),
            frozen_section: false,
            target_seconds: 300.0,
            at_risk_seconds: 240.0,
        },
    )
    .await
    .unwrap();
    let after = publish_ecg(&relay, "SLA-POLICY-AFTER", v1::Priority::Stat).await;
    for (id, target) in [(before, 600.0), (after, 300.0)] {
        let due = sqlx::query_scalar!(
            r#"select extract(epoch from due_at - least(requested_at, received_at))::float8 as "due!"
               from review_requests where id = $1"#,
            id
        )
        .fetch_one(&relay.db)
        .await
        .unwrap();
        assert_eq!(due, target);
    }
    dispatcher.stop().await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_breach_without_a_backup_pool_leaves_the_request_waiting_and_says_so(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    // The test registry has no backup pool for imaging.
    let id = publish(
        &relay,
        imaging_request(HOSPITAL_A, "SLA-NO-BACKUP", v1::Priority::Stat),
    )
    .await;
    pass_due_time(&relay.db, id).await;
    wait_for_row(&relay.db, id, "step 1", |row| row.escalation_level == 1).await;
    let row = clock_row(&relay.db, id).await;
    assert_eq!(
        (row.state.as_str(), row.pool.as_deref(), row.flagged),
        ("routed", Some("xy-imaging"), true)
    );
    assert_eq!(next_escalation(&relay).await.action, "no_backup_pool");
    let claimed = relay.claim_next(tokens::IMAGING).await;
    assert_eq!(claimed["request_uuid"], id.to_string());
    dispatcher.stop().await;
    relay.stop().await;
}
