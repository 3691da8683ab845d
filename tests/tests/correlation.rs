//! Correlation (issue 5): one trace id follows a request from the county's publish through the
//! dispatcher, the review desk and the recorder, in every service's logs and on every message
//! the relay publishes about it (docs/metrics.md, "Correlation").
//!
//! The three services run as processes of their own (`tests::service_process`), each writing
//! its JSON log lines to a file of its own, as deployed; the test reads those files. The review
//! desk of the harness runs too, but the test talks to the desk process only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bus::lapin::Connection;
use bus::lapin::options::{BasicGetOptions, BasicNackOptions};
use bus::trace::{TRACEPARENT, TraceContext};
use contract::v1;
use domain::RequestState::{Claimed, Delivered, Received, Reported, Routed};
use domain::{HospitalCode, PoolCode, Priority};
use prost::Message as _;
use sqlx::PgPool;
use std::collections::BTreeMap;
use tests::fixtures::ecg_request;
use tests::relay_processes::{RelayProcesses, json_lines};
use tests::service_process::Launcher;
use tests::{HOSPITAL_A, InProcess, TestRelay, report_body, test_registry, tokens, wait_for};
use uuid::Uuid;

/// This crate's binary that runs one service as a process.
const RELAY_SERVICE: &str = env!("CARGO_BIN_EXE_relay-service");

/// The county's own trace of its first request, as its HIS would send it.
const COUNTY_TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const COUNTY_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn one_trace_id_follows_a_request_through_every_service(db: PgPool) {
    let relay = TestRelay::start_running(
        db,
        &tests::amqp_url(),
        &test_registry(HOSPITAL_A),
        InProcess::DESK_ONLY,
    )
    .await;
    let launcher = Launcher::for_relay(RELAY_SERVICE, &relay);
    let services = RelayProcesses::start(&launcher, &[]).await;

    // Three requests: the county's own trace; no traceparent at all; a malformed one.
    let requests = [
        ("TRACE-COUNTY", Some(COUNTY_TRACEPARENT)),
        ("TRACE-NONE", None),
        ("TRACE-BAD", Some("00-not-a-trace-id-01")),
    ];
    for (request_id, traceparent) in requests {
        let request = ecg_request(HOSPITAL_A, request_id, v1::Priority::Routine, "E07500");
        let headers: Vec<(&str, &str)> = traceparent
            .map(|value| (TRACEPARENT, value))
            .into_iter()
            .collect();
        relay
            .broker
            .publish_with_headers(
                &relay.topology.names.requests_exchange(),
                &format!("{HOSPITAL_A}.ecg"),
                request.encode_to_vec(),
                Some("guest"),
                &headers,
            )
            .await;
    }
    let mut trace_of = BTreeMap::new();
    for (request_id, _) in requests {
        let id = relay.request_uuid(HOSPITAL_A, request_id).await;
        trace_of.insert(request_id, (id, stored_trace_id(&relay.db, id).await));
    }
    assert_eq!(
        trace_of["TRACE-COUNTY"].1, COUNTY_TRACE_ID,
        "a county's valid traceparent keeps its trace id"
    );
    for made in ["TRACE-NONE", "TRACE-BAD"] {
        let trace_id = &trace_of[made].1;
        assert!(
            bus::trace::TraceId::parse(trace_id).is_some() && trace_id != COUNTY_TRACE_ID,
            "{made}: the dispatcher made a trace id of its own, got {trace_id}"
        );
    }
    assert_ne!(trace_of["TRACE-NONE"].1, trace_of["TRACE-BAD"].1);

    // Each lane message carries its request's trace.
    let lane = relay
        .topology
        .names
        .review_lane(&PoolCode::parse("xy-ecg").unwrap(), Priority::Routine);
    let lane_traces = peek_traces(&lane, 3).await;
    for (id, trace_id) in trace_of.values() {
        assert_eq!(
            lane_traces.get(&id.to_string()),
            Some(trace_id),
            "the lane message of {id} carries its trace"
        );
    }

    // A reviewer claims each through the desk: the claim answers with the request's trace, and
    // the reviewer's client sends it back with the report.
    for _ in 0..requests.len() {
        let (claimed, traceparent) = claim(&relay.http, &services.desk_url, tokens::ECG).await;
        let id: Uuid = claimed["request_uuid"].as_str().unwrap().parse().unwrap();
        let (_, trace_id) = trace_of.values().find(|(known, _)| *known == id).unwrap();
        let answered = TraceContext::parse(&traceparent).expect("a valid traceparent");
        assert_eq!(&answered.trace_id.to_string(), trace_id);
        let response = relay
            .http
            .post(format!("{}/v1/requests/{id}/report", services.desk_url))
            .bearer_auth(tokens::ECG)
            .header(TRACEPARENT, answered.child().to_string())
            .json(&report_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }
    for (id, _) in trace_of.values() {
        relay
            .wait_for_history(*id, &[Received, Routed, Claimed, Reported, Delivered])
            .await;
    }

    // The results in the county's queue carry the trace of their request.
    let results = relay
        .topology
        .names
        .origin_results_queue(&HospitalCode::parse(HOSPITAL_A).unwrap());
    let result_traces = result_traces(&results, 3).await;
    for (request_id, (_, trace_id)) in &trace_of {
        assert_eq!(
            result_traces.get(*request_id),
            Some(trace_id),
            "the result of {request_id} carries its trace"
        );
    }

    // Every service wrote lines about each request under its trace id.
    let logs = services.logs();
    for (request_id, (id, trace_id)) in &trace_of {
        for (service, log) in &logs {
            let lines = lines_with_trace(log, trace_id);
            assert!(
                !lines.is_empty(),
                "{service} has no log line with trace_id {trace_id} ({request_id}):\n{log}"
            );
        }
        // The lines that name the request are in its trace (one id finds them all).
        for (service, log) in &logs {
            for line in log.lines().filter(|line| line.contains(&id.to_string())) {
                assert!(
                    line.contains(trace_id),
                    "{service}: a line about {id} without its trace id {trace_id}: {line}"
                );
            }
        }
    }
    let malformed = lines_with_trace(&logs[0].1, &trace_of["TRACE-BAD"].1);
    assert!(
        malformed
            .iter()
            .any(|line| line.contains("malformed traceparent")),
        "the dispatcher says it replaced the malformed traceparent: {malformed:?}"
    );

    services.stop().await;
    relay.stop().await;
}

/// Claims the next request from the desk process: the request and the `traceparent` response
/// header.
async fn claim(http: &reqwest::Client, desk_url: &str, token: &str) -> (serde_json::Value, String) {
    wait_for("a request to be handed out", || async {
        let response = http
            .post(format!("{desk_url}/v1/worklist/next"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == 204 {
            return None;
        }
        assert_eq!(response.status().as_u16(), 200);
        let traceparent = response
            .headers()
            .get(TRACEPARENT)
            .expect("a claim answers with the request's traceparent")
            .to_str()
            .unwrap()
            .to_owned();
        Some((response.json().await.unwrap(), traceparent))
    })
    .await
}

async fn stored_trace_id(db: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("select trace_id from review_requests where id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

/// The log lines (JSON, one object each) whose `trace_id` is `trace_id`: as a span field (the
/// line was written within the request's span) or as the line's own field.
fn lines_with_trace(log: &str, trace_id: &str) -> Vec<String> {
    json_lines(log)
        .into_iter()
        .filter(|line| {
            line["span"]["trace_id"] == trace_id || line["fields"]["trace_id"] == trace_id
        })
        .map(|line| line.to_string())
        .collect()
}

/// The trace id each of the first `count` messages of a lane carries, by the request it names;
/// the messages are returned to the lane.
async fn peek_traces(queue: &str, count: usize) -> BTreeMap<String, String> {
    let connection = Connection::connect(&tests::amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut traces = BTreeMap::new();
    let mut held = Vec::new();
    while traces.len() < count {
        let message = wait_for("a message in the lane", || async {
            channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .unwrap()
        })
        .await;
        let headers = message.delivery.properties.headers().as_ref();
        let id = bus::header_str(headers, bus::messages::RELAY_REQUEST_UUID_HEADER)
            .unwrap()
            .to_owned();
        let trace = bus::trace::Incoming::of_headers(headers)
            .valid()
            .expect("a lane message carries a valid traceparent");
        traces.insert(id, trace.trace_id.to_string());
        held.push(message.delivery);
    }
    for delivery in held {
        delivery
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .unwrap();
    }
    connection.close(200, "lane read".into()).await.ok();
    traces
}

/// The trace id of each result notice in an origin's results queue, by request id (taking
/// messages until `count` results were seen).
async fn result_traces(queue: &str, count: usize) -> BTreeMap<String, String> {
    let connection = Connection::connect(&tests::amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut traces = BTreeMap::new();
    while traces.len() < count {
        let message = wait_for("a notice in the county's results queue", || async {
            channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
        })
        .await;
        let notice = v1::OriginNotice::decode(message.delivery.data.as_slice()).unwrap();
        if let Some(v1::origin_notice::Notice::Result(result)) = notice.notice {
            let trace = bus::trace::Incoming::of_delivery(&message.delivery)
                .valid()
                .expect("a result carries a valid traceparent");
            traces.insert(result.request_id, trace.trace_id.to_string());
        }
    }
    connection.close(200, "results read".into()).await.ok();
    traces
}
