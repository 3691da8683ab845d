//! Routing truth: the most specific pairing wins, operators' edits take effect at once and are
//! audited, refused edits leave nothing, load-aware overflow to the ordered backups, and aging in
//! the desk's claim order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::{HospitalCode, Priority, StudyKind};
use sqlx::PgPool;
use store::registry::RouteRule;
use tests::routing::{
    ecg_from, make_wait, pool_of, registry_changes, relayctl, routed_reason, routing_registry,
    wait_for_lane_depth,
};
use tests::{HOSPITAL_A, HOSPITAL_C, TestRelay, tokens};

const OPERATOR: [&str; 2] = ["--operator", "ops-li"];

/// Sets a pairing through the operator's command line, which must accept it.
async fn set_pairing(db: &PgPool, args: &[&str]) {
    let mut line = vec!["pairing", "set"];
    line.extend_from_slice(args);
    line.extend_from_slice(&OPERATOR);
    relayctl(db, &line).await.unwrap();
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_most_specific_pairing_wins_department_and_subspecialty_first(db: PgPool) {
    store::registry::load(&db, &routing_registry())
        .await
        .unwrap();
    // Hospital A's ECGs: hospital-wide xy-ecg (from the test registry), plus three narrower ones.
    let a = ["--origin", HOSPITAL_A, "--kind", "ecg"];
    let narrower: [&[&str]; 3] = [
        &["--department", "cardiology", "--pool", "xy2-ecg"],
        &["--subspecialty", "Pediatric", "--pool", "xy3-ecg"],
        &[
            "--department",
            "cardiology",
            "--subspecialty",
            "pediatric",
            "--pool",
            "pph-ecg",
            "--backup",
            "xy3-ecg",
            "--backup",
            "xy-ecg",
        ],
    ];
    for args in narrower {
        set_pairing(&db, &[&a[..], args].concat()).await;
    }
    let route = |department: &'static str, subspecialty: Option<&'static str>, origin| {
        let db = db.clone();
        async move {
            let origin = HospitalCode::parse(origin).unwrap();
            store::registry::route(&db, &origin, department, subspecialty, StudyKind::Ecg)
                .await
                .unwrap()
                .map(|route| {
                    let backups: Vec<String> =
                        route.backups.iter().map(ToString::to_string).collect();
                    (route.pool.to_string(), route.rule, backups)
                })
                .unwrap()
        }
    };
    let cases = [
        (
            "cardiology",
            Some("pediatric"),
            HOSPITAL_A,
            "pph-ecg",
            RouteRule::DepartmentSubspecialtyPairing,
        ),
        (
            "cardiology",
            None,
            HOSPITAL_A,
            "xy2-ecg",
            RouteRule::DepartmentPairing,
        ),
        (
            "cardiology",
            Some("adult"),
            HOSPITAL_A,
            "xy2-ecg",
            RouteRule::DepartmentPairing,
        ),
        (
            "emergency",
            Some("PEDIATRIC"),
            HOSPITAL_A,
            "xy3-ecg",
            RouteRule::SubspecialtyPairing,
        ),
        (
            "emergency",
            None,
            HOSPITAL_A,
            "xy-ecg",
            RouteRule::HospitalPairing,
        ),
        (
            "emergency",
            Some("pediatric"),
            HOSPITAL_C,
            "pph-ecg",
            RouteRule::KindBackup,
        ),
    ];
    for (department, subspecialty, origin, pool, rule) in cases {
        let (found_pool, found_rule, _) = route(department, subspecialty, origin).await;
        assert_eq!(
            (found_pool.as_str(), found_rule),
            (pool, rule),
            "{origin} {department} {subspecialty:?}"
        );
    }
    let (_, _, backups) = route("cardiology", Some("pediatric"), HOSPITAL_A).await;
    assert_eq!(
        backups,
        ["xy3-ecg", "xy-ecg"],
        "backups in the operator's order"
    );
    let (_, _, backups) = route("emergency", None, HOSPITAL_C).await;
    assert!(backups.is_empty(), "the province-wide pool has no backups");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_pairing_edit_applies_to_the_next_request_without_a_restart_and_is_audited(db: PgPool) {
    let relay = TestRelay::start_with(db, &routing_registry()).await;
    let db = relay.db.clone();
    let load = store::registry_edits::history(&db, 10).await.unwrap();
    assert_eq!(
        (
            load.len(),
            load[0].operator.as_str(),
            load[0].action.as_str()
        ),
        (1, "registry-load", "registry_load"),
        "the harness's registry load is audited"
    );

    let request = ecg_from(
        HOSPITAL_A,
        "ECG-BEFORE",
        v1::Priority::Routine,
        "cardiology",
        "",
    );
    relay.broker.publish_request(&request).await;
    let before = relay.request_uuid(HOSPITAL_A, "ECG-BEFORE").await;
    assert_eq!(pool_of(&db, before).await, "xy-ecg");

    let printed = relayctl(
        &db,
        &[
            "pairing",
            "set",
            "--origin",
            HOSPITAL_A,
            "--kind",
            "ecg",
            "--department",
            "cardiology",
            "--subspecialty",
            "electrophysiology",
            "--pool",
            "xy2-ecg",
            "--backup",
            "pph-ecg",
            "--operator",
            "ops-li",
            "--note",
            "EP readers moved to Second Xiangya",
        ],
    )
    .await
    .unwrap();
    assert!(printed.contains("xy2-ecg"), "{printed}");

    let request = ecg_from(
        HOSPITAL_A,
        "ECG-AFTER",
        v1::Priority::Routine,
        "cardiology",
        "electrophysiology",
    );
    relay.broker.publish_request(&request).await;
    let after = relay.request_uuid(HOSPITAL_A, "ECG-AFTER").await;
    assert_eq!(
        pool_of(&db, after).await,
        "xy2-ecg",
        "the edit applies at once"
    );
    let reason = routed_reason(&db, after).await;
    assert!(
        reason.contains("department and subspecialty pairing"),
        "{reason}"
    );
    // The new pool's lanes were declared on the way: its reviewer gets the request.
    let claimed = relay.claim_next(tests::routing::tokens::XY2_ECG).await;
    assert_eq!(
        claimed["request_uuid"].as_str(),
        Some(after.to_string().as_str())
    );

    // Replacing the hospital-wide pairing is audited with before and after.
    relayctl(
        &db,
        &[
            "pairing",
            "set",
            "--origin",
            HOSPITAL_A,
            "--kind",
            "ecg",
            "--pool",
            "pph-ecg",
            "--backup",
            "xy3-ecg",
            "--backup",
            "xy-ecg",
            "--operator",
            "ops-wang",
        ],
    )
    .await
    .unwrap();
    let history = store::registry_edits::history(&db, 10).await.unwrap();
    let [_, created, replaced] = &history[..] else {
        panic!("{history:?}")
    };
    assert_eq!(
        (
            created.operator.as_str(),
            created.action.as_str(),
            created.note.as_str()
        ),
        (
            "ops-li",
            "pairing_set",
            "EP readers moved to Second Xiangya"
        )
    );
    assert_eq!(created.before, None, "a new pairing had no before");
    assert_eq!(created.subject["subspecialty"], "electrophysiology");
    assert_eq!(replaced.operator, "ops-wang");
    assert_eq!(replaced.before.as_ref().unwrap()["pool"], "xy-ecg");
    let after_state = replaced.after.as_ref().unwrap();
    assert_eq!(after_state["pool"], "pph-ecg");
    assert_eq!(
        after_state["backups"],
        serde_json::json!(["xy3-ecg", "xy-ecg"])
    );
    assert!(replaced.changed_at >= created.changed_at);

    let request = ecg_from(
        HOSPITAL_A,
        "ECG-WIDE",
        v1::Priority::Routine,
        "emergency",
        "",
    );
    relay.broker.publish_request(&request).await;
    let wide = relay.request_uuid(HOSPITAL_A, "ECG-WIDE").await;
    assert_eq!(pool_of(&db, wide).await, "pph-ecg");

    // Removing is audited too, and the audit cannot be rewritten.
    relayctl(
        &db,
        &[
            "pairing",
            "remove",
            "--origin",
            HOSPITAL_A,
            "--kind",
            "ecg",
            "--department",
            "cardiology",
            "--subspecialty",
            "electrophysiology",
            "--operator",
            "ops-li",
        ],
    )
    .await
    .unwrap();
    let printed = relayctl(&db, &["pairing", "history"]).await.unwrap();
    assert!(printed.contains("ops-wang pairing_set"), "{printed}");
    assert!(printed.contains("ops-li pairing_remove"), "{printed}");
    let rewrite = sqlx::query!("update registry_changes set operator = 'nobody'")
        .execute(&db)
        .await;
    assert!(rewrite.is_err(), "registry_changes is append-only");
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn refused_edits_say_why_and_leave_nothing_behind(db: PgPool) {
    store::registry::load(&db, &routing_registry())
        .await
        .unwrap();
    let pairings = store::registry_edits::list_pairings(&db).await.unwrap();
    let changes = registry_changes(&db).await;
    let a = HOSPITAL_A;
    let refused: [(&[&str], &str); 9] = [
        (
            &[
                "pairing",
                "set",
                "--origin",
                "HN-NOWHERE",
                "--kind",
                "ecg",
                "--pool",
                "xy-ecg",
                "--operator",
                "x",
            ],
            "unknown hospital HN-NOWHERE",
        ),
        (
            &[
                "pairing",
                "set",
                "--origin",
                a,
                "--kind",
                "ecg",
                "--pool",
                "no-such-pool",
                "--operator",
                "x",
            ],
            "unknown reviewer pool no-such-pool",
        ),
        (
            &[
                "pairing",
                "set",
                "--origin",
                a,
                "--kind",
                "ecg",
                "--pool",
                "xy-ecg",
                "--backup",
                "xy-imaging",
                "--operator",
                "x",
            ],
            "pool xy-imaging reads imaging, not ecg",
        ),
        (
            &[
                "pairing",
                "set",
                "--origin",
                a,
                "--kind",
                "ultrasound",
                "--pool",
                "xy-ecg",
                "--operator",
                "x",
            ],
            "unknown kind ultrasound",
        ),
        (
            &[
                "pairing",
                "set",
                "--origin",
                a,
                "--kind",
                "ecg",
                "--pool",
                "xy-ecg",
                "--backup",
                "xy-ecg",
                "--operator",
                "x",
            ],
            "named more than once",
        ),
        (
            &[
                "pairing",
                "set",
                "--origin",
                a,
                "--kind",
                "ecg",
                "--pool",
                "pph-ecg",
                "--operator",
                " ",
            ],
            "operator must be named",
        ),
        (
            &[
                "pairing",
                "remove",
                "--origin",
                a,
                "--kind",
                "ecg",
                "--department",
                "nowhere",
                "--operator",
                "x",
            ],
            "no pairing",
        ),
        (
            &[
                "lanes",
                "set",
                "--priority",
                "stat",
                "--promote-after",
                "5m",
                "--operator",
                "x",
            ],
            "cannot be promoted",
        ),
        (
            &[
                "lanes",
                "set",
                "--priority",
                "sometime",
                "--overflow-after",
                "5m",
                "--operator",
                "x",
            ],
            "unknown priority",
        ),
    ];
    for (args, why) in refused {
        let error = relayctl(&db, args).await.expect_err(&args.join(" "));
        assert!(format!("{error:#}").contains(why), "{args:?}: {error:#}");
    }
    assert!(
        relayctl(
            &db,
            &[
                "lanes",
                "set",
                "--priority",
                "stat",
                "--overflow-after",
                "soon",
                "--operator",
                "x"
            ]
        )
        .await
        .is_err(),
        "an unreadable duration is refused"
    );
    assert_eq!(
        store::registry_edits::list_pairings(&db).await.unwrap(),
        pairings
    );
    assert_eq!(
        registry_changes(&db).await,
        changes,
        "no audit row for a refused edit"
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn new_requests_overflow_to_the_first_backup_not_itself_behind(db: PgPool) {
    let relay = TestRelay::start_with(db, &routing_registry()).await;
    let db = relay.db.clone();
    set_pairing(
        &db,
        &[
            "--origin", HOSPITAL_A, "--kind", "ecg", "--pool", "xy-ecg", "--backup", "xy2-ecg",
            "--backup", "xy3-ecg",
        ],
    )
    .await;
    let publish = |id: &'static str| {
        let relay = &relay;
        async move {
            let request = ecg_from(HOSPITAL_A, id, v1::Priority::Stat, "emergency", "");
            relay.broker.publish_request(&request).await;
            relay.request_uuid(HOSPITAL_A, id).await
        }
    };
    // Stat overflows after 5 min by default. The primary's oldest waiting STAT: 4 min.
    let oldest = publish("ECG-OLDEST").await;
    make_wait(&db, oldest, 4).await;
    let under = publish("ECG-UNDER").await;
    assert_eq!(
        pool_of(&db, under).await,
        "xy-ecg",
        "under the age: no overflow"
    );
    assert!(!routed_reason(&db, under).await.contains("overflow"));

    // Now 6 min: over the age, so the next one goes to the first backup.
    make_wait(&db, oldest, 6).await;
    let first = publish("ECG-OVER-1").await;
    assert_eq!(pool_of(&db, first).await, "xy2-ecg");
    let reason = routed_reason(&db, first).await;
    assert!(
        reason.contains("overflowed from pool xy-ecg") && reason.contains("has waited 6 min"),
        "{reason}"
    );

    // The first backup falls behind too: the second backup takes the next one.
    make_wait(&db, first, 7).await;
    let second = publish("ECG-OVER-2").await;
    assert_eq!(pool_of(&db, second).await, "xy3-ecg");

    // Every backup behind: the request stays with the primary, and the event says why.
    make_wait(&db, second, 8).await;
    let kept = publish("ECG-ALL-BEHIND").await;
    assert_eq!(pool_of(&db, kept).await, "xy-ecg");
    let reason = routed_reason(&db, kept).await;
    assert!(
        reason.contains("every backup pool is over the limit too"),
        "{reason}"
    );

    // The operator relaxes the stat lane to 10 min: no overflow any more, without a restart.
    relayctl(
        &db,
        &[
            "lanes",
            "set",
            "--priority",
            "stat",
            "--overflow-after",
            "10m",
            "--operator",
            "ops-li",
        ],
    )
    .await
    .unwrap();
    let relaxed = publish("ECG-RELAXED").await;
    assert_eq!(pool_of(&db, relaxed).await, "xy-ecg");
    assert!(!routed_reason(&db, relaxed).await.contains("overflow"));
    let lanes = relayctl(&db, &["lanes", "list"]).await.unwrap();
    assert!(lanes.contains("10m"), "{lanes}");

    // Escalation follows the same ladder: the pool after the one a request is in.
    let next = |request| {
        let db = db.clone();
        async move {
            store::registry::next_pool_of_request(&db, request)
                .await
                .unwrap()
                .map(|pool| pool.to_string())
        }
    };
    assert_eq!(next(oldest).await.as_deref(), Some("xy2-ecg"));
    assert_eq!(next(first).await.as_deref(), Some("xy3-ecg"));
    assert_eq!(
        next(second).await.as_deref(),
        Some("pph-ecg"),
        "after the pairing's backups, the province-wide pool"
    );

    // What overflowed is claimable in the backup pool's lane.
    let claimed = relay.claim_next(tests::routing::tokens::XY2_ECG).await;
    assert_eq!(
        claimed["request_uuid"].as_str(),
        Some(first.to_string().as_str())
    );
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_aged_routine_request_goes_before_less_urgent_work_past_its_promotion_age_never_before_stat(
    db: PgPool,
) {
    let relay = TestRelay::start_with(db, &routing_registry()).await;
    let db = relay.db.clone();
    let publish = |id: &'static str, priority| {
        let relay = &relay;
        async move {
            let request = ecg_from(HOSPITAL_A, id, priority, "cardiology", "");
            relay.broker.publish_request(&request).await;
            relay.request_uuid(HOSPITAL_A, id).await
        }
    };
    let routine = publish("ECG-ROUTINE", v1::Priority::Routine).await;
    let stat = publish("ECG-STAT-1", v1::Priority::Stat).await;
    wait_for_lane_depth(&relay, "xy-ecg", Priority::Routine, 1).await;
    wait_for_lane_depth(&relay, "xy-ecg", Priority::Stat, 1).await;

    // 2 h 30 min: past routine's promotion age (2 h) it counts as urgent, still below STAT.
    make_wait(&db, routine, 150).await;
    let first = relay.claim_next(tokens::ECG).await;
    assert_eq!(
        first["request_uuid"].as_str(),
        Some(stat.to_string().as_str())
    );

    // 4 h: past 2 h + 1 h + 20 min it counts as STAT: it goes before an ASAP request that
    // waits, but a STAT request, even a fresh one, still comes first.
    let fresh = publish("ECG-STAT-2", v1::Priority::Stat).await;
    let asap = publish("ECG-ASAP", v1::Priority::Asap).await;
    wait_for_lane_depth(&relay, "xy-ecg", Priority::Stat, 1).await;
    wait_for_lane_depth(&relay, "xy-ecg", Priority::Asap, 1).await;
    make_wait(&db, routine, 240).await;
    let order = [
        relay.claim_next(tokens::ECG_SECOND).await,
        relay.claim_next(tokens::ECG_SECOND).await,
        relay.claim_next(tokens::ECG_SECOND).await,
    ];
    let claimed: Vec<Option<&str>> = order.iter().map(|c| c["request_uuid"].as_str()).collect();
    let expected = [fresh, routine, asap].map(|id| id.to_string());
    assert_eq!(
        claimed,
        expected
            .iter()
            .map(|id| Some(id.as_str()))
            .collect::<Vec<_>>()
    );
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_default_registry_sends_shaoyang_neuro_imaging_to_xiangya_with_ordered_backups(
    db: PgPool,
) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry/hunan.toml");
    let registry = relayctl::read_registry(&path).unwrap();
    store::registry::load(&db, &registry).await.unwrap();
    let shaoyang = HospitalCode::parse("HN-SY-001").unwrap();
    let route = |subspecialty| {
        let (db, shaoyang) = (db.clone(), shaoyang.clone());
        async move {
            let route = store::registry::route(
                &db,
                &shaoyang,
                "neurology",
                subspecialty,
                StudyKind::Imaging,
            )
            .await
            .unwrap()
            .unwrap();
            let backups: Vec<String> = route.backups.iter().map(ToString::to_string).collect();
            (route.pool.to_string(), route.rule, backups)
        }
    };
    assert_eq!(
        route(Some("neuro")).await,
        (
            "xy-imaging".into(),
            RouteRule::SubspecialtyPairing,
            vec!["pph-imaging".into(), "hch-imaging".into()]
        )
    );
    assert_eq!(
        route(None).await,
        (
            "hch-imaging".into(),
            RouteRule::HospitalPairing,
            vec!["pph-imaging".into()]
        )
    );
}
