//! `relay --cluster`: the relay workload against two quicmatch nodes of one cluster, on
//! a `nats-server` the bench starts (2.10 or later, from `PATH`), all on loopback. With
//! `--cluster-layout local` each match lives on one node with all its players (matches
//! alternate between the nodes, so both work and nothing crosses); with `spread` half of
//! each match's players are on the other node, so every delivery to them, and every
//! message from them, crosses NATS. Server CPU is the two nodes' plus `nats-server`'s.

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{pin, server_proc::ServerProc};

/// Where each match's players connect.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Layout {
    /// All of a match's players on one node (matches alternate between the nodes).
    Local,
    /// Half of each match's players on each node.
    Spread,
}

impl Layout {
    /// The node (0 or 1) that player `n` (over all matches, `per_match` to a match)
    /// connects to; a match's first player, who creates it, is on its host.
    pub(super) fn node(self, n: usize, per_match: usize) -> usize {
        let per_match = per_match.max(1);
        let (m, i) = (n / per_match, n % per_match);
        match self {
            Self::Local => m % 2,
            Self::Spread => (m + usize::from(i >= per_match.div_ceil(2))) % 2,
        }
    }
}

/// The nats-server and the second node of a run (the first is the run's server).
pub(super) struct Cluster {
    nats: Child,
    _store: tempfile::TempDir,
    pub(super) second: ServerProc,
    pub(super) layout: Layout,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.nats.kill();
        let _ = self.nats.wait();
    }
}

impl Cluster {
    /// Processes whose CPU counts as the server's, besides the first node.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.second
            .pid()
            .into_iter()
            .chain([self.nats.id()])
            .collect()
    }
}

/// Starts `nats-server -js` on a free loopback port and waits until it listens;
/// returns it, its store and its URL.
pub(crate) async fn start_nats() -> anyhow::Result<(Child, tempfile::TempDir, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let store = tempfile::tempdir()?;
    let mut cmd = Command::new("nats-server");
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = pin::spawn(&mut cmd).map_err(|e| {
        anyhow::anyhow!("starting nats-server (2.10 or later must be on PATH for --cluster): {e}")
    })?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() >= deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            anyhow::bail!("nats-server did not start on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((child, store, format!("nats://{addr}")))
}

/// The arguments that make a node of the cluster on `url`.
pub(super) fn node_args(url: &str, name: &str) -> Vec<String> {
    ["--cluster", url, "--node-name", name]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Puts the run's cluster together: its nats-server (already started) and second node.
pub(super) fn assemble(
    nats: Child,
    store: tempfile::TempDir,
    second: ServerProc,
    layout: Layout,
) -> Cluster {
    Cluster {
        nats,
        _store: store,
        second,
        layout,
    }
}

/// The certificate directory of a node the bench started (the second node shares it,
/// so one CA serves every player).
pub(super) fn certs_dir(first: &ServerProc) -> anyhow::Result<PathBuf> {
    first
        .ca
        .as_ref()
        .and_then(|ca| ca.parent())
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("the first node has no certificate directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_keeps_each_match_on_one_node_and_spread_splits_it() {
        let nodes = |layout: Layout| -> Vec<usize> { (0..8).map(|n| layout.node(n, 4)).collect() };
        assert_eq!(nodes(Layout::Local), [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(nodes(Layout::Spread), [0, 0, 1, 1, 1, 1, 0, 0]);
        assert_eq!(Layout::Spread.node(2, 3), 1, "the larger half on the host");
        assert_eq!(Layout::Spread.node(1, 3), 0);
    }
}
