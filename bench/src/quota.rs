//! A CPU quota for the server processes the relay benchmark starts
//! (`--server-cpu-quota PCT`): each is moved into a cgroup of its own whose CFS quota
//! is PCT % of one core, over a short period (10 ms) so throttling adds little latency
//! below the limit. On a machine whose cores the server and the load generator share
//! unevenly (two cores, one each), the load generator then has room to spare and the
//! server's own knee can be read: "client-bound" runs become server-bound. cgroup v2
//! (`cpu.max`) and v1 (`cpu.cfs_quota_us`) are both handled; it needs root.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// The CFS period: short, so a throttled server waits milliseconds, not tens of them.
const PERIOD_US: u64 = 10_000;

/// The quota in force, once [`set`] made one.
static QUOTA: OnceLock<Quota> = OnceLock::new();

/// A cgroup limiting the CPU of the processes put in it.
#[derive(Debug)]
pub(crate) struct Quota {
    dir: PathBuf,
    /// Percent of one core.
    pub(crate) pct: f64,
}

/// Creates the cgroup for `pct` % of one core and records it for [`apply`].
pub(crate) fn set(pct: f64) -> io::Result<&'static Quota> {
    if !(1.0..=6400.0).contains(&pct) {
        return Err(io::Error::other(
            "--server-cpu-quota: 1 to 6400 (% of one core)",
        ));
    }
    let quota_us = (pct / 100.0 * PERIOD_US as f64).round() as u64;
    let name = format!("quicmatch-bench-{}", std::process::id());
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
    let (dir, files) = if v2.exists() {
        let dir = Path::new("/sys/fs/cgroup").join(&name);
        let files = vec![("cpu.max", format!("{quota_us} {PERIOD_US}"))];
        (dir, files)
    } else {
        let dir = Path::new("/sys/fs/cgroup/cpu").join(&name);
        let files = vec![
            ("cpu.cfs_period_us", PERIOD_US.to_string()),
            ("cpu.cfs_quota_us", quota_us.to_string()),
        ];
        (dir, files)
    };
    fs::create_dir_all(&dir)?;
    for (file, value) in files {
        if let Err(e) = fs::write(dir.join(file), value) {
            let _ = fs::remove_dir(&dir);
            return Err(io::Error::other(format!(
                "{}: {e}",
                dir.join(file).display()
            )));
        }
    }
    Ok(QUOTA.get_or_init(|| Quota { dir, pct }))
}

/// The quota in force, if any.
pub(crate) fn get() -> Option<&'static Quota> {
    QUOTA.get()
}

/// Puts a freshly started server process (all its threads, and those it starts later)
/// under the quota in force; nothing when there is none.
pub(crate) fn apply(pid: u32) -> io::Result<()> {
    match QUOTA.get() {
        Some(q) => fs::write(q.dir.join("cgroup.procs"), pid.to_string()),
        None => Ok(()),
    }
}

/// Removes the cgroup once its processes are gone (best effort: a kernel refuses while
/// one still runs).
pub(crate) fn remove() {
    if let Some(q) = QUOTA.get() {
        let _ = fs::remove_dir(&q.dir);
    }
}

/// The share of one core (100 = one core) at which a server under `quota` counts as
/// having used up what it may: 90 % of its quota, as for cores.
pub(crate) fn saturation_pct(quota: &Quota) -> f64 {
    crate::pin::SATURATED_PCT / 100.0 * quota.pct
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_saturates_at_ninety_percent_of_itself() {
        let q = Quota {
            dir: PathBuf::new(),
            pct: 40.0,
        };
        assert!((saturation_pct(&q) - 36.0).abs() < 1e-9);
    }

    #[test]
    fn out_of_range_quotas_are_refused_before_touching_cgroups() {
        assert!(set(0.5).is_err());
        assert!(set(5.0).is_err(), "under 1 ms a period");
        assert!(set(10_000.0).is_err());
    }
}
