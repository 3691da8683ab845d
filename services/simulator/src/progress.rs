//! What the simulation has done so far, counted lock-free by every task and reported
//! periodically as one log line (and one compact human line on a terminal).

use domain::StudyKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Counters shared by the county publishers, their inboxes and the reviewer bots.
#[derive(Debug, Default)]
pub struct Stats {
    /// New requests handed to the broker (duplicates and resubmissions not included).
    pub published: AtomicU64,
    /// New requests the broker confirmed.
    pub confirmed: AtomicU64,
    /// Publishes the broker did not take (unroutable, nacked, no confirm in time).
    pub publish_failures: AtomicU64,
    /// Second copies of a request sent to imitate a HIS retry.
    pub duplicates_sent: AtomicU64,
    pub results: AtomicU64,
    pub critical_results: AtomicU64,
    pub rejections: AtomicU64,
    pub returns: AtomicU64,
    pub resubmissions: AtomicU64,
    /// Reports the reviewer bots submitted (201).
    pub reports: AtomicU64,
    /// Requests the reviewer bots handed back (200).
    pub bot_returns: AtomicU64,
    /// Review desk answers other than success or an empty worklist.
    pub desk_errors: AtomicU64,
    /// Lease renewals and draft saves the desk took.
    pub heartbeats: AtomicU64,
    pub drafts_saved: AtomicU64,
    /// Claims that came with a previous reader's draft.
    pub drafts_continued: AtomicU64,
    /// Reads left mid-way (the lease runs out and a colleague finishes from the draft).
    pub called_away: AtomicU64,
    /// Reads whose lease was released or taken over before the report.
    pub leases_lost: AtomicU64,
    /// Amendments and addenda the desk took.
    pub revisions: AtomicU64,
    pub second_reads_agreed: AtomicU64,
    pub second_reads_discordant: AtomicU64,
    /// Critical notifications received on the origins' critical queues (reminders included).
    pub critical_notifications: AtomicU64,
    /// Acknowledgements with read-back the origins' clinicians sent.
    pub critical_acknowledgements: AtomicU64,
    /// Escalation notices the origins received.
    pub escalations: AtomicU64,
    /// Confirmed new requests per kind: ECG, imaging, pathology.
    confirmed_by_kind: [AtomicU64; 3],
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub published: u64,
    pub confirmed: u64,
    pub publish_failures: u64,
    pub duplicates_sent: u64,
    pub results: u64,
    pub critical_results: u64,
    pub rejections: u64,
    pub returns: u64,
    pub resubmissions: u64,
    pub reports: u64,
    pub bot_returns: u64,
    pub desk_errors: u64,
    pub ecg: u64,
    pub imaging: u64,
    pub pathology: u64,
    pub heartbeats: u64,
    pub drafts_saved: u64,
    pub drafts_continued: u64,
    pub called_away: u64,
    pub leases_lost: u64,
    pub revisions: u64,
    pub second_reads_agreed: u64,
    pub second_reads_discordant: u64,
    pub critical_notifications: u64,
    pub critical_acknowledgements: u64,
    pub escalations: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn confirmed_new(&self, kind: StudyKind) {
        Self::add(&self.confirmed);
        Self::add(&self.confirmed_by_kind[kind_index(kind)]);
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Snapshot {
            published: get(&self.published),
            confirmed: get(&self.confirmed),
            publish_failures: get(&self.publish_failures),
            duplicates_sent: get(&self.duplicates_sent),
            results: get(&self.results),
            critical_results: get(&self.critical_results),
            rejections: get(&self.rejections),
            returns: get(&self.returns),
            resubmissions: get(&self.resubmissions),
            reports: get(&self.reports),
            bot_returns: get(&self.bot_returns),
            desk_errors: get(&self.desk_errors),
            ecg: get(&self.confirmed_by_kind[0]),
            imaging: get(&self.confirmed_by_kind[1]),
            pathology: get(&self.confirmed_by_kind[2]),
            heartbeats: get(&self.heartbeats),
            drafts_saved: get(&self.drafts_saved),
            drafts_continued: get(&self.drafts_continued),
            called_away: get(&self.called_away),
            leases_lost: get(&self.leases_lost),
            revisions: get(&self.revisions),
            second_reads_agreed: get(&self.second_reads_agreed),
            second_reads_discordant: get(&self.second_reads_discordant),
            critical_notifications: get(&self.critical_notifications),
            critical_acknowledgements: get(&self.critical_acknowledgements),
            escalations: get(&self.escalations),
        }
    }
}

fn kind_index(kind: StudyKind) -> usize {
    match kind {
        StudyKind::Ecg => 0,
        StudyKind::Imaging => 1,
        StudyKind::Pathology => 2,
    }
}

impl Snapshot {
    /// One compact line for a terminal.
    pub fn human_line(&self) -> String {
        format!(
            "published {} (confirmed {}, failed {}, dup {}) | ecg {} img {} path {} | results {} (critical {}) \
             rejected {} returned {} resubmitted {} | bots: reports {} returns {} desk errors {} \
             | leases: heartbeats {} drafts {} continued {} called away {} lost {} | revisions {} \
             | second reads: agree {} discordant {} | critical: notified {} acknowledged {} | escalations {}",
            self.published,
            self.confirmed,
            self.publish_failures,
            self.duplicates_sent,
            self.ecg,
            self.imaging,
            self.pathology,
            self.results,
            self.critical_results,
            self.rejections,
            self.returns,
            self.resubmissions,
            self.reports,
            self.bot_returns,
            self.desk_errors,
            self.heartbeats,
            self.drafts_saved,
            self.drafts_continued,
            self.called_away,
            self.leases_lost,
            self.revisions,
            self.second_reads_agreed,
            self.second_reads_discordant,
            self.critical_notifications,
            self.critical_acknowledgements,
            self.escalations,
        )
    }

    /// Logs the counters as fields, and prints the human line when `to_stdout`.
    pub fn report(&self, message: &str, to_stdout: bool) {
        tracing::info!(
            published = self.published,
            confirmed = self.confirmed,
            publish_failures = self.publish_failures,
            duplicates_sent = self.duplicates_sent,
            results = self.results,
            critical_results = self.critical_results,
            rejections = self.rejections,
            returns = self.returns,
            resubmissions = self.resubmissions,
            bot_reports = self.reports,
            bot_returns = self.bot_returns,
            desk_errors = self.desk_errors,
            ecg = self.ecg,
            imaging = self.imaging,
            pathology = self.pathology,
            heartbeats = self.heartbeats,
            drafts_saved = self.drafts_saved,
            drafts_continued = self.drafts_continued,
            called_away = self.called_away,
            leases_lost = self.leases_lost,
            revisions = self.revisions,
            second_reads_agreed = self.second_reads_agreed,
            second_reads_discordant = self.second_reads_discordant,
            critical_notifications = self.critical_notifications,
            critical_acknowledgements = self.critical_acknowledgements,
            escalations = self.escalations,
            "{message}"
        );
        if to_stdout {
            println!("[simulator] {message}: {}", self.human_line());
        }
    }
}

/// Reports every `every` until `stop` is cancelled.
pub async fn report_periodically(
    stats: &Stats,
    every: Duration,
    to_stdout: bool,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The first tick completes at once; skip it so the first report shows some progress.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => stats.snapshot().report("progress", to_stdout),
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmed_requests_are_counted_per_kind() {
        let stats = Stats::default();
        stats.confirmed_new(StudyKind::Ecg);
        stats.confirmed_new(StudyKind::Ecg);
        stats.confirmed_new(StudyKind::Pathology);
        Stats::add(&stats.results);
        let snapshot = stats.snapshot();
        assert_eq!(
            (
                snapshot.confirmed,
                snapshot.ecg,
                snapshot.imaging,
                snapshot.pathology
            ),
            (3, 2, 0, 1)
        );
        assert_eq!(snapshot.results, 1);
        assert!(
            snapshot.human_line().contains("ecg 2 img 0 path 1"),
            "{}",
            snapshot.human_line()
        );
    }
}
