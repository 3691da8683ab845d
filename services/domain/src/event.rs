//! A lifecycle event: one state change of one request, with who, when and why. Services emit
//! them through their outbox; the recorder stores each event id exactly once (the audit trail).

use crate::RequestState;
use crate::wire::{state_from_wire, state_to_wire, timestamp};
use chrono::{DateTime, Utc};
use contract::v1;
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq)]
pub struct LifecycleFact {
    pub event_id: Uuid,
    /// The relay's id; `None` for a message refused before it became a request.
    pub request_uuid: Option<Uuid>,
    /// The origin's request id as sent (may be empty when the body was unreadable).
    pub request_id: String,
    pub origin: String,
    pub state: RequestState,
    /// `hospital:<code>`, `reviewer:<id>`, `service:<name>` or `operator:<name>`.
    pub actor: String,
    /// Why, in words free of patient data.
    pub reason: String,
    pub pool: Option<String>,
    pub correlation_id: String,
    pub occurred_at: DateTime<Utc>,
}

/// Why a wire event could not be recorded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("event_id is not a UUID")]
    EventId,
    #[error("relay_request_uuid is not a UUID")]
    RequestUuid,
    #[error("state is unspecified or unknown")]
    State,
    #[error("occurred_at is missing or out of range")]
    OccurredAt,
}

impl LifecycleFact {
    pub fn to_wire(&self) -> v1::LifecycleEvent {
        v1::LifecycleEvent {
            event_id: self.event_id.to_string(),
            request_id: self.request_id.clone(),
            origin_hospital: self.origin.clone(),
            state: state_to_wire(self.state) as i32,
            actor: self.actor.clone(),
            reason: self.reason.clone(),
            occurred_at: Some(timestamp(self.occurred_at)),
            correlation_id: self.correlation_id.clone(),
            pool: self.pool.clone().unwrap_or_default(),
            relay_request_uuid: self
                .request_uuid
                .map(|id| id.to_string())
                .unwrap_or_default(),
        }
    }

    pub fn from_wire(event: v1::LifecycleEvent) -> Result<Self, EventError> {
        let occurred_at = event
            .occurred_at
            .and_then(|at| DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?))
            .ok_or(EventError::OccurredAt)?;
        Ok(Self {
            event_id: Uuid::parse_str(&event.event_id).map_err(|_| EventError::EventId)?,
            request_uuid: match event.relay_request_uuid.as_str() {
                "" => None,
                id => Some(Uuid::parse_str(id).map_err(|_| EventError::RequestUuid)?),
            },
            request_id: event.request_id,
            origin: event.origin_hospital,
            state: state_from_wire(event.state).ok_or(EventError::State)?,
            actor: event.actor,
            reason: event.reason,
            pool: Some(event.pool).filter(|pool| !pool.is_empty()),
            correlation_id: event.correlation_id,
            occurred_at,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_fact_survives_the_wire() {
        let fact = LifecycleFact {
            event_id: Uuid::new_v4(),
            request_uuid: Some(Uuid::new_v4()),
            request_id: "ECG-1".into(),
            origin: "HN-HH-001".into(),
            state: RequestState::Routed,
            actor: "service:dispatcher".into(),
            reason: "routed to xy-ecg lane stat".into(),
            pool: Some("xy-ecg".into()),
            correlation_id: "c-1".into(),
            occurred_at: DateTime::from_timestamp(1_790_000_000, 5_000).unwrap(),
        };
        assert_eq!(LifecycleFact::from_wire(fact.to_wire()).unwrap(), fact);
    }

    #[test]
    fn an_event_without_a_state_is_refused() {
        let wire = v1::LifecycleEvent {
            event_id: Uuid::new_v4().to_string(),
            occurred_at: Some(timestamp(
                DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            )),
            ..Default::default()
        };
        assert_eq!(LifecycleFact::from_wire(wire), Err(EventError::State));
    }
}
