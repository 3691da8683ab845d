//! What an origin keeps track of: the requests it is waiting to hear about, and how many new
//! requests it may still publish when the run has a total.

use contract::v1;
use domain::StudyKind;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What an origin remembers about a request it sent, to resubmit it if it comes back.
#[derive(Clone, Debug)]
pub(crate) struct Sent {
    pub kind: StudyKind,
    pub priority: v1::Priority,
    pub label: String,
    pub frozen_section: bool,
    pub patient: Option<v1::Patient>,
    /// The returned request this one resubmits; a resubmission is not resubmitted again.
    pub resubmission_of: Option<String>,
}

/// The requests an origin has sent and not yet heard back about, oldest first.
#[derive(Debug, Default)]
pub struct Outstanding(Mutex<(HashMap<String, Sent>, VecDeque<String>)>);

/// Bounds memory when the relay never answers (e.g. no review desk is running).
const MAX_OUTSTANDING: usize = 20_000;

impl Outstanding {
    pub(crate) fn insert(&self, request_id: String, sent: Sent) {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (map, order) = &mut *guard;
        while order.len() >= MAX_OUTSTANDING {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
        order.push_back(request_id.clone());
        map.insert(request_id, sent);
    }

    pub(crate) fn remove(&self, request_id: &str) -> Option<Sent> {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (map, order) = &mut *guard;
        let sent = map.remove(request_id)?;
        order.retain(|id| id != request_id);
        Some(sent)
    }

    pub(crate) fn get(&self, request_id: &str) -> Option<Sent> {
        let guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.0.get(request_id).cloned()
    }

    pub fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How many new requests may still be published when a total is set.
#[derive(Debug)]
pub(crate) struct Budget {
    total: Option<u64>,
    taken: AtomicU64,
}

/// The right to publish one new request. Dropped without [`Ticket::spend`] (the broker did not
/// take the request, or the publish was abandoned with its connection), it goes back to the
/// budget, so a lost publish never leaves the total unreachable.
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    budget: &'a Budget,
    spent: bool,
}

impl Budget {
    pub fn new(total: Option<u64>) -> Self {
        Self {
            total,
            taken: AtomicU64::new(0),
        }
    }

    /// A ticket, or `None` once the total is taken.
    pub fn take(&self) -> Option<Ticket<'_>> {
        let ticket = Ticket {
            budget: self,
            spent: false,
        };
        let Some(total) = self.total else {
            return Some(ticket);
        };
        if self.taken.fetch_add(1, Ordering::SeqCst) < total {
            Some(ticket)
        } else {
            // Dropping the ticket gives the overshoot back.
            None
        }
    }
}

impl Ticket<'_> {
    /// The request was confirmed: the ticket is used up.
    pub fn spend(mut self) {
        self.spent = true;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.spent && self.budget.total.is_some() {
            self.budget.taken.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_budget_hands_out_exactly_its_total_and_takes_back_unspent_tickets() {
        let budget = Budget::new(Some(2));
        budget.take().unwrap().spend();
        let unspent = budget.take().unwrap();
        assert!(budget.take().is_none());
        drop(unspent);
        budget.take().unwrap().spend();
        assert!(budget.take().is_none());
        assert!(Budget::new(None).take().is_some());
    }

    #[test]
    fn outstanding_requests_are_forgotten_once_answered() {
        let outstanding = Outstanding::default();
        let sent = Sent {
            kind: StudyKind::Ecg,
            priority: v1::Priority::Stat,
            label: "105".into(),
            frozen_section: false,
            patient: None,
            resubmission_of: None,
        };
        outstanding.insert("a".into(), sent);
        assert!(outstanding.get("a").is_some());
        assert!(outstanding.remove("a").is_some());
        assert!(outstanding.is_empty());
    }
}
