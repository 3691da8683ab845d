//! The SLA clock under contention: a breach racing a late claim (both orders serialise on the
//! request's row, exactly one wins) and a dispatcher restart in the middle of the ladder (no step
//! repeated, none forgotten).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::RequestState::{AtRisk, Escalated};
use domain::{PoolCode, Priority};
use sqlx::PgPool;
use tests::sla::{
    OwnDispatcher, Pager, clock_row, events, lane, move_due_back, next_escalation,
    pass_at_risk_mark, pass_due_time, publish_ecg, relay_without_dispatcher, two_clock_ticks,
    wait_for_events, wait_for_lane_depth, wait_for_row,
};
use tests::{tokens, wait_until};

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_claim_that_locks_the_row_first_wins_over_the_escalation(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let id = publish_ecg(&relay, "SLA-CLAIM-FIRST", v1::Priority::Stat).await;

    let mut claim = relay.db.begin().await.unwrap();
    let pool = PoolCode::parse("xy-ecg").unwrap();
    let claimed = store::review::claim_routed(
        &mut claim,
        id,
        &pool,
        "xy-ecg-liu",
        chrono::Duration::minutes(15),
    )
    .await
    .unwrap();
    assert!(claimed.is_some());
    sqlx::query!(
        "update review_requests set due_at = now() - interval '1 second' where id = $1",
        id
    )
    .execute(&mut *claim)
    .await
    .unwrap();
    // While the claim holds the row the clock passes it by...
    let mut clock = relay.db.begin().await.unwrap();
    assert!(store::sla::next_breach(&mut clock).await.unwrap().is_none());
    drop(clock);
    claim.commit().await.unwrap();

    // ...and then finds it being read: flagged and escalated, but not moved.
    wait_for_row(&relay.db, id, "step 1", |row| row.escalation_level == 1).await;
    let row = clock_row(&relay.db, id).await;
    assert_eq!(
        (
            row.state.as_str(),
            row.pool.as_deref(),
            row.claimed_by.as_deref()
        ),
        ("claimed", Some("xy-ecg"), Some("xy-ecg-liu"))
    );
    assert_eq!(next_escalation(&relay).await.action, "kept_with_reader");
    dispatcher.stop().await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_escalation_that_locks_the_row_first_leaves_the_late_claim_a_stale_message(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let id = publish_ecg(&relay, "SLA-REROUTE-FIRST", v1::Priority::Stat).await;
    let primary_lane = lane(&relay, "xy-ecg", Priority::Stat);
    wait_for_lane_depth(&relay, &primary_lane, 1).await;

    // The clock breaches the request and takes ladder step 1, holding its transaction open.
    let mut clock = relay.db.begin().await.unwrap();
    sqlx::query!(
        r#"update review_requests set due_at = now() - interval '1 second', breached_at = now(), flagged = true
           where id = $1"#,
        id
    )
    .execute(&mut *clock)
    .await
    .unwrap();
    let due = store::sla::next_ladder_step(&mut clock)
        .await
        .unwrap()
        .expect("step 1 is due");
    assert_eq!((due.request.id, due.step.step), (id, 1));
    let backup = store::registry::next_pool_of_request(&relay.db, id)
        .await
        .unwrap();
    let escalation =
        dispatcher::clock::take_step(&mut clock, &relay.topology.names, &due, backup.as_ref())
            .await
            .unwrap();
    assert_eq!(escalation.action, "rerouted_to_backup");

    // The primary pool's reviewer takes the old lane message; the claim waits for the row.
    let late_claim = {
        let (http, url) = (
            relay.http.clone(),
            format!("{}/v1/worklist/next", relay.desk_url),
        );
        tokio::spawn(async move {
            let response = http
                .post(url)
                .bearer_auth(tokens::ECG)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        })
    };
    wait_until("the late claim to wait for the row lock", || async {
        sqlx::query_scalar!(
            r#"select count(*) as "n!" from pg_stat_activity
               where datname = current_database() and wait_event_type = 'Lock'"#
        )
        .fetch_one(&relay.db)
        .await
        .unwrap()
            > 0
    })
    .await;
    clock.commit().await.unwrap();

    assert_eq!(
        late_claim.await.unwrap(),
        204,
        "the late claim finds nothing to claim"
    );
    assert_eq!(
        relay.broker.depth(&primary_lane).await,
        0,
        "stale message acked away"
    );
    let row = clock_row(&relay.db, id).await;
    assert_eq!(
        (row.state.as_str(), row.pool.as_deref()),
        ("routed", Some("pph-ecg"))
    );
    let claimed = relay.claim_next(tokens::BACKUP_ECG).await;
    assert_eq!(claimed["request_uuid"], id.to_string());
    dispatcher.stop().await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_clock_survives_a_dispatcher_restart_without_repeating_itself(db: PgPool) {
    let relay = relay_without_dispatcher(db).await;
    let dispatcher = OwnDispatcher::start(&relay);
    store::sla_config::set_pool_head(&relay.db, "pph-ecg", Some("pph-ecg-head"))
        .await
        .unwrap();
    let pager = Pager::connect(&relay).await;
    let id = publish_ecg(&relay, "SLA-RESTART", v1::Priority::Stat).await;
    let marker = publish_ecg(&relay, "SLA-RESTART-MARKER", v1::Priority::Routine).await;

    pass_at_risk_mark(&relay.db, id).await;
    wait_for_events(&relay.db, id, AtRisk, 1).await;
    pass_due_time(&relay.db, id).await;
    wait_for_row(&relay.db, id, "step 1", |row| row.escalation_level == 1).await;

    dispatcher.stop().await;
    let dispatcher = OwnDispatcher::start(&relay);
    two_clock_ticks(&relay.db, marker).await;
    assert_eq!(
        events(&relay.db, id, AtRisk).await.len(),
        1,
        "no second warning"
    );
    let row = clock_row(&relay.db, id).await;
    assert_eq!(
        (row.escalation_level, row.pool.as_deref()),
        (1, Some("pph-ecg"))
    );

    // The ladder goes on where it stopped.
    move_due_back(&relay.db, id, 601.0).await;
    let page = pager.next().await;
    assert_eq!(
        (page.routing_key.as_str(), page.escalated.level),
        ("page.pph-ecg-head", 2)
    );
    wait_for_events(&relay.db, id, Escalated, 3).await;
    assert_eq!(
        events(&relay.db, id, Escalated).await.len(),
        3,
        "breach + 2 steps"
    );
    pager.close().await;
    dispatcher.stop().await;
    relay.stop().await;
}
