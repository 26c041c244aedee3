//! Parties that cross nodes (docs/cluster.md §5.7). A party lives on the node that
//! created it (its *host*); a session of another node (its *home*) joins it and acts in
//! it through its home:
//!
//! - every party request but data goes to the host as a `Party` request, answered with
//!   what the client is told; a request for a party the home does not know is asked of
//!   every live node at once, and only the host answers other than `PARTY_NOT_FOUND`.
//!   Requests of one session are asked one after another on one subject, so the host
//!   applies them in the order the client sent them;
//! - the host reaches such a member through a remote handle in its session registry, so
//!   its party table and matchmaker push to it as to a local session; what they push
//!   rides the link to the home as `PartyPush`, delivered only to sessions in (or
//!   asking to join) a party of that host;
//! - party data rides the link to the host (`PartyData`), in order after the requests
//!   that made the sender a member;
//! - a session that ends for good is `PartyGone` at every host it asked: it leaves their
//!   parties, and a request of it still on its way is refused (the two travel by
//!   different subjects);
//! - a lost node, or a link reset, ends what two nodes share: the home's sessions hear
//!   `PartyClose` for the parties of the other node, and that node's sessions leave the
//!   parties here.
//!
//! [`Book`] is the bookkeeping of both sides, pure; the rest applies it.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use bytes::Bytes;
use quicmatch_protocol::{
    envelope::{Event, Response},
    frame::{self, EventBody},
    ErrorCode, PartyId, Presence, Request, SessionId, MAX_RELIABLE_PAYLOAD,
};

use super::{
    unavailable, wire, Cluster, Inner, Item, Local, Refusal, Reply, Request as PeerRequest,
    RequestBody, Sender,
};
use crate::outbound::{Lane, RemotePeer};

/// Most parties of other nodes one session may be in or asking to join: a home's
/// bound on what a session can make it track (the host applies `party.max_per_session`
/// to its own parties).
pub(super) const MAX_REMOTE_PARTIES: usize = 64;

/// Sessions of one node remembered as ended; past this the oldest are forgotten.
const GONE_KEPT: usize = 4096;

/// The cross-node party memberships of one node, both sides.
#[derive(Debug, Default)]
pub(super) struct Book {
    /// Home: each local session's parties on other nodes (member or asking to join),
    /// with their host.
    remote: HashMap<SessionId, HashMap<PartyId, Sender>>,
    /// Home: party requests of local sessions on their way (any node may answer).
    asking: HashMap<SessionId, usize>,
    /// Home: nodes asked by a request whose answer was never taken (its session's
    /// connection dropped meanwhile): they may have made it a member.
    unsure: HashMap<SessionId, HashSet<Sender>>,
    /// Home: sessions that ended for good with a request on its way (every node was
    /// told): its answer, when given up, leaves nothing behind.
    ended_asking: HashSet<SessionId>,
    /// Home: parties whose host closed them for a session while a request of it was on
    /// its way: the request's answer does not make it one of the session's parties.
    closed_asking: HashSet<(SessionId, PartyId)>,
    /// Host: sessions of each other node that ended for good (the sessions its parties
    /// reach are in the session registry).
    gone: HashMap<String, (HashSet<SessionId>, VecDeque<SessionId>)>,
}

impl Book {
    /// The host of `party`, if `session` is in (or asking to join) it.
    pub(super) fn host_of(&self, session: SessionId, party: PartyId) -> Option<Sender> {
        self.remote.get(&session)?.get(&party).cloned()
    }

    /// How many parties of other nodes `session` is in or asking to join.
    pub(super) fn count(&self, session: SessionId) -> usize {
        self.remote.get(&session).map_or(0, HashMap::len)
    }

    /// A request of `session` is on its way.
    pub(super) fn asking(&mut self, session: SessionId) {
        *self.asking.entry(session).or_default() += 1;
    }

    /// A request of `session` was answered (or given up); when its answer was not
    /// taken, `unsure` are the nodes that may have acted on it.
    pub(super) fn asked(&mut self, session: SessionId, unsure: Vec<Sender>) {
        if let Some(n) = self.asking.get_mut(&session) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.asking.remove(&session);
                self.closed_asking.retain(|(s, _)| *s != session);
            }
        }
        if self.ended_asking.contains(&session) {
            if !self.asking.contains_key(&session) {
                self.ended_asking.remove(&session);
            }
            return;
        }
        if !unsure.is_empty() {
            self.unsure.entry(session).or_default().extend(unsure);
        }
    }

    /// A request's answer from `host`: `session` is now in (or asking to join)
    /// `party` there, unless the host closed it for the session meanwhile.
    pub(super) fn answered_in(&mut self, session: SessionId, party: PartyId, host: Sender) {
        if !self.closed_asking.remove(&(session, party)) {
            self.entered(session, party, host);
        }
    }

    /// The host closed `party` for `session` (`PartyClose`).
    pub(super) fn closed(&mut self, host: &Sender, session: SessionId, party: PartyId) {
        if self.host_of(session, party).is_some_and(|h| h == *host) {
            self.forget(session, party);
        } else if self.asking.contains_key(&session) {
            self.closed_asking.insert((session, party));
        }
    }

    /// `session` is in (or asking to join) `party` on `host`.
    pub(super) fn entered(&mut self, session: SessionId, party: PartyId, host: Sender) {
        self.remote.entry(session).or_default().insert(party, host);
    }

    /// `session` is no longer in `party` (it left, or the host closed it for it).
    pub(super) fn forget(&mut self, session: SessionId, party: PartyId) {
        if let Some(parties) = self.remote.get_mut(&session) {
            parties.remove(&party);
            if parties.is_empty() {
                self.remote.remove(&session);
            }
        }
    }

    /// Whether what `host` sends may go to `session`.
    pub(super) fn in_scope(&self, host: &Sender, session: SessionId) -> bool {
        self.remote
            .get(&session)
            .is_some_and(|ps| ps.values().any(|h| h == host))
            || self.asking.contains_key(&session)
            || self.unsure.get(&session).is_some_and(|n| n.contains(host))
    }

    /// `session` ended for good: the nodes to tell (hosts of its parties, and those
    /// that may have acted on a request of it), and whether a request is still on its
    /// way (then every node is told).
    pub(super) fn ended(&mut self, session: SessionId) -> (HashSet<Sender>, bool) {
        let mut nodes: HashSet<Sender> = self
            .remote
            .remove(&session)
            .map(|ps| ps.into_values().collect())
            .unwrap_or_default();
        nodes.extend(self.unsure.remove(&session).unwrap_or_default());
        let in_flight = self.asking.contains_key(&session);
        if in_flight {
            self.ended_asking.insert(session);
        }
        (nodes, in_flight)
    }

    /// Every membership of local sessions in parties of `node`, now ended.
    pub(super) fn drop_host(&mut self, node: &str) -> Vec<(SessionId, PartyId)> {
        let mut ended = Vec::new();
        self.remote.retain(|session, parties| {
            parties.retain(|party, host| {
                let there = host.node == node;
                if there {
                    ended.push((*session, *party));
                }
                !there
            });
            !parties.is_empty()
        });
        self.unsure.retain(|_, nodes| {
            nodes.retain(|n| n.node != node);
            !nodes.is_empty()
        });
        ended
    }

    /// Whether `session`, homed on `node`, ended for good: a request of it that comes
    /// now was overtaken by its end.
    pub(super) fn ended_there(&self, node: &str, session: SessionId) -> bool {
        self.gone
            .get(node)
            .is_some_and(|(set, _)| set.contains(&session))
    }

    /// `session` of `node` ended for good.
    pub(super) fn gone(&mut self, node: &str, session: SessionId) {
        let (set, order) = self.gone.entry(node.to_owned()).or_default();
        if set.insert(session) {
            order.push_back(session);
            while order.len() > GONE_KEPT {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    /// `node` is gone: the sessions of it that ended are forgotten with it (it sends
    /// nothing more).
    pub(super) fn forget_node(&mut self, node: &str) {
        self.gone.remove(node);
    }

    /// The nodes hosting parties of local sessions.
    pub(super) fn hosts(&self) -> HashSet<String> {
        self.remote
            .values()
            .flat_map(|ps| ps.values().map(|h| h.node.clone()))
            .collect()
    }

    /// Local sessions' memberships in (or requests to join) other nodes' parties.
    pub(super) fn count_all(&self) -> usize {
        self.remote.values().map(HashMap::len).sum()
    }
}

/// The party a request a host serves names: every party request but a create and
/// data (which rides the link).
fn party_of(request: &Request) -> Option<PartyId> {
    match request {
        Request::PartyDataSend { .. } => None,
        other => other.party_id(),
    }
}

/// A member of this node's parties homed on another node: what the tables push to it
/// rides the link to its home.
pub(super) struct PartyGuest {
    pub(super) link: Arc<super::link::Link>,
}

impl RemotePeer for PartyGuest {
    fn push(&self, session: SessionId, body: &EventBody, _lane: Option<Lane>) {
        self.link.push(Item::PartyPush {
            sessions: vec![session],
            body: body.bytes().clone(),
        });
    }

    fn datagram(&self, _session: SessionId, _datagram: Bytes) {
        // Parties carry no datagrams.
    }
}

/// Takes the answer of a request that never completed as unsure.
struct Asking {
    inner: Arc<Inner>,
    session: SessionId,
    peers: Vec<Sender>,
    /// Settled by the request itself.
    done: bool,
}

impl Drop for Asking {
    fn drop(&mut self) {
        if !self.done {
            let peers = std::mem::take(&mut self.peers);
            self.inner.state().parties.asked(self.session, peers);
        }
    }
}

fn not_found(party: PartyId) -> Refusal {
    Refusal::new(
        ErrorCode::PARTY_NOT_FOUND,
        format!("no live party has id {party}"),
    )
}

impl Cluster {
    /// A party request of `presence` (a local session) for a party no local table has:
    /// to its host if the session is in it, else to every live node at once.
    pub(crate) async fn party(
        &self,
        presence: Presence,
        request: Request,
    ) -> Result<Option<Response>, Refusal> {
        let Some(party) = party_of(&request) else {
            return Err(Refusal::new(
                ErrorCode::BAD_INPUT,
                format!("{} is not a party request", request.kind()),
            ));
        };
        let Some(inner) = self.inner.clone() else {
            return Err(not_found(party));
        };
        let session = presence.session_id;
        let (bus, me, known) = {
            let st = inner.state();
            let (Some(bus), Some(me)) = (st.bus.clone(), st.me.clone()) else {
                return Err(unavailable("this node is not connected to its cluster"));
            };
            (bus, me, st.parties.host_of(session, party))
        };
        let joins = matches!(request, Request::PartyJoin { .. });
        if known.is_none() && joins && inner.state().parties.count(session) >= MAX_REMOTE_PARTIES {
            return Err(Refusal::new(
                ErrorCode::LIMIT_EXCEEDED,
                format!("a session may be in at most {MAX_REMOTE_PARTIES} parties of other nodes"),
            ));
        }
        let peers: Vec<Sender> = match &known {
            Some(host) => vec![host.clone()],
            None => inner
                .view()
                .peers()
                .into_iter()
                .map(|(node, incarnation)| Sender { node, incarnation })
                .collect(),
        };
        if peers.is_empty() {
            return Err(not_found(party));
        }
        let leaves = matches!(request, Request::PartyLeave { .. });
        let payload = frame::encode_peer(&PeerRequest {
            from: me,
            body: RequestBody::Party { presence, request },
        })
        .map_err(|e| Refusal::new(ErrorCode::BAD_INPUT, e.to_string()))?;
        inner.state().parties.asking(session);
        // Dropped before the answers are taken (the connection went): the nodes asked
        // may have acted on it, so what they send stays in scope and they hear of the
        // session's end.
        let mut guard = Asking {
            inner: inner.clone(),
            session,
            peers: peers.clone(),
            done: false,
        };
        let asks = peers.iter().map(|peer| {
            bus.request(
                wire::request_subject(&inner.config.name, &peer.node),
                payload.clone(),
                inner.config.request_timeout,
            )
        });
        let answers = futures_util::future::join_all(asks).await;
        let mut host = None;
        let mut silent = Vec::new();
        let mut acks = 0;
        for (peer, answer) in peers.into_iter().zip(answers) {
            match answer.map(|b| frame::decode_peer::<Reply>(&b)) {
                Ok(Ok(Reply::Party(Err(r)))) if r.code == ErrorCode::PARTY_NOT_FOUND => {}
                // A leave of a party a node does not host is an `Ack` there.
                Ok(Ok(Reply::Party(Ok(Some(Response::Ack))))) if leaves && known.is_none() => {
                    acks += 1;
                }
                Ok(Ok(Reply::Party(result))) => host = Some((peer, result)),
                _ => silent.push(peer),
            }
        }
        // Those that did not answer may have acted on it. What the answer means for the
        // session's parties is taken with the request's end, in one step, so nothing
        // the host sends falls between the two out of scope.
        guard.done = true;
        let mut st = inner.state();
        let Some((host, result)) = host else {
            st.parties.asked(session, silent.clone());
            drop(st);
            if leaves && acks > 0 {
                return Ok(Some(Response::Ack));
            }
            if !silent.is_empty() {
                metrics::counter!("quicmatch_cluster_request_failures_total")
                    .increment(silent.len() as u64);
                return Err(unavailable(
                    "a node of the cluster did not answer; try again",
                ));
            }
            if known.is_some() {
                inner.state().parties.forget(session, party);
            }
            return Err(not_found(party));
        };
        match &result {
            Ok(_) if joins => st.parties.answered_in(session, party, host),
            // Already in it there (a join whose answer an earlier attempt never took).
            Err(r)
                if joins
                    && matches!(
                        r.code,
                        ErrorCode::PARTY_ALREADY_MEMBER | ErrorCode::PARTY_JOIN_REQUEST_DUPLICATE
                    ) =>
            {
                st.parties.answered_in(session, party, host);
            }
            Ok(_) if leaves => st.parties.forget(session, party),
            Err(r) if r.code == ErrorCode::PARTY_NOT_FOUND => st.parties.forget(session, party),
            _ => {}
        }
        // After the answer is taken: a close that overtook it is still known above.
        st.parties.asked(session, silent);
        drop(st);
        result
    }

    /// Party data of `sender` for a party of another node it is in: `None` when it is
    /// in no such party (the local table answers then).
    pub(crate) fn party_data(
        &self,
        party_id: PartyId,
        sender: SessionId,
        op_code: i64,
        data: Bytes,
    ) -> Option<Result<(), Refusal>> {
        let inner = self.inner.as_ref()?;
        let mut st = inner.state();
        let host = st.parties.host_of(sender, party_id)?;
        if data.len() > MAX_RELIABLE_PAYLOAD {
            return Some(Err(Refusal::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!("party data exceeds {MAX_RELIABLE_PAYLOAD} bytes"),
            )));
        }
        let Some(link) = inner.link_to(&mut st, &host) else {
            return Some(Err(unavailable(
                "this node is not connected to its cluster",
            )));
        };
        link.push(Item::PartyData {
            party_id,
            sender,
            op_code,
            data,
        });
        Some(Ok(()))
    }

    /// A local session ended for good: every node that hosts a party of it (or may
    /// have acted on a request of it) lets it go.
    pub(crate) fn party_session_ended(&self, session: SessionId) {
        let Some(inner) = self.inner.as_ref() else {
            return;
        };
        let mut st = inner.state();
        let (mut nodes, in_flight) = st.parties.ended(session);
        if in_flight {
            nodes.extend(
                inner
                    .view()
                    .peers()
                    .into_iter()
                    .map(|(node, incarnation)| Sender { node, incarnation }),
            );
        }
        for node in nodes {
            if let Some(link) = inner.link_to(&mut st, &node) {
                link.push(Item::PartyGone { session });
            }
        }
    }
}

/// A `Party` request from a peer, for a party this node hosts.
pub(super) fn serve(
    inner: &Inner,
    local: &dyn Local,
    from: &Sender,
    presence: Presence,
    request: Request,
) -> Reply {
    let session = presence.session_id;
    let Some(party) = party_of(&request) else {
        return Reply::Party(Err(Refusal::new(
            ErrorCode::BAD_INPUT,
            "not a party request of another node",
        )));
    };
    if !local.party_hosted(party) {
        return Reply::Party(match request {
            Request::PartyLeave { .. } => Ok(Some(Response::Ack)),
            _ => Err(not_found(party)),
        });
    }
    let link = {
        let mut st = inner.state();
        if st.parties.ended_there(&from.node, session) {
            return Reply::Party(Err(Refusal::new(
                ErrorCode::PARTY_NOT_FOUND,
                "the session has ended",
            )));
        }
        inner.link_to(&mut st, from)
    };
    let Some(link) = link else {
        return Reply::Party(Err(unavailable("this node is leaving its cluster")));
    };
    let remote: Arc<dyn RemotePeer> = Arc::new(PartyGuest { link });
    let reply = local.party(&from.node, presence, remote, request);
    // The session's end (a link item) or its node's loss may have been applied while
    // the request was: then what it made is undone here, as the end would have.
    let ended = inner.state().parties.ended_there(&from.node, session);
    if ended || !inner.view().is_peer(&from.node, from.incarnation) {
        local.party_gone(&from.node, session);
        return Reply::Party(Err(not_found(party)));
    }
    Reply::Party(reply)
}

/// A link item of parties.
pub(super) fn apply(inner: &Inner, local: &dyn Local, from: &Sender, item: Item) {
    match item {
        Item::PartyPush { sessions, body } => {
            let Ok(body) = EventBody::from_encoded(body) else {
                super::serve::dropped("undecodable");
                return;
            };
            let targets: Vec<SessionId> = {
                let st = inner.state();
                sessions
                    .into_iter()
                    .filter(|s| st.parties.in_scope(from, *s))
                    .collect()
            };
            if targets.is_empty() {
                super::serve::dropped("out_of_scope");
                return;
            }
            // Forgotten before the session hears it: what it sends after the close is
            // answered here, as for a party it is not in.
            if let Some(party) = closes_party(&body) {
                let mut st = inner.state();
                for s in &targets {
                    st.parties.closed(from, *s, party);
                }
            }
            for s in &targets {
                if let Some(handle) = local.session(*s) {
                    handle.push_event(&body);
                }
            }
        }
        Item::PartyData {
            party_id,
            sender,
            op_code,
            data,
        } => {
            if let Err(refusal) = local.party_data(&from.node, party_id, sender, op_code, data) {
                let event = Event::Error {
                    code: refusal.code,
                    message: refusal.message,
                };
                push_to(inner, from, sender, &event);
            }
        }
        Item::PartyGone { session } => {
            inner.state().parties.gone(&from.node, session);
            local.party_gone(&from.node, session);
        }
        Item::PartyLeave { party_id, session } => local.party_left(&from.node, party_id, session),
        _ => {}
    }
}

/// An event for a session homed on `to`, over the link.
fn push_to(inner: &Inner, to: &Sender, session: SessionId, event: &Event) {
    let Ok(body) = EventBody::encode(event) else {
        return;
    };
    let link = {
        let mut st = inner.state();
        inner.link_to(&mut st, to)
    };
    if let Some(link) = link {
        link.push(Item::PartyPush {
            sessions: vec![session],
            body: body.bytes().clone(),
        });
    }
}

/// The party a `PartyClose` event ends for its receivers (checked by its variant
/// first, so other events cost a byte's look).
fn closes_party(body: &EventBody) -> Option<PartyId> {
    static PARTY_CLOSE: std::sync::OnceLock<Option<u8>> = std::sync::OnceLock::new();
    let variant = *PARTY_CLOSE.get_or_init(|| {
        EventBody::encode(&Event::PartyClose {
            party_id: PartyId(uuid::Uuid::nil()),
            reason: String::new(),
        })
        .ok()
        .and_then(|b| b.bytes().first().copied())
    });
    if variant.is_none() || body.bytes().first().copied() != variant {
        return None;
    }
    match body.decode() {
        Ok(Event::PartyClose { party_id, .. }) => Some(party_id),
        _ => None,
    }
}

/// What [`end_with`] ended: local sessions' memberships of another node's parties, and
/// that node's sessions' memberships of parties here.
pub(super) type Ended = (Vec<(SessionId, PartyId)>, Vec<(SessionId, PartyId)>);

/// Ends every party membership shared with `node`: local sessions in its parties hear
/// `PartyClose` with `reason`, and its sessions leave the parties here. Returns what
/// ended on each side, for a node still there to be told: local sessions' memberships
/// of its parties, and its sessions' memberships of parties here.
pub(super) fn end_with(inner: &Inner, local: &dyn Local, node: &str, reason: &str) -> Ended {
    let homes = inner.state().parties.drop_host(node);
    for (session, party_id) in &homes {
        let event = Event::PartyClose {
            party_id: *party_id,
            reason: reason.to_owned(),
        };
        if let (Some(handle), Ok(body)) = (local.session(*session), EventBody::encode(&event)) {
            handle.push_event(&body);
        }
    }
    let mut left = Vec::new();
    for session in local.party_guests(Some(node)) {
        left.extend(local.parties_of(session).into_iter().map(|p| (session, p)));
        local.party_gone(node, session);
    }
    (homes, left)
}

/// Ends every party membership shared with any node (this node left the cluster).
pub(super) fn end_all(inner: &Inner, local: &dyn Local, reason: &str) {
    let hosts = inner.state().parties.hosts();
    for node in hosts {
        end_with(inner, local, &node, reason);
    }
    for session in local.party_guests(None) {
        local.party_gone_anywhere(session);
    }
}

/// Tells `peer` (still there, its link reset) what [`end_with`] ended: each of this
/// node's sessions left its parties, and each of its sessions was closed out of the
/// parties here.
pub(super) fn tell_reset(link: &super::link::Link, ended: Ended, reason: &str) {
    let (homes, guests) = ended;
    for (session, party_id) in homes {
        link.push_always(Item::PartyLeave { party_id, session });
    }
    for (session, party_id) in guests {
        let event = Event::PartyClose {
            party_id,
            reason: reason.to_owned(),
        };
        if let Ok(body) = EventBody::encode(&event) {
            link.push_always(Item::PartyPush {
                sessions: vec![session],
                body: body.bytes().clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cluster::wire::sender as node;

    #[test]
    fn a_home_scopes_pushes_to_the_hosts_of_its_sessions_parties() {
        let mut b = Book::default();
        let (s, other) = (SessionId::new_random(), SessionId::new_random());
        let (p, q) = (PartyId::new_random(), PartyId::new_random());
        let (a, c) = (node("a", 1), node("c", 1));
        assert!(!b.in_scope(&a, s));
        b.asking(s);
        assert!(b.in_scope(&c, s), "asking: any node may answer");
        b.entered(s, p, a.clone());
        b.asked(s, Vec::new());
        assert!(b.in_scope(&a, s));
        assert!(!b.in_scope(&c, s), "answered: its host only");
        assert!(!b.in_scope(&a, other));
        assert!(!b.in_scope(&node("a", 2), s), "another incarnation");
        b.entered(s, q, c.clone());
        assert_eq!(b.count(s), 2);
        assert_eq!(b.host_of(s, q), Some(c.clone()));
        b.forget(s, q);
        assert!(!b.in_scope(&c, s));
        assert_eq!(b.count_all(), 1);
        assert_eq!(b.hosts(), HashSet::from(["a".to_owned()]));
        assert_eq!(b.drop_host("a"), vec![(s, p)]);
        assert_eq!(b.count(s), 0);
        assert!(b.hosts().is_empty());
    }

    #[test]
    fn a_request_whose_answer_was_not_taken_keeps_its_nodes_in_scope_until_the_end() {
        let mut b = Book::default();
        let s = SessionId::new_random();
        let (a, c) = (node("a", 1), node("c", 1));
        b.asking(s);
        b.asked(s, vec![a.clone(), c.clone()]);
        assert!(b.in_scope(&a, s) && b.in_scope(&c, s));
        b.entered(s, PartyId::new_random(), a.clone());
        let (nodes, in_flight) = b.ended(s);
        assert_eq!(nodes, HashSet::from([a.clone(), c]));
        assert!(!in_flight);
        assert!(!b.in_scope(&a, s));
        b.asking(s);
        assert!(
            b.ended(s).1,
            "a request still on its way: every node is told"
        );
    }

    #[test]
    fn a_host_remembers_the_sessions_that_ended_within_a_bound() {
        let mut b = Book::default();
        let (s, t) = (SessionId::new_random(), SessionId::new_random());
        assert!(!b.ended_there("b", s));
        b.gone("b", s);
        assert!(b.ended_there("b", s), "a request that came after its end");
        assert!(
            !b.ended_there("c", s),
            "another node's session of that id is not it"
        );
        assert!(!b.ended_there("b", t));
        b.forget_node("b");
        assert!(
            !b.ended_there("b", s),
            "a lost node's ended sessions are forgotten"
        );
        b.gone("b", t);
        for _ in 0..GONE_KEPT {
            b.gone("b", SessionId::new_random());
        }
        assert!(!b.ended_there("b", t), "the oldest was forgotten");
        assert_eq!(b.gone.get("b").map(|(set, _)| set.len()), Some(GONE_KEPT));
    }

    #[test]
    fn a_session_that_ended_with_a_request_on_its_way_leaves_nothing_behind() {
        let mut b = Book::default();
        let s = SessionId::new_random();
        b.asking(s);
        let (_, in_flight) = b.ended(s);
        assert!(in_flight);
        // The request's future is dropped after the end was told to every node.
        b.asked(s, vec![node("a", 1)]);
        assert!(b.unsure.is_empty() && b.asking.is_empty() && b.ended_asking.is_empty());
    }

    #[test]
    fn a_close_that_overtakes_the_answer_leaves_no_party() {
        let mut b = Book::default();
        let s = SessionId::new_random();
        let (p, q) = (PartyId::new_random(), PartyId::new_random());
        let a = node("a", 1);
        b.asking(s);
        // Declined before the join's answer came: the answer makes no party of it.
        b.closed(&a, s, p);
        b.answered_in(s, p, a.clone());
        b.asked(s, Vec::new());
        assert_eq!(b.count(s), 0);
        // A close for a party it is in forgets it; one from another host does not.
        b.answered_in(s, q, a.clone());
        b.closed(&node("c", 1), s, q);
        assert_eq!(b.count(s), 1);
        b.closed(&a, s, q);
        assert_eq!(b.count(s), 0);
        assert!(b.closed_asking.is_empty());
    }

    #[test]
    fn a_party_close_event_names_its_party() {
        let id = PartyId::new_random();
        let close = EventBody::encode(&Event::PartyClose {
            party_id: id,
            reason: "closed by the leader".into(),
        })
        .expect("encodes");
        assert_eq!(closes_party(&close), Some(id));
        let other = EventBody::encode(&Event::PartyUpdate {
            party_id: id,
            open: true,
            label: None,
        })
        .expect("encodes");
        assert_eq!(closes_party(&other), None);
    }
}
