//! The tests' own view of the broker: publishing as a county HIS would (with `user_id`), reading
//! an origin's results queue and the dead letters, and cleaning up the namespace.

use crate::DEADLINE;
use bus::lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use bus::lapin::types::FieldTable;
use bus::lapin::{BasicProperties, Channel, Confirmation, Connection};
use contract::v1;
use prost::Message;
use std::time::{Duration, Instant};

pub struct TestBroker {
    connection: Connection,
    channel: Channel,
    topology: bus::Topology,
    /// Queues this test may have caused to exist, deleted at the end.
    queues: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    amqp_url: String,
    /// The last dead letter [`TestBroker::next_dead_letter`] returned.
    dead_letters_seen: std::sync::atomic::AtomicI64,
}

/// What a publish put on the wire.
#[derive(Clone, Debug)]
pub struct Published {
    pub message_id: String,
    pub correlation_id: String,
}

/// A dead letter as the recorder stored it from the dead-letter queue, with the reason
/// telerelay gave it.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Its id in `dead_letters`, as `relayctl dead-letters` shows it.
    pub id: i64,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub source_queue: Option<String>,
    pub message_id: Option<String>,
    /// Set by the broker when it dead-lettered the message itself (e.g. `delivery_limit`).
    pub broker_reason: Option<String>,
    /// The queue the broker dead-lettered it from.
    pub broker_queue: Option<String>,
    pub body: Vec<u8>,
}

impl TestBroker {
    pub async fn connect(amqp_url: &str, topology: bus::Topology) -> Self {
        let connection = Connection::connect(amqp_url, Default::default())
            .await
            .expect("test broker connection");
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        topology.declare_core(&channel).await.unwrap();
        let names = &topology.names;
        let queues = names.core_queues();
        Self {
            connection,
            channel,
            topology,
            queues: std::sync::Arc::new(std::sync::Mutex::new(queues)),
            amqp_url: amqp_url.to_owned(),
            dead_letters_seen: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Declares the results queue of every hospital and the lanes of every pool, as
    /// `relayctl declare` does, and remembers them for clean-up.
    pub async fn declare_for_registry(&self, registry: &store::registry::RegistryFile) {
        let names = &self.topology.names;
        for hospital in &registry.hospitals {
            let code = domain::HospitalCode::parse(&hospital.code).unwrap();
            self.topology
                .declare_origin_results(&self.channel, &code)
                .await
                .unwrap();
            self.queues.lock().unwrap().extend([
                names.origin_results_queue(&code),
                names.origin_critical_queue(&code),
            ]);
        }
        for pool in &registry.pools {
            let code = domain::PoolCode::parse(&pool.code).unwrap();
            self.topology
                .declare_pool_lanes(&self.channel, &code)
                .await
                .unwrap();
            let mut queues = self.queues.lock().unwrap();
            queues.extend(
                domain::Priority::LANES_MOST_URGENT_FIRST
                    .iter()
                    .map(|priority| names.review_lane(&code, *priority)),
            );
        }
    }

    /// Deletes a queue as an operator might by mistake: its consumers are cancelled by the
    /// broker (their services reconnect and declare it again).
    pub async fn delete_queue(&self, queue: &str) {
        self.channel
            .queue_delete(queue.into(), Default::default())
            .await
            .unwrap();
    }

    /// Publishes a request as hospital HIS software does: persistent, mandatory, confirmed, with
    /// `user_id` = the test's broker user.
    pub async fn publish_request(&self, request: &v1::ReviewRequest) -> Published {
        let kind = match request.study {
            Some(v1::review_request::Study::Ecg(_)) => "ecg",
            Some(v1::review_request::Study::Imaging(_)) => "imaging",
            Some(v1::review_request::Study::Pathology(_)) => "pathology",
            None => "unknown",
        };
        let routing_key = format!(
            "{}.{kind}",
            if request.origin_hospital.is_empty() {
                "X"
            } else {
                &request.origin_hospital
            }
        );
        self.publish_bytes(&routing_key, request.encode_to_vec(), Some("guest"))
            .await
    }

    /// Publishes any bytes to the requests exchange.
    pub async fn publish_bytes(
        &self,
        routing_key: &str,
        body: Vec<u8>,
        user_id: Option<&str>,
    ) -> Published {
        self.publish_to(
            &self.topology.names.requests_exchange(),
            routing_key,
            body,
            user_id,
        )
        .await
    }

    /// Publishes any bytes to any exchange of the namespace, confirmed and routed.
    pub async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Vec<u8>,
        user_id: Option<&str>,
    ) -> Published {
        self.publish_with_headers(exchange, routing_key, body, user_id, &[])
            .await
    }

    /// Publishes any bytes with extra string headers, confirmed and routed.
    pub async fn publish_with_headers(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Vec<u8>,
        user_id: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Published {
        let published = Published {
            message_id: uuid::Uuid::new_v4().to_string(),
            correlation_id: uuid::Uuid::new_v4().to_string(),
        };
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(contract::CONTENT_TYPE.into())
            .with_type(contract::message_type::REVIEW_REQUEST.into())
            .with_message_id(published.message_id.as_str().into())
            .with_correlation_id(published.correlation_id.as_str().into());
        if let Some(user) = user_id {
            properties = properties.with_user_id(user.into());
        }
        if !headers.is_empty() {
            let mut table = FieldTable::default();
            for (name, value) in headers {
                table.insert(
                    (*name).into(),
                    bus::lapin::types::AMQPValue::LongString((*value).into()),
                );
            }
            properties = properties.with_headers(table);
        }
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            confirm,
            Confirmation::Ack(None),
            "the broker must confirm and route the request"
        );
        published
    }

    /// The next notice in an origin's results queue, waiting up to the deadline.
    pub async fn next_notice(&self, origin: &str) -> v1::OriginNotice {
        let queue = self
            .topology
            .names
            .origin_results_queue(&domain::HospitalCode::parse(origin).unwrap());
        let body = self
            .get_one(&queue, &format!("a notice for {origin}"))
            .await
            .data;
        v1::OriginNotice::decode(body.as_slice()).expect("results queues hold OriginNotices")
    }

    /// The next dead letter the recorder stored (the recorder consumes the dead-letter queue),
    /// in the order stored, waiting up to the deadline.
    pub async fn next_dead_letter(&self, db: &sqlx::PgPool) -> DeadLetter {
        use std::sync::atomic::Ordering;
        let seen = self.dead_letters_seen.load(Ordering::SeqCst);
        let everything = store::dead_letters::Selection {
            include_replayed: true,
            ..Default::default()
        };
        let stored = crate::wait_for("the recorder to store a dead letter", || async {
            store::dead_letters::list(db, &everything)
                .await
                .unwrap()
                .into_iter()
                .find(|dead| dead.id > seen)
        })
        .await;
        self.dead_letters_seen.store(stored.id, Ordering::SeqCst);
        let header = |name: &str| stored.headers[name].as_str().map(str::to_owned);
        let names = bus::DEAD_LETTER_HEADERS;
        DeadLetter {
            id: stored.id,
            reason: header(names.reason),
            detail: header(names.detail),
            source_queue: header(names.source_queue),
            message_id: Some(stored.message_id.clone()).filter(|id| !id.is_empty()),
            broker_reason: header("x-first-death-reason"),
            broker_queue: header("x-first-death-queue"),
            body: stored.body,
        }
    }

    /// How often the broker has handed the first message of `queue` back after a nack or a
    /// lost consumer: its quorum-queue `x-delivery-count` (absent means 0). Reading it takes
    /// the message and nacks it back, which itself counts one.
    pub async fn delivery_count_of_head(&self, queue: &str) -> i64 {
        let started = Instant::now();
        loop {
            let got = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .unwrap();
            if let Some(message) = got {
                let count = message
                    .delivery
                    .properties
                    .headers()
                    .as_ref()
                    .and_then(|headers| headers.inner().get("x-delivery-count").cloned());
                message
                    .delivery
                    .nack(bus::lapin::options::BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await
                    .unwrap();
                return match count {
                    None => 0,
                    Some(bus::lapin::types::AMQPValue::LongInt(n)) => i64::from(n),
                    Some(bus::lapin::types::AMQPValue::LongLongInt(n)) => n,
                    Some(other) => panic!("x-delivery-count is {other:?}"),
                };
            }
            assert!(
                started.elapsed() < DEADLINE,
                "timed out after {DEADLINE:?} waiting for a message in {queue}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Messages waiting in a queue right now.
    pub async fn depth(&self, queue: &str) -> u32 {
        let channel = self.connection.create_channel().await.unwrap();
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .unwrap();
        channel.close(200, "depth read".into()).await.ok();
        found.message_count()
    }

    pub(crate) async fn get_one(&self, queue: &str, what: &str) -> bus::lapin::message::Delivery {
        let started = Instant::now();
        loop {
            if let Some(message) = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .unwrap()
            {
                message
                    .delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .unwrap();
                return message.delivery;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "timed out after {DEADLINE:?} waiting for {what} in {queue}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Deletes every queue and exchange of the namespace.
    pub async fn delete_namespace(&self) {
        let queues = self.queues.lock().unwrap().clone();
        delete_names(&self.channel, &queues, &exchanges_of(&self.topology.names)).await;
        self.connection.close(200, "test done".into()).await.ok();
    }
}

fn exchanges_of(names: &bus::Names) -> Vec<String> {
    vec![
        names.requests_exchange(),
        names.review_exchange(),
        names.results_exchange(),
        names.events_exchange(),
        names.dead_letter_exchange(),
        names.critical_exchange(),
        names.acknowledgements_exchange(),
        names.alerts_exchange(),
    ]
}

/// Deletes queues and exchanges, ignoring those already gone.
async fn delete_names(channel: &Channel, queues: &[String], exchanges: &[String]) {
    for queue in queues {
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .ok();
    }
    for exchange in exchanges {
        channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await
            .ok();
    }
}

/// Deletes a test's namespace if the test ends without `TestRelay::stop` (a failed assertion
/// panics first). Without it every failed test would leave its quorum queues on the shared
/// broker, and each holds file handles: enough of them and the broker stops accepting
/// connections.
pub struct NamespaceCleanup {
    amqp_url: String,
    queues: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    exchanges: Vec<String>,
    /// The services' shutdown: cancelled first, so that no service re-declares a queue after
    /// its consumer was cancelled by the deletion.
    services: tokio_util::sync::CancellationToken,
    /// The services' tasks, aborted before the deletion. Cancelling alone is not enough: a
    /// session still starting up would go on to re-declare the core queues after they were
    /// deleted, because it checks the token only once it consumes.
    tasks: Vec<tokio::task::AbortHandle>,
    armed: bool,
}

impl TestBroker {
    pub fn cleanup_guard(&self, services: tokio_util::sync::CancellationToken) -> NamespaceCleanup {
        NamespaceCleanup {
            amqp_url: self.amqp_url.clone(),
            queues: self.queues.clone(),
            exchanges: exchanges_of(&self.topology.names),
            services,
            tasks: Vec::new(),
            armed: true,
        }
    }
}

impl NamespaceCleanup {
    /// Aborts these tasks, if the guard fires, before it deletes anything.
    pub fn abort_on_drop(&mut self, tasks: impl IntoIterator<Item = tokio::task::AbortHandle>) {
        self.tasks.extend(tasks);
    }

    /// The test cleaned up after itself.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for NamespaceCleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.services.cancel();
        for task in &self.tasks {
            task.abort();
        }
        let url = self.amqp_url.clone();
        let queues = self
            .queues
            .lock()
            .map(|queues| queues.clone())
            .unwrap_or_default();
        let exchanges = self.exchanges.clone();
        // Drop may run inside the test's runtime, which cannot be blocked on: clean up from a
        // thread with a runtime of its own, bounded in time.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let work = async {
                    let connection = Connection::connect(&url, Default::default()).await.ok()?;
                    let channel = connection.create_channel().await.ok()?;
                    delete_names(&channel, &queues, &exchanges).await;
                    connection.close(200, "test cleanup".into()).await.ok()
                };
                tokio::time::timeout(Duration::from_secs(30), work)
                    .await
                    .ok();
            });
        });
        cleanup.join().ok();
    }
}

/// Takes every message waiting in `queue` (acked as taken), on a connection of its own.
pub async fn take_all(queue: &str) -> Vec<bus::lapin::message::Delivery> {
    let connection = Connection::connect(&crate::amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut taken = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        taken.push(message.delivery);
    }
    connection.close(200, "queue read".into()).await.ok();
    taken
}
