//! `relayctl pairing` and `relayctl lanes`: edit the routing truth while the relay runs. Every
//! edit is one transaction with its audit row (`registry_changes`); the dispatcher and the review
//! desk read the registry for every request and claim, so nothing needs a restart.

use crate::duration::{format_duration, parse_duration};
use clap::{Args, Subcommand};
use std::fmt::Write as _;
use std::time::Duration;
use store::lanes::Setting;
use store::registry_edits::{self, Change, PairingKey};

#[derive(Debug, Subcommand)]
pub enum PairingCommand {
    /// Every pairing: origin, kind, department, subspecialty, primary pool, backups in order.
    List,
    /// Create the pairing with this key, or replace its pools. Backups keep the order given.
    Set {
        #[command(flatten)]
        key: KeyArgs,
        /// The primary reviewer pool.
        #[arg(long)]
        pool: String,
        /// A backup pool for overflow and escalation; repeat for more, in order.
        #[arg(long = "backup")]
        backups: Vec<String>,
        #[command(flatten)]
        who: Who,
    },
    /// Remove the pairing with exactly this key.
    Remove {
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        who: Who,
    },
    /// The audit of registry changes (pairings, lane policies, loads), oldest first.
    History {
        /// How many of the most recent changes.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum LanesCommand {
    /// Each priority lane's overflow and promotion age.
    List,
    /// Change a lane's overflow age and/or promotion age (e.g. 5m, 90s, 4h; `off` disables).
    Set {
        /// stat, asap, urgent or routine.
        #[arg(long)]
        priority: String,
        /// New requests overflow to the first backup pool once the pool's oldest waiting request
        /// in this lane has waited longer than this.
        #[arg(long, value_parser = parse_setting)]
        overflow_after: Option<Setting>,
        /// Waiting requests are offered as if one lane more urgent after this long.
        #[arg(long, value_parser = parse_setting)]
        promote_after: Option<Setting>,
        #[command(flatten)]
        who: Who,
    },
}

#[derive(Clone, Debug, Args)]
pub struct KeyArgs {
    /// The origin hospital's code.
    #[arg(long)]
    pub origin: String,
    /// ecg, imaging or pathology.
    #[arg(long)]
    pub kind: String,
    /// Only this department of the origin (科包科); omit for the whole hospital.
    #[arg(long)]
    pub department: Option<String>,
    /// Only requests naming this subspecialty; omit for every subspecialty.
    #[arg(long)]
    pub subspecialty: Option<String>,
}

impl KeyArgs {
    fn key(&self) -> PairingKey {
        PairingKey {
            origin: self.origin.clone(),
            department: self.department.clone(),
            kind: self.kind.clone(),
            subspecialty: self.subspecialty.clone(),
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct Who {
    /// Who makes the change, for the audit.
    #[arg(long, env = "TELERELAY_OPERATOR")]
    pub operator: String,
    /// Why, for the audit.
    #[arg(long, default_value = "")]
    pub note: String,
}

impl Who {
    fn change(&self) -> Change<'_> {
        Change {
            operator: &self.operator,
            note: &self.note,
        }
    }
}

/// Runs a pairing command; returns what to print. A refused edit is an error (non-zero exit)
/// and leaves the registry as it was.
pub async fn run_pairing(command: PairingCommand, db: &sqlx::PgPool) -> anyhow::Result<String> {
    Ok(match command {
        PairingCommand::List => render_pairings(&registry_edits::list_pairings(db).await?),
        PairingCommand::Set {
            key,
            pool,
            backups,
            who,
        } => {
            let after =
                registry_edits::set_pairing(db, &key.key(), &pool, &backups, who.change()).await?;
            format!("pairing set: {after}\n")
        }
        PairingCommand::Remove { key, who } => {
            let before = registry_edits::remove_pairing(db, &key.key(), who.change()).await?;
            format!("pairing removed: {before}\n")
        }
        PairingCommand::History { limit } => {
            render_history(&registry_edits::history(db, limit).await?)
        }
    })
}

/// Runs a lanes command; returns what to print.
pub async fn run_lanes(command: LanesCommand, db: &sqlx::PgPool) -> anyhow::Result<String> {
    Ok(match command {
        LanesCommand::List => {
            let mut out = format!(
                "{:<8} {:>15} {:>15}\n",
                "lane", "overflow after", "promote after"
            );
            for policy in store::lanes::policies(db).await? {
                let _ = writeln!(
                    out,
                    "{:<8} {:>15} {:>15}",
                    policy.priority.as_str(),
                    show(policy.overflow_after),
                    show(policy.promote_after)
                );
            }
            out
        }
        LanesCommand::Set {
            priority,
            overflow_after,
            promote_after,
            who,
        } => {
            anyhow::ensure!(
                overflow_after.is_some() || promote_after.is_some(),
                "give --overflow-after and/or --promote-after"
            );
            let after = store::lanes::set_lane_policy(
                db,
                &priority,
                overflow_after.unwrap_or(Setting::Keep),
                promote_after.unwrap_or(Setting::Keep),
                who.change(),
            )
            .await?;
            format!("lane policy set: {after}\n")
        }
    })
}

/// `5m`, `90s`, `4h`, `1d`, `2h30m` or `off`.
pub fn parse_setting(text: &str) -> Result<Setting, String> {
    let text = text.trim();
    if matches!(text, "off" | "none" | "never") {
        return Ok(Setting::Off);
    }
    match parse_duration(text)? {
        0 => Err(format!(
            "{text:?}: a zero age would act on everything; say off instead"
        )),
        seconds => Ok(Setting::Set(Duration::from_secs(seconds))),
    }
}

fn show(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "off".into(), |d| format_duration(d.as_secs()))
}

fn render_pairings(pairings: &[registry_edits::Pairing]) -> String {
    let mut out = format!(
        "{:<12} {:<10} {:<14} {:<14} {:<16} backups\n",
        "origin", "kind", "department", "subspecialty", "pool"
    );
    for p in pairings {
        let _ = writeln!(
            out,
            "{:<12} {:<10} {:<14} {:<14} {:<16} {}",
            p.origin,
            p.kind,
            p.department.as_deref().unwrap_or("*"),
            p.subspecialty.as_deref().unwrap_or("*"),
            p.pool,
            p.backups.join(" > ")
        );
    }
    out
}

fn render_history(changes: &[registry_edits::RegistryChange]) -> String {
    let mut out = String::new();
    for change in changes {
        let _ = writeln!(
            out,
            "#{} {} {} {} {}{}",
            change.id,
            change.changed_at.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
            change.operator,
            change.action,
            change.subject,
            if change.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", change.note)
            }
        );
        if change.action != "registry_load" {
            let before = change
                .before
                .as_ref()
                .map_or("-".to_owned(), ToString::to_string);
            let after = change
                .after
                .as_ref()
                .map_or("-".to_owned(), ToString::to_string);
            let _ = writeln!(out, "    before: {before}");
            let _ = writeln!(out, "    after:  {after}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_or_off() {
        let set = |secs| Ok(Setting::Set(Duration::from_secs(secs)));
        assert_eq!(parse_setting("90s"), set(90));
        assert_eq!(parse_setting("5m"), set(300));
        assert_eq!(parse_setting("2h30m"), set(9000));
        assert_eq!(parse_setting("off"), Ok(Setting::Off));
        for bad in ["", "5", "0m", "m", "5x", "-5m"] {
            assert!(parse_setting(bad).is_err(), "{bad}");
        }
        assert_eq!(show(Some(Duration::from_secs(9000))), "2h30m");
        assert_eq!(show(Some(Duration::from_secs(300))), "5m");
        assert_eq!(show(None), "off");
    }
}
