//! Crash points: named places in the services where a fault test can make the process die, at
//! exactly that moment, as `kill -9`, the OOM killer or a power cut would.
//!
//! `TELERELAY_CRASH_AT=<point>[@<n>]` arms one point: the n-th time the process reaches it (the
//! first time if `@<n>` is left out), the process sends itself SIGKILL. Nothing is flushed, no
//! destructor runs, no connection is closed: the broker and PostgreSQL see their peer vanish,
//! and PostgreSQL rolls back whatever transaction it had open. The variable is read once, by
//! [`arm_from_env`] at start-up or else at the first point reached. Unset, reaching a point costs
//! an atomic load; production never sets it.
//!
//! The points, each placed exactly where its name says:
//!
//! | point | where |
//! |---|---|
//! | `dispatcher.before_commit` | the dispatcher's accept or refusal transaction is written, not committed |
//! | `<consumer>.after_commit_before_ack` | a handler of `bus::consume_until` returned `Handled::Done` (its effect is durable), the delivery is not acked yet; `<consumer>` is the consumer's name: `dispatcher`, `recorder-events`, `recorder-results`, … |
//! | `outbox.after_publish_before_confirm` | a batch of outbox rows is published, no confirm awaited yet |
//! | `outbox.after_confirm_before_delete` | every confirm of the batch arrived, its rows are not deleted yet |
//! | `recorder.before_commit` | a lifecycle event or a result delivery is about to be committed |
//! | `recorder.dead_letter_after_publish_before_confirm` | the recorder published a dead-letter copy of what it cannot record, its confirm not awaited |
//!
//! `tests/tests/fault_crash.rs` arms each of them in turn and checks that the restarted service
//! leaves exactly one effect.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms a crash point.
pub const ENV: &str = "TELERELAY_CRASH_AT";

/// An armed point: its name and which time reaching it kills the process (1 = the first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub point: String,
    pub nth: u64,
}

impl Spec {
    /// Whether this spec names `<scope>.<point>`.
    fn names(&self, scope: &str, point: &str) -> bool {
        self.point
            .strip_prefix(scope)
            .and_then(|rest| rest.strip_prefix('.'))
            == Some(point)
    }
}

/// A `TELERELAY_CRASH_AT` value that is not `<point>[@<n>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSpec(String);

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ENV}={:?} is not <point>[@<n>] (a point name of letters, digits, '.', '_' and '-'; n from 1)",
            self.0
        )
    }
}

impl std::error::Error for InvalidSpec {}

impl FromStr for Spec {
    type Err = InvalidSpec;

    fn from_str(spec: &str) -> Result<Self, InvalidSpec> {
        let invalid = || InvalidSpec(spec.to_owned());
        let (point, nth) = match spec.split_once('@') {
            Some((point, nth)) => (
                point,
                nth.parse::<u64>()
                    .ok()
                    .filter(|nth| *nth >= 1)
                    .ok_or_else(invalid)?,
            ),
            None => (spec, 1),
        };
        let well_formed = !point.is_empty()
            && point
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !well_formed {
            return Err(invalid());
        }
        Ok(Self {
            point: point.to_owned(),
            nth,
        })
    }
}

struct Armed {
    spec: Spec,
    /// How many times the process has reached the point so far.
    reached: AtomicU64,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();

fn from_env() -> Result<Option<Spec>, InvalidSpec> {
    match std::env::var(ENV) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => value.parse().map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(value)) => {
            Err(InvalidSpec(value.to_string_lossy().into_owned()))
        }
    }
}

fn arm(spec: Option<Spec>) -> Option<Armed> {
    spec.map(|spec| {
        eprintln!(
            "{ENV}: crash point {} armed (time {})",
            spec.point, spec.nth
        );
        Armed {
            spec,
            reached: AtomicU64::new(0),
        }
    })
}

/// Reads `TELERELAY_CRASH_AT` now, so that a process given a bad value refuses to start instead
/// of running unarmed. Returns the armed point, if any.
pub fn arm_from_env() -> Result<Option<&'static Spec>, InvalidSpec> {
    let spec = from_env()?;
    Ok(ARMED
        .get_or_init(|| arm(spec))
        .as_ref()
        .map(|armed| &armed.spec))
}

fn armed() -> Option<&'static Armed> {
    ARMED
        .get_or_init(|| match from_env() {
            Ok(spec) => arm(spec),
            Err(error) => {
                eprintln!("{error}; no crash point armed");
                None
            }
        })
        .as_ref()
}

/// The process reached `point`: dies here if that is the armed point and this is the armed time.
pub fn reached(point: &str) {
    if let Some(armed) = armed()
        && armed.spec.point == point
    {
        armed.hit();
    }
}

/// As [`reached`] for the point `<scope>.<point>`, for code shared by several services that
/// names its points after its caller (e.g. a consumer's name); builds no string.
pub fn reached_in(scope: &str, point: &str) {
    if let Some(armed) = armed()
        && armed.spec.names(scope, point)
    {
        armed.hit();
    }
}

impl Armed {
    fn hit(&self) {
        let time = self.reached.fetch_add(1, Ordering::SeqCst) + 1;
        if time == self.spec.nth {
            eprintln!(
                "{ENV}: crash point {} reached (time {time}): SIGKILL",
                self.spec.point
            );
            // SIGKILL can be neither caught nor ignored: the kernel ends every thread of the
            // process before this call returns to user space.
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            // Only if the signal could not be sent at all: the next most abrupt end.
            std::process::abort();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_point_without_a_count_is_armed_for_its_first_time() {
        assert_eq!(
            "dispatcher.before_commit".parse(),
            Ok(Spec {
                point: "dispatcher.before_commit".into(),
                nth: 1
            })
        );
    }

    #[test]
    fn a_count_after_the_at_sign_arms_that_time() {
        assert_eq!(
            "recorder-events.after_commit_before_ack@7".parse(),
            Ok(Spec {
                point: "recorder-events.after_commit_before_ack".into(),
                nth: 7
            })
        );
    }

    #[test]
    fn malformed_specs_are_refused() {
        for spec in [
            "",
            "@3",
            "outbox.x@0",
            "outbox.x@",
            "outbox.x@two",
            "a b",
            "x@1@2",
        ] {
            assert!(spec.parse::<Spec>().is_err(), "{spec:?} was accepted");
        }
    }

    #[test]
    fn a_scoped_point_matches_only_its_full_name() {
        let spec: Spec = "recorder-events.after_commit_before_ack".parse().unwrap();
        assert!(spec.names("recorder-events", "after_commit_before_ack"));
        assert!(!spec.names("recorder", "after_commit_before_ack"));
        assert!(!spec.names("recorder-events", "after_commit"));
        assert!(!spec.names("recorder-events.after", "commit_before_ack"));
    }
}
