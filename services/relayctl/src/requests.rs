//! `relayctl requests`: an operator's interventions on one request.
//!
//! `break-lock` releases a claimed request at once (the reviewer went home with the request
//! open, the desk's client hung): the request waits in its lane again, the draft stays for the
//! next reviewer, and the audit trail records who broke the lock and why (`released` event,
//! actor `operator:<name>`). The lane message goes out through the outbox, published by any
//! running service's outbox relay.

use clap::Subcommand;
use uuid::Uuid;

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// Release a claimed request now, keeping its draft (audited).
    BreakLock {
        /// The relay's id of the request (`request_uuid`).
        id: Uuid,
        /// Who is breaking the lock, for the audit trail.
        #[arg(long, env = "TELERELAY_OPERATOR")]
        operator: String,
        /// Why, for the audit trail.
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// What a break-lock did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreakLock {
    /// Released; it was held by this reviewer.
    Released {
        holder: String,
    },
    /// The request is not claimed (its state is given): nothing to break.
    NotClaimed {
        state: String,
    },
    NotFound,
}

pub async fn run(
    command: RequestsCommand,
    db: &sqlx::PgPool,
    names: &bus::Names,
) -> anyhow::Result<()> {
    match command {
        RequestsCommand::BreakLock { id, operator, note } => {
            match break_lock(db, names, id, &operator, &note).await? {
                BreakLock::Released { holder } => {
                    println!("request {id} released (was held by {holder}); its draft is kept")
                }
                BreakLock::NotClaimed { state } => {
                    anyhow::bail!("request {id} is {state}, not claimed: there is no lock to break")
                }
                BreakLock::NotFound => anyhow::bail!("no request {id}"),
            }
        }
    }
    Ok(())
}

/// Releases a claimed request in one transaction: state, `released` event and lane message.
pub async fn break_lock(
    db: &sqlx::PgPool,
    names: &bus::Names,
    id: Uuid,
    operator: &str,
    note: &str,
) -> anyhow::Result<BreakLock> {
    anyhow::ensure!(
        !operator.trim().is_empty(),
        "--operator must name who is breaking the lock"
    );
    let mut tx = db.begin().await?;
    let Some(request) = store::sla::lock_for_release(&mut tx, id).await? else {
        return Ok(BreakLock::NotFound);
    };
    if request.state != "claimed" {
        return Ok(BreakLock::NotClaimed {
            state: request.state,
        });
    }
    let holder = request.claimed_by.clone().unwrap_or_default();
    let mut reason = format!("lock broken by operator (held by {holder}); draft kept");
    if !note.trim().is_empty() {
        reason.push_str(": ");
        reason.push_str(note.trim());
    }
    // The lane message and the event continue the request's trace.
    let trace = store::trace::of_request(&mut *tx, id).await?;
    let actor = format!("operator:{}", operator.trim());
    let release = store::sla::release_to_lane(&mut tx, names, &request, &actor, reason);
    bus::trace::within(trace, release).await?;
    tx.commit().await?;
    Ok(BreakLock::Released { holder })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::{Cli, Command};
    use clap::Parser;

    #[test]
    fn break_lock_needs_a_request_id_and_an_operator() {
        let id = "6f1d8d1e-3c55-4c1e-9a43-2f6c1f0b7a10";
        let cli = Cli::try_parse_from([
            "relayctl",
            "requests",
            "break-lock",
            id,
            "--operator",
            "zhang",
            "--note",
            "hung",
        ])
        .unwrap();
        let Command::Requests(super::RequestsCommand::BreakLock {
            id: parsed,
            operator,
            note,
        }) = cli.command
        else {
            panic!("parsed as another command");
        };
        assert_eq!(
            (
                parsed.to_string().as_str(),
                operator.as_str(),
                note.as_str()
            ),
            (id, "zhang", "hung")
        );
        assert!(
            Cli::try_parse_from([
                "relayctl",
                "requests",
                "break-lock",
                "not-a-uuid",
                "--operator",
                "x"
            ])
            .is_err()
        );
    }

    #[test]
    fn sla_set_reads_durations() {
        let cli = Cli::try_parse_from([
            "relayctl",
            "sla",
            "set",
            "--kind",
            "ecg",
            "--priority",
            "stat",
            "--target",
            "10m",
        ])
        .unwrap();
        let Command::Sla(crate::sla::SlaCommand::Set {
            target,
            at_risk,
            frozen_section,
            ..
        }) = cli.command
        else {
            panic!("parsed as another command");
        };
        assert_eq!((target, at_risk, frozen_section), (600, None, false));
    }
}
