//! Parties: short-lived groups with a leader that play and matchmake together.
//!
//! [`model`] holds the rules of one party as pure data; [`PartyTable`] keeps every live
//! party behind one lock and delivers the notices each change produces (events to
//! members, snapshots to new members, ticket cancellations) while holding it, so every
//! member sees changes in the order they happened.

pub mod model;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use quicmatch_protocol::{
    envelope::PartyInfo, frame::EventBody, ErrorCode, Event, MatchmakerAdd, PartyId, Presence,
    SessionId, TicketId, MAX_PARTY_LABEL_LEN, MAX_PARTY_SIZE, MAX_RELIABLE_PAYLOAD,
};

use self::model::{Notice, Party, PartyError};
use crate::{
    config::PartyConfig, handlers::ApiError, matchmaker::Matchmaker, session::SessionRegistry,
};

impl From<PartyError> for ApiError {
    fn from(e: PartyError) -> Self {
        let code = match e {
            PartyError::NotFound => ErrorCode::PARTY_NOT_FOUND,
            PartyError::Full => ErrorCode::PARTY_FULL,
            PartyError::RequestsFull => ErrorCode::PARTY_JOIN_REQUESTS_FULL,
            PartyError::AlreadyMember => ErrorCode::PARTY_ALREADY_MEMBER,
            PartyError::DuplicateRequest => ErrorCode::PARTY_JOIN_REQUEST_DUPLICATE,
            PartyError::NotLeader => ErrorCode::PARTY_NOT_LEADER,
            PartyError::NotMember => ErrorCode::PARTY_NOT_MEMBER,
            PartyError::MemberNotFound => ErrorCode::PARTY_MEMBER_NOT_FOUND,
            PartyError::RequestNotFound => ErrorCode::PARTY_JOIN_REQUEST_NOT_FOUND,
            PartyError::CannotRemoveSelf => ErrorCode::PARTY_CANNOT_REMOVE_SELF,
        };
        Self::new(code, e.to_string())
    }
}

/// Cheap-clone handle to every live party.
#[derive(Clone)]
pub struct PartyTable {
    /// One lock over all parties; held for rule checks and non-blocking queue pushes,
    /// never across an `.await`. Lock order: this, then the matchmaker's pool.
    inner: Arc<Mutex<State>>,
    config: PartyConfig,
    sessions: SessionRegistry,
    matchmaker: Matchmaker,
}

#[derive(Default)]
struct State {
    parties: HashMap<PartyId, Party>,
    /// Parties each session is in or asked to join, for disconnects and limits.
    by_session: HashMap<SessionId, HashSet<PartyId>>,
}

impl State {
    fn party(&mut self, id: PartyId) -> Result<&mut Party, ApiError> {
        self.parties
            .get_mut(&id)
            .ok_or_else(|| PartyError::NotFound.into())
    }

    fn track(&mut self, session: SessionId, party: PartyId) {
        self.by_session.entry(session).or_default().insert(party);
    }

    fn memberships(&self, session: SessionId) -> usize {
        self.by_session.get(&session).map_or(0, |ps| {
            ps.iter()
                .filter(|p| self.parties.get(p).is_some_and(|p| p.is_member(session)))
                .count()
        })
    }
}

/// `session` is no longer in (or asking to join) party `id`.
fn untrack(state: &mut State, session: SessionId, id: PartyId) {
    if let Some(set) = state.by_session.get_mut(&session) {
        set.remove(&id);
        if set.is_empty() {
            state.by_session.remove(&session);
        }
    }
}

fn encode(event: Event) -> Option<EventBody> {
    EventBody::encode(&event).ok()
}

fn snapshot(party: &Party, for_member: &Presence) -> PartyInfo {
    PartyInfo {
        party_id: party.id,
        open: party.open,
        max_size: u32::try_from(party.max_size).unwrap_or(u32::MAX),
        label: party.label.clone(),
        leader: party
            .leader_presence()
            .cloned()
            .unwrap_or_else(|| for_member.clone()),
        presences: party.members.clone(),
        self_presence: for_member.clone(),
    }
}

fn check_label(label: Option<&str>) -> Result<(), ApiError> {
    if label.is_some_and(|l| l.len() > MAX_PARTY_LABEL_LEN) {
        return Err(ApiError::new(
            ErrorCode::BAD_INPUT,
            format!("party label longer than {MAX_PARTY_LABEL_LEN} bytes"),
        ));
    }
    Ok(())
}

impl PartyTable {
    pub(crate) fn new(
        config: PartyConfig,
        sessions: SessionRegistry,
        matchmaker: Matchmaker,
    ) -> Self {
        Self {
            inner: Arc::new(Mutex::new(State::default())),
            config,
            sessions,
            matchmaker,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, to: &[SessionId], frame: &EventBody) {
        for s in to {
            if let Some(handle) = self.sessions.reach(*s) {
                handle.push_event(frame);
            }
        }
    }

    /// Forgets the remote handles of sessions of other nodes that are no longer in,
    /// or asking to join, any party here.
    fn settle(&self, state: &State, sessions: impl IntoIterator<Item = SessionId>) {
        for s in sessions {
            if !state.by_session.contains_key(&s) && self.sessions.is_guest(s) {
                self.sessions.remove_guest(s);
            }
        }
    }

    /// Delivers what a change produced; called with the lock held.
    fn apply(&self, state: &mut State, id: PartyId, notices: Vec<Notice>) {
        for notice in notices {
            match notice {
                Notice::Event(to, event) => {
                    if let Some(frame) = encode(event) {
                        self.push(&to, &frame);
                    }
                }
                Notice::Snapshot(member) => {
                    let Some(party) = state.parties.get(&id) else {
                        continue;
                    };
                    let Some(me) = party.members.iter().find(|m| m.session_id == member) else {
                        continue;
                    };
                    if let Some(frame) = encode(Event::Party(snapshot(party, me))) {
                        self.push(&[member], &frame);
                    }
                }
                Notice::CancelTickets(reason) => self.matchmaker.remove_party(id, reason),
                Notice::Ended => {
                    if let Some(party) = state.parties.remove(&id) {
                        for p in party.members.iter().chain(&party.requests) {
                            if let Some(set) = state.by_session.get_mut(&p.session_id) {
                                set.remove(&id);
                                if set.is_empty() {
                                    state.by_session.remove(&p.session_id);
                                }
                            }
                        }
                        let all = party.members.iter().chain(&party.requests);
                        self.settle(state, all.map(|p| p.session_id));
                    }
                }
            }
        }
    }

    /// Creates a party led by `creator`.
    pub fn create(
        &self,
        creator: &Presence,
        open: bool,
        max_size: u32,
        label: Option<String>,
    ) -> Result<PartyInfo, ApiError> {
        let max_size = usize::try_from(max_size).unwrap_or(usize::MAX);
        let limit = self.config.max_size.min(MAX_PARTY_SIZE);
        if !(1..=limit).contains(&max_size) {
            return Err(ApiError::new(
                ErrorCode::BAD_INPUT,
                format!("party max_size must be 1 to {limit}"),
            ));
        }
        check_label(label.as_deref())?;
        let mut state = self.lock();
        if !self.config.single_party
            && state.memberships(creator.session_id) >= self.config.max_per_session
        {
            return Err(ApiError::new(
                ErrorCode::LIMIT_EXCEEDED,
                format!(
                    "a session may be in at most {} parties",
                    self.config.max_per_session
                ),
            ));
        }
        let id = PartyId::new_random();
        let max_requests = self.config.max_requests.min(max_size);
        let party = Party::new(id, creator.clone(), open, max_size, max_requests, label);
        let info = snapshot(&party, creator);
        state.parties.insert(id, party);
        state.track(creator.session_id, id);
        self.single_party(&mut state, creator.session_id, id);
        Ok(info)
    }

    /// With `single_party`, a session that is now a member of `keep` leaves its other
    /// parties and withdraws its other join requests (their members see it leave).
    fn single_party(&self, state: &mut State, session: SessionId, keep: PartyId) {
        if !self.config.single_party
            || !state
                .parties
                .get(&keep)
                .is_some_and(|p| p.is_member(session))
        {
            return;
        }
        let others: Vec<PartyId> = state
            .by_session
            .get(&session)
            .map(|ps| ps.iter().copied().filter(|p| *p != keep).collect())
            .unwrap_or_default();
        for id in others {
            let Ok(party) = state.party(id) else { continue };
            let notices = party.leave(session);
            untrack(state, session, id);
            self.apply(state, id, notices);
        }
    }

    /// Joins an open party or asks to join a closed one.
    pub fn join(&self, who: &Presence, id: PartyId) -> Result<(), ApiError> {
        let mut state = self.lock();
        let already = state.party(id)?.is_member(who.session_id);
        if !already
            && !self.config.single_party
            && state.memberships(who.session_id) >= self.config.max_per_session
        {
            return Err(ApiError::new(
                ErrorCode::LIMIT_EXCEEDED,
                format!(
                    "a session may be in at most {} parties",
                    self.config.max_per_session
                ),
            ));
        }
        let notices = state.party(id)?.join(who.clone())?;
        state.track(who.session_id, id);
        self.apply(&mut state, id, notices);
        self.single_party(&mut state, who.session_id, id);
        Ok(())
    }

    /// Leaves a party; always succeeds.
    pub fn leave(&self, session: SessionId, id: PartyId) {
        let mut state = self.lock();
        let Ok(party) = state.party(id) else { return };
        let notices = party.leave(session);
        untrack(&mut state, session, id);
        self.apply(&mut state, id, notices);
        self.settle(&state, [session]);
    }

    /// Runs a leader-only change.
    fn leader_op(
        &self,
        id: PartyId,
        op: impl FnOnce(&mut Party) -> Result<Vec<Notice>, PartyError>,
    ) -> Result<(), ApiError> {
        let mut state = self.lock();
        let notices = op(state.party(id)?)?;
        self.apply(&mut state, id, notices);
        Ok(())
    }

    /// Leader only: ends the party.
    pub fn close(&self, caller: SessionId, id: PartyId) -> Result<(), ApiError> {
        self.leader_op(id, |p| p.close(caller))
    }

    /// Leader only: admits a requester.
    pub fn accept(
        &self,
        caller: SessionId,
        id: PartyId,
        target: SessionId,
    ) -> Result<(), ApiError> {
        self.leader_op(id, |p| p.accept(caller, target))?;
        self.single_party(&mut self.lock(), target, id);
        Ok(())
    }

    /// Leader only: removes a member or declines a request.
    pub fn remove(
        &self,
        caller: SessionId,
        id: PartyId,
        target: SessionId,
    ) -> Result<(), ApiError> {
        let result = self.leader_op(id, |p| p.remove(caller, target));
        if result.is_ok() {
            let mut state = self.lock();
            untrack(&mut state, target, id);
            self.settle(&state, [target]);
        }
        result
    }

    /// Leader only: hands over leadership.
    pub fn promote(
        &self,
        caller: SessionId,
        id: PartyId,
        target: SessionId,
    ) -> Result<(), ApiError> {
        self.leader_op(id, |p| p.promote(caller, target))
    }

    /// Leader only: opens or closes the party, or changes its label.
    pub fn update(
        &self,
        caller: SessionId,
        id: PartyId,
        open: Option<bool>,
        label: Option<String>,
    ) -> Result<(), ApiError> {
        check_label(label.as_deref())?;
        self.leader_op(id, |p| p.update(caller, open, label))
    }

    /// Leader only: pending requests.
    pub fn list_requests(&self, caller: SessionId, id: PartyId) -> Result<Vec<Presence>, ApiError> {
        Ok(self.lock().party(id)?.list_requests(caller)?)
    }

    /// Relays reliable data to every other member.
    pub fn send_data(
        &self,
        sender: &Presence,
        id: PartyId,
        op_code: i64,
        data: Bytes,
    ) -> Result<(), ApiError> {
        if data.len() > MAX_RELIABLE_PAYLOAD {
            return Err(ApiError::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!("party data exceeds {MAX_RELIABLE_PAYLOAD} bytes"),
            ));
        }
        let mut state = self.lock();
        let to = state.party(id)?.data_recipients(sender.session_id)?;
        if let Some(frame) = encode(Event::PartyData {
            party_id: id,
            sender: sender.clone(),
            op_code,
            data,
        }) {
            self.push(&to, &frame);
        }
        Ok(())
    }

    /// Leader only: one ticket for the whole party; the other members are told.
    pub fn matchmaker_add(
        &self,
        caller: &Presence,
        id: PartyId,
        request: MatchmakerAdd,
        options: quicmatch_protocol::MatchmakerOptions,
    ) -> Result<TicketId, ApiError> {
        let mut state = self.lock();
        let party = state.party(id)?;
        if !party.is_member(caller.session_id) {
            return Err(PartyError::NotMember.into());
        }
        if party.leader != caller.session_id {
            return Err(PartyError::NotLeader.into());
        }
        let members = party.members.clone();
        let spec = self
            .matchmaker
            .spec(caller, request, options, Some(id), members.clone())?;
        let ticket = self.matchmaker.add_party(spec)?;
        let others: Vec<SessionId> = members
            .iter()
            .map(|m| m.session_id)
            .filter(|s| *s != caller.session_id)
            .collect();
        if let Some(frame) = encode(Event::PartyMatchmakerTicket {
            party_id: id,
            ticket,
        }) {
            self.push(&others, &frame);
        }
        Ok(ticket)
    }

    /// Leader only: cancels one of the party's tickets; the other members (told of it
    /// with `PartyMatchmakerTicket`) get `MatchmakerTicketCancelled`.
    pub fn matchmaker_remove(
        &self,
        caller: SessionId,
        id: PartyId,
        ticket: TicketId,
    ) -> Result<(), ApiError> {
        let mut state = self.lock();
        let party = state.party(id)?;
        if !party.is_member(caller) {
            return Err(PartyError::NotMember.into());
        }
        if party.leader != caller {
            return Err(PartyError::NotLeader.into());
        }
        self.matchmaker.remove_party_ticket(id, ticket)?;
        // Any membership change cancels the party's tickets, so a live ticket holds
        // exactly the current members.
        let others: Vec<SessionId> = party
            .members
            .iter()
            .map(|m| m.session_id)
            .filter(|s| *s != caller)
            .collect();
        if let Some(frame) = encode(Event::MatchmakerTicketCancelled {
            ticket,
            reason: "removed by the party leader".into(),
        }) {
            self.push(&others, &frame);
        }
        Ok(())
    }

    /// A session ended: it leaves every party and its pending requests are withdrawn.
    pub fn disconnect(&self, session: SessionId) {
        let mut state = self.lock();
        let parties = state.by_session.remove(&session).unwrap_or_default();
        for id in parties {
            if let Some(party) = state.parties.get_mut(&id) {
                let notices = party.leave(session);
                self.apply(&mut state, id, notices);
            }
        }
        self.settle(&state, [session]);
    }

    /// Whether a live party of this node has this id.
    pub(crate) fn contains(&self, id: PartyId) -> bool {
        self.lock().parties.contains_key(&id)
    }

    /// After a request of a session of another node (`handle`, homed on `home`): it
    /// stays reachable exactly while it is in (or asking to join) a party here. Taken
    /// under the parties' lock, as [`Self::settle`] is, so a change that ended its last
    /// party meanwhile and one that made it a member cannot both miss.
    pub(crate) fn keep_guest(&self, handle: &crate::outbound::SessionHandle, home: &str) {
        let state = self.lock();
        let id = handle.presence.session_id;
        if state.by_session.contains_key(&id) {
            self.sessions.add_guest(handle.clone(), home);
        } else if self.sessions.is_guest(id) {
            self.sessions.remove_guest(id);
        }
    }

    /// The parties of this node `session` is in or asking to join.
    pub(crate) fn of(&self, session: SessionId) -> Vec<PartyId> {
        self.lock()
            .by_session
            .get(&session)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every live party as it stands (for restart records).
    pub(crate) fn all(&self) -> Vec<Party> {
        self.lock().parties.values().cloned().collect()
    }

    /// Puts back a party after a restart (its members are restored sessions). Pending
    /// requests are not kept: the requesters' sessions may never come back.
    pub(crate) fn restore(&self, mut party: Party) {
        party.requests.clear();
        let mut state = self.lock();
        for m in &party.members {
            state.track(m.session_id, party.id);
        }
        state.parties.insert(party.id, party);
    }

    /// Live parties.
    pub fn len(&self) -> usize {
        self.lock().parties.len()
    }

    /// Whether no party is live.
    pub fn is_empty(&self) -> bool {
        self.lock().parties.is_empty()
    }
}
