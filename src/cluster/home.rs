//! What a node does for its own sessions in the rest of the cluster (docs/cluster.md
//! §5, the home's side): joins to matches other nodes host, named matches' placement,
//! reliable data, datagrams and leaves on to those hosts, resume infos and listings
//! asked of the other nodes. Every call here is made by request handlers and sessions,
//! never under a table's lock.

use bytes::Bytes;
use quicmatch_protocol::{
    datagram::ClientDatagram, ErrorCode, MatchId, MatchInfo, MatchListRequest, Presence, SessionId,
    MAX_RELIABLE_PAYLOAD, MAX_TARGETS,
};

use super::{
    nats, unavailable, wire, Cluster, DatagramBody, Item, Listed, Place, Refusal, Reply, Request,
    RequestBody, Sender, Withdraw,
};
use crate::outbound::SessionHandle;

impl Cluster {
    /// Joins `presence` (a local session) to a match no local table has: every live
    /// node is asked at once, and only the host can say yes. The info comes back with
    /// this node's alias for the match's handle.
    pub(crate) async fn join(
        &self,
        match_id: MatchId,
        presence: Presence,
        metadata: std::collections::BTreeMap<String, String>,
        answer_timeout: std::time::Duration,
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
        // A server-run match's handler has `matches.answer_timeout` to decide (the same
        // on every node): the host is given that and a request's time.
        let wait = inner.config.request_timeout + answer_timeout;
        let asks = peers.iter().map(|peer| {
            bus.request(
                wire::request_subject(&inner.config.name, &peer.node),
                payload.clone(),
                wait,
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
                Ok(
                    Ok(
                        Reply::Infos(_)
                        | Reply::Replaying(_)
                        | Reply::Listed(_)
                        | Reply::Done
                        | Reply::Party(_),
                    )
                    | Err(_),
                )
                | Err(_) => {
                    silent.push(peer);
                }
            }
        }
        if let Some((host, mut info)) = joined {
            let mut st = inner.state();
            match st
                .memberships
                .take_ended_joining(match_id, session, attempt)
            {
                // The host ended it before this answer was taken. Told (a kick, or the
                // match's end, already queued after this reply): the join stands as on
                // one node, and makes no member.
                Some(true) => {
                    st.memberships.not_joined(match_id, session, attempt);
                    guard.peers.clear();
                    // The host keeps its side until told: let it forget the member.
                    let link = inner.link_to(&mut st, &host);
                    drop(st);
                    if let Some(link) = link {
                        link.push(Item::Leave {
                            match_id,
                            session,
                            attempt,
                        });
                    }
                    return Ok(info);
                }
                // Not told (a link it reset): a refusal.
                Some(false) => {
                    drop(st);
                    return Err(unavailable(
                        "the match's node lost touch with this one; try again",
                    ));
                }
                None => {}
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
            let wait = inner.config.request_timeout;
            async move {
                let bus = bus.ok_or_else(|| "not connected".to_owned())?;
                let payload =
                    quicmatch_protocol::frame::encode_peer(&request).map_err(|e| e.to_string())?;
                let answer = bus.request(subject, payload, wait).await?;
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
        match tokio::time::timeout(inner.config.request_timeout, owners.claim(id, &me, live)).await
        {
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
        match tokio::time::timeout(
            inner.config.request_timeout,
            owners.take_over(id, &me, revision),
        )
        .await
        {
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
                inner.config.request_timeout,
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
