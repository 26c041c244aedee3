//! The restart records' layout (JSON, so an operator can read them in an export), and
//! how they turn back into sessions, parties and matches.

use std::{collections::HashMap, sync::Arc};

use quicmatch_protocol::{MatchId, Member, PartyId, Presence, SessionId, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    matches::hosted::KeptCounters, party::model::Party, runtime::Kept,
    storage::restart::RestartKind,
};

/// A session: its id is the record's key.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SessionRecord {
    pub(super) user_id: UserId,
    pub(super) username: String,
}

impl SessionRecord {
    pub(super) fn presence(self, session_id: SessionId) -> Presence {
        Presence {
            user_id: self.user_id,
            session_id,
            username: self.username,
        }
    }
}

/// A party: its id is the record's key.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PartyRecord {
    open: bool,
    max_size: usize,
    max_requests: usize,
    label: Option<String>,
    leader: SessionId,
    members: Vec<Presence>,
}

impl PartyRecord {
    pub(super) fn of(p: &Party) -> Self {
        Self {
            open: p.open,
            max_size: p.max_size,
            max_requests: p.max_requests,
            label: p.label.clone(),
            leader: p.leader,
            members: p.members.clone(),
        }
    }

    /// The party with the members whose sessions came back (`None` if none did); the
    /// longest-standing one leads if the leader did not.
    pub(super) fn party(self, id: PartyId, restored: impl Fn(SessionId) -> bool) -> Option<Party> {
        let members: Vec<Presence> = self
            .members
            .into_iter()
            .filter(|m| restored(m.session_id))
            .collect();
        let first = members.first()?.session_id;
        let leader = if members.iter().any(|m| m.session_id == self.leader) {
            self.leader
        } else {
            first
        };
        Some(Party {
            id,
            open: self.open,
            max_size: self.max_size,
            max_requests: self.max_requests,
            label: self.label,
            members,
            leader,
            requests: Vec::new(),
        })
    }
}

/// A server-run match (its handler's snapshot is a record of its own).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct MatchRecord {
    pub(super) handler: String,
    label: Option<String>,
    tick_rate: u32,
    tick: u64,
    max_size: usize,
    pub(super) counters: KeptCounters,
    pub(super) members: Vec<Member>,
    matched: Vec<Presence>,
}

impl MatchRecord {
    pub(super) fn of(
        kept: &Kept,
        counters: KeptCounters,
        members: Vec<Member>,
        max_size: usize,
    ) -> Self {
        Self {
            handler: kept.handler.to_string(),
            label: kept.label.clone(),
            tick_rate: kept.tick_rate,
            tick: kept.tick,
            max_size,
            counters,
            members,
            matched: kept.matched.clone(),
        }
    }

    pub(super) fn kept(&self, id: MatchId, state: Vec<u8>) -> Kept {
        Kept {
            id,
            handler: Arc::from(self.handler.as_str()),
            label: self.label.clone(),
            tick_rate: self.tick_rate,
            tick: self.tick,
            matched: self.matched.clone(),
            state,
        }
    }
}

pub(super) fn encode<T: Serialize>(record: &T) -> Option<Vec<u8>> {
    serde_json::to_vec(record).ok()
}

/// The records of a store, sorted by kind.
#[derive(Default)]
pub(super) struct Decoded {
    pub(super) sessions: Vec<(SessionId, SessionRecord)>,
    pub(super) parties: Vec<(PartyId, PartyRecord)>,
    pub(super) matches: Vec<(MatchId, MatchRecord)>,
    pub(super) states: HashMap<MatchId, Vec<u8>>,
    /// Records that did not decode.
    pub(super) damaged: usize,
}

pub(super) fn decode_all(rows: Vec<(RestartKind, u128, Vec<u8>)>) -> Decoded {
    let mut out = Decoded::default();
    for (kind, id, bytes) in rows {
        let uuid = Uuid::from_u128(id);
        let ok = match kind {
            RestartKind::Session => serde_json::from_slice(&bytes)
                .map(|r| out.sessions.push((SessionId(uuid), r)))
                .is_ok(),
            RestartKind::Party => serde_json::from_slice(&bytes)
                .map(|r| out.parties.push((PartyId(uuid), r)))
                .is_ok(),
            RestartKind::Match => serde_json::from_slice(&bytes)
                .map(|r| out.matches.push((MatchId(uuid), r)))
                .is_ok(),
            RestartKind::State => {
                out.states.insert(MatchId(uuid), bytes);
                true
            }
        };
        if !ok {
            out.damaged += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(n: u128) -> Presence {
        Presence {
            user_id: UserId(Uuid::from_u128(n + 100)),
            session_id: SessionId(Uuid::from_u128(n)),
            username: format!("p{n}"),
        }
    }

    #[test]
    fn a_party_keeps_the_members_that_came_back_and_a_leader() {
        let mut party = Party::new(PartyId(Uuid::from_u128(9)), presence(1), true, 4, 4, None);
        party.members.push(presence(2));
        party.members.push(presence(3));
        let record = PartyRecord::of(&party);
        let back = record
            .party(party.id, |s| s != presence(1).session_id)
            .expect("two came back");
        assert_eq!(back.members, vec![presence(2), presence(3)]);
        assert_eq!(back.leader, presence(2).session_id);
        let none = PartyRecord::of(&party).party(party.id, |_| false);
        assert!(none.is_none());
    }

    #[test]
    fn records_round_trip_and_damaged_ones_are_counted() {
        let session = SessionRecord {
            user_id: presence(1).user_id,
            username: "ann".into(),
        };
        let rows = vec![
            (RestartKind::Session, 1, encode(&session).expect("encode")),
            (RestartKind::Party, 2, b"{not json".to_vec()),
            (RestartKind::State, 3, vec![1, 2, 3]),
        ];
        let d = decode_all(rows);
        assert_eq!(d.sessions.len(), 1);
        assert_eq!(d.sessions[0].1.username, "ann");
        assert_eq!(d.damaged, 1);
        assert_eq!(
            d.states.get(&MatchId(Uuid::from_u128(3))),
            Some(&vec![1, 2, 3])
        );
    }
}
