//! The engine's threads: the workers that run matches' turns, the timer that queues
//! matches when their tick is due, and its watchdog for stuck callbacks.

use std::{
    cmp::Reverse,
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use tracing::error;

use super::{lock, Inner, Slot, CURRENT, IDLE, MAX_REPLACEMENTS, QUEUED, RUNNING, WATCHDOG_EVERY};

impl Inner {
    pub(super) fn spawn_worker(self: &Arc<Self>) {
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name("quicmatch-match".into())
            .spawn(move || inner.work());
        if let Err(e) = spawned {
            error!(error = %e, "could not start a match worker");
        }
    }

    pub(super) fn start_threads(self: &Arc<Self>) {
        let workers = match self.config.workers {
            0 => std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
            n => n,
        };
        for _ in 0..workers {
            self.spawn_worker();
        }
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name("quicmatch-ticks".into())
            .spawn(move || inner.timer_loop());
        if let Err(e) = spawned {
            error!(error = %e, "could not start the match timer");
        }
    }

    fn timer_loop(self: Arc<Self>) {
        let mut last_watch = Instant::now();
        loop {
            let mut due = Vec::new();
            {
                let mut timers = lock(&self.timers);
                while !self.stopping.load(Ordering::Acquire) {
                    let now = Instant::now();
                    while let Some(Reverse((at, id))) = timers.peek().copied() {
                        if at > now {
                            break;
                        }
                        timers.pop();
                        due.push(id);
                    }
                    if !due.is_empty() || now.duration_since(last_watch) >= WATCHDOG_EVERY {
                        break;
                    }
                    let wait = timers
                        .peek()
                        .map_or(WATCHDOG_EVERY, |Reverse((at, _))| {
                            at.saturating_duration_since(now)
                        })
                        .min(WATCHDOG_EVERY);
                    timers = self
                        .timer_cv
                        .wait_timeout(timers, wait)
                        .map_or_else(|p| p.into_inner().0, |r| r.0);
                }
            }
            if self.stopping.load(Ordering::Acquire) {
                self.queue_cv.notify_all();
                return;
            }
            for id in due {
                if let Some(slot) = self.slot(id) {
                    self.poke(&slot);
                }
            }
            if last_watch.elapsed() >= WATCHDOG_EVERY {
                last_watch = Instant::now();
                self.watchdog();
            }
        }
    }

    /// Ends matches whose callback has been running longer than the overrun limit.
    fn watchdog(self: &Arc<Self>) {
        let stuck: Vec<Arc<Slot>> = lock(&self.slots)
            .values()
            .filter(|s| {
                lock(&s.running_since).is_some_and(|t| t.elapsed() >= self.config.overrun_limit)
            })
            .cloned()
            .collect();
        for slot in stuck {
            metrics::counter!("quicmatch_match_overruns_total").increment(1);
            error!(match_id = %slot.id, limit = ?self.config.overrun_limit, "match callback still running past the overrun limit; ending the match");
            self.end(&slot, "the match handler overran its time budget");
            if self.replacements.fetch_add(1, Ordering::AcqRel) < MAX_REPLACEMENTS {
                self.spawn_worker();
            }
        }
    }

    fn work(self: Arc<Self>) {
        loop {
            let slot = {
                let mut queue = lock(&self.queue);
                loop {
                    if self.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    if let Some(slot) = queue.pop_front() {
                        break slot;
                    }
                    queue = self.queue_cv.wait(queue).unwrap_or_else(|p| p.into_inner());
                }
            };
            slot.sched.store(RUNNING, Ordering::Release);
            CURRENT.with(|c| c.set(Some(slot.id)));
            self.run(&slot);
            CURRENT.with(|c| c.set(None));
            if slot.ended.load(Ordering::Acquire) {
                continue;
            }
            if slot
                .sched
                .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Poked while running: run again.
                slot.sched.store(QUEUED, Ordering::Release);
                lock(&self.queue).push_back(slot.clone());
                self.queue_cv.notify_one();
            }
        }
    }
}
