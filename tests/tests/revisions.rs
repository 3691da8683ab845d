//! Revisions of a request's story: a returned request resubmitted and linked, a report amended
//! or given an addendum (each version delivered and kept), and second reads of signed reports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::RequestState::{
    self, Amended, Claimed, Delivered, Received, Resubmitted, Returned, Routed, SecondReadRecorded,
    SecondReadRequested,
};
use sqlx::PgPool;
use store::registry::ReviewerEntry;
use tests::fixtures::ecg_request;
use tests::revisions::{ConfiguredDesk, events_in_state, revision_body, wait_for_events};
use tests::{HOSPITAL_A, TestRelay, test_registry, tokens};
use uuid::Uuid;

/// Publishes an ECG, has the reviewer with `token` claim it and return it as unreadable.
async fn returned_request(relay: &TestRelay, request_id: &str, record: &str) -> Uuid {
    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            request_id,
            v1::Priority::Routine,
            record,
        ))
        .await;
    let id = relay.request_uuid(HOSPITAL_A, request_id).await;
    let claimed = relay.claim_next(tokens::ECG).await;
    assert_eq!(claimed["request_id"], request_id);
    let (status, body) = relay
        .return_request(tokens::ECG, &id.to_string(), "unreadable_signal")
        .await;
    assert_eq!(status, 200, "{body}");
    id
}

/// Publishes an ECG, has the reviewer with `token` claim it and sign its final report on `desk`.
async fn reported_request(
    relay: &TestRelay,
    desk: &ConfiguredDesk,
    request_id: &str,
    record: &str,
    token: &str,
    critical: bool,
) -> Uuid {
    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            request_id,
            v1::Priority::Asap,
            record,
        ))
        .await;
    let id = relay.request_uuid(HOSPITAL_A, request_id).await;
    let claimed = relay.claim_next(token).await;
    assert_eq!(claimed["request_id"], request_id);
    assert_eq!(desk.report(token, &id.to_string(), critical).await, 201);
    id
}

/// The next rejection notice of hospital A, skipping its other notices (returns, results).
async fn next_rejection(relay: &TestRelay) -> v1::RequestRejected {
    loop {
        if let Some(v1::origin_notice::Notice::Rejected(rejected)) =
            relay.broker.next_notice(HOSPITAL_A).await.notice
        {
            return rejected;
        }
    }
}

/// The next result notice of hospital A, skipping its other notices.
async fn next_result(relay: &TestRelay) -> v1::ReviewResult {
    loop {
        if let Some(v1::origin_notice::Notice::Result(result)) =
            relay.broker.next_notice(HOSPITAL_A).await.notice
        {
            return result;
        }
    }
}

fn resubmission(request_id: &str, record: &str, of: &str) -> v1::ReviewRequest {
    let mut request = ecg_request(HOSPITAL_A, request_id, v1::Priority::Routine, record);
    request.resubmission_of = of.into();
    request
}

/// Asserts that the next dead letter and the next rejection notice refuse `request_id` as an
/// invalid `resubmission_of`, with a detail containing `why`.
async fn assert_refused(relay: &TestRelay, request_id: &str, why: &str) {
    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("invalid_field"), "{dead:?}");
    let detail = dead.detail.unwrap_or_default();
    assert!(
        detail.starts_with("resubmission_of: ") && detail.contains(why),
        "{detail}"
    );
    let rejected = next_rejection(relay).await;
    assert_eq!(rejected.request_id, request_id);
    assert_eq!(rejected.reason, v1::RejectionReason::InvalidField as i32);
    assert_eq!(rejected.detail, detail);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_resubmission_of_a_returned_request_is_linked_and_the_original_records_it(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let original = returned_request(&relay, "ECG-NOISY", "JS20000").await;

    relay
        .broker
        .publish_request(&resubmission("ECG-NOISY-AGAIN", "E07500", "ECG-NOISY"))
        .await;
    let again = relay.request_uuid(HOSPITAL_A, "ECG-NOISY-AGAIN").await;
    let linked = sqlx::query_scalar!(
        "select resubmission_of from review_requests where id = $1",
        again
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(linked, Some(original));

    relay
        .wait_for_history(
            original,
            &[Received, Routed, Claimed, Returned, Resubmitted],
        )
        .await;
    let resubmitted = events_in_state(&relay, original, Resubmitted).await;
    assert_eq!(
        resubmitted,
        vec![(
            format!("hospital:{HOSPITAL_A}"),
            format!("resubmitted as ECG-NOISY-AGAIN ({again})")
        )]
    );
    relay.wait_for_history(again, &[Received, Routed]).await;
    for state in [Received, Routed] {
        let (_, reason) = events_in_state(&relay, again, state).await.remove(0);
        assert!(
            reason.ends_with(&format!("; resubmission of ECG-NOISY ({original})")),
            "{state}: {reason}"
        );
    }
    let claimed = relay.claim_next(tokens::ECG).await;
    assert_eq!(claimed["request_id"], "ECG-NOISY-AGAIN");
    assert_eq!(claimed["resubmission_of"], "ECG-NOISY");
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_resubmission_of_an_unknown_a_waiting_or_an_already_resubmitted_request_is_refused(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;

    relay
        .broker
        .publish_request(&resubmission("RESUB-UNKNOWN", "E07500", "NEVER-SENT"))
        .await;
    assert_refused(
        &relay,
        "RESUB-UNKNOWN",
        &format!("NEVER-SENT names no request of {HOSPITAL_A}"),
    )
    .await;

    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            "ECG-WAITING",
            v1::Priority::Routine,
            "E07506",
        ))
        .await;
    relay.request_uuid(HOSPITAL_A, "ECG-WAITING").await;
    relay
        .broker
        .publish_request(&resubmission("RESUB-WAITING", "E07500", "ECG-WAITING"))
        .await;
    assert_refused(
        &relay,
        "RESUB-WAITING",
        "ECG-WAITING is routed, not returned",
    )
    .await;
    relay.claim_next(tokens::ECG_SECOND).await;

    let original = returned_request(&relay, "ECG-RETURNED", "JS20000").await;
    let first = resubmission("RESUB-FIRST", "E07500", "ECG-RETURNED");
    relay.broker.publish_request(&first).await;
    let first_id = relay.request_uuid(HOSPITAL_A, "RESUB-FIRST").await;
    relay
        .broker
        .publish_request(&resubmission("RESUB-SECOND", "HR06001", "ECG-RETURNED"))
        .await;
    assert_refused(
        &relay,
        "RESUB-SECOND",
        "ECG-RETURNED was already resubmitted as RESUB-FIRST",
    )
    .await;

    // The origin sending the accepted resubmission again is a duplicate, not a refusal.
    relay.broker.publish_request(&first).await;
    tests::wait_until(
        "the copy of RESUB-FIRST to count as a duplicate",
        || async {
            sqlx::query_scalar!(
                "select duplicates_received from review_requests where id = $1",
                first_id
            )
            .fetch_one(&relay.db)
            .await
            .unwrap()
                == 1
        },
    )
    .await;
    let refused = sqlx::query_scalar!(
        r#"select count(*) as "n!" from rejected_messages where reason = 'invalid_field'"#
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(refused, 3);
    let accepted = sqlx::query_scalar!(
        r#"select array_agg(request_id order by request_id) as "ids!" from review_requests
           where request_id like 'RESUB-%'"#
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(accepted, vec!["RESUB-FIRST".to_owned()]);
    assert_eq!(
        events_in_state(&relay, original, Resubmitted).await.len(),
        1
    );
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_amendment_and_an_addendum_reach_the_origin_as_new_versions_each_recorded_delivered(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    let desk = ConfiguredDesk::start(&relay, 0.0, false).await;
    let id = reported_request(&relay, &desk, "ECG-AMEND", "HR06002", tokens::ECG, false).await;
    let request = id.to_string();

    let (status, body) = desk
        .revise(
            tokens::ECG,
            &request,
            revision_body("amended", "T-wave inversion missed in the first read"),
        )
        .await;
    assert_eq!((status, body["version"].as_i64()), (201, Some(2)), "{body}");
    // A colleague of the pool that reported it may add to the report.
    let (status, body) = desk
        .revise(
            tokens::ECG_SECOND,
            &request,
            revision_body("addendum", "compared with the ECG of 2025-03"),
        )
        .await;
    assert_eq!((status, body["version"].as_i64()), (201, Some(3)), "{body}");
    let (status, body) = desk
        .revise(
            tokens::ECG,
            &request,
            serde_json::json!({ "kind": "amended", "findings": "x", "conclusion": "y" }),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("invalid")),
        "{body}"
    );

    let expected = [
        (1, v1::ReportStatus::Final, 0, "", "xy-ecg-liu"),
        (
            2,
            v1::ReportStatus::Amended,
            1,
            "T-wave inversion missed in the first read",
            "xy-ecg-liu",
        ),
        (
            3,
            v1::ReportStatus::Addendum,
            2,
            "compared with the ECG of 2025-03",
            "xy-ecg-tan",
        ),
    ];
    for (version, status, supersedes, reason, reviewer) in expected {
        let result = next_result(&relay).await;
        assert_eq!(
            (
                result.report_version,
                result.status,
                result.supersedes_version,
                result.revision_reason.as_str(),
                result.reviewer_id.as_str(),
                result.request_id.as_str(),
            ),
            (
                version,
                status as i32,
                supersedes,
                reason,
                reviewer,
                "ECG-AMEND"
            )
        );
    }

    tests::wait_until("every version to be recorded as delivered", || async {
        sqlx::query_scalar!(
            r#"select count(*) as "n!" from review_results where request_uuid = $1 and delivered_at is not null"#,
            id
        )
        .fetch_one(&relay.db)
        .await
        .unwrap()
            == 3
    })
    .await;
    let kept = sqlx::query!(
        "select version, status, supersedes_version, revision_reason from review_results
         where request_uuid = $1 order by version",
        id
    )
    .fetch_all(&relay.db)
    .await
    .unwrap();
    let kept: Vec<_> = kept
        .into_iter()
        .map(|row| {
            (
                row.version,
                row.status,
                row.supersedes_version,
                row.revision_reason.is_some(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        vec![
            (1, "final".to_owned(), None, false),
            (2, "amended".to_owned(), Some(1), true),
            (3, "addendum".to_owned(), Some(2), true),
        ]
    );
    let amended = wait_for_events(&relay, id, Amended, 2).await;
    assert_eq!(
        amended,
        vec![
            (
                "reviewer:xy-ecg-liu".to_owned(),
                "report version 2 (amended) revises version 1".to_owned()
            ),
            (
                "reviewer:xy-ecg-tan".to_owned(),
                "report version 3 (addendum) revises version 2".to_owned()
            ),
        ]
    );
    assert_eq!(wait_for_events(&relay, id, Delivered, 3).await.len(), 3);
    desk.stop().await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_returned_or_unreported_request_has_no_report_to_amend_and_another_pools_is_not_found(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    let desk = ConfiguredDesk::start(&relay, 0.0, false).await;
    let amend = revision_body("amended", "second look");

    let returned = returned_request(&relay, "ECG-RET-AMEND", "JS20000").await;
    let (status, body) = desk
        .revise(tokens::ECG, &returned.to_string(), amend.clone())
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["detail"],
        "the request was returned; there is no report to amend"
    );

    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            "ECG-UNREPORTED",
            v1::Priority::Routine,
            "E07506",
        ))
        .await;
    let unreported = relay.request_uuid(HOSPITAL_A, "ECG-UNREPORTED").await;
    relay.claim_next(tokens::ECG).await;
    let (status, body) = desk
        .revise(tokens::ECG, &unreported.to_string(), amend.clone())
        .await;
    assert_eq!(status, 409, "{body}");

    let reported = reported_request(
        &relay,
        &desk,
        "ECG-OTHER-POOL",
        "E07500",
        tokens::ECG_SECOND,
        false,
    )
    .await;
    let (status, body) = desk
        .revise(tokens::IMAGING, &reported.to_string(), amend.clone())
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, _) = desk
        .revise(tokens::ECG, &Uuid::new_v4().to_string(), amend.clone())
        .await;
    assert_eq!(status, 404);

    let revisions = sqlx::query_scalar!(
        r#"select count(*) as "n!" from review_results where status <> 'final'"#
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(revisions, 0, "no refused revision was recorded");
    desk.stop().await;
    relay.stop().await;
}

/// The test registry with a third ECG reviewer in Xiangya's pool, to take over a second read.
const ECG_THIRD: &str = "test-token-xy-ecg-zhou";

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn with_a_share_of_one_a_colleague_not_the_first_reader_second_reads_and_records_discordance(
    db: PgPool,
) {
    let mut registry = test_registry(HOSPITAL_A);
    registry.reviewers.push(ReviewerEntry {
        id: "xy-ecg-zhou".into(),
        pool: "xy-ecg".into(),
        name: "xy-ecg-zhou".into(),
        token: ECG_THIRD.into(),
    });
    let relay = TestRelay::start_with(db, &registry).await;
    let desk = ConfiguredDesk::start(&relay, 1.0, false).await;
    let id = reported_request(&relay, &desk, "ECG-SECOND", "HR06001", tokens::ECG, false).await;

    let opened = sqlx::query!(
        "select state, first_reader, selected_because, report_version from second_reads where request_uuid = $1",
        id
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(
        (
            opened.state.as_str(),
            opened.first_reader.as_str(),
            opened.selected_because.as_str(),
            opened.report_version
        ),
        ("pending", "xy-ecg-liu", "sampled", 1)
    );
    wait_for_events(&relay, id, SecondReadRequested, 1).await;

    assert_eq!(
        desk.next_second_read(tokens::ECG).await.0,
        204,
        "never the first reader"
    );
    assert_eq!(
        desk.next_second_read(tokens::IMAGING).await.0,
        204,
        "never another pool"
    );
    let (status, read) = desk.next_second_read(tokens::ECG_SECOND).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["request_uuid"], id.to_string());
    assert_eq!(read["request"]["request_id"], "ECG-SECOND");
    assert!(
        read["request"]["study"]["ecg"]["leads"].is_array(),
        "{read}"
    );
    assert_eq!(read["first_report"]["reviewer_id"], "xy-ecg-liu");
    assert_eq!(read["first_report"]["version"], 1);
    assert_eq!(read["first_report"]["conclusion"], "normal ECG");
    assert!(read["lease_expires_at"].is_string());
    let second_read = read["second_read_id"].as_i64().unwrap();
    assert_eq!(
        desk.next_second_read(ECG_THIRD).await.0,
        204,
        "held under a lease"
    );
    let (status, _) = desk.verdict(tokens::ECG, second_read, "agree", "").await;
    assert_eq!(status, 409, "only the holder records the verdict");

    // Tan walks away: the lease runs out and Zhou takes the read over.
    sqlx::query!(
        "update second_reads set lease_expires_at = now() - interval '1 second' where id = $1",
        second_read
    )
    .execute(&relay.db)
    .await
    .unwrap();
    let (status, read) = desk.next_second_read(ECG_THIRD).await;
    assert_eq!(
        (status, read["second_read_id"].as_i64()),
        (200, Some(second_read))
    );
    let (status, _) = desk
        .verdict(tokens::ECG_SECOND, second_read, "agree", "")
        .await;
    assert_eq!(status, 409, "a lease taken over is no longer held");

    let (status, body) = desk
        .verdict(
            ECG_THIRD,
            second_read,
            "discordant",
            "inferior Q waves not mentioned",
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = desk.verdict(ECG_THIRD, second_read, "agree", "").await;
    assert_eq!(status, 409, "a verdict is recorded once");
    let recorded = sqlx::query!(
        "select state, verdict, second_reader, comment from second_reads where id = $1",
        second_read
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(
        (
            recorded.state.as_str(),
            recorded.verdict.as_deref(),
            recorded.second_reader.as_deref(),
            recorded.comment.as_deref()
        ),
        (
            "recorded",
            Some("discordant"),
            Some("xy-ecg-zhou"),
            Some("inferior Q waves not mentioned")
        )
    );
    let events = wait_for_events(&relay, id, SecondReadRecorded, 1).await;
    assert_eq!(
        events,
        vec![(
            "reviewer:xy-ecg-zhou".to_owned(),
            "discordant: second read of report version 1".to_owned()
        )]
    );
    let listed = store::second_reads::list(&relay.db, true, 10)
        .await
        .unwrap();
    let table = relayctl::second_reads::render(&listed);
    assert!(
        table.contains("ECG-SECOND") && table.contains("1 second reads, 1 discordant"),
        "{table}"
    );
    desk.stop().await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn with_a_share_of_zero_only_critical_reports_get_a_second_read(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let desk = ConfiguredDesk::start(&relay, 0.0, true).await;
    let routine =
        reported_request(&relay, &desk, "ECG-ROUTINE", "E07500", tokens::ECG, false).await;
    let stemi = reported_request(&relay, &desk, "ECG-STEMI", "HR06002", tokens::ECG, true).await;

    let opened =
        sqlx::query!("select request_uuid, selected_because from second_reads order by id")
            .fetch_all(&relay.db)
            .await
            .unwrap();
    let opened: Vec<_> = opened
        .into_iter()
        .map(|row| (row.request_uuid, row.selected_because))
        .collect();
    assert_eq!(opened, vec![(stemi, "critical".to_owned())]);
    let requested = wait_for_events(&relay, stemi, SecondReadRequested, 1).await;
    assert!(requested[0].1.ends_with("(critical)"), "{requested:?}");
    // Both reports' events are recorded; the routine one has no second read.
    wait_for_events(&relay, routine, RequestState::Reported, 1).await;
    assert!(
        events_in_state(&relay, routine, SecondReadRequested)
            .await
            .is_empty()
    );

    let (status, read) = desk.next_second_read(tokens::ECG_SECOND).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["request_uuid"], stemi.to_string());
    assert_eq!(read["first_report"]["critical"], true);
    assert_eq!(desk.next_second_read(tokens::ECG_SECOND).await.0, 204);
    desk.stop().await;
    relay.stop().await;
}
