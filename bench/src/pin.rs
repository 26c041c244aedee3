//! Core isolation for the relay benchmark: on a machine with at least two usable cores
//! the server gets cores of its own and the load generator (this process, its clients
//! and its impairment proxy) the others, so a run measures the server, not the fight
//! between the server and its clients for the same cores.
//!
//! The split is made once, before the load generator starts its threads: the calling
//! thread is pinned to the client cores and every thread it starts inherits that.
//! Server processes are spawned from a thread pinned, for the moment of the spawn, to
//! the server cores, so the child and every thread it ever starts inherit those (no
//! window in which a server thread runs elsewhere).

use std::{
    io,
    process::{Child, Command},
    sync::OnceLock,
};

use nix::{
    sched::{sched_getaffinity, sched_setaffinity, CpuSet},
    unistd::Pid,
};

/// Which cores each side runs on.
pub(crate) struct Layout {
    pub(crate) server: Vec<usize>,
    pub(crate) client: Vec<usize>,
    server_set: CpuSet,
    client_set: CpuSet,
}

/// The layout, once [`isolate`] made one; server spawns read it.
static LAYOUT: OnceLock<Layout> = OnceLock::new();

/// The layout in force, if any.
pub(crate) fn layout() -> Option<&'static Layout> {
    LAYOUT.get()
}

/// The cores the calling thread may run on.
fn usable() -> io::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
    Ok((0..CpuSet::count())
        .filter(|&i| set.is_set(i).unwrap_or(false))
        .collect())
}

/// Splits `usable` cores: the last `server` of them (default half, rounded down) for the
/// server, the rest for the clients. `None` when either side would get none.
fn split(usable: &[usize], server: Option<usize>) -> Option<(Vec<usize>, Vec<usize>)> {
    let n = server.unwrap_or(usable.len() / 2);
    if n == 0 || n >= usable.len() {
        return None;
    }
    let (client, server) = usable.split_at(usable.len() - n);
    Some((server.to_vec(), client.to_vec()))
}

fn set_of(cores: &[usize]) -> io::Result<CpuSet> {
    let mut set = CpuSet::new();
    for &c in cores {
        set.set(c).map_err(io::Error::from)?;
    }
    Ok(set)
}

/// Pins the calling thread (and so every thread it starts from now on) to the client
/// cores and records the layout for [`spawn`]. Call it before starting any thread.
/// Returns `None` (and pins nothing) on a machine with fewer than two usable cores, or
/// when `server` cores would leave the clients none.
pub(crate) fn isolate(server: Option<usize>) -> io::Result<Option<&'static Layout>> {
    let Some((server, client)) = split(&usable()?, server) else {
        return Ok(None);
    };
    let layout = Layout {
        server_set: set_of(&server)?,
        client_set: set_of(&client)?,
        server,
        client,
    };
    sched_setaffinity(Pid::from_raw(0), &layout.client_set).map_err(io::Error::from)?;
    Ok(Some(LAYOUT.get_or_init(|| layout)))
}

/// Spawns a server process: on the server cores when a layout is in force. The calling
/// thread moves to the server cores for the spawn (the child inherits its mask) and
/// back to the client cores right after.
/// A CPU quota in force (`--server-cpu-quota`) applies to the child as well.
pub(crate) fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let Some(layout) = LAYOUT.get() else {
        return limited(cmd.spawn()?);
    };
    sched_setaffinity(Pid::from_raw(0), &layout.server_set).map_err(io::Error::from)?;
    let child = cmd.spawn();
    let back = sched_setaffinity(Pid::from_raw(0), &layout.client_set).map_err(io::Error::from);
    let child = child?;
    back?;
    limited(child)
}

/// The child under the quota in force; killed (never left running) if that fails.
fn limited(mut child: Child) -> io::Result<Child> {
    if let Err(e) = crate::quota::apply(child.id()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(child)
}

/// The busy share at which a side counts as having used its cores up.
pub(crate) const SATURATED_PCT: f64 = 90.0;

/// Whether a process used its `cores` up: `cpu_pct` (100 = one core) of at least
/// [`SATURATED_PCT`] of each of them.
pub(crate) fn saturated(cpu_pct: f64, cores: usize) -> bool {
    cpu_pct >= SATURATED_PCT * cores as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cores_between_server_and_clients() {
        assert_eq!(split(&[0, 1], None), Some((vec![1], vec![0])));
        assert_eq!(split(&[0, 1, 2, 3], None), Some((vec![2, 3], vec![0, 1])));
        assert_eq!(
            split(&[0, 1, 2, 3], Some(1)),
            Some((vec![3], vec![0, 1, 2]))
        );
        assert_eq!(split(&[2, 5, 7], None), Some((vec![7], vec![2, 5])));
        assert_eq!(split(&[0], None), None, "one core: nothing to isolate");
        assert_eq!(split(&[0, 1], Some(2)), None, "the clients need a core");
        assert_eq!(split(&[0, 1], Some(0)), None);
        assert!(!usable().unwrap_or_default().is_empty());
    }

    #[test]
    fn saturation_is_per_core() {
        assert!(saturated(95.0, 1));
        assert!(!saturated(95.0, 2));
        assert!(saturated(181.0, 2));
        assert!(!saturated(89.0, 1));
    }
}
