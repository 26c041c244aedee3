//! Nodes for the cluster tests: a test config that joins a cluster on a NATS URL with
//! short timings, and what a node sees of the others.

use std::time::Duration;

use quicmatch::{Config, Stats};

use super::eventually;

/// Renewals in the tests: fast, so losses show within a second.
pub const HEARTBEAT: Duration = Duration::from_millis(100);
/// Unrenewed this long, a node is lost.
pub const NODE_TTL: Duration = Duration::from_millis(500);

/// A node called `name` of the cluster on `url`.
pub fn node_config(url: &str, name: &str) -> Config {
    let mut config = super::test_config();
    config.cluster.url = Some(url.to_owned());
    config.cluster.node_name = Some(name.to_owned());
    config.cluster.heartbeat = HEARTBEAT;
    config.cluster.node_ttl = NODE_TTL;
    config
}

/// The names of the nodes `stats` sees, sorted.
pub fn names(stats: &Stats) -> Vec<String> {
    let mut names: Vec<String> = stats.cluster_nodes().into_iter().map(|n| n.name).collect();
    names.sort();
    names
}

/// Waits until `stats` sees exactly `want`.
pub async fn sees(stats: &Stats, want: &[&str], what: &str) {
    eventually(what, || names(stats) == want).await;
}
