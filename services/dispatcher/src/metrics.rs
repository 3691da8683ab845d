//! The dispatcher's metric families (`docs/metrics.md`, "Dispatcher"). Each is moved only after
//! what it counts is committed, so a counter never runs ahead of PostgreSQL.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use telemetry::metrics::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindPriority {
    pub kind: String,
    pub priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Routed {
    pub kind: String,
    pub priority: String,
    pub pool: String,
    pub overflow: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Duplicate {
    pub conflicting: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LadderStep {
    pub step: String,
    pub action: &'static str,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct DispatcherMetrics {
    pub received: Family<KindPriority, Counter>,
    pub routed: Family<Routed, Counter>,
    pub duplicates: Family<Duplicate, Counter>,
    pub rejected: Family<Reason, Counter>,
    pub sla_at_risk: Family<KindPriority, Counter>,
    pub sla_breached: Family<KindPriority, Counter>,
    pub escalations: Family<LadderStep, Counter>,
    pub leases_expired: Counter,
}

impl DispatcherMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        // Counters are exposed with `_total` appended.
        registry.register(
            "telerelay_requests_received",
            "Requests that decoded and validated, before routing",
            metrics.received.clone(),
        );
        registry.register(
            "telerelay_requests_routed",
            "New requests committed as routed, by pool and whether overflow chose a backup pool",
            metrics.routed.clone(),
        );
        registry.register(
            "telerelay_requests_duplicate",
            "Copies of a recorded request id the origin sent again (conflicting: other content)",
            metrics.duplicates.clone(),
        );
        registry.register(
            "telerelay_requests_rejected",
            "Refusals committed, by reason code",
            metrics.rejected.clone(),
        );
        registry.register(
            "telerelay_sla_at_risk",
            "Requests the SLA clock marked at risk",
            metrics.sla_at_risk.clone(),
        );
        registry.register(
            "telerelay_sla_breached",
            "Requests the SLA clock recorded as breached",
            metrics.sla_breached.clone(),
        );
        registry.register(
            "telerelay_escalations",
            "Escalation-ladder steps the SLA clock took, by step and what it did",
            metrics.escalations.clone(),
        );
        registry.register(
            "telerelay_leases_expired",
            "Expired leases the SLA clock released back to their lane",
            metrics.leases_expired.clone(),
        );
        // Families with a small fixed set of label sets show them from the start, so a dashboard
        // sees 0 rather than no series.
        for conflicting in [false, true] {
            drop(metrics.duplicates.get_or_create(&Duplicate { conflicting }));
        }
        for kind in domain::StudyKind::ALL {
            for priority in domain::Priority::LANES_MOST_URGENT_FIRST {
                let labels = Self::kind_priority(kind.as_str(), priority.as_str());
                drop(metrics.sla_at_risk.get_or_create(&labels));
                drop(metrics.sla_breached.get_or_create(&labels));
            }
        }
        metrics
    }

    /// A request decoded and validated.
    pub fn received(&self, request: &domain::ReviewRequest) {
        self.received
            .get_or_create(&Self::kind_priority(
                request.kind().as_str(),
                request.priority.as_str(),
            ))
            .inc();
    }

    /// A new request was committed as routed to `pool`.
    pub fn routed(&self, request: &domain::ReviewRequest, pool: &domain::PoolCode, overflow: bool) {
        self.routed
            .get_or_create(&Routed {
                kind: request.kind().as_str().to_owned(),
                priority: request.priority.as_str().to_owned(),
                pool: pool.to_string(),
                overflow,
            })
            .inc();
    }

    /// A copy of a recorded request id arrived. A broker redelivery that finds its own record is
    /// the relay's retry, not the origin's duplicate, as for `duplicates_received`.
    pub fn duplicate(&self, redelivered: bool, conflicting: bool) {
        if !redelivered {
            self.duplicates
                .get_or_create(&Duplicate { conflicting })
                .inc();
        }
    }

    /// A refusal was committed for the first time.
    pub fn rejected(&self, reason: domain::RejectionReason) {
        self.rejected
            .get_or_create(&Reason {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn kind_priority(kind: &str, priority: &str) -> KindPriority {
        KindPriority {
            kind: kind.to_owned(),
            priority: priority.to_owned(),
        }
    }
}
