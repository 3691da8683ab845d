//! Origin HIS consumers: each origin reads its own results queue as its own broker user,
//! counts results, rejections and returns, resubmits a returned request once, and acks a
//! notice only after what it caused (a resubmission) is confirmed.

use crate::county::OriginSession;
use crate::progress::Stats;
use bus::lapin::Connection;
use bus::lapin::message::Delivery;
use bus::{Handled, PublishError};
use contract::v1;
use prost::Message;

/// Notices in flight per origin (the consumer prefetch); a county inbox needs no more.
const PREFETCH: u16 = 16;

/// Consumes the origin's results queue until shutdown. A broker fault ends the session (the
/// supervisor reconnects); unacked notices are redelivered then.
pub(crate) async fn consume(
    session: &OriginSession<'_>,
    connection: &Connection,
) -> anyhow::Result<()> {
    let sim = session.sim;
    let queue = sim.names.origin_results_queue(&session.origin.code);
    let channel = connection.create_channel().await?;
    let consumer_name = format!("simulator-{}", session.origin.code);
    bus::consume_until(
        &channel,
        &queue,
        &consumer_name,
        PREFETCH,
        sim.shutdown.clone(),
        // A county's HIS, not a relay service: nothing to export.
        &telemetry::metrics::PipelineMetrics::default(),
        |delivery| handle(session, delivery),
    )
    .await?;
    channel.close(200, "simulation stopped".into()).await.ok();
    Ok(())
}

async fn handle(session: &OriginSession<'_>, delivery: Delivery) -> anyhow::Result<Handled> {
    let stats = &session.sim.stats;
    let notice = match v1::OriginNotice::decode(delivery.data.as_slice()) {
        Ok(notice) => notice,
        Err(error) => {
            // Not ours to fix: dead-letter it (the queue's dead-letter exchange keeps it).
            tracing::error!(origin = %session.origin.code, error = %error, "undecodable notice; rejecting it");
            return Ok(Handled::Refused);
        }
    };
    match notice.notice {
        Some(v1::origin_notice::Notice::Result(result)) => {
            Stats::add(&stats.results);
            if result.critical {
                Stats::add(&stats.critical_results);
                tracing::info!(
                    request_id = result.request_id,
                    reviewer = result.reviewer_id,
                    critical_finding = result.critical_finding,
                    "critical result received"
                );
            }
            session.outstanding.remove(&result.request_id);
        }
        Some(v1::origin_notice::Notice::Rejected(rejected)) => {
            Stats::add(&stats.rejections);
            let reason = v1::RejectionReason::try_from(rejected.reason)
                .map_or("unknown", |r| r.as_str_name());
            tracing::warn!(
                request_id = rejected.request_id,
                reason,
                detail = rejected.detail,
                "request rejected by the relay"
            );
            session.outstanding.remove(&rejected.request_id);
        }
        Some(v1::origin_notice::Notice::Escalated(escalated)) => {
            Stats::add(&stats.escalations);
            tracing::warn!(
                request_id = escalated.request_id,
                level = escalated.level,
                action = escalated.action,
                "request escalated by the relay"
            );
        }
        Some(v1::origin_notice::Notice::AcknowledgementRefused(refused)) => {
            tracing::warn!(
                notification_id = refused.notification_id,
                reason = refused.reason,
                detail = refused.detail,
                "critical acknowledgement refused by the relay"
            );
        }
        Some(v1::origin_notice::Notice::Returned(returned)) => {
            Stats::add(&stats.returns);
            let reason =
                v1::ReturnReason::try_from(returned.reason).map_or("unknown", |r| r.as_str_name());
            tracing::info!(
                request_id = returned.request_id,
                reason,
                reviewer = returned.reviewer_id,
                "request returned"
            );
            match session.resubmit(&returned.request_id).await {
                Ok(true) => Stats::add(&stats.resubmissions),
                Ok(false) => {}
                // The connection is gone: leave the notice unacked so it comes back.
                Err(PublishError::Broker(error)) => return Err(error.into()),
                Err(error) => {
                    Stats::add(&stats.publish_failures);
                    tracing::warn!(request_id = returned.request_id, error = %error, "resubmission not taken by the broker");
                }
            }
        }
        None => tracing::warn!(origin = %session.origin.code, "empty notice"),
    }
    Ok(Handled::Done)
}
