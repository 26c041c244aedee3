//! Links (docs/cluster.md §5.5): what one node sends another, in order. A [`Link`] to a
//! peer incarnation queues items without waiting (tables push to it under their locks)
//! and a writer task publishes them in numbered batches, keeping what it sent (up to
//! `cluster.link_buffer` bytes) to publish again when asked, and a probe with its latest
//! number every `heartbeat`, so even a lost last batch shows. [`Inbound`] checks the
//! numbers on the receiving side: a batch lost in NATS (a reconnection, a full
//! subscription) is a gap; the batches after it wait while the sender is asked to
//! publish the missing ones again. A gap that cannot be filled (the sender no longer
//! holds it, or does not answer), or a link whose queue passes `cluster.link_buffer`, resets
//! the link, which ends every membership between the two nodes with an event to each
//! player, so nobody's picture of a match is ever silently wrong.
//!
//! Datagrams have a bounded queue of their own beside the items; a full one drops them
//! (counted), as stale unreliable data should be; they are never published again.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use quicmatch_protocol::frame;
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::ClusterConfig;

use super::{
    nats::Bus,
    wire::{self, DatagramBody, DatagramMsg, Item, LinkMsg, Sender},
};

/// Batches a receiver holds behind a gap while it waits for the replay; past this the
/// link is reset.
const HELD_BATCHES: usize = 1024;
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
        Item::Leave { .. } => 40,
        Item::Ended { reason, .. } => 40 + reason.len(),
        Item::PartyPush { sessions, body } => body.len() + 17 * sessions.len(),
        Item::PartyData { data, .. } => 40 + data.len(),
        Item::PartyGone { .. } | Item::PartyLeave { .. } => 40,
    }
}

/// What the writer is asked to do.
enum Cmd {
    Item(Item),
    /// Publish again what was sent from this number on.
    Replay(u64),
}

/// Batches already published, kept for a replay.
#[derive(Default)]
struct Sent {
    batches: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

/// The sending side of a link to one peer incarnation; cheap to share.
pub(super) struct Link {
    pub(super) peer: Sender,
    cmds: mpsc::UnboundedSender<Cmd>,
    datagrams: mpsc::Sender<DatagramBody>,
    /// Bytes queued and not yet published.
    queued: Arc<AtomicUsize>,
    sent: Arc<Mutex<Sent>>,
    /// Set once the link was reset: it takes nothing until the reset was acted on.
    broken: AtomicBool,
    /// Where a reset is reported, to be acted on outside every lock.
    resets: mpsc::UnboundedSender<Sender>,
    /// `cluster.link_buffer`.
    buffer: usize,
}

impl Link {
    /// A link from `me` to `peer`, its writer started on the current runtime; it
    /// probes every `heartbeat`.
    pub(super) fn start(
        bus: Bus,
        config: &ClusterConfig,
        me: Sender,
        peer: Sender,
        resets: mpsc::UnboundedSender<Sender>,
    ) -> Arc<Self> {
        let (cmds, cmds_rx) = mpsc::unbounded_channel();
        let (datagrams, datagrams_rx) = mpsc::channel(config.datagram_queue.max(1));
        let (cluster, heartbeat, buffer) =
            (config.name.as_str(), config.heartbeat, config.link_buffer);
        let queued = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(Mutex::new(Sent::default()));
        let writer = Writer {
            bus,
            link_subject: wire::link_subject(cluster, &peer.node),
            datagram_subject: wire::datagram_subject(cluster, &peer.node),
            me,
            to: peer.incarnation,
            seq: 0,
            queued: queued.clone(),
            sent: sent.clone(),
            buffer,
        };
        tokio::spawn(writer.run(cmds_rx, datagrams_rx, heartbeat));
        Arc::new(Self {
            peer,
            cmds,
            datagrams,
            queued,
            sent,
            broken: AtomicBool::new(false),
            resets,
            buffer,
        })
    }

    /// Queues an item; past `cluster.link_buffer` unsent bytes the link is reset instead.
    pub(super) fn push(&self, item: Item) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let bytes = size(&item);
        if self.queued.fetch_add(bytes, Ordering::Relaxed) + bytes > self.buffer {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            warn!(peer = %self.peer.node, "cluster: link over its buffer; resetting it");
            self.reset();
            return;
        }
        if self.cmds.send(Cmd::Item(item)).is_err() {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Queues an item whatever the bound: what a reset says to the peer.
    pub(super) fn push_always(&self, item: Item) {
        let bytes = size(&item);
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        if self.cmds.send(Cmd::Item(item)).is_err() {
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

    /// Publishes again what was sent from `from` on; `false` when that is no longer
    /// kept (the receiver then resets the link).
    pub(super) fn replay(&self, from: u64) -> bool {
        let kept = {
            let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
            sent.batches
                .front()
                .is_some_and(|(first, _)| *first <= from)
        };
        kept && self.cmds.send(Cmd::Replay(from)).is_ok()
    }

    /// Ends the link: it takes nothing more until [`repair`](Self::repair), and the
    /// cluster ends the memberships it carried.
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
    sent: Arc<Mutex<Sent>>,
    /// `cluster.link_buffer`: what is kept for a replay.
    buffer: usize,
}

impl Writer {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut datagrams: mpsc::Receiver<DatagramBody>,
        heartbeat: Duration,
    ) {
        let mut probes = tokio::time::interval(heartbeat);
        probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Item(item)) => {
                        batch.push(item);
                        self.send_items(&mut cmds, &mut batch).await;
                    }
                    Some(Cmd::Replay(from)) => self.replay(from).await,
                    None => return,
                },
                Some(body) = datagrams.recv() => self.send_datagram(body).await,
                _ = probes.tick() => {
                    if self.seq > 0 {
                        self.publish(LinkMsg {
                            from: self.me.clone(),
                            to: self.to,
                            seq: self.seq,
                            probe: true,
                            items: Vec::new(),
                        }, false).await;
                    }
                }
            }
        }
    }

    /// Publishes `batch` and whatever other items are queued, as numbered messages of
    /// at most [`BATCH_ITEMS`] items and [`BATCH_BYTES`] (an item that would pass it
    /// starts the next one); a replay asked meanwhile waits for the end.
    async fn send_items(&mut self, cmds: &mut mpsc::UnboundedReceiver<Cmd>, batch: &mut Vec<Item>) {
        let mut replay: Option<u64> = None;
        let mut carry: Option<Item> = None;
        loop {
            let mut bytes: usize = batch.iter().map(size).sum();
            while batch.len() < BATCH_ITEMS {
                let item = match carry.take() {
                    Some(item) => item,
                    None => match cmds.try_recv() {
                        Ok(Cmd::Item(item)) => item,
                        Ok(Cmd::Replay(from)) => {
                            replay = Some(replay.map_or(from, |r| r.min(from)));
                            continue;
                        }
                        Err(_) => break,
                    },
                };
                if !batch.is_empty() && bytes + size(&item) > BATCH_BYTES {
                    carry = Some(item);
                    break;
                }
                bytes += size(&item);
                batch.push(item);
            }
            if batch.is_empty() {
                break;
            }
            self.seq += 1;
            let msg = LinkMsg {
                from: self.me.clone(),
                to: self.to,
                seq: self.seq,
                probe: false,
                items: coalesce(std::mem::take(batch)),
            };
            self.publish(msg, true).await;
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
        }
        if let Some(from) = replay {
            self.replay(from).await;
        }
    }

    /// Encodes and publishes; a numbered batch is kept for a replay. A batch that
    /// cannot be sent shows as a gap to the receiver: never a silent loss.
    async fn publish(&mut self, msg: LinkMsg, keep: bool) {
        let payload = match frame::encode_peer(&msg) {
            Ok(payload) => payload,
            Err(e) => {
                warn!(error = %e, "cluster: link batch did not encode");
                return;
            }
        };
        if keep {
            let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
            sent.bytes += payload.len();
            sent.batches.push_back((msg.seq, payload.clone()));
            while sent.bytes > self.buffer {
                match sent.batches.pop_front() {
                    Some((_, old)) => sent.bytes -= old.len(),
                    None => break,
                }
            }
        }
        metrics::counter!("quicmatch_cluster_messages_total", "dir" => "out", "kind" => "link")
            .increment(1);
        if let Err(e) = self.bus.publish(self.link_subject.clone(), payload).await {
            warn!(error = %e, "cluster: link batch not published");
        }
    }

    /// Publishes again every kept batch from `from` on.
    async fn replay(&mut self, from: u64) {
        let again: Vec<Bytes> = {
            let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
            sent.batches
                .iter()
                .filter(|(seq, _)| *seq >= from)
                .map(|(_, b)| b.clone())
                .collect()
        };
        metrics::counter!("quicmatch_cluster_link_replays_total").increment(1);
        for payload in again {
            if self
                .bus
                .publish(self.link_subject.clone(), payload)
                .await
                .is_err()
            {
                return;
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

/// What the receiving side is to do after a batch arrived.
#[derive(Debug, Default)]
pub(super) struct Accepted {
    /// Batches to apply now, in order.
    pub(super) apply: Vec<LinkMsg>,
    /// Ask the sender to publish again from this number on.
    pub(super) ask: Option<u64>,
    /// The gap cannot be filled: reset the link (what is in `apply` comes after it).
    pub(super) reset: bool,
}

/// One incoming link.
#[derive(Default)]
struct Incoming {
    /// Every batch up to this one was applied.
    last: u64,
    /// The highest number seen, in a batch or a probe.
    newest: u64,
    /// Batches after a gap, waiting for it to fill.
    held: BTreeMap<u64, LinkMsg>,
    /// When the replay of the current gap was asked.
    asked: Option<Instant>,
}

/// The numbers seen on each incoming link.
#[derive(Default)]
pub(super) struct Inbound {
    links: HashMap<Sender, Incoming>,
}

impl Inbound {
    /// A batch (or a probe: no items, the sender's latest number) from `msg.from`.
    pub(super) fn accept(&mut self, msg: LinkMsg, now: Instant) -> Accepted {
        let link = self.links.entry(msg.from.clone()).or_default();
        link.newest = link.newest.max(msg.seq);
        let mut out = Accepted::default();
        let newest = if msg.probe {
            msg.seq
        } else {
            if msg.seq <= link.last || link.held.contains_key(&msg.seq) {
                metrics::counter!("quicmatch_cluster_messages_dropped_total", "reason" => "repeated")
                    .increment(1);
                return out;
            }
            let seq = msg.seq;
            link.held.insert(seq, msg);
            seq
        };
        while let Some(next) = link.held.remove(&(link.last + 1)) {
            link.last += 1;
            out.apply.push(next);
        }
        if link.held.is_empty() && newest <= link.last {
            link.asked = None;
            return out;
        }
        // Something between `last` and `newest` is missing.
        if link.held.len() > HELD_BATCHES {
            out.reset = true;
        } else if link.asked.is_none() {
            metrics::counter!("quicmatch_cluster_link_gaps_total").increment(1);
            link.asked = Some(now);
            out.ask = Some(link.last + 1);
        }
        if out.reset {
            Self::skip(link, &mut out, newest);
        }
        out
    }

    /// The replay asked for did not come (or the sender no longer had it): everything
    /// held is applied after the reset, and numbering goes on after the newest number
    /// seen (a batch never kept is never asked for again).
    pub(super) fn give_up(&mut self, from: &Sender) -> Accepted {
        let mut out = Accepted {
            reset: true,
            ..Accepted::default()
        };
        if let Some(link) = self.links.get_mut(from) {
            let newest = link.newest;
            Self::skip(link, &mut out, newest);
        }
        out
    }

    /// Whether the replay asked of `from` is still awaited, asked before `before`.
    pub(super) fn waiting(&self, from: &Sender, before: Instant) -> bool {
        self.links
            .get(from)
            .and_then(|l| l.asked)
            .is_some_and(|asked| asked <= before)
    }

    fn skip(link: &mut Incoming, out: &mut Accepted, newest: u64) {
        out.apply
            .extend(std::mem::take(&mut link.held).into_values());
        link.last = link.last.max(newest);
        link.asked = None;
    }

    /// Forgets a peer's incarnations (it was lost or stopped).
    pub(super) fn forget(&mut self, node: &str) {
        self.links.retain(|s, _| s.node != node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use quicmatch_protocol::{MatchId, SessionId};

    use crate::cluster::wire::sender;

    fn batch(from: &Sender, seq: u64) -> LinkMsg {
        LinkMsg {
            from: from.clone(),
            to: 1,
            seq,
            probe: false,
            items: Vec::new(),
        }
    }

    fn probe(from: &Sender, seq: u64) -> LinkMsg {
        LinkMsg {
            probe: true,
            items: Vec::new(),
            ..batch(from, seq)
        }
    }

    fn seqs(a: &Accepted) -> Vec<u64> {
        a.apply.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn batches_apply_in_order_and_a_gap_waits_for_its_replay() {
        let mut inbound = Inbound::default();
        let a = sender("a", 1);
        let now = Instant::now();
        assert_eq!(seqs(&inbound.accept(batch(&a, 1), now)), [1]);
        assert!(
            inbound.accept(batch(&a, 1), now).apply.is_empty(),
            "a repeat"
        );
        // 2 and 3 lost: 4 waits, the replay is asked once.
        let gap = inbound.accept(batch(&a, 4), now);
        assert!(gap.apply.is_empty() && !gap.reset);
        assert_eq!(gap.ask, Some(2));
        assert_eq!(inbound.accept(batch(&a, 5), now).ask, None, "asked already");
        assert!(inbound.waiting(&a, now));
        // The replay: 2, 3 (and 4 again, dropped) fill it; everything applies in order.
        assert_eq!(seqs(&inbound.accept(batch(&a, 2), now)), [2]);
        assert_eq!(seqs(&inbound.accept(batch(&a, 3), now)), [3, 4, 5]);
        assert!(inbound.accept(batch(&a, 4), now).apply.is_empty());
        assert!(!inbound.waiting(&a, now));
        // A probe says nothing new, or that the last batches never came.
        let quiet = inbound.accept(probe(&a, 5), now);
        assert!(quiet.apply.is_empty() && quiet.ask.is_none());
        assert_eq!(inbound.accept(probe(&a, 7), now).ask, Some(6));
        // No replay: everything held applies after the reset, and numbers go on.
        inbound.accept(batch(&a, 8), now);
        let given_up = inbound.give_up(&a);
        assert!(given_up.reset);
        assert_eq!(seqs(&given_up), [8]);
        assert_eq!(seqs(&inbound.accept(batch(&a, 9), now)), [9]);
        // A lost tail only a probe shows, never replayed: given up once, past it.
        assert_eq!(inbound.accept(probe(&a, 11), now).ask, Some(10));
        assert!(inbound.give_up(&a).apply.is_empty());
        assert!(
            inbound.accept(probe(&a, 11), now).ask.is_none(),
            "not asked again"
        );
        assert_eq!(seqs(&inbound.accept(batch(&a, 12), now)), [12]);
        // Another incarnation numbers from 1; one whose start was missed asks for it.
        assert_eq!(seqs(&inbound.accept(batch(&sender("a", 2), 1), now)), [1]);
        assert_eq!(inbound.accept(batch(&sender("b", 1), 3), now).ask, Some(1));
        inbound.forget("a");
        assert_eq!(inbound.accept(batch(&a, 10), now).ask, Some(1));
    }

    #[test]
    fn too_much_held_behind_a_gap_resets_the_link() {
        let mut inbound = Inbound::default();
        let a = sender("a", 1);
        let now = Instant::now();
        let mut last = Accepted::default();
        for seq in 2..=(HELD_BATCHES as u64 + 2) {
            last = inbound.accept(batch(&a, seq), now);
        }
        assert!(last.reset);
        assert_eq!(last.apply.len(), HELD_BATCHES + 1);
        assert_eq!(
            seqs(&inbound.accept(batch(&a, HELD_BATCHES as u64 + 3), now)).len(),
            1
        );
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
                attempt: 1,
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
