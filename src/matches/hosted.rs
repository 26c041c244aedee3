//! What only server-run (authoritative) matches do in the table: where their members'
//! data goes (an [`Inbox`]), how members are admitted and kicked, how the server sends
//! to them, how labels change, and how such a match ends. Handlers themselves live in
//! `runtime`; this file only keeps the table's side consistent.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use bytes::Bytes;
use quicmatch_protocol::{
    datagram::RelayHeader, envelope::Event, frame::EventBody, ErrorCode, MatchId, MatchInfo,
    Member, Presence, SessionId, MAX_RELIABLE_PAYLOAD,
};
use smallvec::SmallVec;

use super::{add_member, check_label, listing, presence_frame, Entry, Match, MatchTable};
use crate::{handlers::ApiError, outbound::SessionHandle};

/// The sender slot of data the server itself sends (members' slots start at 1).
pub(crate) const SERVER_SLOT: u32 = 0;

/// One message a member sent to a server-run match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Who sent it.
    pub sender: Presence,
    /// Application-defined message kind.
    pub op_code: i64,
    /// The payload.
    pub data: Bytes,
    /// Whether it came over the reliable path.
    pub reliable: bool,
}

/// Where a server-run match's input goes. Called with the table's lock held: never
/// block, never call back into the table.
pub trait Inbox: Send + Sync {
    /// A member sent data. An `Err` goes back to the sender (a full input queue).
    fn message(&self, message: Inbound) -> Result<(), ApiError>;
    /// A member left (or was disconnected).
    fn left(&self, presence: Presence);
}

/// A server-run match as it is listed and sized.
pub(crate) struct HostedSpec {
    pub(crate) label: Option<String>,
    pub(crate) max_size: usize,
    pub(crate) tick_rate: u32,
    pub(crate) handler: Arc<str>,
}

/// How far a restored match's data numbering jumps past its last snapshot: more
/// than a match sends between two snapshots.
const RESTART_SEQ_JUMP: u64 = 1 << 24;

/// A server-run match's numbering kept across a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct KeptCounters {
    /// The short handle its datagrams carry.
    pub(crate) handle: u32,
    /// The last data sequence number handed out.
    pub(crate) seq: u64,
    /// The next member slot.
    pub(crate) next_slot: u32,
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::MATCH_NOT_FOUND, "match not found")
}

impl MatchTable {
    /// Creates a server-run match with no members yet.
    pub(crate) fn create_hosted(
        &self,
        id: MatchId,
        spec: HostedSpec,
        inbox: Arc<dyn Inbox>,
    ) -> Result<(), ApiError> {
        check_label(spec.label.as_deref())?;
        let mut state = self.lock();
        if state.matches.len() >= self.limits.max_matches {
            return Err(ApiError::new(
                ErrorCode::LIMIT_EXCEEDED,
                "the server is at its match limit",
            ));
        }
        state.next_handle = state.next_handle.wrapping_add(1);
        let handle = state.next_handle;
        state.matches.insert(
            id,
            Match {
                id,
                handle,
                members: Vec::new(),
                next_slot: 1,
                seq: AtomicU64::new(0),
                max_size: spec.max_size,
                inbox: Some(inbox),
                latest: None,
                dead_until: None,
            },
        );
        state.handles.insert(handle, id);
        state.listing.upsert(listing::ListEntry {
            match_id: id,
            authoritative: true,
            label: spec.label,
            size: 0,
            max_size: spec.max_size as u32,
            tick_rate: spec.tick_rate,
            handler: spec.handler,
            private: false,
        });
        Ok(())
    }

    /// Puts back a server-run match after a restart, with its members (held sessions,
    /// no joins announced), its handle when still free, and its data numbering moved
    /// past anything sent before the restart.
    pub(crate) fn restore_hosted(
        &self,
        id: MatchId,
        spec: HostedSpec,
        inbox: Arc<dyn Inbox>,
        kept: KeptCounters,
        members: Vec<(Member, SessionHandle)>,
    ) -> Result<(), ApiError> {
        self.create_hosted(id, spec, inbox)?;
        let mut state = self.lock();
        let state = &mut *state;
        let Some(m) = state.matches.get_mut(&id) else {
            return Err(not_found());
        };
        if kept.handle != 0 && !state.handles.contains_key(&kept.handle) {
            state.handles.remove(&m.handle);
            m.handle = kept.handle;
            state.handles.insert(kept.handle, id);
            state.next_handle = state.next_handle.max(kept.handle);
        }
        // Receivers drop data numbered at or below what they saw; what was sent after
        // the last snapshot is unknown, so jump well past it.
        m.seq = AtomicU64::new(kept.seq.saturating_add(RESTART_SEQ_JUMP));
        m.next_slot = members
            .iter()
            .map(|(member, _)| member.slot)
            .max()
            .map_or(kept.next_slot, |s| s.saturating_add(1).max(kept.next_slot));
        m.members = members
            .into_iter()
            .take(m.max_size)
            .map(|(member, session)| Entry::new(member, session))
            .collect();
        let size = m.members.len() as u32;
        state.listing.set_size(id, size);
        Ok(())
    }

    /// A server-run match's members and counters, as a restart record keeps them.
    pub(crate) fn kept(&self, id: MatchId) -> Option<(KeptCounters, Vec<Member>, usize)> {
        let state = self.read();
        let m = state.matches.get(&id)?;
        Some((
            KeptCounters {
                handle: m.handle,
                seq: m.seq.load(Ordering::Relaxed),
                next_slot: m.next_slot,
            },
            m.members.iter().map(|e| e.member.clone()).collect(),
            m.max_size,
        ))
    }

    /// Adds a member its handler accepted.
    pub(crate) fn admit(
        &self,
        id: MatchId,
        session: &SessionHandle,
    ) -> Result<MatchInfo, ApiError> {
        add_member(&mut self.lock(), id, session)
    }

    /// Whether `session` is a member of `id`.
    pub(crate) fn is_member(&self, id: MatchId, session: SessionId) -> bool {
        self.read()
            .matches
            .get(&id)
            .is_some_and(|m| m.find(session).is_some())
    }

    /// The members of a match, in join order.
    pub(crate) fn presences(&self, id: MatchId) -> Vec<Presence> {
        self.read().matches.get(&id).map_or_else(Vec::new, |m| {
            m.members
                .iter()
                .map(|e| e.member.presence.clone())
                .collect()
        })
    }

    /// Sends from the server to members (`targets`, or all): reliably over their
    /// control streams or as datagrams. `sender` names a member the data is attributed
    /// to; `None` is the server itself (slot 0).
    pub(crate) fn server_send(
        &self,
        id: MatchId,
        op_code: i64,
        data: Bytes,
        targets: Option<&[SessionId]>,
        sender: Option<SessionId>,
        reliable: bool,
    ) -> Result<(), ApiError> {
        let limit = if reliable {
            MAX_RELIABLE_PAYLOAD
        } else {
            quicmatch_protocol::MAX_DATAGRAM_PAYLOAD
        };
        if data.len() > limit {
            return Err(ApiError::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!("payload of {} bytes exceeds {limit}", data.len()),
            ));
        }
        let wanted = |s: SessionId| targets.is_none_or(|t| t.contains(&s));
        if reliable {
            let state = self.lock();
            let m = state.matches.get(&id).ok_or_else(not_found)?;
            let sender_slot = sender
                .and_then(|s| m.find(s))
                .map_or(SERVER_SLOT, |e| e.member.slot);
            let frame = EventBody::encode(&Event::MatchData {
                match_id: id,
                sender_slot,
                seq: m.next_seq(),
                op_code,
                data,
            })
            .map_err(|e| ApiError::new(ErrorCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
            for e in m
                .members
                .iter()
                .filter(|e| wanted(e.member.presence.session_id))
            {
                e.session.push_event(&frame);
            }
            return Ok(());
        }
        let mut recipients: SmallVec<[SessionHandle; 8]> = SmallVec::new();
        let datagram = {
            let state = self.read();
            let m = state.matches.get(&id).ok_or_else(not_found)?;
            let sender_slot = sender
                .and_then(|s| m.find(s))
                .map_or(SERVER_SLOT, |e| e.member.slot);
            recipients.extend(
                m.members
                    .iter()
                    .filter(|e| wanted(e.member.presence.session_id))
                    .map(|e| e.session.clone()),
            );
            RelayHeader {
                handle: m.handle,
                sender_slot,
                seq: m.next_seq(),
                op_code,
                bundle: false,
            }
            .encode(&data)
        };
        for r in &recipients {
            r.send_datagram(datagram.clone());
        }
        Ok(())
    }

    /// Removes a member the handler kicked: the others see a leave, the member gets
    /// `MatchEnded`. Returns its presence if it was a member.
    pub(crate) fn kick(&self, id: MatchId, session: SessionId, reason: &str) -> Option<Presence> {
        let mut state = self.lock();
        let m = state.matches.get_mut(&id)?;
        let pos = m
            .members
            .iter()
            .position(|e| e.member.presence.session_id == session)?;
        let gone = m.members.remove(pos);
        if let Some(frame) = presence_frame(id, Vec::new(), vec![gone.member.clone()]) {
            m.broadcast_frame(&frame, session);
        }
        if let Ok(frame) = EventBody::encode(&Event::MatchEnded {
            match_id: id,
            reason: reason.to_owned(),
        }) {
            gone.session.push_event(&frame);
        }
        let size = m.members.len() as u32;
        state.listing.set_size(id, size);
        Some(gone.member.presence)
    }

    /// Changes a match's label; the next listing sees it.
    pub(crate) fn set_label(&self, id: MatchId, label: Option<String>) -> Result<(), ApiError> {
        check_label(label.as_deref())?;
        let mut state = self.lock();
        if !state.matches.contains_key(&id) {
            return Err(not_found());
        }
        state.listing.set_label(id, label);
        Ok(())
    }

    /// Ends a server-run match: every member gets `MatchEnded` with `reason`, and its id
    /// and handle never work again. Returns the members it had.
    pub(crate) fn end_hosted(&self, id: MatchId, reason: &str) -> Vec<Presence> {
        let mut state = self.lock();
        let Some(m) = state.matches.remove(&id) else {
            return Vec::new();
        };
        state.handles.remove(&m.handle);
        state.listing.remove(id);
        if let Ok(frame) = EventBody::encode(&Event::MatchEnded {
            match_id: id,
            reason: reason.to_owned(),
        }) {
            for e in &m.members {
                e.session.push_event(&frame);
            }
        }
        m.members.into_iter().map(|e| e.member.presence).collect()
    }

    /// Lists matches (see `listing`).
    pub fn list(
        &self,
        request: &quicmatch_protocol::MatchListRequest,
    ) -> Result<Vec<quicmatch_protocol::MatchListing>, ApiError> {
        self.read().listing.list(request)
    }

    /// Lists matches with what ranks them, to merge with other nodes' listings.
    pub(crate) fn list_ranked(
        &self,
        request: &quicmatch_protocol::MatchListRequest,
    ) -> Result<Vec<listing::Ranked>, ApiError> {
        self.read()
            .listing
            .list_ranked(request, std::time::Instant::now())
    }
}
