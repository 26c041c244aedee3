//! What game code does with the matchmaker besides hooks: backfill tickets for live
//! matches, and the custom processor's pass (its own thread, a time bound, and the
//! server's checks on what it returns).

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{atomic::Ordering, Arc, Mutex, Weak},
    time::Instant,
};

use quicmatch_protocol::{MatchId, MatchmakerAdd, MatchmakerOptions, TicketId};
use tracing::{error, warn};

use super::{
    bad, check_limits,
    pool::{Matched, Pool, PoolStats, TicketSpec},
    query::{Properties, Query},
    shared::TicketRecord,
    Inner, Matchmaker,
};
use crate::{
    handlers::ApiError,
    hooks::{MatchmakerAddRequest, MatchmakerProcessor},
    runtime::{Backfills, RuntimeError},
};

/// The matchmaker as the runtime holds it: weakly, since the matchmaker holds the
/// runtime.
struct BackfillHandle(Weak<Inner>);

impl Matchmaker {
    /// The handle the runtime gives game code for backfills.
    pub(crate) fn backfills(&self) -> Arc<dyn Backfills> {
        Arc::new(BackfillHandle(Arc::downgrade(&self.inner)))
    }

    /// Cancels backfill tickets whose match has ended.
    pub(super) fn drop_dead_backfills(&self) {
        let backfills = self.pool().backfills();
        let dead: Vec<TicketId> = backfills
            .into_iter()
            .filter(|(_, m)| !self.inner.matches.is_live(*m))
            .map(|(t, _)| t)
            .collect();
        if dead.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        {
            let mut pool = self.pool();
            for t in dead {
                if pool.remove_backfill(t).is_ok() {
                    gone.push(t);
                }
            }
        }
        self.share_removed(gone);
    }

    /// A pass whose groups `processor` chooses: the pool is snapshot under the lock, the
    /// processor runs without it, and its groups are checked and formed under it again.
    pub(super) fn custom_pass(
        &self,
        processor: Arc<MatchmakerProcessor>,
        now: Instant,
    ) -> (Vec<Matched>, PoolStats) {
        self.custom_pass_over(&self.inner.pool, processor, now)
    }

    /// [`custom_pass`](Self::custom_pass) over another pool (a cluster leader's
    /// mirror).
    pub(super) fn custom_pass_over(
        &self,
        pool: &Mutex<Pool>,
        processor: Arc<MatchmakerProcessor>,
        now: Instant,
    ) -> (Vec<Matched>, PoolStats) {
        let lock = || {
            pool.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let (snapshot, started) = {
            let mut pool = lock();
            let started = pool.begin_custom_pass();
            (pool.snapshot(now), started)
        };
        let groups = self.run_processor(processor, snapshot).unwrap_or_default();
        let mut pool = lock();
        let (matched, rejected) = pool.finish_custom_pass(groups, started, now);
        for r in &rejected {
            warn!(group = ?r.group, reason = %r.reason, "matchmaker processor group refused");
        }
        if !rejected.is_empty() {
            metrics::counter!("quicmatch_matchmaker_processor_rejected_total")
                .increment(rejected.len() as u64);
        }
        (matched, pool.stats(now))
    }

    /// Runs the processor on its own thread, waiting at most `processor_timeout`; `None`
    /// when it timed out, panicked, or an earlier call is still running.
    fn run_processor(
        &self,
        processor: Arc<MatchmakerProcessor>,
        snapshot: Vec<super::pool::PoolTicket>,
    ) -> Option<Vec<Vec<TicketId>>> {
        if self.inner.processor_busy.swap(true, Ordering::AcqRel) {
            warn!(
                "matchmaker processor still running from an earlier pass; this pass forms no group"
            );
            metrics::counter!("quicmatch_matchmaker_processor_timeouts_total").increment(1);
            return None;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("matchmaker-processor".into())
            .spawn(move || {
                let result = catch_unwind(AssertUnwindSafe(|| processor(&snapshot)));
                inner.processor_busy.store(false, Ordering::Release);
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            self.inner.processor_busy.store(false, Ordering::Release);
            error!(error = %e, "could not start the matchmaker processor thread");
            return None;
        }
        match rx.recv_timeout(self.inner.config.processor_timeout) {
            Ok(Ok(groups)) => Some(groups),
            Ok(Err(_)) => {
                error!("matchmaker processor panicked; this pass forms no group");
                metrics::counter!("quicmatch_matchmaker_processor_failures_total").increment(1);
                None
            }
            Err(_) => {
                warn!(
                    timeout = ?self.inner.config.processor_timeout,
                    "matchmaker processor timed out; this pass forms no group"
                );
                metrics::counter!("quicmatch_matchmaker_processor_timeouts_total").increment(1);
                None
            }
        }
    }
}

impl Matchmaker {
    /// The spec of a backfill: `seats` players wanted for `match_id`, found with
    /// `query` (accepting `properties`); with its record when the pool is shared, so
    /// the leader (and a node rejoining) can make it again.
    pub(crate) fn backfill_spec(
        &self,
        match_id: MatchId,
        query: &str,
        seats: u32,
        properties: Properties,
    ) -> Result<TicketSpec, ApiError> {
        let max = self.inner.config.max_count;
        let n = usize::try_from(seats).unwrap_or(usize::MAX);
        if n == 0 || n > max {
            return Err(bad(format!("a backfill asks for 1 to {max} players")));
        }
        check_limits(&MatchmakerAddRequest {
            query: query.to_owned(),
            min_count: 2,
            max_count: 2,
            count_multiple: 1,
            string_properties: properties.strings.clone(),
            numeric_properties: properties.numbers.clone(),
        })?;
        let parsed = Query::parse(query).map_err(|e| bad(e.to_string()))?;
        let spec = TicketSpec::backfill(parsed, properties.clone(), match_id, n)
            .map_err(|e| bad(e.to_string()))?;
        Ok(match self.shared() {
            None => spec,
            Some(_) => spec.with_record(TicketRecord {
                request: MatchmakerAdd {
                    query: query.to_owned(),
                    min_count: 1,
                    max_count: seats,
                    count_multiple: None,
                    string_properties: properties.strings,
                    numeric_properties: properties.numbers,
                },
                options: MatchmakerOptions::default(),
                party_id: None,
                members: Vec::new(),
                backfill: Some(match_id),
            }),
        })
    }
}

impl Backfills for BackfillHandle {
    fn backfill(
        &self,
        match_id: MatchId,
        query: &str,
        seats: u32,
        properties: Properties,
    ) -> Result<TicketId, RuntimeError> {
        let inner = self
            .0
            .upgrade()
            .ok_or_else(|| RuntimeError::Failed("the matchmaker has stopped".into()))?;
        let mm = Matchmaker { inner };
        let spec = mm
            .backfill_spec(match_id, query, seats, properties)
            .map_err(|e| RuntimeError::BadRequest(e.message))?;
        if !mm.inner.matches.is_live(match_id) {
            return Err(RuntimeError::MatchNotFound);
        }
        // In a cluster the ticket joins the one pool, as players' tickets do.
        mm.check_shared()
            .map_err(|e| RuntimeError::Failed(e.message))?;
        let record = spec.record().cloned();
        let ticket = mm
            .pool()
            .add(spec, Instant::now())
            .map_err(|e| RuntimeError::Limit(e.to_string()))?;
        mm.share_added(ticket, record);
        Ok(ticket)
    }

    fn cancel_backfill(&self, ticket: TicketId) -> Result<(), RuntimeError> {
        let inner = self
            .0
            .upgrade()
            .ok_or_else(|| RuntimeError::Failed("the matchmaker has stopped".into()))?;
        let mm = Matchmaker { inner };
        let removed = mm.pool().remove_backfill(ticket);
        removed.map_err(|e| RuntimeError::BadRequest(e.to_string()))?;
        mm.share_removed(vec![ticket]);
        Ok(())
    }
}
