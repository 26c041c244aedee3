//! The ticket pool and the grouping pass: pure data and logic, no I/O, no clock of its own.
//!
//! [`Pool::process`] is deterministic for the same pool and time, so tests assert exact
//! groups. Every ticket takes part in every pass (none is ever stranded): tickets are
//! visited oldest first, and each looks for a group of its own `max_count` among the
//! tickets its query accepts; once it has been through `max_intervals` passes it also
//! accepts the largest valid smaller size. Candidates are looked up through an index of
//! exact string properties (the smallest bucket among the query's required terms), taken
//! in age order (or by score, then age, when the query ranks), and each scan is bounded,
//! so a pass costs about O(tickets × group size), never a scan of every pair.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    ops::Bound,
    time::{Duration, Instant},
};

use quicmatch_protocol::{PartyId, Presence, SessionId, TicketId};

use super::query::{Properties, Query};

/// How many recent completion times the stats keep.
const RECENT_COMPLETIONS: usize = 10;

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
    /// Candidates examined per ticket per pass; bounds the cost of a pass.
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
    /// Tickets by exact string property: key -> value -> tickets, oldest first.
    buckets: HashMap<String, HashMap<String, BTreeSet<OrderKey>>>,
    by_session: HashMap<SessionId, BTreeSet<TicketId>>,
    by_party: HashMap<PartyId, BTreeSet<TicketId>>,
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
            buckets: HashMap::new(),
            by_session: HashMap::new(),
            by_party: HashMap::new(),
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
        for (k, v) in &spec.properties.strings {
            self.buckets
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(key);
        }
        for m in &spec.members {
            self.by_session.entry(m.session_id).or_default().insert(id);
        }
        if let Some(party) = spec.party_id {
            self.by_party.entry(party).or_default().insert(id);
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
        for (k, v) in &t.spec.properties.strings {
            if let Some(values) = self.buckets.get_mut(k) {
                if let Some(set) = values.get_mut(v) {
                    set.remove(&t.key);
                    if set.is_empty() {
                        values.remove(v);
                    }
                }
                if values.is_empty() {
                    self.buckets.remove(k);
                }
            }
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

    /// Whether `c` can join a group already holding `group` (sessions, parties, queries).
    fn compatible(&self, c: &Ticket, group: &[&Ticket]) -> bool {
        group.iter().all(|g| {
            let party_clash = c.spec.party_id.is_some() && c.spec.party_id == g.spec.party_id;
            let session_clash = c.sessions().any(|s| g.sessions().any(|x| x == s));
            !party_clash
                && !session_clash
                && (!self.config.mutual
                    || (g.spec.query.matches(&c.spec.properties)
                        && c.spec.query.matches(&g.spec.properties)))
        })
    }

    /// Tickets `t`'s query accepts, best first: by score when its query ranks, then
    /// oldest first. At most `max_scan` tickets are examined.
    fn candidates<'a>(&'a self, t: &'a Ticket) -> Box<dyn Iterator<Item = &'a Ticket> + 'a> {
        let source: Box<dyn Iterator<Item = &OrderKey>> = match t
            .spec
            .query
            .required_terms()
            .into_iter()
            .map(|(k, v)| self.buckets.get(k).and_then(|vals| vals.get(v)))
            .min_by_key(|b| b.map_or(0, BTreeSet::len))
        {
            Some(None) => return Box::new(std::iter::empty()),
            Some(Some(bucket)) => Box::new(bucket.iter()),
            None => Box::new(self.order.keys()),
        };
        let mutual = self.config.mutual;
        let scored = source
            .take(self.config.max_scan)
            .filter_map(|k| self.order.get(k).and_then(|id| self.tickets.get(id)))
            .filter(move |c| {
                c.id != t.id
                    && !self.has_suspect(c)
                    && c.spec.min_count <= t.spec.max_count
                    && c.spec.max_count >= t.spec.min_count
                    && (!mutual || c.spec.query.matches(&t.spec.properties))
            })
            .filter_map(move |c| t.spec.query.score(&c.spec.properties).map(|s| (s, c)));
        if t.spec.query.is_constant_score() {
            return Box::new(scored.map(|(_, c)| c));
        }
        let mut ranked: Vec<(f64, &Ticket)> = scored.collect();
        // Stable sort on score alone keeps age order among equal scores.
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        Box::new(ranked.into_iter().map(|(_, c)| c))
    }

    /// The group `id` forms this pass, if any: its own `max_count` first, then (once it
    /// has waited `max_intervals` passes) the largest size every member accepts.
    fn find_group(&self, id: TicketId) -> Option<Vec<TicketId>> {
        let t = self.tickets.get(&id)?;
        if self.has_suspect(t) {
            return None;
        }
        let max_intervals = self.config.max_intervals;
        let target = t.spec.max_count;
        if t.accepts(target, max_intervals) {
            let mut group = vec![t];
            let mut size = t.count();
            for c in self.candidates(t) {
                if size + c.count() <= target
                    && c.accepts(target, max_intervals)
                    && self.compatible(c, &group)
                {
                    size += c.count();
                    group.push(c);
                    if size == target {
                        return Some(group.iter().map(|g| g.id).collect());
                    }
                }
            }
        }
        if !t.relaxed(max_intervals) {
            return None;
        }
        // Collect compatible candidates up to max_count, then find the largest size that
        // every member accepts, keeping the best-ranked (oldest) tickets.
        let mut pool = vec![t];
        let mut total = t.count();
        for c in self.candidates(t) {
            if total + c.count() <= target && self.compatible(c, &pool) {
                total += c.count();
                pool.push(c);
                if total == target {
                    break;
                }
            }
        }
        for size in (t.spec.min_count..=total).rev() {
            if !t.accepts(size, max_intervals) {
                continue;
            }
            let mut chosen = vec![t.id];
            let mut sum = t.count();
            for c in &pool[1..] {
                if sum + c.count() <= size && c.accepts(size, max_intervals) {
                    sum += c.count();
                    chosen.push(c.id);
                }
            }
            // A group is at least two tickets: a party alone is not a match.
            if sum == size && chosen.len() >= 2 {
                return Some(chosen);
            }
        }
        None
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
}
