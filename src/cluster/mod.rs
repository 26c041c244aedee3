//! A cluster of quicmatch nodes on NATS (`[cluster]`, design in docs/cluster.md). This
//! module owns the node's membership: its entry in the cluster's registry (a JetStream
//! key-value bucket whose entries expire after `node_ttl`), renewed every `heartbeat`
//! with its load, and its view of the other nodes (who joined, stopped, or was lost);
//! and the memberships that cross nodes: a session of this node (its *home*) in a
//! relayed match another node hosts, and members homed elsewhere in matches this node
//! hosts, with the links and datagrams between the two (docs/cluster.md §5).
//! Without `cluster.url` it does nothing and needs no NATS. A NATS server that cannot be
//! reached never stops the node from serving its own players: it joins once it can.

#[cfg(test)]
mod forged;
mod home;
mod leader;
mod link;
mod mirror;
mod nats;
mod owners;
mod parties;
mod registry;
mod remote;
mod serve;
mod tickets;
mod wire;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use bytes::Bytes;
use quicmatch_protocol::{
    ErrorCode, MatchId, MatchInfo, MatchListRequest, PartyId, Presence, SessionId,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::registry::ClusterNode;
use self::{
    link::{Inbound, Link},
    nats::Bus,
    registry::View,
    remote::Memberships,
    wire::{DatagramBody, Item, Reply, Request, RequestBody, Sender},
};
pub(crate) use self::{
    remote::ALIAS_BIT,
    wire::{Listed, Refusal},
};
use crate::{
    config::ClusterConfig,
    outbound::{RemotePeer, SessionHandle},
};

/// The local tables as the cluster reaches them (implemented above the tables): what
/// peers ask of this node, and the sessions it delivers to.
pub(crate) trait Local: Send + Sync {
    /// Joins a member homed on another node (reached through `remote`) to a local
    /// match: a relayed one at once (`create`: the match of a name this node claimed,
    /// created if it is not there yet), a server-run one when its handler decides.
    fn join(
        &self,
        match_id: MatchId,
        presence: Presence,
        remote: Arc<dyn RemotePeer>,
        create: bool,
        metadata: std::collections::BTreeMap<String, String>,
    ) -> Joining;
    /// Whether a local match (or reservation) has this id.
    fn is_live(&self, match_id: MatchId) -> bool;
    /// Relays reliable data a member homed elsewhere sent to a local match.
    fn data(
        &self,
        match_id: MatchId,
        sender: SessionId,
        op_code: i64,
        data: Bytes,
        targets: Option<&[SessionId]>,
    ) -> Result<(), Refusal>;
    /// Relays a datagram a member homed elsewhere sent (the client's format, this
    /// node's handle).
    fn datagram(&self, sender: SessionId, datagram: Bytes) -> Result<(), Refusal>;
    /// A member leaves a local match; whether it was one.
    fn leave(&self, match_id: MatchId, session: SessionId) -> bool;
    /// A live local session.
    fn session(&self, session: SessionId) -> Option<SessionHandle>;
    /// The local matches (among `matches`) `session` is in, as it sees them.
    fn infos(&self, session: SessionId, matches: &[MatchId]) -> Vec<MatchInfo>;
    /// This node's listing for `request`, ranked.
    fn list(&self, request: &MatchListRequest) -> Result<Vec<Listed>, Refusal>;
    /// The node's matchmaker: its own tickets, and the leader's passes.
    fn matchmaker(&self) -> crate::matchmaker::Matchmaker;
    /// Whether a live local party has this id.
    fn party_hosted(&self, party: PartyId) -> bool;
    /// A party request (any but a create or data) of a session homed on another node
    /// (reached through `remote`), for a local party.
    fn party(
        &self,
        home: &str,
        presence: Presence,
        remote: Arc<dyn RemotePeer>,
        request: quicmatch_protocol::Request,
    ) -> Result<Option<quicmatch_protocol::envelope::Response>, Refusal>;
    /// Party data a member homed on node `home` sent.
    fn party_data(
        &self,
        home: &str,
        party: PartyId,
        sender: SessionId,
        op_code: i64,
        data: Bytes,
    ) -> Result<(), Refusal>;
    /// The local parties a session of another node is in or asking to join.
    fn parties_of(&self, session: SessionId) -> Vec<PartyId>;
    /// A session of node `home` leaves one local party.
    fn party_left(&self, home: &str, party: PartyId, session: SessionId);
    /// A session of node `home` leaves every local party and is no longer reached.
    fn party_gone(&self, home: &str, session: SessionId);
    /// A session of another node leaves every local party, wherever it is homed (this
    /// node left its cluster).
    fn party_gone_anywhere(&self, session: SessionId);
    /// The sessions of other nodes local parties reach: those homed on `node`, or all.
    fn party_guests(&self, node: Option<&str>) -> Vec<SessionId>;
}

/// A join the tables decide now, or later (a server-run match's handler).
pub(crate) enum Joining {
    Done(Result<MatchInfo, Refusal>),
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Result<MatchInfo, Refusal>> + Send>>),
}

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
    state: Mutex<State>,
    /// Held while incoming link batches are applied, so batches a replay released and
    /// batches that came after them are applied in order.
    applying: Mutex<()>,
    /// This node's tickets on their way to the cluster's pool.
    home: tickets::Home,
    /// This node holds the matchmaker's lease.
    leading: std::sync::atomic::AtomicBool,
    /// Suspect sessions (homed anywhere) the leader's mirror holds; 0 unless leading.
    mirror_suspects: std::sync::atomic::AtomicUsize,
}

/// What changes while the node is in the cluster.
#[derive(Default)]
struct State {
    /// Set while joined: how to reach NATS, and who this node is.
    bus: Option<Bus>,
    me: Option<Sender>,
    links: HashMap<String, Arc<Link>>,
    memberships: Memberships,
    inbound: Inbound,
    /// Party memberships that cross nodes, both sides.
    parties: parties::Book,
    /// Where links report that they were reset.
    resets: Option<mpsc::UnboundedSender<Sender>>,
    /// The claims on named matches, while joined.
    owners: Option<nats::Owners>,
    /// Named matches this node claimed: the claim's revision, and since when its match
    /// has been seen ended. Kept across incarnations, so a node that joins again claims
    /// its live ones anew.
    claims: HashMap<MatchId, (u64, Option<Instant>)>,
}

/// Where the match of a name lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// This node holds the claim: it creates (or has) the match.
    Here,
    /// Another live node holds the claim, seen at this revision.
    There(u64),
}

/// A member of a local match homed on another node: what the tables send it goes onto
/// the link to its home.
struct Guest {
    link: Arc<Link>,
    match_id: MatchId,
}

impl RemotePeer for Guest {
    fn push(
        &self,
        session: SessionId,
        body: &quicmatch_protocol::frame::EventBody,
        lane: Option<crate::outbound::Lane>,
    ) {
        self.link.push(Item::Push {
            match_id: self.match_id,
            sessions: vec![session],
            lane: lane.map(|l| l.slot),
            body: body.bytes().clone(),
        });
    }

    fn datagram(&self, session: SessionId, datagram: Bytes) {
        self.link.datagram(DatagramBody::ToMembers {
            match_id: self.match_id,
            sessions: vec![session],
            datagram,
        });
    }
}

/// A join attempt being asked of the nodes: when it ends without a member (failed,
/// or dropped with its session), the attempt is withdrawn, and every node in `peers`
/// is sent a `Leave` for it (one that said yes, or may have, lets it go).
struct Withdraw {
    inner: Arc<Inner>,
    match_id: MatchId,
    session: SessionId,
    attempt: u64,
    peers: Vec<Sender>,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let mut st = self.inner.state();
        if st
            .memberships
            .host_of(self.match_id, self.session)
            .is_some_and(|h| h.attempt == self.attempt)
        {
            // It is (still) a member by this attempt.
            return;
        }
        st.memberships
            .not_joined(self.match_id, self.session, self.attempt);
        for peer in std::mem::take(&mut self.peers) {
            if let Some(link) = self.inner.link_to(&mut st, &peer) {
                link.push(Item::Leave {
                    match_id: self.match_id,
                    session: self.session,
                    attempt: self.attempt,
                });
            }
        }
    }
}

fn unavailable(why: &str) -> Refusal {
    Refusal::new(ErrorCode::CLUSTER_UNAVAILABLE, why)
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
                state: Mutex::new(State::default()),
                applying: Mutex::new(()),
                home: tickets::Home::default(),
                leading: std::sync::atomic::AtomicBool::new(false),
                mirror_suspects: std::sync::atomic::AtomicUsize::new(0),
            })),
        }
    }

    /// Shares `matchmaker`'s tickets through the cluster's one pool (docs/cluster.md
    /// §6); nothing without a cluster.
    pub(crate) fn share_pool(&self, matchmaker: &crate::matchmaker::Matchmaker) {
        if let Some(inner) = &self.inner {
            matchmaker.share(Arc::new(tickets::Shared(inner.clone())));
        }
    }

    /// Whether this node runs the matchmaker's passes now.
    pub(crate) fn leads_matchmaker(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| i.leading.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Sessions, homed on any node, whose tickets this leader's passes skip as suspect;
    /// 0 unless this node leads.
    pub(crate) fn matchmaker_suspects(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| {
            i.mirror_suspects.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Whether this node is configured to be in a cluster.
    pub(crate) fn is_active(&self) -> bool {
        self.inner.is_some()
    }

    /// The nodes this node knows of, itself included once registered; empty when not
    /// in a cluster.
    pub(crate) fn nodes(&self) -> Vec<ClusterNode> {
        match &self.inner {
            Some(inner) => inner.view().nodes(),
            None => Vec::new(),
        }
    }

    /// Local sessions in remote matches, and members of local matches homed on other
    /// nodes.
    pub(crate) fn remote_counts(&self) -> (usize, usize) {
        match &self.inner {
            Some(inner) => inner.state().memberships.counts(),
            None => (0, 0),
        }
    }

    /// Local sessions' memberships in (or requests to join) parties of other nodes.
    pub(crate) fn remote_party_memberships(&self) -> usize {
        match &self.inner {
            Some(inner) => inner.state().parties.count_all(),
            None => 0,
        }
    }

    /// Runs the membership until `cancel`, then leaves politely (the entry is
    /// deleted, so the others know at once). `load` gives `(sessions, load)`; `local`
    /// is what peers' requests and links are applied to.
    pub(crate) async fn run(
        self,
        address: String,
        load: impl Fn() -> (u32, u32) + Send + Sync + 'static,
        local: Arc<dyn Local>,
        cancel: CancellationToken,
    ) {
        if let Some(inner) = self.inner {
            nats::run(inner, address, Box::new(load), local, cancel).await;
        }
    }

    /// Whether `session` is in `match_id`, hosted by another node.
    pub(crate) fn is_remote_member(&self, match_id: MatchId, session: SessionId) -> bool {
        self.inner.as_ref().is_some_and(|inner| {
            inner
                .state()
                .memberships
                .host_of(match_id, session)
                .is_some()
        })
    }
}

impl Inner {
    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The registry bucket's name.
    fn bucket(&self) -> String {
        format!("qm_{}_nodes", self.config.name)
    }

    /// The named matches' claims bucket's name.
    fn owners_bucket(&self) -> String {
        format!("qm_{}_owners", self.config.name)
    }

    /// The matchmaker lease's bucket.
    fn leader_bucket(&self) -> String {
        format!("qm_{}_leader", self.config.name)
    }

    /// The matchmaker tickets' bucket.
    fn tickets_bucket(&self) -> String {
        format!("qm_{}_tickets", self.config.name)
    }

    /// The matched groups' bucket.
    fn groups_bucket(&self) -> String {
        format!("qm_{}_groups", self.config.name)
    }

    /// The named matches' claims and who this node is, while joined.
    fn owners_and_me(&self) -> Result<(nats::Owners, Sender), Refusal> {
        let st = self.state();
        match (st.owners.clone(), st.me.clone()) {
            (Some(owners), Some(me)) => Ok((owners, me)),
            _ => Err(unavailable(
                "a named match needs the cluster, which cannot be reached now",
            )),
        }
    }

    /// The link to `peer`, started on first use; `None` while not joined.
    fn link_to(&self, st: &mut State, peer: &Sender) -> Option<Arc<Link>> {
        if let Some(link) = st.links.get(&peer.node) {
            if link.peer == *peer {
                return Some(link.clone());
            }
        }
        let (bus, me, resets) = (st.bus.clone()?, st.me.clone()?, st.resets.clone()?);
        let link = Link::start(bus, &self.config, me, peer.clone(), resets);
        st.links.insert(peer.node.clone(), link.clone());
        Some(link)
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
