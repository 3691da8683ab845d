//! The load: real review requests from the simulator's catalogue (ECGs with their real
//! waveforms, CT/MR claim checks, whole-slide pathology), published as the county's HIS
//! publishes them; and automated reviewers that claim and report through the review desk's
//! HTTP API.

use crate::setup::{ORIGIN, Reviewer};
use anyhow::Context as _;
use bus::lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use bus::lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use contract::v1;
use prost::Message as _;
use simulator::Catalog;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Publishes in flight before the county waits for their confirms.
const PUBLISH_WINDOW: usize = 500;

/// One request ready to publish.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub request_id: String,
    /// `<origin>.<kind>`: the routing key of the county's publish.
    pub routing_key: String,
    pub body: Vec<u8>,
}

/// The mix of the drain: half ECGs (real waveforms, most of the bytes), three in ten imaging
/// studies, two in ten pathology slides; mostly routine, some urgent, a few ASAP and STAT.
pub fn mixed_requests(catalog: &Catalog, prefix: &str, n: usize) -> Vec<Prepared> {
    (0..n)
        .map(|i| {
            let priority = match i % 20 {
                0 => v1::Priority::Stat,
                1 | 2 => v1::Priority::Asap,
                3..=6 => v1::Priority::Urgent,
                _ => v1::Priority::Routine,
            };
            let kind = match i % 10 {
                0..=4 => "ecg",
                5..=7 => "imaging",
                _ => "pathology",
            };
            prepare(catalog, &format!("{prefix}-{i:07}"), kind, priority, true)
        })
        .collect()
}

/// Builds one request of `kind` from the catalogue. A STAT request is published on the
/// express lane's routing key when `express` (as the simulator's counties do), else on the
/// plain `<origin>.<kind>` key that every request used before the express lane.
pub fn prepare(
    catalog: &Catalog,
    request_id: &str,
    kind: &str,
    priority: v1::Priority,
    express: bool,
) -> Prepared {
    let request = match kind {
        "ecg" => catalog.ecg_request(ORIGIN, request_id, priority, None),
        "imaging" => catalog.imaging_request(ORIGIN, request_id, priority, None),
        _ => catalog.pathology_request(ORIGIN, request_id, priority, false),
    };
    Prepared {
        request_id: request_id.to_owned(),
        routing_key: bus::Names::request_routing_key(
            ORIGIN,
            kind,
            express && priority == v1::Priority::Stat,
        ),
        body: request.encode_to_vec(),
    }
}

/// The county's connection: a confirm channel, publishing as its broker user.
pub struct County {
    connection: Connection,
    pub channel: Channel,
    exchange: String,
}

impl County {
    pub async fn connect(amqp_url: &str, exchange: String) -> anyhow::Result<Self> {
        let connection = Connection::connect(amqp_url, Default::default())
            .await
            .context("the county connects to the broker")?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            connection,
            channel,
            exchange,
        })
    }

    /// Publishes as a HIS must (persistent, mandatory, the broker-verified `user_id`), without
    /// waiting for the confirm.
    pub async fn send(&self, request: &Prepared) -> anyhow::Result<PublisherConfirm> {
        let message_id = uuid::Uuid::new_v4().to_string();
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(contract::CONTENT_TYPE.into())
            .with_type(contract::message_type::REVIEW_REQUEST.into())
            .with_message_id(message_id.as_str().into())
            .with_correlation_id(message_id.as_str().into())
            .with_user_id("guest".into());
        Ok(self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                request.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &request.body,
                properties,
            )
            .await?)
    }

    /// Publishes and waits for this one confirm.
    pub async fn send_confirmed(&self, request: &Prepared) -> anyhow::Result<()> {
        expect_routed(self.send(request).await?.await?)
    }

    /// Publishes everything, [`PUBLISH_WINDOW`] at a time between confirms.
    pub async fn send_all(&self, requests: &[Prepared]) -> anyhow::Result<()> {
        for window in requests.chunks(PUBLISH_WINDOW) {
            let mut confirms = Vec::with_capacity(window.len());
            for request in window {
                confirms.push(self.send(request).await?);
            }
            for confirm in futures::future::join_all(confirms).await {
                expect_routed(confirm?)?;
            }
        }
        Ok(())
    }

    pub async fn close(self) {
        self.connection.close(200, "county done".into()).await.ok();
    }
}

fn expect_routed(confirmation: Confirmation) -> anyhow::Result<()> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => anyhow::bail!("a request was unroutable"),
        Confirmation::Nack(_) | Confirmation::NotRequested => {
            anyhow::bail!("the broker refused a request")
        }
    }
}

/// What the automated reviewers did.
#[derive(Default)]
pub struct ReviewStats {
    pub claimed: AtomicU64,
    pub reported: AtomicU64,
    pub errors: AtomicU64,
    /// When each request id was claimed, for the requests a scenario watches.
    pub claimed_at: Mutex<HashMap<String, Instant>>,
}

/// Automated reviewers: each claims the most urgent request of its pool
/// (`POST /v1/worklist/next`) and reports at once (`POST /v1/requests/{id}/report`), polling
/// every `idle_poll` while the worklist is empty, until `stop`.
pub async fn run_reviewers(
    desk_url: String,
    reviewers: Vec<Reviewer>,
    idle_poll: Duration,
    stats: Arc<ReviewStats>,
    stop: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            eprintln!("bench: no HTTP client: {error}");
            return;
        }
    };
    let bots = reviewers.into_iter().map(|reviewer| {
        let (http, desk_url, stats, stop) =
            (http.clone(), desk_url.clone(), stats.clone(), stop.clone());
        async move {
            while !stop.is_cancelled() {
                match review_one(&http, &desk_url, &reviewer, &stats).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tokio::select! {
                            _ = tokio::time::sleep(idle_poll) => {}
                            _ = stop.cancelled() => {}
                        }
                    }
                    Err(_) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            _ = stop.cancelled() => {}
                        }
                    }
                }
            }
        }
    });
    futures::future::join_all(bots).await;
}

#[derive(serde::Deserialize)]
struct WorkItem {
    request_uuid: String,
    request_id: String,
}

/// Claims and reports one request; false when the worklist was empty.
async fn review_one(
    http: &reqwest::Client,
    desk_url: &str,
    reviewer: &Reviewer,
    stats: &ReviewStats,
) -> anyhow::Result<bool> {
    let response = http
        .post(format!("{desk_url}/v1/worklist/next"))
        .bearer_auth(&reviewer.token)
        .send()
        .await?
        .error_for_status()?;
    if response.status() == reqwest::StatusCode::NO_CONTENT {
        return Ok(false);
    }
    let item: WorkItem = response.json().await?;
    stats
        .claimed_at
        .lock()
        .await
        .insert(item.request_id.clone(), Instant::now());
    stats.claimed.fetch_add(1, Ordering::Relaxed);
    http.post(format!(
        "{desk_url}/v1/requests/{}/report",
        item.request_uuid
    ))
    .bearer_auth(&reviewer.token)
    .json(&serde_json::json!({
        "findings": "Automated benchmark read: no acute abnormality.",
        "conclusion": "Within normal limits.",
        "critical": false,
    }))
    .send()
    .await?
    .error_for_status()?;
    stats.reported.fetch_add(1, Ordering::Relaxed);
    Ok(true)
}

/// Waits until the desk answers `/ready`.
pub async fn wait_for_desk(desk_url: &str, deadline: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(response) = http.get(format!("{desk_url}/ready")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "the review desk was not ready within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
