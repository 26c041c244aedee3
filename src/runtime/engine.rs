//! The authoritative worker pool: every server-run match is a [`Slot`] with a bounded
//! inbox; a timer thread queues a match when its tick is due (or at once, for a join
//! attempt, a leave or a signal), and worker threads run one match at a time through its
//! handler's callbacks. Nothing here runs on a session or I/O task.
//!
//! Isolation: a callback that panics ends only its match; the timer thread's watchdog
//! ends a match whose callback has run longer than `matches.overrun_limit` and starts a
//! replacement worker, so one stuck handler never stalls the others; a match whose
//! ticks overrun their budget continuously for that long is ended too.
//!
//! Queues and what happens when they are full: member messages between ticks
//! (`matches.input_queue`): the new message is refused and its sender gets
//! `LIMIT_EXCEEDED`; join attempts (`matches.join_queue`): refused with
//! `MATCH_JOIN_REJECTED`; signals (`matches.signal_queue`): refused with an error to the
//! caller. Leaves are never refused (at most one per member).

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap, VecDeque},
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use quicmatch_protocol::{ErrorCode, MatchId, MatchInfo, Member, Presence};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

mod keep;
mod threads;

use keep::MAX_SNAPSHOT;
pub(crate) use keep::{Kept, Restored, Snapshots};

use super::{Dispatcher, MatchContext, MatchHandler, MatchInit, Params, Runtime, RuntimeError};
use crate::{
    config::MatchConfig,
    handlers::ApiError,
    matches::{
        hosted::{HostedSpec, KeptCounters},
        Inbound, Inbox as TableInbox, MatchTable,
    },
    outbound::SessionHandle,
};

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
/// Running, and poked meanwhile: run again when done.
const RUNNING_DIRTY: u8 = 3;

/// How often the timer thread looks for stuck callbacks.
const WATCHDOG_EVERY: Duration = Duration::from_millis(100);

/// Replacement workers the watchdog may start over the life of the server.
const MAX_REPLACEMENTS: usize = 64;
/// How long a shutdown waits, after ending what was left, for a worker still telling a
/// match's members that it ended.
const SHUTDOWN_SETTLE: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

std::thread_local! {
    /// The match a worker thread is running, so a handler cannot deadlock by
    /// signalling its own match.
    static CURRENT: std::cell::Cell<Option<MatchId>> = const { std::cell::Cell::new(None) };
}

struct JoinRequest {
    session: SessionHandle,
    metadata: BTreeMap<String, String>,
    reply: oneshot::Sender<Result<MatchInfo, ApiError>>,
}

struct SignalRequest {
    data: String,
    reply: std::sync::mpsc::SyncSender<Result<String, RuntimeError>>,
}

#[derive(Default)]
struct Inbox {
    messages: VecDeque<Inbound>,
    joins: VecDeque<JoinRequest>,
    leaves: Vec<Presence>,
    signals: VecDeque<SignalRequest>,
    terminate: Option<Duration>,
    /// Shutdown for a restart: keep the match if its handler gives a snapshot.
    park: bool,
}

/// Why a match's turn ended it.
enum End {
    /// It ended (MatchEnded with this reason).
    Reason(String),
    /// It was kept for a restart: it ends silently here.
    Parked,
}

impl From<String> for End {
    fn from(reason: String) -> Self {
        Self::Reason(reason)
    }
}

struct Core {
    handler: Box<dyn MatchHandler>,
    ctx: MatchContext,
    next_tick: Instant,
    empty_since: Option<Instant>,
    overrun_since: Option<Instant>,
}

/// One server-run match.
struct Slot {
    id: MatchId,
    interval: Duration,
    inbox: Mutex<Inbox>,
    core: Mutex<Option<Core>>,
    sched: AtomicU8,
    ended: AtomicBool,
    running_since: Mutex<Option<Instant>>,
}

struct Inner {
    table: MatchTable,
    config: MatchConfig,
    slots: Mutex<HashMap<MatchId, Arc<Slot>>>,
    queue: Mutex<VecDeque<Arc<Slot>>>,
    queue_cv: Condvar,
    timers: Mutex<BinaryHeap<Reverse<(Instant, MatchId)>>>,
    timer_cv: Condvar,
    started: std::sync::Once,
    stopping: AtomicBool,
    replacements: AtomicUsize,
    /// Matches kept at a shutdown for the restart.
    parked: Mutex<Vec<Kept>>,
}

/// The worker pool; cheap to clone.
#[derive(Clone)]
pub(crate) struct Engine {
    inner: Arc<Inner>,
}

/// The table's view of a slot's inbox.
struct SlotInbox {
    slot: Arc<Slot>,
    engine: std::sync::Weak<Inner>,
    limit: usize,
}

impl TableInbox for SlotInbox {
    fn message(&self, message: Inbound) -> Result<(), ApiError> {
        let mut inbox = lock(&self.slot.inbox);
        if inbox.messages.len() >= self.limit {
            metrics::counter!("quicmatch_match_input_dropped_total").increment(1);
            return Err(ApiError::new(
                ErrorCode::LIMIT_EXCEEDED,
                "the match's input queue is full; message dropped",
            ));
        }
        inbox.messages.push_back(message);
        Ok(())
    }

    fn left(&self, presence: Presence) {
        lock(&self.slot.inbox).leaves.push(presence);
        if let Some(inner) = self.engine.upgrade() {
            inner.poke(&self.slot);
        }
    }
}

impl Inner {
    /// Queues a slot to run soon, once. One atomic state, so a poke that races a worker
    /// finishing is never lost: either it queues the idle slot, or it marks the running
    /// one dirty and the worker, failing to go back to idle, queues it again.
    fn poke(&self, slot: &Arc<Slot>) {
        let mut state = slot.sched.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => QUEUED,
                RUNNING => RUNNING_DIRTY,
                _ => return,
            };
            match slot
                .sched
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == QUEUED => {
                    lock(&self.queue).push_back(slot.clone());
                    self.queue_cv.notify_one();
                    return;
                }
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
    }

    fn schedule(&self, id: MatchId, at: Instant) {
        let mut timers = lock(&self.timers);
        let earliest = timers.peek().is_none_or(|Reverse((t, _))| at < *t);
        timers.push(Reverse((at, id)));
        drop(timers);
        if earliest {
            self.timer_cv.notify_one();
        }
    }

    fn slot(&self, id: MatchId) -> Option<Arc<Slot>> {
        lock(&self.slots).get(&id).cloned()
    }

    /// Ends a match for good: members get `MatchEnded`, waiting joins and signals fail.
    fn end(&self, slot: &Slot, reason: &str) {
        if slot.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        // Members hear MatchEnded before the slot goes: a shutdown waits for the slots
        // to empty and then closes sessions, so an event pushed after the removal could
        // miss its session's last flush.
        self.table.end_hosted(slot.id, reason);
        lock(&self.slots).remove(&slot.id);
        let inbox = std::mem::take(&mut *lock(&slot.inbox));
        for j in inbox.joins {
            let _ = j.reply.send(Err(ApiError::new(
                ErrorCode::MATCH_NOT_FOUND,
                "the match ended",
            )));
        }
        for s in inbox.signals {
            let _ = s.reply.send(Err(RuntimeError::Failed(format!(
                "the match ended: {reason}"
            ))));
        }
        metrics::counter!("quicmatch_matches_ended_total").increment(1);
        info!(match_id = %slot.id, %reason, "authoritative match ended");
    }

    /// Runs one callback with its dispatcher, containing a panic, then applies its
    /// label, end and kicks; returns `Err` with the reason when the match must end.
    fn call<R>(
        &self,
        slot: &Slot,
        core: &mut Core,
        f: impl FnOnce(&mut dyn MatchHandler, &MatchContext, &mut Dispatcher<'_>) -> R,
    ) -> Result<R, String> {
        let (out, ended) = self.call_keeping(slot, core, f)?;
        ended.map_or(Ok(out), Err)
    }

    /// Like [`call`](Self::call), but hands back the callback's result even when it
    /// ended the match (`Some(reason)`); `Err` only when it panicked.
    fn call_keeping<R>(
        &self,
        slot: &Slot,
        core: &mut Core,
        f: impl FnOnce(&mut dyn MatchHandler, &MatchContext, &mut Dispatcher<'_>) -> R,
    ) -> Result<(R, Option<String>), String> {
        let mut d = Dispatcher::new(&self.table, slot.id);
        let out = catch_unwind(AssertUnwindSafe(|| {
            f(core.handler.as_mut(), &core.ctx, &mut d)
        }));
        let Ok(out) = out else {
            metrics::counter!("quicmatch_match_panics_total").increment(1);
            error!(match_id = %slot.id, handler = %core.ctx.handler, "match handler panicked; ending the match");
            return Err("the match handler failed".into());
        };
        let effects = (d.label.take(), d.ended.take(), std::mem::take(&mut d.kicks));
        Ok((out, self.apply(slot, core, effects).err()))
    }

    /// What a callback asked for besides its sends.
    fn apply(
        &self,
        slot: &Slot,
        core: &mut Core,
        (label, ended, kicks): (Option<Option<String>>, Option<String>, Vec<Presence>),
    ) -> Result<(), String> {
        if let Some(label) = label {
            core.ctx.label = label;
        }
        if let Some(reason) = ended {
            return Err(reason);
        }
        if kicks.is_empty() {
            return Ok(());
        }
        let gone: Vec<Presence> = kicks
            .iter()
            .filter_map(|p| {
                self.table
                    .kick(slot.id, p.session_id, "kicked from the match")
            })
            .collect();
        core.ctx.presences = self.table.presences(slot.id);
        if gone.is_empty() {
            return Ok(());
        }
        let leave: &dyn Fn(&mut dyn MatchHandler, &MatchContext, &mut Dispatcher<'_>) =
            &|h, ctx, d| h.leave(ctx, d, &gone);
        self.call(slot, core, leave)
    }

    /// One turn of a match: leaves, join attempts, signals, shutdown, and the tick when
    /// it is due.
    fn run(&self, slot: &Slot) {
        let mut guard = lock(&slot.core);
        let Some(core) = guard.as_mut() else { return };
        let ended = self.turn(slot, core);
        // A handler whose Drop panics must not take the worker thread with it.
        let discard = |guard: &mut Option<Core>| {
            let core = guard.take();
            let _ = catch_unwind(AssertUnwindSafe(move || drop(core)));
        };
        if slot.ended.load(Ordering::Acquire) {
            discard(&mut guard);
            return;
        }
        match ended {
            Err(End::Reason(reason)) => {
                discard(&mut guard);
                drop(guard);
                self.end(slot, &reason);
            }
            Err(End::Parked) => {
                discard(&mut guard);
                drop(guard);
                self.park(slot);
            }
            Ok(()) => self.schedule(slot.id, core.next_tick),
        }
    }

    fn turn(&self, slot: &Slot, core: &mut Core) -> Result<(), End> {
        let now = Instant::now();
        let tick_due = now >= core.next_tick;
        let (joins, leaves, signals, terminate, park, messages) = {
            let mut inbox = lock(&slot.inbox);
            let messages = if tick_due {
                std::mem::take(&mut inbox.messages)
            } else {
                VecDeque::new()
            };
            (
                std::mem::take(&mut inbox.joins),
                std::mem::take(&mut inbox.leaves),
                std::mem::take(&mut inbox.signals),
                inbox.terminate.take(),
                std::mem::take(&mut inbox.park),
                messages,
            )
        };
        core.ctx.presences = self.table.presences(slot.id);
        if !leaves.is_empty() {
            self.call(slot, core, |h, ctx, d| h.leave(ctx, d, &leaves))?;
        }
        for join in joins {
            self.join(slot, core, join)?;
        }
        for signal in signals {
            // The reply goes back even when the signal ended the match.
            match self.call_keeping(slot, core, |h, ctx, d| h.signal(ctx, d, &signal.data)) {
                Ok((reply, ended)) => {
                    let _ = signal.reply.send(Ok(reply));
                    if let Some(reason) = ended {
                        return Err(reason.into());
                    }
                }
                Err(reason) => {
                    let _ = signal.reply.send(Err(RuntimeError::Failed(reason.clone())));
                    return Err(reason.into());
                }
            }
        }
        if park {
            if let Some(kept) = self.take_snapshot(slot, core)? {
                if kept.state.len() <= MAX_SNAPSHOT {
                    lock(&self.parked).push(kept);
                    return Err(End::Parked);
                }
                warn!(match_id = %slot.id, bytes = kept.state.len(), "snapshot over the limit; the match ends with the server");
            }
        }
        if let Some(grace) = terminate {
            self.call(slot, core, |h, ctx, d| h.terminate(ctx, d, grace))?;
            return Err(End::Reason("the server is shutting down".into()));
        }
        if !tick_due {
            return Ok(());
        }
        let lateness = now.saturating_duration_since(core.next_tick);
        metrics::histogram!("quicmatch_match_tick_lateness_seconds").record(lateness.as_secs_f64());
        core.ctx.tick += 1;
        let started = Instant::now();
        self.call(slot, core, |h, ctx, d| h.tick(ctx, d, messages.into()))?;
        let took = started.elapsed();
        if took > slot.interval {
            metrics::counter!("quicmatch_match_overruns_total").increment(1);
            if core.overrun_since.is_none() {
                // Once per streak, so a match that keeps overrunning logs once and then
                // either recovers or ends at the limit.
                warn!(match_id = %slot.id, handler = %core.ctx.handler, ?took, budget = ?slot.interval, "match tick overran its budget");
            }
            let since = *core.overrun_since.get_or_insert(started);
            if since.elapsed() >= self.config.overrun_limit {
                warn!(match_id = %slot.id, ?took, "match ticks overran their budget too long");
                return Err(End::Reason(
                    "the match handler overran its time budget".into(),
                ));
            }
        } else {
            core.overrun_since = None;
        }
        core.next_tick += slot.interval;
        let now = Instant::now();
        if core.next_tick < now {
            // Far behind: skip the missed ticks rather than run them back to back.
            core.next_tick = now + slot.interval;
        }
        if core.ctx.presences.is_empty() {
            let since = *core.empty_since.get_or_insert(now);
            if since.elapsed() >= self.config.max_empty {
                return Err(End::Reason("the match was empty too long".into()));
            }
        } else {
            core.empty_since = None;
        }
        Ok(())
    }

    fn join(&self, slot: &Slot, core: &mut Core, join: JoinRequest) -> Result<(), String> {
        if join.reply.is_closed() {
            return Ok(());
        }
        let presence = (*join.session.presence).clone();
        let decision = self.call(slot, core, |h, ctx, d| {
            h.join_attempt(ctx, d, &presence, &join.metadata)
        })?;
        let outcome = match decision {
            super::JoinDecision::Reject(reason) => {
                Err(ApiError::new(ErrorCode::MATCH_JOIN_REJECTED, reason))
            }
            super::JoinDecision::Accept => {
                let already = core
                    .ctx
                    .presences
                    .iter()
                    .any(|p| p.session_id == presence.session_id);
                let admitted = self.table.admit(slot.id, &join.session);
                if admitted.is_ok() && !already {
                    core.ctx.presences = self.table.presences(slot.id);
                    core.empty_since = None;
                    // The reply goes first, so the member hears of the match before any
                    // data the join callback sends it.
                    let gave_up = join.reply.send(admitted).is_err();
                    let sid = presence.session_id;
                    self.call(slot, core, |h, ctx, d| h.join(ctx, d, &[presence]))?;
                    if gave_up {
                        // The client stopped waiting and was told the join failed: it
                        // must not stay a member it does not know of.
                        self.table.leave(slot.id, sid);
                    }
                    return Ok(());
                }
                admitted
            }
        };
        let _ = join.reply.send(outcome);
        Ok(())
    }
}

impl Engine {
    pub(crate) fn start(table: MatchTable, config: &MatchConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                table,
                config: config.clone(),
                slots: Mutex::default(),
                queue: Mutex::default(),
                queue_cv: Condvar::new(),
                timers: Mutex::default(),
                timer_cv: Condvar::new(),
                started: std::sync::Once::new(),
                stopping: AtomicBool::new(false),
                replacements: AtomicUsize::new(0),
                parked: Mutex::default(),
            }),
        }
    }

    /// Runs `init` on the caller's thread, then registers and schedules the match.
    pub(crate) fn create(
        &self,
        name: &str,
        mut handler: Box<dyn MatchHandler>,
        params: &Params,
        matched: Vec<Presence>,
        runtime: Runtime,
    ) -> Result<MatchId, RuntimeError> {
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(RuntimeError::Limit("the server is shutting down".into()));
        }
        let id = MatchId::new_random();
        let ctx = MatchContext {
            match_id: id,
            handler: Arc::from(name),
            tick: 0,
            tick_rate: 0,
            label: None,
            presences: Vec::new(),
            matched,
            runtime,
        };
        let init = catch_unwind(AssertUnwindSafe(|| handler.init(&ctx, params)))
            .map_err(|_| RuntimeError::Init("init panicked".into()))?
            .map_err(RuntimeError::Init)?;
        self.launch(handler, ctx, init, None)?;
        metrics::counter!("quicmatch_matches_created_total", "handler" => name.to_owned())
            .increment(1);
        Ok(id)
    }

    /// Checks what `init` (or `restore`) decided, then registers and schedules the
    /// match; `restored` puts its members and counters back.
    fn launch(
        &self,
        handler: Box<dyn MatchHandler>,
        mut ctx: MatchContext,
        init: MatchInit,
        restored: Option<(KeptCounters, Vec<(Member, SessionHandle)>)>,
    ) -> Result<(), RuntimeError> {
        let inner = &self.inner;
        let id = ctx.match_id;
        let MatchInit {
            tick_rate,
            label,
            max_size,
        } = init;
        if !(1..=60).contains(&tick_rate) {
            return Err(RuntimeError::Init(format!(
                "tick rate {tick_rate} is outside 1 to 60"
            )));
        }
        let limit = inner.config.max_size;
        let max_size = match max_size {
            None => limit,
            Some(n) if (1..=limit).contains(&(n as usize)) => n as usize,
            Some(n) => {
                return Err(RuntimeError::Init(format!(
                    "max_size {n} is outside 1 to {limit}"
                )))
            }
        };
        ctx.tick_rate = tick_rate;
        ctx.label = label.clone();
        let interval = Duration::from_secs(1) / tick_rate;
        let name = ctx.handler.clone();
        let slot = Arc::new(Slot {
            id,
            interval,
            inbox: Mutex::default(),
            core: Mutex::new(Some(Core {
                handler,
                ctx,
                next_tick: Instant::now() + interval,
                empty_since: None,
                overrun_since: None,
            })),
            sched: AtomicU8::new(IDLE),
            ended: AtomicBool::new(false),
            running_since: Mutex::new(None),
        });
        let inbox = Arc::new(SlotInbox {
            slot: slot.clone(),
            engine: Arc::downgrade(inner),
            limit: inner.config.input_queue,
        });
        let spec = HostedSpec {
            label,
            max_size,
            tick_rate,
            handler: name,
        };
        match restored {
            None => inner.table.create_hosted(id, spec, inbox),
            Some((counters, members)) => inner
                .table
                .restore_hosted(id, spec, inbox, counters, members),
        }
        .map_err(|e| RuntimeError::Limit(e.message))?;
        lock(&inner.slots).insert(id, slot);
        inner.started.call_once(|| inner.start_threads());
        inner.schedule(id, Instant::now() + interval);
        Ok(())
    }

    /// Whether `id` is a live server-run match.
    pub(crate) fn has(&self, id: MatchId) -> bool {
        self.inner.slot(id).is_some()
    }

    /// Queues a join attempt; the receiver gets the handler's answer.
    pub(crate) fn join_attempt(
        &self,
        id: MatchId,
        session: SessionHandle,
        metadata: BTreeMap<String, String>,
    ) -> Result<oneshot::Receiver<Result<MatchInfo, ApiError>>, ApiError> {
        let slot = self
            .inner
            .slot(id)
            .ok_or_else(|| ApiError::new(ErrorCode::MATCH_NOT_FOUND, "match not found"))?;
        let (reply, rx) = oneshot::channel();
        {
            let mut inbox = lock(&slot.inbox);
            // `end` marks the slot before it empties the inbox under this lock: a join
            // pushed here is either answered by that or refused now, never left waiting.
            if slot.ended.load(Ordering::Acquire) {
                return Err(ApiError::new(ErrorCode::MATCH_NOT_FOUND, "the match ended"));
            }
            if inbox.joins.len() >= self.inner.config.join_queue {
                return Err(ApiError::new(
                    ErrorCode::MATCH_JOIN_REJECTED,
                    "the match has too many join attempts waiting; try again",
                ));
            }
            inbox.joins.push_back(JoinRequest {
                session,
                metadata,
                reply,
            });
        }
        self.inner.poke(&slot);
        Ok(rx)
    }

    /// Sends a signal and waits (bounded) for the reply. Blocks: call it from a
    /// blocking thread.
    pub(crate) fn signal(&self, id: MatchId, data: &str) -> Result<String, RuntimeError> {
        if CURRENT.with(std::cell::Cell::get).is_some() {
            // Waiting here would hold a worker the other match may need to answer.
            return Err(RuntimeError::Failed(
                "a match callback cannot wait for a signal; signal from an RPC or a hook".into(),
            ));
        }
        let slot = self.inner.slot(id).ok_or(RuntimeError::MatchNotFound)?;
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        {
            let mut inbox = lock(&slot.inbox);
            if slot.ended.load(Ordering::Acquire) {
                return Err(RuntimeError::MatchNotFound);
            }
            if inbox.signals.len() >= self.inner.config.signal_queue {
                return Err(RuntimeError::Busy(
                    "the match has too many signals waiting".into(),
                ));
            }
            inbox.signals.push_back(SignalRequest {
                data: data.to_owned(),
                reply,
            });
        }
        self.inner.poke(&slot);
        match rx.recv_timeout(self.inner.config.answer_timeout) {
            Ok(reply) => reply,
            Err(_) => Err(RuntimeError::Failed(
                "the match did not answer the signal in time".into(),
            )),
        }
    }

    /// Live server-run matches.
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner.slots).len()
    }

    /// Shutdown: every match's `terminate(grace)` runs, then it ends; waits up to
    /// `grace` for them, ends the rest, and stops the threads. With `keep`, a match whose
    /// handler gives a snapshot is kept for the restart instead (no `terminate`, no
    /// `MatchEnded`) and returned.
    pub(crate) fn shutdown(&self, grace: Duration, keep: bool) -> Vec<Kept> {
        let inner = &self.inner;
        let slots: Vec<Arc<Slot>> = lock(&inner.slots).values().cloned().collect();
        for slot in &slots {
            {
                let mut inbox = lock(&slot.inbox);
                inbox.terminate = Some(grace);
                inbox.park = keep;
            }
            inner.poke(slot);
        }
        let deadline = Instant::now() + grace;
        while !lock(&inner.slots).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let rest: Vec<Arc<Slot>> = lock(&inner.slots).values().cloned().collect();
        for slot in rest {
            inner.end(&slot, "the server is shutting down");
        }
        // A worker already inside `end` for one of them keeps its slot until its
        // members were told; the sessions close only after that.
        let settle = Instant::now() + SHUTDOWN_SETTLE;
        while !lock(&inner.slots).is_empty() && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(5));
        }
        inner.stopping.store(true, Ordering::Release);
        inner.queue_cv.notify_all();
        inner.timer_cv.notify_all();
        std::mem::take(&mut *lock(&inner.parked))
    }
}
