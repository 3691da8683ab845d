#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::sync::OnceLock;

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| Catalog::load(&formats::default_data_dir()).unwrap())
}

#[test]
fn the_noisy_mitbih_record_is_always_returned_as_unreadable() {
    let decision = decide(catalog(), StudyKind::Ecg, "105", 0.0, 0.0);
    assert!(
        matches!(
            decision,
            Decision::Return {
                reason: "unreadable_signal",
                ..
            }
        ),
        "{decision:?}"
    );
}

#[test]
fn the_ptb_infarct_and_the_vt_runs_are_reported_critical() {
    for (label, expected) in [
        ("s0010_re", "acute inferolateral STEMI"),
        ("106", "runs of ventricular tachycardia"),
    ] {
        match decide(catalog(), StudyKind::Ecg, label, 0.0, 0.0) {
            Decision::Report {
                critical_finding,
                findings,
                ..
            } => {
                assert_eq!(critical_finding.as_deref(), Some(expected));
                assert!(findings.contains(expected), "{findings}");
            }
            other => panic!("{label}: {other:?}"),
        }
    }
}

#[test]
fn a_normal_ecg_is_reported_normal_and_not_critical() {
    // E07506 is labelled sinus rhythm only.
    let decision = decide(catalog(), StudyKind::Ecg, "E07506", 0.0, 0.0);
    assert_eq!(
        decision,
        Decision::Report {
            findings: "Sinus rhythm.".into(),
            conclusion: "Normal ECG.".into(),
            critical_finding: None
        }
    );
}

#[test]
fn an_abnormal_ecg_names_its_main_finding() {
    let Decision::Report { conclusion, .. } = decide(catalog(), StudyKind::Ecg, "E07505", 0.0, 0.0)
    else {
        panic!()
    };
    assert_eq!(conclusion, "Abnormal ECG: left ventricular hypertrophy.");
}

#[test]
fn returns_and_critical_values_follow_their_probabilities_for_other_kinds() {
    let returned = decide(catalog(), StudyKind::Imaging, "ct", 1.0, 0.0);
    assert!(
        matches!(
            returned,
            Decision::Return {
                reason: "missing_series",
                ..
            }
        ),
        "{returned:?}"
    );
    let Decision::Report {
        critical_finding, ..
    } = decide(catalog(), StudyKind::Pathology, "frozen", 0.0, 1.0)
    else {
        panic!()
    };
    assert_eq!(
        critical_finding.as_deref(),
        Some("unexpected malignancy in frozen section")
    );
    let Decision::Report {
        critical_finding,
        findings,
        ..
    } = decide(catalog(), StudyKind::Pathology, "frozen", 0.0, 0.0)
    else {
        panic!()
    };
    assert_eq!(critical_finding, None);
    assert!(findings.starts_with("Frozen section"), "{findings}");
}

#[test]
fn reading_times_are_realistic_and_scaled() {
    for _ in 0..200 {
        let ecg = reading_time(StudyKind::Ecg, "routine", false, 0.02).as_secs_f64();
        assert!((2.4..=7.2).contains(&ecg), "{ecg}");
        let stat = reading_time(StudyKind::Ecg, "stat", false, 0.02).as_secs_f64();
        assert!((1.2..=3.6).contains(&stat), "{stat}");
        let frozen = reading_time(StudyKind::Pathology, "stat", true, 1.0).as_secs_f64() / 60.0;
        assert!((5.0..=12.5).contains(&frozen), "{frozen}");
    }
}

/// A stand-in review desk: hands out the queued work items one by one, then answers 204, and
/// records every report and return.
mod fake_desk {
    use axum::Json;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use serde_json::Value;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// A report or return as the desk received it.
    #[derive(Clone, Debug)]
    pub struct Submission {
        pub authorization: String,
        pub request_uuid: String,
        pub action: String,
        pub body: Value,
    }

    #[derive(Clone, Default)]
    pub struct Desk {
        pub work: Arc<Mutex<VecDeque<Value>>>,
        pub submitted: Arc<Mutex<Vec<Submission>>>,
    }

    pub async fn start(desk: Desk) -> String {
        let app = axum::Router::new()
            .route("/v1/worklist/next", post(next))
            .route(
                "/v1/second-reads/next",
                post(|| async { StatusCode::NO_CONTENT }),
            )
            .route("/v1/requests/{uuid}/{action}", post(submit).put(submit))
            .with_state(desk);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    async fn next(State(desk): State<Desk>) -> Response {
        match desk.work.lock().unwrap().pop_front() {
            Some(item) => Json(item).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        }
    }

    async fn submit(
        State(desk): State<Desk>,
        Path((uuid, action)): Path<(String, String)>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        // A heartbeat carries no body; everything else is JSON.
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        desk.submitted.lock().unwrap().push(Submission {
            authorization,
            request_uuid: uuid,
            action: action.clone(),
            body,
        });
        match action.as_str() {
            "heartbeat" | "draft" => Json(serde_json::json!({
                "lease_expires_at": (chrono::Utc::now() + chrono::Duration::milliseconds(600)).to_rfc3339(),
            }))
            .into_response(),
            "report" => (
                StatusCode::CREATED,
                Json(serde_json::json!({ "version": 1 })),
            )
                .into_response(),
            _ => StatusCode::OK.into_response(),
        }
    }
}

fn work_item(uuid: &str, label: &str) -> serde_json::Value {
    serde_json::json!({
        "request_uuid": uuid,
        "request_id": format!("HN-HH-001-ecg-{label}-abc123-1"),
        "origin": "HN-HH-001",
        "kind": "ecg",
        "priority": "stat",
        "correlation_id": "c0ffee",
        "claim_expires_at": (Utc::now() + chrono::Duration::minutes(10)).to_rfc3339(),
        "clinical_question": "chest pain 2 h, rule out STEMI",
        "patient": { "age_years": 81, "sex": "female" },
        "study": { "source_format": "wfdb" },
    })
}

#[tokio::test]
async fn a_bot_reports_the_infarct_as_critical_and_returns_the_noisy_record() {
    let desk = fake_desk::Desk::default();
    desk.work.lock().unwrap().extend([
        work_item("uuid-mi", "s0010_re"),
        work_item("uuid-noise", "105"),
    ]);
    let config = crate::Config {
        sim_review_desk_url: fake_desk::start(desk.clone()).await,
        sim_time_scale: 0.0005,
        sim_poll_interval_ms: 20,
        sim_return_probability: 0.0,
        sim_critical_probability: 0.0,
        sim_called_away_probability: 0.0,
        sim_revision_probability: 0.0,
        ..crate::Config::default()
    };
    let sim = crate::Simulation::for_tests(config, catalog().clone());
    let bot = ReviewerBot {
        id: "xy-ecg-liu".into(),
        pool: "xy-ecg".into(),
        token: "demo-xy-ecg-liu".into(),
    };
    let client = reqwest::Client::new();
    let stop_when_both_submitted = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while desk.submitted.lock().unwrap().len() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sim.shutdown.cancel();
    };
    tokio::join!(run(&sim, &client, &bot), stop_when_both_submitted);

    let submitted = desk.submitted.lock().unwrap().clone();
    assert_eq!(submitted.len(), 2, "{submitted:?}");
    let report = &submitted[0];
    assert_eq!(report.authorization, "Bearer demo-xy-ecg-liu");
    assert_eq!(
        (report.request_uuid.as_str(), report.action.as_str()),
        ("uuid-mi", "report")
    );
    assert_eq!(report.body["critical"], true);
    assert_eq!(report.body["critical_finding"], "acute inferolateral STEMI");
    let returned = &submitted[1];
    assert_eq!(
        (returned.request_uuid.as_str(), returned.action.as_str()),
        ("uuid-noise", "return")
    );
    assert_eq!(returned.body["reason"], "unreadable_signal");
    let counts = sim.stats.snapshot();
    assert_eq!(
        (counts.reports, counts.bot_returns, counts.desk_errors),
        (1, 1, 0)
    );
}

/// The ids of the submissions with `action`, in order.
fn actions(desk: &fake_desk::Desk) -> Vec<String> {
    desk.submitted
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.action.clone())
        .collect()
}

#[tokio::test]
async fn a_bot_renews_its_lease_and_saves_a_draft_while_reading_and_one_called_away_stops() {
    // Loaded first: the lease below starts running when the item is made.
    let catalog = catalog().clone();
    for called_away in [false, true] {
        let desk = fake_desk::Desk::default();
        let mut item = work_item("uuid-long", "100");
        // A short lease (stretches of 300 ms) and a read of 1.2 to 3.6 s: several renewals.
        item["claim_expires_at"] =
            serde_json::json!((Utc::now() + chrono::Duration::milliseconds(900)).to_rfc3339());
        item["priority"] = serde_json::json!("routine");
        desk.work.lock().unwrap().push_back(item);
        let config = crate::Config {
            sim_review_desk_url: fake_desk::start(desk.clone()).await,
            sim_time_scale: 0.01,
            sim_poll_interval_ms: 20,
            sim_return_probability: 0.0,
            sim_critical_probability: 0.0,
            sim_called_away_probability: if called_away { 1.0 } else { 0.0 },
            sim_revision_probability: 0.0,
            ..crate::Config::default()
        };
        let sim = crate::Simulation::for_tests(config, catalog.clone());
        let bot = ReviewerBot {
            id: "xy-ecg-liu".into(),
            pool: "xy-ecg".into(),
            token: "demo-xy-ecg-liu".into(),
        };
        let client = reqwest::Client::new();
        let stop_when_done = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let finished = |actions: &[String]| {
                actions.iter().any(|a| a == "report")
                    || (called_away && actions.iter().any(|a| a == "draft"))
            };
            while !finished(&actions(&desk)) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sim.shutdown.cancel();
        };
        tokio::join!(run(&sim, &client, &bot), stop_when_done);

        let seen = actions(&desk);
        let draft_at = seen.iter().position(|a| a == "draft");
        assert!(draft_at.is_some(), "no draft saved: {seen:?}");
        let counts = sim.stats.snapshot();
        if called_away {
            assert!(!seen.iter().any(|a| a == "report"), "{seen:?}");
            assert_eq!((counts.called_away, counts.reports), (1, 0));
        } else {
            let report_at = seen.iter().position(|a| a == "report").unwrap();
            assert!(draft_at < Some(report_at), "{seen:?}");
            assert!(seen.iter().any(|a| a == "heartbeat"), "{seen:?}");
            assert_eq!((counts.called_away, counts.reports), (0, 1));
            assert!(counts.heartbeats >= 2, "{counts:?}");
        }
    }
}
