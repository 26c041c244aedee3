//! The matchmaker: tickets, the query language, grouping, and signed match tokens.
//!
//! - [`query`]: parse and evaluate queries (pure).
//! - [`pool`]: the ticket pool and `process(now)` (pure, deterministic).
//! - [`token`]: signed, expiring match tokens.
//!
//! [`Matchmaker`] is the shared handle sessions use: it validates requests, runs the
//! before-add hook, and delivers each pass's groups. A background task runs a pass every
//! `matchmaker.interval` on a blocking thread.

pub mod pool;
pub mod query;
pub mod token;

mod custom;
pub(crate) mod shared;

use std::{
    sync::{atomic::AtomicBool, Arc, Mutex, MutexGuard},
    time::Instant,
};

use quicmatch_protocol::{
    envelope::{Event, MatchmakerMatched, MatchmakerUser},
    frame::EventBody,
    ErrorCode, MatchId, MatchmakerAdd, MatchmakerMatchedTeams, MatchmakerOptions, PartyId,
    Presence, SessionId, TicketId, UserId, MAX_COMPOSITION_VALUES, MAX_PROPERTIES,
    MAX_PROPERTY_KEY_LEN, MAX_PROPERTY_VALUE_LEN, MAX_QUERY_LEN,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use self::{
    pool::{
        Cancelled, CompositionRule, Counts, Matched, Pool, PoolConfig, PoolError, PoolStats,
        TeamRule, TicketOptions, TicketSpec,
    },
    query::{Properties, Query},
    token::MatchToken,
};
use crate::{
    auth::{unix_now, Secret},
    config::MatchmakerConfig,
    handlers::ApiError,
    hooks::{Hooks, MatchedContext, MatchmakerAddRequest},
    matches::MatchTable,
    session::SessionRegistry,
};

/// Cheap-clone handle to the matchmaker.
#[derive(Clone)]
pub struct Matchmaker {
    inner: Arc<Inner>,
}

struct Inner {
    /// One lock over the pool. Held for adds, removals and a whole pass (which runs on a
    /// blocking thread), never across an `.await`.
    pool: Mutex<Pool>,
    config: MatchmakerConfig,
    sessions: SessionRegistry,
    matches: MatchTable,
    runtime: crate::runtime::Runtime,
    secret: Secret,
    hooks: Hooks,
    /// A custom processor's call has not returned yet (it may have timed out).
    processor_busy: AtomicBool,
    /// The cluster's pool, when this node's tickets are shared through one.
    shared: std::sync::OnceLock<Arc<dyn shared::SharedPool>>,
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        let code = match e {
            PoolError::Invalid(_) => ErrorCode::BAD_INPUT,
            PoolError::TooManyTickets(_) => ErrorCode::LIMIT_EXCEEDED,
            PoolError::NotFound => ErrorCode::TICKET_NOT_FOUND,
        };
        Self::new(code, e.to_string())
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BAD_INPUT, message)
}

/// Checks the sizes of a request's query and properties before anything is parsed.
fn check_limits(req: &MatchmakerAddRequest) -> Result<(), ApiError> {
    if req.query.len() > MAX_QUERY_LEN {
        return Err(bad(format!("query longer than {MAX_QUERY_LEN} bytes")));
    }
    let count = req.string_properties.len() + req.numeric_properties.len();
    if count > MAX_PROPERTIES {
        return Err(bad(format!("more than {MAX_PROPERTIES} properties")));
    }
    let keys = req
        .string_properties
        .keys()
        .chain(req.numeric_properties.keys());
    for k in keys {
        if k.is_empty() || k.len() > MAX_PROPERTY_KEY_LEN {
            return Err(bad(format!(
                "property keys must be 1 to {MAX_PROPERTY_KEY_LEN} bytes"
            )));
        }
    }
    if req
        .string_properties
        .values()
        .any(|v| v.len() > MAX_PROPERTY_VALUE_LEN)
    {
        return Err(bad(format!(
            "string property values must be at most {MAX_PROPERTY_VALUE_LEN} bytes"
        )));
    }
    if let Some(k) = req
        .string_properties
        .keys()
        .find(|k| req.numeric_properties.contains_key(*k))
    {
        return Err(bad(format!("property {k:?} is both a string and a number")));
    }
    Ok(())
}

/// A client's request as the before-add hook sees it.
fn hook_request(request: MatchmakerAdd) -> MatchmakerAddRequest {
    MatchmakerAddRequest {
        query: request.query,
        min_count: request.min_count,
        max_count: request.max_count,
        count_multiple: request.count_multiple.unwrap_or(1),
        string_properties: request.string_properties,
        numeric_properties: request.numeric_properties,
    }
}

fn pool_config(config: &MatchmakerConfig) -> PoolConfig {
    PoolConfig {
        max_tickets: config.max_tickets,
        max_intervals: config.max_intervals,
        mutual: config.mutual,
        max_scan: config.max_scan,
    }
}

impl Matchmaker {
    pub(crate) fn new(
        config: MatchmakerConfig,
        sessions: SessionRegistry,
        matches: MatchTable,
        runtime: crate::runtime::Runtime,
        secret: Secret,
        hooks: Hooks,
    ) -> Self {
        let pool = Pool::new(pool_config(&config));
        Self {
            inner: Arc::new(Inner {
                pool: Mutex::new(pool),
                config,
                sessions,
                matches,
                runtime,
                secret,
                hooks,
                processor_busy: AtomicBool::new(false),
                shared: std::sync::OnceLock::new(),
            }),
        }
    }

    /// How often passes run (`matchmaker.interval`).
    pub(crate) fn interval(&self) -> std::time::Duration {
        self.inner.config.interval
    }

    fn pool_config(&self) -> PoolConfig {
        pool_config(&self.inner.config)
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.inner.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates a request (after the before-add hook) and its options into a ticket
    /// spec for `members`.
    pub(crate) fn spec(
        &self,
        caller: &Presence,
        request: MatchmakerAdd,
        options: MatchmakerOptions,
        party_id: Option<PartyId>,
        members: Vec<Presence>,
    ) -> Result<TicketSpec, ApiError> {
        let mut req = hook_request(request);
        check_limits(&req)?;
        // Bad options are refused before the hook runs, as they always were.
        self.options(options.clone())?;
        if let Some(hook) = &self.inner.hooks.before_matchmaker_add {
            req = hook(caller, req)
                .map_err(|m| ApiError::new(ErrorCode::RUNTIME_FUNCTION_EXCEPTION, m))?;
            check_limits(&req)?;
        }
        let request = MatchmakerAdd {
            query: req.query,
            min_count: req.min_count,
            max_count: req.max_count,
            count_multiple: Some(req.count_multiple),
            string_properties: req.string_properties,
            numeric_properties: req.numeric_properties,
        };
        self.build_spec(request, options, party_id, members)
    }

    /// The spec of a request the before-add hook has seen, with its record for a
    /// shared pool.
    fn build_spec(
        &self,
        request: MatchmakerAdd,
        options: MatchmakerOptions,
        party_id: Option<PartyId>,
        members: Vec<Presence>,
    ) -> Result<TicketSpec, ApiError> {
        let record = self.shared().is_some().then(|| shared::TicketRecord {
            request: request.clone(),
            options: options.clone(),
            party_id,
            members: members.clone(),
            backfill: None,
        });
        let req = hook_request(request);
        check_limits(&req)?;
        let options = self.options(options)?;
        let query = Query::parse(&req.query).map_err(|e| bad(e.to_string()))?;
        let to_usize = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        let spec = TicketSpec::new(
            query,
            Counts {
                min_count: to_usize(req.min_count),
                max_count: to_usize(req.max_count),
                count_multiple: to_usize(req.count_multiple),
            },
            Properties {
                strings: req.string_properties,
                numbers: req.numeric_properties,
            },
            party_id,
            members,
            self.inner.config.max_count,
        )?
        .with_options(options)?;
        Ok(match record {
            Some(record) => spec.with_record(record),
            None => spec,
        })
    }

    /// Checks the sizes of a request's options and parses its fallback query.
    fn options(&self, o: MatchmakerOptions) -> Result<TicketOptions, ApiError> {
        let to_usize = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        let composition = match o.composition {
            None => None,
            Some(c) => {
                if c.counts.len() > MAX_COMPOSITION_VALUES {
                    return Err(bad(format!(
                        "a composition counts at most {MAX_COMPOSITION_VALUES} values"
                    )));
                }
                if c.counts
                    .keys()
                    .any(|v| v.is_empty() || v.len() > MAX_PROPERTY_VALUE_LEN || v.contains(','))
                {
                    return Err(bad(format!(
                        "composition values must be 1 to {MAX_PROPERTY_VALUE_LEN} bytes, without commas"
                    )));
                }
                Some(CompositionRule {
                    property: c.property,
                    counts: c
                        .counts
                        .into_iter()
                        .map(|(k, n)| (k, to_usize(n)))
                        .collect(),
                })
            }
        };
        let fallback = match o.fallback_query {
            None => None,
            Some(q) => {
                if q.len() > MAX_QUERY_LEN {
                    return Err(bad(format!(
                        "fallback query longer than {MAX_QUERY_LEN} bytes"
                    )));
                }
                let query = Query::parse(&q).map_err(|e| bad(format!("fallback query: {e}")))?;
                Some((query, o.fallback_after))
            }
        };
        Ok(TicketOptions {
            composition,
            teams: o.teams.map(|t| TeamRule {
                count: to_usize(t.count),
                balance: t.balance_property,
            }),
            fallback,
            expires_after: o.expires_after,
        })
    }

    /// Adds a solo ticket for `caller`.
    pub(crate) fn add(
        &self,
        caller: &Presence,
        request: MatchmakerAdd,
        options: MatchmakerOptions,
    ) -> Result<TicketId, ApiError> {
        let spec = self.spec(caller, request, options, None, vec![caller.clone()])?;
        self.add_spec(spec)
    }

    /// Adds a party ticket holding every member.
    pub(crate) fn add_party(&self, spec: TicketSpec) -> Result<TicketId, ApiError> {
        self.add_spec(spec)
    }

    fn add_spec(&self, spec: TicketSpec) -> Result<TicketId, ApiError> {
        self.check_shared()?;
        let record = spec.record().cloned();
        let mut pool = self.pool();
        let ticket = pool.add(spec, Instant::now())?;
        // Queued under the lock, so a removal that follows is queued after it.
        self.share_added(ticket, record);
        Ok(ticket)
    }

    /// Cancels one of `session`'s own solo tickets.
    pub(crate) fn remove(&self, session: SessionId, ticket: TicketId) -> Result<(), ApiError> {
        self.pool().remove(ticket, session)?;
        self.share_removed(vec![ticket]);
        Ok(())
    }

    /// Cancels one of a party's tickets.
    pub(crate) fn remove_party_ticket(
        &self,
        party: PartyId,
        ticket: TicketId,
    ) -> Result<(), ApiError> {
        self.pool().remove_party_ticket(party, ticket)?;
        self.share_removed(vec![ticket]);
        Ok(())
    }

    /// Cancels every ticket of a session that disconnected, telling the other members
    /// of its party tickets.
    pub(crate) fn remove_session(&self, session: SessionId) {
        let (cancelled, was_suspect) = {
            let mut pool = self.pool();
            let was_suspect = pool.is_suspect(session);
            (pool.remove_session(session), was_suspect)
        };
        // Its tickets leave the shared pool before the mark that kept them out of it.
        self.share_removed(cancelled.iter().map(|c| c.ticket).collect());
        if was_suspect {
            self.share_suspected(session, false);
        }
        self.announce(cancelled, "a party member disconnected");
    }

    /// Marks a session suspect (not heard from lately: its tickets are skipped by every
    /// pass) or clears the mark.
    pub(crate) fn set_suspect(&self, session: SessionId, suspect: bool) {
        let changed = {
            let mut pool = self.pool();
            let changed = pool.is_suspect(session) != suspect;
            pool.set_suspect(session, suspect);
            changed
        };
        if changed {
            self.share_suspected(session, suspect);
        }
    }

    /// Sessions marked suspect.
    pub fn suspects(&self) -> usize {
        self.pool().suspects()
    }

    /// Cancels every ticket of a party whose membership changed, telling every member.
    pub(crate) fn remove_party(&self, party: PartyId, reason: &str) {
        let cancelled = self.pool().remove_party(party);
        self.share_removed(cancelled.iter().map(|c| c.ticket).collect());
        self.announce(cancelled, reason);
    }

    fn announce(&self, cancelled: Vec<Cancelled>, reason: &str) {
        for c in cancelled {
            let frame = EventBody::encode(&Event::MatchmakerTicketCancelled {
                ticket: c.ticket,
                reason: reason.to_owned(),
            });
            let Ok(frame) = frame else { continue };
            for s in c.notify {
                if let Some(handle) = self.inner.sessions.reach(s) {
                    handle.push_event(&frame);
                }
            }
        }
    }

    /// Pool size, ages, and recent completion times.
    pub fn stats(&self) -> PoolStats {
        self.pool().stats(Instant::now())
    }

    /// Runs one pass now and delivers its groups; returns how many formed.
    pub fn process(&self, now: Instant) -> usize {
        self.drop_dead_backfills();
        let (matched, stats) = match &self.inner.hooks.matchmaker_processor {
            None => {
                let mut pool = self.pool();
                let matched = pool.process(now);
                (matched, pool.stats(now))
            }
            Some(processor) => self.custom_pass(processor.clone(), now),
        };
        let expired = self.pool().take_expired();
        if !expired.is_empty() {
            metrics::counter!("quicmatch_matchmaker_expired_total").increment(expired.len() as u64);
            self.announce(expired, "expired");
        }
        self.record_pass(&matched, &stats);
        let groups = matched.len();
        for m in matched {
            self.deliver(m);
        }
        groups
    }

    /// A pass's metrics and log line.
    fn record_pass(&self, matched: &[Matched], stats: &PoolStats) {
        let groups = matched.len();
        metrics::histogram!("quicmatch_matchmaker_pass_seconds")
            .record(stats.last_pass.as_secs_f64());
        let tickets: usize = matched.iter().map(|m| m.waits.len()).sum();
        metrics::counter!("quicmatch_matchmaker_matched_total").increment(tickets as u64);
        if groups > 0 {
            info!(
                groups,
                pool = stats.tickets,
                pass_ms = stats.last_pass.as_secs_f64() * 1000.0,
                "matchmaker pass"
            );
        } else {
            debug!(pool = stats.tickets, pass_ms = stats.last_pass.as_secs_f64() * 1000.0, oldest = ?stats.oldest_ticket_age, "matchmaker pass");
        }
    }

    fn deliver(&self, m: Matched) {
        let (token, match_id) = self.match_for(&m);
        let (users, teams) = Self::users_of(&m);
        let tickets: Vec<TicketId> = m.entries.iter().map(|e| e.ticket).collect();
        self.push_matched(&users, &tickets, &teams, &token, match_id, |_| true);
    }

    /// A group's users, in its order, and its teams when it has them.
    fn users_of(m: &Matched) -> (Vec<MatchmakerUser>, Option<Vec<u32>>) {
        let users: Vec<MatchmakerUser> = m
            .entries
            .iter()
            .map(|e| MatchmakerUser {
                presence: e.presence.clone(),
                party_id: e.party_id,
                string_properties: e.properties.strings.clone(),
                numeric_properties: e.properties.numbers.clone(),
            })
            .collect();
        let teams: Option<Vec<u32>> = m.entries.iter().map(|e| e.team).collect();
        (users, teams)
    }

    /// Tells each user of a group whose ticket `deliver` selects, where its session
    /// is on this node.
    fn push_matched(
        &self,
        users: &[MatchmakerUser],
        tickets: &[TicketId],
        teams: &Option<Vec<u32>>,
        token: &Option<String>,
        match_id: Option<MatchId>,
        deliver: impl Fn(TicketId) -> bool,
    ) {
        for (self_user, ticket) in users.iter().zip(tickets) {
            if !deliver(*ticket) {
                continue;
            }
            let Some(session) = self.inner.sessions.reach(self_user.presence.session_id) else {
                continue;
            };
            let matched = MatchmakerMatched {
                ticket: *ticket,
                token: token.clone(),
                match_id,
                users: users.to_vec(),
                self_user: self_user.clone(),
            };
            let event = match teams {
                Some(teams) => Event::MatchmakerMatchedTeams(MatchmakerMatchedTeams {
                    matched,
                    teams: teams.clone(),
                }),
                None => Event::MatchmakerMatched(matched),
            };
            if let Ok(frame) = EventBody::encode(&event) {
                session.push_event(&frame);
            }
        }
    }

    /// What a new group is told: the match the matched hook chose, or a token (a
    /// backfill's match is live already: no hook, no token).
    fn match_for(&self, m: &Matched) -> (Option<String>, Option<MatchId>) {
        if let Some(match_id) = m.backfill {
            return (None, Some(match_id));
        }
        let ctx = MatchedContext {
            matches: &self.inner.matches,
            runtime: &self.inner.runtime,
            entries: &m.entries,
            hold: self.inner.config.token_lifetime,
        };
        let match_id = self
            .inner
            .hooks
            .matchmaker_matched
            .as_ref()
            .and_then(|hook| hook(&ctx, &m.entries));
        if match_id.is_some() {
            return (None, match_id);
        }
        let mut users: Vec<UserId> = m.entries.iter().map(|e| e.presence.user_id).collect();
        users.sort();
        users.dedup();
        let token = MatchToken {
            match_id: MatchId::new_random(),
            expires_at: unix_now()
                .saturating_add(self.inner.config.token_lifetime.as_secs().max(1)),
            users,
        }
        .issue(&self.inner.secret);
        (Some(token), None)
    }

    /// Verifies a match token for `user` and returns the match it names.
    /// Verifies a match token for `user`: the match it names and when the token lapses.
    pub(crate) fn redeem(&self, token: &str, user: UserId) -> Result<(MatchId, Instant), ApiError> {
        let now = unix_now();
        MatchToken::verify(&self.inner.secret, token, now, user)
            .map(|t| {
                let left = std::time::Duration::from_secs(t.expires_at.saturating_sub(now) + 1);
                (t.match_id, Instant::now() + left)
            })
            .map_err(|e| bad(e.to_string()))
    }

    /// Runs a pass every interval until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if self.shared().is_some() {
                        // The cluster's leader passes over every node's tickets; this
                        // node still drops its backfills whose match has ended.
                        self.drop_dead_backfills();
                        continue;
                    }
                    let mm = self.clone();
                    // A pass over a large pool takes a while; keep it off the async workers.
                    if tokio::task::spawn_blocking(move || mm.process(Instant::now())).await.is_err() {
                        tracing::error!("matchmaker pass failed");
                    }
                }
            }
        }
    }
}
