//! Latest state: for a relayed match created with latest-state op codes, the newest
//! message each member broadcast under each of those op codes, handed to a member who
//! joins late right after its `Match` reply.
//!
//! Only broadcasts (to every other member) of at most
//! [`MAX_LATEST_PAYLOAD`](quicmatch_protocol::MAX_LATEST_PAYLOAD) bytes are kept, one
//! per (sender, op code), so a match keeps at most members × op codes × 1 KiB. A
//! member's messages are forgotten when it leaves. Datagram relays only read the match
//! table, so the store has a lock of its own, held for one map operation.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use bytes::Bytes;
use quicmatch_protocol::{
    envelope::Event, frame::EventBody, ErrorCode, MatchId, MAX_LATEST_OP_CODES, MAX_LATEST_PAYLOAD,
};

use crate::handlers::ApiError;

/// One match's latest-state op codes and what it kept of them.
#[derive(Debug)]
pub(crate) struct Latest {
    op_codes: Vec<i64>,
    /// (sender slot, op code) -> (seq, payload).
    kept: Mutex<BTreeMap<(u32, i64), (u64, Bytes)>>,
}

impl Latest {
    /// The store for `op_codes` (deduplicated), or `None` when there are none.
    pub(crate) fn new(op_codes: &[i64]) -> Result<Option<Self>, ApiError> {
        let mut codes = op_codes.to_vec();
        codes.sort_unstable();
        codes.dedup();
        if codes.len() > MAX_LATEST_OP_CODES {
            return Err(ApiError::new(
                ErrorCode::BAD_INPUT,
                format!("at most {MAX_LATEST_OP_CODES} latest-state op codes"),
            ));
        }
        Ok((!codes.is_empty()).then(|| Self {
            op_codes: codes,
            kept: Mutex::new(BTreeMap::new()),
        }))
    }

    fn kept(&self) -> MutexGuard<'_, BTreeMap<(u32, i64), (u64, Bytes)>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a broadcast if its op code is one of the match's and it is small enough;
    /// a message older (by `seq`) than the one kept is ignored.
    pub(crate) fn keep(&self, slot: u32, op_code: i64, seq: u64, data: &Bytes) {
        if data.len() > MAX_LATEST_PAYLOAD || self.op_codes.binary_search(&op_code).is_err() {
            return;
        }
        let mut kept = self.kept();
        let entry = kept.entry((slot, op_code)).or_insert((0, Bytes::new()));
        if seq >= entry.0 {
            *entry = (seq, data.clone());
        }
    }

    /// Forgets what a member that left sent.
    pub(crate) fn forget(&self, slot: u32) {
        self.kept().retain(|(s, _), _| *s != slot);
    }

    /// What a joiner receives: every kept message as `MatchData`, oldest `seq` first.
    pub(crate) fn frames(&self, match_id: MatchId) -> Vec<EventBody> {
        let mut kept: Vec<((u32, i64), (u64, Bytes))> =
            self.kept().iter().map(|(k, v)| (*k, v.clone())).collect();
        kept.sort_by_key(|(_, (seq, _))| *seq);
        kept.into_iter()
            .filter_map(|((sender_slot, op_code), (seq, data))| {
                EventBody::encode(&Event::MatchData {
                    match_id,
                    sender_slot,
                    seq,
                    op_code,
                    data,
                })
                .ok()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_broadcast_per_sender_and_op_code() {
        let latest = Latest::new(&[7, 3, 7]).expect("ok").expect("some");
        assert_eq!(latest.op_codes, vec![3, 7]);
        latest.keep(1, 7, 10, &Bytes::from_static(b"a"));
        latest.keep(1, 7, 12, &Bytes::from_static(b"b"));
        // An older message that arrives late does not replace a newer one.
        latest.keep(1, 7, 11, &Bytes::from_static(b"stale"));
        latest.keep(2, 3, 5, &Bytes::from_static(b"c"));
        // Op codes outside the set and oversized payloads are not kept.
        latest.keep(2, 4, 6, &Bytes::from_static(b"d"));
        latest.keep(2, 7, 7, &Bytes::from(vec![0u8; MAX_LATEST_PAYLOAD + 1]));
        let kept = latest.kept().clone();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[&(1, 7)], (12, Bytes::from_static(b"b")));
        assert_eq!(latest.frames(MatchId::new_random()).len(), 2);
        latest.forget(1);
        assert_eq!(latest.kept().len(), 1);
    }

    #[test]
    fn too_many_op_codes_are_refused_and_none_means_no_store() {
        let many: Vec<i64> = (0..=MAX_LATEST_OP_CODES as i64).collect();
        assert!(Latest::new(&many).is_err());
        assert!(Latest::new(&[]).expect("ok").is_none());
    }
}
