//! The socket's background task: it owns the control stream, matches replies to waiting
//! requests by `cid`, keeps each match's slot-to-presence table up to date in stream
//! order, and turns frames into [`Event`]s. Datagrams are read by the application's own
//! `next_event` call (see [`on_datagram`]), one task hop shorter.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::StreamExt as _;
use quicmatch_protocol::{
    datagram::RelayHeader,
    envelope::{Event as WireEvent, MatchInfo, Member, ServerBody},
    frame::{self, FrameCodec},
    CloseCode, MatchId, Presence, Response, SessionId,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::{Event, MatchData, MatchPresenceEvent};

/// Datagrams kept while waiting for the reply or presence event that names their match
/// or sender (a datagram can overtake the control stream). Oldest dropped first.
const EARLY_DATAGRAMS: usize = 256;
/// How long such a datagram is worth keeping.
const EARLY_DATAGRAM_TTL: Duration = Duration::from_secs(2);
/// Pending requests kept before abandoned ones (timed out callers) are pruned.
const PRUNE_PENDING_AT: usize = 1024;

/// What the [`Socket`](crate::Socket) asks of the driver.
pub(crate) enum Command {
    /// Send a request and deliver its reply.
    Request {
        cid: u32,
        frame: Bytes,
        reply: oneshot::Sender<Response>,
    },
    /// Send a frame that expects no reply.
    Send { frame: Bytes },
}

struct MatchView {
    handle: u32,
    slots: HashMap<u32, Presence>,
    by_session: HashMap<SessionId, u32>,
}

/// The matches this socket is in, as far as the control stream has told it.
#[derive(Default)]
pub(crate) struct ClientState {
    matches: HashMap<MatchId, MatchView>,
    handles: HashMap<u32, MatchId>,
    early: VecDeque<(Instant, Bytes)>,
}

impl ClientState {
    pub(crate) fn forget(&mut self, id: MatchId) {
        if let Some(view) = self.matches.remove(&id) {
            self.handles.remove(&view.handle);
        }
    }

    /// The handle and target slots for sending to a match.
    pub(crate) fn route(
        &self,
        id: MatchId,
        presences: Option<&[Presence]>,
    ) -> Option<(u32, Option<Vec<u32>>)> {
        let view = self.matches.get(&id)?;
        let targets = presences.map(|ps| {
            ps.iter()
                .filter_map(|p| view.by_session.get(&p.session_id).copied())
                .collect()
        });
        Some((view.handle, targets))
    }

    pub(crate) fn presences(&self, id: MatchId) -> Option<Vec<Presence>> {
        let view = self.matches.get(&id)?;
        let mut slots: Vec<_> = view.slots.iter().collect();
        slots.sort_by_key(|(slot, _)| **slot);
        Some(slots.into_iter().map(|(_, p)| p.clone()).collect())
    }

    fn add_members(view: &mut MatchView, members: &[Member]) {
        for m in members {
            view.slots.insert(m.slot, m.presence.clone());
            view.by_session.insert(m.presence.session_id, m.slot);
        }
    }

    pub(crate) fn on_match(&mut self, info: &MatchInfo) {
        let view = self
            .matches
            .entry(info.match_id)
            .or_insert_with(|| MatchView {
                handle: info.handle,
                slots: HashMap::new(),
                by_session: HashMap::new(),
            });
        view.handle = info.handle;
        Self::add_members(view, &info.presences);
        self.handles.insert(info.handle, info.match_id);
    }

    fn on_presence(&mut self, match_id: MatchId, joins: &[Member], leaves: &[Member]) {
        if let Some(view) = self.matches.get_mut(&match_id) {
            Self::add_members(view, joins);
            for m in leaves {
                view.slots.remove(&m.slot);
                view.by_session.remove(&m.presence.session_id);
            }
        }
    }

    fn resolve(&self, header: &RelayHeader) -> Option<(MatchId, Presence)> {
        let id = *self.handles.get(&header.handle)?;
        let sender = self
            .matches
            .get(&id)?
            .slots
            .get(&header.sender_slot)?
            .clone();
        Some((id, sender))
    }

    fn sender(&self, id: MatchId, slot: u32) -> Option<Presence> {
        self.matches.get(&id)?.slots.get(&slot).cloned()
    }
}

fn lock(state: &Mutex<ClientState>) -> std::sync::MutexGuard<'_, ClientState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn datagram_event(state: &ClientState, datagram: &Bytes) -> Result<Option<Event>, ()> {
    let Ok((header, payload)) = RelayHeader::decode(datagram.clone()) else {
        return Ok(None);
    };
    let Some((match_id, sender)) = state.resolve(&header) else {
        return Err(());
    };
    Ok(Some(Event::MatchData(MatchData {
        match_id,
        sender,
        op_code: header.op_code,
        data: payload,
        reliable: false,
        seq: header.seq,
    })))
}

/// Turns a received datagram into an event, or keeps it until the reply or presence
/// event that explains it arrives. Called by [`Socket::next_event`](crate::Socket), so a
/// datagram reaches the application without a hop through the driver task.
pub(crate) fn on_datagram(state: &Mutex<ClientState>, datagram: Bytes) -> Option<Event> {
    let mut st = lock(state);
    match datagram_event(&st, &datagram) {
        Ok(event) => event,
        Err(()) => {
            if st.early.len() >= EARLY_DATAGRAMS {
                st.early.pop_front();
            }
            st.early.push_back((Instant::now(), datagram));
            None
        }
    }
}

/// Retries datagrams that arrived before their match or sender was known.
fn flush_early(state: &mut ClientState, events: &mpsc::Sender<Event>) {
    let now = Instant::now();
    let early = std::mem::take(&mut state.early);
    for (at, datagram) in early {
        if now.duration_since(at) > EARLY_DATAGRAM_TTL {
            continue;
        }
        match datagram_event(state, &datagram) {
            Ok(Some(event)) => {
                let _ = events.try_send(event);
            }
            Ok(None) => {}
            Err(()) => state.early.push_back((at, datagram)),
        }
    }
}

pub(crate) async fn run(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut frames: FramedRead<quinn::RecvStream, FrameCodec>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    state: Arc<Mutex<ClientState>>,
) {
    let mut pending: HashMap<u32, oneshot::Sender<Response>> = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => {
                let frame = match command {
                    None => {
                        conn.close(quinn::VarInt::from_u32(CloseCode::NORMAL.0), b"socket dropped");
                        break;
                    }
                    Some(Command::Request { cid, frame, reply }) => {
                        if pending.len() >= PRUNE_PENDING_AT {
                            pending.retain(|_, tx| !tx.is_closed());
                        }
                        pending.insert(cid, reply);
                        frame
                    }
                    Some(Command::Send { frame }) => frame,
                };
                if send.write_all(&frame).await.is_err() {
                    break;
                }
            }
            frame = frames.next() => {
                let Some(Ok(body)) = frame else { break };
                let Ok(env) = frame::decode_server(&body) else {
                    tracing::warn!("undecodable frame from the server; ignored");
                    continue;
                };
                match env.body {
                    ServerBody::Response(response) => {
                        if let Response::Match(info) = &response {
                            let mut st = lock(&state);
                            st.on_match(info);
                            flush_early(&mut st, &events);
                        }
                        if let Some(reply) = env.cid.and_then(|cid| pending.remove(&cid)) {
                            let _ = reply.send(response);
                        }
                    }
                    ServerBody::Event(event) => {
                        let event = on_event(&state, &events, event);
                        if let Some(event) = event {
                            if events.send(event).await.is_err() {
                                // Nobody reads events any more; keep serving requests.
                            }
                        }
                    }
                }
            }
        }
    }
    let (code, reason) = match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => (
            Some(CloseCode(
                u32::try_from(c.error_code.into_inner()).unwrap_or(u32::MAX),
            )),
            String::from_utf8_lossy(&c.reason).into_owned(),
        ),
        Some(other) => (None, other.to_string()),
        None => (None, "control stream ended".into()),
    };
    let _ = events.send(Event::Disconnected { code, reason }).await;
}

fn on_event(
    state: &Mutex<ClientState>,
    events: &mpsc::Sender<Event>,
    event: WireEvent,
) -> Option<Event> {
    let presences = |ms: Vec<Member>| ms.into_iter().map(|m| m.presence).collect();
    match event {
        WireEvent::Error { code, message } => Some(Event::Error { code, message }),
        WireEvent::MatchmakerMatched(m) => Some(Event::MatchmakerMatched(m)),
        WireEvent::MatchmakerTicketCancelled { ticket, reason } => {
            Some(Event::MatchmakerTicketCancelled { ticket, reason })
        }
        WireEvent::Party(info) => Some(Event::Party(info)),
        WireEvent::PartyPresence {
            party_id,
            joins,
            leaves,
        } => Some(Event::PartyPresence {
            party_id,
            joins,
            leaves,
        }),
        WireEvent::PartyLeader { party_id, presence } => {
            Some(Event::PartyLeader { party_id, presence })
        }
        WireEvent::PartyJoinRequest {
            party_id,
            presences,
        } => Some(Event::PartyJoinRequest {
            party_id,
            presences,
        }),
        WireEvent::PartyClose { party_id, reason } => Some(Event::PartyClose { party_id, reason }),
        WireEvent::PartyData {
            party_id,
            sender,
            op_code,
            data,
        } => Some(Event::PartyData {
            party_id,
            sender,
            op_code,
            data,
        }),
        WireEvent::PartyMatchmakerTicket { party_id, ticket } => {
            Some(Event::PartyMatchmakerTicket { party_id, ticket })
        }
        WireEvent::PartyUpdate {
            party_id,
            open,
            label,
        } => Some(Event::PartyUpdate {
            party_id,
            open,
            label,
        }),
        WireEvent::MatchPresence {
            match_id,
            joins,
            leaves,
        } => {
            let mut st = lock(state);
            st.on_presence(match_id, &joins, &leaves);
            flush_early(&mut st, events);
            Some(Event::MatchPresence(MatchPresenceEvent {
                match_id,
                joins: presences(joins),
                leaves: presences(leaves),
            }))
        }
        WireEvent::MatchData {
            match_id,
            sender_slot,
            seq,
            op_code,
            data,
        } => {
            let sender = lock(state).sender(match_id, sender_slot)?;
            Some(Event::MatchData(MatchData {
                match_id,
                sender,
                op_code,
                data,
                reliable: true,
                seq,
            }))
        }
    }
}
