//! The traffic of one run: senders at a fixed rate, receivers that record one-way
//! latency, and the staleness sampler.
//!
//! Every payload starts with its send time (ns since the run's clock base, u64 LE), a
//! per-sender sequence number (u32 LE) and the sender's player index (u32 LE); the rest
//! is zeros. Senders and receivers live in this process, so the send time and the
//! receive time come from one clock.
//!
//! Staleness is what a game's renderer sees: every 10 ms, for each receiver and each
//! other player of its match, the age of the newest message it holds from that player
//! (newest by send time, so a late, reordered message does not count as fresh).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{
    now_ns,
    players::{Rx, Tx},
};
use crate::measure::Recorder;

/// Bytes of the header every payload starts with.
pub(super) const PAYLOAD_HEADER: usize = 16;

/// How often staleness is sampled.
const STALENESS_PERIOD: Duration = Duration::from_millis(10);

/// The window in which sent messages count, in `now_ns` time.
#[derive(Clone, Copy)]
pub(super) struct Window {
    pub(super) start: u64,
    pub(super) end: u64,
}

impl Window {
    pub(super) fn contains(&self, t: u64) -> bool {
        (self.start..self.end).contains(&t)
    }
}

/// Writes the header into `payload` (at least [`PAYLOAD_HEADER`] bytes).
fn encode(payload: &mut [u8], sent: u64, seq: u32, sender: u32) {
    payload[..8].copy_from_slice(&sent.to_le_bytes());
    payload[8..12].copy_from_slice(&seq.to_le_bytes());
    payload[12..16].copy_from_slice(&sender.to_le_bytes());
}

/// The send time and sender index of a payload.
fn decode(payload: &[u8]) -> Option<(u64, usize)> {
    let sent = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let sender = u32::from_le_bytes(payload.get(12..16)?.try_into().ok()?);
    Some((sent, usize::try_from(sender).ok()?))
}

/// The newest send time each receiver holds from each player of its match: written by
/// the receiver tasks, read by the sampler, so atomics rather than a lock.
pub(super) struct Staleness {
    /// `receiver * players + sender slot`: 1 + the newest send time, 0 before any.
    newest: Vec<AtomicU64>,
    players: usize,
}

impl Staleness {
    /// For `total` players in matches of `players`.
    pub(super) fn new(total: usize, players: usize) -> Self {
        Self {
            newest: (0..total * players).map(|_| AtomicU64::new(0)).collect(),
            players: players.max(1),
        }
    }

    /// `receiver` got a message `sender` sent at `sent`.
    fn note(&self, receiver: usize, sender: usize, sent: u64) {
        if let Some(cell) = self
            .newest
            .get(receiver * self.players + sender % self.players)
        {
            cell.fetch_max(sent.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// Records, at `now`, the age of every (receiver, other player) pair that has heard
    /// from that player at all.
    pub(super) fn sample(&self, now: u64, rec: &mut Recorder) {
        for (i, cell) in self.newest.iter().enumerate() {
            let (receiver, slot) = (i / self.players, i % self.players);
            if slot == receiver % self.players {
                continue;
            }
            let newest = cell.load(Ordering::Relaxed);
            if newest > 0 {
                rec.record(Duration::from_nanos(now.saturating_sub(newest - 1)));
            }
        }
    }
}

/// Samples `board` every 10 ms inside `window`.
pub(super) async fn sample_staleness(board: Arc<Staleness>, window: Window) -> Recorder {
    let mut rec = Recorder::new();
    tokio::time::sleep(Duration::from_nanos(window.start.saturating_sub(now_ns()))).await;
    let mut tick = tokio::time::interval(STALENESS_PERIOD);
    // A late sampler measures at the time it wakes; it does not catch up in a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = now_ns();
        if now >= window.end {
            break;
        }
        board.sample(now, &mut rec);
    }
    rec
}

/// Player `index`'s receiver: latency of messages sent inside `window`, and the newest
/// message from each other player on `board`, until `stop`.
pub(super) async fn receive(
    mut rx: Rx,
    index: usize,
    window: Window,
    board: Arc<Staleness>,
    stop: CancellationToken,
) -> Recorder {
    let mut rec = Recorder::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let on = |payload: &[u8]| {
            let Some((sent, sender)) = decode(payload) else {
                return;
            };
            board.note(index, sender, sent);
            if window.contains(sent) {
                rec.record(Duration::from_nanos(now_ns().saturating_sub(sent)));
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            open = rx.next(&mut buf, on) => if !open { break },
        }
    }
    rec
}

/// Player `index`'s sender: `payload`-byte messages at `rate` Hz from `phase` until the
/// window ends; counts those sent inside the window in `sent`.
pub(super) async fn send(
    mut tx: Tx,
    index: usize,
    rate: f64,
    payload: usize,
    window: Window,
    phase: Duration,
    sent: Arc<AtomicU64>,
) {
    tokio::time::sleep(phase).await;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sender = u32::try_from(index).unwrap_or(u32::MAX);
    let mut seq = 0u32;
    loop {
        tick.tick().await;
        let t = now_ns();
        if t >= window.end {
            break;
        }
        let mut buf = vec![0u8; payload.max(PAYLOAD_HEADER)];
        encode(&mut buf, t, seq, sender);
        seq = seq.wrapping_add(1);
        if tx.send(buf).await && window.contains(t) {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut p = vec![0u8; 32];
        encode(&mut p, 123_456_789, 7, 42);
        assert_eq!(decode(&p), Some((123_456_789, 42)));
        assert_eq!(decode(&p[..12]), None);
    }

    #[test]
    fn staleness_is_the_age_of_the_newest_message_per_pair() {
        // Two matches of three players: 0, 1, 2 and 3, 4, 5.
        let board = Staleness::new(6, 3);
        board.note(0, 1, 1_000_000);
        board.note(0, 1, 900_000); // late and reordered: older than what 0 holds
        board.note(0, 2, 4_000_000);
        board.note(4, 3, 0);
        let mut rec = Recorder::new();
        board.sample(5_000_000, &mut rec);
        // (0 from 1) is 4 ms old, (0 from 2) 1 ms, (4 from 3) 5 ms; nobody else has heard
        // from anyone, and nobody is sampled against themselves.
        let near = |us: u64, want: u64| us.abs_diff(want) <= want / 200;
        assert_eq!(rec.delivered, 3);
        assert!(near(rec.quantile_us(0.0), 1_000));
        assert!(near(rec.quantile_us(0.5), 4_000));
        assert!(near(rec.max_us(), 5_000));
        board.note(0, 0, 4_900_000);
        let mut again = Recorder::new();
        board.sample(5_000_000, &mut again);
        assert_eq!(
            again.delivered, 3,
            "a player's own messages are not sampled"
        );
    }
}
