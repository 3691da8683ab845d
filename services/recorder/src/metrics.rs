//! The recorder's metric families (`docs/metrics.md`, "Recorder"): what it recorded, moved only
//! after the write committed and only the first time (a redelivery counts nothing), and the
//! province's state as gauges (see `gauges`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::AtomicU64;
use telemetry::metrics::{HistogramFamily, QueueLabels, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeadLetterLabels {
    pub reason: String,
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TurnaroundLabels {
    pub stage: &'static str,
    pub kind: String,
    pub priority: String,
    pub origin: String,
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReturnLabels {
    pub reason: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindOrigin {
    pub kind: String,
    pub origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PoolPriority {
    pub pool: String,
    pub priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: String,
}

/// `telerelay_turnaround_seconds{stage}`.
pub(crate) const RECEIVED_TO_REPORTED: &str = "received_to_reported";
pub(crate) const REPORTED_TO_DELIVERED: &str = "reported_to_delivered";

/// 30 s, 1, 2, 5, 10, 15, 20, 30, 45 min, 1, 2, 4, 8, 24, 72 h.
const TURNAROUND_BUCKETS: [f64; 15] = [
    30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 7200.0, 14400.0,
    28800.0, 86400.0, 259200.0,
];

/// 30 s, 1, 2, 5, 10, 15, 20, 30, 60 min.
const CRITICAL_ACK_BUCKETS: [f64; 9] = [
    30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0,
];

fn turnaround_histogram() -> Histogram {
    Histogram::new(TURNAROUND_BUCKETS)
}

fn critical_ack_histogram() -> Histogram {
    Histogram::new(CRITICAL_ACK_BUCKETS)
}

#[derive(Clone, Debug)]
pub(crate) struct RecorderMetrics {
    pub events_recorded: Family<StateLabel, Counter>,
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    pub turnaround: HistogramFamily<TurnaroundLabels>,
    pub returns: Family<ReturnLabels, Counter>,
    pub critical_ack: HistogramFamily<KindOrigin>,
    pub critical_reminders: Counter,
    pub gauges: Gauges,
}

/// The province's state, refreshed by `gauges::run`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Gauges {
    pub queue_messages: Family<QueueLabels, Gauge>,
    pub lane_waiting: Family<PoolPriority, Gauge>,
    pub lane_oldest_waiting: Family<PoolPriority, Gauge<f64, AtomicU64>>,
    pub sla_open_at_risk: Gauge,
    pub sla_open_overdue: Gauge,
    pub critical_open: Gauge,
    pub critical_overdue: Gauge,
    pub dead_letters_unreplayed: Family<ReasonLabel, Gauge>,
}

impl RecorderMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            events_recorded: Family::default(),
            dead_letters: Family::default(),
            turnaround: Family::new_with_constructor(turnaround_histogram),
            returns: Family::default(),
            critical_ack: Family::new_with_constructor(critical_ack_histogram),
            critical_reminders: Counter::default(),
            gauges: Gauges::default(),
        };
        // Counters are exposed with `_total` appended.
        registry.register(
            "telerelay_events_recorded",
            "Lifecycle events stored for the first time, by state",
            metrics.events_recorded.clone(),
        );
        registry.register(
            "telerelay_dead_letters",
            "Dead letters stored for the first time, by reason and the queue they died in",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "telerelay_turnaround_seconds",
            "Per request: receipt to first report, first report to first delivery",
            metrics.turnaround.clone(),
        );
        registry.register(
            "telerelay_returns",
            "Requests returned by their reviewer, by return reason and kind",
            metrics.returns.clone(),
        );
        registry.register(
            "telerelay_critical_ack_seconds",
            "Critical notification to the origin clinician's accepted acknowledgement",
            metrics.critical_ack.clone(),
        );
        registry.register(
            "telerelay_critical_reminders",
            "Reminders the critical clock sent for unacknowledged critical values",
            metrics.critical_reminders.clone(),
        );
        let gauges = &metrics.gauges;
        registry.register(
            "telerelay_queue_messages",
            "Messages waiting in the core queues and every lane (passive declare)",
            gauges.queue_messages.clone(),
        );
        registry.register(
            "telerelay_lane_waiting",
            "Requests routed and not claimed, per lane",
            gauges.lane_waiting.clone(),
        );
        registry.register(
            "telerelay_lane_oldest_waiting_seconds",
            "Age of the oldest routed, unclaimed request per lane (0 when none)",
            gauges.lane_oldest_waiting.clone(),
        );
        registry.register(
            "telerelay_sla_open_at_risk",
            "Open requests past their at-risk mark, not yet due",
            gauges.sla_open_at_risk.clone(),
        );
        registry.register(
            "telerelay_sla_open_overdue",
            "Open requests past their due time",
            gauges.sla_open_overdue.clone(),
        );
        registry.register(
            "telerelay_critical_open",
            "Critical notifications not yet acknowledged",
            gauges.critical_open.clone(),
        );
        registry.register(
            "telerelay_critical_overdue",
            "Unacknowledged critical notifications past their acknowledge-by time",
            gauges.critical_overdue.clone(),
        );
        registry.register(
            "telerelay_dead_letters_unreplayed",
            "Stored dead letters not yet replayed, by reason",
            gauges.dead_letters_unreplayed.clone(),
        );
        metrics
    }

    pub fn observe_turnaround(&self, stage: &'static str, turnaround: &store::audit::Turnaround) {
        self.turnaround
            .get_or_create(&TurnaroundLabels {
                stage,
                kind: turnaround.kind.clone(),
                priority: turnaround.priority.clone(),
                origin: turnaround.origin.clone(),
                pool: turnaround.pool.clone(),
            })
            .observe(turnaround.seconds.max(0.0));
    }
}
