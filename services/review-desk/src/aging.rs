//! Aging: the order in which a reviewer's pool's lanes are offered, so that the most urgent work
//! comes first and routine work is never starved.
//!
//! Rule. Each lane is judged by its oldest request waiting to be claimed (state `routed`) and how
//! long it has waited, `w`. A lane starts at its own level. When the level has a promotion age
//! (`lane_policies.promote_after`) and `w` exceeds it, the lane counts one level more urgent
//! (routine → urgent → asap → stat); from there the next level's promotion age is added, and so
//! on: with the defaults (routine 2 h, urgent 1 h, asap 20 min) a routine request counts as
//! urgent after 2 h, as asap after 3 h and as stat after 3 h 20 min. Lanes are offered by that
//! effective level, most urgent first; at the same level the lane whose oldest request waited
//! longer goes first — except at stat level, where the STAT lane always goes before lanes
//! promoted to it: a STAT request is never kept waiting by aged work. Ties keep the lanes' own
//! order. A lane with nothing waiting keeps its own level (its expired leases are still taken
//! over in that order). Routine work is therefore never starved unless STAT requests alone fill
//! every reviewer's day, in which case they must come first.

use domain::Priority;
use std::cmp::Reverse;
use store::lanes::LaneWait;

/// The lanes in the order the desk offers them.
pub(crate) fn claim_order(waits: &[LaneWait]) -> Vec<Priority> {
    // Sorted by effective level, then (at stat level only) the STAT lane before promoted ones,
    // then the longer wait.
    let mut lanes: Vec<(usize, bool, Reverse<std::time::Duration>, Priority)> =
        Priority::LANES_MOST_URGENT_FIRST
            .into_iter()
            .map(
                |priority| match waits.iter().find(|w| w.priority == priority) {
                    Some(wait) => {
                        let effective = effective_level(wait, waits);
                        // Only at stat level does a native lane go before a promoted one.
                        let promoted_to_stat = effective == 0 && level(priority) > 0;
                        (effective, promoted_to_stat, Reverse(wait.waited), priority)
                    }
                    None => (
                        level(priority),
                        false,
                        Reverse(std::time::Duration::ZERO),
                        priority,
                    ),
                },
            )
            .collect();
    lanes.sort();
    lanes
        .into_iter()
        .map(|(_, _, _, priority)| priority)
        .collect()
}

/// 0 for stat … 3 for routine.
fn level(priority: Priority) -> usize {
    Priority::LANES_MOST_URGENT_FIRST
        .iter()
        .position(|lane| *lane == priority)
        .unwrap_or(Priority::LANES_MOST_URGENT_FIRST.len())
}

/// The level a lane's oldest waiting request counts as, after cumulative promotion.
fn effective_level(wait: &LaneWait, waits: &[LaneWait]) -> usize {
    let promote_after = |level: usize| {
        let priority = Priority::LANES_MOST_URGENT_FIRST.get(level)?;
        waits
            .iter()
            .find(|w| w.priority == *priority)
            .and_then(|w| w.promote_after)
    };
    let mut current = level(wait.priority);
    let mut threshold = std::time::Duration::ZERO;
    while current > 0 {
        let Some(step) = promote_after(current) else {
            break;
        };
        threshold += step;
        if wait.waited <= threshold {
            break;
        }
        current -= 1;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::{Asap, Routine, Stat, Urgent};
    use std::time::Duration;

    const MIN: u64 = 60;

    /// The default policies, with how long each lane's oldest request has waited (minutes).
    fn waits(stat: u64, asap: u64, urgent: u64, routine: u64) -> Vec<LaneWait> {
        let lane = |priority, waited: u64, promote: Option<u64>| LaneWait {
            priority,
            waited: Duration::from_secs(waited * MIN),
            promote_after: promote.map(|m| Duration::from_secs(m * MIN)),
            expired_leases: false,
        };
        vec![
            lane(Stat, stat, None),
            lane(Asap, asap, Some(20)),
            lane(Urgent, urgent, Some(60)),
            lane(Routine, routine, Some(120)),
        ]
    }

    #[test]
    fn without_aging_the_most_urgent_lane_comes_first() {
        assert_eq!(
            claim_order(&waits(1, 5, 30, 100)),
            [Stat, Asap, Urgent, Routine]
        );
        assert_eq!(claim_order(&[]), [Stat, Asap, Urgent, Routine]);
    }

    #[test]
    fn routine_past_its_promotion_age_counts_as_urgent_and_goes_before_a_younger_urgent() {
        // Empty lanes keep their own place; they have nothing to offer.
        assert_eq!(
            claim_order(&waits(0, 0, 10, 121)),
            [Stat, Asap, Routine, Urgent]
        );
        assert_eq!(
            claim_order(&waits(0, 0, 10, 119)),
            [Stat, Asap, Urgent, Routine]
        );
        // An urgent request past its own promotion age counts as asap, then stat after 20 min more.
        assert_eq!(
            claim_order(&waits(0, 0, 61, 121)),
            [Stat, Urgent, Asap, Routine]
        );
        // At stat level, an aged urgent request still goes after a STAT request.
        assert_eq!(
            claim_order(&waits(1, 0, 81, 121)),
            [Stat, Urgent, Asap, Routine]
        );
    }

    #[test]
    fn promotion_is_cumulative_up_to_stat() {
        // 2 h + 1 h = asap level; + 20 min = stat level.
        assert_eq!(
            claim_order(&waits(1, 0, 0, 181)),
            [Stat, Routine, Asap, Urgent]
        );
        // At stat level: after the STAT lane, before asap, even a fresh STAT goes first.
        assert_eq!(
            claim_order(&waits(1, 0, 0, 201)),
            [Stat, Routine, Asap, Urgent]
        );
        assert_eq!(
            claim_order(&waits(0, 5, 0, 201)),
            [Stat, Routine, Asap, Urgent]
        );
        // Two promoted lanes at one level: the longer wait first.
        assert_eq!(
            claim_order(&waits(1, 0, 100, 201)),
            [Stat, Routine, Urgent, Asap]
        );
    }

    #[test]
    fn a_lane_without_a_promotion_age_is_never_promoted() {
        let mut waits = waits(1, 0, 0, 10_000);
        waits[3].promote_after = None;
        assert_eq!(claim_order(&waits), [Stat, Asap, Urgent, Routine]);
    }
}
