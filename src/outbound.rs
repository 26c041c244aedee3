//! How the rest of the server reaches a session: [`SessionHandle`] pushes events and
//! reliable data into the session's outbound queue and sends its datagrams. The queue
//! numbers every event per session, keeps recently sent ones for a lossless resume, and
//! applies the slow-consumer rule.
//!
//! This module sits one floor below `session/`, `handlers/` and every table, so the
//! tables can push to sessions without knowing how a session is served.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering as AtomicOrdering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use quicmatch_protocol::{frame::EventBody, CloseCode, MatchId, Presence, SessionId};
use quinn_proto::{SendDatagramError, VarInt};
use tokio::sync::Notify;
use tracing::warn;

use crate::{config::SessionConfig, transport::Conn};

/// Bookkeeping bytes counted per queued frame on top of its body (head and entry), so
/// a flood of empty events still counts.
const FRAME_OVERHEAD: usize = 16;

/// What other parts of the server hold to reach a session: cheap to clone.
#[derive(Clone)]
pub struct SessionHandle {
    /// Who the session is (shared, so cloning a handle on the relay path never copies
    /// the username).
    pub presence: Arc<Presence>,
    /// `None` for a session restored after a restart that has not resumed yet.
    pub(crate) conn: Option<Conn>,
    /// The session's outbound queue; it outlives connections, so a resumed session
    /// keeps its numbering and what was queued while it was away.
    pub(crate) outbound: Arc<Outbound>,
    /// For a member homed on another node of the cluster: where what the tables send
    /// it goes instead (its home's queue and connection are there).
    pub(crate) remote: Option<Arc<dyn RemotePeer>>,
}

/// Another node of the cluster, as the tables reach the members homed there: both
/// calls queue and return at once, in the order they were made.
pub(crate) trait RemotePeer: Send + Sync {
    /// An event or reliable data for `session` (on `lane` where the sender has one).
    fn push(&self, session: SessionId, body: &EventBody, lane: Option<Lane>);
    /// A relayed datagram for `session`, as a local member would get it.
    fn datagram(&self, session: SessionId, datagram: Bytes);
}

impl SessionHandle {
    /// Queues an event (or reliable data) without waiting. A session far behind is
    /// closed as a slow consumer rather than let it delay others (the rule is in
    /// PROTOCOL.md §6.1).
    pub fn push_event(&self, body: &EventBody) {
        self.push_to(body, None);
    }

    /// Queues reliable match data one member relayed: on protocol 3 it travels on that
    /// sender's lane (a stream of its own), elsewhere like any event.
    pub(crate) fn push_lane(&self, body: &EventBody, lane: Lane) {
        self.push_to(body, Some(lane));
    }

    fn push_to(&self, body: &EventBody, lane: Option<Lane>) {
        if let Some(remote) = &self.remote {
            remote.push(self.presence.session_id, body, lane);
            return;
        }
        if self.outbound.push(body.clone(), lane, Instant::now()) == Pushed::Overflow {
            warn!(session = %self.presence.session_id, "outbound queue over its limit; closing slow consumer");
            metrics::counter!("quicmatch_slow_consumer_closes_total").increment(1);
            if let Some(conn) = &self.conn {
                close(
                    conn,
                    CloseCode::SLOW_CONSUMER,
                    "outbound queue over its limit",
                );
            }
        }
    }

    /// Sends a datagram, dropping the oldest queued one if quinn's buffer is full (a
    /// reader that falls behind loses stale unreliable data, counted with reason
    /// `reader_behind`, and is never closed for it). Returns `false` only when the
    /// datagram is too large for this peer's path.
    pub fn send_datagram(&self, datagram: Bytes) -> bool {
        if let Some(remote) = &self.remote {
            remote.datagram(self.presence.session_id, datagram);
            return true;
        }
        let len = datagram.len() as u64;
        let Some(conn) = &self.conn else {
            metrics::counter!("quicmatch_datagrams_dropped_total", "reason" => "connection_lost")
                .increment(1);
            return true;
        };
        match conn.send_datagram(datagram) {
            Ok(pushed_out) => {
                if pushed_out {
                    metrics::counter!("quicmatch_datagrams_dropped_total", "reason" => "reader_behind")
                        .increment(1);
                }
                self.outbound.counters.datagrams_out.increment(1);
                self.outbound.counters.bytes_out.increment(len);
                true
            }
            Err(SendDatagramError::TooLarge) => {
                metrics::counter!("quicmatch_datagrams_dropped_total", "reason" => "too_large")
                    .increment(1);
                false
            }
            Err(SendDatagramError::UnsupportedByPeer) => {
                metrics::counter!("quicmatch_datagrams_dropped_total", "reason" => "unsupported_by_peer")
                    .increment(1);
                true
            }
            Err(_) => {
                metrics::counter!("quicmatch_datagrams_dropped_total", "reason" => "connection_lost")
                    .increment(1);
                true
            }
        }
    }
}

/// Closes a connection with an application close code and a UTF-8 reason.
pub(crate) fn close(conn: &Conn, code: CloseCode, reason: &str) {
    conn.close(VarInt::from_u32(code.0), reason.as_bytes());
}

/// Which lane a frame travels on (protocol 3): one per (match, sending member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Lane {
    pub(crate) match_id: MatchId,
    pub(crate) slot: u32,
}

/// Frames taken for writing: the control stream's chunks, and each lane's. A session
/// keeps one and refills it ([`Outbound::take_into`]), so a wake-up allocates nothing
/// once its buffers have grown.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    pub(crate) control: Vec<Bytes>,
    pub(crate) lanes: Vec<(Lane, Vec<Bytes>)>,
    /// Emptied lane buffers, for the next lanes taken.
    spare: Vec<Vec<Bytes>>,
}

impl Taken {
    /// Empties it, keeping its buffers.
    pub(crate) fn clear(&mut self) {
        self.control.clear();
        for (_, mut chunks) in self.lanes.drain(..) {
            if chunks.capacity() > 0 && self.spare.len() < SPARE_LANE_BUFFERS {
                chunks.clear();
                self.spare.push(chunks);
            }
        }
    }

    /// The chunks of `lane`, added after the lanes taken so far when it is new.
    fn lane(&mut self, lane: Lane) -> &mut Vec<Bytes> {
        let at = match self.lanes.iter().position(|(l, _)| *l == lane) {
            Some(at) => at,
            None => {
                let chunks = self.spare.pop().unwrap_or_default();
                self.lanes.push((lane, chunks));
                self.lanes.len() - 1
            }
        };
        &mut self.lanes[at].1
    }
}

/// Most emptied lane buffers a [`Taken`] keeps for reuse.
const SPARE_LANE_BUFFERS: usize = 16;

/// How the connection being served speaks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Speaks {
    /// Protocol 2 or later: events carry their number.
    pub(crate) sequenced: bool,
    /// Protocol 3: lane frames go on lanes.
    pub(crate) lanes: bool,
}

/// The limits an outbound queue applies, from `[session]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Sent bytes kept for replay.
    pub(crate) resume_buffer: usize,
    /// Unsent bytes above which the session counts as behind.
    pub(crate) high_water: usize,
    /// Unsent bytes that close a connected session at once (memory guard).
    pub(crate) hard_bytes: usize,
    /// Unsent frames that close a connected session at once (memory guard).
    pub(crate) hard_frames: usize,
}

impl Limits {
    pub(crate) fn new(config: &SessionConfig) -> Self {
        // Never below one sender's whole burst of the largest reliable messages, so a
        // burst the rate limits allow cannot by itself close a reader that keeps reading.
        let burst = (config.datagram_burst as usize)
            .saturating_mul(quicmatch_protocol::MAX_RELIABLE_PAYLOAD + FRAME_OVERHEAD);
        Self {
            resume_buffer: config.resume_buffer,
            high_water: config.outbound_bytes,
            hard_bytes: config.outbound_bytes.saturating_mul(16).max(burst),
            hard_frames: config.outbound_queue,
        }
    }
}

/// The outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// A hard limit was passed while connected: close the session as slow.
    Overflow,
}

/// A resume asked for events that are no longer kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    /// The oldest sequence number still replayable.
    pub(crate) oldest: u64,
    /// The next number the session will use.
    pub(crate) next: u64,
}

struct Queued {
    seq: u64,
    body: EventBody,
    lane: Option<Lane>,
}

impl Queued {
    fn cost(&self) -> usize {
        self.body.bytes().len() + FRAME_OVERHEAD
    }
}

/// A session's numbered outbound events: the ones already handed to the connection
/// (kept up to `resume_buffer` bytes for a resume) followed by the unsent ones.
///
/// Policy: unreliable data never comes here. A connected session whose unsent bytes stay
/// above the high-water mark for `slow_consumer_after` is closed with `SLOW_CONSUMER`
/// (the session task checks), and one past a hard limit is closed at once. While the
/// session is held for a resume, passing a hard limit drops the oldest events instead:
/// a resume that needs them then fails with `RESUME_GAP`, never silently.
pub(crate) struct Outbound {
    state: Mutex<State>,
    /// Wakes the session task when there is something to write.
    pub(crate) wake: Notify,
    limits: Limits,
    /// Bytes taken for lanes that their streams have not accepted yet: unsent, for the
    /// slow-consumer rule and the hard limit.
    in_lanes: AtomicUsize,
    /// The session's datagram counters, looked up once rather than per datagram.
    pub(crate) counters: DatagramCounters,
}

/// Handles to the counters every relayed datagram moves: resolving a name costs a
/// lookup in the recorder, a handle only an atomic add.
pub(crate) struct DatagramCounters {
    /// `quicmatch_datagrams_in_total`
    pub(crate) datagrams_in: metrics::Counter,
    /// `quicmatch_datagram_bytes_in_total`
    pub(crate) bytes_in: metrics::Counter,
    /// `quicmatch_datagrams_out_total`
    pub(crate) datagrams_out: metrics::Counter,
    /// `quicmatch_datagram_bytes_out_total`
    pub(crate) bytes_out: metrics::Counter,
}

impl DatagramCounters {
    fn new() -> Self {
        Self {
            datagrams_in: metrics::counter!("quicmatch_datagrams_in_total"),
            bytes_in: metrics::counter!("quicmatch_datagram_bytes_in_total"),
            datagrams_out: metrics::counter!("quicmatch_datagrams_out_total"),
            bytes_out: metrics::counter!("quicmatch_datagram_bytes_out_total"),
        }
    }
}

struct State {
    next_seq: u64,
    frames: VecDeque<Queued>,
    first_unsent: u64,
    sent_bytes: usize,
    unsent_bytes: usize,
    unsent_frames: usize,
    above_since: Option<Instant>,
    connected: bool,
    /// A hard limit was passed while connected: the session is being closed, and what
    /// is pushed meanwhile is dropped rather than kept.
    overflowed: bool,
    /// Restored after a server restart: the numbers the client saw died with the old
    /// process, so the first resume continues from whatever number the client names.
    restored: bool,
    /// The first number queued after the server began shutting down.
    shutdown_mark: Option<u64>,
}

impl Outbound {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            state: Mutex::new(State {
                next_seq: 1,
                frames: VecDeque::new(),
                first_unsent: 1,
                sent_bytes: 0,
                unsent_bytes: 0,
                unsent_frames: 0,
                above_since: None,
                connected: true,
                overflowed: false,
                restored: false,
                shutdown_mark: None,
            }),
            wake: Notify::new(),
            limits,
            in_lanes: AtomicUsize::new(0),
            counters: DatagramCounters::new(),
        }
    }

    /// A lane's stream accepted (or, its connection gone, dropped) `bytes` it was given.
    pub(crate) fn lane_written(&self, bytes: usize) {
        let _ = self
            .in_lanes
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                Some(n.saturating_sub(bytes))
            });
    }

    fn lanes_backlog(&self) -> usize {
        self.in_lanes.load(AtomicOrdering::Acquire)
    }

    /// The queue of a session restored after a restart: held (not connected), and its
    /// first resume accepts any last number (see [`rewind`](Self::rewind)).
    pub(crate) fn restored(limits: Limits) -> Self {
        let out = Self::new(limits);
        {
            let mut st = out.lock();
            st.connected = false;
            st.restored = true;
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, body: EventBody, lane: Option<Lane>, now: Instant) -> Pushed {
        let mut st = self.lock();
        if st.overflowed {
            return Pushed::Queued;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let q = Queued { seq, body, lane };
        st.unsent_bytes += q.cost();
        st.unsent_frames += 1;
        st.frames.push_back(q);
        let over = st.unsent_bytes + self.lanes_backlog() > self.limits.hard_bytes
            || st.unsent_frames > self.limits.hard_frames;
        let outcome = if over && st.connected {
            st.overflowed = true;
            Pushed::Overflow
        } else {
            while st.unsent_bytes > self.limits.hard_bytes
                || st.unsent_frames > self.limits.hard_frames
            {
                st.drop_oldest();
                metrics::counter!("quicmatch_held_events_dropped_total").increment(1);
            }
            Pushed::Queued
        };
        st.mark(now, self.limits.high_water, self.lanes_backlog());
        drop(st);
        self.wake.notify_one();
        outcome
    }

    /// Up to `max` unsent frames as write chunks (head, body, head, body, ...), marked
    /// sent: lane frames grouped by lane when the connection `speaks` lanes, the rest
    /// (all, otherwise) for the control stream. Lane bytes count as unsent until their
    /// stream takes them ([`lane_written`](Self::lane_written)).
    #[cfg(test)]
    pub(crate) fn take(&self, max: usize, speaks: Speaks, now: Instant) -> Taken {
        let mut taken = Taken::default();
        self.take_into(&mut taken, max, speaks, now);
        taken
    }

    /// Up to `max` unsent frames, as `take` describes, into `taken` (emptied first),
    /// reusing its buffers.
    pub(crate) fn take_into(&self, taken: &mut Taken, max: usize, speaks: Speaks, now: Instant) {
        self.take_up_to(taken, max, u64::MAX, speaks, now);
    }

    /// Records where the queue stood when the server began shutting down.
    pub(crate) fn mark_shutdown(&self) {
        let mut st = self.lock();
        st.shutdown_mark = Some(st.next_seq);
    }

    /// Like [`take`](Self::take), only frames queued before the shutdown mark (none
    /// when there is no mark).
    pub(crate) fn take_before_shutdown(&self, max: usize, speaks: Speaks, now: Instant) -> Taken {
        let until = self.lock().shutdown_mark.unwrap_or(0);
        let mut taken = Taken::default();
        self.take_up_to(&mut taken, max, until, speaks, now);
        taken
    }

    /// Up to `max` unsent frames numbered below `until`.
    fn take_up_to(&self, taken: &mut Taken, max: usize, until: u64, speaks: Speaks, now: Instant) {
        taken.clear();
        let mut st = self.lock();
        let start = st.frames.len() - st.unsent_frames;
        let below = usize::try_from(until.saturating_sub(st.first_unsent)).unwrap_or(usize::MAX);
        let n = st.unsent_frames.min(max).min(below);
        let (mut moved, mut laned) = (0, 0);
        let seq_of = |q: &Queued| speaks.sequenced.then_some(q.seq);
        for q in st.frames.range(start..start + n) {
            let chunks = match q.lane.filter(|_| speaks.lanes) {
                Some(lane) => {
                    laned += q.cost();
                    taken.lane(lane)
                }
                None => &mut taken.control,
            };
            chunks.push(q.body.head(seq_of(q)));
            chunks.push(q.body.bytes().clone());
            moved += q.cost();
        }
        st.unsent_frames -= n;
        st.unsent_bytes -= moved;
        st.sent_bytes += moved;
        st.first_unsent += n as u64;
        while st.sent_bytes > self.limits.resume_buffer && st.frames.len() > st.unsent_frames {
            if let Some(q) = st.frames.pop_front() {
                st.sent_bytes -= q.cost();
            }
        }
        self.in_lanes.fetch_add(laned, AtomicOrdering::AcqRel);
        st.mark(now, self.limits.high_water, self.lanes_backlog());
        let more = st.unsent_frames > 0;
        drop(st);
        if more {
            self.wake.notify_one();
        }
    }

    /// Prepares a resume: the client processed everything up to `last_seq`, so what
    /// follows is sent again, in order, before anything new.
    ///
    /// A restored queue has nothing the client already saw: it renumbers what was
    /// queued since the restart to follow `last_seq`, once.
    pub(crate) fn rewind(&self, last_seq: u64) -> Result<(), Gap> {
        let mut st = self.lock();
        if std::mem::take(&mut st.restored) {
            let first = last_seq.saturating_add(1);
            for (q, seq) in st.frames.iter_mut().zip(first..) {
                q.seq = seq;
            }
            st.next_seq = first.saturating_add(st.frames.len() as u64);
            st.first_unsent = first;
            st.unsent_frames = st.frames.len();
            st.unsent_bytes = st.frames.iter().map(Queued::cost).sum();
            st.sent_bytes = 0;
            drop(st);
            self.wake.notify_one();
            return Ok(());
        }
        let oldest = st.frames.front().map_or(st.next_seq, |q| q.seq);
        let gap = Gap {
            oldest,
            next: st.next_seq,
        };
        if last_seq >= st.next_seq || last_seq.saturating_add(1) < oldest {
            return Err(gap);
        }
        while st.frames.front().is_some_and(|q| q.seq <= last_seq) {
            st.frames.pop_front();
        }
        st.first_unsent = last_seq + 1;
        st.unsent_frames = st.frames.len();
        st.unsent_bytes = st.frames.iter().map(Queued::cost).sum();
        st.sent_bytes = 0;
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    /// Whether a connection is serving the queue (hard limits close it) or the session
    /// is held (hard limits drop the oldest events).
    pub(crate) fn set_connected(&self, connected: bool) {
        let mut st = self.lock();
        st.connected = connected;
        st.above_since = None;
    }

    /// Whether the unsent backlog (lanes' included) has stayed above the high-water mark
    /// for `after`.
    pub(crate) fn behind_for(&self, now: Instant, after: Duration) -> bool {
        let mut st = self.lock();
        // Lanes drain without the queue hearing of it: look again now.
        st.mark(now, self.limits.high_water, self.lanes_backlog());
        st.above_since
            .is_some_and(|t| now.saturating_duration_since(t) >= after)
    }

    /// Unsent frames and bytes, for tests and stats.
    #[cfg(test)]
    fn backlog(&self) -> (usize, usize) {
        let st = self.lock();
        (st.unsent_frames, st.unsent_bytes)
    }
}

impl State {
    fn mark(&mut self, now: Instant, high_water: usize, in_lanes: usize) {
        if self.unsent_bytes + in_lanes > high_water {
            self.above_since.get_or_insert(now);
        } else {
            self.above_since = None;
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(q) = self.frames.pop_front() {
            if q.seq >= self.first_unsent {
                self.unsent_bytes -= q.cost();
                self.unsent_frames -= 1;
                self.first_unsent = q.seq + 1;
            } else {
                self.sent_bytes -= q.cost();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quicmatch_protocol::{envelope::Event, frame, ErrorCode, ServerBody};

    fn body(n: usize) -> EventBody {
        EventBody::encode(&Event::Error {
            code: ErrorCode::BAD_INPUT,
            message: "x".repeat(n),
        })
        .expect("encode")
    }

    const V1: Speaks = Speaks {
        sequenced: false,
        lanes: false,
    };
    const V2: Speaks = Speaks {
        sequenced: true,
        lanes: false,
    };

    fn limits() -> Limits {
        Limits {
            resume_buffer: 10 * (100 + FRAME_OVERHEAD + 2),
            high_water: 1000,
            hard_bytes: 5000,
            hard_frames: 40,
        }
    }

    fn seqs(chunks: &[Bytes]) -> Vec<u64> {
        chunks
            .chunks(2)
            .map(|c| {
                let mut f = c[0].to_vec();
                f.extend_from_slice(&c[1]);
                match frame::decode_server(&f[frame::LEN_PREFIX..])
                    .expect("decode")
                    .body
                {
                    ServerBody::Sequenced { seq, .. } => seq,
                    other => panic!("unsequenced {other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn frames_are_numbered_and_replayed_after_the_last_processed() {
        let out = Outbound::new(limits());
        let now = Instant::now();
        for _ in 0..5 {
            out.push(body(100), None, now);
        }
        assert_eq!(seqs(&out.take(3, V2, now).control), [1, 2, 3]);
        assert_eq!(seqs(&out.take(10, V2, now).control), [4, 5]);
        assert!(out.take(10, V2, now).control.is_empty());
        out.push(body(100), None, now);
        // The client processed up to 2: 3 to 6 come again, in order, once.
        out.rewind(2).expect("in the buffer");
        assert_eq!(seqs(&out.take(10, V2, now).control), [3, 4, 5, 6]);
        assert_eq!(out.backlog(), (0, 0));
        // Protocol 1 heads carry no number.
        out.push(body(1), None, now);
        let chunks = out.take(1, V1, now).control;
        let mut f = chunks[0].to_vec();
        f.extend_from_slice(&chunks[1]);
        assert!(matches!(
            frame::decode_server(&f[frame::LEN_PREFIX..])
                .expect("decode")
                .body,
            ServerBody::Event(_)
        ));
    }

    #[test]
    fn a_shutdown_flush_takes_only_what_was_queued_before_the_mark() {
        let out = Outbound::new(limits());
        let now = Instant::now();
        out.push(body(10), None, now);
        assert!(
            out.take_before_shutdown(10, V2, now).control.is_empty(),
            "no mark, nothing"
        );
        out.push(body(10), None, now);
        assert_eq!(seqs(&out.take(1, V2, now).control), [1]);
        out.mark_shutdown();
        out.push(body(10), None, now);
        assert_eq!(seqs(&out.take_before_shutdown(10, V2, now).control), [2]);
        assert!(out.take_before_shutdown(10, V2, now).control.is_empty());
        assert_eq!(seqs(&out.take(10, V2, now).control), [3]);
    }

    #[test]
    fn lane_frames_are_grouped_by_lane_and_unsent_until_their_stream_takes_them() {
        let lanes = Speaks {
            sequenced: true,
            lanes: true,
        };
        let (x, y) = (
            Lane {
                match_id: MatchId(uuid::Uuid::from_u128(1)),
                slot: 1,
            },
            Lane {
                match_id: MatchId(uuid::Uuid::from_u128(1)),
                slot: 2,
            },
        );
        let out = Outbound::new(limits());
        let t0 = Instant::now();
        out.push(body(10), None, t0);
        out.push(body(600), Some(x), t0);
        out.push(body(10), Some(y), t0);
        out.push(body(600), Some(x), t0);
        let taken = out.take(10, lanes, t0);
        assert_eq!(seqs(&taken.control), [1]);
        let by_lane: Vec<(Lane, Vec<u64>)> = taken
            .lanes
            .iter()
            .map(|(l, chunks)| (*l, seqs(chunks)))
            .collect();
        assert_eq!(by_lane, vec![(x, vec![2, 4]), (y, vec![3])]);
        // Over the 1000-byte mark until the lanes' streams accept their bytes.
        let after = Duration::from_secs(2);
        assert!(out.behind_for(t0 + after, after));
        let lane_bytes: usize = taken
            .lanes
            .iter()
            .flat_map(|(_, c)| c.iter().map(Bytes::len))
            .sum();
        out.lane_written(lane_bytes);
        assert!(!out.behind_for(t0 + 2 * after, after));
        // Protocol 2: everything on the control stream.
        out.push(body(10), Some(x), t0);
        assert_eq!(seqs(&out.take(10, V2, t0).control), [5]);
    }

    #[test]
    fn a_restored_queue_continues_from_the_clients_number_once() {
        let out = Outbound::restored(limits());
        let now = Instant::now();
        for _ in 0..3 {
            out.push(body(10), None, now);
        }
        // The client last processed 41 before the restart: what was queued since
        // follows it.
        out.rewind(41).expect("a restored queue takes any number");
        assert_eq!(seqs(&out.take(10, V2, now).control), [42, 43, 44]);
        out.push(body(10), None, now);
        assert_eq!(seqs(&out.take(10, V2, now).control), [45]);
        // Only once: a later resume is checked as usual.
        assert!(out.rewind(100).is_err());
        out.rewind(43).expect("in the buffer");
        assert_eq!(seqs(&out.take(10, V2, now).control), [44, 45]);
    }

    #[test]
    fn a_gap_beyond_the_resume_buffer_is_reported() {
        let out = Outbound::new(limits());
        let now = Instant::now();
        for _ in 0..30 {
            out.push(body(100), None, now);
            out.take(10, V2, now);
        }
        // Only about ten frames are kept.
        let err = out.rewind(2).expect_err("gap");
        assert_eq!(err.next, 31);
        assert!(err.oldest > 3);
        out.rewind(err.oldest - 1)
            .expect("the oldest kept can be replayed");
        // A number the session never used is refused too.
        assert!(out.rewind(31).is_err());
        out.rewind(30).expect("nothing to replay");
        assert!(out.take(10, V2, now).control.is_empty());
    }

    #[test]
    fn hard_limits_close_when_connected_and_drop_the_oldest_when_held() {
        let out = Outbound::new(limits());
        let now = Instant::now();
        let pushed: Vec<_> = (0..41).map(|_| out.push(body(10), None, now)).collect();
        assert!(pushed[..40].iter().all(|p| *p == Pushed::Queued));
        assert_eq!(pushed[40], Pushed::Overflow);
        // Closing now: what comes meanwhile is dropped, not kept, and reported once.
        let backlog = out.backlog();
        for _ in 0..100 {
            assert_eq!(out.push(body(10), None, now), Pushed::Queued);
        }
        assert_eq!(out.backlog(), backlog);

        let held = Outbound::new(limits());
        held.set_connected(false);
        for _ in 0..100 {
            assert_eq!(held.push(body(10), None, now), Pushed::Queued);
        }
        assert_eq!(held.backlog().0, 40);
        // The client saw nothing: events 1 to 60 are gone, so the resume must fail.
        assert!(held.rewind(0).is_err());
        held.rewind(60).expect("61 onwards kept");
        assert_eq!(seqs(&held.take(100, V2, now).control)[..2], [61, 62]);
    }

    #[test]
    fn behind_only_after_staying_above_the_high_water_mark() {
        let out = Outbound::new(limits());
        let t0 = Instant::now();
        for _ in 0..20 {
            out.push(body(100), None, t0);
        }
        let after = Duration::from_secs(2);
        assert!(!out.behind_for(t0 + Duration::from_secs(1), after));
        assert!(out.behind_for(t0 + after, after));
        // Draining below the mark resets the clock.
        out.take(15, V2, t0 + Duration::from_secs(1));
        assert!(!out.behind_for(t0 + Duration::from_secs(5), after));
    }
}
