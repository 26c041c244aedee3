//! Control-stream framing, and the only module that calls bincode.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of body; the body is
//! one envelope encoded with bincode 2's `standard()` configuration (little-endian
//! varints) under a byte limit of [`MAX_FRAME_LEN`]. The length is checked against the
//! limit before any buffer is allocated, and decoding can never claim more memory than
//! the frame holds, so hostile input costs at most one frame. Swapping the codec means
//! changing this file alone.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    envelope::{ClientEnvelope, Event, Request, ServerEnvelope},
    error::DecodeError,
    MAX_FRAME_LEN,
};

/// Bytes in the length prefix.
pub const LEN_PREFIX: usize = 4;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME_LEN>,
>;

const fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded body would exceed [`MAX_FRAME_LEN`].
    #[error("message exceeds the frame limit of {MAX_FRAME_LEN} bytes")]
    TooLarge,
    /// The serializer failed.
    #[error("encode failed: {0}")]
    Other(String),
}

/// Encodes one message into a complete frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(0);
    let mut writer = buf.writer();
    bincode::serde::encode_into_std_write(msg, &mut writer, config())
        .map_err(|e| EncodeError::Other(e.to_string()))?;
    let mut buf = writer.into_inner();
    let body_len = buf.len() - LEN_PREFIX;
    if body_len > MAX_FRAME_LEN {
        return Err(EncodeError::TooLarge);
    }
    // body_len <= MAX_FRAME_LEN, which fits in a u32.
    buf[..LEN_PREFIX].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(buf.freeze())
}

/// The version byte in front of every record and message the nodes of a cluster
/// exchange through NATS ([`encode_peer`]); a node refuses other versions. 2: ticket
/// records and group results carry backfills.
pub const CLUSTER_WIRE_VERSION: u8 = 2;

/// Encodes a record or message for the other nodes of a cluster: the version byte, then
/// the body as a frame's, under the same [`MAX_FRAME_LEN`] limit.
pub fn encode_peer<T: Serialize>(msg: &T) -> Result<Bytes, EncodeError> {
    let mut writer = BytesMut::with_capacity(64).writer();
    writer.get_mut().put_u8(CLUSTER_WIRE_VERSION);
    bincode::serde::encode_into_std_write(msg, &mut writer, config())
        .map_err(|e| EncodeError::Other(e.to_string()))?;
    let buf = writer.into_inner();
    if buf.len() - 1 > MAX_FRAME_LEN {
        return Err(EncodeError::TooLarge);
    }
    Ok(buf.freeze())
}

/// Decodes what [`encode_peer`] wrote: another version is [`DecodeError::Version`], and
/// the body is held to a frame's limits (bounded, no trailing bytes).
pub fn decode_peer<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.split_first() {
        Some((&CLUSTER_WIRE_VERSION, body)) => decode_exact(body),
        Some((&other, _)) => Err(DecodeError::Version(other)),
        None => Err(DecodeError::Truncated),
    }
}

/// Longest frame head [`EventBody::head`] writes: the length prefix, `cid = None`, the
/// `ServerBody` variant and a `u64` varint.
pub const MAX_EVENT_HEAD: usize = LEN_PREFIX + 2 + 9;

/// An [`Event`] encoded once, to be framed for any number of sessions: each recipient's
/// frame is a small head of its own (with its own sequence number) followed by these
/// shared bytes, so a fan-out encodes the event once and copies no payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBody(Bytes);

/// `ServerBody` variant indices (see `envelope::ServerBody`).
const BODY_EVENT: u8 = 1;
const BODY_SEQUENCED: u8 = 2;

impl EventBody {
    /// Encodes an event, refusing one whose frame could exceed [`MAX_FRAME_LEN`].
    pub fn encode(event: &Event) -> Result<Self, EncodeError> {
        let mut writer = BytesMut::with_capacity(64).writer();
        bincode::serde::encode_into_std_write(event, &mut writer, config())
            .map_err(|e| EncodeError::Other(e.to_string()))?;
        let buf = writer.into_inner();
        if buf.len() + MAX_EVENT_HEAD - LEN_PREFIX > MAX_FRAME_LEN {
            return Err(EncodeError::TooLarge);
        }
        Ok(Self(buf.freeze()))
    }

    /// An event another node of the cluster encoded (its [`bytes`](Self::bytes)),
    /// refused past the bound [`encode`](Self::encode) keeps, so any head still fits.
    pub fn from_encoded(bytes: Bytes) -> Result<Self, DecodeError> {
        let max = MAX_FRAME_LEN + LEN_PREFIX - MAX_EVENT_HEAD;
        if bytes.is_empty() {
            return Err(DecodeError::Truncated);
        }
        if bytes.len() > max {
            return Err(DecodeError::FrameTooLarge {
                len: bytes.len(),
                max,
            });
        }
        Ok(Self(bytes))
    }

    /// The event back.
    pub fn decode(&self) -> Result<Event, DecodeError> {
        decode_exact(&self.0)
    }

    /// The encoded event.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Bytes of the whole frame with a head for `seq`.
    pub fn frame_len(&self, seq: Option<u64>) -> usize {
        self.head(seq).len() + self.0.len()
    }

    /// The frame head that makes these bytes a complete `ServerEnvelope` frame:
    /// `ServerBody::Event` when `seq` is `None` (protocol 1), `ServerBody::Sequenced`
    /// with that number otherwise (protocol 2). Send it, then [`bytes`](Self::bytes).
    pub fn head(&self, seq: Option<u64>) -> Bytes {
        let mut head = [0u8; MAX_EVENT_HEAD];
        let mut n = LEN_PREFIX;
        head[n] = 0; // cid: None
        n += 1;
        match seq {
            None => {
                head[n] = BODY_EVENT;
                n += 1;
            }
            Some(seq) => {
                head[n] = BODY_SEQUENCED;
                n += 1;
                // A u64 varint takes at most 9 bytes, which the array has room for.
                n += bincode::serde::encode_into_slice(seq, &mut head[n..], config())
                    .unwrap_or_default();
            }
        }
        // encode() bounded the body so that the largest head still fits the limit.
        let body_len = (n - LEN_PREFIX + self.0.len()) as u32;
        head[..LEN_PREFIX].copy_from_slice(&body_len.to_be_bytes());
        Bytes::copy_from_slice(&head[..n])
    }
}

/// Reads the body length from a frame's prefix, refusing anything over the limit.
pub fn body_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len)
}

fn decode_exact<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    if body.len() > MAX_FRAME_LEN {
        return Err(DecodeError::FrameTooLarge {
            len: body.len(),
            max: MAX_FRAME_LEN,
        });
    }
    let (value, used) =
        bincode::serde::decode_from_slice::<T, _>(body, config()).map_err(map_decode_error)?;
    if used != body.len() {
        return Err(DecodeError::TrailingBytes(body.len() - used));
    }
    Ok(value)
}

/// Maps a bincode failure to the error a peer is told about.
///
/// Nothing bincode reports is a frame-level problem (the frame's own length was checked
/// before decoding), and bincode never reports an unknown request kind as such (serde
/// reports unknown enum variants as free text; [`decode_client`] reads the request kind
/// itself), so every failure here is a malformed body, [`ErrorCode::BAD_INPUT`]:
/// - `UnexpectedVariant` only comes from a nested tag (an `Option` tag other than 0
///   or 1), never from the top-level request kind;
/// - `LimitExceeded` means an inner length prefix claims more bytes than the frame limit,
///   so, since the frame itself is within [`MAX_FRAME_LEN`], more than the frame holds:
///   the same failure as any other length running past the end, [`DecodeError::Truncated`].
///
/// [`ErrorCode::BAD_INPUT`]: crate::ErrorCode::BAD_INPUT
fn map_decode_error(e: bincode::error::DecodeError) -> DecodeError {
    use bincode::error::DecodeError as E;
    match e {
        E::UnexpectedEnd { .. } | E::LimitExceeded => DecodeError::Truncated,
        E::UnexpectedVariant {
            found, type_name, ..
        } => DecodeError::Malformed(format!("invalid tag {found} for {type_name}")),
        other => DecodeError::Malformed(other.to_string()),
    }
}

/// Decodes a client frame body.
///
/// On failure it still returns the envelope's `cid` when that much could be read, so
/// the error reply can be correlated with the request. The error distinguishes (see
/// [`DecodeError::code`]):
/// - a body that ends right after a complete `cid`: [`DecodeError::MissingPayload`];
/// - a top-level request kind this version does not know: [`DecodeError::UnknownKind`];
/// - anything else malformed, nested tags and lengths included: `BAD_INPUT` errors.
pub fn decode_client(body: &[u8]) -> Result<ClientEnvelope, (Option<u32>, DecodeError)> {
    decode_exact(body).map_err(|e| {
        let Ok((cid, used)) = bincode::serde::decode_from_slice::<Option<u32>, _>(body, config())
        else {
            return (None, e);
        };
        let mut rest = body.get(used..).unwrap_or_default();
        if rest.is_empty() {
            return (cid, DecodeError::MissingPayload);
        }
        // serde reports an unknown variant as free text; read the index ourselves so an
        // unknown request kind gets its own error code.
        match crate::datagram::get_varint(&mut rest) {
            Ok(kind) if kind >= u64::from(Request::KINDS) => (
                cid,
                DecodeError::UnknownKind(u32::try_from(kind).unwrap_or(u32::MAX)),
            ),
            _ => (cid, e),
        }
    })
}

/// Decodes a server frame body.
pub fn decode_server(body: &[u8]) -> Result<ServerEnvelope, DecodeError> {
    decode_exact(body)
}

/// Splits frames off the front of a byte buffer: the sans-IO half of the framing.
///
/// Returns the next complete frame body, `Ok(None)` when more bytes are needed, or an
/// error when the length prefix is over the limit (the stream cannot be resynchronised
/// after that, so the connection should be closed).
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
    if buf.len() < LEN_PREFIX {
        return Ok(None);
    }
    let mut prefix = [0u8; LEN_PREFIX];
    prefix.copy_from_slice(&buf[..LEN_PREFIX]);
    let len = body_len(prefix)?;
    if buf.len() < LEN_PREFIX + len {
        buf.reserve(LEN_PREFIX + len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(LEN_PREFIX + len);
    let _ = frame.split_to(LEN_PREFIX);
    Ok(Some(frame.freeze()))
}

/// A `tokio-util` codec over [`split_frame`], yielding frame bodies; encoding passes
/// already-framed bytes (from [`encode`]) through.
#[cfg(feature = "codec")]
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

#[cfg(feature = "codec")]
impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        split_frame(src).map_err(FrameError::Decode)
    }
}

/// An I/O or framing failure on the control stream.
#[cfg(feature = "codec")]
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// The framing is broken.
    #[error(transparent)]
    Decode(DecodeError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        envelope::{Credentials, Event, Request, Response, ServerBody},
        ids::{MatchId, SessionId},
        ErrorCode,
    };
    use proptest::prelude::*;

    fn body_of(frame: &Bytes) -> &[u8] {
        &frame[LEN_PREFIX..]
    }

    #[test]
    fn an_event_from_another_node_keeps_the_bound_of_a_local_one() {
        let event = Event::Error {
            code: ErrorCode::BAD_INPUT,
            message: "x".into(),
        };
        let local = EventBody::encode(&event).expect("encode");
        let carried = EventBody::from_encoded(local.bytes().clone()).expect("within");
        assert_eq!(carried.head(Some(7)), local.head(Some(7)));
        assert_eq!(carried.decode().expect("decodes"), event);
        let max = MAX_FRAME_LEN + LEN_PREFIX - MAX_EVENT_HEAD;
        let at_bound = EventBody::from_encoded(Bytes::from(vec![0u8; max])).expect("at bound");
        assert!(at_bound.frame_len(Some(u64::MAX)) <= MAX_FRAME_LEN + LEN_PREFIX);
        assert!(EventBody::from_encoded(Bytes::from(vec![0u8; max + 1])).is_err());
        assert!(EventBody::from_encoded(Bytes::new()).is_err());
    }

    #[test]
    fn peer_records_round_trip_and_carry_their_version() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Rec {
            name: String,
            n: u64,
        }
        let rec = Rec {
            name: "node-a".into(),
            n: 7,
        };
        let bytes = encode_peer(&rec).expect("encode");
        assert_eq!(bytes[0], CLUSTER_WIRE_VERSION);
        assert_eq!(decode_peer::<Rec>(&bytes), Ok(rec));
        let mut other = bytes.to_vec();
        other[0] = 9;
        assert_eq!(decode_peer::<Rec>(&other), Err(DecodeError::Version(9)));
        assert_eq!(decode_peer::<Rec>(&[]), Err(DecodeError::Truncated));
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert_eq!(
            decode_peer::<Rec>(&trailing),
            Err(DecodeError::TrailingBytes(1))
        );
        assert!(decode_peer::<Rec>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn event_bodies_frame_like_whole_envelopes() {
        let event = Event::PartyData {
            party_id: crate::PartyId::new_random(),
            sender: crate::Presence {
                user_id: crate::UserId::new_random(),
                session_id: SessionId::new_random(),
                username: "ann".into(),
            },
            op_code: 9,
            data: Bytes::from_static(b"payload"),
        };
        let body = EventBody::encode(&event).expect("encode");
        let joined = |seq| {
            let mut f = body.head(seq).to_vec();
            f.extend_from_slice(body.bytes());
            assert_eq!(f.len(), body.frame_len(seq));
            Bytes::from(f)
        };
        let plain = encode(&ServerEnvelope {
            cid: None,
            body: ServerBody::Event(event.clone()),
        })
        .expect("encode");
        assert_eq!(joined(None), plain);
        for seq in [0, 1, 250, 251, 70_000, u64::MAX] {
            let whole = encode(&ServerEnvelope {
                cid: None,
                body: ServerBody::Sequenced {
                    seq,
                    event: event.clone(),
                },
            })
            .expect("encode");
            assert_eq!(joined(Some(seq)), whole, "seq {seq}");
            let back = decode_server(body_of(&whole)).expect("decode");
            assert_eq!(
                back.body,
                ServerBody::Sequenced {
                    seq,
                    event: event.clone()
                }
            );
        }
    }

    #[test]
    fn oversized_event_bodies_are_refused() {
        let event = Event::Error {
            code: ErrorCode::BAD_INPUT,
            message: "x".repeat(MAX_FRAME_LEN),
        };
        assert_eq!(EventBody::encode(&event), Err(EncodeError::TooLarge));
    }

    #[test]
    fn client_envelope_round_trips() {
        let env = ClientEnvelope {
            cid: Some(7),
            body: Request::MatchDataSend {
                match_id: MatchId::new_random(),
                op_code: -3,
                data: Bytes::from_static(b"hello"),
                targets: Some(vec![SessionId::new_random()]),
            },
        };
        let frame = encode(&env).expect("encode");
        let len = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
        assert_eq!(len, frame.len() - LEN_PREFIX);
        assert_eq!(decode_client(body_of(&frame)).expect("decode"), env);
    }

    #[test]
    fn ping_has_pinned_bytes() {
        let frame = encode(&ClientEnvelope {
            cid: Some(1),
            body: Request::Ping,
        })
        .expect("encode");
        // length 3; Some; cid 1; variant 1 (Ping)
        assert_eq!(&frame[..], &[0, 0, 0, 3, 1, 1, 1]);
    }

    #[test]
    fn oversized_prefix_is_refused_before_allocating() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0][..]);
        assert!(matches!(
            split_frame(&mut buf),
            Err(DecodeError::FrameTooLarge { .. })
        ));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let frame = encode(&ClientEnvelope {
            cid: None,
            body: Request::Ping,
        })
        .expect("encode");
        let mut buf = BytesMut::from(&frame[..frame.len() - 1]);
        assert_eq!(split_frame(&mut buf).expect("ok"), None);
        buf.extend_from_slice(&frame[frame.len() - 1..]);
        let body = split_frame(&mut buf).expect("ok").expect("frame");
        assert_eq!(&body[..], body_of(&frame));
        assert!(buf.is_empty());
    }

    #[test]
    fn unknown_request_kind_keeps_the_cid() {
        // Some(9), variant 200
        let (cid, err) = decode_client(&[1, 9, 200]).expect_err("unknown");
        assert_eq!(cid, Some(9));
        assert_eq!(err, DecodeError::UnknownKind(200));
        assert_eq!(err.code(), ErrorCode::UNRECOGNIZED_PAYLOAD);
    }

    #[test]
    fn huge_claimed_lengths_fail_cleanly() {
        // Authenticate whose server_key claims u64::MAX bytes.
        let mut body = vec![0u8, 0, 253];
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        let (cid, err) = decode_client(&body).expect_err("must fail");
        assert_eq!(cid, None);
        assert_eq!(err.code(), ErrorCode::BAD_INPUT, "{err:?}");
    }

    #[test]
    fn an_envelope_without_a_request_is_missing_payload() {
        // Some(5), then nothing.
        let (cid, err) = decode_client(&[1, 5]).expect_err("no request");
        assert_eq!(cid, Some(5));
        assert_eq!(err, DecodeError::MissingPayload);
        assert_eq!(err.code(), ErrorCode::MISSING_PAYLOAD);
        // Some(300): a multi-byte cid, then nothing.
        let (cid, err) = decode_client(&[1, 251, 0x2c, 0x01]).expect_err("no request");
        assert_eq!((cid, err), (Some(300), DecodeError::MissingPayload));
        // None, then nothing.
        let (cid, err) = decode_client(&[0]).expect_err("no request");
        assert_eq!((cid, err), (None, DecodeError::MissingPayload));
        // No complete cid at all: truncated, not missing.
        for body in [&[][..], &[1][..], &[1, 251, 0x2c][..]] {
            let (cid, err) = decode_client(body).expect_err("truncated");
            assert_eq!((cid, &err), (None, &DecodeError::Truncated), "{body:?}");
            assert_eq!(err.code(), ErrorCode::BAD_INPUT);
        }
        // A request kind that is cut short is not missing either.
        let (cid, err) = decode_client(&[1, 5, 251]).expect_err("truncated kind");
        assert_eq!(cid, Some(5));
        assert_eq!(err.code(), ErrorCode::BAD_INPUT);
    }

    #[test]
    fn bad_nested_tags_are_bad_input() {
        // MatchCreate { name: <tag 2> } with cid 3.
        let (cid, err) = decode_client(&[1, 3, 2, 2]).expect_err("bad option tag");
        assert_eq!(cid, Some(3));
        assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
        assert_eq!(err.code(), ErrorCode::BAD_INPUT);
        // The cid's own Option tag is bad: no cid, BAD_INPUT.
        let (cid, err) = decode_client(&[2, 3, 1]).expect_err("bad cid tag");
        assert_eq!(cid, None);
        assert_eq!(err.code(), ErrorCode::BAD_INPUT);
        // MatchDataSend whose targets tag is 7.
        let mut body = vec![1, 4, 5, 16];
        body.extend_from_slice(&[0xab; 16]); // match_id
        body.extend_from_slice(&[0x0e, 2, b'h', b'i', 7]); // op 7, data "hi", targets tag 7
        let (cid, err) = decode_client(&body).expect_err("bad targets tag");
        assert_eq!(
            (cid, err.code()),
            (Some(4), ErrorCode::BAD_INPUT),
            "{err:?}"
        );
        // Authenticate whose Credentials variant (9) is unknown: nested, so BAD_INPUT.
        let (cid, err) =
            decode_client(&[1, 6, 0, 1, b'k', 9, 1, b'x', 0]).expect_err("bad credentials");
        assert_eq!(
            (cid, err.code()),
            (Some(6), ErrorCode::BAD_INPUT),
            "{err:?}"
        );
        // A request kind past the last one is still UNRECOGNIZED_PAYLOAD, whatever follows.
        let past = u8::try_from(Request::KINDS).expect("a one-byte varint");
        let (cid, err) = decode_client(&[1, 8, past, 2, 2]).expect_err("unknown kind");
        assert_eq!(
            (cid, err),
            (Some(8), DecodeError::UnknownKind(u32::from(past)))
        );
    }

    #[test]
    fn inner_lengths_past_the_frame_are_bad_input() {
        // MatchCreate { name: Some(..) } with cid 2, name claiming `len` bytes, holding 2.
        let with_len = |len: &[u8]| {
            let mut body = vec![1, 2, 2, 1];
            body.extend_from_slice(len);
            body.extend_from_slice(b"ab");
            body
        };
        // 70 000 bytes: over the frame limit itself (bincode's limit trips).
        let (cid, err) =
            decode_client(&with_len(&[252, 0x70, 0x11, 0x01, 0x00])).expect_err("past");
        assert_eq!((cid, &err), (Some(2), &DecodeError::Truncated));
        assert_eq!(err.code(), ErrorCode::BAD_INPUT);
        // 1 000 bytes: under the limit, past the end of this frame.
        let (cid, err) = decode_client(&with_len(&[251, 0xe8, 0x03])).expect_err("past");
        assert_eq!((cid, &err), (Some(2), &DecodeError::Truncated));
        // A Vec claiming u32::MAX elements.
        let mut body = vec![1, 4, 5, 16];
        body.extend_from_slice(&[0xab; 16]);
        body.extend_from_slice(&[0x0e, 0, 1, 252, 0xff, 0xff, 0xff, 0xff]);
        let (cid, err) = decode_client(&body).expect_err("past");
        assert_eq!(
            (cid, err.code()),
            (Some(4), ErrorCode::BAD_INPUT),
            "{err:?}"
        );
        // The mapping itself: bincode's limit is never a frame-level error.
        let err = map_decode_error(bincode::error::DecodeError::LimitExceeded);
        assert_eq!(err.code(), ErrorCode::BAD_INPUT);
        // Only a length prefix over the limit is PAYLOAD_TOO_LARGE.
        let err = body_len([0, 1, 0, 1]).expect_err("over the limit");
        assert_eq!(err.code(), ErrorCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn map_keys_in_any_order_and_duplicates_decode_last_wins() {
        // MatchmakerAdd { query "", 2, 2, None, {"zeta": "z", "mode": "a", "mode": "b"},
        // {"skill": 1.0, "rank": 2.0} } with cid 1.
        let mut body = vec![1, 1, 6, 0, 2, 2, 0, 3];
        for (k, v) in [("zeta", "z"), ("mode", "a"), ("mode", "b")] {
            body.push(k.len() as u8);
            body.extend_from_slice(k.as_bytes());
            body.push(v.len() as u8);
            body.extend_from_slice(v.as_bytes());
        }
        body.push(2);
        for (k, v) in [("skill", 1.0f64), ("rank", 2.0)] {
            body.push(k.len() as u8);
            body.extend_from_slice(k.as_bytes());
            body.extend_from_slice(&v.to_le_bytes());
        }
        let env = decode_client(&body).expect("accepted");
        let Request::MatchmakerAdd(add) = env.body else {
            panic!("expected MatchmakerAdd, got {env:?}");
        };
        let strings: Vec<_> = add.string_properties.into_iter().collect();
        assert_eq!(
            strings,
            [("mode".into(), "b".into()), ("zeta".into(), "z".into())]
        );
        let numbers: Vec<_> = add.numeric_properties.into_iter().collect();
        assert_eq!(numbers, [("rank".into(), 2.0), ("skill".into(), 1.0)]);
    }

    #[test]
    fn request_kinds_matches_the_enum() {
        let frame = encode(&ClientEnvelope {
            cid: None,
            body: Request::StorageDelete {
                objects: vec![crate::StorageDeleteObject {
                    collection: "c".into(),
                    key: "k".into(),
                    version: None,
                }],
            },
        })
        .expect("encode");
        // The last variant must be KINDS - 1.
        assert_eq!(u32::from(frame[LEN_PREFIX + 1]), Request::KINDS - 1);
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let (_, err) = decode_client(&[0, 1, 0]).expect_err("trailing");
        assert_eq!(err, DecodeError::TrailingBytes(1));
    }

    #[test]
    fn server_envelope_round_trips() {
        let env = ServerEnvelope {
            cid: Some(3),
            body: ServerBody::Response(Response::Error {
                code: ErrorCode::MATCH_NOT_FOUND,
                message: "match not found".into(),
            }),
        };
        let frame = encode(&env).expect("encode");
        assert_eq!(decode_server(body_of(&frame)).expect("decode"), env);
        let ev = ServerEnvelope {
            cid: None,
            body: ServerBody::Event(Event::MatchData {
                match_id: MatchId::new_random(),
                sender_slot: 3,
                seq: 1 << 40,
                op_code: i64::MIN,
                data: Bytes::from(vec![0u8; 1000]),
            }),
        };
        let frame = encode(&ev).expect("encode");
        assert_eq!(decode_server(body_of(&frame)).expect("decode"), ev);
    }

    #[test]
    fn messages_over_the_limit_do_not_encode() {
        let env = ClientEnvelope {
            cid: None,
            body: Request::Authenticate {
                server_key: "k".repeat(MAX_FRAME_LEN),
                credentials: Credentials::Device { id: "x".into() },
                username: None,
            },
        };
        assert_eq!(encode(&env), Err(EncodeError::TooLarge));
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let id = any::<u128>().prop_map(uuid::Uuid::from_u128);
        prop_oneof![
            (".{0,40}", ".{0,40}", proptest::option::of(".{0,20}")).prop_map(|(k, id, u)| {
                Request::Authenticate {
                    server_key: k,
                    credentials: Credentials::Device { id },
                    username: u,
                }
            }),
            Just(Request::Ping),
            proptest::option::of(".{0,30}").prop_map(|name| Request::MatchCreate { name }),
            id.clone().prop_map(|u| Request::MatchJoin {
                match_id: MatchId(u)
            }),
            (
                id.clone(),
                any::<i64>(),
                proptest::collection::vec(any::<u8>(), 0..300),
                proptest::option::of(proptest::collection::vec(id, 0..5))
            )
                .prop_map(|(m, op, data, t)| Request::MatchDataSend {
                    match_id: MatchId(m),
                    op_code: op,
                    data: Bytes::from(data),
                    targets: t.map(|v| v.into_iter().map(SessionId).collect()),
                }),
        ]
    }

    proptest! {
        #[test]
        fn any_request_round_trips(cid in proptest::option::of(any::<u32>()), body in arb_request()) {
            let env = ClientEnvelope { cid, body };
            let frame = encode(&env).expect("encode");
            prop_assert_eq!(decode_client(body_of(&frame)).expect("decode"), env);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_client(&bytes);
            let _ = decode_server(&bytes);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = split_frame(&mut buf) {}
        }
    }
}
