//! `relayctl second-reads`: the second reads of signed reports, newest first, with their
//! verdicts; `--discordant` lists only the reads where the second reviewer disagreed (the ones a
//! pool head reviews).

use clap::Args;
use std::fmt::Write as _;
use store::second_reads::SecondReadLine;

#[derive(Debug, Args)]
pub struct SecondReadsArgs {
    /// Only second reads whose verdict is discordant.
    #[arg(long)]
    pub discordant: bool,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
}

pub async fn run(args: &SecondReadsArgs, db: &sqlx::PgPool) -> anyhow::Result<()> {
    let found = store::second_reads::list(db, args.discordant, args.limit).await?;
    print!("{}", render(&found));
    Ok(())
}

/// The listing as a table: ids, codes, readers and verdicts; never the reports' or comments'
/// text, which may describe the patient.
pub fn render(reads: &[SecondReadLine]) -> String {
    let mut out = String::new();
    if reads.is_empty() {
        out.push_str("no second reads\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>6}  {:<19}  {:<12}  {:<24}  {:>3}  {:<14}  {:<14}  {:<14}  {:<8}  {:<10}  recorded (UTC)",
        "id",
        "opened (UTC)",
        "origin",
        "request",
        "v",
        "pool",
        "first reader",
        "second reader",
        "because",
        "state"
    );
    for read in reads {
        let state = read.verdict.as_deref().unwrap_or(read.state.as_str());
        let _ = writeln!(
            out,
            "{:>6}  {:<19}  {:<12}  {:<24}  {:>3}  {:<14}  {:<14}  {:<14}  {:<8}  {:<10}  {}",
            read.id,
            read.requested_at.format("%Y-%m-%d %H:%M:%S"),
            read.origin,
            read.request_id,
            read.report_version,
            read.pool_code,
            read.first_reader,
            read.second_reader.as_deref().unwrap_or("-"),
            read.selected_because,
            state,
            read.recorded_at
                .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
    let discordant = reads
        .iter()
        .filter(|read| read.verdict.as_deref() == Some("discordant"))
        .count();
    let _ = writeln!(out, "{} second reads, {discordant} discordant", reads.len());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    #[test]
    fn discordant_is_a_filter_and_the_limit_defaults_to_one_hundred() {
        let cli = Cli::try_parse_from(["relayctl", "second-reads", "--discordant"]).unwrap();
        let Command::SecondReads(args) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert!(args.discordant);
        assert_eq!(args.limit, 100);
    }

    #[test]
    fn the_table_names_readers_and_verdicts_and_counts_the_discordant() {
        let at = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let line = SecondReadLine {
            id: 7,
            origin: "HN-HH-001".into(),
            request_id: "ECG-1".into(),
            report_version: 1,
            pool_code: "xy-ecg".into(),
            first_reader: "xy-ecg-liu".into(),
            second_reader: Some("xy-ecg-tan".into()),
            state: "recorded".into(),
            verdict: Some("discordant".into()),
            selected_because: "sampled".into(),
            requested_at: at,
            recorded_at: Some(at),
        };
        let table = render(&[line]);
        assert!(
            table.contains("xy-ecg-tan") && table.contains("discordant"),
            "{table}"
        );
        assert!(table.ends_with("1 second reads, 1 discordant\n"), "{table}");
        assert_eq!(render(&[]), "no second reads\n");
    }
}
