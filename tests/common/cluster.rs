//! Nodes for the cluster tests: a test config that joins a cluster on a NATS URL with
//! short timings, and what a node sees of the others.

use std::{net::SocketAddr, time::Duration};

use quicmatch::{Config, Stats};
use quicmatch_client::{ClientConfig, Credentials, Socket, Trust};

use super::{child::Child, eventually, nats::Nats, TestServer, TEST_TIMEOUT};

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
    config.cluster.leader_lease = NODE_TTL;
    // Every node of a cluster signs and checks tokens with the same secret (the one
    // `TestServer` gives the nodes it starts in this process).
    config.session.encryption_key = Some("07".repeat(32));
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

/// The body of a cluster test binary's `server_process` test: when `env` holds
/// `URL|NAME|DIR`, serves a node of that cluster (store and certificates under `DIR`)
/// until killed, after printing `READY <addr> <fingerprint>`; otherwise does nothing.
pub fn serve_child(env: &str) {
    let Ok(spec) = std::env::var(env) else {
        return;
    };
    let mut parts = spec.split('|');
    let (Some(url), Some(name), Some(dir)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("bad {env}: {spec}");
    };
    let mut config = node_config(url, name);
    config.data_dir = format!("{dir}/data").into();
    config.certs_dir = format!("{dir}/certs").into();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let server = quicmatch::Server::builder(config).bind().expect("bind");
        println!("READY {} {}", server.local_addr(), server.fingerprint());
        server.serve(std::future::pending::<()>()).await;
    });
}

/// Three nodes of the cluster on `nats` (`node-a`, `node-b`, `node-c`), once each sees
/// all three.
pub async fn three_nodes(nats: &Nats) -> (TestServer, TestServer, TestServer) {
    let a = TestServer::start_with(node_config(&nats.url(), "node-a")).await;
    let b = TestServer::start_with(node_config(&nats.url(), "node-b")).await;
    let c = TestServer::start_with(node_config(&nats.url(), "node-c")).await;
    let all = ["node-a", "node-b", "node-c"];
    for (s, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        sees(&s.stats, &all, &format!("{name} sees all three")).await;
    }
    (a, b, c)
}

/// A node whose matchmaker passes every 100 ms (when it leads).
pub async fn quick_node(url: &str, name: &str) -> TestServer {
    let mut config = node_config(url, name);
    config.matchmaker.interval = Duration::from_millis(100);
    TestServer::start_with(config).await
}

/// A node of the cluster on `url` in a child process (this test binary again, with
/// `env` set, running its `server_process`), to be killed with SIGKILL.
pub struct ChildNode {
    pub child: Child,
    pub addr: SocketAddr,
    fingerprint: String,
    _dir: tempfile::TempDir,
}

impl ChildNode {
    /// Starts node `name` and waits until it serves.
    pub fn spawn(env: &str, url: &str, name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Child::spawn(env, &format!("{url}|{name}|{}", dir.path().display()));
        let (addr, fingerprint) = child.ready(Duration::from_secs(30));
        Self {
            child,
            addr,
            fingerprint,
            _dir: dir,
        }
    }

    /// A player called `name` connected to this node.
    pub async fn client(&self, name: &str) -> Socket {
        let config = ClientConfig::new(
            self.addr,
            Trust::pin(&self.fingerprint).expect("pin"),
            Credentials::Device {
                id: format!("device-{name}-child-node"),
            },
        )
        .username(name);
        tokio::time::timeout(TEST_TIMEOUT, Socket::connect(config))
            .await
            .expect("connect in time")
            .expect("connect")
    }

    /// Kills the node with SIGKILL: no goodbye.
    pub fn kill(&mut self) {
        self.child.process.kill().expect("kill");
        let _ = self.child.process.wait();
    }
}
