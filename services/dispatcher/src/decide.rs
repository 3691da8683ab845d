//! What happens to one request: the checks in order, then routing or refusal.
//!
//! The checks run cheapest and most fundamental first: size, readable body, valid fields, known
//! origin, broker-verified sender, a pool to route to. The first failure is the reason the
//! sender is told.

use crate::overflow::Placement;
use crate::resubmission;
use crate::{Context, SessionState};
use bus::lapin::message::Delivery;
use bus::messages;
use chrono::Utc;
use domain::{
    HospitalCode, LifecycleFact, Priority, Rejection, RejectionReason, RequestState, ReviewRequest,
};
use store::requests::{Acceptance, NewRequest};
use uuid::Uuid;

mod refuse;
use refuse::refuse;

/// How processing a delivery can fail.
pub(crate) enum Failure {
    /// Shutdown came while waiting out an outage; the delivery stays unacked.
    ShuttingDown,
    /// The broker connection failed; the session must reconnect.
    Broker(anyhow::Error),
    /// Processing this very message fails for a reason that waiting will not fix.
    Poison(anyhow::Error),
}

/// Runs a database operation, waiting out outages; a failure that remains is either shutdown
/// arriving during an outage, or a fault in this message's data.
async fn database<T, F, Fut>(context: &Context, what: &str, operation: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let shutdown = &context.shutdown;
    store::wait_out_outages(shutdown, what, operation)
        .await
        .map_err(|error| {
            if store::is_transient(&error) && shutdown.is_cancelled() {
                Failure::ShuttingDown
            } else {
                Failure::Poison(
                    anyhow::Error::new(error).context(format!("database refused {what}")),
                )
            }
        })
}

/// The identity facts of a delivery, known before its body is read.
struct Envelope {
    message_key: String,
    message_id: String,
    correlation_id: String,
    /// The broker-verified publishing user, if the publisher set `user_id`; for an operator's
    /// replay, the user that published the original.
    user_id: Option<String>,
    /// The stored dead letter this delivery replays, once the replay is confirmed on record.
    replay_of: Option<i64>,
}

impl Envelope {
    fn of(delivery: &Delivery) -> Self {
        let properties = &delivery.properties;
        let message_id = properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default();
        let message_key = if message_id.is_empty() {
            format!(
                "sha256:{}",
                hex::encode(store::requests::content_sha256(&delivery.data))
            )
        } else {
            message_id.clone()
        };
        Self {
            message_key,
            message_id,
            correlation_id: properties
                .correlation_id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default(),
            user_id: properties
                .user_id()
                .as_ref()
                .map(|user| user.as_str().to_owned()),
            replay_of: None,
        }
    }

    /// A replay is published by the relay's own user, so the broker cannot vouch for its sender.
    /// The replay header is believed only when an operator's replay of that dead letter, with
    /// this very body, is on record; the original sender then stands. Otherwise the header is
    /// ignored and the message is judged like any other, by its real publisher.
    async fn resolve_replay(
        mut self,
        context: &Context,
        delivery: &Delivery,
    ) -> Result<Self, Failure> {
        let headers = delivery.properties.headers().as_ref();
        let Some(dead_letter) =
            bus::header_str(headers, bus::REPLAY_OF_HEADER).and_then(|id| id.parse::<i64>().ok())
        else {
            return Ok(self);
        };
        let original_sender = database(context, "replay lookup", || {
            store::dead_letters::replayed_sender(&context.db, dead_letter, &delivery.data)
        })
        .await?;
        match original_sender {
            Some(user_id) => {
                self.user_id = user_id;
                self.replay_of = Some(dead_letter);
                // A refusal of the replay is a new refusal, recorded and dead-lettered again.
                self.message_key = format!("{}+replay-{dead_letter}", self.message_key);
            }
            None => {
                tracing::warn!(
                    dead_letter,
                    "replay header without a recorded replay of that dead letter; ignored"
                );
            }
        }
        Ok(self)
    }

    /// The refused delivery's copy for the dead-letter exchange, with the reason. It names the
    /// sender the dispatcher judged: the broker-verified publisher, or for a replay the original
    /// one (the delivery's own `user_id` is then the relay's), and the dead letter it replays.
    fn dead_letter(
        &self,
        context: &Context,
        delivery: &Delivery,
        rejection: &Rejection,
    ) -> bus::OutgoingMessage {
        let names = &context.topology.names;
        let mut copy = bus::OutgoingMessage::dead_letter(
            &names.dead_letter_exchange(),
            &names.dispatcher_queue(),
            delivery,
            &bus::DeadLetterReason {
                reason: rejection.reason.as_str().into(),
                detail: rejection.detail.clone(),
            },
        );
        let original_user = bus::DEAD_LETTER_HEADERS.original_user_id;
        copy.headers.retain(|(name, _)| name != original_user);
        if let Some(user) = &self.user_id {
            copy.headers.push((original_user.into(), user.clone()));
        }
        if let Some(dead_letter) = self.replay_of {
            copy.headers
                .push((bus::REPLAY_OF_HEADER.into(), dead_letter.to_string()));
        }
        copy
    }
}

/// Processes a delivery within its trace: the county's own when its `traceparent` is valid,
/// otherwise a new one. A bad header is replaced and said so, never a reason to refuse: the
/// header is the county's help to find its request in our logs, not part of the contract.
pub(crate) async fn process(
    context: &Context,
    state: &SessionState,
    delivery: &Delivery,
) -> Result<(), Failure> {
    let incoming = bus::trace::Incoming::of_delivery(delivery);
    let trace = incoming
        .valid()
        .unwrap_or_else(bus::trace::TraceContext::new_root);
    bus::trace::within(Some(trace), async {
        if let bus::trace::Incoming::Malformed(error) = incoming {
            tracing::warn!(error = %error, "malformed traceparent from the publisher; replaced by a new trace");
        }
        process_in_trace(context, state, delivery, &trace).await
    })
    .await
}

async fn process_in_trace(
    context: &Context,
    state: &SessionState,
    delivery: &Delivery,
    trace: &bus::trace::TraceContext,
) -> Result<(), Failure> {
    let envelope = Envelope::of(delivery)
        .resolve_replay(context, delivery)
        .await?;
    let db = &context.db;
    let sender = match &envelope.user_id {
        Some(user) => {
            database(context, "sender lookup", || {
                store::registry::hospital_of_broker_user(db, user)
            })
            .await?
        }
        None => None,
    };
    if let Some(sender) = &sender {
        // A refusal notice may go to the sender's queue; make sure it exists.
        ensure_declared(context, state, Declare::Results(sender)).await?;
    }
    let now = Utc::now();

    if delivery.data.len() > context.config.max_body_bytes {
        let rejection = Rejection::new(
            RejectionReason::Oversized,
            format!(
                "body is {} bytes; the relay accepts at most {}",
                delivery.data.len(),
                context.config.max_body_bytes
            ),
        );
        return refuse(
            context,
            delivery,
            &envelope,
            sender.as_ref(),
            None,
            rejection,
        )
        .await;
    }
    let wire = match domain::wire::decode_wire_request(&delivery.data) {
        Ok(wire) => wire,
        Err(rejection) => {
            return refuse(
                context,
                delivery,
                &envelope,
                sender.as_ref(),
                None,
                rejection,
            )
            .await;
        }
    };
    let claimed = Claimed {
        request_id: wire.request_id.clone(),
        origin: wire.origin_hospital.clone(),
    };
    let request = match domain::wire::review_request_from_wire(wire, now) {
        Ok(request) => {
            context.metrics.received(&request);
            request
        }
        Err(rejection) => {
            return refuse(
                context,
                delivery,
                &envelope,
                sender.as_ref(),
                Some(&claimed),
                rejection,
            )
            .await;
        }
    };
    if let Err(rejection) = check_sender(context, &request, envelope.user_id.as_deref()).await? {
        return refuse(
            context,
            delivery,
            &envelope,
            sender.as_ref(),
            Some(&claimed),
            rejection,
        )
        .await;
    }
    if let Err(rejection) = check_express_lane(context, delivery, &request) {
        return refuse(
            context,
            delivery,
            &envelope,
            sender.as_ref(),
            Some(&claimed),
            rejection,
        )
        .await;
    }
    let route = database(context, "routing", || {
        store::registry::route(
            db,
            &request.origin,
            &request.department,
            request.subspecialty.as_deref(),
            request.kind(),
        )
    })
    .await?;
    let Some(route) = route else {
        let rejection = Rejection::new(
            RejectionReason::NoPairing,
            format!(
                "no reviewer pool reads {} from {} (department {}), and no province-wide backup pool is registered for {}",
                request.kind(),
                request.origin,
                request.department,
                request.kind()
            ),
        );
        return refuse(
            context,
            delivery,
            &envelope,
            sender.as_ref(),
            Some(&claimed),
            rejection,
        )
        .await;
    };
    let placement = database(context, "overflow check", || {
        crate::overflow::place(db, &route, request.priority)
    })
    .await?;
    // The lane the request is placed in must exist before the request is committed.
    ensure_declared(context, state, Declare::Lanes(&placement.pool)).await?;
    ensure_declared(context, state, Declare::Results(&request.origin)).await?;
    let routing = Routing {
        rule: route.rule.as_str(),
        placement: &placement,
    };
    accept(
        context, state, delivery, &envelope, &request, &routing, trace,
    )
    .await
}

/// The express lane (routing key `<origin>.<kind>.stat`) is for STAT requests only: any other
/// request published there would jump ahead of every origin's waiting work.
fn check_express_lane(
    context: &Context,
    delivery: &Delivery,
    request: &ReviewRequest,
) -> Result<(), Rejection> {
    let routing_key = delivery.routing_key.as_str();
    let published_as_stat = delivery.exchange.as_str()
        == context.topology.names.requests_exchange()
        && bus::Names::is_stat_request_key(routing_key);
    if published_as_stat && request.priority != Priority::Stat {
        return Err(Rejection::new(
            RejectionReason::InvalidField,
            format!(
                "priority: the routing key {routing_key} claims the STAT express lane but the request is {}",
                request.priority
            ),
        ));
    }
    Ok(())
}

/// The request id and origin as the body states them, before validation.
struct Claimed {
    request_id: String,
    origin: String,
}

/// The origin must be registered, and the broker-verified `user_id` must be the origin's own
/// broker user: a hospital cannot submit in another hospital's name.
async fn check_sender(
    context: &Context,
    request: &ReviewRequest,
    user_id: Option<&str>,
) -> Result<Result<(), Rejection>, Failure> {
    let registered_user = database(context, "origin lookup", || {
        store::registry::broker_user_of(&context.db, &request.origin)
    })
    .await?;
    let Some(registered_user) = registered_user else {
        return Ok(Err(Rejection::new(
            RejectionReason::UnknownOrigin,
            format!(
                "origin hospital {} is not registered with the relay",
                request.origin
            ),
        )));
    };
    Ok(match user_id {
        None => Err(Rejection::new(
            RejectionReason::SenderMismatch,
            "the message has no user_id; publish with user_id set to your broker user",
        )),
        Some(user) if user != registered_user => Err(Rejection::new(
            RejectionReason::SenderMismatch,
            format!(
                "broker user {user} may not submit requests for origin {}",
                request.origin
            ),
        )),
        Some(_) => Ok(()),
    })
}

/// Declares a queue group once per connection, before anything routed to it is committed: the
/// results exchange also feeds the recorder, so `mandatory` alone would not notice a missing
/// county queue.
pub(crate) async fn ensure_declared(
    context: &Context,
    state: &SessionState,
    target: Declare<'_>,
) -> Result<(), Failure> {
    let key = match target {
        Declare::Lanes(pool) => format!("pool:{pool}"),
        Declare::Results(origin) => format!("origin:{origin}"),
    };
    let mut declared = state.declared.lock().await;
    if declared.contains(&key) {
        return Ok(());
    }
    let channel = state.publisher.channel();
    let result = match target {
        Declare::Lanes(pool) => context.topology.declare_pool_lanes(channel, pool).await,
        Declare::Results(origin) => {
            context
                .topology
                .declare_origin_results(channel, origin)
                .await
        }
    };
    result.map_err(|error| Failure::Broker(error.into()))?;
    declared.insert(key);
    Ok(())
}

#[derive(Clone, Copy)]
pub(crate) enum Declare<'a> {
    Lanes(&'a domain::PoolCode),
    Results(&'a HospitalCode),
}

/// Where a request goes, and by which rule of the registry.
struct Routing<'a> {
    rule: &'a str,
    placement: &'a Placement,
}

async fn accept(
    context: &Context,
    state: &SessionState,
    delivery: &Delivery,
    envelope: &Envelope,
    request: &ReviewRequest,
    routing: &Routing<'_>,
    trace: &bus::trace::TraceContext,
) -> Result<(), Failure> {
    let placement = routing.placement;
    let names = &context.topology.names;
    let pool = &placement.pool;
    let id = Uuid::new_v4();
    let trace_id = trace.trace_id.to_string();
    let correlation_id = if envelope.correlation_id.is_empty() {
        id.to_string()
    } else {
        envelope.correlation_id.clone()
    };
    let new_request = NewRequest {
        id,
        origin: &request.origin,
        request_id: &request.request_id,
        kind: request.kind(),
        priority: request.priority,
        department: &request.department,
        subspecialty: request.subspecialty.as_deref(),
        correlation_id: &correlation_id,
        trace_id: &trace_id,
        requested_at: request.requested_at,
        body: &delivery.data,
        pool,
        frozen_section: matches!(&request.study, domain::Study::Pathology(case) if case.frozen_section),
        redelivered: delivery.redelivered,
    };
    let outcome = database(context, "recording a request", || async {
        let mut tx = context.db.begin().await?;
        let original = match resubmission::judge(&mut tx, request).await? {
            Ok(original) => original,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let acceptance = store::requests::accept(&mut tx, &new_request).await?;
        let mut queued = Vec::new();
        if acceptance == Acceptance::Accepted {
            let at = store::db_now(&mut tx).await?;
            let resubmission_note = resubmission::note(original.as_ref());
            let fact = |state: RequestState, reason: String| LifecycleFact {
                event_id: Uuid::new_v4(),
                request_uuid: Some(id),
                request_id: request.request_id.to_string(),
                origin: request.origin.to_string(),
                state,
                actor: format!("hospital:{}", request.origin),
                reason,
                pool: Some(pool.to_string()),
                correlation_id: correlation_id.clone(),
                occurred_at: at,
            };
            let received = fact(
                RequestState::Received,
                format!(
                    "{} {} request received{resubmission_note}",
                    request.priority,
                    request.kind()
                ),
            );
            let routed = LifecycleFact {
                actor: "service:dispatcher".into(),
                ..fact(
                    RequestState::Routed,
                    format!(
                        "routed by {} to pool {pool} lane {}{}{resubmission_note}",
                        routing.rule,
                        request.priority,
                        placement
                            .overflow
                            .as_ref()
                            .map(|why| format!("; {why}"))
                            .unwrap_or_default()
                    ),
                )
            };
            let mut messages = vec![
                messages::routed_request(
                    names,
                    pool,
                    request.priority,
                    id,
                    correlation_id.clone(),
                    delivery.data.clone(),
                ),
                messages::lifecycle_event(names, &received),
                messages::lifecycle_event(names, &routed),
            ];
            if let Some(original) = &original {
                messages.push(resubmission::link(&mut tx, names, original, id, request, at).await?);
            }
            queued = store::outbox::enqueue(&mut tx, &messages).await?;
        }
        crash_point::reached("dispatcher.before_commit");
        tx.commit().await?;
        Ok(Ok((acceptance, queued)))
    })
    .await?;

    let (outcome, queued) = match outcome {
        Ok(accepted) => accepted,
        Err(rejection) => {
            let claimed = Claimed {
                request_id: request.request_id.to_string(),
                origin: request.origin.to_string(),
            };
            return refuse(
                context,
                delivery,
                envelope,
                Some(&request.origin),
                Some(&claimed),
                rejection,
            )
            .await;
        }
    };
    match outcome {
        Acceptance::Accepted => {
            if request.priority == Priority::Stat {
                publish_at_once(context, state, &queued).await;
            } else {
                context.outbox_wake.notify_one();
            }
            context
                .metrics
                .routed(request, pool, placement.overflow.is_some());
            tracing::info!(request_uuid = %id, correlation_id, origin = %request.origin, pool = %pool,
                overflow = placement.overflow.as_deref().unwrap_or(""), priority = %request.priority, kind = %request.kind(), "request routed");
            Ok(())
        }
        Acceptance::Duplicate { existing } => {
            context.metrics.duplicate(delivery.redelivered, false);
            tracing::info!(request_uuid = %existing, origin = %request.origin, "duplicate of a recorded request; nothing to do");
            Ok(())
        }
        Acceptance::ConflictingDuplicate { existing } => {
            context.metrics.duplicate(delivery.redelivered, true);
            let rejection = Rejection::new(
                RejectionReason::ConflictingDuplicate,
                format!(
                    "request id {} was already used for a request with different content",
                    request.request_id
                ),
            );
            tracing::warn!(request_uuid = %existing, origin = %request.origin, "request id reused with different content");
            let claimed = Claimed {
                request_id: request.request_id.to_string(),
                origin: request.origin.to_string(),
            };
            let sender = Some(&request.origin);
            refuse(
                context,
                delivery,
                envelope,
                sender,
                Some(&claimed),
                rejection,
            )
            .await
        }
    }
}

/// A STAT request's lane message goes out now, from this handler, instead of waiting for the
/// outbox relay's next pass behind routine batches (issue 6: publish to reviewer in
/// milliseconds under a backlog). Its rows are published on the express lane's own channel
/// and locked, so the relay never sends them twice. If this fails, the rows are still in the
/// outbox and the relay, woken here, publishes them.
async fn publish_at_once(context: &Context, state: &SessionState, queued: &[i64]) {
    if let Err(error) = state.stat_outbox.publish_rows(queued).await {
        tracing::warn!(
            error = format!("{error:#}"),
            "STAT messages left to the outbox relay"
        );
        context.outbox_wake.notify_one();
    }
}
