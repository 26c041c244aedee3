//! A cluster of quicmatch nodes on NATS (`[cluster]`, design in docs/cluster.md). This
//! module owns the node's membership: its entry in the cluster's registry (a JetStream
//! key-value bucket whose entries expire after `node_ttl`), renewed every `heartbeat`
//! with its load, and its view of the other nodes (who joined, stopped, or was lost).
//! Without `cluster.url` it does nothing and needs no NATS. A NATS server that cannot be
//! reached never stops the node from serving its own players: it joins once it can.

mod nats;
mod registry;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use tokio_util::sync::CancellationToken;

pub use self::registry::ClusterNode;
use self::registry::View;
use crate::config::ClusterConfig;

/// The node's handle on its cluster membership; cheap to clone.
#[derive(Clone)]
pub(crate) struct Cluster {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    config: ClusterConfig,
    url: String,
    node: String,
    view: Mutex<View>,
}

impl Cluster {
    /// The membership `config` asks for; inactive without a URL.
    pub(crate) fn new(config: &ClusterConfig) -> Self {
        let Some(url) = config.url.clone() else {
            return Self { inner: None };
        };
        let node = config.node_name.clone().unwrap_or_else(default_node_name);
        let view = View::new(&node, 0, config.node_ttl, config.heartbeat);
        Self {
            inner: Some(Arc::new(Inner {
                config: config.clone(),
                url,
                node,
                view: Mutex::new(view),
            })),
        }
    }

    /// The nodes this node knows of, itself included once registered; empty when not
    /// in a cluster.
    pub(crate) fn nodes(&self) -> Vec<ClusterNode> {
        match &self.inner {
            Some(inner) => inner.view().nodes(),
            None => Vec::new(),
        }
    }

    /// Runs the membership until `cancel`, then leaves politely (the entry is
    /// deleted, so the others know at once). `load` gives `(sessions, load)`.
    pub(crate) async fn run(
        self,
        address: SocketAddr,
        load: impl Fn() -> (u32, u32) + Send + Sync + 'static,
        cancel: CancellationToken,
    ) {
        if let Some(inner) = self.inner {
            nats::run(inner, address, Box::new(load), cancel).await;
        }
    }
}

impl Inner {
    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The registry bucket's name.
    fn bucket(&self) -> String {
        format!("qm_{}_nodes", self.config.name)
    }
}

/// The host's name made to fit a node name (1 to 32 of `A-Z a-z 0-9 _ -`).
fn default_node_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    node_name_from(&host)
}

fn node_name_from(host: &str) -> String {
    let name: String = host
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => c,
            _ => '-',
        })
        .take(32)
        .collect();
    if name.is_empty() {
        "node".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_become_node_names() {
        assert_eq!(
            node_name_from("game-01.eu.example.com"),
            "game-01-eu-example-com"
        );
        assert_eq!(node_name_from(""), "node");
        assert_eq!(node_name_from(&"x".repeat(40)).len(), 32);
        assert_eq!(node_name_from("héllo"), "h-llo");
    }

    #[test]
    fn without_a_url_there_is_no_cluster() {
        let c = Cluster::new(&ClusterConfig::default());
        assert!(c.inner.is_none());
        assert!(c.nodes().is_empty());
    }
}
