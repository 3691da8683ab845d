//! `relayctl sla` (turnaround targets per kind × priority) and `relayctl escalation` (the
//! ladder that runs after a breach, and pool heads). Changes apply at once: the dispatcher reads
//! the tables on every insert (due time) and every clock tick (ladder).

use crate::duration::{format_duration, parse_duration};
use clap::Subcommand;
use std::fmt::Write as _;
use store::sla::LadderStep;
use store::sla_config::Policy;

#[derive(Debug, Subcommand)]
pub enum SlaCommand {
    /// Every turnaround target and at-risk mark.
    List,
    /// Set the target of one kind × priority (applies to requests received from now on).
    Set {
        /// ecg, imaging or pathology.
        #[arg(long)]
        kind: String,
        /// stat, asap, urgent or routine.
        #[arg(long)]
        priority: String,
        /// The target of an intra-operative frozen section (pathology only).
        #[arg(long)]
        frozen_section: bool,
        /// Time from the county's publish to the report being due, e.g. 10m, 2h, 1h30m.
        #[arg(long, value_parser = parse_duration)]
        target: u64,
        /// When the request is at risk (a warning); defaults to three quarters of the target.
        #[arg(long, value_parser = parse_duration)]
        at_risk: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EscalationCommand {
    /// The ladder, step by step, and each pool's head.
    List,
    /// Set (or add) one step of the ladder.
    Set {
        #[arg(long)]
        step: i32,
        /// How long after the due time the step runs, e.g. 0s, 10m.
        #[arg(long, value_parser = parse_duration)]
        after: u64,
        /// reroute_backup, page_pool_head or page_on_call.
        #[arg(long)]
        action: String,
        /// The paging address, for page_on_call.
        #[arg(long)]
        contact: Option<String>,
    },
    /// Remove one step of the ladder.
    Remove {
        #[arg(long)]
        step: i32,
    },
    /// Set the paging address of a pool's head (or clear it with --clear).
    Head {
        #[arg(long)]
        pool: String,
        #[arg(long, required_unless_present = "clear")]
        contact: Option<String>,
        #[arg(long)]
        clear: bool,
    },
}

const KINDS: [&str; 3] = ["ecg", "imaging", "pathology"];
const PRIORITIES: [&str; 4] = ["stat", "asap", "urgent", "routine"];
const ACTIONS: [&str; 3] = ["reroute_backup", "page_pool_head", "page_on_call"];

pub async fn run_sla(command: SlaCommand, db: &sqlx::PgPool) -> anyhow::Result<()> {
    match command {
        SlaCommand::List => print!(
            "{}",
            render_policies(&store::sla_config::policies(db).await?)
        ),
        SlaCommand::Set {
            kind,
            priority,
            frozen_section,
            target,
            at_risk,
        } => {
            anyhow::ensure!(
                KINDS.contains(&kind.as_str()),
                "--kind must be one of {KINDS:?}"
            );
            anyhow::ensure!(
                PRIORITIES.contains(&priority.as_str()),
                "--priority must be one of {PRIORITIES:?}"
            );
            anyhow::ensure!(
                !frozen_section || kind == "pathology",
                "--frozen-section applies to pathology only"
            );
            anyhow::ensure!(target > 0, "--target must be longer than zero");
            let at_risk = at_risk.unwrap_or(target * 3 / 4).max(1);
            anyhow::ensure!(at_risk <= target, "--at-risk must not be after --target");
            let policy = Policy {
                kind,
                priority,
                frozen_section,
                target_seconds: target as f64,
                at_risk_seconds: at_risk as f64,
            };
            store::sla_config::set_policy(db, &policy).await?;
            print!("{}", render_policies(&[policy]));
        }
    }
    Ok(())
}

pub async fn run_escalation(command: EscalationCommand, db: &sqlx::PgPool) -> anyhow::Result<()> {
    match command {
        EscalationCommand::List => {
            let mut out = render_ladder(&store::sla_config::ladder(db).await?);
            out.push_str("\npool heads:\n");
            for (pool, head) in store::sla_config::pool_heads(db).await? {
                let _ = writeln!(out, "  {pool:<24} {}", head.as_deref().unwrap_or("-"));
            }
            print!("{out}");
        }
        EscalationCommand::Set {
            step,
            after,
            action,
            contact,
        } => {
            anyhow::ensure!(step >= 1, "--step starts at 1");
            anyhow::ensure!(
                ACTIONS.contains(&action.as_str()),
                "--action must be one of {ACTIONS:?}"
            );
            anyhow::ensure!(
                (action == "page_on_call") == contact.is_some(),
                "--contact is required for page_on_call and only for it"
            );
            if let Some(contact) = &contact {
                check_contact(contact)?;
            }
            let step = LadderStep {
                step,
                delay_seconds: after as f64,
                action,
                contact,
            };
            store::sla_config::set_ladder_step(db, &step).await?;
            print!("{}", render_ladder(&[step]));
        }
        EscalationCommand::Remove { step } => {
            anyhow::ensure!(
                store::sla_config::remove_ladder_step(db, step).await?,
                "no ladder step {step}"
            );
            println!("ladder step {step} removed");
        }
        EscalationCommand::Head {
            pool,
            contact,
            clear,
        } => {
            let contact = if clear { None } else { contact };
            if let Some(contact) = &contact {
                check_contact(contact)?;
            }
            anyhow::ensure!(
                store::sla_config::set_pool_head(db, &pool, contact.as_deref()).await?,
                "no reviewer pool {pool}"
            );
            println!("pool {pool}: head {}", contact.as_deref().unwrap_or("-"));
        }
    }
    Ok(())
}

/// A paging address becomes a routing-key word: lower-case letters, digits, `-` and `_`.
fn check_contact(contact: &str) -> anyhow::Result<()> {
    let valid = !contact.is_empty()
        && contact.len() <= 64
        && contact
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !contact.starts_with(['-', '_']);
    anyhow::ensure!(
        valid,
        "a contact is 1-64 of a-z 0-9 - _ (it becomes the routing key page.<contact>)"
    );
    Ok(())
}

pub fn render_policies(policies: &[Policy]) -> String {
    let mut out = format!(
        "{:<10} {:<8} {:<7} {:>10} {:>10}\n",
        "kind", "priority", "frozen", "target", "at risk"
    );
    for policy in policies {
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:<7} {:>10} {:>10}",
            policy.kind,
            policy.priority,
            if policy.frozen_section { "yes" } else { "" },
            format_duration(policy.target_seconds.round() as u64),
            format_duration(policy.at_risk_seconds.round() as u64),
        );
    }
    out
}

pub fn render_ladder(steps: &[LadderStep]) -> String {
    let mut out = format!(
        "{:<5} {:>12} {:<16} {}\n",
        "step", "after due", "action", "contact"
    );
    for step in steps {
        let _ = writeln!(
            out,
            "{:<5} {:>12} {:<16} {}",
            step.step,
            format_duration(step.delay_seconds.round() as u64),
            step.action,
            step.contact.as_deref().unwrap_or("-"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_must_be_one_routing_key_word() {
        assert!(check_contact("hunan-on-call").is_ok());
        for bad in ["", "Head", "a.b", "-x", "page me"] {
            assert!(check_contact(bad).is_err(), "{bad:?}");
        }
    }
}
