//! The matchmaker's side of a pool shared by a cluster's nodes (docs/cluster.md §6):
//! what a ticket is made from ([`TicketRecord`], written to the shared pool), the
//! [`SharedPool`] the cluster gives the matchmaker (told of every ticket that enters or
//! leaves this node's own pool), and what the cluster asks of the matchmaker: specs
//! rebuilt from records, a pass over the leader's mirror, and the results and
//! cancellations a home delivers to its own sessions.
//!
//! With a shared pool, this node's own pool holds only its own tickets (for limits,
//! cancellation and delivery) and passes no more: the cluster's leader passes over a
//! mirror of every node's tickets.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use quicmatch_protocol::{
    envelope::MatchmakerUser, ErrorCode, MatchId, MatchmakerAdd, MatchmakerOptions, PartyId,
    Presence, SessionId, TicketId,
};
use serde::{Deserialize, Serialize};

use super::{
    pool::{Matched, Pool, PoolStats, TicketSpec},
    query::Properties,
    Matchmaker,
};
use crate::handlers::ApiError;

/// What the cluster does with this node's tickets.
pub(crate) trait SharedPool: Send + Sync {
    /// Whether a ticket can be shared now (the node is in its cluster).
    fn available(&self) -> bool;
    /// A ticket entered this node's pool: it is written to the shared one.
    fn added(&self, ticket: TicketId, record: Arc<TicketRecord>);
    /// Tickets left this node's pool (cancelled, their session or party gone): they
    /// are deleted from the shared one.
    fn removed(&self, tickets: Vec<TicketId>);
    /// A session of this node became suspect (or was heard again, or ended while
    /// suspect): the leader's passes skip every ticket it is in, wherever homed.
    fn suspected(&self, session: SessionId, suspect: bool);
}

/// A ticket as the shared pool holds it: the request after the before-add hook, its
/// options and members; a node rebuilds the spec from it with the same checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TicketRecord {
    pub(crate) request: MatchmakerAdd,
    pub(crate) options: MatchmakerOptions,
    pub(crate) party_id: Option<PartyId>,
    pub(crate) members: Vec<Presence>,
    /// A backfill's live match (on the node that wrote the record); its seats left
    /// are `request.max_count`, its query and properties the request's.
    pub(crate) backfill: Option<MatchId>,
}

/// What a group did to the backfill it filled seats of: the home of the backfill
/// keeps its seats in step (the same value however often it is told).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BackfillFill {
    pub(crate) ticket: TicketId,
    pub(crate) seats_left: u32,
}

/// A group the leader formed, as each home delivers it: the users in the group's
/// order, each one's ticket, the teams, and the token or match every member is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GroupResult {
    pub(crate) tickets: Vec<TicketId>,
    pub(crate) users: Vec<MatchmakerUser>,
    pub(crate) teams: Option<Vec<u32>>,
    pub(crate) token: Option<String>,
    pub(crate) match_id: Option<MatchId>,
    /// The backfill the group filled seats of, with the seats it left.
    pub(crate) backfill: Option<BackfillFill>,
}

impl GroupResult {
    /// The match the group is to meet in: a token's (whose match is created by its
    /// first redeemer) or the one the matched hook chose.
    pub(crate) fn token_match(&self, mm: &Matchmaker) -> Option<MatchId> {
        let token = self.token.as_deref()?;
        let user = self.users.first()?.presence.user_id;
        mm.redeem(token, user).ok().map(|(id, _)| id)
    }
}

fn cluster_unavailable() -> ApiError {
    ApiError::new(
        ErrorCode::CLUSTER_UNAVAILABLE,
        "this node is not connected to its cluster; matchmaking is shared across it",
    )
}

impl Matchmaker {
    /// Hands every ticket of this node to `shared` from now on, and stops passing over
    /// the node's own pool.
    pub(crate) fn share(&self, shared: Arc<dyn SharedPool>) {
        let _ = self.inner.shared.set(shared);
    }

    /// The pool this node's tickets are shared through, if any.
    pub(super) fn shared(&self) -> Option<&Arc<dyn SharedPool>> {
        self.inner.shared.get()
    }

    /// Refuses an add while the shared pool cannot take it.
    pub(super) fn check_shared(&self) -> Result<(), ApiError> {
        match self.shared() {
            Some(s) if !s.available() => Err(cluster_unavailable()),
            _ => Ok(()),
        }
    }

    /// Tells the shared pool of a ticket just added.
    pub(super) fn share_added(&self, ticket: TicketId, record: Option<Arc<TicketRecord>>) {
        if let (Some(shared), Some(record)) = (self.shared(), record) {
            shared.added(ticket, record);
        }
    }

    /// Tells the shared pool of tickets just removed.
    pub(super) fn share_removed(&self, tickets: Vec<TicketId>) {
        if let Some(shared) = self.shared() {
            if !tickets.is_empty() {
                shared.removed(tickets);
            }
        }
    }

    /// Tells the shared pool that a session's suspicion changed.
    pub(super) fn share_suspected(&self, session: SessionId, suspect: bool) {
        if let Some(shared) = self.shared() {
            shared.suspected(session, suspect);
        }
    }

    /// This node's suspect sessions, to share again after the node joined its cluster
    /// anew.
    pub(crate) fn own_suspects(&self) -> Vec<SessionId> {
        self.pool().suspect_sessions()
    }

    /// The records of this node's own tickets, to write again after the node joined
    /// its cluster anew (another node may have deleted them while it was away).
    pub(crate) fn own_records(&self) -> Vec<(TicketId, Arc<TicketRecord>)> {
        self.pool().records()
    }

    /// The spec of a ticket another node made (its before-add hook ran there).
    pub(crate) fn spec_from(&self, record: &TicketRecord) -> Result<TicketSpec, ApiError> {
        if let Some(match_id) = record.backfill {
            return self.backfill_spec(
                match_id,
                &record.request.query,
                record.request.max_count,
                Properties {
                    strings: record.request.string_properties.clone(),
                    numbers: record.request.numeric_properties.clone(),
                },
            );
        }
        self.build_spec(
            record.request.clone(),
            record.options.clone(),
            record.party_id,
            record.members.clone(),
        )
    }

    /// A pool for the leader's mirror, with this node's grouping rules.
    pub(crate) fn new_mirror(&self) -> Pool {
        Pool::new(self.pool_config())
    }

    /// One pass over `mirror` (the built-in grouping or the custom processor), with
    /// the pass's metrics; groups are not delivered (the leader commits them first).
    pub(crate) fn pass_over(
        &self,
        mirror: &Mutex<Pool>,
        now: Instant,
    ) -> (Vec<Matched>, PoolStats) {
        let lock = |m: &Mutex<Pool>| {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .process(now)
        };
        let (matched, stats) = match &self.inner.hooks.matchmaker_processor {
            None => {
                let matched = lock(mirror);
                let stats = mirror
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .stats(now);
                (matched, stats)
            }
            Some(processor) => self.custom_pass_over(mirror, processor.clone(), now),
        };
        self.record_pass(&matched, &stats);
        (matched, stats)
    }

    /// What a formed group is told, for delivery by every member's home: a token or
    /// the match the matched hook chose (the hook runs here, on the leader).
    pub(crate) fn result_of(&self, m: &Matched) -> GroupResult {
        let (token, match_id) = self.match_for(m);
        let (users, teams) = Self::users_of(m);
        GroupResult {
            tickets: m.entries.iter().map(|e| e.ticket).collect(),
            users,
            teams,
            token,
            match_id,
            backfill: None,
        }
    }

    /// Delivers a group's result to the members of this node's tickets among it, once:
    /// each such ticket leaves this node's pool. Returns the tickets delivered.
    pub(crate) fn deliver_result(&self, result: &GroupResult) -> Vec<TicketId> {
        // A party's ticket appears once per member.
        let delivered: Vec<TicketId> = {
            let mut pool = self.pool();
            if let Some(fill) = result.backfill {
                pool.set_backfill_seats(fill.ticket, fill.seats_left);
            }
            let mut ids = result.tickets.clone();
            ids.dedup();
            ids.into_iter()
                .filter(|t| pool.forget(*t).is_some())
                .collect()
        };
        if delivered.is_empty() {
            return delivered;
        }
        let tickets_of_users: Vec<TicketId> = result.tickets.clone();
        self.push_matched(
            &result.users,
            &tickets_of_users,
            &result.teams,
            &result.token,
            result.match_id,
            |t| delivered.contains(&t),
        );
        delivered
    }

    /// Tickets of this node the shared pool dropped (expired, or their group could not
    /// be delivered): they leave this node's pool and their members are told.
    pub(crate) fn cancelled_elsewhere(&self, tickets: &[TicketId], reason: &str) {
        let cancelled: Vec<_> = {
            let mut pool = self.pool();
            tickets.iter().filter_map(|t| pool.forget(*t)).collect()
        };
        self.announce(cancelled, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_the_peer_codec() {
        let record = TicketRecord {
            request: MatchmakerAdd {
                query: "+properties.mode:duel".into(),
                min_count: 2,
                max_count: 2,
                count_multiple: None,
                string_properties: [("mode".to_owned(), "duel".to_owned())].into(),
                numeric_properties: [("skill".to_owned(), 12.5)].into(),
            },
            options: MatchmakerOptions::default(),
            party_id: None,
            members: Vec::new(),
            backfill: Some(MatchId::new_random()),
        };
        let bytes = quicmatch_protocol::frame::encode_peer(&record).expect("encodes");
        let back: TicketRecord = quicmatch_protocol::frame::decode_peer(&bytes).expect("decodes");
        assert_eq!(back.request, record.request);
        assert_eq!(back.options, record.options);
        assert_eq!(back.backfill, record.backfill);
    }
}
