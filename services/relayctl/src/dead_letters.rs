//! `relayctl dead-letters`: list what the relay could not deliver or process, and replay it.

use clap::{Args, Subcommand};
use std::fmt::Write as _;
use store::dead_letters::{DeadLetter, ReplayOutcome, Selection};

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Dead letters not yet replayed (with --all, also those replayed), oldest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Also list dead letters that were replayed.
        #[arg(long)]
        all: bool,
    },
    /// Re-inject dead letters into the queue they died in. Each dead letter is replayed at most
    /// once; the replay is recorded with the operator's name.
    Replay {
        /// The dead letters to replay (ids from `list`).
        ids: Vec<i64>,
        /// Replay every dead letter that matches the filter and was never replayed.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[command(flatten)]
        filter: Filter,
        /// Who is replaying, for the audit trail.
        #[arg(long, env = "TELERELAY_OPERATOR")]
        operator: String,
        /// Why, for the audit trail (e.g. "pairing for HN-HH-001 cardiology added").
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Clone, Debug, Default, Args)]
pub struct Filter {
    /// Only this reason (e.g. no_pairing, delivery_limit).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only those that died in this queue.
    #[arg(long)]
    pub queue: Option<String>,
}

impl Filter {
    fn selection(&self, ids: Vec<i64>, include_replayed: bool) -> Selection {
        Selection {
            ids,
            reason: self.reason.clone(),
            source_queue: self.queue.clone(),
            include_replayed,
        }
    }
}

pub async fn run(command: DeadLettersCommand, db: &sqlx::PgPool) -> anyhow::Result<()> {
    match command {
        DeadLettersCommand::List { filter, all } => {
            let found = store::dead_letters::list(db, &filter.selection(Vec::new(), all)).await?;
            print!("{}", render_list(&found));
        }
        DeadLettersCommand::Replay {
            ids,
            all,
            filter,
            operator,
            note,
        } => {
            anyhow::ensure!(
                all || !ids.is_empty(),
                "name the dead letters to replay, or pass --all"
            );
            anyhow::ensure!(
                !operator.trim().is_empty(),
                "--operator must name who is replaying"
            );
            let selection = filter.selection(ids, false);
            let outcomes = store::dead_letters::replay(db, &selection, &operator, &note).await?;
            print!("{}", render_replay(&outcomes));
            let missing = outcomes
                .iter()
                .filter(|outcome| matches!(outcome, ReplayOutcome::NotFound { .. }))
                .count();
            // The others were replayed; a script must still learn that some ids were wrong.
            anyhow::ensure!(
                missing == 0,
                "{missing} of the named dead letters do not exist"
            );
        }
    }
    Ok(())
}

/// The listing as a table. Only ids, queues, reasons and sizes: never the body, which may hold
/// patient data.
pub fn render_list(dead_letters: &[DeadLetter]) -> String {
    let mut out = String::new();
    if dead_letters.is_empty() {
        out.push_str("no dead letters\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>6}  {:<19}  {:<36}  {:<22}  {:>8}  {:<24}  detail",
        "id", "stored (UTC)", "died in", "reason", "bytes", "replayed"
    );
    for dead in dead_letters {
        let replayed = match (&dead.replayed_at, &dead.replayed_by) {
            (Some(at), Some(by)) => format!("{} by {by}", at.format("%m-%d %H:%M")),
            _ => "-".into(),
        };
        let replay_of = dead
            .replay_of
            .map(|id| format!(" (replay of {id} died again)"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:>6}  {:<19}  {:<36}  {:<22}  {:>8}  {:<24}  {}{replay_of}",
            dead.id,
            dead.stored_at.format("%Y-%m-%d %H:%M:%S"),
            dead.source_queue,
            dead.reason,
            dead.body.len(),
            replayed,
            dead.detail
        );
    }
    let _ = writeln!(out, "{} dead letters", dead_letters.len());
    out
}

pub fn render_replay(outcomes: &[ReplayOutcome]) -> String {
    let mut out = String::new();
    if outcomes.is_empty() {
        out.push_str("nothing to replay\n");
    }
    for outcome in outcomes {
        let _ = match outcome {
            ReplayOutcome::Replayed {
                id,
                exchange,
                routing_key,
            } if exchange.is_empty() => writeln!(out, "{id}: replayed to queue {routing_key}"),
            ReplayOutcome::Replayed {
                id,
                exchange,
                routing_key,
            } => writeln!(out, "{id}: replayed to exchange {exchange} / {routing_key}"),
            ReplayOutcome::AlreadyReplayed { id, at, by } => writeln!(
                out,
                "{id}: already replayed at {} by {by}; not replayed again",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            ReplayOutcome::NotFound { id } => writeln!(out, "{id}: no such dead letter"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<super::DeadLettersCommand, clap::Error> {
        let cli = Cli::try_parse_from([&["relayctl", "dead-letters"], args].concat())?;
        match cli.command {
            Command::DeadLetters(command) => Ok(command),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn replay_takes_ids_or_all_with_a_filter_and_always_an_operator() {
        let by_id = parse(&["replay", "17", "18", "--operator", "ops-zhang"]).unwrap();
        assert!(matches!(
            by_id,
            super::DeadLettersCommand::Replay { ref ids, all: false, ref operator, .. }
                if ids == &[17, 18] && operator == "ops-zhang"
        ));
        let all = parse(&[
            "replay",
            "--all",
            "--reason",
            "no_pairing",
            "--operator",
            "ops-li",
        ])
        .unwrap();
        assert!(matches!(
            all,
            super::DeadLettersCommand::Replay { all: true, ref filter, .. }
                if filter.reason.as_deref() == Some("no_pairing")
        ));
        assert!(
            parse(&["replay", "17", "--all", "--operator", "x"]).is_err(),
            "ids and --all exclude each other"
        );
        // The operator may also come from TELERELAY_OPERATOR; without it, one must be named.
        if std::env::var_os("TELERELAY_OPERATOR").is_none() {
            assert!(
                parse(&["replay", "17"]).is_err(),
                "a replay needs an operator"
            );
        }
    }

    #[test]
    fn the_listing_never_shows_a_body_and_says_when_there_is_nothing() {
        assert_eq!(super::render_list(&[]), "no dead letters\n");
        let dead = store::dead_letters::DeadLetter {
            id: 3,
            stored_at: chrono::Utc::now(),
            source_queue: "telerelay.dispatcher".into(),
            reason: "no_pairing".into(),
            detail: "no reviewer pool reads imaging from HN-SY-001".into(),
            message_type: "telerelay.v1.ReviewRequest".into(),
            message_id: "m-1".into(),
            correlation_id: "c-1".into(),
            original_user_id: Some("hn-sy-001".into()),
            replay_of: None,
            headers: Default::default(),
            body: b"PATIENT-PSEUDONYM-XYZ".to_vec(),
            replayed_at: None,
            replayed_by: None,
        };
        let table = super::render_list(&[dead]);
        assert!(
            table.contains("no_pairing") && table.contains("21"),
            "{table}"
        );
        assert!(!table.contains("PATIENT-PSEUDONYM-XYZ"), "{table}");
    }
}
