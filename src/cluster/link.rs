//! Links (docs/cluster.md §5.5): what one node sends another, in order. A [`Link`] to a
//! peer incarnation queues items without waiting (tables push to it under their locks)
//! and a writer task publishes them in numbered batches; [`Inbound`] checks the numbers
//! on the receiving side, so a batch lost in NATS (a reconnection, a full subscription)
//! shows as a gap. Nothing is replayed: a gap, or a link whose queue passes
//! [`LINK_BUFFER`], resets the link, which ends every membership between the two nodes
//! with an event to each player, so nobody's picture of a match is ever silently wrong.
//!
//! Datagrams have a bounded queue of their own beside the items; a full one drops them
//! (counted), as stale unreliable data should be.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
};

use quicmatch_protocol::frame;
use tokio::sync::mpsc;
use tracing::warn;

use super::{
    nats::Bus,
    wire::{self, DatagramBody, DatagramMsg, Item, LinkMsg, Sender},
};

/// Reliable bytes a link may hold unsent before it is reset.
pub(super) const LINK_BUFFER: usize = 16 << 20;
/// Datagrams a link may hold unsent; past this, new ones are dropped.
pub(super) const DATAGRAM_QUEUE: usize = 4096;
/// Items per batch at most.
const BATCH_ITEMS: usize = 64;
/// Bytes (estimated) per batch at most, well inside the 64 KiB message limit.
const BATCH_BYTES: usize = 48 * 1024;

/// An item's size, as counted for batches and the buffer bound.
pub(super) fn size(item: &Item) -> usize {
    32 + match item {
        Item::Push { sessions, body, .. } => body.len() + 17 * sessions.len(),
        Item::Data { data, targets, .. } => {
            data.len() + targets.as_ref().map_or(0, |t| 17 * t.len())
        }
        Item::Leave { .. } | Item::Reset => 40,
    }
}

/// The sending side of a link to one peer incarnation; cheap to share.
pub(super) struct Link {
    pub(super) peer: Sender,
    items: mpsc::UnboundedSender<Item>,
    datagrams: mpsc::Sender<DatagramBody>,
    /// Bytes queued and not yet published.
    queued: Arc<AtomicUsize>,
    /// Set once the link was reset: it takes nothing more.
    broken: Arc<AtomicBool>,
    /// Where a reset is reported, to be acted on outside every lock.
    resets: mpsc::UnboundedSender<Sender>,
}

impl Link {
    /// A link from `me` to `peer`, its writer started on the current runtime.
    pub(super) fn start(
        bus: Bus,
        cluster: &str,
        me: Sender,
        peer: Sender,
        resets: mpsc::UnboundedSender<Sender>,
    ) -> Arc<Self> {
        let (items, items_rx) = mpsc::unbounded_channel();
        let (datagrams, datagrams_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let broken = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            bus,
            link_subject: wire::link_subject(cluster, &peer.node),
            datagram_subject: wire::datagram_subject(cluster, &peer.node),
            me,
            to: peer.incarnation,
            seq: 0,
            queued: queued.clone(),
        };
        tokio::spawn(writer.run(items_rx, datagrams_rx));
        Arc::new(Self {
            peer,
            items,
            datagrams,
            queued,
            broken,
            resets,
        })
    }

    /// Queues an item; past [`LINK_BUFFER`] unsent bytes the link is reset instead.
    pub(super) fn push(&self, item: Item) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let bytes = size(&item);
        if self.queued.fetch_add(bytes, Ordering::Relaxed) + bytes > LINK_BUFFER {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            warn!(peer = %self.peer.node, "cluster: link over its buffer; resetting it");
            self.reset();
            return;
        }
        if self.items.send(item).is_err() {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Queues a datagram; a full queue drops it.
    pub(super) fn datagram(&self, body: DatagramBody) {
        if self.datagrams.try_send(body).is_err() {
            metrics::counter!("quicmatch_cluster_datagrams_dropped_total", "reason" => "queue_full")
                .increment(1);
        }
    }

    /// Ends the link: it takes nothing more, and the cluster ends the memberships it
    /// carried.
    pub(super) fn reset(&self) {
        if !self.broken.swap(true, Ordering::Relaxed) {
            metrics::counter!("quicmatch_cluster_link_resets_total").increment(1);
            let _ = self.resets.send(self.peer.clone());
        }
    }

    /// Takes items again once the reset was acted on.
    pub(super) fn repair(&self) {
        self.broken.store(false, Ordering::Relaxed);
    }
}

struct Writer {
    bus: Bus,
    link_subject: String,
    datagram_subject: String,
    me: Sender,
    to: u64,
    seq: u64,
    queued: Arc<AtomicUsize>,
}

impl Writer {
    async fn run(
        mut self,
        mut items: mpsc::UnboundedReceiver<Item>,
        mut datagrams: mpsc::Receiver<DatagramBody>,
    ) {
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                biased;
                item = items.recv() => match item {
                    Some(item) => {
                        batch.push(item);
                        self.send_items(&mut items, &mut batch).await;
                    }
                    None => return,
                },
                Some(body) = datagrams.recv() => self.send_datagram(body).await,
            }
        }
    }

    /// Publishes `batch` and whatever else is queued, as numbered messages.
    async fn send_items(
        &mut self,
        items: &mut mpsc::UnboundedReceiver<Item>,
        batch: &mut Vec<Item>,
    ) {
        loop {
            let mut bytes: usize = batch.iter().map(size).sum();
            while batch.len() < BATCH_ITEMS && bytes < BATCH_BYTES {
                match items.try_recv() {
                    Ok(item) => {
                        bytes += size(&item);
                        batch.push(item);
                    }
                    Err(_) => break,
                }
            }
            let counted: usize = batch.iter().map(size).sum();
            let items_now = coalesce(std::mem::take(batch));
            self.seq += 1;
            let msg = LinkMsg {
                from: self.me.clone(),
                to: self.to,
                seq: self.seq,
                items: items_now,
            };
            // A batch that cannot be sent shows as a gap to the receiver, which resets
            // the link: never a silent loss.
            match frame::encode_peer(&msg) {
                Ok(payload) => {
                    metrics::counter!("quicmatch_cluster_messages_total", "dir" => "out", "kind" => "link")
                        .increment(1);
                    if let Err(e) = self.bus.publish(self.link_subject.clone(), payload).await {
                        warn!(error = %e, "cluster: link batch not published");
                    }
                }
                Err(e) => warn!(error = %e, "cluster: link batch did not encode"),
            }
            self.queued.fetch_sub(counted, Ordering::Relaxed);
            match items.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => return,
            }
        }
    }

    async fn send_datagram(&mut self, body: DatagramBody) {
        let msg = DatagramMsg {
            from: self.me.clone(),
            to: self.to,
            body,
        };
        match frame::encode_peer(&msg) {
            Ok(payload) => {
                metrics::counter!("quicmatch_cluster_messages_total", "dir" => "out", "kind" => "datagram")
                    .increment(1);
                if self
                    .bus
                    .publish(self.datagram_subject.clone(), payload)
                    .await
                    .is_err()
                {
                    metrics::counter!("quicmatch_cluster_datagrams_dropped_total", "reason" => "unpublished")
                        .increment(1);
                }
            }
            Err(_) => {
                metrics::counter!("quicmatch_cluster_datagrams_dropped_total", "reason" => "too_large")
                    .increment(1);
            }
        }
    }
}

/// Merges consecutive pushes of the same frame to members of one match into one item
/// with every recipient: the tables push a broadcast member by member.
fn coalesce(items: Vec<Item>) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::with_capacity(items.len());
    for item in items {
        if let (
            Some(Item::Push {
                match_id: m0,
                sessions,
                lane: l0,
                body: b0,
            }),
            Item::Push {
                match_id,
                sessions: more,
                lane,
                body,
            },
        ) = (out.last_mut(), &item)
        {
            let same = *m0 == *match_id
                && *l0 == *lane
                && b0.len() == body.len()
                && b0.as_ptr() == body.as_ptr();
            if same && 17 * (sessions.len() + more.len()) + b0.len() < BATCH_BYTES {
                sessions.extend_from_slice(more);
                continue;
            }
        }
        out.push(item);
    }
    out
}

/// What the receiving side does with a numbered batch.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Accept {
    /// The next one: apply it.
    Next,
    /// Batches before it were lost: reset the link, then apply it (nothing it carries
    /// for the memberships just ended is delivered).
    Gap,
    /// Seen before (NATS redelivered it): drop it.
    Old,
}

/// The numbers seen on each incoming link.
#[derive(Default)]
pub(super) struct Inbound {
    last: HashMap<Sender, u64>,
}

impl Inbound {
    pub(super) fn accept(&mut self, from: &Sender, seq: u64) -> Accept {
        let last = self.last.get(from).copied().unwrap_or(0);
        if seq <= last {
            return Accept::Old;
        }
        self.last.insert(from.clone(), seq);
        if seq == last + 1 {
            Accept::Next
        } else {
            Accept::Gap
        }
    }

    /// Forgets a peer's incarnations (it was lost or stopped).
    pub(super) fn forget(&mut self, node: &str) {
        self.last.retain(|s, _| s.node != node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use quicmatch_protocol::{MatchId, SessionId};

    fn sender(node: &str, incarnation: u64) -> Sender {
        Sender {
            node: node.into(),
            incarnation,
        }
    }

    #[test]
    fn numbers_in_order_pass_a_gap_is_reported_once_and_repeats_are_dropped() {
        let mut inbound = Inbound::default();
        let a = sender("a", 1);
        assert_eq!(inbound.accept(&a, 1), Accept::Next);
        assert_eq!(inbound.accept(&a, 2), Accept::Next);
        assert_eq!(inbound.accept(&a, 2), Accept::Old);
        assert_eq!(inbound.accept(&a, 5), Accept::Gap);
        assert_eq!(inbound.accept(&a, 6), Accept::Next);
        assert_eq!(inbound.accept(&a, 4), Accept::Old);
        // A new incarnation numbers from 1; one whose start was missed is a gap.
        assert_eq!(inbound.accept(&sender("a", 2), 1), Accept::Next);
        assert_eq!(inbound.accept(&sender("b", 1), 3), Accept::Gap);
        inbound.forget("a");
        assert_eq!(inbound.accept(&a, 7), Accept::Gap);
    }

    #[test]
    fn a_broadcast_pushed_member_by_member_travels_once() {
        let m = MatchId::new_random();
        let body = Bytes::from_static(b"frame");
        let other = Bytes::from(b"frame".to_vec());
        let push = |s: SessionId, body: &Bytes, lane| Item::Push {
            match_id: m,
            sessions: vec![s],
            lane,
            body: body.clone(),
        };
        let (s1, s2, s3, s4) = (
            SessionId::new_random(),
            SessionId::new_random(),
            SessionId::new_random(),
            SessionId::new_random(),
        );
        let out = coalesce(vec![
            push(s1, &body, Some(1)),
            push(s2, &body, Some(1)),
            push(s3, &body, None),
            // Equal bytes but another frame: kept apart (its order matters).
            push(s4, &other, None),
            Item::Leave {
                match_id: m,
                session: s1,
            },
            push(s1, &body, Some(1)),
        ]);
        assert_eq!(out.len(), 5);
        assert_eq!(
            out[0],
            Item::Push {
                match_id: m,
                sessions: vec![s1, s2],
                lane: Some(1),
                body: body.clone(),
            }
        );
        assert!(matches!(&out[1], Item::Push { sessions, .. } if sessions == &vec![s3]));
    }
}
