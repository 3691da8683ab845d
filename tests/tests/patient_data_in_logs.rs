//! No patient data in any log line (issue 5; ARCHITECTURE.md, "No patient data in logs"): the
//! relay's services run as processes logging JSON at debug level, the simulator drives a small
//! province through them — requests published by a county HIS, read, reported, returned and
//! resubmitted, amended, second-read, critical values notified, reminded and acknowledged — and
//! then every log line of every service is searched for every patient field the run produced.
//!
//! The patient fields are read back from what the relay stored (the request bodies, reports,
//! returns, drafts, second-read comments, read-backs), so the search covers exactly what
//! travelled, and the county's own HIS register (names and national ids, which never travel).
//! The logs must name every request by its relay id, so the search cannot pass on empty logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use prost::Message as _;
use secrecy::SecretString;
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::time::Duration;
use tests::relay_processes::RelayProcesses;
use tests::service_process::Launcher;
use tests::{HOSPITAL_A, InProcess, TestRelay, test_registry, tokens};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// This crate's binary that runs one service as a process.
const RELAY_SERVICE: &str = env!("CARGO_BIN_EXE_relay-service");

/// New requests the county publishes (resubmissions come on top).
const REQUESTS: u64 = 40;

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_simulated_run_leaves_no_patient_data_in_any_log_line(db: PgPool) {
    let relay = TestRelay::start_running(
        db,
        &tests::amqp_url(),
        &test_registry(HOSPITAL_A),
        InProcess::DESK_ONLY,
    )
    .await;
    let launcher = Launcher::for_relay(RELAY_SERVICE, &relay);
    let services = RelayProcesses::start(
        &launcher,
        &[
            // Everything, from every crate: what a debugging operator would switch on.
            ("RUST_LOG", "debug"),
            // Critical values due for acknowledgement within 2 s, reminded every 2 s.
            ("TELERELAY_CRITICAL_ACK_SECONDS", "2"),
            ("TELERELAY_CRITICAL_REPEAT_SECONDS", "2"),
            ("TELERELAY_SECOND_READ_SHARE", "0.5"),
        ],
    )
    .await;
    let work = tempdir();
    let his_register = work.join("his-register.csv");
    let config = simulation(&relay, &services.desk_url, &work, &his_register);

    let run = simulator::run(config, CancellationToken::new());
    let counts = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the simulated run ends within 5 minutes")
        .unwrap();
    assert!(
        counts.confirmed >= REQUESTS,
        "the county published its requests: {counts:?}"
    );

    // The run went all the way: reports delivered, returns, critical values acknowledged.
    let db = &relay.db;
    assert!(
        count(
            db,
            "select count(*) from lifecycle_events where state = 'delivered'"
        )
        .await
            > 0
    );
    assert!(count(db, "select count(*) from request_returns").await > 0);
    assert!(
        count(
            db,
            "select count(*) from critical_notifications where acknowledged_at is not null"
        )
        .await
            > 0
    );

    let fields = patient_fields(db, &his_register).await;
    let logs = services.logs();
    let request_uuids: Vec<Uuid> = sqlx::query_scalar("select id from review_requests")
        .fetch_all(db)
        .await
        .unwrap();
    assert!(request_uuids.len() as u64 >= REQUESTS);
    for (service, log) in &logs {
        assert!(log.lines().count() > 100, "{service} logged at debug level");
        for field in &fields {
            if let Some(line) = log.lines().find(|line| line.contains(field.as_str())) {
                panic!("{service} logged the patient field {field:?}: {line}");
            }
        }
    }
    // Not vacuous: the dispatcher and the recorder logged every request by its relay id.
    for (service, log) in &logs[..2] {
        for id in &request_uuids {
            assert!(
                log.contains(&id.to_string()),
                "{service} has no line naming request {id}"
            );
        }
    }
    services.stop().await;
    relay.stop().await;
    std::fs::remove_dir_all(&work).ok();
}

/// Every patient field the run produced: each request's pseudonym and clinical question, the
/// reviewers' findings, conclusions, critical findings, return details, drafts and second-read
/// comments, the clinicians' read-backs, and the names and national ids of the county's HIS
/// register.
async fn patient_fields(db: &PgPool, his_register: &std::path::Path) -> BTreeSet<String> {
    let mut fields = BTreeSet::new();
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar("select body from review_requests")
        .fetch_all(db)
        .await
        .unwrap();
    for body in bodies {
        let request = v1::ReviewRequest::decode(body.as_slice()).unwrap();
        let patient = request.patient.expect("every request names its patient");
        fields.insert(patient.pseudonym);
        fields.insert(request.clinical_question);
    }
    let texts = [
        "select findings from review_results",
        "select conclusion from review_results",
        "select critical_finding from review_results where critical_finding is not null",
        "select detail from request_returns",
        "select draft::text from review_requests where draft is not null",
        "select comment from second_reads where comment is not null",
        "select read_back from critical_acknowledgements",
    ];
    for sql in texts {
        let values: Vec<String> = sqlx::query_scalar(sql).fetch_all(db).await.unwrap();
        fields.extend(values);
    }
    let register = std::fs::read_to_string(his_register).expect("the county's HIS register");
    let mut register_fields = 0;
    for line in register.lines().skip(1) {
        // pseudonym,name,national id
        let columns: Vec<&str> = line.split(',').collect();
        assert_eq!(columns.len(), 3, "a register line: {line}");
        fields.extend(columns[1..].iter().map(|c| (*c).to_owned()));
        register_fields += 2;
    }
    assert!(register_fields > 0, "the county registered its patients");
    // Text too short to be anyone's data would only match by chance.
    fields.retain(|field| field.trim().chars().count() >= 4);
    fields
}

/// The simulator's settings for this run: the county publishing as the broker's `guest` user,
/// quick reads, many returns and critical values, some missed at first so that reminders go.
fn simulation(
    relay: &TestRelay,
    desk_url: &str,
    work: &std::path::Path,
    his_register: &std::path::Path,
) -> simulator::Config {
    let registry = work.join("province.toml");
    std::fs::write(&registry, province_toml()).unwrap();
    let origin_url = tests::amqp_url().replacen("://guest:", "://{user}:", 1);
    assert!(
        origin_url.contains("{user}"),
        "the test broker's user is guest"
    );
    simulator::Config {
        broker: relay.broker_config.clone(),
        sim_registry: registry,
        sim_origin_amqp_url: SecretString::from(origin_url),
        sim_review_desk_url: desk_url.to_owned(),
        sim_rate_per_second: 20.0,
        sim_total: Some(REQUESTS),
        sim_settle_seconds: 120,
        sim_time_scale: 0.001,
        sim_report_seconds: 600,
        sim_poll_interval_ms: 100,
        sim_duplicate_probability: 0.1,
        sim_return_probability: 0.2,
        sim_critical_probability: 0.3,
        sim_called_away_probability: 0.0,
        sim_revision_probability: 0.2,
        sim_critical_ack_seconds: 0.5,
        sim_missed_critical_probability: 0.3,
        sim_missed_critical_seconds: 4.0,
        sim_his_register: Some(his_register.to_owned()),
        ..simulator::Config::default()
    }
}

/// The test registry's Xiangya pools and readers, and hospital A as the only county.
fn province_toml() -> String {
    format!(
        r#"
[[hospital]]
code = "HN-XY"
name = "Xiangya"

[[hospital]]
code = "{HOSPITAL_A}"
name = "Huaihua"
broker_user = "guest"

[[pool]]
code = "xy-ecg"
hospital = "HN-XY"
kind = "ecg"
name = "xy-ecg"

[[pool]]
code = "xy-imaging"
hospital = "HN-XY"
kind = "imaging"
name = "xy-imaging"

[[pool]]
code = "xy-pathology"
hospital = "HN-XY"
kind = "pathology"
name = "xy-pathology"

[[reviewer]]
id = "xy-ecg-liu"
pool = "xy-ecg"
name = "xy-ecg-liu"
token = "{ecg}"

[[reviewer]]
id = "xy-ecg-tan"
pool = "xy-ecg"
name = "xy-ecg-tan"
token = "{ecg_second}"

[[reviewer]]
id = "xy-img-chen"
pool = "xy-imaging"
name = "xy-img-chen"
token = "{imaging}"

[[reviewer]]
id = "xy-path-wang"
pool = "xy-pathology"
name = "xy-path-wang"
token = "{pathology}"

[[pairing]]
origin = "{HOSPITAL_A}"
kind = "ecg"
pool = "xy-ecg"

[[pairing]]
origin = "{HOSPITAL_A}"
kind = "imaging"
pool = "xy-imaging"

[[pairing]]
origin = "{HOSPITAL_A}"
kind = "pathology"
pool = "xy-pathology"
"#,
        ecg = tokens::ECG,
        ecg_second = tokens::ECG_SECOND,
        imaging = tokens::IMAGING,
        pathology = tokens::PATHOLOGY,
    )
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("telerelay-patient-data-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn count(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}
