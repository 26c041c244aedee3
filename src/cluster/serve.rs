//! What peers send, applied to the local tables (docs/cluster.md §5): join requests to
//! matches this node hosts, link items and datagrams both ways, and the end of every
//! membership shared with a node that was lost, stopped, or whose link was reset.
//!
//! A message counts only from a live peer incarnation and for this node's own
//! incarnation; one that does not decode is dropped and counted. Nothing here waits:
//! the cluster lock is never held across a call into the tables.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, PoisonError},
    time::Instant,
};

use bytes::Bytes;
use quicmatch_protocol::{
    datagram::RelayHeader,
    envelope::Event,
    frame::{self, EventBody},
    MatchId, SessionId,
};
use tracing::{debug, warn};

use super::{
    link::Accepted,
    wire::{DatagramBody, DatagramMsg, Item, LinkMsg, Reply, Request, RequestBody, Sender},
    Guest, Inner, Joining, Local,
};
use crate::outbound::{Lane, RemotePeer};

/// Most matches one `Infos` request may list: `matches.max_per_session` allows 1024.
const MAX_LISTED: usize = 1024;

pub(super) fn dropped(reason: &'static str) {
    metrics::counter!("quicmatch_cluster_messages_dropped_total", "reason" => reason).increment(1);
}

/// Whether `from` is a live peer and the message is for this incarnation.
fn trusted(inner: &Inner, from: &Sender, to: Option<u64>) -> bool {
    let me = inner.state().me.as_ref().map(|m| m.incarnation);
    if to.is_some() && to != me {
        dropped("stale");
        return false;
    }
    if !inner.view().is_peer(&from.node, from.incarnation) {
        dropped("unknown_sender");
        return false;
    }
    true
}

/// What a request gets: its reply now, or a reply to wait for (a server-run match's
/// handler deciding a join).
pub(super) enum Answer {
    Now(Option<Bytes>),
    Later(Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>),
}

/// A request; returns the reply to send.
pub(super) fn on_request(inner: &Arc<Inner>, local: &Arc<dyn Local>, payload: &[u8]) -> Answer {
    metrics::counter!("quicmatch_cluster_messages_total", "dir" => "in", "kind" => "request")
        .increment(1);
    let Ok(request) = frame::decode_peer::<Request>(payload) else {
        dropped("undecodable");
        return Answer::Now(None);
    };
    if !trusted(inner, &request.from, None) {
        return Answer::Now(None);
    }
    let local_ref = local.as_ref();
    let request_from = request.from.clone();
    let reply = match request.body {
        RequestBody::Join {
            match_id,
            presence,
            attempt,
            metadata,
        } => {
            return join(
                inner,
                local,
                &request.from,
                match_id,
                presence,
                attempt,
                metadata,
            )
        }
        RequestBody::Replay { seq } => {
            let link = inner.state().links.get(&request.from.node).cloned();
            Reply::Replaying(link.is_some_and(|l| l.peer == request.from && l.replay(seq)))
        }
        RequestBody::List(list) => match local_ref.list(&list) {
            Ok(mut listed) => {
                // A listing with long labels may not fit one message: its last (lowest
                // ranked) matches go first.
                while !listed.is_empty()
                    && frame::encode_peer(&Reply::Listed(listed.clone())).is_err()
                {
                    let keep = listed.len() * 3 / 4;
                    listed.truncate(keep);
                }
                Reply::Listed(listed)
            }
            Err(refusal) => Reply::Refused(refusal),
        },
        RequestBody::Infos { session, matches } => {
            let matches: Vec<MatchId> = matches.into_iter().take(MAX_LISTED).collect();
            Reply::Infos(local_ref.infos(session, &matches))
        }
        RequestBody::Matched { result, placement } => {
            super::tickets::deliver(inner, local_ref, &result, placement);
            Reply::Done
        }
        RequestBody::Party { presence, request } => {
            super::parties::serve(inner, local_ref, &request_from, presence, request)
        }
        RequestBody::TicketsCancelled { tickets, reason } => {
            let tickets: Vec<_> = tickets.into_iter().take(MAX_LISTED).collect();
            local_ref
                .matchmaker()
                .cancelled_elsewhere(&tickets, &reason);
            Reply::Done
        }
    };
    Answer::Now(frame::encode_peer(&reply).ok())
}

fn join(
    inner: &Arc<Inner>,
    local: &Arc<dyn Local>,
    from: &Sender,
    match_id: MatchId,
    presence: quicmatch_protocol::Presence,
    attempt: u64,
    metadata: BTreeMap<String, String>,
) -> Answer {
    let refused = |r: super::Refusal| Answer::Now(frame::encode_peer(&Reply::Refused(r)).ok());
    let session = presence.session_id;
    let (link, claimed) = {
        let mut st = inner.state();
        if !st
            .memberships
            .guest_joining(&from.node, match_id, session, attempt)
        {
            return refused(withdrawn());
        }
        let claimed = st.claims.contains_key(&match_id);
        (inner.link_to(&mut st, from), claimed)
    };
    let Some(link) = link else {
        inner
            .state()
            .memberships
            .guest_left(&from.node, match_id, session, None);
        return refused(super::unavailable("this node is leaving its cluster"));
    };
    let guest: Arc<dyn RemotePeer> = Arc::new(Guest { link, match_id });
    match local.join(match_id, presence, guest, claimed, metadata) {
        Joining::Done(outcome) => {
            let reply = joined(
                inner,
                local.as_ref(),
                from,
                match_id,
                session,
                attempt,
                claimed,
                outcome,
            );
            Answer::Now(frame::encode_peer(&reply).ok())
        }
        Joining::Later(decided) => {
            let (inner, local, from) = (inner.clone(), local.clone(), from.clone());
            Answer::Later(Box::pin(async move {
                let outcome = decided.await;
                let reply = joined(
                    &inner,
                    local.as_ref(),
                    &from,
                    match_id,
                    session,
                    attempt,
                    claimed,
                    outcome,
                );
                frame::encode_peer(&reply).ok()
            }))
        }
    }
}

fn withdrawn() -> super::Refusal {
    super::Refusal::new(
        quicmatch_protocol::ErrorCode::MATCH_JOIN_REJECTED,
        "the join was withdrawn",
    )
}

/// The reply to a join the tables decided: a member whose join was undone meanwhile (a
/// leave that overtook it, its node lost, the name's claim gone) leaves again.
#[allow(clippy::too_many_arguments)]
fn joined(
    inner: &Inner,
    local: &dyn Local,
    from: &Sender,
    match_id: MatchId,
    session: SessionId,
    attempt: u64,
    claimed: bool,
    outcome: Result<quicmatch_protocol::MatchInfo, super::Refusal>,
) -> Reply {
    match outcome {
        Ok(info) => {
            let kept = {
                let st = inner.state();
                st.memberships
                    .is_guest(&from.node, match_id, session, attempt)
                    // A match this join created must still have its name's claim.
                    && (!claimed || st.claims.contains_key(&match_id))
            } && inner.view().is_peer(&from.node, from.incarnation);
            if kept {
                Reply::Joined(info)
            } else {
                // Undone meanwhile; unless a newer attempt made it a member (the table
                // has one membership per session, which that attempt now owns).
                let newer = inner
                    .state()
                    .memberships
                    .guest_attempt(&from.node, match_id, session)
                    .is_some_and(|a| a > attempt);
                if !newer {
                    local.leave(match_id, session);
                }
                Reply::Refused(withdrawn())
            }
        }
        Err(refusal) => {
            let mut st = inner.state();
            if st
                .memberships
                .is_guest(&from.node, match_id, session, attempt)
            {
                st.memberships
                    .guest_left(&from.node, match_id, session, Some(attempt));
            }
            Reply::Refused(refusal)
        }
    }
}

/// A numbered batch (or a probe) of a link.
pub(super) fn on_link(inner: &Arc<Inner>, local: &Arc<dyn Local>, payload: &[u8]) {
    metrics::counter!("quicmatch_cluster_messages_total", "dir" => "in", "kind" => "link")
        .increment(1);
    let Ok(msg) = frame::decode_peer::<LinkMsg>(payload) else {
        dropped("undecodable");
        return;
    };
    if !trusted(inner, &msg.from, Some(msg.to)) {
        return;
    }
    let from = msg.from.clone();
    let _in_order = inner
        .applying
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let accepted = inner.state().inbound.accept(msg, Instant::now());
    act(inner, local, &from, accepted);
}

/// Applies what arrived in order; asks for what is missing; resets a link whose gap
/// cannot be filled (before what comes after the gap is applied).
fn act(inner: &Arc<Inner>, local: &Arc<dyn Local>, from: &Sender, accepted: Accepted) {
    if accepted.reset {
        warn!(peer = %from.node, "cluster: items from a node went missing; ending what the two share");
        reset(inner, local.as_ref(), from, "cluster link lost");
    }
    for msg in accepted.apply {
        for item in msg.items {
            apply(inner, local.as_ref(), from, item);
        }
    }
    if let Some(seq) = accepted.ask {
        tokio::spawn(ask_replay(inner.clone(), local.clone(), from.clone(), seq));
    }
}

/// Asks `from` to publish its batches from `seq` on again; if it cannot, or the gap is
/// still open after `cluster.request_timeout`, the link is reset.
async fn ask_replay(inner: Arc<Inner>, local: Arc<dyn Local>, from: Sender, seq: u64) {
    let asked = Instant::now();
    let request = {
        let st = inner.state();
        st.me.clone().zip(st.bus.clone())
    };
    let Some((me, bus)) = request else { return };
    let answer = match frame::encode_peer(&Request {
        from: me,
        body: RequestBody::Replay { seq },
    }) {
        Ok(payload) => {
            let subject = super::wire::request_subject(&inner.config.name, &from.node);
            bus.request(subject, payload, inner.config.request_timeout)
                .await
        }
        Err(e) => Err(e.to_string()),
    };
    let replaying = matches!(
        answer.as_deref().map(frame::decode_peer::<Reply>),
        Ok(Ok(Reply::Replaying(true)))
    );
    if replaying {
        tokio::time::sleep(inner.config.request_timeout).await;
    } else {
        metrics::counter!("quicmatch_cluster_request_failures_total").increment(1);
    }
    let _in_order = inner
        .applying
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let accepted = {
        let mut st = inner.state();
        if !st.inbound.waiting(&from, asked) {
            return;
        }
        st.inbound.give_up(&from)
    };
    act(&inner, &local, &from, accepted);
}

fn apply(inner: &Inner, local: &dyn Local, from: &Sender, item: Item) {
    match item {
        Item::Push {
            match_id,
            sessions,
            lane,
            body,
        } => {
            let Ok(body) = EventBody::from_encoded(body) else {
                dropped("undecodable");
                return;
            };
            let targets: Vec<SessionId> = {
                let st = inner.state();
                sessions
                    .into_iter()
                    .filter(|s| st.memberships.in_scope(from, match_id, *s))
                    .collect()
            };
            let ends = lane.is_none() && ends_match(&body, match_id);
            for s in &targets {
                let Some(handle) = local.session(*s) else {
                    continue;
                };
                match lane {
                    Some(slot) => handle.push_lane(&body, Lane { match_id, slot }),
                    None => handle.push_event(&body),
                }
            }
            if ends {
                // A server-run match ended, or kicked them: they are no longer in it,
                // and the host forgets them too.
                for s in targets {
                    let left = {
                        let mut st = inner.state();
                        let left = st.memberships.left(match_id, s);
                        if left.is_none() {
                            // Still joining: the answer to come makes no member, and
                            // the home lets the host forget it once that answer is in
                            // (a leave now would overtake the answer, which the host
                            // would then refuse).
                            st.memberships.told_ended_while_joining(match_id, s);
                        }
                        left
                    };
                    if let Some((host, attempt)) = left {
                        let link = {
                            let mut st = inner.state();
                            inner.link_to(&mut st, &host)
                        };
                        if let Some(link) = link {
                            link.push(Item::Leave {
                                match_id,
                                session: s,
                                attempt,
                            });
                        }
                    }
                }
            }
        }
        Item::Data {
            match_id,
            sender,
            op_code,
            data,
            targets,
        } => {
            if let Err(refusal) = local.data(match_id, sender, op_code, data, targets.as_deref()) {
                // What only the host could find is told to the sender as on one node:
                // an error event.
                tell(inner, from, match_id, sender, refusal);
            }
        }
        Item::Leave {
            match_id,
            session,
            attempt,
        } => {
            let leaves =
                inner
                    .state()
                    .memberships
                    .guest_left(&from.node, match_id, session, Some(attempt));
            if leaves {
                local.leave(match_id, session);
            }
        }
        Item::Ended {
            match_id,
            session,
            attempt,
            reason,
        } => {
            let ended = inner
                .state()
                .memberships
                .ended_by(from, match_id, session, attempt);
            if ended {
                match_ended(local, match_id, session, &reason);
            }
        }
        party @ (Item::PartyPush { .. }
        | Item::PartyData { .. }
        | Item::PartyGone { .. }
        | Item::PartyLeave { .. }) => super::parties::apply(inner, local, from, party),
    }
}

/// Whether an event is `MatchEnded` for `match_id` (checked by its variant first, so
/// other events cost a byte's look).
fn ends_match(body: &EventBody, match_id: MatchId) -> bool {
    static MATCH_ENDED: std::sync::OnceLock<Option<u8>> = std::sync::OnceLock::new();
    let variant = *MATCH_ENDED.get_or_init(|| {
        EventBody::encode(&Event::MatchEnded {
            match_id,
            reason: String::new(),
        })
        .ok()
        .and_then(|b| b.bytes().first().copied())
    });
    if variant.is_none() || body.bytes().first().copied() != variant {
        return false;
    }
    matches!(
        body.decode(),
        Ok(Event::MatchEnded { match_id: ended, .. }) if ended == match_id
    )
}

/// Tells a local session it is no longer in a remote match.
fn match_ended(local: &dyn Local, match_id: MatchId, session: SessionId, reason: &str) {
    let event = Event::MatchEnded {
        match_id,
        reason: reason.to_owned(),
    };
    if let (Some(handle), Ok(body)) = (local.session(session), EventBody::encode(&event)) {
        handle.push_event(&body);
    }
}

/// An error event for a member homed on `to`.
fn tell(
    inner: &Inner,
    to: &Sender,
    match_id: MatchId,
    session: SessionId,
    refusal: super::Refusal,
) {
    let event = Event::Error {
        code: refusal.code,
        message: refusal.message,
    };
    let Ok(body) = EventBody::encode(&event) else {
        return;
    };
    let link = {
        let mut st = inner.state();
        inner.link_to(&mut st, to)
    };
    if let Some(link) = link {
        link.push(Item::Push {
            match_id,
            sessions: vec![session],
            lane: None,
            body: body.bytes().clone(),
        });
    }
}

/// A datagram from a peer.
pub(super) fn on_datagram(inner: &Inner, local: &dyn Local, payload: &[u8]) {
    metrics::counter!("quicmatch_cluster_messages_total", "dir" => "in", "kind" => "datagram")
        .increment(1);
    let Ok(msg) = frame::decode_peer::<DatagramMsg>(payload) else {
        dropped("undecodable");
        return;
    };
    if !trusted(inner, &msg.from, Some(msg.to)) {
        return;
    }
    match msg.body {
        DatagramBody::ToHost { sender, datagram } => {
            if let Err(r) = local.datagram(sender, datagram) {
                debug!(code = %r.code, "cluster: a member's datagram was refused");
                metrics::counter!("quicmatch_cluster_datagrams_dropped_total", "reason" => "refused")
                    .increment(1);
            }
        }
        DatagramBody::ToMembers {
            match_id,
            sessions,
            datagram,
        } => {
            let (alias, targets) = {
                let st = inner.state();
                let Some(alias) = st.memberships.alias(match_id, &msg.from) else {
                    dropped("out_of_scope");
                    return;
                };
                let targets: Vec<SessionId> = sessions
                    .into_iter()
                    .filter(|s| st.memberships.in_scope(&msg.from, match_id, *s))
                    .collect();
                (alias, targets)
            };
            let Ok((mut header, payload)) = RelayHeader::decode(datagram) else {
                dropped("undecodable");
                return;
            };
            header.handle = alias;
            let out = header.encode(&payload);
            for s in targets {
                if let Some(handle) = local.session(s) {
                    handle.send_datagram(out.clone());
                }
            }
        }
    }
}

/// Ends every membership shared with `peer`'s node, which is still there (a link it
/// could not repair): each ended membership is also said to it, one by one (`Leave` for
/// this node's sessions in its matches, `Ended` for its members here), so both sides
/// end exactly the same ones, whatever the other joined meanwhile.
pub(super) fn reset(inner: &Inner, local: &dyn Local, peer: &Sender, reason: &str) {
    let (homes, guests) = end_with(inner, local, &peer.node, reason);
    let parties = super::parties::end_with(inner, local, &peer.node, reason);
    let link = {
        let mut st = inner.state();
        inner.link_to(&mut st, peer)
    };
    let Some(link) = link else { return };
    link.repair();
    // Past the link's bound if need be: these few items are what makes both sides
    // agree, and the reset just ended what filled it.
    for (match_id, session, attempt) in homes {
        link.push_always(Item::Leave {
            match_id,
            session,
            attempt,
        });
    }
    for (match_id, session, attempt) in guests {
        link.push_always(Item::Ended {
            match_id,
            session,
            attempt,
            reason: reason.to_owned(),
        });
    }
    super::parties::tell_reset(&link, parties, reason);
}

/// What [`end_with`] ended: memberships of local sessions in a node's matches (with
/// their join attempts), and members homed on it.
pub(super) type Ended = (
    Vec<(MatchId, SessionId, u64)>,
    Vec<(MatchId, SessionId, u64)>,
);

/// Ends every membership shared with `node`: local sessions in its matches hear
/// `MatchEnded` with `reason`, and its members leave local matches (the others see the
/// leave). Returns what it ended: memberships of local sessions (with their attempts),
/// and members homed there.
pub(super) fn end_with(inner: &Inner, local: &dyn Local, node: &str, reason: &str) -> Ended {
    let (homes, guests) = {
        let mut st = inner.state();
        (
            st.memberships.drop_host(node),
            st.memberships.drop_guests(node),
        )
    };
    for (match_id, session, _) in &homes {
        match_ended(local, *match_id, *session, reason);
    }
    for (match_id, session, _) in &guests {
        local.leave(*match_id, *session);
    }
    (homes, guests)
}

/// Ends every cross-node membership (this node left the cluster).
pub(super) fn end_all(inner: &Inner, local: &dyn Local, reason: &str) {
    let nodes = inner.state().memberships.nodes();
    for node in nodes {
        end_with(inner, local, &node, reason);
    }
    super::parties::end_all(inner, local, reason);
}

/// A node is gone: what this node shared with it ends, and its link and numbering go.
pub(super) fn peer_gone(inner: &Inner, local: &dyn Local, node: &str, reason: &str) {
    end_with(inner, local, node, reason);
    super::parties::end_with(inner, local, node, reason);
    // Only a node that is gone sends nothing more: a reset one's ended sessions stay
    // remembered.
    inner.state().parties.forget_node(node);
    let mut st = inner.state();
    st.links.remove(node);
    st.inbound.forget(node);
}
