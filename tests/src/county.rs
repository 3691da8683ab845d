//! A county HIS for the fault tests that kill broker nodes: it publishes a stream of review
//! requests through its own connection, as a real HIS would, and publishes again whatever the
//! broker did not confirm, so that a test can compare what the county saw confirmed with what
//! the relay recorded.

use crate::HOSPITAL_A;
use crate::fixtures::{ecg_request, imaging_request};
use bus::lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use bus::lapin::{BasicProperties, Channel, Confirmation, Connection};
use contract::v1;
use prost::Message;
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;
use tokio::sync::watch;

/// Publishes the county keeps in flight before waiting for their confirms, so that a kill
/// finds some of them unconfirmed.
const WINDOW: usize = 16;

/// How long the county waits for a window's confirms before it counts them as lost.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the county waits for the broker to acknowledge closing a connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which kinds of request [`county_requests`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestMix {
    /// Routine ECGs only (~120 KB each).
    Ecg,
    /// Routine ECGs and CT studies (a claim check) in turn.
    EcgAndCt,
}

/// `requests` routine requests from hospital A with distinct ids (`ECG-{tag}-0000`,
/// `CT-{tag}-0001`, …), each encoded once: a retry must send the very same bytes, or the relay
/// would rightly refuse it as a conflicting duplicate. The ECGs take the real records in turn.
pub fn county_requests(requests: usize, tag: &str, mix: RequestMix) -> Vec<Outgoing> {
    const RECORDS: [&str; 5] = ["E07500", "E07501", "E07502", "E07503", "E07504"];
    let mut ecgs = 0;
    (0..requests)
        .map(|n| {
            let (request_id, kind, request) = if mix == RequestMix::Ecg || n % 2 == 0 {
                let request_id = format!("ECG-{tag}-{n:04}");
                let record = RECORDS[ecgs % RECORDS.len()];
                ecgs += 1;
                let request = ecg_request(HOSPITAL_A, &request_id, v1::Priority::Routine, record);
                (request_id, "ecg", request)
            } else {
                let request_id = format!("CT-{tag}-{n:04}");
                let request = imaging_request(HOSPITAL_A, &request_id, v1::Priority::Routine);
                (request_id, "imaging", request)
            };
            Outgoing {
                request_id,
                routing_key: format!("{HOSPITAL_A}.{kind}"),
                message_id: uuid::Uuid::new_v4().to_string(),
                body: request.encode_to_vec(),
            }
        })
        .collect()
}

/// One request as the county sends it, every time.
pub struct Outgoing {
    pub request_id: String,
    pub routing_key: String,
    pub message_id: String,
    pub body: Vec<u8>,
}

/// What the county saw.
#[derive(Debug, Default)]
pub struct CountyLog {
    /// Request ids in the order the broker confirmed them (ack, routed).
    pub confirmed: Vec<String>,
    /// Publishes that were not confirmed and were sent again.
    pub republished: usize,
    /// Requests sent more than once.
    pub republished_ids: BTreeSet<String>,
    /// Connections the county opened.
    pub connections: usize,
    /// Connections the county gave up while they were still open, because the broker nacked
    /// or did not confirm in time.
    pub abandoned_connections: usize,
}

/// A county HIS: publishes persistent, mandatory, confirmed, as the broker user `guest`
/// (hospital A's in the test registry), to the first node that answers, and publishes again on
/// a new connection, with backoff, whatever was not confirmed.
///
/// Any nack or missing confirm counts as a broken connection, and every broker operation is
/// bounded by a timeout: a RabbitMQ 3.10 channel can stay nacked after a quorum queue's leader
/// changes, and a node that stopped reading its sockets never answers a publish or a close.
pub struct County {
    /// The nodes the county publishes through: one URL for a single broker, or a cluster's.
    pub addresses: bus::BrokerAddresses,
    pub exchange: String,
    /// How many requests are confirmed so far.
    pub progress: watch::Sender<usize>,
}

impl County {
    /// Publishes every request until the broker confirmed each one, and says what it saw.
    pub async fn publish(self, requests: Vec<Outgoing>) -> CountyLog {
        let mut waiting: VecDeque<Outgoing> = requests.into();
        let mut log = CountyLog::default();
        // Failed connection attempts and failed windows since the last confirmed window.
        let mut failures = 0u32;
        // Counts every attempt, so that each one starts at the next node (`bus::connect`).
        let mut attempt = 0usize;
        while !waiting.is_empty() {
            if failures > 0 {
                tokio::time::sleep(bus::reconnect_delay(failures)).await;
            }
            let opened =
                tokio::time::timeout(CONFIRM_TIMEOUT, open_confirmed(&self.addresses, attempt))
                    .await;
            attempt += 1;
            let Ok(Ok((connection, channel))) = opened else {
                failures += 1;
                continue;
            };
            log.connections += 1;
            while !waiting.is_empty() {
                let window: Vec<Outgoing> = waiting.drain(..WINDOW.min(waiting.len())).collect();
                let confirmed = self.publish_window(&channel, &window).await;
                let all_confirmed = confirmed
                    .as_ref()
                    .is_some_and(|confirmed| confirmed.iter().all(|c| *c));
                let confirmed = confirmed.unwrap_or_else(|| vec![false; window.len()]);
                for (request, confirmed) in window.into_iter().zip(confirmed) {
                    if confirmed {
                        log.confirmed.push(request.request_id);
                        self.progress.send_replace(log.confirmed.len());
                    } else {
                        log.republished += 1;
                        log.republished_ids.insert(request.request_id.clone());
                        waiting.push_back(request);
                    }
                }
                if all_confirmed {
                    failures = 0;
                    continue;
                }
                // Whatever was not confirmed is published again on a new connection, not on
                // this channel. On 3.10 a channel whose first publish to a quorum queue comes
                // while the queue's record still names the leader on the dead node has every
                // publish nacked, for good; a channel opened once the new leader is recorded
                // works (3.11.x and later look the leader up elsewhere).
                failures += 1;
                if channel.status().connected() {
                    log.abandoned_connections += 1;
                }
                break;
            }
            // Bounded: a node that stopped reading the connection never answers the close.
            tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "county done".into()))
                .await
                .ok();
        }
        log
    }

    /// Publishes a window, then waits for its confirms: which ones the broker confirmed, or
    /// `None` if the window was not published and confirmed within [`CONFIRM_TIMEOUT`]. The
    /// publishes are inside the timeout too: a broker that stops reading the socket (channel
    /// flow control) blocks them, not only their confirms.
    async fn publish_window(&self, channel: &Channel, window: &[Outgoing]) -> Option<Vec<bool>> {
        let published_and_confirmed = async {
            let mut pending = Vec::with_capacity(window.len());
            for request in window {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type(contract::CONTENT_TYPE.into())
                    .with_type(contract::message_type::REVIEW_REQUEST.into())
                    .with_message_id(request.message_id.as_str().into())
                    .with_correlation_id(request.message_id.as_str().into())
                    .with_user_id("guest".into());
                pending.push(
                    channel
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
                        .await,
                );
            }
            futures::future::join_all(pending.into_iter().map(|sent| async move {
                let Ok(confirm) = sent else { return false };
                // Only an ack without a returned message means queued in a durable queue.
                matches!(confirm.await, Ok(Confirmation::Ack(None)))
            }))
            .await
        };
        tokio::time::timeout(CONFIRM_TIMEOUT, published_and_confirmed)
            .await
            .ok()
    }
}

/// A connection named as hospital A's county, to the first of `addresses` that answers
/// (starting at node `attempt % len`), with a channel in confirm mode.
async fn open_confirmed(
    addresses: &bus::BrokerAddresses,
    attempt: usize,
) -> anyhow::Result<(Connection, Channel)> {
    let connection = bus::connect(addresses, &format!("county-{HOSPITAL_A}"), attempt).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}
