//! The matchmaker leader's mirror of the cluster's pool (docs/cluster.md §6.2): every
//! node's open tickets as the tickets bucket says, fed by the leader's watches, with
//! the pool its passes run over; the claims a pass (or an earlier leader) left; the
//! sessions suspected by their homes; the tickets it cannot read; and the delete
//! markers it has applied, for the leader to purge.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream::kv::{self, Operation};
use quicmatch_protocol::{frame, SessionId, TicketId};
use tracing::warn;

use super::tickets::{self, parse_key, parse_suspect_key, TicketValue};
use crate::matchmaker::{pool::Pool, shared::TicketRecord, Matchmaker};

/// Applied delete markers a leader keeps to purge; past this the oldest are left to
/// the next leader.
const MARKERS_KEPT: usize = 1 << 16;

/// An open ticket of the mirror: where it is and what it was made from.
#[derive(Clone)]
pub(super) struct Held {
    pub(super) key: String,
    pub(super) revision: u64,
    pub(super) home: String,
    pub(super) record: TicketRecord,
    pub(super) added_ms: u64,
}

/// A claimed ticket the mirror saw: its group decides what becomes of it.
#[derive(Clone)]
pub(super) struct Claim {
    pub(super) held: Held,
    pub(super) group: u64,
}

/// Every node's tickets as the bucket says, and the pool over the open ones.
pub(super) struct Mirror {
    pub(super) pool: Arc<Mutex<Pool>>,
    pub(super) open: HashMap<TicketId, Held>,
    pub(super) claimed: HashMap<TicketId, Claim>,
    /// Keys whose delete marker this mirror has applied: purged from the bucket after
    /// the pass, so markers do not pile up one per ticket ever made.
    pub(super) deleted: VecDeque<(String, u64)>,
    /// Suspect sessions, wherever homed (their keys' homes): the pool skips every
    /// ticket they are in.
    pub(super) suspects: HashMap<SessionId, String>,
    /// Open tickets this node cannot make a spec of (a home with another
    /// `[matchmaker]` config): cancelled at the next pass, so none waits forever.
    pub(super) unreadable: HashMap<TicketId, (Held, String)>,
}

impl Mirror {
    pub(super) fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts an open ticket back (taken out by a pass, but not claimed).
    pub(super) fn restore(&mut self, mm: &Matchmaker, held: Held) {
        let Some((_, ticket)) = parse_key(&held.key) else {
            return;
        };
        if let Ok(spec) = mm.spec_from(&held.record) {
            let age = Duration::from_millis(tickets::unix_ms().saturating_sub(held.added_ms));
            let now = Instant::now();
            let mut pool = self.pool();
            // A pass may have left it in the pool changed (a backfill's seats): the
            // record is what stands.
            pool.forget(ticket);
            pool.insert(ticket, spec, now.checked_sub(age).unwrap_or(now));
            drop(pool);
            self.open.insert(ticket, held);
        }
    }

    /// One entry of the suspect sessions (`s.<home>.<session>` in the tickets bucket).
    pub(super) fn suspect(&mut self, entry: &kv::Entry) {
        let Some((home, session)) = parse_suspect_key(&entry.key) else {
            return;
        };
        let suspect = entry.operation == Operation::Put;
        self.pool().set_suspect(session, suspect);
        if suspect {
            self.suspects.insert(session, home);
        } else {
            self.suspects.remove(&session);
            self.marked_deleted(entry);
        }
    }

    /// A delete marker the mirror applied, to purge (up to its revision) after the
    /// pass.
    pub(super) fn marked_deleted(&mut self, entry: &kv::Entry) {
        self.deleted.push_back((entry.key.clone(), entry.revision));
        // A leader that cannot purge for a long while leaves the oldest markers for the
        // next one (it reads them with the history).
        while self.deleted.len() > MARKERS_KEPT {
            self.deleted.pop_front();
        }
    }

    /// An open ticket the bucket holds: into the pool, unless the mirror has it already
    /// (then only its revision changes) or cannot read it (then it is cancelled at the
    /// next pass).
    fn opened(&mut self, mm: &Matchmaker, ticket: TicketId, held: Held) {
        self.claimed.remove(&ticket);
        if let Some(known) = self.open.get_mut(&ticket) {
            known.revision = held.revision;
            return;
        }
        let spec = match mm.spec_from(&held.record) {
            Ok(spec) => spec,
            Err(e) => {
                warn!(key = %held.key, error = %e.message, "cluster: a ticket the matchmaker's leader cannot read; cancelled");
                self.unreadable.insert(ticket, (held, e.message));
                return;
            }
        };
        let age = Duration::from_millis(tickets::unix_ms().saturating_sub(held.added_ms));
        let now = Instant::now();
        let created = now.checked_sub(age).unwrap_or(now);
        self.pool().insert(ticket, spec, created);
        self.open.insert(ticket, held);
    }

    /// One entry of the tickets bucket.
    pub(super) fn apply(&mut self, mm: &Matchmaker, entry: &kv::Entry) {
        let Some((home, ticket)) = parse_key(&entry.key) else {
            return;
        };
        match entry.operation {
            Operation::Put => match frame::decode_peer::<TicketValue>(&entry.value) {
                Ok(value) => {
                    let (record, added_ms, group) = match value {
                        TicketValue::Open { record, added_ms } => (record, added_ms, None),
                        TicketValue::Claimed {
                            group,
                            record,
                            added_ms,
                        } => (record, added_ms, Some(group)),
                    };
                    let held = Held {
                        key: entry.key.clone(),
                        revision: entry.revision,
                        home,
                        record,
                        added_ms,
                    };
                    match group {
                        None => self.opened(mm, ticket, held),
                        Some(group) => {
                            self.unreadable.remove(&ticket);
                            self.pool().forget(ticket);
                            self.open.remove(&ticket);
                            self.claimed.insert(ticket, Claim { held, group });
                        }
                    }
                }
                Err(e) => {
                    warn!(key = %entry.key, error = %e, "cluster: a ticket that does not decode; ignored");
                }
            },
            Operation::Delete | Operation::Purge => {
                self.unreadable.remove(&ticket);
                self.pool().forget(ticket);
                self.open.remove(&ticket);
                self.claimed.remove(&ticket);
                self.marked_deleted(entry);
            }
        }
    }
}
