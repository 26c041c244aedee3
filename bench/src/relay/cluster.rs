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
    /// The node (0 to `nodes - 1`) that player `n` (over all matches, `per_match` to a
    /// match) connects to; a match's first player, who creates it, is on its host.
    /// Matches take turns at the nodes; `spread` puts the second half of a match's
    /// players on the node after its host.
    pub(super) fn node(self, n: usize, per_match: usize, nodes: usize) -> usize {
        let (per_match, nodes) = (per_match.max(1), nodes.max(1));
        let (m, i) = (n / per_match, n % per_match);
        match self {
            Self::Local => m % nodes,
            Self::Spread => (m + usize::from(i >= per_match.div_ceil(2))) % nodes,
        }
    }
}

/// Where a clustered run's players connect: node `k` (of `count`) at `nodes[k]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Nodes {
    pub(super) nodes: [SocketAddr; MAX_NODES],
    pub(super) count: usize,
    pub(super) layout: Layout,
}

impl Nodes {
    /// The node player `n` connects to, unless it is the first (the run's server).
    pub(super) fn other(&self, n: usize, per_match: usize) -> Option<SocketAddr> {
        let k = self.layout.node(n, per_match, self.count);
        (k > 0).then(|| self.nodes[k])
    }
}

/// Most nodes a clustered run starts.
pub(crate) const MAX_NODES: usize = 3;

/// The nats-server and the other nodes of a run (the first is the run's server).
pub(super) struct Cluster {
    nats: Child,
    _store: tempfile::TempDir,
    pub(super) others: Vec<ServerProc>,
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
        self.others
            .iter()
            .filter_map(ServerProc::pid)
            .chain([self.nats.id()])
            .collect()
    }

    /// Where the run's players connect, the first node at `first`.
    pub(super) fn route(&self, first: SocketAddr) -> Nodes {
        let mut nodes = [first; MAX_NODES];
        for (slot, node) in nodes.iter_mut().skip(1).zip(&self.others) {
            *slot = node.addr;
        }
        Nodes {
            nodes,
            count: 1 + self.others.len(),
            layout: self.layout,
        }
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

/// Puts the run's cluster together: its nats-server (already started) and other nodes.
pub(super) fn assemble(
    nats: Child,
    store: tempfile::TempDir,
    others: Vec<ServerProc>,
    layout: Layout,
) -> Cluster {
    Cluster {
        nats,
        _store: store,
        others,
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
        let nodes =
            |layout: Layout| -> Vec<usize> { (0..8).map(|n| layout.node(n, 4, 2)).collect() };
        assert_eq!(nodes(Layout::Local), [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(nodes(Layout::Spread), [0, 0, 1, 1, 1, 1, 0, 0]);
        assert_eq!(
            Layout::Spread.node(2, 3, 2),
            1,
            "the larger half on the host"
        );
        assert_eq!(Layout::Spread.node(1, 3, 2), 0);
        let three: Vec<usize> = (0..12).map(|n| Layout::Local.node(n, 4, 3)).collect();
        assert_eq!(three, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        let three: Vec<usize> = (0..12).map(|n| Layout::Spread.node(n, 4, 3)).collect();
        assert_eq!(three, [0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0]);
    }
}
