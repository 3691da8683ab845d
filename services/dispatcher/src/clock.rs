//! The SLA clock: every `clock_interval_ms` it walks the requests whose time has come, in
//! PostgreSQL (so it survives restarts and several dispatchers share it):
//!
//! 1. a lease that ran out is released: the request waits in its lane again, the draft kept;
//! 2. a request past its at-risk mark is warned about once (`at_risk` event);
//! 3. a request past its due time is flagged once (`escalated` event, "SLA breached");
//! 4. each step of the escalation ladder runs once, in order, when its delay after the due time
//!    has passed: `reroute_backup` moves a waiting request to the next backup pool (a request
//!    being read stays with its reader), `page_pool_head` / `page_on_call` publish a page to
//!    `<ns>.alerts`. Every step emits an `escalated` event and tells the origin
//!    (`OriginNotice.escalated`).
//!
//! Each action is one transaction: the row is locked (`for update skip locked`), changed, and
//! its event and messages are written to the outbox before the commit. Only requests still
//! `routed` or `claimed` are touched: a report stops the clock.

use crate::decide::{Declare, ensure_declared};
use crate::metrics::{DispatcherMetrics, LadderStep};
use crate::{Context, SessionState};
use bus::{Names, OutgoingMessage, messages};
use contract::v1;
use domain::{HospitalCode, PoolCode, RequestState};
use prost::Message as _;
use std::time::Duration;
use store::sla::{ClockRequest, DueStep};
use tokio_util::sync::CancellationToken;

/// Who the clock's events name as actor.
pub const ACTOR: &str = "service:sla-clock";

/// AMQP `type` of a page: the body is a `RequestEscalated`, as the origin's notice.
pub const PAGE_MESSAGE_TYPE: &str = "telerelay.v1.RequestEscalated";

/// Header on a page naming the origin hospital of the overdue request.
pub const PAGE_ORIGIN_HEADER: &str = "x-telerelay-origin";

/// Most actions of one kind per tick, so that a large backlog of due work cannot hold off
/// shutdown; the rest waits for the next tick.
const BATCH: usize = 200;

/// Runs the clock until `stop`. Errors are logged and the next tick tries again: the state lives
/// in PostgreSQL, so nothing is lost by a failed tick.
pub(crate) async fn run(
    context: std::sync::Arc<Context>,
    state: std::sync::Arc<SessionState>,
    stop: CancellationToken,
) {
    let interval = Duration::from_millis(context.config.clock_interval_ms);
    loop {
        match tick(&context, &state).await {
            Ok(0) => {}
            Ok(actions) => {
                context.outbox_wake.notify_one();
                tracing::debug!(actions, "SLA clock tick");
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "SLA clock tick failed; retrying next tick"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One pass over everything due; returns how many actions were committed.
async fn tick(context: &Context, state: &SessionState) -> anyhow::Result<usize> {
    let names = &context.topology.names;
    let db = &context.db;
    let mut actions = 0;
    for _ in 0..BATCH {
        let mut tx = db.begin().await?;
        let Some(request) = store::sla::next_expired_lease(&mut tx).await? else {
            break;
        };
        let trace = store::trace::of_request(&mut *tx, request.id).await?;
        bus::trace::within(trace, release_expired_lease(&mut tx, names, &request)).await?;
        tx.commit().await?;
        context.metrics.leases_expired.inc();
        actions += 1;
    }
    for _ in 0..BATCH {
        let mut tx = db.begin().await?;
        let Some(request) = store::sla::next_at_risk(&mut tx).await? else {
            break;
        };
        let trace = store::trace::of_request(&mut *tx, request.id).await?;
        bus::trace::within(trace, warn_at_risk(&mut tx, names, &request)).await?;
        tx.commit().await?;
        context
            .metrics
            .sla_at_risk
            .get_or_create(&DispatcherMetrics::kind_priority(
                &request.kind,
                &request.priority,
            ))
            .inc();
        actions += 1;
    }
    for _ in 0..BATCH {
        let mut tx = db.begin().await?;
        let Some(request) = store::sla::next_breach(&mut tx).await? else {
            break;
        };
        let trace = store::trace::of_request(&mut *tx, request.id).await?;
        bus::trace::within(trace, record_breach(&mut tx, names, &request)).await?;
        tx.commit().await?;
        context
            .metrics
            .sla_breached
            .get_or_create(&DispatcherMetrics::kind_priority(
                &request.kind,
                &request.priority,
            ))
            .inc();
        actions += 1;
    }
    for _ in 0..BATCH {
        let mut tx = db.begin().await?;
        let Some(due) = store::sla::next_ladder_step(&mut tx).await? else {
            break;
        };
        // Escalation climbs the same ladder as overflow: the request's route through today's
        // registry, primary then backups in order.
        let backup = match due.step.action.as_str() {
            "reroute_backup" => {
                store::registry::next_pool_of_request(&context.db, due.request.id).await?
            }
            _ => None,
        };
        if let Some(backup) = backup.as_ref().filter(|_| due.request.state == "routed") {
            // The backup pool's lanes exist before the copy is committed to the outbox, so it
            // can never be unroutable.
            ensure_declared(context, state, Declare::Lanes(backup))
                .await
                .map_err(|_| anyhow::anyhow!("declaring the lanes of pool {backup}"))?;
        }
        let trace = store::trace::of_request(&mut *tx, due.request.id).await?;
        let escalation =
            bus::trace::within(trace, take_step(&mut tx, names, &due, backup.as_ref())).await?;
        tx.commit().await?;
        context
            .metrics
            .escalations
            .get_or_create(&LadderStep {
                step: due.step.step.to_string(),
                action: escalation.action,
            })
            .inc();
        actions += 1;
    }
    Ok(actions)
}

async fn release_expired_lease(
    conn: &mut sqlx::PgConnection,
    names: &Names,
    request: &ClockRequest,
) -> sqlx::Result<()> {
    let holder = request.claimed_by.as_deref().unwrap_or("nobody");
    let reason = format!("lease expired (held by {holder}); back in its lane, draft kept");
    store::sla::release_to_lane(conn, names, request, ACTOR, reason).await?;
    tracing::info!(request_uuid = %request.id, correlation_id = request.correlation_id, holder, "lease expired; request released");
    Ok(())
}

async fn warn_at_risk(
    conn: &mut sqlx::PgConnection,
    names: &Names,
    request: &ClockRequest,
) -> sqlx::Result<()> {
    store::sla::mark_warned(conn, request.id).await?;
    let at = store::db_now(conn).await?;
    let reason = format!(
        "SLA at risk: {} due at {}",
        request.state,
        due_text(request)
    );
    let fact = request.fact(RequestState::AtRisk, ACTOR, reason, at);
    store::outbox::enqueue(conn, &[messages::lifecycle_event(names, &fact)]).await?;
    tracing::info!(request_uuid = %request.id, correlation_id = request.correlation_id, "SLA at risk");
    Ok(())
}

async fn record_breach(
    conn: &mut sqlx::PgConnection,
    names: &Names,
    request: &ClockRequest,
) -> sqlx::Result<()> {
    store::sla::mark_breached(conn, request.id).await?;
    let at = store::db_now(conn).await?;
    let reason = format!(
        "SLA breached: due at {}, still {}; flagged, escalation ladder starts",
        due_text(request),
        request.state
    );
    let fact = request.fact(RequestState::Escalated, ACTOR, reason, at);
    store::outbox::enqueue(conn, &[messages::lifecycle_event(names, &fact)]).await?;
    tracing::warn!(request_uuid = %request.id, correlation_id = request.correlation_id, "SLA breached");
    Ok(())
}

/// What one ladder step did, as the origin's notice and the page name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escalation {
    /// `rerouted_to_backup`, `kept_with_reader`, `no_backup_pool`, `paged_pool_head`,
    /// `no_pool_head` or `paged_on_call`.
    pub action: &'static str,
    pub detail: String,
    /// The pool the request waits in afterwards.
    pub pool: Option<String>,
    /// Who was paged, if anyone.
    pub paged: Option<String>,
}

/// Runs one due ladder step for the locked request in the caller's transaction: the action, the
/// step recorded, the `escalated` event, the origin's notice and the page, all in the outbox.
/// `backup` is the pool a `reroute_backup` step moves a waiting request to
/// (`store::registry::next_pool_of_request`), `None` at the end of the ladder. Public so that
/// tests can hold the transaction open against a racing claim.
pub async fn take_step(
    conn: &mut sqlx::PgConnection,
    names: &Names,
    due: &DueStep,
    backup: Option<&PoolCode>,
) -> sqlx::Result<Escalation> {
    let request = &due.request;
    let current = request.pool.clone().unwrap_or_default();
    let mut outgoing = Vec::new();
    let escalation = match due.step.action.as_str() {
        "reroute_backup" if request.state == "claimed" => Escalation {
            action: "kept_with_reader",
            detail: format!("being read in pool {current}; not rerouted"),
            pool: request.pool.clone(),
            paged: None,
        },
        "reroute_backup" => match backup {
            Some(backup) if store::sla::reroute(conn, request.id, backup).await? => {
                if let Some(copy) = store::sla::lane_copy(conn, names, request, backup).await? {
                    outgoing.push(copy);
                }
                Escalation {
                    action: "rerouted_to_backup",
                    detail: format!("rerouted from pool {current} to backup pool {backup}"),
                    pool: Some(backup.to_string()),
                    paged: None,
                }
            }
            _ => Escalation {
                action: "no_backup_pool",
                detail: format!("no backup pool after {current}; still waiting there"),
                pool: request.pool.clone(),
                paged: None,
            },
        },
        "page_pool_head" => match store::sla::pool_head(conn, &current).await? {
            Some(head) => Escalation {
                action: "paged_pool_head",
                detail: format!("paged {head}, head of pool {current}"),
                pool: request.pool.clone(),
                paged: Some(head),
            },
            None => Escalation {
                action: "no_pool_head",
                detail: format!("pool {current} has no head registered; nobody paged"),
                pool: request.pool.clone(),
                paged: None,
            },
        },
        _ => match &due.step.contact {
            Some(contact) => Escalation {
                action: "paged_on_call",
                detail: format!("paged on-call {contact} (request in pool {current})"),
                pool: request.pool.clone(),
                paged: Some(contact.clone()),
            },
            None => Escalation {
                action: "no_on_call_contact",
                detail: "the ladder step names no contact; nobody paged".into(),
                pool: request.pool.clone(),
                paged: None,
            },
        },
    };
    store::sla::mark_step_done(conn, request.id, due.step.step).await?;
    let at = store::db_now(conn).await?;
    let level = u32::try_from(due.step.step).unwrap_or_default();
    let escalated = v1::RequestEscalated {
        request_id: request.request_id.clone(),
        level,
        action: escalation.action.into(),
        detail: escalation.detail.clone(),
        due_at: request.due_at.map(domain::wire::timestamp),
        escalated_at: Some(domain::wire::timestamp(at)),
    };
    let fact = domain::LifecycleFact {
        pool: escalation.pool.clone(),
        ..request.fact(
            RequestState::Escalated,
            ACTOR,
            format!(
                "SLA ladder step {level}: {}: {}",
                escalation.action, escalation.detail
            ),
            at,
        )
    };
    outgoing.push(messages::lifecycle_event(names, &fact));
    if let Ok(origin) = HospitalCode::parse(&request.origin) {
        let notice = v1::OriginNotice {
            notice: Some(v1::origin_notice::Notice::Escalated(escalated.clone())),
        };
        outgoing.push(messages::origin_notice(
            names,
            &origin,
            &notice,
            format!("escalated:{}:{level}", request.id),
            request.correlation_id.clone(),
        ));
    }
    if let Some(contact) = &escalation.paged {
        outgoing.push(page(names, request, contact, level, &escalated));
    }
    store::outbox::enqueue(conn, &outgoing).await?;
    tracing::warn!(request_uuid = %request.id, correlation_id = request.correlation_id, level,
        action = escalation.action, "SLA escalation step");
    Ok(escalation)
}

/// A page for the paging bridge: routing key `page.<contact>` on the alerts exchange. The
/// message id is fixed per request and step, so a republished page is recognisably the same.
fn page(
    names: &Names,
    request: &ClockRequest,
    contact: &str,
    level: u32,
    escalated: &v1::RequestEscalated,
) -> OutgoingMessage {
    OutgoingMessage {
        exchange: names.alerts_exchange(),
        routing_key: format!("page.{contact}"),
        message_type: PAGE_MESSAGE_TYPE.into(),
        message_id: format!("page:{}:{level}", request.id),
        correlation_id: request.correlation_id.clone(),
        body: escalated.encode_to_vec(),
        headers: vec![
            (
                messages::RELAY_REQUEST_UUID_HEADER.into(),
                request.id.to_string(),
            ),
            (PAGE_ORIGIN_HEADER.into(), request.origin.clone()),
        ],
    }
}

fn due_text(request: &ClockRequest) -> String {
    request
        .due_at
        .map(|due| due.to_rfc3339())
        .unwrap_or_else(|| "unknown".into())
}
