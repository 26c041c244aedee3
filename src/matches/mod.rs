//! The in-memory match table and the relay fan-out.
//!
//! A relayed match is its member list: it is born with its first member and ends with
//! its last, and a random match id is never reused. Each member has a slot number that
//! names it in datagram headers; each match has a handle that names it in datagrams and
//! a sequence counter that numbers its data in processing order.
//!
//! Events and reliable data are pushed into members' outbound queues while the table's
//! write lock is held, so every recipient sees presence changes and data in the same
//! order the table applied them. Unreliable datagrams take only the read lock, to
//! collect the recipient list and number the data, and are sent after it is released.
//!
//! A server-run (authoritative) match is in the same table, with an [`Inbox`]: data its
//! members send goes to the inbox instead of to the other members, and it lives until
//! its handler ends it, not until its last member leaves (`hosted.rs` holds what only
//! such matches do). The table knows nothing of handlers; `runtime` drives them.
//! Labels, sizes and privacy feed the listing index (`listing.rs`) under the same lock.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
    time::Instant,
};

use bytes::Bytes;
use quicmatch_protocol::{
    datagram::{ClientDatagram, RelayHeader},
    envelope::{Event, MatchInfo, Member},
    frame::EventBody,
    ErrorCode, MatchId, SessionId, MAX_MATCH_NAME_LEN, MAX_RELIABLE_PAYLOAD, MAX_TARGETS,
};
use smallvec::SmallVec;
use uuid::Uuid;

use crate::{config::MatchConfig, handlers::ApiError, outbound::SessionHandle};

pub(crate) mod hosted;
mod latest;
pub(crate) mod listing;

pub use hosted::{Inbound, Inbox};

/// Namespace of ids of named matches: the same name gives the same id.
const NAMED_MATCH_NAMESPACE: Uuid = Uuid::from_u128(0x3b7c_91d2_58e4_4c0a_a1f6_d0e9_8c2b_7f44);

/// The id a named match has.
pub fn named_match_id(name: &str) -> MatchId {
    MatchId(Uuid::new_v5(&NAMED_MATCH_NAMESPACE, name.as_bytes()))
}

/// Cheap-clone handle to the table of live matches.
#[derive(Clone)]
pub struct MatchTable {
    /// One lock over the whole table. Held only for map operations and non-blocking
    /// queue pushes, never across an `.await`, so a std lock is right here. Datagram
    /// relays only read it, so they never wait on each other (nor on a reader the OS
    /// descheduled while it held the lock).
    inner: Arc<RwLock<State>>,
    limits: MatchConfig,
}

#[derive(Default)]
struct State {
    matches: HashMap<MatchId, Match>,
    handles: HashMap<u32, MatchId>,
    /// Never reused during the server's life, so a stale handle cannot reach a newer
    /// match.
    next_handle: u32,
    /// Ids the server handed out for matches nobody has joined yet (from the
    /// matchmaker-matched hook), with the time the reservation lapses.
    reserved: HashMap<MatchId, Instant>,
    /// What listings search: every live match's label, size and kind.
    listing: listing::ListingIndex,
    /// Matches that tokens created and that have ended, with when those tokens lapse:
    /// until then the id must not come back.
    ended: HashMap<MatchId, Instant>,
}

/// Ended token matches kept before lapsed ones are swept.
const ENDED_SWEEP_AT: usize = 1024;

/// Reservations kept before lapsed ones are swept.
const RESERVATIONS_SWEEP_AT: usize = 1024;

struct Match {
    id: MatchId,
    handle: u32,
    /// In join order; small, so scans are cheaper than a second map.
    members: Vec<Entry>,
    next_slot: u32,
    /// Atomic so that datagram relays number their data under the read lock.
    seq: AtomicU64,
    /// Most members.
    max_size: usize,
    /// Where a server-run match's input goes; `None` for a relayed match.
    inbox: Option<Arc<dyn Inbox>>,
    /// Latest-state op codes and what was kept of them (relayed matches only).
    latest: Option<latest::Latest>,
    /// For a match a matchmaker token created: how long its id stays dead once it ends.
    dead_until: Option<Instant>,
}

struct Entry {
    member: Member,
    session: SessionHandle,
    /// The highest bundle `msg_seq` from this member handed to the match's handler
    /// (server-run matches): a repeated datagram reaches the handler once.
    inputs_seen: AtomicU64,
}

impl Entry {
    fn new(member: Member, session: SessionHandle) -> Self {
        Self {
            member,
            session,
            inputs_seen: AtomicU64::new(0),
        }
    }

    /// Whether a bundle's newest message, `msg_seq`, is new from this member (then
    /// it becomes the highest seen); see `bundle::is_fresh`.
    fn take_input(&self, msg_seq: u64) -> bool {
        let mut last = self.inputs_seen.load(Ordering::Relaxed);
        loop {
            if !quicmatch_protocol::bundle::is_fresh(msg_seq, last) {
                return false;
            }
            match self.inputs_seen.compare_exchange_weak(
                last,
                msg_seq,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => last = now,
            }
        }
    }
}

impl Match {
    fn info(&self, me: &Member) -> MatchInfo {
        MatchInfo {
            match_id: self.id,
            handle: self.handle,
            size: self.members.len() as u32,
            presences: self.members.iter().map(|e| e.member.clone()).collect(),
            self_presence: me.clone(),
        }
    }

    fn find(&self, session: SessionId) -> Option<&Entry> {
        self.members
            .iter()
            .find(|e| e.member.presence.session_id == session)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Pushes one encoded event to every member except `except`.
    fn broadcast_frame(&self, frame: &EventBody, except: SessionId) {
        for e in &self.members {
            if e.member.presence.session_id != except {
                e.session.push_event(frame);
            }
        }
    }
}

fn presence_frame(match_id: MatchId, joins: Vec<Member>, leaves: Vec<Member>) -> Option<EventBody> {
    EventBody::encode(&Event::MatchPresence {
        match_id,
        joins,
        leaves,
    })
    .ok()
}

/// Live counts, for stats and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchCounts {
    /// Live matches.
    pub matches: usize,
    /// Memberships across all matches.
    pub presences: usize,
}

impl MatchTable {
    /// An empty table with these limits.
    pub fn new(limits: MatchConfig) -> Self {
        Self {
            inner: Arc::new(RwLock::new(State::default())),
            limits,
        }
    }

    fn lock(&self) -> RwLockWriteGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that matters more than stopping the server would, so keep serving.
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a match; with a name, joins the live match of that name or creates it.
    pub fn create(
        &self,
        name: Option<&str>,
        session: &SessionHandle,
    ) -> Result<MatchInfo, ApiError> {
        self.create_with(name, session, &RelayedOptions::default())
    }

    /// Creates a relayed match with a label, a size limit or privacy; with a name, joins
    /// the live match of that name instead if there is one.
    pub fn create_with(
        &self,
        name: Option<&str>,
        session: &SessionHandle,
        options: &RelayedOptions,
    ) -> Result<MatchInfo, ApiError> {
        let id = match name {
            Some(name) if name.is_empty() || name.len() > MAX_MATCH_NAME_LEN => {
                return Err(ApiError::new(
                    ErrorCode::BAD_INPUT,
                    format!("match name must be 1 to {MAX_MATCH_NAME_LEN} bytes"),
                ))
            }
            Some(name) => named_match_id(name),
            None => MatchId::new_random(),
        };
        let mut state = self.lock();
        if state.matches.contains_key(&id) {
            return join_locked(&mut state, &self.limits, id, session);
        }
        create_with_locked(&mut state, &self.limits, id, session, options)
    }

    /// Joins the match `id`, creating it if it does not exist: how holders of a valid
    /// matchmaker token meet.
    pub fn join_or_create(
        &self,
        id: MatchId,
        session: &SessionHandle,
    ) -> Result<MatchInfo, ApiError> {
        let mut state = self.lock();
        if state.matches.contains_key(&id) {
            return join_locked(&mut state, &self.limits, id, session);
        }
        create_locked(&mut state, &self.limits, id, session)
    }

    /// Like [`join_or_create`](Self::join_or_create) for a token valid until `until`:
    /// once the match it names has ended, the id stays dead for the token's life, so a
    /// still-valid token cannot bring it back.
    pub fn join_or_create_until(
        &self,
        id: MatchId,
        session: &SessionHandle,
        until: Instant,
    ) -> Result<MatchInfo, ApiError> {
        let mut state = self.lock();
        if state.matches.contains_key(&id) {
            return join_locked(&mut state, &self.limits, id, session);
        }
        let now = Instant::now();
        if state.ended.get(&id).is_some_and(|t| *t > now) {
            return Err(ApiError::new(
                ErrorCode::MATCH_NOT_FOUND,
                "that match has ended",
            ));
        }
        let info = create_locked(&mut state, &self.limits, id, session)?;
        if let Some(m) = state.matches.get_mut(&id) {
            m.dead_until = Some(until);
        }
        Ok(info)
    }

    /// Reserves a fresh match id that the first joiner before `until` creates; used for
    /// matches the server creates on behalf of a matched group.
    pub fn reserve(&self, until: Instant) -> MatchId {
        let id = MatchId::new_random();
        let mut state = self.lock();
        if state.reserved.len() >= RESERVATIONS_SWEEP_AT {
            let now = Instant::now();
            state.reserved.retain(|_, t| *t > now);
        }
        state.reserved.insert(id, until);
        id
    }

    /// Whether `id` names a live match, relayed or server-run, or a reservation not yet
    /// lapsed (what a backfill may keep filling).
    pub fn is_live(&self, id: MatchId) -> bool {
        let state = self.read();
        state.matches.contains_key(&id)
            || state
                .reserved
                .get(&id)
                .is_some_and(|until| *until > Instant::now())
    }

    /// Joins a live match. Joining again is a success with no events.
    pub fn join(&self, id: MatchId, session: &SessionHandle) -> Result<MatchInfo, ApiError> {
        join_locked(&mut self.lock(), &self.limits, id, session)
    }

    /// Leaves a match; the others get a leave event, and the last one out ends it.
    /// Returns whether the session was a member.
    pub fn leave(&self, id: MatchId, session: SessionId) -> bool {
        let mut state = self.lock();
        let Some(m) = state.matches.get_mut(&id) else {
            return false;
        };
        let Some(pos) = m
            .members
            .iter()
            .position(|e| e.member.presence.session_id == session)
        else {
            return false;
        };
        let gone = m.members.remove(pos);
        if let Some(latest) = &m.latest {
            latest.forget(gone.member.slot);
        }
        let size = m.members.len() as u32;
        if let Some(inbox) = &m.inbox {
            // A server-run match outlives its members; its handler hears of the leave.
            inbox.left(gone.member.presence.clone());
        }
        if m.members.is_empty() && m.inbox.is_none() {
            let (handle, dead_until) = (m.handle, m.dead_until);
            state.matches.remove(&id);
            state.handles.remove(&handle);
            state.listing.remove(id);
            if let Some(until) = dead_until {
                if state.ended.len() >= ENDED_SWEEP_AT {
                    let now = Instant::now();
                    state.ended.retain(|_, t| *t > now);
                }
                state.ended.insert(id, until);
            }
        } else {
            if let Some(frame) = presence_frame(id, Vec::new(), vec![gone.member]) {
                m.broadcast_frame(&frame, session);
            }
            state.listing.set_size(id, size);
        }
        true
    }

    /// Relays reliable data over the members' control streams.
    pub fn send_reliable(
        &self,
        id: MatchId,
        sender: SessionId,
        op_code: i64,
        data: Bytes,
        targets: Option<&[SessionId]>,
    ) -> Result<(), ApiError> {
        if data.len() > MAX_RELIABLE_PAYLOAD {
            return Err(ApiError::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!(
                    "reliable payload of {} bytes exceeds {MAX_RELIABLE_PAYLOAD}",
                    data.len()
                ),
            ));
        }
        if targets.is_some_and(|t| t.len() > MAX_TARGETS) {
            return Err(ApiError::new(
                ErrorCode::BAD_INPUT,
                format!("at most {MAX_TARGETS} targets"),
            ));
        }
        let state = self.lock();
        let m = member_match(&state, id, sender)?;
        if let Some(inbox) = &m.inbox {
            let presence = m.find(sender).map(|e| e.member.presence.clone());
            return match presence {
                Some(sender) => inbox.message(Inbound {
                    sender,
                    op_code,
                    data,
                    reliable: true,
                }),
                None => Ok(()),
            };
        }
        let sender_slot = m.find(sender).map(|e| e.member.slot).unwrap_or_default();
        let seq = m.next_seq();
        if let (Some(latest), None) = (&m.latest, targets) {
            latest.keep(sender_slot, op_code, seq, &data);
        }
        let frame = EventBody::encode(&Event::MatchData {
            match_id: id,
            sender_slot,
            seq,
            op_code,
            data,
        })
        .map_err(|e| ApiError::new(ErrorCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
        let mut sent = 0u64;
        for e in &m.members {
            let id = e.member.presence.session_id;
            let wanted = match targets {
                None => id != sender,
                Some(targets) => targets.contains(&id),
            };
            if wanted {
                // On protocol 3 each sender's data has a stream of its own per
                // receiver, so one sender's loss never holds back another's.
                e.session.push_lane(
                    &frame,
                    crate::outbound::Lane {
                        match_id: m.id,
                        slot: sender_slot,
                    },
                );
                sent += 1;
            }
        }
        metrics::counter!("quicmatch_reliable_messages_total").increment(sent);
        Ok(())
    }

    /// Relays one datagram: the header is rewritten once and the same buffer goes to
    /// every recipient.
    pub fn send_unreliable(
        &self,
        sender: SessionId,
        dgram: ClientDatagram,
    ) -> Result<(), ApiError> {
        if dgram.bundle && newest(&dgram).is_none() {
            return Err(ApiError::new(
                ErrorCode::BAD_INPUT,
                "malformed bundle (see PROTOCOL.md, datagrams)",
            ));
        }
        // Most matches are small: the recipient list lives on the stack.
        let mut recipients: SmallVec<[SessionHandle; 8]> = SmallVec::new();
        let out = {
            let state = self.read();
            let Some(id) = state.handles.get(&dgram.handle).copied() else {
                return Err(ApiError::new(
                    ErrorCode::MATCH_NOT_FOUND,
                    format!("no live match has handle {}", dgram.handle),
                ));
            };
            let m = member_match(&state, id, sender)?;
            if let Some(inbox) = &m.inbox {
                let Some(e) = m.find(sender) else {
                    return Ok(());
                };
                // A server-run match gets a bundle's newest message, once: a repeat of
                // a datagram it already had (or an older one, overtaken) is dropped.
                let Some((op_code, data, msg_seq)) = newest(&dgram) else {
                    return Ok(());
                };
                if msg_seq.is_some_and(|msg_seq| !e.take_input(msg_seq)) {
                    return Ok(());
                }
                return inbox.message(Inbound {
                    sender: e.member.presence.clone(),
                    op_code,
                    data,
                    reliable: false,
                });
            }
            let sender_slot = m.find(sender).map(|e| e.member.slot).unwrap_or_default();
            let seq = m.next_seq();
            if let (Some(latest), None) = (&m.latest, &dgram.targets) {
                if let Some((op_code, data, _)) = newest(&dgram) {
                    latest.keep(sender_slot, op_code, seq, &data);
                }
            }
            for e in &m.members {
                let wanted = match &dgram.targets {
                    None => e.member.presence.session_id != sender,
                    Some(slots) => slots.contains(&e.member.slot),
                };
                if wanted {
                    recipients.push(e.session.clone());
                }
            }
            RelayHeader {
                handle: dgram.handle,
                sender_slot,
                seq,
                op_code: dgram.op_code,
                bundle: dgram.bundle,
            }
            .encode(&dgram.payload)
        };
        let mut too_large = false;
        for r in &recipients {
            too_large |= !r.send_datagram(out.clone());
        }
        if too_large {
            return Err(ApiError::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!(
                    "datagram of {} bytes does not fit a recipient's path",
                    out.len()
                ),
            ));
        }
        Ok(())
    }

    /// Points a resumed session's memberships at its new connection.
    pub fn rebind(&self, session: &SessionHandle, joined: &rustc_hash::FxHashSet<MatchId>) {
        let mut state = self.lock();
        for id in joined {
            if let Some(m) = state.matches.get_mut(id) {
                for e in &mut m.members {
                    if e.member.presence.session_id == session.presence.session_id {
                        e.session = session.clone();
                        // The resumed connection may be a new socket, numbering its
                        // bundles from 1 again.
                        e.inputs_seen.store(0, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// The matches (among `joined`) that `session` is still in, as it sees them.
    pub fn infos(
        &self,
        session: SessionId,
        joined: &rustc_hash::FxHashSet<MatchId>,
    ) -> Vec<MatchInfo> {
        let state = self.read();
        joined
            .iter()
            .filter_map(|id| {
                let m = state.matches.get(id)?;
                let me = m.find(session)?.member.clone();
                Some(m.info(&me))
            })
            .collect()
    }

    /// Live counts.
    pub fn counts(&self) -> MatchCounts {
        let state = self.read();
        MatchCounts {
            matches: state.matches.len(),
            presences: state.matches.values().map(|m| m.members.len()).sum(),
        }
    }
}

/// How a relayed match is created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayedOptions {
    /// Shown in listings; at most [`quicmatch_protocol::MAX_LABEL_LEN`] bytes.
    pub label: Option<String>,
    /// Most members; `None`: `matches.max_size`.
    pub max_size: Option<u32>,
    /// Joinable by id, never listed.
    pub private: bool,
    /// Op codes whose newest broadcast per member is kept for late joiners (at most
    /// [`quicmatch_protocol::MAX_LATEST_OP_CODES`]).
    pub latest_op_codes: Vec<i64>,
}

/// Checks a label's size.
pub(crate) fn check_label(label: Option<&str>) -> Result<(), ApiError> {
    match label {
        Some(l) if l.len() > quicmatch_protocol::MAX_LABEL_LEN => Err(ApiError::new(
            ErrorCode::BAD_INPUT,
            format!(
                "match label of {} bytes exceeds {}",
                l.len(),
                quicmatch_protocol::MAX_LABEL_LEN
            ),
        )),
        _ => Ok(()),
    }
}

fn create_locked(
    state: &mut State,
    limits: &MatchConfig,
    id: MatchId,
    session: &SessionHandle,
) -> Result<MatchInfo, ApiError> {
    create_with_locked(state, limits, id, session, &RelayedOptions::default())
}

fn create_with_locked(
    state: &mut State,
    limits: &MatchConfig,
    id: MatchId,
    session: &SessionHandle,
    options: &RelayedOptions,
) -> Result<MatchInfo, ApiError> {
    check_label(options.label.as_deref())?;
    let latest = latest::Latest::new(&options.latest_op_codes)?;
    let max_size = match options.max_size {
        None => limits.max_size,
        Some(n) if (2..=limits.max_size).contains(&(n as usize)) => n as usize,
        Some(n) => {
            return Err(ApiError::new(
                ErrorCode::BAD_INPUT,
                format!("max_size {n} is outside 2 to {}", limits.max_size),
            ))
        }
    };
    if state.matches.len() >= limits.max_matches {
        return Err(ApiError::new(
            ErrorCode::LIMIT_EXCEEDED,
            "the server is at its match limit",
        ));
    }
    state.reserved.remove(&id);
    state.next_handle = state.next_handle.wrapping_add(1);
    let handle = state.next_handle;
    let member = Member {
        slot: 1,
        presence: (*session.presence).clone(),
    };
    let m = Match {
        id,
        handle,
        members: vec![Entry::new(member.clone(), session.clone())],
        next_slot: 2,
        seq: AtomicU64::new(0),
        max_size,
        inbox: None,
        latest,
        dead_until: None,
    };
    let info = m.info(&member);
    state.handles.insert(handle, id);
    state.matches.insert(id, m);
    state.listing.upsert(listing::ListEntry {
        match_id: id,
        authoritative: false,
        label: options.label.clone(),
        size: 1,
        max_size: max_size as u32,
        tick_rate: 0,
        handler: Arc::from(""),
        private: options.private,
    });
    Ok(info)
}

fn join_locked(
    state: &mut State,
    limits: &MatchConfig,
    id: MatchId,
    session: &SessionHandle,
) -> Result<MatchInfo, ApiError> {
    if !state.matches.contains_key(&id)
        && state.reserved.get(&id).is_some_and(|t| *t > Instant::now())
    {
        return create_locked(state, limits, id, session);
    }
    let Some(m) = state.matches.get_mut(&id) else {
        return Err(ApiError::new(ErrorCode::MATCH_NOT_FOUND, "match not found"));
    };
    if let Some(e) = m.find(session.presence.session_id) {
        let me = e.member.clone();
        return Ok(m.info(&me));
    }
    if m.inbox.is_some() {
        // A server-run match admits members only through its handler's join_attempt.
        return Err(ApiError::new(
            ErrorCode::MATCH_JOIN_REJECTED,
            "this match is joined through its handler",
        ));
    }
    add_member(state, id, session)
}

/// Adds a member to a live match (the caller has decided it may join).
fn add_member(
    state: &mut State,
    id: MatchId,
    session: &SessionHandle,
) -> Result<MatchInfo, ApiError> {
    let Some(m) = state.matches.get_mut(&id) else {
        return Err(ApiError::new(ErrorCode::MATCH_NOT_FOUND, "match not found"));
    };
    if let Some(e) = m.find(session.presence.session_id) {
        let me = e.member.clone();
        return Ok(m.info(&me));
    }
    if m.members.len() >= m.max_size {
        return Err(ApiError::new(
            ErrorCode::MATCH_JOIN_REJECTED,
            format!("match is full ({} members)", m.max_size),
        ));
    }
    let member = Member {
        slot: m.next_slot,
        presence: (*session.presence).clone(),
    };
    m.next_slot += 1;
    if let Some(frame) = presence_frame(id, vec![member.clone()], Vec::new()) {
        m.broadcast_frame(&frame, session.presence.session_id);
    }
    m.members.push(Entry::new(member.clone(), session.clone()));
    if let Some(latest) = &m.latest {
        // Queued now, written after the `Match` reply (see `session`).
        for frame in latest.frames(id) {
            session.push_event(&frame);
        }
    }
    let size = m.members.len() as u32;
    let info = m.info(&member);
    state.listing.set_size(id, size);
    Ok(info)
}

/// A datagram's message, or a bundle's newest one with its `msg_seq` (`None`: a bundle
/// that does not decode, which only the receivers would have rejected).
fn newest(dgram: &ClientDatagram) -> Option<(i64, Bytes, Option<u64>)> {
    if !dgram.bundle {
        return Some((dgram.op_code, dgram.payload.clone(), None));
    }
    quicmatch_protocol::bundle::decode(dgram.payload.clone())
        .ok()?
        .into_iter()
        .next()
        .map(|m| (m.op_code, m.data, Some(m.msg_seq)))
}

fn member_match(state: &State, id: MatchId, sender: SessionId) -> Result<&Match, ApiError> {
    let Some(m) = state.matches.get(&id) else {
        return Err(ApiError::new(ErrorCode::MATCH_NOT_FOUND, "match not found"));
    };
    if m.find(sender).is_none() {
        return Err(ApiError::new(
            ErrorCode::NOT_MATCH_MEMBER,
            "not a member of this match",
        ));
    }
    Ok(m)
}
