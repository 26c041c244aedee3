//! Redundant unreliable data: what a sender repeats, and how a receiver delivers each
//! message once.
//!
//! With [`SendOptions::redundancy`](crate::SendOptions::redundancy)`(k)`, each datagram
//! is a bundle of the new message and up to `k` of the sender's previous bundled
//! messages to that match (what fits in one datagram), numbered per match by `msg_seq`.
//! A receiver keeps, per (match, sender slot), the highest `msg_seq` it delivered: from a
//! bundle it delivers, oldest first, only the messages above it (or far below it: the
//! sender numbering from 1 again after a resume, see [`bundle::RESTART_GAP`]). So a lost datagram
//! costs nothing when one of the next `k` arrives, nothing is delivered twice, and a
//! message older than one already delivered is dropped as stale, exactly as the `seq`
//! rule for plain datagrams would drop it.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use quicmatch_protocol::{
    bundle::{self, BundledMessage, MAX_REDUNDANCY},
    MatchId,
};

/// A sender's recent bundled messages to one match; each new one (`default`) is a
/// generation of its own.
#[derive(Debug)]
pub(crate) struct Sent {
    last: u64,
    recent: VecDeque<BundledMessage>,
    /// Which membership this numbering belongs to: a socket that leaves and joins the
    /// match again numbers from 1 again, in a new generation.
    generation: u64,
}

/// Generations of [`Sent`], unique in the process.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Default for Sent {
    /// An empty numbering, in a generation of its own.
    fn default() -> Self {
        Self {
            last: 0,
            recent: VecDeque::new(),
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl Sent {
    /// The newest message numbered, with its generation.
    pub(crate) fn newest(&self) -> (u64, u64) {
        (self.generation, self.last)
    }

    /// Numbers a new message and returns the bundle that carries it and up to `k`
    /// previous ones; `None` when the message alone does not fit a datagram.
    pub(crate) fn bundle(&mut self, op_code: i64, data: Bytes, k: usize) -> Option<Bytes> {
        let message = BundledMessage {
            msg_seq: self.last + 1,
            op_code,
            data,
        };
        let k = k.min(MAX_REDUNDANCY);
        let mut newest_first = Vec::with_capacity(k + 1);
        newest_first.push(message.clone());
        newest_first.extend(self.recent.iter().rev().take(k).cloned());
        let encoded = bundle::encode(&newest_first)?;
        self.last += 1;
        if self.recent.len() == MAX_REDUNDANCY {
            self.recent.pop_front();
        }
        self.recent.push_back(message);
        Some(encoded)
    }
}

/// What a receiver delivered from each sender's bundles.
#[derive(Debug, Default)]
pub(crate) struct Seen(HashMap<(MatchId, u32), u64>);

impl Seen {
    /// The messages of a bundle not delivered yet, oldest first; marks them delivered.
    pub(crate) fn fresh(
        &mut self,
        match_id: MatchId,
        slot: u32,
        mut messages: Vec<BundledMessage>,
    ) -> Vec<BundledMessage> {
        let last = self.0.entry((match_id, slot)).or_insert(0);
        messages.retain(|m| bundle::is_fresh(m.msg_seq, *last));
        messages.sort_by_key(|m| m.msg_seq);
        messages.dedup_by_key(|m| m.msg_seq);
        if let Some(newest) = messages.last() {
            *last = newest.msg_seq;
        }
        messages
    }

    /// Forgets a match this socket left.
    pub(crate) fn forget(&mut self, match_id: MatchId) {
        self.0.retain(|(m, _), _| *m != match_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(ms: &[BundledMessage]) -> Vec<&[u8]> {
        ms.iter().map(|m| m.data.as_ref()).collect()
    }

    #[test]
    fn each_message_is_delivered_once_even_when_datagrams_are_lost() {
        let mut sent = Sent::default();
        let mut seen = Seen::default();
        let id = MatchId::new_random();
        let datagrams: Vec<Bytes> = [&b"m1"[..], b"m2", b"m3", b"m4", b"m5"]
            .iter()
            .map(|m| sent.bundle(1, Bytes::copy_from_slice(m), 1).expect("fits"))
            .collect();
        let mut got = Vec::new();
        // m2 and m4's datagrams are lost; K = 1 recovers both from the next ones.
        for (i, d) in datagrams.iter().enumerate() {
            if i == 1 || i == 3 {
                continue;
            }
            let ms = bundle::decode(d.clone()).expect("decode");
            got.extend(seen.fresh(id, 2, ms));
        }
        assert_eq!(texts(&got), vec![&b"m1"[..], b"m2", b"m3", b"m4", b"m5"]);
    }

    #[test]
    fn duplicates_and_stale_bundles_are_dropped() {
        let mut sent = Sent::default();
        let mut seen = Seen::default();
        let id = MatchId::new_random();
        let d1 = sent.bundle(1, Bytes::from_static(b"a"), 2).expect("fits");
        let d2 = sent.bundle(1, Bytes::from_static(b"b"), 2).expect("fits");
        let d3 = sent.bundle(1, Bytes::from_static(b"c"), 2).expect("fits");
        let got3 = seen.fresh(id, 2, bundle::decode(d3).expect("decode"));
        assert_eq!(texts(&got3), vec![&b"a"[..], b"b", b"c"]);
        // d1 and d2 arrive late: everything in them was delivered.
        assert!(seen
            .fresh(id, 2, bundle::decode(d2).expect("decode"))
            .is_empty());
        assert!(seen
            .fresh(id, 2, bundle::decode(d1.clone()).expect("decode"))
            .is_empty());
        // Another sender (slot) or match is tracked on its own.
        assert_eq!(
            seen.fresh(id, 3, bundle::decode(d1.clone()).expect("decode"))
                .len(),
            1
        );
        seen.forget(id);
        assert_eq!(
            seen.fresh(id, 2, bundle::decode(d1).expect("decode")).len(),
            1
        );
    }

    #[test]
    fn a_sender_that_numbers_from_1_again_is_heard() {
        let mut seen = Seen::default();
        let id = MatchId::new_random();
        let mut before = Sent::default();
        let mut last = Bytes::new();
        for i in 0..100u8 {
            last = before.bundle(1, Bytes::from(vec![i]), 0).expect("fits");
        }
        assert_eq!(
            seen.fresh(id, 2, bundle::decode(last).expect("decode"))
                .len(),
            1
        );
        // A new socket resumed the session: its numbering starts again.
        let mut after = Sent::default();
        let d = after
            .bundle(1, Bytes::from_static(b"again"), 0)
            .expect("fits");
        assert_eq!(
            texts(&seen.fresh(id, 2, bundle::decode(d.clone()).expect("decode"))),
            vec![&b"again"[..]]
        );
        assert!(seen
            .fresh(id, 2, bundle::decode(d).expect("decode"))
            .is_empty());
    }

    #[test]
    fn a_bundle_never_repeats_more_than_asked_or_allowed() {
        let mut sent = Sent::default();
        for i in 0..10u8 {
            let d = sent.bundle(1, Bytes::from(vec![i]), 9).expect("fits");
            let n = bundle::decode(d).expect("decode").len();
            assert_eq!(n, usize::from(i).min(MAX_REDUNDANCY) + 1);
        }
        let mut sent = Sent::default();
        sent.bundle(1, Bytes::from_static(b"x"), 1).expect("fits");
        let d = sent.bundle(1, Bytes::from_static(b"y"), 0).expect("fits");
        assert_eq!(bundle::decode(d).expect("decode").len(), 1);
        assert_eq!(sent.bundle(1, Bytes::from(vec![0u8; 2000]), 1), None);
    }
}
