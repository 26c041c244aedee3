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

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    ops::Bound,
    time::{Duration, Instant},
};

use quicmatch_protocol::{PartyId, Presence, SessionId, TicketId};

use super::query::{Properties, Query};

mod grouping;

use grouping::SubsetSearch;

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
        })
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
        s.min_count <= size
            && size <= s.max_count
            && size % s.count_multiple == 0
            && (size == s.max_count || self.relaxed(max_intervals))
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
pub struct MatchedEntry {
    /// The ticket the user was in.
    pub ticket: TicketId,
    /// Who.
    pub presence: Presence,
    /// The party the user was matched with, if any.
    pub party_id: Option<PartyId>,
    /// The ticket's properties.
    pub properties: Properties,
}

/// A group formed by one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    /// Every user, grouped by ticket, the oldest ticket first.
    pub entries: Vec<MatchedEntry>,
    /// How long each ticket waited, in the same order as its first entry.
    pub waits: Vec<Duration>,
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
        self.tickets.insert(
            id,
            Ticket {
                id,
                key,
                spec,
                intervals: 0,
            },
        );
        Ok(id)
    }

    fn take(&mut self, id: TicketId) -> Option<Ticket> {
        let t = self.tickets.remove(&id)?;
        self.order.remove(&t.key);
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
    pub fn process(&mut self, now: Instant) -> Vec<Matched> {
        let started = Instant::now();
        for t in self.tickets.values_mut() {
            t.intervals = t.intervals.saturating_add(1);
        }
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
                out.push(self.form(&group, now));
            }
        }
        self.stats.passes += 1;
        self.stats.last_pass = started.elapsed();
        out
    }

    fn form(&mut self, group: &[TicketId], now: Instant) -> Matched {
        let mut tickets: Vec<Ticket> = group.iter().filter_map(|id| self.take(*id)).collect();
        tickets.sort_by_key(|t| t.key);
        let mut entries = Vec::new();
        let mut waits = Vec::new();
        for t in &tickets {
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
                });
            }
        }
        self.stats.groups += 1;
        self.stats.tickets_matched += tickets.len() as u64;
        Matched { entries, waits }
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
        let smallest = t
            .spec
            .query
            .required_terms()
            .into_iter()
            .map(|(k, v)| (k, v, self.buckets.get(k, v)))
            .min_by_key(|(_, _, b)| b.map_or(0, BTreeMap::len));
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
        if c.id == t.id
            || c.spec.min_count > t.spec.max_count
            || c.spec.max_count < t.spec.min_count
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

    /// The group `id` forms this pass, if any: for each size it accepts, largest (its
    /// `max_count`) first, the best set of candidates that makes the size valid for every
    /// member (see the module doc and `grouping`).
    fn find_group(&self, id: TicketId) -> Option<Vec<TicketId>> {
        let t = self.tickets.get(&id)?;
        if self.has_suspect(t) {
            return None;
        }
        let max_intervals = self.config.max_intervals;
        let mut window = self.window(t);
        for size in (t.spec.min_count..=t.spec.max_count).rev() {
            // A group is at least two tickets: a party alone is not a match.
            if size <= t.count() || !t.accepts(size, max_intervals) {
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
                if c.count() > need || !c.accepts(size, max_intervals) {
                    continue;
                }
                members.push(c);
                let found = search.push(c.count(), |a, b| self.compatible(members[a], members[b]));
                if let Some(set) = found {
                    let mut group = vec![t.id];
                    group.extend(set.into_iter().map(|j| members[j].id));
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
mod tests {
    use super::*;
    use quicmatch_protocol::UserId;

    struct Fixture {
        pool: Pool,
        t0: Instant,
        n: u64,
    }

    fn presence(n: u64) -> Presence {
        Presence {
            user_id: UserId(uuid::Uuid::from_u128(u128::from(n))),
            session_id: SessionId(uuid::Uuid::from_u128(u128::from(n))),
            username: format!("p{n}"),
        }
    }

    struct Add<'a> {
        query: &'a str,
        min: usize,
        max: usize,
        multiple: usize,
        strings: Vec<(&'a str, &'a str)>,
        numbers: Vec<(&'a str, f64)>,
        party: Option<PartyId>,
        members: usize,
        session: Option<u64>,
    }

    fn add(min: usize, max: usize) -> Add<'static> {
        Add {
            query: "*",
            min,
            max,
            multiple: 1,
            strings: vec![],
            numbers: vec![],
            party: None,
            members: 1,
            session: None,
        }
    }

    impl<'a> Add<'a> {
        fn query(mut self, q: &'a str) -> Self {
            self.query = q;
            self
        }
        fn multiple(mut self, m: usize) -> Self {
            self.multiple = m;
            self
        }
        fn s(mut self, k: &'a str, v: &'a str) -> Self {
            self.strings.push((k, v));
            self
        }
        fn n(mut self, k: &'a str, v: f64) -> Self {
            self.numbers.push((k, v));
            self
        }
        fn party(mut self, size: usize) -> Self {
            self.party = Some(PartyId::new_random());
            self.members = size;
            self
        }
        fn session(mut self, s: u64) -> Self {
            self.session = Some(s);
            self
        }
    }

    impl Fixture {
        fn new(config: PoolConfig) -> Self {
            Self {
                pool: Pool::new(config),
                t0: Instant::now(),
                n: 0,
            }
        }

        fn with_intervals(max_intervals: u32) -> Self {
            Self::new(PoolConfig {
                max_intervals,
                ..PoolConfig::default()
            })
        }

        /// Adds a ticket one "second" after the previous one.
        fn add(&mut self, a: Add<'_>) -> TicketId {
            self.try_add(a).expect("add")
        }

        fn try_add(&mut self, a: Add<'_>) -> Result<TicketId, PoolError> {
            let members = (0..a.members)
                .map(|_| {
                    self.n += 1;
                    presence(a.session.unwrap_or(self.n))
                })
                .collect();
            let props = Properties {
                strings: a
                    .strings
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
                numbers: a.numbers.iter().map(|(k, v)| ((*k).into(), *v)).collect(),
            };
            let spec = TicketSpec::new(
                Query::parse(a.query).expect("query"),
                Counts {
                    min_count: a.min,
                    max_count: a.max,
                    count_multiple: a.multiple,
                },
                props,
                a.party,
                members,
                256,
            )?;
            let at = self.t0 + Duration::from_secs(self.n);
            self.pool.add(spec, at)
        }

        fn process(&mut self) -> Vec<Vec<TicketId>> {
            let now = self.t0 + Duration::from_secs(10_000);
            self.pool
                .process(now)
                .into_iter()
                .map(|m| {
                    let mut ids: Vec<TicketId> = m.entries.iter().map(|e| e.ticket).collect();
                    ids.dedup();
                    ids
                })
                .collect()
        }
    }

    #[test]
    fn exact_sizes_form_at_once() {
        let mut f = Fixture::with_intervals(2);
        let a = f.add(add(2, 2));
        let b = f.add(add(2, 2));
        let c = f.add(add(2, 2));
        assert_eq!(f.process(), vec![vec![a, b]]);
        assert_eq!(f.pool.len(), 1);
        let d = f.add(add(2, 2));
        assert_eq!(f.process(), vec![vec![c, d]]);
        assert!(f.pool.is_empty());
    }

    #[test]
    fn ideal_size_first_then_relaxation() {
        let mut f = Fixture::with_intervals(3);
        let ids: Vec<_> = (0..3).map(|_| f.add(add(2, 4))).collect();
        assert!(f.process().is_empty(), "pass 1 waits for 4");
        assert!(f.process().is_empty(), "pass 2 waits for 4");
        assert_eq!(f.process(), vec![ids.clone()], "pass 3 accepts 3");
    }

    #[test]
    fn a_full_group_forms_before_relaxation() {
        let mut f = Fixture::with_intervals(3);
        let ids: Vec<_> = (0..5).map(|_| f.add(add(2, 4))).collect();
        assert_eq!(f.process(), vec![ids[..4].to_vec()], "the 4 oldest");
        assert!(f.process().is_empty());
        assert!(
            f.process().is_empty(),
            "the last one cannot reach min 2 alone"
        );
        assert_eq!(f.pool.len(), 1);
    }

    #[test]
    fn count_multiple_leaves_the_newest_out() {
        let mut f = Fixture::with_intervals(1);
        let ids: Vec<_> = (0..23).map(|_| f.add(add(5, 25).multiple(5))).collect();
        let groups = f.process();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0], ids[..20].to_vec(), "20 oldest, 3 newest left");
        assert_eq!(f.pool.len(), 3);
    }

    #[test]
    fn parties_fill_a_group_and_are_never_split() {
        let mut f = Fixture::with_intervals(1);
        let p5 = f.add(add(10, 10).party(5));
        let p3 = f.add(add(10, 10).party(3));
        let s1 = f.add(add(10, 10));
        let s2 = f.add(add(10, 10));
        let groups = f.process();
        assert_eq!(groups, vec![vec![p5, p3, s1, s2]]);
        // A party of 4 with 5 singles for a group of 8: the party plus the 4 oldest.
        let mut f = Fixture::with_intervals(1);
        let singles: Vec<_> = (0..5).map(|_| f.add(add(8, 8))).collect();
        let party = f.add(add(8, 8).party(4));
        let groups = f.process();
        assert_eq!(groups.len(), 1);
        let mut expected = singles[..4].to_vec();
        expected.push(party);
        assert_eq!(groups[0], expected);
        // A party that would overflow is skipped, not split: 3 + 3 cannot make 4.
        let mut f = Fixture::with_intervals(1);
        f.add(add(4, 4).party(3));
        f.add(add(4, 4).party(3));
        assert!(f.process().is_empty());
    }

    #[test]
    fn a_party_never_meets_itself() {
        let mut f = Fixture::with_intervals(1);
        let party = PartyId::new_random();
        let mut a = add(2, 4).party(2);
        a.party = Some(party);
        let mut b = add(2, 4).party(2);
        b.party = Some(party);
        f.add(a);
        f.add(b);
        assert!(f.process().is_empty());
    }

    #[test]
    fn parties_larger_than_max_are_rejected() {
        let mut f = Fixture::with_intervals(1);
        assert!(matches!(
            f.try_add(add(2, 4).party(4)),
            Err(PoolError::Invalid(_))
        ));
        assert!(f.try_add(add(2, 4).party(3)).is_ok());
    }

    #[test]
    fn one_session_never_twice_in_a_group() {
        let mut f = Fixture::with_intervals(1);
        let a = f.add(add(2, 2).session(1));
        f.add(add(2, 2).session(1));
        assert!(f.process().is_empty());
        let c = f.add(add(2, 2).session(2));
        let groups = f.process();
        assert_eq!(
            groups,
            vec![vec![a, c]],
            "the oldest of the session's tickets is used"
        );
        assert_eq!(f.pool.len(), 1, "the session's other ticket stays");
    }

    #[test]
    fn mutual_queries_are_required() {
        let mut f = Fixture::with_intervals(1);
        // a wants eu; b is eu but wants rank >= 10, a has rank 5.
        f.add(
            add(2, 2)
                .query("+properties.region:eu")
                .s("region", "eu")
                .n("rank", 5.0),
        );
        f.add(
            add(2, 2)
                .query("+properties.rank:>=10")
                .s("region", "eu")
                .n("rank", 20.0),
        );
        assert!(f.process().is_empty());
        // One-way mode (Nakama's default) matches them: the searcher's query suffices.
        let mut f = Fixture::new(PoolConfig {
            mutual: false,
            max_intervals: 1,
            ..PoolConfig::default()
        });
        let a = f.add(
            add(2, 2)
                .query("+properties.region:eu")
                .s("region", "eu")
                .n("rank", 5.0),
        );
        let b = f.add(
            add(2, 2)
                .query("+properties.rank:>=10")
                .s("region", "eu")
                .n("rank", 20.0),
        );
        assert_eq!(f.process(), vec![vec![a, b]]);
    }

    #[test]
    fn every_pair_in_a_group_must_agree() {
        let mut f = Fixture::with_intervals(1);
        let a = f.add(add(3, 3).query("properties.x:*").s("x", "1"));
        // b refuses c, so the group of three is a, b and d.
        let b = f.add(
            add(3, 3)
                .query("-properties.name:c")
                .s("x", "1")
                .s("name", "b"),
        );
        f.add(add(3, 3).s("x", "1").s("name", "c"));
        let d = f.add(add(3, 3).s("x", "1").s("name", "d"));
        assert_eq!(f.process(), vec![vec![a, b, d]]);
    }

    #[test]
    fn numeric_range_boundaries_are_inclusive_or_exclusive_as_written() {
        let mut f = Fixture::with_intervals(1);
        let a = f.add(
            add(2, 2)
                .query("+properties.rank:>=10 +properties.rank:<20")
                .n("rank", 15.0),
        );
        f.add(add(2, 2).n("rank", 20.0));
        let c = f.add(add(2, 2).n("rank", 10.0));
        assert_eq!(f.process(), vec![vec![a, c]]);
    }

    #[test]
    fn should_terms_and_boosts_rank_above_age() {
        let mut f = Fixture::with_intervals(1);
        let a = f.add(
            add(2, 2)
                .query("+properties.mode:ranked properties.region:eu^5 properties.lang:de")
                .s("mode", "ranked"),
        );
        f.add(add(2, 2).s("mode", "ranked").s("region", "us"));
        f.add(add(2, 2).s("mode", "ranked").s("lang", "de"));
        let eu = f.add(add(2, 2).s("mode", "ranked").s("region", "eu"));
        assert_eq!(f.process()[0], vec![a, eu]);
    }

    #[test]
    fn oldest_first_among_equals() {
        let mut f = Fixture::with_intervals(1);
        let ids: Vec<_> = (0..6).map(|_| f.add(add(3, 3))).collect();
        assert_eq!(f.process(), vec![ids[..3].to_vec(), ids[3..].to_vec()]);
    }

    #[test]
    fn no_ticket_is_stranded() {
        // Nakama strands a(2-3) with b(3-4), c(3-4): here they meet once b and c relax.
        let mut f = Fixture::with_intervals(2);
        let a = f.add(add(2, 3));
        let b = f.add(add(3, 4));
        let c = f.add(add(3, 4));
        assert!(
            f.process().is_empty(),
            "pass 1: everyone waits for their max"
        );
        assert_eq!(f.process(), vec![vec![a, b, c]]);
        // Tickets that finished waiting keep matching in later passes.
        let mut f = Fixture::with_intervals(1);
        let x = f.add(add(2, 4));
        for _ in 0..5 {
            assert!(f.process().is_empty());
        }
        let y = f.add(add(2, 4));
        assert_eq!(f.process(), vec![vec![x, y]]);
    }

    #[test]
    fn max_tickets_per_session_and_party() {
        let mut f = Fixture::new(PoolConfig {
            max_tickets: 2,
            ..PoolConfig::default()
        });
        f.add(add(2, 2).session(9));
        let second = f.add(add(2, 2).session(9));
        assert!(matches!(
            f.try_add(add(2, 2).session(9)),
            Err(PoolError::TooManyTickets(_))
        ));
        f.pool
            .remove(second, presence(9).session_id)
            .expect("remove");
        f.add(add(2, 2).session(9));
        assert_eq!(
            f.pool.remove(second, presence(9).session_id),
            Err(PoolError::NotFound)
        );
    }

    #[test]
    fn cancellation_by_session_and_party() {
        let mut f = Fixture::with_intervals(1);
        let party = f.add(add(2, 4).party(3));
        let solo = f.add(add(2, 4));
        let member = presence(1).session_id;
        let cancelled = f.pool.remove_session(member);
        assert_eq!(cancelled.len(), 1);
        assert_eq!(cancelled[0].ticket, party);
        assert_eq!(
            cancelled[0].notify.len(),
            2,
            "the two other members are told"
        );
        assert_eq!(f.pool.len(), 1);
        assert!(f.pool.remove_party(PartyId::new_random()).is_empty());
        let _ = solo;
    }

    #[test]
    fn validation_messages() {
        let mut f = Fixture::with_intervals(1);
        for (a, msg) in [
            (add(1, 2), "min_count must be >= 2"),
            (add(3, 2), "max_count must be >= min_count"),
            (add(2, 300), "max_count must be <="),
            (add(2, 4).multiple(0), "count_multiple must be >= 1"),
            (add(2, 5).multiple(2), "must divide"),
            (add(2, 2).n("x", f64::NAN), "finite"),
        ] {
            match f.try_add(a) {
                Err(PoolError::Invalid(m)) => assert!(m.contains(msg), "{m}"),
                other => panic!("expected {msg}, got {other:?}"),
            }
        }
    }

    #[test]
    fn process_is_deterministic() {
        let build = || {
            let mut f = Fixture::with_intervals(1);
            for i in 0..40 {
                let region = ["eu", "us"][i % 2];
                f.add(
                    add(2, 4)
                        .query("+properties.region:eu properties.rank:>5")
                        .s("region", region)
                        .n("rank", (i % 10) as f64),
                );
            }
            f
        };
        let shape = |f: &mut Fixture| -> Vec<usize> { f.process().iter().map(Vec::len).collect() };
        let mut a = build();
        let mut b = build();
        assert_eq!(shape(&mut a), shape(&mut b));
    }

    #[test]
    fn stats_report_pool_and_completions() {
        let mut f = Fixture::with_intervals(1);
        f.add(add(2, 2));
        f.add(add(2, 2));
        f.add(add(2, 2));
        let now = f.t0 + Duration::from_secs(100);
        assert_eq!(
            f.pool.stats(now).oldest_ticket_age,
            Some(Duration::from_secs(99))
        );
        f.pool.process(now);
        let stats = f.pool.stats(now);
        assert_eq!(stats.tickets, 1);
        assert_eq!(
            stats.recent_completions,
            vec![Duration::from_secs(99), Duration::from_secs(98)]
        );
        assert_eq!(stats.groups, 1);
        assert_eq!(stats.tickets_matched, 2);
        assert_eq!(stats.passes, 1);
    }

    #[test]
    fn parties_complete_a_group_solos_cannot() {
        // Greedy filling from the oldest solo takes s1, s2 and one party (5 of 6) and is
        // stuck; the two parties alone make 6.
        let mut f = Fixture::with_intervals(1);
        let s1 = f.add(add(6, 6));
        let s2 = f.add(add(6, 6));
        let p1 = f.add(add(6, 6).party(3));
        let p2 = f.add(add(6, 6).party(3));
        assert_eq!(f.process(), vec![vec![p1, p2]]);
        assert_eq!(f.pool.len(), 2);
        assert!(f.pool.tickets.contains_key(&s1) && f.pool.tickets.contains_key(&s2));
        for _ in 0..3 {
            assert!(f.process().is_empty(), "1 + 1 never makes 6");
        }
        // And a solo with a party of 2 and a party of 3 skips the first solo.
        let mut f = Fixture::with_intervals(1);
        let a = f.add(add(6, 6));
        f.add(add(6, 6).party(4));
        let b = f.add(add(6, 6).party(2));
        let c = f.add(add(6, 6).party(3));
        assert_eq!(f.process(), vec![vec![a, b, c]]);
    }

    #[test]
    fn count_multiple_with_parties_reaches_the_full_size() {
        // Sizes 2, 4 or 6. Greedy filling for a reaches 5 (a, b, the 2, c), cannot fit
        // the 3, and fell back to 4; the subset-sum finds a + b + c + 3 = 6.
        let mut f = Fixture::with_intervals(1);
        let a = f.add(add(2, 6).multiple(2));
        let b = f.add(add(2, 6).multiple(2));
        let p2 = f.add(add(2, 6).multiple(2).party(2));
        let c = f.add(add(2, 6).multiple(2));
        let p3 = f.add(add(2, 6).multiple(2).party(3));
        assert_eq!(f.process(), vec![vec![a, b, c, p3]]);
        assert!(
            f.pool.tickets.contains_key(&p2),
            "the party of 2 alone is no match"
        );
        // Multiples of 4 from parties of 3 and solos: 3 + 1 = 4 or 3 + 3 + 1 + 1 = 8,
        // and a full 8 is preferred.
        let mut f = Fixture::with_intervals(1);
        let x = f.add(add(4, 8).multiple(4).party(3));
        let y = f.add(add(4, 8).multiple(4).party(3));
        let s1 = f.add(add(4, 8).multiple(4));
        let s2 = f.add(add(4, 8).multiple(4));
        assert_eq!(f.process(), vec![vec![x, y, s1, s2]]);
    }

    #[test]
    fn relaxation_with_parties_takes_the_largest_valid_size() {
        // s1 (max 6) with a party of 3 makes 4 and with a party of 4 makes 5; 6 is out of
        // reach. Greedy collection (s1, the 3, no room for the 4) settled for 4.
        let mut f = Fixture::with_intervals(2);
        let s1 = f.add(add(4, 6));
        let p3 = f.add(add(4, 6).party(3));
        let p4 = f.add(add(4, 6).party(4));
        assert!(f.process().is_empty(), "pass 1 waits for 6");
        assert_eq!(f.process(), vec![vec![s1, p4]]);
        assert!(f.pool.tickets.contains_key(&p3));
        // Before relaxing, smaller sizes the parties make exactly (3, 4, 5) wait; once
        // relaxed, the largest of them.
        let mut f = Fixture::with_intervals(3);
        let a = f.add(add(3, 6).party(2));
        let b = f.add(add(3, 6).party(2));
        let c = f.add(add(3, 6));
        assert!(f.process().is_empty());
        assert!(f.process().is_empty());
        assert_eq!(f.process(), vec![vec![a, b, c]], "pass 3: 5");
    }

    #[test]
    fn clashing_parties_fall_back_to_the_next_best_set() {
        // 3 + 2 = 5 would complete t's 6, but the 2 refuses the 3: 3 + 1 + 1 instead.
        let mut f = Fixture::with_intervals(1);
        let t = f.add(add(6, 6));
        let p3 = f.add(add(6, 6).party(3).s("name", "p3"));
        let q2 = f.add(add(6, 6).party(2).query("-properties.name:p3"));
        let s1 = f.add(add(6, 6));
        let s2 = f.add(add(6, 6));
        assert_eq!(f.process(), vec![vec![t, p3, s1, s2]]);
        assert!(f.pool.tickets.contains_key(&q2));
    }

    #[test]
    fn the_candidates_preference_counts_too() {
        // b is indifferent (`*`), so by age alone it would take a. x, newer than a,
        // prefers ranked players: x's opinion of b (2: ok and ranked) beats a's (0).
        let mut f = Fixture::with_intervals(1);
        let b = f.add(add(2, 2).s("mode", "ranked").s("ok", "y"));
        let a = f.add(add(2, 2).s("mode", "casual").s("ok", "y"));
        let x = f.add(
            add(2, 2)
                .query("+properties.ok:y properties.mode:ranked")
                .s("ok", "y"),
        );
        assert_eq!(f.process(), vec![vec![b, x]]);
        assert!(f.pool.tickets.contains_key(&a));
        // Both sides add up: the searcher's weak preference for c (1) loses to d's
        // stronger one for the searcher (2 + 0).
        let mut f = Fixture::with_intervals(1);
        let s = f.add(
            add(2, 2)
                .query("properties.side:c properties.side:d^0.5")
                .s("mode", "ranked"),
        );
        let c = f.add(add(2, 2).s("side", "c"));
        let d = f.add(
            add(2, 2)
                .query("properties.mode:ranked^2 properties.mode:*")
                .s("side", "d"),
        );
        assert_eq!(f.process(), vec![vec![s, d]]);
        assert!(f.pool.tickets.contains_key(&c));
        // A searcher looking in a bucket (eu) hears the ranking tickets of that bucket,
        // however far down the age order, and none from elsewhere.
        let mut f = Fixture::with_intervals(1);
        let eu = |a: Add<'static>| a.query("+properties.region:eu").s("region", "eu");
        let searcher = f.add(eu(add(2, 2)).s("lang", "de"));
        let older: Vec<_> = (0..5).map(|_| f.add(eu(add(2, 2)))).collect();
        let fan = f.add(
            add(2, 2)
                .query("+properties.region:eu properties.lang:de")
                .s("region", "eu"),
        );
        assert_eq!(f.pool.rankers.len(), 1);
        let groups = f.process();
        assert_eq!(groups[0], vec![searcher, fan]);
        assert_eq!(groups[1..], [older[..2].to_vec(), older[2..4].to_vec()]);
        assert!(f.pool.rankers.is_empty() && f.pool.ranker_buckets.0.is_empty());
    }

    #[test]
    fn tickets_that_refuse_the_searcher_do_not_use_its_scan() {
        // Ten old tickets accept nobody; with max_scan 3 they used to fill the window of
        // every ticket that searched the whole pool.
        let config = |max_scan| PoolConfig {
            max_intervals: 1,
            max_scan,
            ..PoolConfig::default()
        };
        let mut f = Fixture::new(config(3));
        for _ in 0..10 {
            f.add(add(2, 2).query("+properties.never:y"));
        }
        let a = f.add(add(2, 2));
        let b = f.add(add(2, 2));
        assert_eq!(f.process(), vec![vec![a, b]]);
        assert_eq!(f.pool.len(), 10);
        // Work stays bounded: past SCAN_CAP_FACTOR × max_scan tickets looked at, the
        // search stops even though nothing eligible was found.
        let mut f = Fixture::new(config(3));
        for _ in 0..SCAN_CAP_FACTOR * 3 {
            f.add(add(2, 2).query("+properties.never:y"));
        }
        f.add(add(2, 2));
        f.add(add(2, 2));
        assert!(f.process().is_empty());
    }

    #[test]
    fn same_input_same_groups() {
        let build = || {
            let mut f = Fixture::with_intervals(1);
            let mut ids = Vec::new();
            for i in 0..60usize {
                let region = ["eu", "us", "asia"][i % 3];
                let query = [
                    "*",
                    "+properties.region:eu properties.rank:>5",
                    "properties.region:us^2 properties.region:asia",
                    "-properties.rank:<3",
                ][i % 4];
                let mut a = add(2 + i % 3, 4 + i % 3)
                    .query(query)
                    .s("region", region)
                    .n("rank", (i * 7 % 10) as f64);
                if i % 5 == 0 {
                    a = a.party(1 + i % 3);
                }
                ids.push(f.add(a));
            }
            let mut groups = Vec::new();
            for _ in 0..3 {
                for g in f.process() {
                    let index = |id: &TicketId| ids.iter().position(|x| x == id);
                    groups.push(g.iter().map(index).collect::<Vec<_>>());
                }
            }
            groups
        };
        let first = build();
        assert!(first.len() > 5, "{first:?}");
        assert_eq!(first, build());
    }

    mod property {
        use super::*;
        use proptest::prelude::*;

        /// (party size, min, max, multiple), already valid.
        type Shape = (usize, usize, usize, usize);

        fn shape() -> impl Strategy<Value = Shape> {
            (1usize..=3, 2usize..=6, 2usize..=6, 1usize..=2).prop_map(|(party, x, y, m)| {
                let (mut lo, mut hi) = (x.min(y), x.max(y));
                if m == 2 {
                    lo += lo % 2;
                    hi -= hi % 2;
                    hi = hi.max(lo);
                }
                (party.min(hi - 1), lo, hi, m)
            })
        }

        fn accepts(&(_, lo, hi, m): &Shape, size: usize) -> bool {
            lo <= size && size <= hi && size % m == 0
        }

        /// The largest size of a valid group of at least two of `members` (indices into
        /// `shapes`), that holds `must` when given.
        fn best(shapes: &[Shape], members: &[usize], must: Option<usize>) -> Option<usize> {
            let mut best = None;
            for mask in 1u32..(1 << members.len()) {
                let group: Vec<usize> = (0..members.len())
                    .filter(|i| mask >> i & 1 == 1)
                    .map(|i| members[i])
                    .collect();
                if group.len() < 2 || must.is_some_and(|m| !group.contains(&m)) {
                    continue;
                }
                let size = group.iter().map(|&i| shapes[i].0).sum();
                if group.iter().all(|&i| accepts(&shapes[i], size)) {
                    best = best.max(Some(size));
                }
            }
            best
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// All `*` queries, every size acceptable at once (max_intervals 1): if any
            /// valid group holds the oldest ticket, the pass groups it, at the largest
            /// such size; every group formed is valid; and what is left holds no valid
            /// group at all.
            #[test]
            fn the_oldest_ticket_is_grouped_whenever_it_can_be(
                shapes in proptest::collection::vec(shape(), 1..=10)
            ) {
                let mut f = Fixture::with_intervals(1);
                let ids: Vec<TicketId> = shapes
                    .iter()
                    .map(|&(party, lo, hi, m)| {
                        let a = add(lo, hi).multiple(m);
                        f.add(if party > 1 { a.party(party) } else { a })
                    })
                    .collect();
                let all: Vec<usize> = (0..shapes.len()).collect();
                let expected = best(&shapes, &all, Some(0));
                let groups = f.process();
                let index = |id: &TicketId| ids.iter().position(|x| x == id).expect("known");
                let mut grouped = vec![false; shapes.len()];
                let mut oldest = None;
                for g in &groups {
                    let members: Vec<usize> = g.iter().map(index).collect();
                    let size: usize = members.iter().map(|&i| shapes[i].0).sum();
                    prop_assert!(members.len() >= 2);
                    for &i in &members {
                        prop_assert!(accepts(&shapes[i], size), "{members:?} of {size}");
                        prop_assert!(!grouped[i]);
                        grouped[i] = true;
                    }
                    if members.contains(&0) {
                        oldest = Some(size);
                    }
                }
                prop_assert_eq!(oldest, expected);
                let left: Vec<usize> = all.into_iter().filter(|&i| !grouped[i]).collect();
                prop_assert_eq!(best(&shapes, &left, None), None, "left: {:?}", left);
            }
        }
    }
}
