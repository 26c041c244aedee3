//! The pass for tickets with roles or teams: their index by *kind*, and how a searching
//! ticket finds a group whose every team holds its composition exactly.
//!
//! A shaped ticket's *kind* is its vector (see `shape`): with a composition, how many of
//! its members hold each value; without, its member count. Tickets of one kind are
//! interchangeable for the teams, so the search works on kinds, not tickets:
//!
//! 1. **First fit over the ranked window.** The searcher's best-ranked candidates (the
//!    first [`RANKED_PREFIX_FACTOR`] × group size of its window, ranked by both sides'
//!    preferences as for every ticket) go, one by one, into the first team they fit,
//!    if they agree with everyone placed. When the pool is not tight this fills the
//!    teams at once, and preferences decide who plays.
//! 2. **A plan over kinds.** Otherwise, for each kind present among the searcher's
//!    candidate source (its smallest index bucket, as the window uses), the oldest
//!    eligible candidates of that kind, as many as the group could use; then a
//!    depth-first search over how many of each kind go to each team (kinds with older
//!    tickets tried first), and the tickets taken oldest first per kind, each agreeing
//!    with everyone placed. Looking per kind means a surplus of one kind at the front of
//!    the queue (say, many lone damage dealers and no healer) never hides the other
//!    kinds, and a searcher whose source cannot fill the teams gives up after looking at
//!    a few tickets per kind.
//!
//! Both steps are deterministic; the group is then balanced on the shape's numeric
//! property (see `shape::balance`).

use std::collections::{BTreeMap, HashMap};

use quicmatch_protocol::TicketId;

use super::{shape, vector, OrderKey, Pool, Shape, Ticket};

/// The ranked first fit looks at no more than this many times the group size of the
/// searcher's best-ranked candidates.
pub(super) const RANKED_PREFIX_FACTOR: usize = 8;

/// Steps the plan over kinds may take per team (a step is one node of its search).
const PLAN_STEPS_PER_TEAM: usize = 4096;

/// Where shaped tickets are found by kind: for each shape and candidate source (an exact
/// string property, or `None` for the whole pool), each kind's tickets, oldest first.
#[derive(Default)]
pub(super) struct KindIndex(HashMap<(Shape, Option<(String, String)>), Kinds>);

type Kinds = BTreeMap<Vec<usize>, BTreeMap<OrderKey, TicketId>>;

impl KindIndex {
    fn keys(t: &Ticket) -> Vec<(Shape, Option<(String, String)>)> {
        let Some(shape) = &t.spec.shape else {
            return Vec::new();
        };
        std::iter::once(None)
            .chain(
                t.spec
                    .properties
                    .strings
                    .iter()
                    .map(|(k, v)| Some((k.clone(), v.clone()))),
            )
            .map(|source| (shape.clone(), source))
            .collect()
    }

    pub(super) fn insert(&mut self, t: &Ticket) {
        let kind = vector(t);
        for key in Self::keys(t) {
            self.0
                .entry(key)
                .or_default()
                .entry(kind.clone())
                .or_default()
                .insert(t.key, t.id);
        }
    }

    pub(super) fn remove(&mut self, t: &Ticket) {
        let kind = vector(t);
        for key in Self::keys(t) {
            let Some(kinds) = self.0.get_mut(&key) else {
                continue;
            };
            if let Some(tickets) = kinds.get_mut(&kind) {
                tickets.remove(&t.key);
                if tickets.is_empty() {
                    kinds.remove(&kind);
                }
            }
            if kinds.is_empty() {
                self.0.remove(&key);
            }
        }
    }

    fn get(&self, shape: &Shape, source: Option<(&str, &str)>) -> Option<&Kinds> {
        // Owned keys for the lookup; one per search, not per candidate.
        let key = (
            shape.clone(),
            source.map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        self.0.get(&key)
    }
}

impl Pool {
    /// [`find_group`](Pool::find_group) for a ticket with roles or teams (see the module
    /// doc).
    pub(super) fn find_shaped_group(&self, t: &Ticket) -> Option<Vec<(TicketId, Option<u32>)>> {
        let shape = t.spec.shape.as_ref()?;
        let max_intervals = self.config.max_intervals;
        let mut window = self.window(t);
        let own = vector(t);
        for size in (t.spec.min_count..=t.spec.max_count).rev() {
            if size <= t.count() || !t.accepts(size, max_intervals) {
                continue;
            }
            let team_size = size / shape.teams;
            let per_team = shape.per_team(team_size);
            let mut fill = shape::Fill::new(shape.teams, &per_team);
            let Some(first) = fill.fits(&own) else {
                continue;
            };
            fill.place(first, &own);
            let mut chosen: Vec<(&Ticket, usize)> = vec![(t, first)];
            let prefix = size.saturating_mul(RANKED_PREFIX_FACTOR);
            let mut i = 0;
            while !fill.full() && i < prefix {
                let Some(c) = window.get(i) else { break };
                i += 1;
                if c.count() > team_size || !c.accepts(size, max_intervals) {
                    continue;
                }
                let v = vector(c);
                let Some(team) = fill.fits(&v) else { continue };
                if chosen[1..].iter().all(|(o, _)| self.compatible(o, c)) {
                    fill.place(team, &v);
                    chosen.push((c, team));
                }
            }
            if !fill.full() {
                match self.plan_by_kind(t, shape, size, &per_team, &own) {
                    Some(planned) => chosen = planned,
                    None => continue,
                }
            }
            return Some(self.balanced(shape, chosen));
        }
        None
    }

    /// Step 2 of the module doc: the group from the oldest eligible tickets of each
    /// kind, with the searcher in team 0.
    fn plan_by_kind<'a>(
        &'a self,
        t: &'a Ticket,
        shape: &Shape,
        size: usize,
        per_team: &[usize],
        own: &[usize],
    ) -> Option<Vec<(&'a Ticket, usize)>> {
        let source = match self.smallest_bucket(t) {
            Some((_, _, None)) => return None,
            Some((k, v, Some(_))) => Some((k, v)),
            None => None,
        };
        let kinds = self.kinds.get(shape, source)?;
        let max_intervals = self.config.max_intervals;
        let team_size = size / shape.teams;
        // What the teams need besides the searcher.
        let need: Vec<usize> = per_team
            .iter()
            .zip(own)
            .map(|(p, o)| p.saturating_mul(shape.teams).saturating_sub(*o))
            .collect();
        let mut lists: Vec<(&[usize], Vec<&Ticket>)> = Vec::new();
        for (kind, tickets) in kinds {
            // As many of this kind as the group could hold.
            let cap = kind
                .iter()
                .zip(&need)
                .filter(|(x, _)| **x > 0)
                .map(|(x, n)| n / x)
                .min()
                .unwrap_or(0);
            if cap == 0 {
                continue;
            }
            let mut list = Vec::new();
            for id in tickets.values().take(self.config.max_scan) {
                if list.len() == cap {
                    break;
                }
                let Some(c) = self.tickets.get(id) else {
                    continue;
                };
                if c.count() <= team_size
                    && c.accepts(size, max_intervals)
                    && self.eligible(t, id).is_some()
                {
                    list.push(c);
                }
            }
            if !list.is_empty() {
                lists.push((kind.as_slice(), list));
            }
        }
        // Kinds whose oldest ticket is oldest first: the plan prefers them.
        lists.sort_by_key(|(_, list)| list.first().map(|c| c.key));
        let kinds: Vec<(&[usize], usize)> = lists.iter().map(|(k, l)| (*k, l.len())).collect();
        let plan = shape::plan(
            &kinds,
            shape.teams,
            per_team,
            own,
            PLAN_STEPS_PER_TEAM * shape.teams,
        )?;
        let mut chosen: Vec<(&Ticket, usize)> = vec![(t, 0)];
        let mut next = vec![0usize; lists.len()];
        for (team, kinds) in plan.iter().enumerate() {
            for k in kinds {
                let list = &lists[*k].1;
                // The oldest not yet taken that agrees with everyone placed.
                let found = (next[*k]..list.len()).find(|j| {
                    chosen[1..]
                        .iter()
                        .all(|(o, _)| self.compatible(o, list[*j]))
                })?;
                chosen.push((list[found], team));
                next[*k] = found + 1;
            }
        }
        Some(chosen)
    }

    /// The group's tickets with their teams, after balancing when the shape asks.
    fn balanced(
        &self,
        shape: &Shape,
        chosen: Vec<(&Ticket, usize)>,
    ) -> Vec<(TicketId, Option<u32>)> {
        let mut placement: shape::Placement = (0..chosen.len()).map(|j| (j, chosen[j].1)).collect();
        if let Some(key) = &shape.balance {
            let vectors: Vec<Vec<usize>> = chosen.iter().map(|(c, _)| vector(c)).collect();
            let refs: Vec<&[usize]> = vectors.iter().map(Vec::as_slice).collect();
            let value: Vec<f64> = chosen
                .iter()
                .map(|(c, _)| {
                    c.spec.properties.numbers.get(key).copied().unwrap_or(0.0) * c.count() as f64
                })
                .collect();
            shape::balance(&mut placement, &refs, &value, shape.teams);
        }
        let teams = shape.teams > 1;
        placement
            .into_iter()
            .map(|(j, team)| {
                (
                    chosen[j].0.id,
                    teams.then(|| u32::try_from(team).unwrap_or(u32::MAX)),
                )
            })
            .collect()
    }
}
