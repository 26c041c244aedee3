//! The node registry's view, pure: which nodes are in the cluster, judged from what the
//! watch of the `qm_<c>_nodes` bucket delivers (each renewal a put) and from time. A
//! node is lost when its entry is deleted (a polite stop), replaced by another
//! incarnation, or not renewed for `node_ttl`; silence is judged only while this node's
//! own renewals come back through the same watch, so a lagging watch judges nobody.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// A node's entry in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    /// Random per process start: a restarted node is a new incarnation.
    pub(crate) incarnation: u64,
    /// Where its clients connect.
    pub(crate) address: String,
    /// `1000 × sessions / session.max_connections`.
    pub(crate) load: u32,
    pub(crate) sessions: u32,
    /// The crate version, so mixed deployments show.
    pub(crate) build: String,
}

/// A node of the cluster, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterNode {
    /// Its `cluster.node_name`.
    pub name: String,
    /// This process start of it.
    pub incarnation: u64,
    /// The address its clients connect to.
    pub address: String,
    /// Its load, per mille of its connection limit.
    pub load: u32,
    /// Its sessions.
    pub sessions: u32,
    /// Whether it is this node.
    pub local: bool,
}

/// What a change of the view means for the node's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Joined(String),
    /// A polite stop: its entry was deleted.
    Stopped(String),
    /// Gone without a word: not renewed for `node_ttl`, or replaced by a new incarnation.
    Lost(String),
}

struct Peer {
    record: NodeRecord,
    renewed: Instant,
}

/// The registry as this node sees it.
pub(crate) struct View {
    me: String,
    incarnation: u64,
    ttl: Duration,
    heartbeat: Duration,
    nodes: BTreeMap<String, Peer>,
    /// When this node's own latest renewal came back through the watch.
    own_seen: Option<Instant>,
}

impl View {
    pub(crate) fn new(me: &str, incarnation: u64, ttl: Duration, heartbeat: Duration) -> Self {
        Self {
            me: me.to_owned(),
            incarnation,
            ttl,
            heartbeat,
            nodes: BTreeMap::new(),
            own_seen: None,
        }
    }

    /// This node took a new incarnation (its name was taken over meanwhile).
    pub(crate) fn reincarnate(&mut self, incarnation: u64) {
        self.incarnation = incarnation;
        self.own_seen = None;
    }

    /// A put of `name`'s entry seen through the watch at `now`.
    pub(crate) fn put(&mut self, name: &str, record: NodeRecord, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        if name == self.me && record.incarnation == self.incarnation {
            self.own_seen = Some(now);
        }
        match self.nodes.get_mut(name) {
            Some(p) if p.record.incarnation == record.incarnation => {
                p.record = record;
                p.renewed = now;
                return changes;
            }
            Some(_) => changes.push(Change::Lost(name.to_owned())),
            None => {}
        }
        self.nodes.insert(
            name.to_owned(),
            Peer {
                record,
                renewed: now,
            },
        );
        changes.push(Change::Joined(name.to_owned()));
        changes
    }

    /// A delete (or purge) of `name`'s entry: a polite stop.
    pub(crate) fn delete(&mut self, name: &str) -> Option<Change> {
        self.nodes
            .remove(name)
            .map(|_| Change::Stopped(name.to_owned()))
    }

    /// The nodes not renewed for `ttl` at `now` are lost, when this node's own renewals
    /// are coming back (its watch is current); otherwise nobody is judged.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Change> {
        let current = self
            .own_seen
            .is_some_and(|seen| now.saturating_duration_since(seen) <= 2 * self.heartbeat);
        if !current {
            return Vec::new();
        }
        let ttl = self.ttl;
        let me = self.me.clone();
        let lost: Vec<String> = self
            .nodes
            .iter()
            .filter(|(name, p)| **name != me && now.saturating_duration_since(p.renewed) > ttl)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &lost {
            self.nodes.remove(name);
        }
        lost.into_iter().map(Change::Lost).collect()
    }

    /// After a gap in the watch (a reconnection), silence so far proves nothing: every
    /// node gets a fresh `ttl` from `now`.
    pub(crate) fn rejoined(&mut self, now: Instant) {
        for p in self.nodes.values_mut() {
            p.renewed = p.renewed.max(now);
        }
    }

    /// Forgets everything (this node left the cluster).
    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.own_seen = None;
    }

    /// Whether `name` at `incarnation` is a live node other than this one: the only
    /// senders whose messages count.
    pub(crate) fn is_peer(&self, name: &str, incarnation: u64) -> bool {
        name != self.me
            && self
                .nodes
                .get(name)
                .is_some_and(|p| p.record.incarnation == incarnation)
    }

    /// Whether a live node other than this one has the name `name`.
    pub(crate) fn is_peer_name(&self, name: &str) -> bool {
        name != self.me && self.nodes.contains_key(name)
    }

    /// The live nodes other than this one, with their incarnations.
    pub(crate) fn peers(&self) -> Vec<(String, u64)> {
        self.nodes
            .iter()
            .filter(|(name, _)| **name != self.me)
            .map(|(name, p)| (name.clone(), p.record.incarnation))
            .collect()
    }

    pub(crate) fn nodes(&self) -> Vec<ClusterNode> {
        self.nodes
            .iter()
            .map(|(name, p)| ClusterNode {
                name: name.clone(),
                incarnation: p.record.incarnation,
                address: p.record.address.clone(),
                load: p.record.load,
                sessions: p.record.sessions,
                local: *name == self.me && p.record.incarnation == self.incarnation,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rec(incarnation: u64) -> NodeRecord {
        NodeRecord {
            incarnation,
            address: "127.0.0.1:7350".into(),
            load: 0,
            sessions: 0,
            build: "test".into(),
        }
    }

    #[test]
    fn nodes_join_renew_and_stop() {
        let t0 = Instant::now();
        let mut v = View::new("a", 1, 500 * MS, 100 * MS);
        assert_eq!(v.put("a", rec(1), t0), vec![Change::Joined("a".into())]);
        assert_eq!(v.put("b", rec(7), t0), vec![Change::Joined("b".into())]);
        assert!(v.put("b", rec(7), t0 + 100 * MS).is_empty(), "a renewal");
        let nodes = v.nodes();
        assert_eq!(nodes.len(), 2);
        assert!(nodes[0].local && !nodes[1].local);
        assert_eq!(v.delete("b"), Some(Change::Stopped("b".into())));
        assert_eq!(v.delete("b"), None);
    }

    #[test]
    fn silence_past_the_ttl_is_loss_but_only_while_the_watch_is_current() {
        let t0 = Instant::now();
        let mut v = View::new("a", 1, 500 * MS, 100 * MS);
        v.put("a", rec(1), t0);
        v.put("b", rec(7), t0);
        // Own renewals keep coming; b's stop.
        v.put("a", rec(1), t0 + 500 * MS);
        assert!(v.expire(t0 + 500 * MS).is_empty(), "at the ttl: not yet");
        v.put("a", rec(1), t0 + 600 * MS);
        assert_eq!(v.expire(t0 + 600 * MS), vec![Change::Lost("b".into())]);
        // A watch that stopped delivering (own renewals not seen) judges nobody.
        let mut v = View::new("a", 1, 500 * MS, 100 * MS);
        v.put("a", rec(1), t0);
        v.put("b", rec(7), t0);
        assert!(v.expire(t0 + 900 * MS).is_empty());
    }

    #[test]
    fn a_new_incarnation_means_the_old_one_was_lost() {
        let t0 = Instant::now();
        let mut v = View::new("a", 1, 500 * MS, 100 * MS);
        v.put("b", rec(7), t0);
        assert_eq!(
            v.put("b", rec(8), t0),
            vec![Change::Lost("b".into()), Change::Joined("b".into())]
        );
        assert_eq!(v.nodes()[0].incarnation, 8);
    }

    #[test]
    fn after_a_reconnection_every_node_gets_a_fresh_ttl() {
        let t0 = Instant::now();
        let mut v = View::new("a", 1, 500 * MS, 100 * MS);
        v.put("b", rec(7), t0);
        v.rejoined(t0 + 2000 * MS);
        v.put("a", rec(1), t0 + 2100 * MS);
        assert!(v.expire(t0 + 2100 * MS).is_empty());
    }
}
