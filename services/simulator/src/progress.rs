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
             rejected {} returned {} resubmitted {} | bots: reports {} returns {} desk errors {}",
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
