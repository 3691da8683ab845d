//! Every exchange and queue name, derived from one namespace. Production uses the namespace
//! `telerelay`; each test uses a random one so tests run in parallel on one broker.

use domain::{HospitalCode, PoolCode, Priority};

/// The names of telerelay's exchanges and queues under one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    namespace: String,
}

impl Names {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Topic exchange origins publish requests to, routing key `<origin code>.<kind>`, or
    /// `<origin code>.<kind>.stat` for a STAT request (the express lane).
    pub fn requests_exchange(&self) -> String {
        format!("{}.requests", self.namespace)
    }

    /// Direct exchange for routed work, routing key `<pool>.<priority>`.
    pub fn review_exchange(&self) -> String {
        format!("{}.review", self.namespace)
    }

    /// Topic exchange for everything sent back to an origin, routing key `<origin>.<notice>`.
    pub fn results_exchange(&self) -> String {
        format!("{}.results", self.namespace)
    }

    /// Topic exchange for lifecycle events, routing key `<origin>.<state>`.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// Topic exchange for dead letters, routing key = the queue the message died in.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.namespace)
    }

    pub fn dispatcher_queue(&self) -> String {
        format!("{}.dispatcher", self.namespace)
    }

    /// The dispatcher's express input: STAT requests, published with the routing key
    /// [`Names::STAT_REQUEST_KEY`], wait here instead of behind a backlog of routine work in
    /// [`Names::dispatcher_queue`] (a queue is first in, first out).
    pub fn dispatcher_stat_queue(&self) -> String {
        format!("{}.dispatcher.stat", self.namespace)
    }

    /// The binding of the dispatcher's queue: `<origin>.<kind>`, the contract's routing key.
    pub const REQUEST_KEY: &'static str = "*.*";

    /// The binding of the express lane: `<origin>.<kind>.stat`.
    pub const STAT_REQUEST_KEY: &'static str = "*.*.stat";

    /// The routing key a county publishes a request with: `<origin>.<kind>`, or
    /// `<origin>.<kind>.stat` for a STAT request, which takes the express lane.
    pub fn request_routing_key(origin: &str, kind: &str, stat: bool) -> String {
        if stat {
            format!("{origin}.{kind}.stat")
        } else {
            format!("{origin}.{kind}")
        }
    }

    /// Whether a request's routing key claims the express lane.
    pub fn is_stat_request_key(routing_key: &str) -> bool {
        routing_key.split('.').count() == 3 && routing_key.ends_with(".stat")
    }

    /// One lane per pool and priority: urgent work never queues behind routine work.
    pub fn review_lane(&self, pool: &PoolCode, priority: Priority) -> String {
        format!("{}.review.{}.{}", self.namespace, pool, priority.as_str())
    }

    pub fn review_routing_key(pool: &PoolCode, priority: Priority) -> String {
        format!("{}.{}", pool, priority.as_str())
    }

    /// The origin's own results queue: only that hospital's broker user may read it.
    pub fn origin_results_queue(&self, origin: &HospitalCode) -> String {
        format!("{}.results.{}", self.namespace, origin)
    }

    pub fn recorder_results_queue(&self) -> String {
        format!("{}.recorder.results", self.namespace)
    }

    pub fn recorder_events_queue(&self) -> String {
        format!("{}.recorder.events", self.namespace)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letters", self.namespace)
    }

    /// Topic exchange for pages to people (escalation ladder), routing key `page.<contact>`.
    pub fn alerts_exchange(&self) -> String {
        format!("{}.alerts", self.namespace)
    }

    /// Where pages wait for the paging bridge (SMS / phone gateway) that delivers them.
    pub fn alerts_queue(&self) -> String {
        format!("{}.alerts", self.namespace)
    }

    /// Topic exchange for critical-value notifications, routing key `<origin code>`: each origin's
    /// critical lane, apart from its ordinary results so a 危急值 never waits behind them.
    pub fn critical_exchange(&self) -> String {
        format!("{}.critical", self.namespace)
    }

    /// The origin's own critical queue: only that hospital's broker user may read it.
    pub fn origin_critical_queue(&self, origin: &HospitalCode) -> String {
        format!("{}.critical.{}", self.namespace, origin)
    }

    /// Topic exchange origins publish critical acknowledgements to, routing key
    /// `<origin code>.critical`, so topic permissions restrict each hospital to its own code.
    pub fn acknowledgements_exchange(&self) -> String {
        format!("{}.acknowledgements", self.namespace)
    }

    pub fn recorder_acknowledgements_queue(&self) -> String {
        format!("{}.recorder.acknowledgements", self.namespace)
    }

    /// The queues the relay's own services consume, whatever the registry holds (the lanes and
    /// the origins' queues depend on it).
    pub fn core_queues(&self) -> Vec<String> {
        vec![
            self.dispatcher_queue(),
            self.dispatcher_stat_queue(),
            self.recorder_events_queue(),
            self.recorder_results_queue(),
            self.recorder_acknowledgements_queue(),
            self.dead_letter_queue(),
            self.alerts_queue(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_three_word_key_ending_in_stat_claims_the_express_lane() {
        assert!(Names::is_stat_request_key("HN-HH-001.ecg.stat"));
        assert!(!Names::is_stat_request_key("HN-HH-001.ecg"));
        assert!(!Names::is_stat_request_key("HN-HH-001.stat"));
        assert!(!Names::is_stat_request_key("HN-HH-001.ecg.routine"));
        assert!(!Names::is_stat_request_key("HN-HH-001.ecg.x.stat"));
        assert!(Names::is_stat_request_key(&Names::request_routing_key(
            "HN-HH-001",
            "ecg",
            true
        )));
        assert_eq!(
            Names::request_routing_key("HN-HH-001", "imaging", false),
            "HN-HH-001.imaging"
        );
    }
}
