//! The rules of one party, as pure data: who leads, who is in, who asked to join, and
//! which notices each change produces. No I/O; the party table delivers the notices.

use quicmatch_protocol::{Event, PartyId, Presence, SessionId};

/// Why a party operation was refused; each has its own error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PartyError {
    /// No live party has that id.
    #[error("party not found")]
    NotFound,
    /// The party has `max_size` members.
    #[error("party full")]
    Full,
    /// The party is closed and already has its maximum of pending join requests.
    #[error("party join requests full")]
    RequestsFull,
    /// The caller is already a member.
    #[error("already a party member")]
    AlreadyMember,
    /// The caller already has a pending request.
    #[error("party join request already pending")]
    DuplicateRequest,
    /// Only the leader may do that.
    #[error("only the party leader may do that")]
    NotLeader,
    /// The caller is not a member.
    #[error("not a party member")]
    NotMember,
    /// The target is neither a member nor a pending requester.
    #[error("party member not found")]
    MemberNotFound,
    /// No pending request from that session.
    #[error("party join request not found")]
    RequestNotFound,
    /// The leader tried to remove itself (it should leave or close).
    #[error("the leader cannot remove itself; leave or close the party")]
    CannotRemoveSelf,
}

/// Something to tell sessions after a change. Short-lived (built and delivered within
/// one operation), so the size difference between variants does not matter.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Notice {
    /// Send this event to these sessions.
    Event(Vec<SessionId>, Event),
    /// Send a fresh snapshot of the party to this member.
    Snapshot(SessionId),
    /// The membership changed: cancel the party's matchmaker tickets.
    CancelTickets(&'static str),
    /// The party ended; its id never works again.
    Ended,
}

/// One party.
#[derive(Debug, Clone, PartialEq)]
pub struct Party {
    /// Its id.
    pub id: PartyId,
    /// Open parties admit joiners at once; closed ones queue requests for the leader.
    pub open: bool,
    /// Most members.
    pub max_size: usize,
    /// Most pending join requests.
    pub max_requests: usize,
    /// Free-form text the leader sets; an empty label is stored as none.
    pub label: Option<String>,
    /// Members in join order; the first is the longest-standing.
    pub members: Vec<Presence>,
    /// The leader's session (always a member).
    pub leader: SessionId,
    /// Pending join requests, oldest first.
    pub requests: Vec<Presence>,
}

impl Party {
    /// A new party led by its creator.
    pub fn new(
        id: PartyId,
        creator: Presence,
        open: bool,
        max_size: usize,
        max_requests: usize,
        label: Option<String>,
    ) -> Self {
        Self {
            id,
            open,
            max_size,
            max_requests,
            label: label.filter(|l| !l.is_empty()),
            leader: creator.session_id,
            members: vec![creator],
            requests: Vec::new(),
        }
    }

    /// The leader's presence.
    pub fn leader_presence(&self) -> Option<&Presence> {
        self.members.iter().find(|m| m.session_id == self.leader)
    }

    /// Whether `session` is a member.
    pub fn is_member(&self, session: SessionId) -> bool {
        self.members.iter().any(|m| m.session_id == session)
    }

    fn sessions_except(&self, except: SessionId) -> Vec<SessionId> {
        self.members
            .iter()
            .map(|m| m.session_id)
            .filter(|s| *s != except)
            .collect()
    }

    fn check_leader(&self, caller: SessionId) -> Result<(), PartyError> {
        if !self.is_member(caller) {
            return Err(PartyError::NotMember);
        }
        if caller != self.leader {
            return Err(PartyError::NotLeader);
        }
        Ok(())
    }

    fn admit(&mut self, who: Presence) -> Vec<Notice> {
        let joined = who.session_id;
        self.members.push(who.clone());
        vec![
            Notice::CancelTickets("a member joined the party"),
            Notice::Event(
                self.sessions_except(joined),
                Event::PartyPresence {
                    party_id: self.id,
                    joins: vec![who],
                    leaves: Vec::new(),
                },
            ),
            Notice::Snapshot(joined),
        ]
    }

    /// `who` asks to join: admitted at once if open, queued for the leader if closed.
    pub fn join(&mut self, who: Presence) -> Result<Vec<Notice>, PartyError> {
        if self.is_member(who.session_id) {
            return Err(PartyError::AlreadyMember);
        }
        if self.members.len() >= self.max_size {
            return Err(PartyError::Full);
        }
        if self.open {
            return Ok(self.admit(who));
        }
        if self.requests.iter().any(|r| r.session_id == who.session_id) {
            return Err(PartyError::DuplicateRequest);
        }
        if self.requests.len() >= self.max_requests {
            return Err(PartyError::RequestsFull);
        }
        self.requests.push(who.clone());
        Ok(vec![Notice::Event(
            vec![self.leader],
            Event::PartyJoinRequest {
                party_id: self.id,
                presences: vec![who],
            },
        )])
    }

    /// The leader admits a pending requester.
    pub fn accept(
        &mut self,
        caller: SessionId,
        target: SessionId,
    ) -> Result<Vec<Notice>, PartyError> {
        self.check_leader(caller)?;
        let pos = self
            .requests
            .iter()
            .position(|r| r.session_id == target)
            .ok_or(PartyError::RequestNotFound)?;
        if self.members.len() >= self.max_size {
            return Err(PartyError::Full);
        }
        let who = self.requests.remove(pos);
        Ok(self.admit(who))
    }

    fn depart(&mut self, pos: usize, cancel_reason: &'static str) -> Vec<Notice> {
        let gone = self.members.remove(pos);
        let mut notices = vec![Notice::CancelTickets(cancel_reason)];
        if self.members.is_empty() {
            // No one is left to accept the pending requests: their senders are told.
            if !self.requests.is_empty() {
                notices.push(Notice::Event(
                    self.requests.iter().map(|r| r.session_id).collect(),
                    Event::PartyClose {
                        party_id: self.id,
                        reason: "the party ended: its last member left".into(),
                    },
                ));
            }
            notices.push(Notice::Ended);
            return notices;
        }
        notices.push(Notice::Event(
            self.sessions_except(gone.session_id),
            Event::PartyPresence {
                party_id: self.id,
                joins: Vec::new(),
                leaves: vec![gone.clone()],
            },
        ));
        if gone.session_id == self.leader {
            // The longest-standing member leads next.
            let next = self.members[0].clone();
            self.leader = next.session_id;
            notices.push(Notice::Event(
                self.sessions_except(gone.session_id),
                Event::PartyLeader {
                    party_id: self.id,
                    presence: next,
                },
            ));
        }
        notices
    }

    /// `session` leaves (or disconnects); a pending request of it is withdrawn. Leaving
    /// a party one is not in changes nothing.
    pub fn leave(&mut self, session: SessionId) -> Vec<Notice> {
        self.requests.retain(|r| r.session_id != session);
        match self.members.iter().position(|m| m.session_id == session) {
            Some(pos) => self.depart(pos, "a member left the party"),
            None => Vec::new(),
        }
    }

    /// The leader removes a member (who is told with a close) or declines a request
    /// (the requester is told too).
    pub fn remove(
        &mut self,
        caller: SessionId,
        target: SessionId,
    ) -> Result<Vec<Notice>, PartyError> {
        self.check_leader(caller)?;
        if target == caller {
            return Err(PartyError::CannotRemoveSelf);
        }
        if let Some(pos) = self.members.iter().position(|m| m.session_id == target) {
            let mut notices = self.depart(pos, "a member was removed from the party");
            notices.push(Notice::Event(
                vec![target],
                Event::PartyClose {
                    party_id: self.id,
                    reason: "removed by the leader".into(),
                },
            ));
            return Ok(notices);
        }
        if let Some(pos) = self.requests.iter().position(|r| r.session_id == target) {
            self.requests.remove(pos);
            return Ok(vec![Notice::Event(
                vec![target],
                Event::PartyClose {
                    party_id: self.id,
                    reason: "join request declined".into(),
                },
            )]);
        }
        Err(PartyError::MemberNotFound)
    }

    /// The leader hands leadership to another member.
    pub fn promote(
        &mut self,
        caller: SessionId,
        target: SessionId,
    ) -> Result<Vec<Notice>, PartyError> {
        self.check_leader(caller)?;
        let next = self
            .members
            .iter()
            .find(|m| m.session_id == target)
            .cloned()
            .ok_or(PartyError::MemberNotFound)?;
        self.leader = target;
        Ok(vec![Notice::Event(
            self.members.iter().map(|m| m.session_id).collect(),
            Event::PartyLeader {
                party_id: self.id,
                presence: next,
            },
        )])
    }

    /// The leader ends the party: members and pending requesters are told.
    pub fn close(&mut self, caller: SessionId) -> Result<Vec<Notice>, PartyError> {
        self.check_leader(caller)?;
        let to = self
            .members
            .iter()
            .chain(&self.requests)
            .map(|m| m.session_id)
            .collect();
        Ok(vec![
            Notice::CancelTickets("the party was closed"),
            Notice::Event(
                to,
                Event::PartyClose {
                    party_id: self.id,
                    reason: "closed by the leader".into(),
                },
            ),
            Notice::Ended,
        ])
    }

    /// The leader lists pending requests.
    pub fn list_requests(&self, caller: SessionId) -> Result<Vec<Presence>, PartyError> {
        self.check_leader(caller)?;
        Ok(self.requests.clone())
    }

    /// The leader opens or closes the party, or changes its label (an empty label
    /// removes it; `None` leaves it as it is).
    pub fn update(
        &mut self,
        caller: SessionId,
        open: Option<bool>,
        label: Option<String>,
    ) -> Result<Vec<Notice>, PartyError> {
        self.check_leader(caller)?;
        if let Some(open) = open {
            self.open = open;
        }
        if let Some(label) = label {
            self.label = Some(label).filter(|l| !l.is_empty());
        }
        Ok(vec![Notice::Event(
            self.members.iter().map(|m| m.session_id).collect(),
            Event::PartyUpdate {
                party_id: self.id,
                open: self.open,
                label: self.label.clone(),
            },
        )])
    }

    /// A member's data goes to every other member, never back to the sender.
    pub fn data_recipients(&self, sender: SessionId) -> Result<Vec<SessionId>, PartyError> {
        if !self.is_member(sender) {
            return Err(PartyError::NotMember);
        }
        Ok(self.sessions_except(sender))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quicmatch_protocol::UserId;

    fn p(n: u128) -> Presence {
        Presence {
            user_id: UserId(uuid::Uuid::from_u128(n)),
            session_id: SessionId(uuid::Uuid::from_u128(n)),
            username: format!("p{n}"),
        }
    }

    fn s(n: u128) -> SessionId {
        p(n).session_id
    }

    fn party(open: bool, max: usize) -> Party {
        Party::new(PartyId::new_random(), p(1), open, max, 2, None)
    }

    fn events(notices: &[Notice]) -> Vec<&Event> {
        notices
            .iter()
            .filter_map(|n| match n {
                Notice::Event(_, e) => Some(e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn open_join_admits_and_tells_the_others() {
        let mut party = party(true, 3);
        let notices = party.join(p(2)).expect("join");
        assert!(notices.contains(&Notice::Snapshot(s(2))));
        assert!(notices.contains(&Notice::CancelTickets("a member joined the party")));
        assert!(
            matches!(&notices[1], Notice::Event(to, Event::PartyPresence { joins, .. }) if to == &vec![s(1)] && joins == &vec![p(2)])
        );
        assert_eq!(party.join(p(2)), Err(PartyError::AlreadyMember));
        party.join(p(3)).expect("third");
        assert_eq!(party.join(p(4)), Err(PartyError::Full));
    }

    #[test]
    fn closed_join_queues_a_request_for_the_leader() {
        let mut party = party(false, 4);
        let notices = party.join(p(2)).expect("request");
        assert!(
            matches!(&notices[..], [Notice::Event(to, Event::PartyJoinRequest { presences, .. })] if to == &vec![s(1)] && presences == &vec![p(2)])
        );
        assert_eq!(party.join(p(2)), Err(PartyError::DuplicateRequest));
        party.join(p(3)).expect("request");
        assert_eq!(party.join(p(4)), Err(PartyError::RequestsFull));
        assert_eq!(party.accept(s(2), s(3)), Err(PartyError::NotMember));
        let notices = party.accept(s(1), s(2)).expect("accept");
        assert!(notices.contains(&Notice::Snapshot(s(2))));
        assert_eq!(party.accept(s(1), s(2)), Err(PartyError::RequestNotFound));
        assert_eq!(party.accept(s(2), s(3)), Err(PartyError::NotLeader));
        assert_eq!(party.list_requests(s(1)), Ok(vec![p(3)]));
    }

    #[test]
    fn declining_tells_the_requester() {
        let mut party = party(false, 4);
        party.join(p(2)).expect("request");
        let notices = party.remove(s(1), s(2)).expect("decline");
        assert!(
            matches!(&notices[..], [Notice::Event(to, Event::PartyClose { reason, .. })] if to == &vec![s(2)] && reason.contains("declined"))
        );
        assert!(party.requests.is_empty());
    }

    #[test]
    fn accept_respects_the_size_limit() {
        let mut party = party(false, 2);
        party.join(p(2)).expect("request");
        party.join(p(3)).expect("request");
        party.accept(s(1), s(2)).expect("accept");
        assert_eq!(party.accept(s(1), s(3)), Err(PartyError::Full));
    }

    #[test]
    fn leader_leaving_hands_over_to_the_longest_standing() {
        let mut party = party(true, 4);
        party.join(p(2)).expect("join");
        party.join(p(3)).expect("join");
        let notices = party.leave(s(1));
        assert_eq!(party.leader, s(2));
        let evs = events(&notices);
        assert!(evs
            .iter()
            .any(|e| matches!(e, Event::PartyLeader { presence, .. } if presence == &p(2))));
        assert!(evs
            .iter()
            .any(|e| matches!(e, Event::PartyPresence { leaves, .. } if leaves == &vec![p(1)])));
        party.leave(s(2));
        assert_eq!(party.leader, s(3));
        let notices = party.leave(s(3));
        assert!(notices.contains(&Notice::Ended));
        assert!(
            party.leave(s(9)).is_empty(),
            "leaving a party one is not in"
        );
    }

    #[test]
    fn kicking_and_privileges() {
        let mut party = party(true, 4);
        party.join(p(2)).expect("join");
        party.join(p(3)).expect("join");
        assert_eq!(party.remove(s(2), s(3)), Err(PartyError::NotLeader));
        assert_eq!(party.promote(s(2), s(3)), Err(PartyError::NotLeader));
        assert_eq!(party.close(s(2)), Err(PartyError::NotLeader));
        assert_eq!(
            party.update(s(2), Some(false), None),
            Err(PartyError::NotLeader)
        );
        assert_eq!(party.remove(s(1), s(1)), Err(PartyError::CannotRemoveSelf));
        assert_eq!(party.remove(s(1), s(9)), Err(PartyError::MemberNotFound));
        let notices = party.remove(s(1), s(3)).expect("kick");
        assert!(events(&notices)
            .iter()
            .any(|e| matches!(e, Event::PartyClose { .. })));
        assert_eq!(party.members.len(), 2);
        party.promote(s(1), s(2)).expect("promote");
        assert_eq!(party.leader, s(2));
        assert_eq!(party.promote(s(2), s(9)), Err(PartyError::MemberNotFound));
    }

    #[test]
    fn data_never_echoes_and_needs_membership() {
        let mut party = party(true, 4);
        party.join(p(2)).expect("join");
        party.join(p(3)).expect("join");
        assert_eq!(party.data_recipients(s(2)), Ok(vec![s(1), s(3)]));
        assert_eq!(party.data_recipients(s(9)), Err(PartyError::NotMember));
    }

    #[test]
    fn a_requester_leaving_withdraws_its_request() {
        let mut party = party(false, 4);
        party.join(p(2)).expect("request");
        assert!(party.leave(s(2)).is_empty());
        assert!(party.requests.is_empty());
    }

    #[test]
    fn the_last_member_leaving_tells_the_requesters() {
        let mut party = party(false, 4);
        party.join(p(2)).expect("request");
        party.join(p(3)).expect("request");
        let notices = party.leave(s(1));
        assert!(notices.iter().any(|n| matches!(
            n,
            Notice::Event(to, Event::PartyClose { reason, .. })
                if to == &vec![s(2), s(3)] && reason.contains("last member")
        )));
        // Told before the party ends, and the requests stay listed for the table's
        // bookkeeping.
        let close = notices
            .iter()
            .position(|n| matches!(n, Notice::Event(_, Event::PartyClose { .. })));
        let ended = notices.iter().position(|n| n == &Notice::Ended);
        assert!(close < ended, "{notices:?}");
        assert_eq!(party.requests, vec![p(2), p(3)]);
    }

    #[test]
    fn the_last_member_leaving_without_requests_tells_no_one() {
        let mut party = party(false, 4);
        let notices = party.leave(s(1));
        assert!(events(&notices).is_empty(), "{notices:?}");
        assert!(notices.contains(&Notice::Ended));
    }

    #[test]
    fn labels_are_set_kept_and_cleared() {
        let mut party = Party::new(PartyId::new_random(), p(1), true, 4, 2, Some(String::new()));
        assert_eq!(party.label, None, "an empty label is no label");
        let notices = party
            .update(s(1), None, Some("squad".into()))
            .expect("label");
        assert!(
            matches!(&notices[..], [Notice::Event(_, Event::PartyUpdate { label: Some(l), open: true, .. })] if l == "squad")
        );
        party.update(s(1), Some(false), None).expect("open flag");
        assert_eq!(party.label.as_deref(), Some("squad"), "None keeps it");
        let notices = party
            .update(s(1), None, Some(String::new()))
            .expect("clear");
        assert!(matches!(
            &notices[..],
            [Notice::Event(
                _,
                Event::PartyUpdate {
                    label: None,
                    open: false,
                    ..
                }
            )]
        ));
    }

    #[test]
    fn close_tells_members_and_requesters() {
        let mut party = party(false, 4);
        party.join(p(2)).expect("request");
        let notices = party.close(s(1)).expect("close");
        assert!(
            matches!(&notices[1], Notice::Event(to, Event::PartyClose { .. }) if to == &vec![s(1), s(2)])
        );
        assert!(notices.contains(&Notice::Ended));
    }
}
