//! Readings from `/proc`: peak and current resident memory of a process, and the CPU
//! time and I/O of this process's threads, one by one.

use std::collections::HashMap;

/// A `kB` field of `/proc/<pid>/status` (`VmHWM` = peak RSS, `VmRSS` = current), in KiB.
pub(crate) fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&text, field)
}

fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// User + system CPU time of this whole process so far (every thread, ended ones
/// included), in nanoseconds (`getrusage`: microsecond resolution).
pub(crate) fn process_cpu_ns() -> Option<u64> {
    use nix::sys::{
        resource::{getrusage, UsageWho},
        time::TimeValLike,
    };
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let us = usage.user_time().num_microseconds() + usage.system_time().num_microseconds();
    u64::try_from(us).ok().map(|us| us * 1000)
}

/// What one of this process's threads has used so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ThreadUse {
    /// Its name as the kernel keeps it (`comm`: at most 15 bytes).
    pub(crate) name: String,
    /// Nanoseconds on a CPU.
    pub(crate) cpu_ns: u64,
    /// Bytes passed to write calls (`wchar` of its `io`).
    pub(crate) wchar: u64,
    /// Bytes it caused to be written to the storage layer (`write_bytes`).
    pub(crate) write_bytes: u64,
}

/// Every thread of this process now, by thread id.
///
/// CPU time is the first field of `/proc/self/task/<tid>/schedstat` (nanoseconds), or,
/// where the kernel has no schedstat, utime + stime of its `stat` at `clk_tck` ticks a
/// second. I/O fields are 0 where `io` cannot be read.
pub(crate) fn threads(clk_tck: f64) -> HashMap<u32, ThreadUse> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let read = |f: &str| std::fs::read_to_string(path.join(f)).ok();
        let Some(name) = read("comm").map(|c| c.trim_end_matches('\n').to_owned()) else {
            continue;
        };
        let cpu_ns = read("schedstat")
            .and_then(|s| parse_schedstat_ns(&s))
            .or_else(|| {
                let ticks = parse_stat_ticks(&read("stat")?)?;
                Some((ticks as f64 * 1e9 / clk_tck) as u64)
            })
            .unwrap_or(0);
        let io = read("io").unwrap_or_default();
        out.insert(
            tid,
            ThreadUse {
                name,
                cpu_ns,
                wchar: parse_io_field(&io, "wchar").unwrap_or(0),
                write_bytes: parse_io_field(&io, "write_bytes").unwrap_or(0),
            },
        );
    }
    out
}

/// A thread name as `comm` shows it: its first 15 bytes.
pub(crate) fn comm(name: &str) -> &str {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// What the threads named one of `names` (full names; compared as `comm` shows them)
/// used between two readings: each thread against its own earlier reading (0 for a
/// thread started since), summed. Threads that ended between the readings are lost.
pub(crate) fn used_between(
    before: &HashMap<u32, ThreadUse>,
    after: &HashMap<u32, ThreadUse>,
    names: &[&str],
) -> ThreadUse {
    let mut sum = ThreadUse {
        name: names.join("+"),
        ..ThreadUse::default()
    };
    for (tid, now) in after {
        if !names.iter().any(|n| comm(n) == now.name) {
            continue;
        }
        let then = before.get(tid).filter(|t| t.name == now.name);
        let since = |f: fn(&ThreadUse) -> u64| f(now).saturating_sub(then.map_or(0, f));
        sum.cpu_ns += since(|t| t.cpu_ns);
        sum.wchar += since(|t| t.wchar);
        sum.write_bytes += since(|t| t.write_bytes);
    }
    sum
}

/// The first field of a `schedstat` line: nanoseconds on a CPU.
fn parse_schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// utime + stime (clock ticks) of a `stat` line; the name may hold spaces and parens.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `name: value` line of an `io` file.
fn parse_io_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let text = "Name:\tx\nVmHWM:\t  123456 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_status_kib(text, "VmHWM"), Some(123_456));
        assert_eq!(parse_status_kib(text, "VmRSS"), Some(1000));
        assert_eq!(parse_status_kib(text, "VmSwap"), None);
        assert!(status_kib("self", "VmRSS").is_some_and(|k| k > 0));
    }

    #[test]
    fn reads_thread_files() {
        assert_eq!(
            parse_schedstat_ns("28594947 4698069 107\n"),
            Some(28_594_947)
        );
        assert_eq!(parse_schedstat_ns(""), None);
        let stat = "7 (a) b (c)) R 1 2 3 4 5 6 7 8 9 10 3 4 0";
        assert_eq!(parse_stat_ticks(stat), Some(7));
        let io = "rchar: 50871\nwchar: 2219\nsyscr: 13278\nsyscw: 91\nread_bytes: 0\n\
                  write_bytes: 57344\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io_field(io, "wchar"), Some(2219));
        assert_eq!(parse_io_field(io, "write_bytes"), Some(57_344));
        assert_eq!(parse_io_field(io, "nothing"), None);
        let cpu0 = process_cpu_ns().unwrap_or(0);
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(20) {
            std::hint::black_box(0u64);
        }
        assert!(process_cpu_ns().is_some_and(|cpu1| cpu1 > cpu0));
        let me = threads(100.0);
        assert!(!me.is_empty());
        assert!(me.values().any(|t| t.cpu_ns > 0));
    }

    #[test]
    fn names_are_compared_as_comm_shows_them() {
        assert_eq!(comm("quicmatch-persist"), "quicmatch-persi");
        assert_eq!(comm("quicmatch-store"), "quicmatch-store");
        assert_eq!(comm("short"), "short");
        assert_eq!(comm("ééééééééé"), "ééééééé");
    }

    #[test]
    fn use_is_differenced_per_thread() {
        let t = |name: &str, cpu_ns, wchar| ThreadUse {
            name: name.into(),
            cpu_ns,
            wchar,
            write_bytes: 2 * wchar,
        };
        let before = HashMap::from([
            (1, t("quicmatch-persi", 100, 10)),
            (2, t("quicmatch-store", 50, 5)),
            (3, t("other", 7, 0)),
            // Ended before the second reading: not counted.
            (4, t("quicmatch-store", 1000, 0)),
            // Its id reused by another thread: counted from zero.
            (6, t("old", 500, 500)),
        ]);
        let after = HashMap::from([
            (1, t("quicmatch-persi", 400, 30)),
            (2, t("quicmatch-store", 150, 105)),
            (3, t("other", 1000, 0)),
            // Started since: all of it.
            (5, t("quicmatch-store", 20, 1)),
            (6, t("quicmatch-store", 3, 0)),
        ]);
        let u = used_between(&before, &after, &["quicmatch-persist", "quicmatch-store"]);
        assert_eq!(u.cpu_ns, 300 + 100 + 20 + 3);
        assert_eq!(u.wchar, 20 + 100 + 1);
        assert_eq!(u.write_bytes, 2 * (20 + 100 + 1));
        assert_eq!(
            used_between(&before, &after, &["nobody"]),
            ThreadUse {
                name: "nobody".into(),
                ..ThreadUse::default()
            }
        );
    }
}
