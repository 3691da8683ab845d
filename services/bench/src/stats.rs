//! Latency summaries.

use std::time::Duration;

/// The `q`-quantile (0.0 ..= 1.0) of `samples` by the nearest-rank method: the smallest sample
/// such that at least `q` of all samples are at or below it. `None` for no samples.
pub fn percentile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let q = q.clamp(0.0, 1.0);
    // Nearest rank: ceil(q * n), at least 1.
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

/// Milliseconds with one decimal, for summary lines.
pub fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// The median of a few repeated figures (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples = ms(&[15, 20, 35, 40, 50]);
        assert_eq!(percentile(&samples, 0.0), Some(Duration::from_millis(15)));
        assert_eq!(percentile(&samples, 0.3), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&samples, 0.4), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&samples, 0.5), Some(Duration::from_millis(35)));
        assert_eq!(percentile(&samples, 1.0), Some(Duration::from_millis(50)));
    }

    #[test]
    fn p99_of_a_hundred_is_the_ninety_ninth_smallest_whatever_the_order() {
        let mut samples = ms(&(1..=100).collect::<Vec<_>>());
        samples.reverse();
        assert_eq!(percentile(&samples, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&samples, 0.5), Some(Duration::from_millis(50)));
    }

    #[test]
    fn no_samples_no_percentile() {
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn millis_have_one_decimal() {
        assert_eq!(millis(Duration::from_micros(12_345)), "12.3 ms");
    }
}
