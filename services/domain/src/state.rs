//! The small closed vocabularies of the relay: study kinds, priorities and lifecycle states.
//! Their `as_str` forms are what PostgreSQL stores and what queue names contain.

use std::fmt;

/// What is being reviewed; decides which kind of pool can read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StudyKind {
    Ecg,
    Imaging,
    Pathology,
}

impl StudyKind {
    pub const ALL: [StudyKind; 3] = [StudyKind::Ecg, StudyKind::Imaging, StudyKind::Pathology];

    pub fn as_str(self) -> &'static str {
        match self {
            StudyKind::Ecg => "ecg",
            StudyKind::Imaging => "imaging",
            StudyKind::Pathology => "pathology",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == value)
    }
}

/// FHIR request priority. Each priority is its own queue lane per pool, so urgent work never
/// waits behind a backlog of routine work, on every RabbitMQ version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    // Declared most urgent first: `Ord` and `LANES_MOST_URGENT_FIRST` follow this order.
    Stat,
    Asap,
    Urgent,
    Routine,
}

impl Priority {
    /// The order in which a reviewer is offered work.
    pub const LANES_MOST_URGENT_FIRST: [Priority; 4] = [
        Priority::Stat,
        Priority::Asap,
        Priority::Urgent,
        Priority::Routine,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Stat => "stat",
            Priority::Asap => "asap",
            Priority::Urgent => "urgent",
            Priority::Routine => "routine",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::LANES_MOST_URGENT_FIRST
            .into_iter()
            .find(|priority| priority.as_str() == value)
    }
}

/// Where a request is in its life. See ARCHITECTURE.md for the allowed transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Received,
    Routed,
    Claimed,
    Released,
    Reported,
    Delivered,
    Acknowledged,
    Rejected,
    Returned,
    Escalated,
    Cancelled,
    Expired,
    AtRisk,
    Amended,
    CriticalNotified,
    SecondReadRequested,
    SecondReadRecorded,
    Resubmitted,
}

impl RequestState {
    pub const ALL: [RequestState; 18] = [
        RequestState::Received,
        RequestState::Routed,
        RequestState::Claimed,
        RequestState::Released,
        RequestState::Reported,
        RequestState::Delivered,
        RequestState::Acknowledged,
        RequestState::Rejected,
        RequestState::Returned,
        RequestState::Escalated,
        RequestState::Cancelled,
        RequestState::Expired,
        RequestState::AtRisk,
        RequestState::Amended,
        RequestState::CriticalNotified,
        RequestState::SecondReadRequested,
        RequestState::SecondReadRecorded,
        RequestState::Resubmitted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Received => "received",
            RequestState::Routed => "routed",
            RequestState::Claimed => "claimed",
            RequestState::Released => "released",
            RequestState::Reported => "reported",
            RequestState::Delivered => "delivered",
            RequestState::Acknowledged => "acknowledged",
            RequestState::Rejected => "rejected",
            RequestState::Returned => "returned",
            RequestState::Escalated => "escalated",
            RequestState::Cancelled => "cancelled",
            RequestState::Expired => "expired",
            RequestState::AtRisk => "at_risk",
            RequestState::Amended => "amended",
            RequestState::CriticalNotified => "critical_notified",
            RequestState::SecondReadRequested => "second_read_requested",
            RequestState::SecondReadRecorded => "second_read_recorded",
            RequestState::Resubmitted => "resubmitted",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == value)
    }
}

macro_rules! display_as_str {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(StudyKind, Priority, RequestState);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vocabulary_round_trips_through_its_stored_form() {
        for kind in StudyKind::ALL {
            assert_eq!(StudyKind::parse(kind.as_str()), Some(kind));
        }
        for priority in Priority::LANES_MOST_URGENT_FIRST {
            assert_eq!(Priority::parse(priority.as_str()), Some(priority));
        }
        for state in RequestState::ALL {
            assert_eq!(RequestState::parse(state.as_str()), Some(state));
        }
    }

    #[test]
    fn stat_sorts_before_routine() {
        let mut lanes = vec![
            Priority::Routine,
            Priority::Stat,
            Priority::Urgent,
            Priority::Asap,
        ];
        lanes.sort();
        assert_eq!(lanes, Priority::LANES_MOST_URGENT_FIRST.to_vec());
    }
}
