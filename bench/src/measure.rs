//! Measurement logic shared by the load benchmarks: latency histograms, loss, and CPU
//! and memory readings from `/proc`. Pure where it can be, so it is unit-tested.

use std::time::Duration;

use hdrhistogram::Histogram;

/// One-way latencies (microseconds) and delivery counts seen by receivers.
#[derive(Clone)]
pub(crate) struct Recorder {
    hist: Histogram<u64>,
    pub(crate) delivered: u64,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            // 1 µs to 60 s at 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
            }),
            delivered: 0,
        }
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.hist.saturating_record(us);
        self.delivered += 1;
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        let _ = self.hist.add(&other.hist);
        self.delivered += other.delivered;
    }

    /// The latency at quantile `q` (0..=1), in microseconds.
    pub(crate) fn quantile_us(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q)
        }
    }

    pub(crate) fn max_us(&self) -> u64 {
        self.hist.max()
    }

    /// Percentage of the recorded latencies above `us` microseconds (to the histogram's
    /// 3 significant digits).
    pub(crate) fn share_above_pct(&self, us: u64) -> f64 {
        let total = self.hist.len();
        if total == 0 {
            return 0.0;
        }
        let above = total.saturating_sub(self.hist.count_between(0, us));
        100.0 * above as f64 / total as f64
    }
}

/// Percentage of expected deliveries that never arrived (never below zero: duplicates
/// do not count as negative loss).
pub(crate) fn loss_pct(expected: u64, delivered: u64) -> f64 {
    if expected == 0 {
        return 0.0;
    }
    (100.0 * (1.0 - delivered as f64 / expected as f64)).max(0.0)
}

/// User + system CPU time of a process, in clock ticks, from `/proc/<pid>/stat`.
pub(crate) fn process_cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces; fields are counted after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux unless told otherwise).
pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU use as a percentage of one core over `wall`.
pub(crate) fn cpu_pct(ticks: u64, ticks_per_s: f64, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    100.0 * ticks as f64 / ticks_per_s / wall.as_secs_f64()
}

/// (busy, total) jiffies of the whole machine from the `cpu` line of `/proc/stat`.
pub(crate) fn machine_jiffies() -> Option<(u64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// (busy, total) jiffies of the listed cores together, from their `cpuN` lines of
/// `/proc/stat`. Unlike a process's own CPU time this counts everything that ran there,
/// softirq work (which the kernel moves to `ksoftirqd` under load) and other programs
/// included: what decides whether a pinned side had any core left.
pub(crate) fn cores_jiffies(cores: &[usize]) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    cores.iter().try_fold((0, 0), |(busy, total), c| {
        let (b, t) = parse_cpu_line(&text, &format!("cpu{c} "))?;
        Some((busy + b, total + t))
    })
}

fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    parse_cpu_line(text, "cpu ")
}

fn parse_cpu_line(text: &str, prefix: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait are not busy.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Busy percentage of the whole machine between two readings.
pub(crate) fn busy_pct(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    100.0 * after.0.saturating_sub(before.0) as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_and_merge() {
        let mut a = Recorder::new();
        for us in 1..=100 {
            a.record(Duration::from_micros(us));
        }
        let mut b = Recorder::new();
        b.record(Duration::from_millis(10));
        a.merge(&b);
        assert_eq!(a.delivered, 101);
        assert_eq!(a.quantile_us(0.5), 51);
        assert!(a.max_us() >= 9_990);
        assert_eq!(Recorder::new().quantile_us(0.99), 0);
        // 10 ms and 91..=100 µs are above 90 µs: 11 of 101.
        assert!((a.share_above_pct(90) - 100.0 * 11.0 / 101.0).abs() < 1e-9);
        assert_eq!(a.share_above_pct(20_000), 0.0);
        assert_eq!(Recorder::new().share_above_pct(1), 0.0);
    }

    #[test]
    fn loss_counting() {
        assert_eq!(loss_pct(0, 0), 0.0);
        assert_eq!(loss_pct(100, 100), 0.0);
        assert!((loss_pct(200, 150) - 25.0).abs() < 1e-9);
        assert_eq!(loss_pct(100, 120), 0.0, "duplicates are not negative loss");
    }

    #[test]
    fn cpu_sampling_parses_proc() {
        let stat = "1234 (quic match) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        assert!(process_cpu_ticks(std::process::id()).is_some());
        assert!((cpu_pct(150, 100.0, Duration::from_secs(3)) - 50.0).abs() < 1e-9);
        let proc_stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n";
        assert_eq!(parse_proc_stat(proc_stat), Some((200, 1000)));
        assert!((busy_pct((200, 1000), (300, 1200)) - 50.0).abs() < 1e-9);
        assert!(machine_jiffies().is_some());
        let two = "cpu  9 0 9 9 0\ncpu0 100 0 100 700 100 0\ncpu1 50 0 0 150 0 0\n";
        assert_eq!(parse_cpu_line(two, "cpu1 "), Some((50, 200)));
        assert_eq!(parse_cpu_line(two, "cpu0 "), Some((200, 1000)));
        assert_eq!(parse_cpu_line(two, "cpu2 "), None);
        assert!(cores_jiffies(&[0]).is_some());
        assert_eq!(cores_jiffies(&[]), Some((0, 0)));
    }
}
