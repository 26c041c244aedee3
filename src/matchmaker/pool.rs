//! The ticket pool and the grouping pass: pure data and logic, no I/O, no clock of its own.
//!
//! [`Pool::process`] is deterministic for the same pool and time, so tests assert exact
//! groups. Every ticket takes part in every pass (none is ever stranded): tickets are
//! visited oldest first, and each looks for a group of its own `max_count` among its
//! candidates; once it has been through `max_intervals` passes it also accepts the
//! largest valid smaller size. A size is valid for a group when every member accepts it
//! (its `min_count` to `max_count`, a multiple of its `count_multiple`, and its
//! `max_count` until it has waited `max_intervals` passes, unless min and max are equal).
//!
//! **Candidates.** A searching ticket's candidates are looked up through an index of
//! exact string properties (the smallest bucket among its query's required terms, or
//! every ticket), in age order. A candidate is eligible when it satisfies the searcher's
//! query and, when matching is `mutual`, accepts the searcher with its own query; it must
//! also share no session or party with the searcher, have a size range that overlaps the
//! searcher's, and have no suspect member. **Scan budget:** only eligible candidates
//! count toward [`PoolConfig::max_scan`], so a ticket whose query refuses the searcher
//! (or that the searcher refuses) is passed over without using the budget, and old
//! tickets that accept nobody cannot keep others apart. A search stops at `max_scan`
//! eligible candidates; or once it has looked at `max_scan` tickets and the eligible ones
//! hold enough players to fill its `max_count` (refusals only make it look further while
//! they leave it short); or at [`SCAN_CAP_FACTOR`] × `max_scan` tickets looked at in all.
//! Its *window* is the eligible candidates it found, so it always includes the eligible
//! ones among the first `max_scan` tickets of its bucket, and a pass costs
//! O(tickets × `max_scan`) at worst, O(tickets × group size) when groups fill from the
//! first candidates.
//!
//! **Ranking: both sides' preferences.** A window is ranked by `score_t(c) + score_c(t)`:
//! the searcher `t`'s query scored against candidate `c`'s properties plus `c`'s query
//! scored against `t`'s ([`Query::score`]: matched optional terms and boosts), best
//! first, then oldest first. A query whose score is the same for every ticket it matches
//! ([`Query::is_constant_score`], e.g. `*` or required terms only) states no preference
//! and counts 0, and so does a query that does not match (one-way matching only). So a
//! newer ticket that prefers the searcher comes before an older, indifferent one even
//! when the searcher itself is indifferent, which matters because the oldest tickets
//! search first. Searchers whose query ranks score their whole window. The others only
//! need the ranking tickets' opinions: those are kept in their own index (by the same
//! exact properties), scanned first with the same budget, and put ahead (or, for a
//! negative score, behind) of the rest, which is taken lazily in age order; with no
//! ranking ticket in the searcher's bucket nothing is scored at all.
//!
//! **Complete grouping.** For each size it accepts, largest (its `max_count`) first, the
//! searcher looks for a set of its candidates, solos and whole parties, that accept that
//! size and whose members add up to it together with its own: a subset-sum over party
//! sizes fed with the window in rank order (module `grouping`), not greedy filling.
//!
//! The guarantee: if some set of tickets in the searcher's window, pairwise compatible
//! (no session twice, a party never with itself, every pair satisfying each other's query
//! when `mutual`), makes a size valid for every member and the searcher, the searcher
//! forms a group this pass, of the largest such size. The search is exact but allowed
//! [`SEARCH_STEPS_PER_CANDIDATE`] steps per candidate and size; that allowance can only
//! cut it short when candidates clash with each other (with no clashing pair the search
//! needs at most 2 steps per candidate and never backtracks). Among the valid sets of a
//! size it takes the one whose worst-ranked member ranks best, then the lexicographically
//! earliest by rank, so with solos alone it takes the best-ranked (oldest) ones, as greedy
//! filling did. A group is at least two tickets.
//!
//! The pass is greedy across searchers: the oldest ticket's group is fixed before the
//! next ticket searches, so a later ticket only finds what earlier groups left.
//!
//! **Options** (module `options`). A ticket with roles (a composition) or teams only
//! groups with tickets of the same shape, and searches as module `shaped` says; its
//! group's tickets carry their teams. A fallback query replaces the ticket's query once
//! it has been through `fallback_after` passes; a ticket with `expires_after` that has
//! been through that many passes unmatched is cancelled at the end of the pass
//! ([`Pool::take_expired`]). A *backfill* ticket ([`TicketSpec::backfill`]) has no
//! members, only seats in a live match: it searches like a ticket (its candidates' own
//! counts aside), is never anyone's candidate, and stays until its seats are filled.
//! A custom processor replaces the searches with its own groups, which module `custom`
//! checks.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    ops::Bound,
    time::{Duration, Instant},
};

use quicmatch_protocol::{MatchId, PartyId, Presence, SessionId, TicketId};

use super::query::{Properties, Query};

mod custom;
mod grouping;
mod options;
mod shape;
mod shaped;

use grouping::SubsetSearch;

pub use custom::{PoolTicket, Rejected};
pub use options::{CompositionRule, Shape, TeamRule, TicketOptions};

/// How many recent completion times the stats keep.
const RECENT_COMPLETIONS: usize = 10;

/// A search looks at no more than this many times `max_scan` tickets, eligible or not
/// (see the module doc: it usually stops much earlier).
pub const SCAN_CAP_FACTOR: usize = 8;

/// Steps a search for one size may take per candidate (a step is one compatibility check
/// or one node of the subset search); with no clashing candidates it needs at most 2 per
/// candidate, so this only limits backtracking among clashing ones.
pub const SEARCH_STEPS_PER_CANDIDATE: usize = 8;

/// Where tickets are ordered: creation time, then insertion order.
type OrderKey = (Instant, u64);

/// Grouping rules and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Tickets one session (and one party) may have in the pool at once.
    pub max_tickets: usize,
    /// Passes a ticket waits for a group of its `max_count` before accepting less.
    pub max_intervals: u32,
    /// Every pair in a group must satisfy each other's query (`false`: only the
    /// searching ticket's query is checked, as in Nakama's default).
    pub mutual: bool,
    /// Eligible candidates (ones that could join: both queries agree, see the module doc)
    /// a ticket considers per pass. A search also stops after looking at this many
    /// tickets once it has enough players for a full group, and after
    /// [`SCAN_CAP_FACTOR`] times this in all. Bounds the cost of a pass.
    pub max_scan: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_tickets: 3,
            max_intervals: 2,
            mutual: true,
            max_scan: 2000,
        }
    }
}

/// The size rules of a ticket: any group size from `min_count` to `max_count` that is a
/// multiple of `count_multiple`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Smallest acceptable group, the ticket's own members included.
    pub min_count: usize,
    /// Largest acceptable group; the ticket waits for this size first.
    pub max_count: usize,
    /// Group sizes must be a multiple of this.
    pub count_multiple: usize,
}

/// Everything a new ticket needs; validated by [`TicketSpec::new`].
#[derive(Debug, Clone)]
pub struct TicketSpec {
    query: Query,
    min_count: usize,
    max_count: usize,
    count_multiple: usize,
    properties: Properties,
    party_id: Option<PartyId>,
    members: Vec<Presence>,
    /// Roles and teams; tickets group only with tickets of an equal shape.
    shape: Option<Shape>,
    /// With a composition: how many members hold each of its values, in its order.
    roles: Vec<usize>,
    /// The largest size the ticket accepts (what it waits for before relaxing).
    ideal: usize,
    /// A query that replaces `query` after this many passes.
    fallback: Option<(Query, u32)>,
    /// Passes after which the ticket is cancelled as expired.
    expires_after: Option<u32>,
    /// A backfill ticket's match; it has no members and its counts are seats.
    backfill: Option<MatchId>,
    /// What the ticket was made from, for a pool shared by a cluster's nodes.
    record: Option<std::sync::Arc<super::shared::TicketRecord>>,
}

/// Why a ticket could not be added or removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// A count, property or member list is out of range.
    #[error("{0}")]
    Invalid(String),
    /// A session or party already has `max_tickets` tickets.
    #[error("{0}")]
    TooManyTickets(String),
    /// No such ticket for this caller.
    #[error("matchmaker ticket not found")]
    NotFound,
}

impl TicketSpec {
    /// Checks counts, properties and members, with Nakama's rules plus ours: counts
    /// within `max_count_limit`, `count_multiple` dividing both counts, finite numbers,
    /// distinct sessions, and a party no larger than the ticket's `max_count`.
    pub fn new(
        query: Query,
        counts: Counts,
        properties: Properties,
        party_id: Option<PartyId>,
        members: Vec<Presence>,
        max_count_limit: usize,
    ) -> Result<Self, PoolError> {
        let Counts {
            min_count,
            max_count,
            count_multiple,
        } = counts;
        let invalid = |m: String| Err(PoolError::Invalid(m));
        if min_count < 2 {
            return invalid("min_count must be >= 2".into());
        }
        if max_count < min_count {
            return invalid("max_count must be >= min_count".into());
        }
        if max_count > max_count_limit {
            return invalid(format!("max_count must be <= {max_count_limit}"));
        }
        if count_multiple < 1 {
            return invalid("count_multiple must be >= 1".into());
        }
        if min_count % count_multiple != 0 || max_count % count_multiple != 0 {
            return invalid("count_multiple must divide min_count and max_count".into());
        }
        if properties.numbers.values().any(|v| !v.is_finite()) {
            return invalid("numeric properties must be finite".into());
        }
        if members.is_empty() {
            return invalid("a ticket needs at least one member".into());
        }
        if members.len() >= max_count {
            return invalid(format!(
                "a party of {} leaves no room for anyone else in a match of at most {max_count}",
                members.len()
            ));
        }
        let mut sessions: Vec<_> = members.iter().map(|m| m.session_id).collect();
        sessions.sort();
        sessions.dedup();
        if sessions.len() != members.len() {
            return invalid("a session appears twice in the ticket".into());
        }
        Ok(Self {
            query,
            min_count,
            max_count,
            count_multiple,
            properties,
            party_id,
            members,
            shape: None,
            roles: Vec::new(),
            ideal: max_count,
            fallback: None,
            expires_after: None,
            backfill: None,
            record: None,
        })
    }

    /// A backfill ticket: `seats` players wanted for the live match `match_id`, found
    /// with `query` (and, when matching is mutual, accepting `properties`). It is never
    /// a candidate of another ticket; candidates' own counts do not apply to it (the
    /// match's size is the server code's call), only that their players fit the seats.
    pub fn backfill(
        query: Query,
        properties: Properties,
        match_id: MatchId,
        seats: usize,
    ) -> Result<Self, PoolError> {
        if seats == 0 {
            return Err(PoolError::Invalid(
                "a backfill needs at least one seat".into(),
            ));
        }
        if properties.numbers.values().any(|v| !v.is_finite()) {
            return Err(PoolError::Invalid(
                "numeric properties must be finite".into(),
            ));
        }
        Ok(Self {
            query,
            min_count: 1,
            max_count: seats,
            count_multiple: 1,
            properties,
            party_id: None,
            members: Vec::new(),
            shape: None,
            roles: Vec::new(),
            ideal: seats,
            fallback: None,
            expires_after: None,
            backfill: Some(match_id),
            record: None,
        })
    }
}

impl TicketSpec {
    /// The spec with what it was made from, for sharing.
    pub(crate) fn with_record(mut self, record: super::shared::TicketRecord) -> Self {
        self.record = Some(std::sync::Arc::new(record));
        self
    }

    /// What the spec was made from, when it was made for sharing.
    pub(crate) fn record(&self) -> Option<&std::sync::Arc<super::shared::TicketRecord>> {
        self.record.as_ref()
    }
}

struct Ticket {
    id: TicketId,
    key: OrderKey,
    spec: TicketSpec,
    intervals: u32,
}

impl Ticket {
    fn count(&self) -> usize {
        self.spec.members.len()
    }

    fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.spec.members.iter().map(|m| m.session_id)
    }

    fn relaxed(&self, max_intervals: u32) -> bool {
        self.intervals >= max_intervals || self.spec.min_count == self.spec.max_count
    }

    /// Whether this ticket takes a group of `size` now.
    fn accepts(&self, size: usize, max_intervals: u32) -> bool {
        let s = &self.spec;
        s.valid_size(size) && (size == s.ideal || self.relaxed(max_intervals))
    }

    fn owner(&self) -> Option<SessionId> {
        match (self.spec.party_id, self.spec.members.as_slice()) {
            (None, [only]) => Some(only.session_id),
            _ => None,
        }
    }
}

/// One user of a formed group, as hooks and the matched event see it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MatchedEntry {
    /// The ticket the user was in.
    pub ticket: TicketId,
    /// Who.
    pub presence: Presence,
    /// The party the user was matched with, if any.
    pub party_id: Option<PartyId>,
    /// The ticket's properties.
    pub properties: Properties,
    /// The user's team (0-based) when the tickets asked for teams.
    pub team: Option<u32>,
}

/// A group formed by one pass.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Matched {
    /// Every user, grouped by ticket, the oldest ticket first.
    pub entries: Vec<MatchedEntry>,
    /// How long each ticket waited, in the same order as its first entry.
    pub waits: Vec<Duration>,
    /// The live match a backfill ticket filled seats of (the group joins it).
    pub backfill: Option<MatchId>,
    /// That backfill ticket.
    pub backfill_ticket: Option<TicketId>,
}

/// A ticket the server cancelled, and who must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    /// The ticket.
    pub ticket: TicketId,
    /// The member sessions still connected that held it.
    pub notify: Vec<SessionId>,
}

/// Pool size, ages and recent completions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    /// Tickets in the pool.
    pub tickets: usize,
    /// Age of the oldest ticket.
    pub oldest_ticket_age: Option<Duration>,
    /// How long recently matched tickets waited, newest last.
    pub recent_completions: Vec<Duration>,
    /// Duration of the last pass.
    pub last_pass: Duration,
    /// Passes run.
    pub passes: u64,
    /// Tickets matched in all.
    pub tickets_matched: u64,
    /// Groups formed in all.
    pub groups: u64,
}

/// The pool of waiting tickets.
pub struct Pool {
    config: PoolConfig,
    tickets: HashMap<TicketId, Ticket>,
    /// Every ticket, oldest first.
    order: BTreeMap<OrderKey, TicketId>,
    /// Tickets by exact string property, oldest first.
    buckets: Buckets,
    by_session: HashMap<SessionId, BTreeSet<TicketId>>,
    by_party: HashMap<PartyId, BTreeSet<TicketId>>,
    /// Tickets whose query ranks (its score is not constant), oldest first: a searcher
    /// whose own query does not rank scores these for their preference, and takes every
    /// other candidate lazily in age order.
    rankers: BTreeMap<OrderKey, TicketId>,
    /// The same tickets by exact string property, as `buckets`.
    ranker_buckets: Buckets,
    /// Sessions not heard from lately: their tickets sit out every pass.
    suspect: HashSet<SessionId>,
    next_seq: u64,
    recent: VecDeque<Duration>,
    stats: PoolStats,
    /// Tickets cancelled as expired by passes, until taken with
    /// [`Pool::take_expired`].
    expired: Vec<Cancelled>,
    /// Shaped tickets by shape, index bucket and kind (see `shaped`).
    kinds: shaped::KindIndex,
}

impl Pool {
    /// An empty pool.
    pub fn new(config: PoolConfig) -> Self {
        Self {
            config,
            tickets: HashMap::new(),
            order: BTreeMap::new(),
            buckets: Buckets::default(),
            by_session: HashMap::new(),
            by_party: HashMap::new(),
            rankers: BTreeMap::new(),
            ranker_buckets: Buckets::default(),
            suspect: HashSet::new(),
            next_seq: 0,
            recent: VecDeque::new(),
            stats: PoolStats::default(),
            expired: Vec::new(),
            kinds: shaped::KindIndex::default(),
        }
    }

    /// Tickets in the pool.
    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }

    /// Tickets a session is in (solo and party).
    pub fn session_tickets(&self, session: SessionId) -> usize {
        self.by_session.get(&session).map_or(0, BTreeSet::len)
    }

    /// The tickets made for sharing, with what each was made from.
    pub(crate) fn records(&self) -> Vec<(TicketId, std::sync::Arc<super::shared::TicketRecord>)> {
        self.tickets
            .values()
            .filter_map(|t| t.spec.record().map(|r| (t.id, r.clone())))
            .collect()
    }

    /// Whether the pool holds this ticket.
    pub fn contains(&self, ticket: TicketId) -> bool {
        self.tickets.contains_key(&ticket)
    }

    /// Takes a ticket out whoever owns it, naming every member to tell.
    pub fn forget(&mut self, ticket: TicketId) -> Option<Cancelled> {
        self.take(ticket).map(|t| Cancelled {
            ticket: t.id,
            notify: t.sessions().collect(),
        })
    }

    /// Puts in a ticket another node made, under its id, created at `created`: a
    /// mirror of a shared pool. No per-session limit applies (the ticket's node
    /// checked it); an id already here is left as it is.
    pub fn insert(&mut self, id: TicketId, spec: TicketSpec, created: Instant) {
        if self.tickets.contains_key(&id) {
            return;
        }
        self.place(id, spec, created);
    }

    /// Adds a ticket created at `now`.
    pub fn add(&mut self, spec: TicketSpec, now: Instant) -> Result<TicketId, PoolError> {
        let max = self.config.max_tickets;
        for m in &spec.members {
            if self.session_tickets(m.session_id) >= max {
                return Err(PoolError::TooManyTickets(format!(
                    "{} already has {max} matchmaker tickets",
                    if spec.members.len() == 1 {
                        "this session".to_owned()
                    } else {
                        format!("party member {}", m.username)
                    }
                )));
            }
        }
        if let Some(party) = spec.party_id {
            if self.by_party.get(&party).map_or(0, BTreeSet::len) >= max {
                return Err(PoolError::TooManyTickets(format!(
                    "the party already has {max} matchmaker tickets"
                )));
            }
        }
        let id = TicketId::new_random();
        self.place(id, spec, now);
        Ok(id)
    }

    fn place(&mut self, id: TicketId, spec: TicketSpec, now: Instant) {
        self.next_seq += 1;
        let key = (now, self.next_seq);
        self.buckets.insert(&spec.properties, key, id);
        for m in &spec.members {
            self.by_session.entry(m.session_id).or_default().insert(id);
        }
        if let Some(party) = spec.party_id {
            self.by_party.entry(party).or_default().insert(id);
        }
        if !spec.query.is_constant_score() {
            self.rankers.insert(key, id);
            self.ranker_buckets.insert(&spec.properties, key, id);
        }
        self.order.insert(key, id);
        let ticket = Ticket {
            id,
            key,
            spec,
            intervals: 0,
        };
        self.kinds.insert(&ticket);
        self.tickets.insert(id, ticket);
    }

    fn take(&mut self, id: TicketId) -> Option<Ticket> {
        let t = self.tickets.remove(&id)?;
        self.order.remove(&t.key);
        self.kinds.remove(&t);
        self.buckets.remove(&t.spec.properties, &t.key);
        if self.rankers.remove(&t.key).is_some() {
            self.ranker_buckets.remove(&t.spec.properties, &t.key);
        }
        for s in t.sessions() {
            if let Some(set) = self.by_session.get_mut(&s) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_session.remove(&s);
                }
            }
        }
        if let Some(p) = t.spec.party_id {
            if let Some(set) = self.by_party.get_mut(&p) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_party.remove(&p);
                }
            }
        }
        Some(t)
    }

    /// Removes a solo ticket owned by `session`.
    pub fn remove(&mut self, ticket: TicketId, session: SessionId) -> Result<(), PoolError> {
        match self.tickets.get(&ticket) {
            Some(t) if t.owner() == Some(session) => {
                self.take(ticket);
                Ok(())
            }
            _ => Err(PoolError::NotFound),
        }
    }

    /// Removes a party's ticket.
    pub fn remove_party_ticket(
        &mut self,
        party: PartyId,
        ticket: TicketId,
    ) -> Result<(), PoolError> {
        match self.tickets.get(&ticket) {
            Some(t) if t.spec.party_id == Some(party) => {
                self.take(ticket);
                Ok(())
            }
            _ => Err(PoolError::NotFound),
        }
    }

    /// Every backfill ticket with its match.
    pub fn backfills(&self) -> Vec<(TicketId, MatchId)> {
        self.tickets
            .values()
            .filter_map(|t| t.spec.backfill.map(|m| (t.id, m)))
            .collect()
    }

    /// Sets a backfill ticket's seats left, as the cluster's leader filled them (and its
    /// record, written again if this node rejoins its cluster); with none left it goes.
    pub(crate) fn set_backfill_seats(&mut self, ticket: TicketId, seats: u32) {
        let seats = usize::try_from(seats).unwrap_or(usize::MAX);
        let Some(t) = self.tickets.get_mut(&ticket) else {
            return;
        };
        if t.spec.backfill.is_none() {
            return;
        }
        // Seats only ever go down: results told late or twice, in any order, leave the
        // fewest.
        let seats = seats.min(t.spec.max_count);
        if seats == 0 {
            self.take(ticket);
            return;
        }
        t.spec.max_count = seats;
        t.spec.ideal = seats;
        if let Some(record) = t.spec.record.as_mut() {
            std::sync::Arc::make_mut(record).request.max_count =
                u32::try_from(seats).unwrap_or(u32::MAX);
        }
    }

    /// Removes a backfill ticket.
    pub fn remove_backfill(&mut self, ticket: TicketId) -> Result<(), PoolError> {
        match self.tickets.get(&ticket) {
            Some(t) if t.spec.backfill.is_some() => {
                self.take(ticket);
                Ok(())
            }
            _ => Err(PoolError::NotFound),
        }
    }

    /// Marks a session suspect, or clears the mark: a ticket with a suspect member is
    /// neither searched for nor offered as a candidate until the mark is cleared.
    pub fn set_suspect(&mut self, session: SessionId, suspect: bool) {
        if suspect {
            self.suspect.insert(session);
        } else {
            self.suspect.remove(&session);
        }
    }

    /// Sessions marked suspect.
    pub fn suspects(&self) -> usize {
        self.suspect.len()
    }

    /// Whether `session` is marked suspect.
    pub fn is_suspect(&self, session: SessionId) -> bool {
        self.suspect.contains(&session)
    }

    /// Every session marked suspect.
    pub fn suspect_sessions(&self) -> Vec<SessionId> {
        self.suspect.iter().copied().collect()
    }

    fn has_suspect(&self, t: &Ticket) -> bool {
        !self.suspect.is_empty() && t.sessions().any(|s| self.suspect.contains(&s))
    }

    /// Cancels every ticket `session` is in (it disconnected). The other members of
    /// cancelled party tickets are returned to be told.
    pub fn remove_session(&mut self, session: SessionId) -> Vec<Cancelled> {
        self.suspect.remove(&session);
        let ids = self.by_session.get(&session).cloned().unwrap_or_default();
        self.cancel(ids, Some(session))
    }

    /// Cancels every ticket of a party (its membership changed).
    pub fn remove_party(&mut self, party: PartyId) -> Vec<Cancelled> {
        let ids = self.by_party.get(&party).cloned().unwrap_or_default();
        self.cancel(ids, None)
    }

    /// Removes `ids`; every member session but `gone` is to be told.
    fn cancel(&mut self, ids: BTreeSet<TicketId>, gone: Option<SessionId>) -> Vec<Cancelled> {
        ids.into_iter()
            .filter_map(|id| self.take(id))
            .map(|t| Cancelled {
                ticket: t.id,
                notify: t.sessions().filter(|s| Some(*s) != gone).collect(),
            })
            .collect()
    }

    /// Statistics as of `now`.
    pub fn stats(&self, now: Instant) -> PoolStats {
        PoolStats {
            tickets: self.tickets.len(),
            oldest_ticket_age: self
                .order
                .keys()
                .next()
                .map(|(created, _)| now.saturating_duration_since(*created)),
            recent_completions: self.recent.iter().copied().collect(),
            ..self.stats.clone()
        }
    }

    /// Runs one grouping pass at `now` and removes the grouped tickets from the pool.
    /// Tickets whose `expires_after` passes are over and that did not match are then
    /// cancelled; take them with [`take_expired`](Self::take_expired).
    pub fn process(&mut self, now: Instant) -> Vec<Matched> {
        let started = Instant::now();
        self.begin_pass();
        let mut out = Vec::new();
        let mut cursor: Option<OrderKey> = None;
        loop {
            let next = match cursor {
                None => self.order.iter().next(),
                Some(c) => self
                    .order
                    .range((Bound::Excluded(c), Bound::Unbounded))
                    .next(),
            };
            let Some((key, id)) = next.map(|(k, id)| (*k, *id)) else {
                break;
            };
            cursor = Some(key);
            if let Some(group) = self.find_group(id) {
                out.push(self.form(group, now));
            }
        }
        self.end_pass(started);
        out
    }

    /// Counts the pass for every ticket and switches tickets whose `fallback_after`
    /// passes are over to their fallback query.
    fn begin_pass(&mut self) {
        let mut widened = Vec::new();
        for t in self.tickets.values_mut() {
            t.intervals = t.intervals.saturating_add(1);
            if t.spec
                .fallback
                .as_ref()
                .is_some_and(|(_, after)| t.intervals > *after)
            {
                widened.push(t.id);
            }
        }
        for id in widened {
            let Some(t) = self.tickets.get_mut(&id) else {
                continue;
            };
            let Some((query, _)) = t.spec.fallback.take() else {
                continue;
            };
            let ranked_before = !t.spec.query.is_constant_score();
            let ranks_now = !query.is_constant_score();
            t.spec.query = query;
            let (key, props) = (t.key, t.spec.properties.clone());
            if ranked_before && !ranks_now {
                self.rankers.remove(&key);
                self.ranker_buckets.remove(&props, &key);
            } else if ranks_now && !ranked_before {
                self.rankers.insert(key, id);
                self.ranker_buckets.insert(&props, key, id);
            }
        }
    }

    /// Cancels tickets whose `expires_after` passes are over, and records the pass.
    fn end_pass(&mut self, started: Instant) {
        let over: BTreeSet<TicketId> = self
            .tickets
            .values()
            .filter(|t| t.spec.expires_after.is_some_and(|n| t.intervals >= n))
            .map(|t| t.id)
            .collect();
        let expired = self.cancel(over, None);
        self.expired.extend(expired);
        self.stats.passes += 1;
        self.stats.last_pass = started.elapsed();
    }

    /// Tickets cancelled as expired since the last call, with every member to tell.
    pub fn take_expired(&mut self) -> Vec<Cancelled> {
        std::mem::take(&mut self.expired)
    }

    /// Removes a group's tickets (a backfill ticket only once its seats are all taken)
    /// and describes the group. Each entry is a ticket and its team.
    fn form(&mut self, group: Vec<(TicketId, Option<u32>)>, now: Instant) -> Matched {
        let mut backfill = None;
        let mut tickets: Vec<(Ticket, Option<u32>)> = Vec::new();
        for (id, team) in group {
            let Some(t) = self.tickets.get(&id) else {
                continue;
            };
            if let Some(match_id) = t.spec.backfill {
                backfill = Some((id, match_id));
                continue;
            }
            if let Some(t) = self.take(id) {
                tickets.push((t, team));
            }
        }
        let backfill_ticket = backfill.map(|(id, _)| id);
        let backfill = backfill.map(|(id, match_id)| {
            let players: usize = tickets.iter().map(|(t, _)| t.count()).sum();
            let full = self.tickets.get_mut(&id).is_some_and(|b| {
                b.spec.max_count = b.spec.max_count.saturating_sub(players);
                b.spec.ideal = b.spec.max_count;
                b.spec.max_count == 0
            });
            if full {
                self.take(id);
            }
            match_id
        });
        tickets.sort_by_key(|(t, _)| t.key);
        let mut entries = Vec::new();
        let mut waits = Vec::new();
        for (t, team) in &tickets {
            let wait = now.saturating_duration_since(t.key.0);
            waits.push(wait);
            if self.recent.len() == RECENT_COMPLETIONS {
                self.recent.pop_front();
            }
            self.recent.push_back(wait);
            for m in &t.spec.members {
                entries.push(MatchedEntry {
                    ticket: t.id,
                    presence: m.clone(),
                    party_id: t.spec.party_id,
                    properties: t.spec.properties.clone(),
                    team: *team,
                });
            }
        }
        self.stats.groups += 1;
        self.stats.tickets_matched += tickets.len() as u64;
        Matched {
            entries,
            waits,
            backfill,
            backfill_ticket,
        }
    }

    /// Whether `a` and `b` may be in one group: no shared session or party, and (when
    /// `mutual`) each satisfies the other's query.
    fn compatible(&self, a: &Ticket, b: &Ticket) -> bool {
        !clash(a, b)
            && (!self.config.mutual
                || (a.spec.query.matches(&b.spec.properties)
                    && b.spec.query.matches(&a.spec.properties)))
    }

    /// `t`'s window (see the module doc), best first: by `score_t(c) + score_c(t)`, then
    /// oldest first. When `t`'s query does not rank, the ranking tickets are looked at
    /// through their own index and the rest come lazily in age order.
    fn window<'a>(&'a self, t: &'a Ticket) -> Window<'a> {
        let smallest = self.smallest_bucket(t);
        // The tickets to look at, and the ranking ones among them.
        let (source, rankers): (Box<dyn Iterator<Item = &TicketId>>, _) = match smallest {
            Some((_, _, None)) => return Window::ready(Vec::new()),
            Some((k, v, Some(bucket))) => {
                (Box::new(bucket.values()), self.ranker_buckets.get(k, v))
            }
            None => (Box::new(self.order.values()), Some(&self.rankers)),
        };
        if !t.spec.query.is_constant_score() {
            let mut ranked: Vec<(&Ticket, f64)> = self.scan(t, source).collect();
            // Stable: equal ranks stay oldest first.
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            return Window::ready(ranked.into_iter().map(|(c, _)| c).collect());
        }
        let Some(rankers) = rankers.filter(|r| !r.is_empty()) else {
            // Nobody here ranks: every eligible candidate ranks 0, so age order.
            let in_age_order = self.scan(t, source).map(|(c, _)| c);
            return Window {
                items: Vec::new(),
                rest: Some(Box::new(in_age_order)),
            };
        };
        // Only ranking candidates can rank above or below 0 (their preference for `t`):
        // those go first (best first) or last; everyone else stays in age order.
        let mut ahead: Vec<(&Ticket, f64)> = Vec::new();
        let mut behind: Vec<(&Ticket, f64)> = Vec::new();
        for (c, rank) in self.scan(t, rankers.values()) {
            if rank > 0.0 {
                ahead.push((c, rank));
            } else if rank < 0.0 {
                behind.push((c, rank));
            }
        }
        ahead.sort_by(|a, b| b.1.total_cmp(&a.1));
        behind.sort_by(|a, b| b.1.total_cmp(&a.1));
        let placed: HashSet<TicketId> = ahead.iter().chain(&behind).map(|(c, _)| c.id).collect();
        let in_age_order = self
            .scan(t, source)
            .map(|(c, _)| c)
            .filter(move |c| !placed.contains(&c.id))
            .chain(behind.into_iter().map(|(c, _)| c));
        Window {
            items: ahead.into_iter().map(|(c, _)| c).collect(),
            rest: Some(Box::new(in_age_order)),
        }
    }

    /// The smallest index bucket among `t`'s required terms (`None`: it has none, so
    /// every ticket is a candidate; a `None` bucket: nobody holds that value).
    #[allow(clippy::type_complexity)]
    fn smallest_bucket<'a>(
        &'a self,
        t: &'a Ticket,
    ) -> Option<(&'a str, &'a str, Option<&'a BTreeMap<OrderKey, TicketId>>)> {
        t.spec
            .query
            .required_terms()
            .into_iter()
            .map(|(k, v)| (k, v, self.buckets.get(k, v)))
            .min_by_key(|(_, _, b)| b.map_or(0, BTreeMap::len))
    }

    /// The eligible candidates for `t` among `source`, with their ranks, in `source`'s
    /// order: until `max_scan` eligible ones, or [`SCAN_CAP_FACTOR`] × `max_scan` tickets
    /// looked at, or `max_scan` looked at once the eligible ones hold enough players to
    /// fill `t`'s `max_count`.
    fn scan<'a>(
        &'a self,
        t: &'a Ticket,
        source: impl Iterator<Item = &'a TicketId> + 'a,
    ) -> impl Iterator<Item = (&'a Ticket, f64)> + 'a {
        let max_scan = self.config.max_scan;
        let mut source = source.take(max_scan.saturating_mul(SCAN_CAP_FACTOR));
        let full = t.spec.max_count.saturating_sub(t.count());
        let (mut looked, mut found, mut players) = (0, 0, 0);
        std::iter::from_fn(move || loop {
            if found == max_scan || (looked >= max_scan && players >= full) {
                return None;
            }
            let id = source.next()?;
            looked += 1;
            if let Some((c, rank)) = self.eligible(t, id) {
                found += 1;
                players += c.count();
                return Some((c, rank));
            }
        })
    }

    /// Ticket `id` with its rank, if it is an eligible candidate for `t`: not `t`,
    /// no suspect member, no session or party in common, overlapping sizes, accepted by
    /// `t`'s query and (when `mutual`) accepting `t` with its own.
    fn eligible(&self, t: &Ticket, id: &TicketId) -> Option<(&Ticket, f64)> {
        let c = self.tickets.get(id)?;
        let sizes_apart = t.spec.backfill.is_none()
            && (c.spec.min_count > t.spec.max_count || c.spec.max_count < t.spec.min_count);
        if c.id == t.id
            || c.spec.backfill.is_some()
            || sizes_apart
            || c.spec.shape != t.spec.shape
            || self.has_suspect(c)
            || clash(t, c)
        {
            return None;
        }
        let mutual = self.config.mutual;
        let theirs = if mutual || !c.spec.query.is_constant_score() {
            c.spec.query.score(&t.spec.properties)
        } else {
            None
        };
        if mutual && theirs.is_none() {
            return None;
        }
        let ours = t.spec.query.score(&c.spec.properties)?;
        Some((
            c,
            preference(t, ours) + theirs.map_or(0.0, |s| preference(c, s)),
        ))
    }

    /// The group `id` forms this pass, if any, each ticket with its team: for each size
    /// it accepts, largest (its `max_count`) first, the best set of candidates that makes
    /// the size valid for every member (see the module doc and `grouping`; shaped
    /// tickets, `shape`).
    fn find_group(&self, id: TicketId) -> Option<Vec<(TicketId, Option<u32>)>> {
        let t = self.tickets.get(&id)?;
        if self.has_suspect(t) {
            return None;
        }
        if t.spec.shape.is_some() {
            return self.find_shaped_group(t);
        }
        let max_intervals = self.config.max_intervals;
        let backfill = t.spec.backfill.is_some();
        let mut window = self.window(t);
        for size in (t.spec.min_count..=t.spec.max_count).rev() {
            // A group is at least two tickets: a party alone is not a match. A backfill
            // ticket's sizes are the seats it fills, whatever the candidates' counts.
            if !backfill && (size <= t.count() || !t.accepts(size, max_intervals)) {
                continue;
            }
            let need = size - t.count();
            if window.players().is_some_and(|all| all < need) {
                continue;
            }
            let mut search = SubsetSearch::new(need, SEARCH_STEPS_PER_CANDIDATE);
            let mut members: Vec<&Ticket> = Vec::new();
            let mut i = 0;
            while let Some(c) = window.get(i) {
                i += 1;
                if c.count() > need || !(backfill || c.accepts(size, max_intervals)) {
                    continue;
                }
                members.push(c);
                let found = search.push(c.count(), |a, b| self.compatible(members[a], members[b]));
                if let Some(set) = found {
                    let mut group = vec![(t.id, None)];
                    group.extend(set.into_iter().map(|j| (members[j].id, None)));
                    return Some(group);
                }
                if search.exhausted() {
                    break;
                }
            }
        }
        None
    }
}

/// A ticket's vector for the team search: its members per composition value, or its
/// member count.
fn vector(t: &Ticket) -> Vec<usize> {
    match t.spec.shape.as_ref().and_then(|s| s.composition.as_ref()) {
        Some(_) => t.spec.roles.clone(),
        None => vec![t.count()],
    }
}

/// Tickets by exact string property: key -> value -> tickets, oldest first.
#[derive(Default)]
struct Buckets(HashMap<String, HashMap<String, BTreeMap<OrderKey, TicketId>>>);

impl Buckets {
    fn insert(&mut self, props: &Properties, key: OrderKey, id: TicketId) {
        for (k, v) in &props.strings {
            self.0
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(key, id);
        }
    }

    fn remove(&mut self, props: &Properties, key: &OrderKey) {
        for (k, v) in &props.strings {
            if let Some(values) = self.0.get_mut(k) {
                if let Some(set) = values.get_mut(v) {
                    set.remove(key);
                    if set.is_empty() {
                        values.remove(v);
                    }
                }
                if values.is_empty() {
                    self.0.remove(k);
                }
            }
        }
    }

    fn get(&self, k: &str, v: &str) -> Option<&BTreeMap<OrderKey, TicketId>> {
        self.0.get(k).and_then(|values| values.get(v))
    }
}

/// Whether `a` and `b` share a session or are the same party.
fn clash(a: &Ticket, b: &Ticket) -> bool {
    (a.spec.party_id.is_some() && a.spec.party_id == b.spec.party_id)
        || a.sessions().any(|s| b.sessions().any(|x| x == s))
}

/// What `score` (the ticket's query against another's properties) adds to a rank: 0 for
/// a query that scores every match the same.
fn preference(t: &Ticket, score: f64) -> f64 {
    if t.spec.query.is_constant_score() {
        0.0
    } else {
        score
    }
}

/// A searcher's ranked candidates, taken lazily from the index when they come in age
/// order.
struct Window<'a> {
    items: Vec<&'a Ticket>,
    rest: Option<Box<dyn Iterator<Item = &'a Ticket> + 'a>>,
}

impl<'a> Window<'a> {
    fn ready(items: Vec<&'a Ticket>) -> Self {
        Self { items, rest: None }
    }

    /// The `i`th candidate, if there are that many.
    fn get(&mut self, i: usize) -> Option<&'a Ticket> {
        while self.items.len() <= i {
            let next = self.rest.as_mut()?.next();
            match next {
                Some(c) => self.items.push(c),
                None => {
                    self.rest = None;
                    return None;
                }
            }
        }
        Some(self.items[i])
    }

    /// Players among all the candidates, once they are all known.
    fn players(&self) -> Option<usize> {
        self.rest
            .is_none()
            .then(|| self.items.iter().map(|c| c.count()).sum())
    }
}

#[cfg(test)]
mod tests;
