//! A cluster of quicmatch nodes on NATS (`[cluster]`, design in docs/cluster.md). This
//! module owns the node's membership: its entry in the cluster's registry (a JetStream
//! key-value bucket whose entries expire after `node_ttl`), renewed every `heartbeat`
//! with its load, and its view of the other nodes (who joined, stopped, or was lost);
//! and the memberships that cross nodes: a session of this node (its *home*) in a
//! relayed match another node hosts, and members homed elsewhere in matches this node
//! hosts, with the links and datagrams between the two (docs/cluster.md §5).
//! Without `cluster.url` it does nothing and needs no NATS. A NATS server that cannot be
//! reached never stops the node from serving its own players: it joins once it can.

mod link;
mod nats;
mod registry;
mod remote;
mod serve;
mod wire;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use quicmatch_protocol::{
    datagram::ClientDatagram, ErrorCode, MatchId, MatchInfo, MatchListRequest, Presence, SessionId,
    MAX_RELIABLE_PAYLOAD, MAX_TARGETS,
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

/// How long a request to another node may take before it counts as unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

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
            })),
        }
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

    /// Joins `presence` (a local session) to a match no local table has: every live
    /// node is asked at once, and only the host can say yes. The info comes back with
    /// this node's alias for the match's handle.
    pub(crate) async fn join(
        &self,
        match_id: MatchId,
        presence: Presence,
        metadata: std::collections::BTreeMap<String, String>,
    ) -> Result<MatchInfo, Refusal> {
        let not_found = || {
            Refusal::new(
                ErrorCode::MATCH_NOT_FOUND,
                format!("no live match has id {match_id}"),
            )
        };
        let Some(inner) = self.inner.clone() else {
            return Err(not_found());
        };
        let session = presence.session_id;
        let (bus, me, attempt, already) = {
            let mut st = inner.state();
            let (Some(bus), Some(me)) = (st.bus.clone(), st.me.clone()) else {
                return Err(unavailable("this node is not connected to its cluster"));
            };
            // Joining again a match it is in: the same attempt, so nothing the
            // answer (or its absence) does can undo the membership it has.
            let (attempt, already) = match st.memberships.host_of(match_id, session) {
                Some(h) => (h.attempt, true),
                None => (st.memberships.joining(match_id, session), false),
            };
            (bus, me, attempt, already)
        };
        let peers: Vec<Sender> = inner
            .view()
            .peers()
            .into_iter()
            .map(|(node, incarnation)| Sender { node, incarnation })
            .collect();
        // If the session goes while the nodes are asked (the future is dropped), the
        // attempt is withdrawn everywhere: a host that said yes meanwhile lets it go.
        let mut guard = Withdraw {
            inner: inner.clone(),
            match_id,
            session,
            attempt,
            peers: if already { Vec::new() } else { peers.clone() },
        };
        let request = Request {
            from: me,
            body: RequestBody::Join {
                match_id,
                presence,
                attempt,
                metadata,
            },
        };
        let payload = match quicmatch_protocol::frame::encode_peer(&request) {
            Ok(p) => p,
            Err(e) => return Err(Refusal::new(ErrorCode::BAD_INPUT, e.to_string())),
        };
        let asks = peers.iter().map(|peer| {
            bus.request(
                wire::request_subject(&inner.config.name, &peer.node),
                payload.clone(),
                REQUEST_TIMEOUT,
            )
        });
        let answers = futures_util::future::join_all(asks).await;
        let mut refusal: Option<Refusal> = None;
        let mut silent = Vec::new();
        let mut joined = None;
        for (peer, answer) in peers.into_iter().zip(answers) {
            match answer.map(|bytes| quicmatch_protocol::frame::decode_peer::<Reply>(&bytes)) {
                Ok(Ok(Reply::Joined(info))) => joined = Some((peer, info)),
                Ok(Ok(Reply::Refused(r))) => {
                    if r.code != ErrorCode::MATCH_NOT_FOUND || refusal.is_none() {
                        refusal = Some(r);
                    }
                }
                Ok(Ok(Reply::Infos(_) | Reply::Replaying(_) | Reply::Listed(_)) | Err(_))
                | Err(_) => {
                    silent.push(peer);
                }
            }
        }
        if let Some((host, mut info)) = joined {
            let mut st = inner.state();
            if st
                .memberships
                .take_ended_joining(match_id, session, attempt)
            {
                // The host ended it (a link it reset) before this answer was taken.
                drop(st);
                return Err(unavailable(
                    "the match's node lost touch with this one; try again",
                ));
            }
            guard.peers.clear();
            info.handle = st
                .memberships
                .joined(match_id, session, &host, info.handle, attempt);
            return Ok(info);
        }
        // Those that did not answer may have joined it: the guard withdraws it there.
        if !already {
            guard.peers = silent.clone();
        }
        if !silent.is_empty() {
            metrics::counter!("quicmatch_cluster_request_failures_total")
                .increment(silent.len() as u64);
            return Err(unavailable(
                "a node of the cluster did not answer; try again",
            ));
        }
        Err(refusal.unwrap_or_else(not_found))
    }

    /// The remote matches (among `joined`) a resuming session is still in, asked of
    /// their hosts, with this node's aliases. A host that does not answer in time has
    /// its matches left, each with `MatchEnded { reason: "cluster unavailable" }` queued
    /// for the session (after the reply that omits them), so the client's picture is
    /// never wrong.
    pub(crate) async fn infos(
        &self,
        session: &SessionHandle,
        joined: &rustc_hash::FxHashSet<MatchId>,
    ) -> Vec<MatchInfo> {
        let Some(inner) = self.inner.clone() else {
            return Vec::new();
        };
        let sid = session.presence.session_id;
        let (bus, me, by_host) = {
            let st = inner.state();
            // One request per match: an answer always fits a message, as one match's
            // info fits a client's frame.
            let mut by_host: Vec<(Sender, Vec<MatchId>)> = Vec::new();
            for id in joined {
                if let Some(h) = st.memberships.host_of(*id, sid) {
                    by_host.push((h.host, vec![*id]));
                }
            }
            (st.bus.clone(), st.me.clone(), by_host)
        };
        if by_host.is_empty() {
            return Vec::new();
        }
        let asks = by_host.iter().map(|(host, matches)| {
            let request = Request {
                from: me.clone().unwrap_or_else(|| Sender {
                    node: inner.node.clone(),
                    incarnation: 0,
                }),
                body: RequestBody::Infos {
                    session: sid,
                    matches: matches.clone(),
                },
            };
            let bus = bus.clone();
            let subject = wire::request_subject(&inner.config.name, &host.node);
            async move {
                let bus = bus.ok_or_else(|| "not connected".to_owned())?;
                let payload =
                    quicmatch_protocol::frame::encode_peer(&request).map_err(|e| e.to_string())?;
                let answer = bus.request(subject, payload, REQUEST_TIMEOUT).await?;
                match quicmatch_protocol::frame::decode_peer::<Reply>(&answer) {
                    Ok(Reply::Infos(infos)) => Ok(infos),
                    _ => Err("unexpected answer".to_owned()),
                }
            }
        });
        let answers = futures_util::future::join_all(asks).await;
        let mut out = Vec::new();
        for ((host, matches), answer) in by_host.into_iter().zip(answers) {
            match answer {
                Ok(infos) => {
                    let st = inner.state();
                    for mut info in infos {
                        if !matches.contains(&info.match_id) {
                            continue;
                        }
                        if let Some(alias) = st.memberships.alias(info.match_id, &host) {
                            info.handle = alias;
                            out.push(info);
                        }
                    }
                    drop(st);
                    // Listed but no longer there: the host ended it meanwhile.
                    for id in matches
                        .iter()
                        .filter(|id| !out.iter().any(|i| i.match_id == **id))
                    {
                        inner.state().memberships.left(*id, sid);
                    }
                }
                Err(_) => {
                    metrics::counter!("quicmatch_cluster_request_failures_total").increment(1);
                    for id in matches {
                        self.leave(id, sid);
                        let event = quicmatch_protocol::envelope::Event::MatchEnded {
                            match_id: id,
                            reason: "cluster unavailable".into(),
                        };
                        if let Ok(body) = quicmatch_protocol::frame::EventBody::encode(&event) {
                            session.push_event(&body);
                        }
                    }
                }
            }
        }
        out
    }

    /// Where the match named by `id` (a named match's id) lives: this node claims the
    /// name unless a live node holds it (one that is gone loses it to this node).
    pub(crate) async fn place(&self, id: MatchId) -> Result<Place, Refusal> {
        let Some(inner) = self.inner.clone() else {
            return Ok(Place::Here);
        };
        let (owners, me) = inner.owners_and_me()?;
        // A holder is alive while a node of its name is: a node that took a new
        // incarnation claims its own names again on its own.
        let live = |s: &Sender| inner.view().is_peer_name(&s.node);
        match tokio::time::timeout(REQUEST_TIMEOUT, owners.claim(id, &me, live)).await {
            Ok(Ok(nats::Claimed::Mine(revision))) => {
                inner.state().claims.insert(id, (revision, None));
                Ok(Place::Here)
            }
            Ok(Ok(nats::Claimed::Theirs(_, revision))) => Ok(Place::There(revision)),
            Ok(Err(e)) => Err(unavailable(&format!("the cluster's claims: {e}"))),
            Err(_) => Err(unavailable("the cluster's claims did not answer")),
        }
    }

    /// Takes over the claim on `id` seen at `revision`: its holder no longer hosts the
    /// match. Another node may have taken it meanwhile: then it is placed again.
    pub(crate) async fn take_over(&self, id: MatchId, revision: u64) -> Result<Place, Refusal> {
        let Some(inner) = self.inner.clone() else {
            return Ok(Place::Here);
        };
        let (owners, me) = inner.owners_and_me()?;
        match tokio::time::timeout(REQUEST_TIMEOUT, owners.take_over(id, &me, revision)).await {
            Ok(Ok(Some(revision))) => {
                inner.state().claims.insert(id, (revision, None));
                Ok(Place::Here)
            }
            Ok(Ok(None)) => self.place_again(id).await,
            Ok(Err(e)) => Err(unavailable(&format!("the cluster's claims: {e}"))),
            Err(_) => Err(unavailable("the cluster's claims did not answer")),
        }
    }

    fn place_again(
        &self,
        id: MatchId,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Place, Refusal>> + Send + '_>>
    {
        Box::pin(self.place(id))
    }

    /// Every other live node's listing for `request`, each in its order; a node that
    /// does not answer within `request_timeout` is left out (counted).
    pub(crate) async fn list(&self, request: &MatchListRequest) -> Vec<Vec<Listed>> {
        let Some(inner) = self.inner.clone() else {
            return Vec::new();
        };
        let (bus, me) = {
            let st = inner.state();
            match (st.bus.clone(), st.me.clone()) {
                (Some(bus), Some(me)) => (bus, me),
                _ => return Vec::new(),
            }
        };
        let payload = match quicmatch_protocol::frame::encode_peer(&Request {
            from: me,
            body: RequestBody::List(request.clone()),
        }) {
            Ok(p) => p,
            Err(_) => return Vec::new(),
        };
        let peers = inner.view().peers();
        let asks = peers.iter().map(|(node, _)| {
            bus.request(
                wire::request_subject(&inner.config.name, node),
                payload.clone(),
                REQUEST_TIMEOUT,
            )
        });
        let mut lists = Vec::new();
        for answer in futures_util::future::join_all(asks).await {
            match answer.map(|b| quicmatch_protocol::frame::decode_peer::<Reply>(&b)) {
                Ok(Ok(Reply::Listed(list))) => lists.push(list),
                _ => metrics::counter!("quicmatch_cluster_list_partial_total").increment(1),
            }
        }
        lists
    }

    /// Reliable data to a remote match `sender` is in: `None` when it is in no such
    /// match (the local table answers then).
    pub(crate) fn send_data(
        &self,
        match_id: MatchId,
        sender: SessionId,
        op_code: i64,
        data: Bytes,
        targets: Option<Vec<SessionId>>,
    ) -> Option<Result<(), Refusal>> {
        let inner = self.inner.as_ref()?;
        let mut st = inner.state();
        let hosted = st.memberships.host_of(match_id, sender)?;
        if data.len() > MAX_RELIABLE_PAYLOAD {
            return Some(Err(Refusal::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!(
                    "reliable payload of {} bytes exceeds {MAX_RELIABLE_PAYLOAD}",
                    data.len()
                ),
            )));
        }
        if targets.as_ref().is_some_and(|t| t.len() > MAX_TARGETS) {
            return Some(Err(Refusal::new(
                ErrorCode::BAD_INPUT,
                format!("at most {MAX_TARGETS} targets"),
            )));
        }
        let Some(link) = inner.link_to(&mut st, &hosted.host) else {
            return Some(Err(unavailable(
                "this node is not connected to its cluster",
            )));
        };
        link.push(Item::Data {
            match_id,
            sender,
            op_code,
            data,
            targets,
        });
        Some(Ok(()))
    }

    /// A datagram whose handle is an alias (top bit set): on to the match's host.
    pub(crate) fn datagram(
        &self,
        sender: SessionId,
        mut datagram: ClientDatagram,
    ) -> Result<(), Refusal> {
        let not_found = || {
            Refusal::new(
                ErrorCode::MATCH_NOT_FOUND,
                format!("no live match has handle {}", datagram.handle),
            )
        };
        let Some(inner) = self.inner.as_ref() else {
            return Err(not_found());
        };
        let mut st = inner.state();
        let Some((_, hosted)) = st.memberships.by_alias(datagram.handle, sender) else {
            return Err(not_found());
        };
        let Some(link) = inner.link_to(&mut st, &hosted.host) else {
            return Err(unavailable("this node is not connected to its cluster"));
        };
        drop(st);
        datagram.handle = hosted.host_handle;
        link.datagram(DatagramBody::ToHost {
            sender,
            datagram: datagram.encode(),
        });
        Ok(())
    }

    /// `session` leaves remote match `match_id`; whether it was in it.
    pub(crate) fn leave(&self, match_id: MatchId, session: SessionId) -> bool {
        let Some(inner) = self.inner.as_ref() else {
            return false;
        };
        let mut st = inner.state();
        let Some((host, attempt)) = st.memberships.left(match_id, session) else {
            return false;
        };
        if let Some(link) = inner.link_to(&mut st, &host) {
            link.push(Item::Leave {
                match_id,
                session,
                attempt,
            });
        }
        true
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
        let link = Link::start(
            bus,
            &self.config.name,
            me,
            peer.clone(),
            self.config.heartbeat,
            resets,
        );
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
