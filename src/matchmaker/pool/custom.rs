//! Groups chosen by a custom processor: the pool as the processor sees it, and the
//! checks every group it returns must pass before it forms.
//!
//! A processor is game code, so its answer is checked like network input: every ticket
//! exists and is used at most once in the pass, no member is suspect, no session or
//! party appears twice, the group's size suits every ticket's counts (and teams and
//! composition, which the pool places and balances itself), and a backfill ticket gets
//! at least one and at most its seats' worth of players. A group that fails is not
//! formed, and the reason is returned; the others form.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use quicmatch_protocol::{MatchId, PartyId, Presence, TicketId};

use super::{clash, shape, vector, Matched, Pool, Ticket};
use crate::matchmaker::query::Properties;

/// One ticket as a custom processor sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PoolTicket {
    /// The ticket.
    pub ticket: TicketId,
    /// Its members (none for a backfill ticket).
    pub members: Vec<Presence>,
    /// The party it belongs to.
    pub party_id: Option<PartyId>,
    /// Its properties.
    pub properties: Properties,
    /// Its query's text (the fallback's, once it applies).
    pub query: String,
    /// Smallest acceptable group (for a backfill ticket, 1).
    pub min_count: usize,
    /// Largest acceptable group (for a backfill ticket, the seats still open).
    pub max_count: usize,
    /// Group sizes must be a multiple of this.
    pub count_multiple: usize,
    /// How long it has waited.
    pub age: Duration,
    /// Passes it has been through, this one included.
    pub passes: u32,
    /// The live match whose seats a backfill ticket fills.
    pub backfill: Option<MatchId>,
    /// Teams it asks for (1 when none).
    pub teams: usize,
}

/// A processor's group that did not form, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The group as returned.
    pub group: Vec<TicketId>,
    /// Why it was refused.
    pub reason: String,
}

impl Pool {
    /// Every ticket without a suspect member, oldest first, as a processor sees it at
    /// `now`.
    pub fn snapshot(&self, now: Instant) -> Vec<PoolTicket> {
        self.order
            .values()
            .filter_map(|id| self.tickets.get(id))
            .filter(|t| !self.has_suspect(t))
            .map(|t| PoolTicket {
                ticket: t.id,
                members: t.spec.members.clone(),
                party_id: t.spec.party_id,
                properties: t.spec.properties.clone(),
                query: t.spec.query.text().to_owned(),
                min_count: t.spec.min_count,
                max_count: t.spec.max_count,
                count_multiple: t.spec.count_multiple,
                age: now.saturating_duration_since(t.key.0),
                passes: t.intervals,
                backfill: t.spec.backfill,
                teams: t.spec.shape.as_ref().map_or(1, |s| s.teams),
            })
            .collect()
    }

    /// Starts a pass whose groups a processor chooses: counts it for every ticket and
    /// applies fallback queries, as [`process`](Self::process) does.
    pub fn begin_custom_pass(&mut self) -> Instant {
        self.begin_pass();
        Instant::now()
    }

    /// Forms the groups a processor chose (see the module doc), then ends the pass as
    /// [`process`](Self::process) does (expiry, stats).
    pub fn finish_custom_pass(
        &mut self,
        groups: Vec<Vec<TicketId>>,
        started: Instant,
        now: Instant,
    ) -> (Vec<Matched>, Vec<Rejected>) {
        let mut used: HashSet<TicketId> = HashSet::new();
        let mut formed = Vec::new();
        let mut rejected = Vec::new();
        for group in groups {
            match self.check(&group, &used) {
                Ok(teams) => {
                    used.extend(group.iter().copied());
                    formed.push(self.form(teams, now));
                }
                Err(reason) => rejected.push(Rejected { group, reason }),
            }
        }
        self.end_pass(started);
        (formed, rejected)
    }

    /// The group with each ticket's team, if it may form.
    fn check(
        &self,
        group: &[TicketId],
        used: &HashSet<TicketId>,
    ) -> Result<Vec<(TicketId, Option<u32>)>, String> {
        let mut tickets: Vec<&Ticket> = Vec::with_capacity(group.len());
        for id in group {
            if used.contains(id) || tickets.iter().any(|t| t.id == *id) {
                return Err(format!("ticket {id} is used twice"));
            }
            let t = self
                .tickets
                .get(id)
                .ok_or_else(|| format!("ticket {id} is not in the pool"))?;
            if self.has_suspect(t) {
                return Err(format!("ticket {id} has a member not heard from lately"));
            }
            tickets.push(t);
        }
        for (i, a) in tickets.iter().enumerate() {
            if let Some(b) = tickets[i + 1..].iter().find(|b| clash(a, b)) {
                return Err(format!(
                    "tickets {} and {} share a session or a party",
                    a.id, b.id
                ));
            }
        }
        let players: usize = tickets.iter().map(|t| t.count()).sum();
        let backfills: Vec<&&Ticket> = tickets
            .iter()
            .filter(|t| t.spec.backfill.is_some())
            .collect();
        match backfills.as_slice() {
            [] => {}
            [b] => {
                if players == 0 || players > b.spec.max_count {
                    return Err(format!(
                        "a backfill of {} seats got {players} players",
                        b.spec.max_count
                    ));
                }
                if tickets.iter().any(|t| t.spec.shape.is_some()) {
                    return Err("a backfill takes no tickets with roles or teams".into());
                }
                return Ok(group.iter().map(|id| (*id, None)).collect());
            }
            _ => return Err("a group holds at most one backfill ticket".into()),
        }
        if tickets.len() < 2 {
            return Err("a group is at least two tickets".into());
        }
        if let Some(t) = tickets.iter().find(|t| !t.spec.valid_size(players)) {
            return Err(format!(
                "a group of {players} does not suit ticket {} (counts {} to {}, multiple of {}{})",
                t.id,
                t.spec.min_count,
                t.spec.max_count,
                t.spec.count_multiple,
                if t.spec.shape.is_some() {
                    ", roles or teams"
                } else {
                    ""
                }
            ));
        }
        let Some(shape) = &tickets[0].spec.shape else {
            if tickets.iter().any(|t| t.spec.shape.is_some()) {
                return Err("tickets with and without roles or teams".into());
            }
            return Ok(group.iter().map(|id| (*id, None)).collect());
        };
        if tickets.iter().any(|t| t.spec.shape.as_ref() != Some(shape)) {
            return Err("tickets with different roles or teams".into());
        }
        let vectors: Vec<Vec<usize>> = tickets.iter().map(|t| vector(t)).collect();
        let refs: Vec<&[usize]> = vectors.iter().map(Vec::as_slice).collect();
        let per_team = shape.per_team(players / shape.teams);
        let search = shape::Search {
            vectors: &refs,
            teams: shape.teams,
            per_team: &per_team,
            max_steps: super::SEARCH_STEPS_PER_CANDIDATE
                .saturating_mul(tickets.len())
                .saturating_mul(shape.teams)
                .saturating_add(64),
        };
        let mut placement = search
            .place(|_, _| true)
            .ok_or("the tickets cannot be split into full teams")?;
        if let Some(key) = &shape.balance {
            let value: Vec<f64> = tickets
                .iter()
                .map(|t| {
                    t.spec.properties.numbers.get(key).copied().unwrap_or(0.0) * t.count() as f64
                })
                .collect();
            shape::balance(&mut placement, &refs, &value, shape.teams);
        }
        let teams = shape.teams > 1;
        Ok(placement
            .into_iter()
            .map(|(i, team)| {
                (
                    tickets[i].id,
                    teams.then(|| u32::try_from(team).unwrap_or(u32::MAX)),
                )
            })
            .collect())
    }
}
