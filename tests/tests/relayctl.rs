//! The operator's tools: the default registry routes as Hunan's pairings say, and `status`
//! shows what waits where.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::{HospitalCode, StudyKind};
use sqlx::PgPool;
use store::registry::{RouteRule, route};
use tests::fixtures::ecg_request;
use tests::{HOSPITAL_A, TestRelay, tokens, wait_until};

fn hunan_registry() -> store::registry::RegistryFile {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry/hunan.toml");
    relayctl::read_registry(&path).expect("registry/hunan.toml parses")
}

async fn pool_for(
    db: &PgPool,
    origin: &str,
    department: &str,
    kind: StudyKind,
) -> Option<(String, RouteRule)> {
    let origin = HospitalCode::parse(origin).unwrap();
    route(db, &origin, department, None, kind)
        .await
        .unwrap()
        .map(|found| (found.pool.to_string(), found.rule))
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_default_registry_routes_each_county_to_its_paired_provincial_hospital(db: PgPool) {
    let summary = store::registry::load(&db, &hunan_registry()).await.unwrap();
    assert_eq!((summary.hospitals, summary.pairings), (12, 16));

    let cases = [
        (
            "HN-HH-001",
            "cardiology",
            StudyKind::Ecg,
            "xy-ecg",
            RouteRule::HospitalPairing,
        ),
        (
            "HN-HH-001",
            "emergency",
            StudyKind::Ecg,
            "xy-ecg",
            RouteRule::DepartmentPairing,
        ),
        (
            "HN-ZJJ-001",
            "neurology",
            StudyKind::Imaging,
            "xy2-imaging",
            RouteRule::HospitalPairing,
        ),
        (
            "GX-GL-001",
            "cardiology",
            StudyKind::Ecg,
            "xy2-ecg",
            RouteRule::HospitalPairing,
        ),
        (
            "HN-XX-001",
            "emergency",
            StudyKind::Ecg,
            "xy3-ecg",
            RouteRule::HospitalPairing,
        ),
        (
            "HN-SY-001",
            "surgery",
            StudyKind::Pathology,
            "hch-pathology",
            RouteRule::HospitalPairing,
        ),
        (
            "HN-YZ-001",
            "cardiology",
            StudyKind::Ecg,
            "nhu1-ecg",
            RouteRule::HospitalPairing,
        ),
        // Shaoyang has no ECG pairing: the alliance's ECG centre reads for it (心电一张网).
        (
            "HN-SY-001",
            "cardiology",
            StudyKind::Ecg,
            "pph-ecg",
            RouteRule::KindBackup,
        ),
        (
            "HN-XX-001",
            "surgery",
            StudyKind::Pathology,
            "pph-pathology",
            RouteRule::KindBackup,
        ),
    ];
    for (origin, department, kind, pool, rule) in cases {
        assert_eq!(
            pool_for(&db, origin, department, kind).await,
            Some((pool.to_owned(), rule)),
            "{origin} {department} {kind}"
        );
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn loading_the_registry_again_replaces_the_pairings_without_a_restart(db: PgPool) {
    let mut registry = hunan_registry();
    store::registry::load(&db, &registry).await.unwrap();
    for pairing in registry
        .pairings
        .iter_mut()
        .filter(|p| p.origin == "HN-YZ-001" && p.kind == "ecg")
    {
        pairing.pool = "pph-ecg".into();
    }
    store::registry::load(&db, &registry).await.unwrap();
    assert_eq!(
        pool_for(&db, "HN-YZ-001", "cardiology", StudyKind::Ecg).await,
        Some(("pph-ecg".to_owned(), RouteRule::HospitalPairing))
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn status_shows_per_lane_depth_oldest_and_sla_open_critical_values_and_dead_letters(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    for n in 0..3 {
        relay
            .broker
            .publish_request(&ecg_request(
                HOSPITAL_A,
                &format!("STATUS-{n}"),
                v1::Priority::Routine,
                "E07500",
            ))
            .await;
    }
    relay
        .broker
        .publish_bytes("HN-HH-001.ecg", b"garbage".to_vec(), Some("guest"))
        .await;
    wait_until("three requests routed and one refusal recorded", || async {
        let routed = sqlx::query_scalar!(
            r#"select count(*) as "n!" from review_requests where state = 'routed'"#
        )
        .fetch_one(&relay.db)
        .await
        .unwrap();
        let refused = sqlx::query_scalar!(r#"select count(*) as "n!" from rejected_messages"#)
            .fetch_one(&relay.db)
            .await
            .unwrap();
        routed == 3 && refused == 1
    })
    .await;
    let lane = relay.topology.names.review_lane(
        &domain::PoolCode::parse("xy-ecg").unwrap(),
        domain::Priority::Routine,
    );
    wait_until("the lane to hold the three requests", || async {
        relay.broker.depth(&lane).await == 3
    })
    .await;

    // One of the three is past its due time, one only past its at-risk mark.
    sqlx::query!(
        r#"update review_requests set due_at = now() - interval '1 minute'
           where id = (select id from review_requests order by received_at limit 1)"#
    )
    .execute(&relay.db)
    .await
    .unwrap();
    sqlx::query!(
        r#"update review_requests set at_risk_at = now() - interval '1 minute'
           where id = (select id from review_requests where due_at > now() order by received_at limit 1)"#
    )
    .execute(&relay.db)
    .await
    .unwrap();

    // An imaging request reported critical and not yet acknowledged: an open critical value.
    relay
        .broker
        .publish_request(&tests::fixtures::imaging_request(
            HOSPITAL_A,
            "STATUS-CT",
            v1::Priority::Stat,
        ))
        .await;
    relay.request_uuid(HOSPITAL_A, "STATUS-CT").await;
    let claimed = relay.claim_next(tokens::IMAGING).await;
    let (status, _) = relay
        .report(
            tokens::IMAGING,
            claimed["request_uuid"].as_str().unwrap(),
            tests::report_body(true),
        )
        .await;
    assert_eq!(status, 201);
    wait_until("the garbage stored as a dead letter", || async {
        sqlx::query_scalar!(r#"select count(*) as "n!" from dead_letters"#)
            .fetch_one(&relay.db)
            .await
            .unwrap()
            == 1
    })
    .await;

    let text = relayctl::status::render(&relay.broker_config, &relay.db)
        .await
        .unwrap();
    let line_with = |needle: &str| {
        text.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
            .to_owned()
    };
    // pool, priority, depth (broker), waiting, oldest, reading, at risk, overdue.
    let lane = line_with("xy-ecg           routine");
    let cells: Vec<&str> = lane.split_whitespace().collect();
    assert_eq!(cells[..4], ["xy-ecg", "routine", "3", "3"], "{lane}");
    assert!(cells[4].ends_with('s'), "the oldest waiting's age: {lane}");
    assert_eq!(cells[5..], ["0", "1", "1"], "{lane}");
    assert!(
        !text.contains("xy-imaging       stat"),
        "an empty lane is not listed:\n{text}"
    );
    let clock = line_with("open: ");
    assert!(
        clock.contains("1 at risk, 1 overdue, 0 escalated"),
        "{clock}"
    );
    let critical = line_with("acknowledged in the last 24 h");
    assert!(critical.contains("open 1 (oldest"), "{critical}");
    let per_origin = line_with(&format!("    {HOSPITAL_A}"));
    assert!(
        per_origin.contains("1 open,    0 past acknowledge-by"),
        "{per_origin}"
    );
    let queue = relay.topology.names.dead_letter_queue();
    assert!(
        line_with(&format!("waiting in {queue} for the recorder")).ends_with(": 0"),
        "{text}"
    );
    assert!(line_with("stored, not replayed").ends_with(": 1"), "{text}");
    let row = |first_word: &str| {
        text.lines()
            .find(|line| line.split_whitespace().next() == Some(first_word))
            .unwrap_or_else(|| panic!("no row {first_word:?} in:\n{text}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_eq!(row("routed"), "3", "requests by state");
    assert_eq!(
        row("malformed"),
        "1",
        "refusals by reason, and dead letters by reason"
    );
    assert_eq!(
        text.lines()
            .filter(|line| line.split_whitespace().next() == Some("malformed"))
            .count(),
        2,
        "{text}"
    );

    // Without the broker, the depths are unknown and the rest is still shown.
    let offline = relayctl::status::render_on(&relay.broker_config, None, &relay.db)
        .await
        .unwrap();
    assert!(offline.contains("broker unreachable"), "{offline}");
    assert!(offline.contains("waiting in"), "{offline}");
    let lane = offline
        .lines()
        .find(|line| line.contains("xy-ecg           routine"))
        .unwrap();
    assert_eq!(lane.split_whitespace().nth(2), Some("?"), "{lane}");
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn reconciliation_accounts_for_every_request_and_refusal_per_origin(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let requests: Vec<_> = (0..4)
        .map(|n| {
            ecg_request(
                HOSPITAL_A,
                &format!("BOOKS-{n}"),
                v1::Priority::Routine,
                "E07500",
            )
        })
        .collect();
    for request in &requests {
        relay.broker.publish_request(request).await;
    }
    // A HIS retry: the identical request again.
    relay.broker.publish_request(&requests[0]).await;
    relay
        .broker
        .publish_bytes("HN-HH-001.ecg", b"garbage".to_vec(), Some("guest"))
        .await;
    relay.request_uuid(HOSPITAL_A, "BOOKS-0").await;
    let claimed = relay.claim_next(tokens::ECG).await;
    let claimed_id = claimed["request_uuid"].as_str().unwrap().to_owned();
    let (status, _) = relay
        .report(tokens::ECG, &claimed_id, tests::report_body(false))
        .await;
    assert_eq!(status, 201);

    let expected = store::status::OriginBooks {
        origin: HOSPITAL_A.into(),
        accepted: 4,
        audited: 4,
        routed: 3,
        claimed: 0,
        reported: 0,
        delivered: 1,
        returned: 0,
        refused: 1,
        duplicates: 1,
        // The refused message, kept by the recorder and not replayed.
        dead_letters_open: 1,
    };
    let mut last = Vec::new();
    let settled = tokio::time::timeout(tests::DEADLINE, async {
        loop {
            last = store::status::reconciliation(&relay.db).await.unwrap();
            if last == vec![expected.clone()] {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "books stayed {last:?}");
    let table = relayctl::status::reconciliation(&relay.db).await.unwrap();
    let row = table
        .lines()
        .find(|line| line.starts_with(HOSPITAL_A))
        .expect("a row for hospital A");
    assert!(row.ends_with(" ok"), "{table}");
    relay.stop().await;
}
