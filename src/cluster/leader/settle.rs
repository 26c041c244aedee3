//! What a leader settles besides forming groups: the tickets and suspicions of nodes
//! that are gone, the tickets it cannot read, and the claims an earlier leader (or a
//! failed delivery) left, each committed group delivered again and any other aborted
//! and its tickets opened again.

use std::{collections::BTreeMap, sync::atomic::Ordering};

use async_nats::jetstream::kv::Operation;
use quicmatch_protocol::{frame, SessionId, TicketId};

use super::{group_key, GroupValue, Leading};
use crate::cluster::{
    mirror::{Claim, Held, Mirror},
    tickets::{self, parse_key, TicketValue},
};

impl Leading<'_> {
    /// Tickets of a node that has been gone a whole `node_ttl` (judged only after this
    /// leader has led that long itself) are deleted: its sessions are gone with it.
    pub(super) async fn drop_gone(&self, mirror: &mut Mirror) {
        if self.since.elapsed() < self.inner.config.node_ttl {
            return;
        }
        let gone = |home: &str| home != self.me.node && !self.inner.view().is_peer_name(home);
        let drop: Vec<(TicketId, Held)> = mirror
            .open
            .iter()
            .filter(|(_, h)| gone(&h.home))
            .map(|(t, h)| (*t, h.clone()))
            .collect();
        // Claims stay: their group may have committed, and the sweep settles them.
        for (ticket, held) in drop {
            mirror.pool().forget(ticket);
            mirror.open.remove(&ticket);
            mirror.claimed.remove(&ticket);
            self.delete(&held).await;
        }
        let suspects: Vec<(SessionId, String)> = mirror
            .suspects
            .iter()
            .filter(|(_, home)| gone(home))
            .map(|(s, h)| (*s, h.clone()))
            .collect();
        for (session, home) in suspects {
            let key = tickets::suspect_key(&home, session);
            if let Some(Ok(())) = self.within(self.buckets.tickets.delete(&key)).await {
                mirror.pool().set_suspect(session, false);
                mirror.suspects.remove(&session);
            }
        }
        self.inner
            .mirror_suspects
            .store(mirror.suspects.len(), Ordering::Relaxed);
    }

    /// Cancels the open tickets this leader cannot read, telling their homes why (a
    /// home not told keeps its ticket, cancelled again at the next pass).
    pub(super) async fn cancel_unreadable(&self, mirror: &mut Mirror) {
        let mut by_home: BTreeMap<String, Vec<(TicketId, Held, String)>> = BTreeMap::new();
        for (ticket, (held, why)) in mirror.unreadable.drain() {
            by_home
                .entry(held.home.clone())
                .or_default()
                .push((ticket, held, why));
        }
        for (home, tickets) in by_home {
            if self.expired() {
                return;
            }
            // One reason a home: they are alike (one config against another).
            let why = tickets
                .first()
                .map(|(_, _, w)| w.clone())
                .unwrap_or_default();
            let ids: Vec<TicketId> = tickets.iter().map(|(t, _, _)| *t).collect();
            let reason = format!("the matchmaker's leader cannot read this ticket: {why}");
            if self.cancel_at(&home, ids, &reason).await {
                for (_, held, _) in &tickets {
                    self.delete(held).await;
                }
            } else {
                for (ticket, held, why) in tickets {
                    mirror.unreadable.insert(ticket, (held, why));
                }
            }
        }
    }

    /// Settles the claims the mirror holds: a committed group is delivered (again), any
    /// other aborted and its tickets opened again.
    pub(super) async fn sweep(&self, mirror: &mut Mirror) {
        let mut groups: BTreeMap<u64, Vec<Claim>> = BTreeMap::new();
        for claim in mirror.claimed.values() {
            groups.entry(claim.group).or_default().push(claim.clone());
        }
        for (group, claims) in groups {
            if self.expired() {
                return;
            }
            let key = group_key(group);
            let Some(Ok(entry)) = self.within(self.buckets.groups.entry(key.clone())).await else {
                continue;
            };
            let value = entry
                .filter(|e| e.operation == Operation::Put)
                .and_then(|e| frame::decode_peer::<GroupValue>(&e.value).ok());
            match value {
                Some(GroupValue::Committed { result, placement }) => {
                    let held: Vec<Held> = claims.into_iter().map(|c| c.held).collect();
                    self.deliver(&result, placement, &held).await;
                }
                Some(GroupValue::Aborted) => self.reopen(&claims).await,
                None => {
                    let Ok(aborted) = frame::encode_peer(&GroupValue::Aborted) else {
                        continue;
                    };
                    // Whoever creates the record first decides: a late commit fails.
                    if let Some(Ok(_)) =
                        self.within(self.buckets.groups.create(&key, aborted)).await
                    {
                        metrics::counter!("quicmatch_cluster_matchmaker_groups_total", "outcome" => "aborted").increment(1);
                        self.reopen(&claims).await;
                    }
                }
            }
        }
    }

    /// Opens claimed tickets again (their group will never commit).
    pub(super) async fn reopen(&self, claims: &[Claim]) {
        for claim in claims {
            let value = TicketValue::Open {
                record: claim.held.record.clone(),
                added_ms: claim.held.added_ms,
            };
            if let Ok(value) = frame::encode_peer(&value) {
                let _ = self
                    .within(self.buckets.tickets.update(
                        &claim.held.key,
                        value,
                        claim.held.revision,
                    ))
                    .await;
            }
        }
    }

    /// Deletes claimed tickets and tells their homes why.
    pub(super) async fn cancel_claims(&self, claims: &[Claim], reason: &str) {
        let mut by_home: BTreeMap<String, Vec<TicketId>> = BTreeMap::new();
        for c in claims {
            if self.delete(&c.held).await {
                if let Some((_, ticket)) = parse_key(&c.held.key) {
                    by_home.entry(c.held.home.clone()).or_default().push(ticket);
                }
            }
        }
        for (home, tickets) in by_home {
            self.cancel_at(&home, tickets, reason).await;
        }
    }
}
