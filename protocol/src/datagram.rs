//! Hand-written headers of the unreliable match-data datagrams.
//!
//! The relay never deserializes a payload: it reads the small header, then forwards the
//! payload bytes as they are. Varints use the same scheme as the control stream (bincode
//! 2 `standard()`): a value below 251 is one byte; otherwise a marker byte 251, 252 or
//! 253 is followed by the value as a little-endian u16, u32 or u64. Signed values are
//! zigzag-encoded first.
//!
//! Client to server:
//! `[version u8][kind u8: 0x01 to others | 0x02 to listed][handle varint][op_code
//! zigzag varint]` then, for kind 0x02, `[count u8][slot varint]*count`, then the payload.
//!
//! Server to client:
//! `[version u8][kind u8: 0x81][handle varint][sender slot varint][seq varint][op_code
//! zigzag varint]` then the payload.
//!
//! Redundant (bundled) data uses kinds 0x03 / 0x04 from the client (else as 0x01 / 0x02)
//! and 0x82 from the server (else as 0x81); the payload is then a bundle of the
//! sender's newest messages (see [`crate::bundle`]). The server relays it unchanged.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{error::DecodeError, MAX_DATAGRAM_PAYLOAD, MAX_TARGETS, PROTOCOL_VERSION};

/// Datagram kind: match data from a client to every other member.
pub const KIND_TO_OTHERS: u8 = 0x01;
/// Datagram kind: match data from a client to the listed member slots.
pub const KIND_TO_LISTED: u8 = 0x02;
/// Datagram kind: match data relayed by the server.
pub const KIND_RELAYED: u8 = 0x81;
/// Datagram kind: a bundle of recent messages from a client to every other member.
pub const KIND_BUNDLE_TO_OTHERS: u8 = 0x03;
/// Datagram kind: a bundle of recent messages from a client to the listed member slots.
pub const KIND_BUNDLE_TO_LISTED: u8 = 0x04;
/// Datagram kind: a bundle relayed by the server.
pub const KIND_RELAYED_BUNDLE: u8 = 0x82;

/// Largest client header: version, kind, handle, op code, count and [`MAX_TARGETS`] slots.
pub const MAX_CLIENT_HEADER: usize = 2 + 5 + 9 + 1 + 5 * MAX_TARGETS;
/// Largest relayed header: version, kind, handle, slot, seq, op code.
pub const MAX_RELAY_HEADER: usize = 2 + 5 + 5 + 9 + 9;

/// Writes `v` as a varint.
pub fn put_varint(buf: &mut impl BufMut, v: u64) {
    if v < 251 {
        buf.put_u8(v as u8);
    } else if v <= u64::from(u16::MAX) {
        buf.put_u8(251);
        buf.put_u16_le(v as u16);
    } else if v <= u64::from(u32::MAX) {
        buf.put_u8(252);
        buf.put_u32_le(v as u32);
    } else {
        buf.put_u8(253);
        buf.put_u64_le(v);
    }
}

/// Reads a varint.
pub fn get_varint(buf: &mut impl Buf) -> Result<u64, DecodeError> {
    if !buf.has_remaining() {
        return Err(DecodeError::Truncated);
    }
    let need = |buf: &dyn Buf, n: usize| {
        if buf.remaining() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    };
    match buf.get_u8() {
        b @ 0..=250 => Ok(u64::from(b)),
        251 => need(buf, 2).map(|()| u64::from(buf.get_u16_le())),
        252 => need(buf, 4).map(|()| u64::from(buf.get_u32_le())),
        253 => need(buf, 8).map(|()| buf.get_u64_le()),
        b => Err(DecodeError::Malformed(format!("invalid varint marker {b}"))),
    }
}

fn get_varint_u32(buf: &mut impl Buf, what: &str) -> Result<u32, DecodeError> {
    let v = get_varint(buf)?;
    u32::try_from(v).map_err(|_| DecodeError::Malformed(format!("{what} {v} out of range")))
}

/// Zigzag-encodes a signed value.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Reverses [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn start(buf: &mut Bytes) -> Result<u8, DecodeError> {
    if buf.remaining() < 2 {
        return Err(DecodeError::Truncated);
    }
    let version = buf.get_u8();
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version(version));
    }
    Ok(buf.get_u8())
}

/// Match data a client sends as a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientDatagram {
    /// The match handle from the `Match` reply.
    pub handle: u32,
    /// Application-defined message kind.
    pub op_code: i64,
    /// Recipient slots; `None` means every other member.
    pub targets: Option<Vec<u32>>,
    /// The opaque payload (a bundle when `bundle`).
    pub payload: Bytes,
    /// The payload is a bundle of the sender's recent messages (kinds 0x03 / 0x04).
    pub bundle: bool,
}

impl ClientDatagram {
    /// Encodes the datagram.
    pub fn encode(&self) -> Bytes {
        encode_client_kind(
            self.handle,
            self.op_code,
            self.targets.as_deref(),
            &self.payload,
            self.bundle,
        )
    }

    /// Decodes a datagram, checking every count and the payload size before allocating.
    pub fn decode(mut buf: Bytes) -> Result<Self, DecodeError> {
        let kind = start(&mut buf)?;
        let handle = get_varint_u32(&mut buf, "handle")?;
        let op_code = unzigzag(get_varint(&mut buf)?);
        let bundle = matches!(kind, KIND_BUNDLE_TO_OTHERS | KIND_BUNDLE_TO_LISTED);
        let targets = match kind {
            KIND_TO_OTHERS | KIND_BUNDLE_TO_OTHERS => None,
            KIND_TO_LISTED | KIND_BUNDLE_TO_LISTED => {
                if !buf.has_remaining() {
                    return Err(DecodeError::Truncated);
                }
                let count = usize::from(buf.get_u8());
                if count > MAX_TARGETS {
                    return Err(DecodeError::Malformed(format!(
                        "{count} targets exceed the limit of {MAX_TARGETS}"
                    )));
                }
                let mut slots = Vec::with_capacity(count);
                for _ in 0..count {
                    slots.push(get_varint_u32(&mut buf, "slot")?);
                }
                Some(slots)
            }
            other => return Err(DecodeError::UnknownKind(u32::from(other))),
        };
        if buf.len() > MAX_DATAGRAM_PAYLOAD {
            return Err(DecodeError::FrameTooLarge {
                len: buf.len(),
                max: MAX_DATAGRAM_PAYLOAD,
            });
        }
        Ok(Self {
            handle,
            op_code,
            targets,
            payload: buf,
            bundle,
        })
    }
}

/// Encodes a client match-data datagram without building a [`ClientDatagram`].
pub fn encode_client(handle: u32, op_code: i64, targets: Option<&[u32]>, payload: &[u8]) -> Bytes {
    encode_client_kind(handle, op_code, targets, payload, false)
}

/// [`encode_client`], or with `bundle` a bundle datagram (kinds 0x03 / 0x04).
pub fn encode_client_kind(
    handle: u32,
    op_code: i64,
    targets: Option<&[u32]>,
    payload: &[u8],
    bundle: bool,
) -> Bytes {
    let mut buf = BytesMut::with_capacity(MAX_CLIENT_HEADER.min(32) + payload.len());
    buf.put_u8(PROTOCOL_VERSION);
    buf.put_u8(match (targets.is_some(), bundle) {
        (true, false) => KIND_TO_LISTED,
        (false, false) => KIND_TO_OTHERS,
        (true, true) => KIND_BUNDLE_TO_LISTED,
        (false, true) => KIND_BUNDLE_TO_OTHERS,
    });
    put_varint(&mut buf, u64::from(handle));
    put_varint(&mut buf, zigzag(op_code));
    if let Some(targets) = targets {
        let targets = &targets[..targets.len().min(MAX_TARGETS)];
        buf.put_u8(targets.len() as u8);
        for slot in targets {
            put_varint(&mut buf, u64::from(*slot));
        }
    }
    buf.put_slice(payload);
    buf.freeze()
}

/// The header of a datagram the server relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayHeader {
    /// The match handle.
    pub handle: u32,
    /// The sender's slot in the match.
    pub sender_slot: u32,
    /// The match's processing order.
    pub seq: u64,
    /// Application-defined message kind (of the newest message, for a bundle).
    pub op_code: i64,
    /// The payload is a bundle (kind 0x82).
    pub bundle: bool,
}

impl RelayHeader {
    /// Encodes the header followed by `payload` into one buffer, shared by every
    /// recipient.
    pub fn encode(&self, payload: &[u8]) -> Bytes {
        let mut buf = BytesMut::with_capacity(MAX_RELAY_HEADER + payload.len());
        buf.put_u8(PROTOCOL_VERSION);
        buf.put_u8(if self.bundle {
            KIND_RELAYED_BUNDLE
        } else {
            KIND_RELAYED
        });
        put_varint(&mut buf, u64::from(self.handle));
        put_varint(&mut buf, u64::from(self.sender_slot));
        put_varint(&mut buf, self.seq);
        put_varint(&mut buf, zigzag(self.op_code));
        buf.put_slice(payload);
        buf.freeze()
    }

    /// Decodes a relayed datagram into its header and payload.
    pub fn decode(mut buf: Bytes) -> Result<(Self, Bytes), DecodeError> {
        let kind = start(&mut buf)?;
        if kind != KIND_RELAYED && kind != KIND_RELAYED_BUNDLE {
            return Err(DecodeError::UnknownKind(u32::from(kind)));
        }
        let handle = get_varint_u32(&mut buf, "handle")?;
        let sender_slot = get_varint_u32(&mut buf, "slot")?;
        let seq = get_varint(&mut buf)?;
        let op_code = unzigzag(get_varint(&mut buf)?);
        Ok((
            Self {
                handle,
                sender_slot,
                seq,
                op_code,
                bundle: kind == KIND_RELAYED_BUNDLE,
            },
            buf,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pinned_client_bytes() {
        let d = encode_client(300, -2, Some(&[1, 7]), b"hi");
        assert_eq!(&d[..], &[1, 0x02, 251, 0x2c, 0x01, 3, 2, 1, 7, b'h', b'i']);
        let d = encode_client(5, 1, None, b"");
        assert_eq!(&d[..], &[1, 0x01, 5, 2]);
    }

    #[test]
    fn pinned_relay_bytes() {
        let h = RelayHeader {
            handle: 5,
            sender_slot: 2,
            seq: 70_000,
            op_code: 1,
            bundle: false,
        };
        assert_eq!(
            &h.encode(b"x")[..],
            &[1, 0x81, 5, 2, 252, 0x70, 0x11, 0x01, 0x00, 2, b'x']
        );
        let b = RelayHeader { bundle: true, ..h };
        assert_eq!(b.encode(b"x")[1], KIND_RELAYED_BUNDLE);
    }

    #[test]
    fn malformed_datagrams_are_rejected() {
        let cases: &[(&[u8], &str)] = &[
            (&[], "empty"),
            (&[1], "no kind"),
            (&[2, 1, 0, 0], "version"),
            (&[1, 9, 0, 0], "kind"),
            (&[1, 1, 251, 0], "truncated varint"),
            (&[1, 1, 254, 0], "bad marker"),
            (&[1, 2, 0, 0], "missing count"),
            (&[1, 2, 0, 0, 3, 1], "missing slots"),
            (&[1, 2, 0, 0, 200], "too many targets"),
            (&[1, 1, 253, 0, 0, 0, 0, 1, 0, 0, 0, 0], "handle over u32"),
        ];
        for (bytes, what) in cases {
            assert!(
                ClientDatagram::decode(Bytes::copy_from_slice(bytes)).is_err(),
                "{what}"
            );
        }
        let big = encode_client(1, 1, None, &vec![0u8; MAX_DATAGRAM_PAYLOAD + 1]);
        assert!(matches!(
            ClientDatagram::decode(big),
            Err(DecodeError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn zigzag_extremes() {
        for v in [0, 1, -1, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    proptest! {
        #[test]
        fn client_round_trip(handle: u32, op: i64, bundle: bool,
            targets in proptest::option::of(proptest::collection::vec(any::<u32>(), 0..MAX_TARGETS)),
            payload in proptest::collection::vec(any::<u8>(), 0..MAX_DATAGRAM_PAYLOAD)) {
            let d = ClientDatagram { handle, op_code: op, targets, payload: Bytes::from(payload), bundle };
            prop_assert_eq!(ClientDatagram::decode(d.encode()).expect("decode"), d);
        }

        #[test]
        fn relay_round_trip(handle: u32, slot: u32, seq: u64, op: i64, bundle: bool,
            payload in proptest::collection::vec(any::<u8>(), 0..MAX_DATAGRAM_PAYLOAD)) {
            let h = RelayHeader { handle, sender_slot: slot, seq, op_code: op, bundle };
            let (h2, p) = RelayHeader::decode(h.encode(&payload)).expect("decode");
            prop_assert_eq!(h2, h);
            prop_assert_eq!(&p[..], &payload[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = ClientDatagram::decode(Bytes::from(bytes.clone()));
            let _ = RelayHeader::decode(Bytes::from(bytes));
        }
    }
}
