//! Per-process resident memory and CPU time, read from `/proc/<pid>/status` and
//! `/proc/<pid>/stat`. The parsers are pure so they are tested on fixed text.

use std::time::Duration;

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessSample {
    /// `VmRSS`: resident memory now.
    pub rss_kib: u64,
    /// `VmHWM`: the most resident memory the process has had, between samples too.
    pub peak_rss_kib: u64,
    /// User plus system CPU time so far, in clock ticks.
    pub cpu_ticks: u64,
}

/// Reads a live process; `None` once it has gone.
pub fn sample(pid: u32) -> Option<ProcessSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcessSample {
        rss_kib: status_kib(&status, "VmRSS")?,
        peak_rss_kib: status_kib(&status, "VmHWM")?,
        cpu_ticks: stat_cpu_ticks(&stat)?,
    })
}

/// The value of a `<field>:   <n> kB` line of `/proc/<pid>/status`.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// `utime + stime` (fields 14 and 15) of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are counted from the
/// last `)`.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: utime is field 14, the 12th after it.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks as time. Linux reports `/proc` CPU times in `USER_HZ`, which is 100 on every
/// architecture Linux supports for user space (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_to_duration(ticks: u64) -> Duration {
    const USER_HZ: u64 = 100;
    Duration::from_millis(ticks * 1000 / USER_HZ)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const STATUS: &str = "Name:\tdispatcher\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  412396 kB\nVmSize:\t  412396 kB\nVmHWM:\t   23456 kB\nVmRSS:\t   21000 kB\n\
        RssAnon:\t    9000 kB\nThreads:\t3\n";

    #[test]
    fn status_fields_are_read_in_kib() {
        assert_eq!(status_kib(STATUS, "VmRSS"), Some(21_000));
        assert_eq!(status_kib(STATUS, "VmHWM"), Some(23_456));
        assert_eq!(status_kib(STATUS, "VmSwap"), None);
        assert_eq!(status_kib(STATUS, "Threads"), None, "not a kB field");
    }

    #[test]
    fn cpu_ticks_are_user_plus_system_time() {
        let stat = "4242 (review-desk) S 1 4242 4242 0 -1 4194560 1830 0 0 0 157 43 0 0 20 0 \
                    6 0 123456 412396000 5250 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some(200));
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "77 (odd) name (x)) R 1 77 77 0 -1 0 0 0 0 0 5 7 0 0 20 0 1 0 1 1 1";
        assert_eq!(stat_cpu_ticks(stat), Some(12));
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(stat_cpu_ticks("1 (x) S 1 2 3"), None);
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn ticks_are_hundredths_of_a_second() {
        assert_eq!(ticks_to_duration(250), Duration::from_millis(2_500));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.peak_rss_kib >= me.rss_kib);
    }
}
