//! County HIS publishers: each origin hospital connects as its own broker user and publishes
//! review requests built from the real files, at a Poisson rate, with the occasional HIS retry.

use crate::Simulation;
use crate::critical_inbox::{self, Acknowledged};
use crate::ids;
use crate::ledger::{Outstanding, Sent};
use crate::origin_inbox;
use crate::progress::Stats;
use crate::publish::{OriginMessage, publish_as_origin};
use bus::PublishError;
use bus::lapin::options::ConfirmSelectOptions;
use bus::lapin::{Channel, Connection};
use contract::v1;
use domain::{HospitalCode, StudyKind};
use prost::Message;
use rand::Rng;
use runtime::Session;
use std::time::Duration;

/// An origin hospital as the simulator plays it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginHospital {
    pub code: HospitalCode,
    /// The broker user it connects and publishes as.
    pub broker_user: String,
}

/// One origin's broker session: its confirm-mode publishing channel and what it remembers.
pub(crate) struct OriginSession<'a> {
    pub sim: &'a Simulation,
    pub origin: &'a OriginHospital,
    pub outstanding: &'a Outstanding,
    pub channel: Channel,
}

/// Runs one origin until shutdown: reconnects with backoff whenever the broker goes away.
pub(crate) async fn run_origin(
    sim: &Simulation,
    origin: &OriginHospital,
    outstanding: &Outstanding,
) -> anyhow::Result<()> {
    let addresses = bus::BrokerAddresses::parse(&sim.config.origin_amqp_url(&origin.broker_user))
        .map_err(anyhow::Error::msg)?;
    let name = format!("simulator-{}", origin.code);
    // Outlives broker sessions: a reminder after a reconnect is still recognised.
    let acknowledged = Acknowledged::default();
    let unexported = telemetry::metrics::PipelineMetrics::default();
    runtime::supervise(
        &name,
        &addresses,
        &unexported,
        sim.shutdown.clone(),
        |connection| session(sim, origin, outstanding, &acknowledged, connection),
    )
    .await
}

async fn session(
    sim: &Simulation,
    origin: &OriginHospital,
    outstanding: &Outstanding,
    acknowledged: &Acknowledged,
    connection: Connection,
) -> anyhow::Result<Session> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let origin_session = OriginSession {
        sim,
        origin,
        outstanding,
        channel,
    };
    tokio::try_join!(
        publish_new_requests(&origin_session),
        origin_inbox::consume(&origin_session, &connection),
        critical_inbox::consume(&origin_session, &connection, acknowledged)
    )?;
    connection
        .close(200, "simulation stopped".into())
        .await
        .ok();
    Ok(Session::Drained)
}

/// Publishes new requests at this origin's share of the rate until shutdown or until the
/// total is reached. Arrivals are a Poisson process, as orders from many clinicians are.
async fn publish_new_requests(session: &OriginSession<'_>) -> anyhow::Result<()> {
    let sim = session.sim;
    let rate = sim.config.sim_rate_per_second / sim.origin_count as f64;
    loop {
        let gap = -(1.0 - rand::rng().random::<f64>()).ln() / rate;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(gap.min(60.0))) => {}
            _ = sim.shutdown.cancelled() => return Ok(()),
        }
        let Some(ticket) = sim.budget.take() else {
            tracing::info!(origin = %session.origin.code, "total reached; this origin stops publishing");
            return Ok(());
        };
        let sent = session.new_request();
        Stats::add(&sim.stats.published);
        match session.send(sent).await {
            Ok(kind) => {
                ticket.spend();
                sim.stats.confirmed_new(kind);
            }
            Err(error) => {
                Stats::add(&sim.stats.publish_failures);
                match error {
                    // Not taken, but the channel is sound (nothing is bound for it): go on.
                    PublishError::Unroutable { .. } => {
                        tracing::warn!(origin = %session.origin.code, error = %error, "request not taken by the broker");
                    }
                    // A nack, a missing confirm or a failed channel: start a new session, as a
                    // HIS should. On RabbitMQ 3.10 a channel that first published to a quorum
                    // queue while its leader was being re-elected after a node loss can stay
                    // nacked for good; a new connection and channel recover.
                    other => return Err(other.into()),
                }
            }
        }
    }
}

impl OriginSession<'_> {
    /// Draws what the next new request is: kind, priority and source, by the configured mix.
    fn new_request(&self) -> Sent {
        let config = &self.sim.config;
        let mut rng = rand::rng();
        let kind = StudyKind::ALL[weighted_index(&config.kind_weights(), &mut rng)];
        let mut priority = [
            v1::Priority::Stat,
            v1::Priority::Asap,
            v1::Priority::Urgent,
            v1::Priority::Routine,
        ][weighted_index(&config.priority_weights(), &mut rng)];
        let mut frozen_section = false;
        let label = match kind {
            StudyKind::Ecg => {
                let records = self.sim.catalog.ecg_records();
                records[rng.random_range(0..records.len())].label.clone()
            }
            StudyKind::Imaging => {
                let sources = self.sim.catalog.imaging_sources();
                sources[rng.random_range(0..sources.len())].label.to_owned()
            }
            StudyKind::Pathology => {
                frozen_section = rng.random_bool(config.sim_frozen_section_probability);
                if frozen_section {
                    // The surgeon is waiting with the patient open.
                    priority = v1::Priority::Stat;
                }
                (if frozen_section { "frozen" } else { "slide" }).to_owned()
            }
        };
        Sent {
            kind,
            priority,
            label,
            frozen_section,
            patient: None,
            resubmission_of: None,
        }
    }

    /// Builds, remembers and publishes a request (and now and then publishes it twice, as a
    /// HIS that did not see its first confirm would). Returns the kind once confirmed.
    async fn send(&self, mut sent: Sent) -> Result<StudyKind, PublishError> {
        let sim = self.sim;
        let origin = self.origin.code.as_str();
        let request_id =
            ids::request_id(origin, sent.kind, &sent.label, &sim.run_id, sim.next_seq());
        let mut request = match sent.kind {
            StudyKind::Ecg => {
                sim.catalog
                    .ecg_request(origin, &request_id, sent.priority, Some(&sent.label))
            }
            StudyKind::Imaging => {
                sim.catalog
                    .imaging_request(origin, &request_id, sent.priority, Some(&sent.label))
            }
            StudyKind::Pathology => sim.catalog.pathology_request(
                origin,
                &request_id,
                sent.priority,
                sent.frozen_section,
            ),
        };
        match &sent.patient {
            // A resubmission is about the same patient.
            Some(patient) => request.patient = Some(patient.clone()),
            None => {
                // A new patient: the HIS registers name and national id under the pseudonym.
                if let Some(patient) = &request.patient {
                    sim.his_register.admit(patient);
                }
                sent.patient = request.patient.clone();
            }
        }
        if let Some(original) = &sent.resubmission_of {
            request.resubmission_of = original.clone();
        }
        let kind = sent.kind;
        let stat = sent.priority == v1::Priority::Stat;
        // Remembered before publishing: the outcome may arrive before the confirm.
        self.outstanding.insert(request_id.clone(), sent);
        let correlation_id = uuid::Uuid::new_v4().to_string();
        // The HIS's own trace of this request; a copy sent again is the same request, same trace.
        let traceparent = bus::trace::TraceContext::new_root().to_string();
        let body = request.encode_to_vec();
        if let Err(error) = self
            .publish(kind, stat, &body, &correlation_id, &traceparent)
            .await
        {
            self.outstanding.remove(&request_id);
            return Err(error);
        }
        tracing::debug!(request_id, kind = kind.as_str(), "request confirmed");
        if rand::rng().random_bool(sim.config.sim_duplicate_probability) {
            // Best effort: the request itself is confirmed whatever happens to its copy (a broker
            // fault surfaces again on the next publish).
            match self
                .publish(kind, stat, &body, &correlation_id, &traceparent)
                .await
            {
                Ok(()) => Stats::add(&sim.stats.duplicates_sent),
                Err(error) => {
                    tracing::warn!(request_id, error = %error, "duplicate not taken by the broker")
                }
            }
        }
        Ok(kind)
    }

    /// Resubmits a returned request once, as the county would after fixing it: same patient,
    /// kind and priority; an unreadable ECG is recorded again (another record). Returns whether
    /// a resubmission was published.
    pub(crate) async fn resubmit(&self, original_id: &str) -> Result<bool, PublishError> {
        let Some(original) = self.outstanding.get(original_id) else {
            return Ok(false);
        };
        if original.resubmission_of.is_some() {
            self.outstanding.remove(original_id);
            return Ok(false);
        }
        let mut again = Sent {
            resubmission_of: Some(original_id.to_owned()),
            ..original
        };
        if again.kind == StudyKind::Ecg
            && self
                .sim
                .catalog
                .ecg_record(&again.label)
                .is_some_and(|r| r.unreadable)
        {
            let readable: Vec<_> = self
                .sim
                .catalog
                .ecg_records()
                .iter()
                .filter(|r| !r.unreadable)
                .collect();
            if !readable.is_empty() {
                again.label = readable[rand::rng().random_range(0..readable.len())]
                    .label
                    .clone();
            }
        }
        self.send(again).await?;
        self.outstanding.remove(original_id);
        Ok(true)
    }

    /// Publishes a request; a STAT one on the express lane's routing key.
    async fn publish(
        &self,
        kind: StudyKind,
        stat: bool,
        body: &[u8],
        correlation_id: &str,
        traceparent: &str,
    ) -> Result<(), PublishError> {
        let exchange = self.sim.names.requests_exchange();
        let routing_key =
            bus::Names::request_routing_key(self.origin.code.as_str(), kind.as_str(), stat);
        let message = OriginMessage {
            exchange: &exchange,
            routing_key: &routing_key,
            broker_user: &self.origin.broker_user,
            message_type: contract::message_type::REVIEW_REQUEST,
            body,
            correlation_id,
            traceparent: Some(traceparent),
        };
        publish_as_origin(
            &self.channel,
            &message,
            self.sim.config.broker.confirm_timeout(),
        )
        .await
    }
}

/// An index drawn with probability proportional to its weight (weights are validated to be
/// non-negative with a positive sum).
fn weighted_index(weights: &[f64], rng: &mut impl Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut point = rng.random::<f64>() * total;
    for (index, weight) in weights.iter().enumerate() {
        if point < *weight {
            return index;
        }
        point -= weight;
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_draws_follow_the_weights_and_never_pick_a_zero_weight() {
        let mut rng = rand::rng();
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            counts[weighted_index(&[0.7, 0.0, 0.3], &mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((6_500..7_500).contains(&counts[0]), "{counts:?}");
    }
}
