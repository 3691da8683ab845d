//! The metric catalogue and the health endpoints: every metric in `docs/metrics.md`'s catalogue
//! is exposed by a service with its type, and nothing else is (so the doc and the code cannot
//! drift); `/ready` follows the broker session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use sqlx::PgPool;
use tests::critical::{acknowledgement, critical_report, next_critical, publish_acknowledgement};
use tests::metrics::{Scrape, Service, status_of, url, wait_metric};
use tests::sla::{pass_due_time, publish_ecg};
use tests::{HOSPITAL_A, TestRelay, tokens, wait_until};

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_lost_consumer_is_a_reconnect_and_the_service_is_ready_again(db: PgPool) {
    let relay = TestRelay::start(db).await;
    // Deleting its queue makes the broker cancel the dispatcher's consumer: the session ends and
    // the supervisor reconnects, declaring the queue again.
    relay
        .broker
        .delete_queue(&relay.topology.names.dispatcher_queue())
        .await;
    let scrape = wait_metric(
        &relay,
        Service::Dispatcher,
        "telerelay_broker_reconnects_total",
        &[],
        1.0,
    )
    .await;
    assert_eq!(scrape.value("telerelay_broker_reconnects_total", &[]), 1.0);
    let base = url(&relay, Service::Dispatcher);
    wait_until("the dispatcher to be ready again", || async {
        status_of(&relay, &format!("{base}/ready")).await == 200
    })
    .await;
    wait_metric(
        &relay,
        Service::Dispatcher,
        "telerelay_broker_session_up",
        &[],
        1.0,
    )
    .await;
    // And it works: a request is routed.
    publish_ecg(&relay, "ECG-METRICS-AGAIN", v1::Priority::Asap).await;
    relay.stop().await;
}

/// The metric tables of `docs/metrics.md`'s catalogue: (name, type).
fn catalogue() -> Vec<(String, String)> {
    let doc = include_str!("../../docs/metrics.md");
    let catalogue = doc
        .split("## Catalogue")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/metrics.md has a Catalogue section");
    catalogue
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_owned(), (*cells.get(2)?).to_owned()))
        })
        .collect()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn every_metric_of_the_catalogue_is_exposed_with_its_type_and_no_other(db: PgPool) {
    let catalogue = catalogue();
    assert!(catalogue.len() >= 30, "catalogue read: {catalogue:?}");
    // A short run that makes every labelled family show a sample: a critical request reported,
    // delivered and acknowledged; a refusal and its dead letter; a return; an SLA breach.
    let relay = TestRelay::start(db).await;
    critical_report(&relay, "ECG-METRICS-CAT").await;
    let notification = next_critical(&relay, HOSPITAL_A).await;
    let ack = acknowledgement(&notification, HOSPITAL_A, "acute inferior STEMI");
    publish_acknowledgement(&relay, HOSPITAL_A, prost::Message::encode_to_vec(&ack)).await;
    relay
        .broker
        .publish_bytes("HN-HH-001.ecg", b"not protobuf".to_vec(), Some("guest"))
        .await;
    relay.next_dead_letter().await;
    let returned = publish_ecg(&relay, "ECG-METRICS-CAT-RET", v1::Priority::Routine).await;
    relay.claim_next(tokens::ECG).await;
    let (status, _) = relay
        .return_request(tokens::ECG, &returned.to_string(), "wrong_service")
        .await;
    assert_eq!(status, 200);
    let late = publish_ecg(&relay, "ECG-METRICS-CAT-LATE", v1::Priority::Asap).await;
    pass_due_time(&relay.db, late).await;
    for (service, name) in [
        (Service::Recorder, "telerelay_critical_ack_seconds_count"),
        (Service::Recorder, "telerelay_returns_total"),
        (Service::Recorder, "telerelay_dead_letters_unreplayed"),
        (Service::Dispatcher, "telerelay_escalations_total"),
    ] {
        wait_metric(&relay, service, name, &[], 1.0).await;
    }

    let mut exposed = Vec::new();
    for service in [Service::Desk, Service::Dispatcher, Service::Recorder] {
        exposed.extend(relay.scrape(service).await.families);
    }
    // Counters are named without `_total` in `# TYPE` (their samples carry it).
    let family_of = |name: &str, kind: &str| match kind {
        "counter" => name.strip_suffix("_total").unwrap_or(name).to_owned(),
        _ => name.to_owned(),
    };
    for (name, kind) in &catalogue {
        let family = family_of(name, kind);
        assert!(
            exposed.iter().any(|(f, k)| *f == family && k == kind),
            "{name} ({kind}) is in docs/metrics.md but no service exposes it; exposed: {exposed:?}"
        );
    }
    for (family, kind) in exposed.iter().filter(|(f, _)| f.starts_with("telerelay_")) {
        assert!(
            catalogue
                .iter()
                .any(|(name, k)| family_of(name, k) == *family && k == kind),
            "{family} ({kind}) is exposed but not in docs/metrics.md's catalogue"
        );
    }
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_publish_no_queue_takes_is_counted_unroutable_with_its_confirm_time(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let mut registry = telemetry::metrics::Registry::default();
    let pipeline = telemetry::metrics::PipelineMetrics::register(&mut registry);
    let addresses = relay.broker_config.addresses().unwrap();
    let connection = bus::connect(&addresses, "metrics-test", 0).await.unwrap();
    let publisher = bus::Publisher::open(
        &connection,
        "metrics-test",
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap()
    .with_metrics(pipeline);
    let nowhere = bus::OutgoingMessage {
        exchange: relay.topology.names.review_exchange(),
        routing_key: "no-such-pool.stat".into(),
        message_type: "telerelay.v1.ReviewRequest".into(),
        message_id: "metrics-unroutable-1".into(),
        correlation_id: "metrics-unroutable-1".into(),
        body: Vec::new(),
        headers: Vec::new(),
    };
    let refused = publisher.publish(&nowhere).await;
    assert!(
        matches!(refused, Err(bus::PublishError::Unroutable { .. })),
        "{refused:?}"
    );
    let scrape = Scrape::parse(&telemetry::metrics::text(&registry).unwrap());
    assert_eq!(
        scrape.value(
            "telerelay_published_total",
            &[("exchange", "review"), ("outcome", "unroutable")]
        ),
        1.0
    );
    assert_eq!(scrape.value("telerelay_published_total", &[]), 1.0);
    assert_eq!(
        scrape.value(
            "telerelay_publish_confirm_seconds_count",
            &[("exchange", "review")]
        ),
        1.0
    );
    connection.close(200, "done".into()).await.ok();
    relay.stop().await;
}
