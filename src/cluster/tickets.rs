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
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_nats::jetstream::kv;
use futures_util::StreamExt as _;
use quicmatch_protocol::{frame, TicketId};
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
    let rest = key.strip_prefix("t.")?;
    let (node, id) = rest.rsplit_once('.')?;
    let id = uuid::Uuid::try_parse(id).ok()?;
    Some((node.to_owned(), TicketId(id)))
}

/// Milliseconds since 1970, for the pool's order across nodes.
pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One write of this node's tickets, in the order they happened.
pub(super) enum Write {
    Put(TicketId, Arc<TicketRecord>),
    Delete(Vec<TicketId>),
}

/// The writer's queue and the bucket it writes to (set while joined).
pub(super) struct Home {
    writes: mpsc::UnboundedSender<Write>,
    queue: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Write>>>,
    pub(super) store: watch::Sender<Option<kv::Store>>,
}

impl Default for Home {
    fn default() -> Self {
        let (writes, queue) = mpsc::unbounded_channel();
        Self {
            writes,
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
        let _ = self.0.home.writes.send(Write::Put(ticket, record));
    }

    fn removed(&self, tickets: Vec<TicketId>) {
        let _ = self.0.home.writes.send(Write::Delete(tickets));
    }
}

/// Writes this node's tickets until `cancel`, one at a time so a ticket's delete never
/// overtakes its put.
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
    let wait = inner.config.request_timeout;
    loop {
        let write = tokio::select! {
            () = cancel.cancelled() => return,
            w = queue.recv() => match w { Some(w) => w, None => return },
        };
        match write {
            Write::Put(ticket, record) => {
                let key = ticket_key(&inner.node, ticket);
                let value = TicketValue::Open {
                    record: (*record).clone(),
                    added_ms: unix_ms(),
                };
                let written = match (store(&inner, wait).await, frame::encode_peer(&value)) {
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
                    if let Some(kv) = store(&inner, wait).await {
                        let _ = tokio::time::timeout(wait, kv.delete(&key)).await;
                    }
                }
            }
            Write::Delete(tickets) => {
                for ticket in tickets {
                    let key = ticket_key(&inner.node, ticket);
                    // A delete that fails here is done when the node next joins its
                    // cluster (every key of its own not in its pool goes then).
                    for _ in 0..3 {
                        let Some(kv) = store(&inner, wait).await else {
                            break;
                        };
                        if let Ok(Ok(())) = tokio::time::timeout(wait, kv.delete(&key)).await {
                            break;
                        }
                        tokio::time::sleep(inner.config.heartbeat).await;
                    }
                }
            }
        }
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
    let prefix = format!("t.{}.", inner.node);
    let mut there = HashSet::new();
    let mut keys = kv.keys().await.map_err(|e| e.to_string())?;
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        if key.starts_with(&prefix) {
            there.insert(key);
        }
    }
    let own = local.matchmaker().own_records();
    let mine: HashSet<String> = own
        .iter()
        .map(|(t, _)| ticket_key(&inner.node, *t))
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
    }
}
