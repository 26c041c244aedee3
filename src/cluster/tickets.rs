//! A home node's side of the cluster's one matchmaker pool (docs/cluster.md §6.1): its
//! tickets written to the tickets bucket (`qm_<c>_tickets`, key `t.<node>.<ticket>`)
//! as they enter its own pool and deleted as they leave it, in order, by one writer
//! task; the bucket brought back in line with the node's own pool each time it joins
//! its cluster; and the results and cancellations the leader delivers.
//!
//! An add is refused with `CLUSTER_UNAVAILABLE` while the node is out of its cluster;
//! one whose write then fails is cancelled (`MatchmakerTicketCancelled`, reason
//! `cluster unavailable`), so a ticket is never silently left out of the pool.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt as _;
use quicmatch_protocol::{frame, SessionId, TicketId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Inner, Local};
use crate::matchmaker::shared::{GroupResult, SharedPool, TicketRecord};

/// A ticket in the tickets bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum TicketValue {
    /// In the pool, since `added_ms` (Unix milliseconds: the pool's order everywhere).
    Open { record: TicketRecord, added_ms: u64 },
    /// Taken by the leader for `group`, which commits (its record `Committed`) or not.
    Claimed {
        group: u64,
        record: TicketRecord,
        added_ms: u64,
    },
}

/// The key of `ticket`, homed on `node`.
pub(super) fn ticket_key(node: &str, ticket: TicketId) -> String {
    format!("t.{node}.{}", ticket.0.simple())
}

/// The home and ticket a key names.
pub(super) fn parse_key(key: &str) -> Option<(String, TicketId)> {
    node_key(key, "t.").map(|(node, id)| (node, TicketId(id)))
}

/// The node and id of a `<prefix><node>.<uuid>` key.
fn node_key(key: &str, prefix: &str) -> Option<(String, uuid::Uuid)> {
    let (node, id) = key.strip_prefix(prefix)?.rsplit_once('.')?;
    Some((node.to_owned(), uuid::Uuid::try_parse(id).ok()?))
}

/// Milliseconds since 1970, for the pool's order across nodes.
pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The key marking `session`, homed on `node`, suspect.
pub(super) fn suspect_key(node: &str, session: SessionId) -> String {
    format!("s.{node}.{}", session.0.simple())
}

/// The home and session a suspect key names.
pub(super) fn parse_suspect_key(key: &str) -> Option<(String, SessionId)> {
    node_key(key, "s.").map(|(node, id)| (node, SessionId(id)))
}

/// One write of this node's tickets (and suspect sessions), in the order they
/// happened.
pub(super) enum Write {
    Put(TicketId, Arc<TicketRecord>),
    Delete(Vec<TicketId>),
    Suspect(SessionId, bool),
}

/// The writer's queue and the bucket it writes to (set while joined).
pub(super) struct Home {
    writes: mpsc::UnboundedSender<Write>,
    /// Ticket writes queued or in flight.
    pending: AtomicUsize,
    queue: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Write>>>,
    pub(super) store: watch::Sender<Option<kv::Store>>,
}

impl Default for Home {
    fn default() -> Self {
        let (writes, queue) = mpsc::unbounded_channel();
        Self {
            writes,
            pending: AtomicUsize::new(0),
            queue: std::sync::Mutex::new(Some(queue)),
            store: watch::Sender::new(None),
        }
    }
}

/// The matchmaker's way into the cluster's pool.
pub(super) struct Shared(pub(super) Arc<Inner>);

impl SharedPool for Shared {
    fn available(&self) -> bool {
        self.0.state().bus.is_some() && self.0.home.store.borrow().is_some()
    }

    fn added(&self, ticket: TicketId, record: Arc<TicketRecord>) {
        self.queued(1);
        let _ = self.0.home.writes.send(Write::Put(ticket, record));
    }

    fn removed(&self, tickets: Vec<TicketId>) {
        let n = tickets.len();
        self.queued(n);
        let _ = self.0.home.writes.send(Write::Delete(tickets));
    }

    fn suspected(&self, session: SessionId, suspect: bool) {
        // Out of the cluster, nothing queues: joining again writes the node's suspects
        // as they are then.
        if !self.available() {
            return;
        }
        self.queued(1);
        let _ = self.0.home.writes.send(Write::Suspect(session, suspect));
    }
}

impl Shared {
    /// Counts `n` more writes queued.
    fn queued(&self, n: usize) {
        let now = self.0.home.pending.fetch_add(n, Ordering::Relaxed) + n;
        metrics::gauge!("quicmatch_cluster_ticket_writes_pending").set(now as f64);
    }
}

/// Writes waited on together at most: one wave's puts and deletes go out at once and
/// their acknowledgements are awaited together.
const WRITES_AT_ONCE: usize = 1024;

/// One key's write.
enum Op {
    Put(TicketId, Arc<TicketRecord>),
    Delete(TicketId),
    Suspect(SessionId, bool),
}

impl Op {
    /// What the write is to: two writes to one key never share a wave.
    fn target(&self) -> uuid::Uuid {
        match self {
            Self::Put(t, _) | Self::Delete(t) => t.0,
            Self::Suspect(s, _) => s.0,
        }
    }
}

/// Writes this node's tickets until `cancel`, in waves of distinct tickets: writes of
/// different tickets go out together, and a ticket's delete waits for the wave holding
/// its put, so it never overtakes it.
pub(super) async fn writer(inner: Arc<Inner>, local: Arc<dyn Local>, cancel: CancellationToken) {
    let Some(mut queue) = inner
        .home
        .queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
        return;
    };
    let mut ops: Vec<Op> = Vec::new();
    loop {
        let write = tokio::select! {
            () = cancel.cancelled() => return,
            w = queue.recv() => match w { Some(w) => w, None => return },
        };
        let mut next = Some(write);
        while let Some(write) = next.take() {
            match write {
                Write::Put(t, r) => ops.push(Op::Put(t, r)),
                Write::Delete(ts) => ops.extend(ts.into_iter().map(Op::Delete)),
                Write::Suspect(session, suspect) => ops.push(Op::Suspect(session, suspect)),
            }
            if ops.len() < WRITES_AT_ONCE {
                next = queue.try_recv().ok();
            }
        }
        let mut wave: Vec<Op> = Vec::new();
        let mut in_wave: HashSet<uuid::Uuid> = HashSet::new();
        for op in ops.drain(..) {
            // A suspicion goes alone: a session's tickets leave the pool before the
            // mark that kept them out of passes does.
            let alone = matches!(op, Op::Suspect(..));
            if alone || !in_wave.insert(op.target()) {
                write_wave(&inner, local.as_ref(), std::mem::take(&mut wave)).await;
                in_wave.clear();
                in_wave.insert(op.target());
            }
            wave.push(op);
            if alone {
                write_wave(&inner, local.as_ref(), std::mem::take(&mut wave)).await;
                in_wave.clear();
            }
        }
        write_wave(&inner, local.as_ref(), wave).await;
    }
}

/// Writes one wave (no ticket twice) and waits for all of it.
async fn write_wave(inner: &Inner, local: &dyn Local, wave: Vec<Op>) {
    if wave.is_empty() {
        return;
    }
    let n = wave.len();
    let writes = wave.into_iter().map(|op| async move {
        match op {
            Op::Put(ticket, record) => put(inner, local, ticket, &record).await,
            Op::Delete(ticket) => delete(inner, ticket_key(&inner.node, ticket)).await,
            Op::Suspect(session, true) => suspect(inner, session).await,
            Op::Suspect(session, false) => delete(inner, suspect_key(&inner.node, session)).await,
        }
    });
    futures_util::future::join_all(writes).await;
    let left = inner
        .home
        .pending
        .fetch_sub(n, Ordering::Relaxed)
        .saturating_sub(n);
    metrics::gauge!("quicmatch_cluster_ticket_writes_pending").set(left as f64);
}

/// Shares one ticket; one that cannot be shared is cancelled, so it is never silently
/// left out of the pool.
async fn put(inner: &Inner, local: &dyn Local, ticket: TicketId, record: &TicketRecord) {
    let wait = inner.config.request_timeout;
    let key = ticket_key(&inner.node, ticket);
    let value = TicketValue::Open {
        record: record.clone(),
        added_ms: unix_ms(),
    };
    let written = match (store(inner, wait).await, frame::encode_peer(&value)) {
        (Some(kv), Ok(value)) => {
            matches!(
                tokio::time::timeout(wait, kv.put(&key, value)).await,
                Ok(Ok(_))
            )
        }
        _ => false,
    };
    if !written {
        warn!(%ticket, "cluster: a matchmaker ticket could not be shared; cancelled");
        local
            .matchmaker()
            .cancelled_elsewhere(&[ticket], "cluster unavailable");
        // A put that timed out may have been stored after all.
        if let Some(kv) = store(inner, wait).await {
            let _ = tokio::time::timeout(wait, kv.delete(&key)).await;
        }
    }
}

/// Marks one session suspect in the shared pool, trying three times. One that fails
/// here is written when the node next joins its cluster.
async fn suspect(inner: &Inner, session: SessionId) {
    let wait = inner.config.request_timeout;
    let key = suspect_key(&inner.node, session);
    for _ in 0..3 {
        let Some(kv) = store(inner, wait).await else {
            break;
        };
        if let Ok(Ok(_)) = tokio::time::timeout(wait, kv.put(&key, Bytes::new())).await {
            break;
        }
        tokio::time::sleep(inner.config.heartbeat).await;
    }
}

/// Takes one ticket out of the shared pool, or clears a session's suspicion. One that
/// fails here is done when the node next joins its cluster (every key of its own not in
/// its pool goes then).
async fn delete(inner: &Inner, key: String) {
    let wait = inner.config.request_timeout;
    for _ in 0..3 {
        let Some(kv) = store(inner, wait).await else {
            break;
        };
        if let Ok(Ok(())) = tokio::time::timeout(wait, kv.delete(&key)).await {
            break;
        }
        tokio::time::sleep(inner.config.heartbeat).await;
    }
}

/// The tickets bucket, waiting at most `wait` for the node to be joined.
async fn store(inner: &Inner, wait: Duration) -> Option<kv::Store> {
    let mut rx = inner.home.store.subscribe();
    let found = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
    match found {
        Ok(Ok(store)) => store.clone(),
        _ => None,
    }
}

/// Brings the bucket in line with this node's own pool after it joined its cluster:
/// its keys for tickets it no longer has go, and its tickets missing there (deleted as
/// a lost node's while it was away) are written again.
pub(super) async fn rejoined(
    inner: &Inner,
    kv: &kv::Store,
    local: &dyn Local,
) -> Result<(), String> {
    let prefixes = [format!("t.{}.", inner.node), format!("s.{}.", inner.node)];
    let mut there = HashSet::new();
    let mut keys = kv.keys().await.map_err(|e| e.to_string())?;
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        if prefixes.iter().any(|p| key.starts_with(p.as_str())) {
            there.insert(key);
        }
    }
    let mm = local.matchmaker();
    let own = mm.own_records();
    let suspects: Vec<String> = mm
        .own_suspects()
        .into_iter()
        .map(|s| suspect_key(&inner.node, s))
        .collect();
    let mine: HashSet<String> = own
        .iter()
        .map(|(t, _)| ticket_key(&inner.node, *t))
        .chain(suspects.iter().cloned())
        .collect();
    for key in there.difference(&mine) {
        kv.delete(key).await.map_err(|e| e.to_string())?;
    }
    for (ticket, record) in own {
        let key = ticket_key(&inner.node, ticket);
        if there.contains(&key) {
            continue;
        }
        let value = TicketValue::Open {
            record: (*record).clone(),
            added_ms: unix_ms(),
        };
        let value = frame::encode_peer(&value).map_err(|e| e.to_string())?;
        kv.put(&key, value).await.map_err(|e| e.to_string())?;
    }
    for key in suspects {
        if !there.contains(&key) {
            kv.put(&key, Bytes::new())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// A group the leader formed, delivered to this node's sessions among it; with
/// `placement`, the group's token match is this node's (the leader claimed its id for
/// this node at that revision), so a member from another node joins it here.
pub(super) fn deliver(
    inner: &Inner,
    local: &dyn Local,
    result: &GroupResult,
    placement: Option<u64>,
) {
    let mm = local.matchmaker();
    if let (Some(revision), Some(id)) = (placement, result.token_match(&mm)) {
        inner.state().claims.insert(id, (revision, None));
    }
    mm.deliver_result(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_home_and_ticket() {
        let t = TicketId(uuid::Uuid::from_u128(0xabc));
        let key = ticket_key("node-a_1", t);
        assert_eq!(parse_key(&key), Some(("node-a_1".to_owned(), t)));
        assert_eq!(parse_key("t.node"), None);
        assert_eq!(parse_key("g.1"), None);
        assert_eq!(parse_key("t.node.not-a-uuid"), None);
        let s = SessionId(uuid::Uuid::from_u128(0xdef));
        let key = suspect_key("node-a", s);
        assert_eq!(parse_suspect_key(&key), Some(("node-a".to_owned(), s)));
        assert_eq!(parse_key(&key), None, "a suspect key is no ticket's");
    }
}
