//! How a leader commits a group its pass formed: every ticket (a backfill's included)
//! claimed at the revision its mirror holds, the group's record created `Committed`
//! (the one point where it exists), its token match placed where most of its players
//! are, then each home told and its tickets deleted (a backfill with seats left written
//! back with them).

use std::collections::{BTreeMap, HashMap};

use async_nats::jetstream::kv::CreateErrorKind;
use quicmatch_protocol::{frame, TicketId};
use tracing::warn;

use super::{group_key, random_u64, GroupValue, Leading};
use crate::{
    cluster::{
        mirror::{Claim, Held},
        tickets::{self, parse_key, TicketValue},
        wire::{RequestBody, Sender},
    },
    matchmaker::{
        pool::Matched,
        shared::{BackfillFill, GroupResult},
    },
};

impl Leading<'_> {
    /// A delivered ticket leaves the pool; a backfill with seats left stays in it with
    /// those seats (at the revision of its claim, so a change since wins).
    pub(super) async fn finish(&self, held: &Held, result: &GroupResult) {
        let fill = result
            .backfill
            .filter(|f| f.seats_left > 0)
            .filter(|f| parse_key(&held.key).map(|(_, t)| t) == Some(f.ticket));
        let Some(fill) = fill else {
            self.delete(held).await;
            return;
        };
        let mut record = held.record.clone();
        record.request.max_count = fill.seats_left;
        let value = TicketValue::Open {
            record,
            added_ms: held.added_ms,
        };
        if let Ok(value) = frame::encode_peer(&value) {
            let _ = self
                .within(self.buckets.tickets.update(&held.key, value, held.revision))
                .await;
        }
    }

    /// Commits one group the pass formed (its tickets taken out of the mirror): claims,
    /// record, delivery. Returns the tickets to put back into the mirror: those it
    /// could not claim, as last seen (a delete or a change, or a claim that did apply
    /// after all, comes through the watch after them).
    pub(super) async fn commit(&self, m: Matched, held: Vec<Held>) -> Vec<Held> {
        let group = random_u64();
        let ids = tickets_of(&m);
        if held.len() != ids.len() {
            // One of them left the mirror meanwhile (another group of this pass took
            // it, or the watch is behind): nothing to claim.
            return held;
        }
        let claimed = |h: &Held| TicketValue::Claimed {
            group,
            record: h.record.clone(),
            added_ms: h.added_ms,
        };
        let writes = held.iter().map(|h| async {
            let value = frame::encode_peer(&claimed(h)).map_err(|e| e.to_string())?;
            match self
                .within(self.buckets.tickets.update(&h.key, value, h.revision))
                .await
            {
                Some(Ok(revision)) => Ok(revision),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("timed out".into()),
            }
        });
        let revisions: Vec<Result<u64, String>> = futures_util::future::join_all(writes).await;
        let mut claims: Vec<Claim> = Vec::new();
        let mut back = Vec::new();
        for (h, r) in held.into_iter().zip(&revisions) {
            match r {
                Ok(revision) => {
                    let mut held = h;
                    held.revision = *revision;
                    claims.push(Claim { held, group });
                }
                Err(_) => back.push(h),
            }
        }
        if claims.len() != ids.len() {
            // A ticket was cancelled (or changed) meanwhile: the others are opened
            // again and come back through the watch.
            metrics::counter!("quicmatch_cluster_matchmaker_groups_total", "outcome" => "aborted")
                .increment(1);
            self.reopen(&claims).await;
            return back;
        }
        let mut result = self.mm.result_of(&m);
        // A backfill's seats are claimed with the group: what the group leaves is
        // written back when the group is delivered (by this leader or a later sweep).
        if let Some(ticket) = m.backfill_ticket {
            let seats = claims
                .iter()
                .find(|c| parse_key(&c.held.key).map(|(_, t)| t) == Some(ticket))
                .map_or(0, |c| c.held.record.request.max_count);
            let players = u32::try_from(m.entries.len()).unwrap_or(u32::MAX);
            if players > seats {
                // The claimed record has fewer seats than the pass saw: not this group.
                metrics::counter!("quicmatch_cluster_matchmaker_groups_total", "outcome" => "aborted")
                    .increment(1);
                self.reopen(&claims).await;
                return back;
            }
            result.backfill = Some(BackfillFill {
                ticket,
                seats_left: seats - players,
            });
        }
        let placement = self.place(&result, &claims).await;
        let value = GroupValue::Committed {
            result: result.clone(),
            placement: placement.clone(),
        };
        let Ok(value) = frame::encode_peer(&value) else {
            warn!("cluster: a matched group too large to share; its tickets are cancelled");
            self.cancel_claims(&claims, "matched group too large to share")
                .await;
            return back;
        };
        match self
            .within(self.buckets.groups.create(group_key(group), value))
            .await
        {
            Some(Ok(_)) => {}
            Some(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => {
                // Aborted by a leader that took over meanwhile.
                self.reopen(&claims).await;
                return back;
            }
            // Unknown: the claims stay, and the next sweep settles them.
            _ => return back,
        }
        metrics::counter!("quicmatch_cluster_matchmaker_groups_total", "outcome" => "committed")
            .increment(1);
        let held: Vec<Held> = claims.into_iter().map(|c| c.held).collect();
        self.deliver(&result, placement, &held).await;
        back
    }

    /// Where the group's token match lives: the node homing most of its players (ties:
    /// the lower name), which the match id is claimed for, so a member from another
    /// node joins it there.
    pub(super) async fn place(
        &self,
        result: &GroupResult,
        claims: &[Claim],
    ) -> Option<(String, u64)> {
        let id = result.token_match(&self.mm)?;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for c in claims {
            *counts.entry(c.held.home.as_str()).or_default() += c.held.record.members.len();
        }
        let loads: HashMap<String, u32> = self
            .inner
            .view()
            .nodes()
            .into_iter()
            .map(|n| (n.name, n.load))
            .collect();
        let node = placement_node(&counts, &loads)?;
        let owner = if node == self.me.node {
            self.me.clone()
        } else {
            let (node, incarnation) = self
                .inner
                .view()
                .peers()
                .into_iter()
                .find(|(n, _)| *n == node)?;
            Sender { node, incarnation }
        };
        let revision = self
            .within(self.buckets.owners.claim_for(id, &owner))
            .await?
            .ok()??;
        Some((owner.node, revision))
    }

    /// Tells each home of its tickets in a committed group and deletes them once it
    /// has been told; a home that does not answer keeps its claims, delivered again at
    /// the next pass.
    pub(super) async fn deliver(
        &self,
        result: &GroupResult,
        placement: Option<(String, u64)>,
        held: &[Held],
    ) {
        let mut by_home: BTreeMap<&str, Vec<&Held>> = BTreeMap::new();
        for h in held {
            by_home.entry(h.home.as_str()).or_default().push(h);
        }
        // A backfill's home first: its seats are settled before any player's ticket
        // leaves the pool.
        let backfill = result.backfill.map(|f| f.ticket);
        let mut homes: Vec<(&str, Vec<&Held>)> = by_home.into_iter().collect();
        homes.sort_by_key(|(_, tickets)| {
            !tickets
                .iter()
                .any(|h| parse_key(&h.key).map(|(_, t)| t) == backfill && backfill.is_some())
        });
        for (home, tickets) in homes {
            let placed = placement
                .as_ref()
                .filter(|(node, _)| node == home)
                .map(|(_, revision)| *revision);
            let told = if home == self.me.node {
                tickets::deliver(self.inner, self.local, result, placed);
                true
            } else {
                let body = RequestBody::Matched {
                    result: result.clone(),
                    placement: placed,
                };
                self.ask(home, body).await
            };
            if told {
                futures_util::future::join_all(tickets.into_iter().map(|h| self.finish(h, result)))
                    .await;
            }
        }
    }
}

/// Where a group's token match goes: the node homing most of its players; ties to the
/// least loaded (as the registry last said), then the lower name.
fn placement_node(counts: &BTreeMap<&str, usize>, loads: &HashMap<String, u32>) -> Option<String> {
    let best = counts.values().copied().max()?;
    counts
        .iter()
        .filter(|(_, n)| **n == best)
        .min_by_key(|(node, _)| (loads.get(**node).copied().unwrap_or(u32::MAX), **node))
        .map(|(node, _)| (*node).to_owned())
}

/// A group's tickets: each player's once (a party's appears once per member), then
/// the backfill it fills, if any.
pub(super) fn tickets_of(m: &Matched) -> Vec<TicketId> {
    let mut ids: Vec<TicketId> = m.entries.iter().map(|e| e.ticket).collect();
    ids.dedup();
    ids.extend(m.backfill_ticket);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_goes_where_most_players_are_and_ties_to_the_least_loaded() {
        let loads: HashMap<String, u32> = [
            ("a".to_owned(), 500),
            ("b".to_owned(), 100),
            ("c".to_owned(), 100),
        ]
        .into();
        let counts: BTreeMap<&str, usize> = [("a", 3), ("b", 1)].into();
        assert_eq!(
            placement_node(&counts, &loads).as_deref(),
            Some("a"),
            "most players"
        );
        let counts: BTreeMap<&str, usize> = [("a", 2), ("b", 2)].into();
        assert_eq!(
            placement_node(&counts, &loads).as_deref(),
            Some("b"),
            "less loaded"
        );
        let counts: BTreeMap<&str, usize> = [("a", 2), ("c", 2), ("b", 2)].into();
        assert_eq!(
            placement_node(&counts, &loads).as_deref(),
            Some("b"),
            "then the name"
        );
        let counts: BTreeMap<&str, usize> = [("a", 2), ("z", 2)].into();
        assert_eq!(
            placement_node(&counts, &loads).as_deref(),
            Some("a"),
            "unknown load last"
        );
        assert_eq!(placement_node(&BTreeMap::new(), &loads), None);
    }
}
