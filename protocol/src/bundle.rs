//! Bundles: the payload of a redundant datagram, carrying a sender's newest message and
//! up to [`MAX_REDUNDANCY`] of its previous ones, so one lost datagram loses nothing
//! when the next arrives.
//!
//! Layout: `[count u8 (1 to MAX_REDUNDANCY + 1)]`, then per message, newest first,
//! `[msg_seq varint][op_code zigzag varint][len varint][len bytes]`. `msg_seq` numbers the
//! sender's bundled messages to one match (from 1, by one); a receiver delivers each
//! `msg_seq` once, oldest first, and drops what it already has. The whole bundle is at
//! most [`MAX_DATAGRAM_PAYLOAD`] bytes; the server never looks inside it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{
    datagram::{get_varint, put_varint, unzigzag, zigzag},
    error::DecodeError,
    MAX_DATAGRAM_PAYLOAD,
};

/// Most previous messages one bundle repeats.
pub const MAX_REDUNDANCY: usize = 3;

/// How far below the highest `msg_seq` a receiver has seen from a sender a message may
/// be and still count as old (a repeat, or a datagram overtaken on the way); one
/// further below means the sender numbers from 1 again (a new socket resuming its
/// session), so it is fresh.
pub const RESTART_GAP: u64 = 64;

/// Whether a message numbered `msg_seq` is new to a receiver whose highest delivered
/// from that sender is `last` (see [`RESTART_GAP`]).
pub fn is_fresh(msg_seq: u64, last: u64) -> bool {
    msg_seq > last || last - msg_seq >= RESTART_GAP
}

/// One message in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundledMessage {
    /// The sender's number for it (per match, from 1).
    pub msg_seq: u64,
    /// Application-defined message kind.
    pub op_code: i64,
    /// The payload.
    pub data: Bytes,
}

/// Encodes `messages` (newest first): the first always, then as many of the others (at
/// most [`MAX_REDUNDANCY`]) as fit in [`MAX_DATAGRAM_PAYLOAD`] bytes. `None` when even the
/// first does not fit.
pub fn encode(messages: &[BundledMessage]) -> Option<Bytes> {
    let size = |m: &BundledMessage| 10 + 10 + 5 + m.data.len();
    let mut take = 0;
    let mut total = 1;
    for m in messages.iter().take(MAX_REDUNDANCY + 1) {
        if total + size(m) > MAX_DATAGRAM_PAYLOAD {
            break;
        }
        total += size(m);
        take += 1;
    }
    if take == 0 {
        return None;
    }
    let mut buf = BytesMut::with_capacity(total);
    buf.put_u8(take as u8);
    for m in &messages[..take] {
        put_varint(&mut buf, m.msg_seq);
        put_varint(&mut buf, zigzag(m.op_code));
        put_varint(&mut buf, m.data.len() as u64);
        buf.put_slice(&m.data);
    }
    Some(buf.freeze())
}

/// Decodes a bundle, newest first, checking every count and length before slicing.
pub fn decode(mut buf: Bytes) -> Result<Vec<BundledMessage>, DecodeError> {
    if buf.len() > MAX_DATAGRAM_PAYLOAD {
        return Err(DecodeError::FrameTooLarge {
            len: buf.len(),
            max: MAX_DATAGRAM_PAYLOAD,
        });
    }
    if !buf.has_remaining() {
        return Err(DecodeError::Truncated);
    }
    let count = usize::from(buf.get_u8());
    if count == 0 || count > MAX_REDUNDANCY + 1 {
        return Err(DecodeError::Malformed(format!(
            "a bundle holds 1 to {} messages, not {count}",
            MAX_REDUNDANCY + 1
        )));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let msg_seq = get_varint(&mut buf)?;
        let op_code = unzigzag(get_varint(&mut buf)?);
        let len = get_varint(&mut buf)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > buf.remaining() {
            return Err(DecodeError::Truncated);
        }
        out.push(BundledMessage {
            msg_seq,
            op_code,
            data: buf.split_to(len),
        });
    }
    if buf.has_remaining() {
        return Err(DecodeError::Malformed(
            "bytes after the last message".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_numbers_are_stale_unless_the_sender_started_again() {
        assert!(is_fresh(1, 0));
        assert!(is_fresh(11, 10));
        assert!(!is_fresh(10, 10));
        assert!(!is_fresh(7, 10));
        assert!(!is_fresh(1, RESTART_GAP));
        assert!(is_fresh(1, RESTART_GAP + 1));
        assert!(is_fresh(1, u64::MAX));
    }
    use proptest::prelude::*;

    fn msg(msg_seq: u64, data: &[u8]) -> BundledMessage {
        BundledMessage {
            msg_seq,
            op_code: -3,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn pinned_bytes() {
        let b = encode(&[msg(2, b"b"), msg(1, b"a")]).expect("fits");
        assert_eq!(&b[..], &[2, 2, 5, 1, b'b', 1, 5, 1, b'a']);
        assert_eq!(decode(b).expect("decode"), vec![msg(2, b"b"), msg(1, b"a")]);
    }

    #[test]
    fn keeps_what_fits_and_at_most_the_redundancy() {
        let big = vec![7u8; 600];
        let b = encode(&[msg(3, &big), msg(2, &big), msg(1, b"x")]).expect("first fits");
        assert_eq!(decode(b).expect("decode").len(), 1);
        let many: Vec<_> = (0..9).rev().map(|i| msg(i, b"m")).collect();
        assert_eq!(
            decode(encode(&many).expect("fits")).expect("decode").len(),
            MAX_REDUNDANCY + 1
        );
        assert_eq!(encode(&[msg(1, &[0u8; MAX_DATAGRAM_PAYLOAD])]), None);
        assert_eq!(encode(&[]), None);
    }

    #[test]
    fn hostile_bundles_are_errors() {
        assert!(decode(Bytes::from_static(&[])).is_err());
        assert!(decode(Bytes::from_static(&[0])).is_err());
        assert!(decode(Bytes::from_static(&[9, 1, 1, 1, 0])).is_err());
        // A length past the end.
        assert!(decode(Bytes::from_static(&[1, 1, 2, 200, b'x'])).is_err());
        // Trailing bytes.
        assert!(decode(Bytes::from_static(&[1, 1, 2, 1, b'x', 0])).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = decode(Bytes::from(bytes));
        }

        #[test]
        fn round_trip(seqs in proptest::collection::vec(any::<u64>(), 1..=4), op: i64,
                      len in 0usize..200) {
            let ms: Vec<_> = seqs.iter().map(|s| BundledMessage { msg_seq: *s, op_code: op, data: Bytes::from(vec![1u8; len]) }).collect();
            let b = encode(&ms).expect("fits");
            prop_assert_eq!(decode(b).expect("decode"), ms);
        }
    }
}
