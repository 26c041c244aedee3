//! The cluster's matchmaker leader (docs/cluster.md §6.2-6.6): one node at a time holds
//! the lease (`qm_<c>_leader`, key `matchmaker`, expiring after `leader_lease`
//! unrenewed), mirrors every node's tickets from the tickets bucket, and runs the
//! matchmaker's pass over the mirror every `matchmaker.interval`. A group commits in
//! three revision-checked steps: every ticket is claimed (`Open` to `Claimed`), then
//! the group's record is created (`qm_<c>_groups`, `Committed`, the one point where the
//! group exists), then each home is told and its tickets deleted. A claim that fails
//! undoes the others; a leader that dies half-way leaves claims the next one sweeps: a
//! committed group is delivered again (homes deliver a ticket once), any other is
//! aborted (its record created `Aborted`, so a late commit fails) and its tickets are
//! open again. So a ticket is matched at most once, and none is lost to a leader's
//! death.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::kv::{self, UpdateErrorKind};
use bytes::Bytes;
use futures_util::StreamExt as _;
use quicmatch_protocol::{frame, TicketId};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod commit;
mod settle;

use super::{
    mirror::{Held, Mirror},
    nats::Owners,
    tickets::parse_key,
    wire::{self, Reply, Request, RequestBody, Sender},
    Inner, Local,
};
use crate::matchmaker::{pool::Matched, shared::GroupResult, Matchmaker};

/// The lease's key in the leader bucket.
const LEASE_KEY: &str = "matchmaker";
/// Delete markers purged per pass at most, [`PURGES_AT_ONCE`] at a time.
const PURGES_PER_PASS: usize = 4096;
const PURGES_AT_ONCE: usize = 64;
/// Groups a pass commits at once: each is a few round trips to JetStream (and to its
/// homes), so a large pass commits in parallel rather than one group at a time.
const COMMITS_AT_ONCE: usize = 64;

/// A group's record: the one point where it exists, or the proof it never will.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum GroupValue {
    Committed {
        result: GroupResult,
        /// The node the group's token match was claimed for, at that revision.
        placement: Option<(String, u64)>,
    },
    Aborted,
}

/// The buckets the leader works with.
pub(super) struct Buckets {
    pub(super) leader: kv::Store,
    pub(super) tickets: kv::Store,
    pub(super) groups: kv::Store,
    pub(super) owners: Owners,
}

/// What one leadership works with.
struct Leading<'a> {
    inner: &'a Inner,
    local: &'a dyn Local,
    me: &'a Sender,
    buckets: &'a Buckets,
    mm: Matchmaker,
    /// When this node became leader: a node it does not see may just not be seen yet.
    since: Instant,
    lease: Arc<Lease>,
}

/// Competes for the lease every heartbeat and leads while it holds it, until `cancel`
/// (a stopping leader deletes the lease, so another takes over at once).
pub(super) async fn run(
    inner: Arc<Inner>,
    me: Sender,
    buckets: Buckets,
    local: Arc<dyn Local>,
    cancel: CancellationToken,
) {
    let heartbeat = inner.config.heartbeat;
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let Ok(value) = frame::encode_peer(&me) else {
        return;
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let sent = Instant::now();
        let created = tokio::time::timeout(
            heartbeat / 2,
            buckets.leader.create(LEASE_KEY, value.clone()),
        )
        .await;
        if let Ok(Ok(revision)) = created {
            let act_for = inner.config.leader_lease.saturating_sub(heartbeat);
            let lease = Arc::new(Lease {
                deadline: Mutex::new(sent + act_for),
                revision: AtomicU64::new(revision),
                lost: CancellationToken::new(),
                taken_over: AtomicBool::new(false),
            });
            let renewer = tokio::spawn(renew(
                buckets.leader.clone(),
                value.clone(),
                lease.clone(),
                heartbeat,
                act_for,
            ));
            let leading = Leading {
                inner: &inner,
                local: local.as_ref(),
                me: &me,
                buckets: &buckets,
                mm: local.matchmaker(),
                since: Instant::now(),
                lease: lease.clone(),
            };
            info!(node = %me.node, "cluster: leading the matchmaker");
            metrics::gauge!("quicmatch_cluster_matchmaker_leader").set(1.0);
            inner.leading.store(true, Ordering::Relaxed);
            leading.lead(&cancel).await;
            inner.leading.store(false, Ordering::Relaxed);
            inner.mirror_suspects.store(0, Ordering::Relaxed);
            metrics::gauge!("quicmatch_cluster_matchmaker_leader").set(0.0);
            renewer.abort();
            // Handed over (or lapsed): another node may take it at once. A lease taken
            // over is the new holder's, and stays.
            if !lease.taken_over.load(Ordering::Relaxed) {
                let revision = lease.revision.load(Ordering::Relaxed);
                let _ = tokio::time::timeout(
                    heartbeat / 2,
                    buckets
                        .leader
                        .delete_expect_revision(LEASE_KEY, Some(revision)),
                )
                .await;
            }
            if cancel.is_cancelled() {
                return;
            }
            info!(node = %me.node, "cluster: no longer leading the matchmaker");
        }
    }
}

/// The lease as the leader holds it: renewed beside the passes, so a long pass never
/// holds up a renewal.
struct Lease {
    /// Until when the leader may act: a heartbeat before the lease could lapse, counted
    /// from the send time of the last renewal that succeeded.
    deadline: Mutex<Instant>,
    revision: AtomicU64,
    /// Cancelled when the lease is lost or about to lapse.
    lost: CancellationToken,
    taken_over: AtomicBool,
}

impl Lease {
    fn deadline(&self) -> Instant {
        *self
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Renews the lease every heartbeat until it is lost or lapses.
async fn renew(
    kv: kv::Store,
    value: Bytes,
    lease: Arc<Lease>,
    heartbeat: Duration,
    act_for: Duration,
) {
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = tokio::time::sleep_until(lease.deadline().into()) => {
                warn!("cluster: matchmaker lease renewals failing; stepping down before it lapses");
                lease.lost.cancel();
                return;
            }
        }
        let sent = Instant::now();
        let revision = lease.revision.load(Ordering::Relaxed);
        let renewal =
            tokio::time::timeout(heartbeat / 2, kv.update(LEASE_KEY, value.clone(), revision))
                .await;
        match renewal {
            Ok(Ok(r)) => {
                lease.revision.store(r, Ordering::Relaxed);
                *lease
                    .deadline
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = sent + act_for;
            }
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                warn!("cluster: the matchmaker lease was taken over; stepping down");
                lease.taken_over.store(true, Ordering::Relaxed);
                lease.lost.cancel();
                return;
            }
            Ok(Err(e)) => warn!(error = %e, "cluster: matchmaker lease renewal failed"),
            Err(_) => warn!("cluster: matchmaker lease renewal unanswered"),
        }
    }
}

impl Leading<'_> {
    /// Leads until the lease is lost or would lapse, or `cancel`.
    async fn lead(&self, cancel: &CancellationToken) {
        // One watch over tickets and suspects, so the history of both is read (and every
        // later change applied) in the bucket's order before the first pass.
        let Ok(Ok(mut watch)) = tokio::time::timeout(
            self.inner.config.request_timeout,
            self.buckets.tickets.watch_many_with_history(["t.>", "s.>"]),
        )
        .await
        else {
            return;
        };
        let mut mirror = Mirror {
            pool: Arc::new(Mutex::new(self.mm.new_mirror())),
            open: HashMap::new(),
            claimed: HashMap::new(),
            deleted: VecDeque::new(),
            suspects: HashMap::new(),
            unreadable: HashMap::new(),
        };
        let mut passes = tokio::time::interval(self.mm.interval());
        passes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first pass waits for the bucket's history (or a request's time, for an
        // empty bucket, which replays nothing), and comes as soon as the history is
        // read: a large pool's new leader does not wait another interval.
        let mut caught_up = false;
        let mut due = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.lease.lost.cancelled() => return,
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => {
                        if entry.key.starts_with("s.") {
                            mirror.suspect(&entry);
                            self.inner.mirror_suspects.store(mirror.suspects.len(), Ordering::Relaxed);
                        } else {
                            mirror.apply(&self.mm, &entry);
                        }
                        if entry.delta == 0 && !caught_up {
                            caught_up = true;
                            self.caught_up(&mirror);
                            if due && !self.expired() {
                                due = false;
                                passes.reset();
                                self.pass(&mut mirror).await;
                            }
                        }
                    }
                    _ => {
                        warn!("cluster: the tickets watch ended; stepping down");
                        return;
                    }
                },
                _ = passes.tick() => {
                    // An empty bucket replays nothing; a history still arriving after a
                    // whole lease (tickets pouring in) is passed over as it stands.
                    let waited = self.since.elapsed();
                    let empty = mirror.open.is_empty() && mirror.claimed.is_empty();
                    if !caught_up
                        && ((empty && waited >= self.inner.config.request_timeout)
                            || waited >= self.inner.config.leader_lease)
                    {
                        caught_up = true;
                        self.caught_up(&mirror);
                    }
                    due = !caught_up;
                    if caught_up && !self.expired() {
                        self.pass(&mut mirror).await;
                    }
                }
            }
        }
    }

    /// The mirror holds the bucket's history: how long reading it took, from taking
    /// the lease.
    fn caught_up(&self, mirror: &Mirror) {
        let took = self.since.elapsed();
        metrics::histogram!("quicmatch_cluster_matchmaker_catchup_seconds")
            .record(took.as_secs_f64());
        info!(
            tickets = mirror.open.len() + mirror.claimed.len(),
            took_ms = took.as_millis() as u64,
            "cluster: matchmaker mirror caught up"
        );
    }

    /// The lease is lost, or this leader may no longer act on it.
    fn expired(&self) -> bool {
        self.lease.lost.is_cancelled() || Instant::now() >= self.lease.deadline()
    }

    /// One pass: tickets of nodes that are gone leave, claims left by an earlier
    /// leader (or a failed delivery) are settled, then the pool is passed over and
    /// each group committed, while the lease holds.
    async fn pass(&self, mirror: &mut Mirror) {
        self.drop_gone(mirror).await;
        self.cancel_unreadable(mirror).await;
        self.sweep(mirror).await;
        let pool = mirror.pool.clone();
        let mm = self.mm.clone();
        let Ok((matched, _)) =
            tokio::task::spawn_blocking(move || mm.pass_over(&pool, Instant::now())).await
        else {
            warn!("cluster: matchmaker pass failed");
            return;
        };
        let expired = mirror.pool().take_expired();
        if !expired.is_empty() {
            metrics::counter!("quicmatch_matchmaker_expired_total").increment(expired.len() as u64);
            let mut by_home: BTreeMap<String, Vec<Held>> = BTreeMap::new();
            for c in expired {
                if let Some(held) = mirror.open.remove(&c.ticket) {
                    by_home.entry(held.home.clone()).or_default().push(held);
                }
            }
            // The home is told first: a ticket it was not told of stays in the pool
            // (it expires again at the next pass, and the home is asked again).
            for (home, held) in by_home {
                let ids: Vec<TicketId> = held
                    .iter()
                    .filter_map(|h| parse_key(&h.key).map(|(_, t)| t))
                    .collect();
                if self.cancel_at(&home, ids, "expired").await {
                    for h in held {
                        self.delete(&h).await;
                    }
                } else {
                    for h in held {
                        mirror.restore(&self.mm, h);
                    }
                }
            }
        }
        let committing = Instant::now();
        let groups = matched.len();
        // Each group's tickets leave the mirror now; what a commit could not claim
        // comes back after.
        let taken: Vec<(Matched, Vec<Held>)> = matched
            .into_iter()
            .map(|m| {
                let held = commit::tickets_of(&m)
                    .iter()
                    .filter_map(|t| mirror.open.remove(t))
                    .collect();
                (m, held)
            })
            .collect();
        let commits = futures_util::stream::iter(taken)
            .map(|(m, held)| async move {
                if self.expired() {
                    // Not committed: the groups' tickets stay open in the bucket, for
                    // the next leader's mirror (this one steps down with its mirror).
                    return held;
                }
                self.commit(m, held).await
            })
            .buffer_unordered(COMMITS_AT_ONCE);
        let back: Vec<Vec<Held>> = commits.collect().await;
        for held in back.into_iter().flatten() {
            mirror.restore(&self.mm, held);
        }
        if groups > 0 {
            metrics::histogram!("quicmatch_cluster_matchmaker_commit_seconds")
                .record(committing.elapsed().as_secs_f64());
        }
        self.purge_markers(mirror).await;
    }

    /// Removes from the bucket the delete markers the mirror has applied (at most
    /// [`PURGES_PER_PASS`] a pass). Only the leader purges, and only markers its own
    /// watch delivered: a purged marker is one no mirror still needs (a later leader
    /// reading the history simply never sees that key), and ticket keys are never
    /// written again once deleted.
    async fn purge_markers(&self, mirror: &mut Mirror) {
        let store = &self.buckets.tickets;
        let mut purged = 0u64;
        while purged < PURGES_PER_PASS as u64 && !mirror.deleted.is_empty() && !self.expired() {
            let n = mirror.deleted.len().min(PURGES_AT_ONCE);
            let keys: Vec<(String, u64)> = mirror.deleted.drain(..n).collect();
            // Up to the marker only: a key written again since (a session suspected
            // anew) keeps its newer value.
            let purges = keys.iter().map(|(key, revision)| {
                let purge = store
                    .stream
                    .purge()
                    .filter(format!("{}{}", store.prefix, key))
                    .sequence(revision.saturating_add(1));
                self.within(std::future::IntoFuture::into_future(purge))
            });
            let outcomes = futures_util::future::join_all(purges).await;
            let mut failed = false;
            for (key, outcome) in keys.into_iter().zip(outcomes) {
                if matches!(outcome, Some(Ok(_))) {
                    purged += 1;
                } else {
                    // NATS is slow or out: again after the next pass.
                    mirror.deleted.push_back(key);
                    failed = true;
                }
            }
            if failed {
                break;
            }
        }
        if purged > 0 {
            metrics::counter!("quicmatch_cluster_ticket_markers_purged_total").increment(purged);
        }
    }

    /// Deletes a ticket at the revision the mirror holds; whether it was deleted.
    async fn delete(&self, held: &Held) -> bool {
        let deleted = self.within(
            self.buckets
                .tickets
                .delete_expect_revision(&held.key, Some(held.revision)),
        );
        matches!(deleted.await, Some(Ok(())))
    }

    /// Waits for a bucket operation at most `request_timeout`.
    async fn within<T>(&self, op: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::time::timeout(self.inner.config.request_timeout, op)
            .await
            .ok()
    }

    /// Tells a home that some of its tickets were cancelled; whether it was told.
    async fn cancel_at(&self, home: &str, tickets: Vec<TicketId>, reason: &str) -> bool {
        if home == self.me.node {
            self.mm.cancelled_elsewhere(&tickets, reason);
            return true;
        }
        let body = RequestBody::TicketsCancelled {
            tickets,
            reason: reason.to_owned(),
        };
        self.ask(home, body).await
    }

    /// Asks a home; whether it answered that it applied the request.
    async fn ask(&self, home: &str, body: RequestBody) -> bool {
        let Some(bus) = self.inner.state().bus.clone() else {
            return false;
        };
        let request = Request {
            from: self.me.clone(),
            body,
        };
        let Ok(payload) = frame::encode_peer(&request) else {
            return false;
        };
        let subject = wire::request_subject(&self.inner.config.name, home);
        match bus
            .request(subject, payload, self.inner.config.request_timeout)
            .await
        {
            Ok(reply) => matches!(frame::decode_peer::<Reply>(&reply), Ok(Reply::Done)),
            Err(_) => {
                metrics::counter!("quicmatch_cluster_request_failures_total").increment(1);
                false
            }
        }
    }
}

fn group_key(group: u64) -> String {
    format!("g.{group:016x}")
}

/// A group's number, from ring.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u64::from_le_bytes(bytes)
}
