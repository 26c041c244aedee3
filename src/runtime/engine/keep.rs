//! What the engine does for restarts: snapshots of the matches whose handler keeps
//! them (taken between callbacks, never waiting on a busy match), matches kept at a
//! shutdown without ending them, and matches brought back by their handler's
//! `restore`. What is recorded and when is `persist`'s business.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{atomic::Ordering, Arc},
};

use quicmatch_protocol::{ErrorCode, MatchId, Member, Presence};
use tracing::{error, info, warn};

use super::{lock, Core, Engine, Inner, Slot};
use crate::{
    handlers::ApiError,
    matches::hosted::KeptCounters,
    outbound::SessionHandle,
    runtime::{MatchContext, MatchHandler, Runtime, RuntimeError},
};

/// A server-run match as a restart record keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    pub(crate) id: MatchId,
    pub(crate) handler: Arc<str>,
    pub(crate) label: Option<String>,
    pub(crate) tick_rate: u32,
    pub(crate) tick: u64,
    pub(crate) matched: Vec<Presence>,
    /// The handler's snapshot.
    pub(crate) state: Vec<u8>,
}

/// One round of snapshots.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    /// Matches whose handler gave a snapshot.
    pub(crate) kept: Vec<Kept>,
    /// Matches busy in a callback (or with a snapshot over the limit): their previous
    /// record stands.
    pub(crate) busy: Vec<MatchId>,
}

/// A restored match's starting point.
pub(crate) struct Restored {
    pub(crate) kept: Kept,
    pub(crate) counters: KeptCounters,
    pub(crate) members: Vec<(Member, SessionHandle)>,
}

/// Largest snapshot kept; a bigger one is refused (logged) and the previous stands.
pub(crate) const MAX_SNAPSHOT: usize = 8 * 1024 * 1024;

impl Inner {
    /// Ends a match kept for a restart: no `MatchEnded`, its members stay as they are;
    /// waiting joins and signals fail.
    pub(super) fn park(&self, slot: &Slot) {
        if slot.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&self.slots).remove(&slot.id);
        let inbox = std::mem::take(&mut *lock(&slot.inbox));
        for j in inbox.joins {
            let _ = j.reply.send(Err(ApiError::new(
                ErrorCode::MATCH_NOT_FOUND,
                "the server is restarting",
            )));
        }
        for s in inbox.signals {
            let _ = s
                .reply
                .send(Err(RuntimeError::Failed("the server is restarting".into())));
        }
        info!(match_id = %slot.id, "authoritative match kept for the restart");
    }

    /// Asks the handler for its snapshot (a panic ends the match like any callback's).
    pub(super) fn take_snapshot(
        &self,
        slot: &Slot,
        core: &mut Core,
    ) -> Result<Option<Kept>, String> {
        let out = catch_unwind(AssertUnwindSafe(|| core.handler.snapshot(&core.ctx)));
        let Ok(out) = out else {
            metrics::counter!("quicmatch_match_panics_total").increment(1);
            error!(match_id = %slot.id, handler = %core.ctx.handler, "match handler panicked in snapshot; ending the match");
            return Err("the match handler failed".into());
        };
        Ok(out.map(|state| Kept {
            id: slot.id,
            handler: core.ctx.handler.clone(),
            label: core.ctx.label.clone(),
            tick_rate: core.ctx.tick_rate,
            tick: core.ctx.tick,
            matched: core.ctx.matched.clone(),
            state,
        }))
    }
}

impl Engine {
    /// Brings a match back after a restart: its handler's `restore` on the caller's
    /// thread, then the match registered with its members and scheduled.
    pub(crate) fn restore(
        &self,
        mut handler: Box<dyn MatchHandler>,
        restored: Restored,
        runtime: Runtime,
    ) -> Result<(), RuntimeError> {
        let Restored {
            kept,
            counters,
            members,
        } = restored;
        let ctx = MatchContext {
            match_id: kept.id,
            handler: kept.handler.clone(),
            tick: kept.tick,
            tick_rate: kept.tick_rate,
            label: kept.label.clone(),
            presences: members.iter().map(|(m, _)| m.presence.clone()).collect(),
            matched: kept.matched.clone(),
            runtime,
        };
        let init = catch_unwind(AssertUnwindSafe(|| handler.restore(&ctx, &kept.state)))
            .map_err(|_| RuntimeError::Init("restore panicked".into()))?
            .map_err(RuntimeError::Init)?;
        self.launch(handler, ctx, init, Some((counters, members)))
    }

    /// Snapshots of every match whose handler keeps them, taken between callbacks (a
    /// match busy in a callback now is listed as busy; its previous record stands).
    pub(crate) fn snapshots(&self) -> Snapshots {
        let inner = &self.inner;
        let slots: Vec<Arc<Slot>> = lock(&inner.slots).values().cloned().collect();
        let mut out = Snapshots::default();
        let mut failed = Vec::new();
        for slot in slots {
            let mut guard = match slot.core.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    out.busy.push(slot.id);
                    continue;
                }
            };
            let Some(core) = guard.as_mut() else { continue };
            match inner.take_snapshot(&slot, core) {
                Ok(Some(kept)) if kept.state.len() > MAX_SNAPSHOT => {
                    warn!(match_id = %slot.id, bytes = kept.state.len(), limit = MAX_SNAPSHOT, "match snapshot over the limit; not kept");
                    out.busy.push(slot.id);
                }
                Ok(Some(kept)) => out.kept.push(kept),
                Ok(None) => {}
                Err(reason) => {
                    drop(guard);
                    failed.push((slot, reason));
                }
            }
        }
        for (slot, reason) in failed {
            inner.end(&slot, &reason);
        }
        out
    }
}
