//! The socket's background task: it owns the control stream, matches replies to waiting
//! requests by `cid`, keeps each match's slot-to-presence table up to date in stream
//! order, and turns frames into [`Event`]s. Datagrams are read by the application's own
//! `next_event` call (see [`on_datagram`]), one task hop shorter.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::StreamExt as _;
use quicmatch_protocol::{
    datagram::RelayHeader,
    envelope::{Event as WireEvent, MatchInfo, Member, ServerBody},
    frame, CloseCode, Credentials, MatchId, Presence, Response, SessionId,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    connect::{establish, Established, Frames},
    redundancy::{Seen, Sent},
    ClientConfig, ConnectError, Event, MatchData, MatchPresenceEvent,
};

/// Datagrams kept while waiting for the reply or presence event that names their match
/// or sender (a datagram can overtake the control stream). Oldest dropped first.
const EARLY_DATAGRAMS: usize = 256;
/// How long such a datagram is worth keeping.
const EARLY_DATAGRAM_TTL: Duration = Duration::from_secs(2);
/// Reliable data kept while waiting for the reply or presence event that names its
/// match or sender (a lane can overtake the control stream, protocol 3).
const EARLY_RELIABLE: usize = 4096;
/// How long such data is kept: far longer than any loss recovery, so only data of a
/// match this socket is no longer in is ever dropped.
const EARLY_RELIABLE_TTL: Duration = Duration::from_secs(10);
/// Pending requests kept before abandoned ones (timed out callers) are pruned.
const PRUNE_PENDING_AT: usize = 1024;
/// The sender slot of data a server-run match sends itself.
const SERVER_SLOT: u32 = 0;

/// Who data from the server itself is attributed to: nil ids, empty name.
pub(crate) fn server_presence() -> Presence {
    Presence {
        user_id: quicmatch_protocol::UserId(uuid::Uuid::nil()),
        session_id: SessionId(uuid::Uuid::nil()),
        username: String::new(),
    }
}

/// Longest one resume attempt (handshake, then the reply) may take before the next.
const RESUME_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long the control stream's end may precede the connection's close (a stopping
/// server waits for our acknowledgement in between) before this side closes it.
const CLOSE_AFTER_STREAM_END: Duration = Duration::from_secs(2);

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
    /// Reliable data whose match or sender is not known yet (see [`EARLY_RELIABLE`]).
    early_reliable: VecDeque<(Instant, WireEvent)>,
    /// This socket's recent bundled messages, per match (redundant sends).
    pub(crate) sent: HashMap<MatchId, Sent>,
    /// What was delivered from others' bundles.
    seen: Seen,
    /// Events from a bundle beyond the first, for the next `next_event` call.
    pub(crate) ready: VecDeque<Event>,
}

impl ClientState {
    pub(crate) fn forget(&mut self, id: MatchId) {
        if let Some(view) = self.matches.remove(&id) {
            self.handles.remove(&view.handle);
        }
        self.sent.remove(&id);
        self.seen.forget(id);
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
        // Members now: `slots` also keeps leavers, for their late data.
        let mut slots: Vec<u32> = view.by_session.values().copied().collect();
        slots.sort_unstable();
        Some(
            slots
                .into_iter()
                .filter_map(|slot| view.slots.get(&slot).cloned())
                .collect(),
        )
    }

    fn add_members(view: &mut MatchView, members: &[Member]) {
        for m in members {
            view.slots.insert(m.slot, m.presence.clone());
            view.by_session.insert(m.presence.session_id, m.slot);
        }
    }

    /// After a resume: the matches the server says the session is in, as of now.
    fn resync(&mut self, matches: &[MatchInfo]) {
        let keep: std::collections::HashSet<MatchId> = matches.iter().map(|m| m.match_id).collect();
        let gone: Vec<MatchId> = self
            .matches
            .keys()
            .filter(|id| !keep.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.forget(id);
        }
        for m in matches {
            self.on_match(m);
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
                // The slot stays known (slots are never reused in a match): a leaver's
                // last reliable data may come after its leave on another stream.
                view.by_session.remove(&m.presence.session_id);
            }
        }
    }

    /// Keeps reliable data whose match or sender is not known yet.
    fn park(&mut self, event: WireEvent) {
        if self.early_reliable.len() >= EARLY_RELIABLE {
            self.early_reliable.pop_front();
            tracing::warn!("reliable data for an unknown match or sender dropped");
        }
        self.early_reliable.push_back((Instant::now(), event));
    }

    /// Parked reliable data that can be delivered now, in arrival order.
    fn resolved(&mut self) -> Vec<Event> {
        if self.early_reliable.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let mut out = Vec::new();
        for (at, event) in std::mem::take(&mut self.early_reliable) {
            if now.duration_since(at) > EARLY_RELIABLE_TTL {
                continue;
            }
            match self.reliable_data(&event) {
                Some(ready) => out.push(ready),
                None => self.early_reliable.push_back((at, event)),
            }
        }
        out
    }

    /// Reliable match data as an [`Event`]; `None` while its sender is unknown.
    fn reliable_data(&self, event: &WireEvent) -> Option<Event> {
        let WireEvent::MatchData {
            match_id,
            sender_slot,
            seq,
            op_code,
            data,
        } = event
        else {
            return None;
        };
        Some(Event::MatchData(MatchData {
            match_id: *match_id,
            sender: self.sender(*match_id, *sender_slot)?,
            op_code: *op_code,
            data: data.clone(),
            reliable: true,
            seq: *seq,
        }))
    }

    fn resolve(&self, header: &RelayHeader) -> Option<(MatchId, Presence)> {
        let id = *self.handles.get(&header.handle)?;
        let sender = self.sender(id, header.sender_slot)?;
        Some((id, sender))
    }

    /// The member in `slot`; slot 0 is the server itself (a server-run match's own
    /// data), shown as [`server_presence`].
    fn sender(&self, id: MatchId, slot: u32) -> Option<Presence> {
        let view = self.matches.get(&id)?;
        if slot == SERVER_SLOT {
            return Some(server_presence());
        }
        view.slots.get(&slot).cloned()
    }
}

fn lock(state: &Mutex<ClientState>) -> std::sync::MutexGuard<'_, ClientState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The events a relayed datagram carries: one, or for a bundle each message not
/// delivered yet (see `redundancy`); `Err` while its match or sender is unknown.
fn datagram_events(state: &mut ClientState, datagram: &Bytes) -> Result<Vec<Event>, ()> {
    let Ok((header, payload)) = RelayHeader::decode(datagram.clone()) else {
        return Ok(Vec::new());
    };
    let Some((match_id, sender)) = state.resolve(&header) else {
        return Err(());
    };
    let event = |op_code: i64, data: Bytes| {
        Event::MatchData(MatchData {
            match_id,
            sender: sender.clone(),
            op_code,
            data,
            reliable: false,
            seq: header.seq,
        })
    };
    if !header.bundle {
        return Ok(vec![event(header.op_code, payload)]);
    }
    let Ok(messages) = quicmatch_protocol::bundle::decode(payload) else {
        return Ok(Vec::new());
    };
    Ok(state
        .seen
        .fresh(match_id, header.sender_slot, messages)
        .into_iter()
        .map(|m| event(m.op_code, m.data))
        .collect())
}

/// Turns a received datagram into an event, or keeps it until the reply or presence
/// event that explains it arrives. Called by [`Socket::next_event`](crate::Socket), so a
/// datagram reaches the application without a hop through the driver task. A bundle's
/// further messages wait in `ready`.
pub(crate) fn on_datagram(state: &Mutex<ClientState>, datagram: Bytes) -> Option<Event> {
    let mut st = lock(state);
    match datagram_events(&mut st, &datagram) {
        Ok(events) => {
            let mut events = events.into_iter();
            let first = events.next();
            st.ready.extend(events);
            first
        }
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
        match datagram_events(state, &datagram) {
            Ok(ready) => {
                for event in ready {
                    let _ = events.try_send(event);
                }
            }
            Err(()) => state.early.push_back((at, datagram)),
        }
    }
}

/// The connection the socket currently uses, swapped by a resume. `generation` tells
/// a datagram reader which connection it saw close.
pub(crate) struct Link {
    /// The connection and its generation; a watch, so the datagram reader (when the
    /// socket has one) follows resumes and ends with the driver.
    current: tokio::sync::watch::Sender<(u64, quinn::Connection)>,
    /// The generation whose datagrams ended, plus one (0: none).
    dead: AtomicU64,
    /// The driver's `last_seq`, for the application to read.
    pub(crate) last_seq: AtomicU64,
}

impl Link {
    pub(crate) fn new(conn: quinn::Connection) -> Self {
        Self {
            current: tokio::sync::watch::Sender::new((1, conn)),
            dead: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
        }
    }

    /// The current connection and its generation.
    pub(crate) fn get(&self) -> (u64, quinn::Connection) {
        self.current.borrow().clone()
    }

    /// Follows the connection from now on.
    pub(crate) fn watch(&self) -> tokio::sync::watch::Receiver<(u64, quinn::Connection)> {
        self.current.subscribe()
    }

    fn set(&self, conn: quinn::Connection) {
        self.current.send_modify(|cur| *cur = (cur.0 + 1, conn));
    }

    /// Whether datagrams of generation `generation` have ended.
    pub(crate) fn datagrams_ended(&self, generation: u64) -> bool {
        self.dead.load(Ordering::Relaxed) == generation + 1
    }

    pub(crate) fn end_datagrams(&self, generation: u64) {
        self.dead.store(generation + 1, Ordering::Relaxed);
    }
}

/// The socket's background task and what it keeps across connections.
pub(crate) struct Driver {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) config: ClientConfig,
    pub(crate) link: Arc<Link>,
    /// The newest session token, for the next resume.
    pub(crate) token: String,
    /// The sequenced events processed: what a resume asks the server to continue after,
    /// and what a replayed duplicate is recognised by.
    pub(crate) received: crate::lanes::Received,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) state: Arc<Mutex<ClientState>>,
}

/// Why serving one connection stopped.
enum Stop {
    /// The socket was dropped or closed: nothing more to do.
    Dropped,
    /// The connection ended.
    Lost,
}

/// A connection's close code and reason, as the application sees them.
pub(crate) fn close_info(conn: &quinn::Connection) -> (Option<CloseCode>, String) {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => (
            Some(CloseCode(
                u32::try_from(c.error_code.into_inner()).unwrap_or(u32::MAX),
            )),
            String::from_utf8_lossy(&c.reason).into_owned(),
        ),
        Some(other) => (None, other.to_string()),
        None => (None, "control stream ended".into()),
    }
}

/// Whether the session may still be waiting on the server: the connection was lost
/// (timeout, reset, a transport failure), the server gave up hearing from us, or it is
/// restarting with our session recorded.
fn resumable(conn: &quinn::Connection) -> bool {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            let code = c.error_code.into_inner();
            code == u64::from(CloseCode::TIMED_OUT.0)
                || code == u64::from(CloseCode::SERVER_RESTARTING.0)
        }
        Some(quinn::ConnectionError::LocallyClosed) | None => false,
        Some(_) => true,
    }
}

/// Whether a failed resume attempt is worth repeating (the network, not a refusal).
fn retryable(e: &ConnectError) -> bool {
    match e {
        ConnectError::Timeout | ConnectError::Unreachable { .. } | ConnectError::Io(_) => true,
        ConnectError::Connection(c) => !matches!(
            c,
            quinn::ConnectionError::ApplicationClosed(_) | quinn::ConnectionError::LocallyClosed
        ),
        _ => false,
    }
}

impl Driver {
    pub(crate) async fn run(mut self, mut send: quinn::SendStream, mut frames: Frames) {
        loop {
            let (_, conn) = self.link.get();
            if let Stop::Dropped = self.serve(&conn, &mut send, &mut frames).await {
                conn.close(
                    quinn::VarInt::from_u32(CloseCode::NORMAL.0),
                    b"socket dropped",
                );
                return;
            }
            let (code, reason) = close_info(&conn);
            if !resumable(&conn) || self.config.reconnect_for.is_zero() {
                let _ = self.events.send(Event::Disconnected { code, reason }).await;
                return;
            }
            tracing::info!(%reason, "connection lost; resuming");
            // Never wait for room in the application's buffer: the grace is running.
            let _ = self.events.try_send(Event::Reconnecting {
                code,
                reason: reason.clone(),
            });
            match self.resume().await {
                Ok((established, attempts)) => {
                    send = established.send;
                    frames = established.frames;
                    self.token = established.session.token.clone();
                    {
                        let mut st = lock(&self.state);
                        st.resync(&established.session.matches);
                    }
                    self.link.set(established.conn);
                    let _ = self.events.send(Event::Reconnected { attempts }).await;
                }
                Err(e) => {
                    let (code, reason) = match e.close_code() {
                        Some((code, reason)) => (Some(code), reason),
                        None => (code, format!("{reason}; resume failed: {e}")),
                    };
                    let _ = self.events.send(Event::Disconnected { code, reason }).await;
                    return;
                }
            }
        }
    }

    /// Resumes the session on a new connection, retrying with backoff for
    /// `reconnect_for`; returns the connection and the attempts it took.
    async fn resume(&mut self) -> Result<(Established, u32), ConnectError> {
        use backon::Retryable as _;
        let deadline = Instant::now() + self.config.reconnect_for;
        let attempt_timeout = self.config.request_timeout.min(RESUME_ATTEMPT_TIMEOUT);
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let (endpoint, config, token, last_seq) = (
            &self.endpoint,
            &self.config,
            self.token.clone(),
            self.received.through(),
        );
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_jitter()
            .without_max_times();
        let established = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            establish(
                endpoint,
                config,
                Credentials::Resume {
                    token: token.clone(),
                    last_seq,
                },
                attempt_timeout,
            )
            .await
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| retryable(e) && Instant::now() < deadline)
        .notify(|e, wait| tracing::debug!(error = %e, ?wait, "resume attempt failed"))
        .await?;
        Ok((established, attempts.load(Ordering::Relaxed)))
    }

    /// Serves one connection until it ends or the socket is dropped. Requests still
    /// waiting for a reply when the connection ends fail with `Disconnected`.
    async fn serve(
        &mut self,
        conn: &quinn::Connection,
        send: &mut quinn::SendStream,
        frames: &mut Frames,
    ) -> Stop {
        let mut pending: HashMap<u32, oneshot::Sender<Response>> = HashMap::new();
        let mut lanes = crate::lanes::accept(conn.clone());
        loop {
            tokio::select! {
                command = self.commands.recv() => {
                    let frame = match command {
                        None => return Stop::Dropped,
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
                        let deadline = tokio::time::Instant::now() + CLOSE_AFTER_STREAM_END;
                        return self.lost(conn, deadline).await;
                    }
                }
                frame = frames.next() => {
                    let Some(Ok(body)) = frame else {
                        let deadline = tokio::time::Instant::now() + CLOSE_AFTER_STREAM_END;
                        if frame.is_none() {
                            // Ended cleanly: a stopping server finishes its lanes too.
                            self.drain_lanes(&mut lanes, &mut pending, deadline).await;
                        }
                        return self.lost(conn, deadline).await;
                    };
                    self.on_frame(&body, &mut pending).await;
                }
                Some(body) = lanes.recv() => self.on_frame(&body, &mut pending).await,
            }
        }
    }

    /// One frame from the control stream or a lane.
    async fn on_frame(
        &mut self,
        body: &[u8],
        pending: &mut HashMap<u32, oneshot::Sender<Response>>,
    ) {
        let Ok(env) = frame::decode_server(body) else {
            tracing::warn!("undecodable frame from the server; ignored");
            return;
        };
        let event = match env.body {
            ServerBody::Response(response) => {
                let resolved = if let Response::Match(info) = &response {
                    let mut st = lock(&self.state);
                    st.on_match(info);
                    flush_early(&mut st, &self.events);
                    st.resolved()
                } else {
                    Vec::new()
                };
                if let Some(reply) = env.cid.and_then(|cid| pending.remove(&cid)) {
                    let _ = reply.send(response);
                }
                for event in resolved {
                    let _ = self.events.send(event).await;
                }
                return;
            }
            ServerBody::Event(event) => event,
            ServerBody::Sequenced { seq, event } => {
                // A replay can repeat what this socket already processed.
                if !self.received.first_time(seq) {
                    return;
                }
                self.link
                    .last_seq
                    .store(self.received.through(), Ordering::Relaxed);
                event
            }
        };
        let presence = matches!(event, WireEvent::MatchPresence { .. });
        if let Some(event) = on_event(&self.state, &self.events, event) {
            // Nobody reading events any more is fine: keep serving requests.
            let _ = self.events.send(event).await;
        }
        if presence {
            let resolved = lock(&self.state).resolved();
            for event in resolved {
                let _ = self.events.send(event).await;
            }
        }
    }

    /// The connection is going or gone: wait until it has closed so the reason is known.
    /// The control stream ended: a stopping server finishes it and the lanes after its
    /// last frames, and closes the connection once this side has acknowledged them all.
    /// The lanes' frames are processed until they end (each lane's reader ends at its
    /// stream's end, and the lanes at the connection's close), until `deadline`, so
    /// nothing the server sent before its close is lost.
    async fn drain_lanes(
        &mut self,
        lanes: &mut mpsc::Receiver<Bytes>,
        pending: &mut HashMap<u32, oneshot::Sender<Response>>,
        deadline: tokio::time::Instant,
    ) {
        let _ = tokio::time::timeout_at(deadline, async {
            while let Some(body) = lanes.recv().await {
                self.on_frame(&body, pending).await;
            }
        })
        .await;
    }

    /// The connection is over or going; waits until `deadline` for its close, which
    /// says why (shutdown, restart).
    async fn lost(&self, conn: &quinn::Connection, deadline: tokio::time::Instant) -> Stop {
        if conn.close_reason().is_none() {
            let _ = tokio::time::timeout_at(deadline, conn.closed()).await;
        }
        if conn.close_reason().is_none() {
            // The stream ended but the connection did not: end it, then classify.
            conn.close(
                quinn::VarInt::from_u32(CloseCode::NORMAL.0),
                b"control stream ended",
            );
        }
        Stop::Lost
    }
}

fn on_event(
    state: &Mutex<ClientState>,
    events: &mpsc::Sender<Event>,
    event: WireEvent,
) -> Option<Event> {
    let presences = |ms: Vec<Member>| ms.into_iter().map(|m| m.presence).collect();
    match event {
        WireEvent::Error { code, message } => Some(Event::Error { code, message }),
        WireEvent::MatchEnded { match_id, reason } => {
            lock(state).forget(match_id);
            Some(Event::MatchEnded { match_id, reason })
        }
        WireEvent::MatchmakerMatched(m) => Some(Event::MatchmakerMatched(m)),
        WireEvent::MatchmakerMatchedTeams(m) => Some(Event::MatchmakerMatchedTeams(m)),
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
        event @ WireEvent::MatchData { .. } => {
            let mut st = lock(state);
            let ready = st.reliable_data(&event);
            if ready.is_none() {
                st.park(event);
            }
            ready
        }
    }
}
