//! The byte-level protocol, spoken with a raw quinn client: pins the bytes PROTOCOL.md
//! documents, so the document cannot drift from the code.

mod common;

use common::{TestServer, TEST_TIMEOUT};
use quicmatch_protocol::{
    envelope::{MatchInfo, ServerBody},
    CloseCode, Response, ALPN_V2,
};
use tokio::time::timeout;

/// `Authenticate` with cid 0, server key "defaultkey", device id "device-wire-0000",
/// username "wire", byte for byte as PROTOCOL.md spells it.
fn authenticate_frame() -> Vec<u8> {
    let mut credentials = vec![0x00, 0x10]; // Credentials::Device, id length 16
    credentials.extend_from_slice(b"device-wire-0000");
    let frame = authenticate_with(&credentials);
    assert_eq!(
        frame[..4],
        [0, 0, 0, 0x26],
        "PROTOCOL.md §5.5 says length 38"
    );
    frame
}

/// `Authenticate` with cid 0, server key "defaultkey", these encoded credentials and
/// username "wire".
fn authenticate_with(credentials: &[u8]) -> Vec<u8> {
    let mut body = vec![
        0x01, 0x00, // cid: Some(0)
        0x00, // Request::Authenticate
        0x0a, // server_key length 10
    ];
    body.extend_from_slice(b"defaultkey");
    body.extend_from_slice(credentials);
    body.extend_from_slice(&[0x01, 0x04]); // username: Some, length 4
    body.extend_from_slice(b"wire");
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// A raw session on `conn`, authenticated with `hello`.
async fn raw_session(conn: &quinn::Connection, hello: &[u8]) -> common::RawSession {
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    send.write_all(hello).await.expect("write");
    common::RawSession {
        conn: conn.clone(),
        send,
        frames: tokio_util::codec::FramedRead::new(recv, quicmatch_protocol::frame::FrameCodec),
    }
}

/// Protocol 2: events arrive as `Sequenced { seq, event }`, and `Resume` takes the
/// session over at once and replays what came after `last_seq`.
#[tokio::test]
async fn protocol_2_numbers_events_and_resumes_from_a_sequence_number() {
    let server = TestServer::start().await;
    let v2 = || server.raw_connection_alpn(quinn::TransportConfig::default(), ALPN_V2);
    let conn = v2().await;
    let mut raw = raw_session(&conn, &authenticate_frame()).await;
    let env = quicmatch_protocol::frame::decode_server(&raw.next_body().await).expect("decode");
    let ServerBody::Response(Response::Session(session)) = env.body else {
        panic!("expected a session, got {env:?}");
    };
    // MatchCreate { name: None } with cid 2.
    raw.write(&[0, 0, 0, 4, 0x01, 0x02, 0x02, 0x00]).await;
    let env = quicmatch_protocol::frame::decode_server(&raw.next_body().await).expect("decode");
    let ServerBody::Response(Response::Match(MatchInfo { match_id, .. })) = env.body else {
        panic!("expected a match, got {env:?}");
    };
    let sdk = server.client("sdk").await;
    sdk.join_match(match_id).await.expect("join");
    // cid None, ServerBody::Sequenced (2), seq 1, Event::MatchPresence (1)
    assert_eq!(&raw.next_body().await[..4], &[0x00, 0x02, 0x01, 0x01]);
    sdk.leave_match(match_id).await.expect("leave");
    assert_eq!(
        &raw.next_body().await[..4],
        &[0x00, 0x02, 0x02, 0x01],
        "seq 2"
    );

    // Resume { token, last_seq: 1 } on a second connection, while the first still lives.
    let mut credentials = vec![0x03]; // Credentials::Resume
    let len = session.token.len();
    if len < 251 {
        credentials.push(len as u8);
    } else {
        credentials.push(0xfb); // then the length as a little-endian u16
        credentials.extend_from_slice(&(len as u16).to_le_bytes());
    }
    credentials.extend_from_slice(session.token.as_bytes());
    credentials.push(0x01); // last_seq 1
    let conn2 = v2().await;
    let mut resumed = raw_session(&conn2, &authenticate_with(&credentials)).await;
    let env = quicmatch_protocol::frame::decode_server(&resumed.next_body().await).expect("decode");
    let ServerBody::Response(Response::Session(again)) = env.body else {
        panic!("expected a session, got {env:?}");
    };
    assert!(again.resumed);
    assert_eq!(again.session_id, session.session_id);
    // Event 2 (the leave) again, then nothing older; the old connection is replaced.
    assert_eq!(&resumed.next_body().await[..4], &[0x00, 0x02, 0x02, 0x01]);
    common::assert_closed_with(&conn, CloseCode::SESSION_REPLACED).await;
}

#[tokio::test]
async fn documented_bytes_round_trip_with_the_server() {
    let server = TestServer::start().await;
    let conn = server.raw_connection().await;
    let mut raw = raw_session(&conn, &authenticate_frame()).await;
    let welcome = raw.next_body().await;
    // cid Some(0), ServerBody::Response (0), Response::Session (0), user id length 16.
    assert_eq!(&welcome[..4], &[0x01, 0x00, 0x00, 0x00]);
    assert_eq!(welcome[4], 16);
    let env = quicmatch_protocol::frame::decode_server(&welcome).expect("decode");
    let ServerBody::Response(Response::Session(session)) = env.body else {
        panic!("expected a session, got {env:?}");
    };
    assert_eq!(&welcome[5..21], session.user_id.as_bytes());
    assert_eq!(session.username, "wire");

    // Ping with cid 1 -> Pong with cid 1.
    raw.write(&[0, 0, 0, 3, 0x01, 0x01, 0x01]).await;
    assert_eq!(&raw.next_body().await[..], &[0x01, 0x01, 0x00, 0x01]);

    // MatchCreate { name: None } with cid 2.
    raw.write(&[0, 0, 0, 4, 0x01, 0x02, 0x02, 0x00]).await;
    let created = raw.next_body().await;
    assert_eq!(
        &created[..4],
        &[0x01, 0x02, 0x00, 0x02],
        "cid 2, Response::Match"
    );
    let env = quicmatch_protocol::frame::decode_server(&created).expect("decode");
    let ServerBody::Response(Response::Match(MatchInfo {
        match_id,
        handle,
        size,
        ..
    })) = env.body
    else {
        panic!("expected a match, got {env:?}");
    };
    assert_eq!(size, 1);
    assert_eq!(created[4], 16);
    assert_eq!(&created[5..21], match_id.as_bytes());
    assert!(handle < 251, "one-byte handle in a fresh server");

    // An SDK client joins, and receives a hand-built datagram from the raw client.
    let sdk = server.client("sdk").await;
    sdk.join_match(match_id).await.expect("join");
    let joined = raw.next_body().await;
    // cid None, ServerBody::Event (1), Event::MatchPresence (1)
    assert_eq!(&joined[..3], &[0x00, 0x01, 0x01]);
    let dgram = vec![0x01, 0x01, handle as u8, 0x0e, b'h', b'i']; // op code 7 -> zigzag 14
    conn.send_datagram(dgram.into()).expect("datagram");
    match timeout(TEST_TIMEOUT, sdk.next_event()).await.expect("data") {
        Some(quicmatch_client::Event::MatchData(d)) => {
            assert_eq!(d.op_code, 7);
            assert_eq!(&d.data[..], b"hi");
            assert_eq!(d.seq, 1);
            assert_eq!(d.sender.username, "wire");
        }
        other => panic!("unexpected {other:?}"),
    }

    // The SDK's datagram reaches the raw client with the documented relay header.
    sdk.send_match_data(match_id, -1, b"yo".to_vec(), false, None)
        .await
        .expect("send");
    let relayed = timeout(TEST_TIMEOUT, conn.read_datagram())
        .await
        .expect("relayed datagram")
        .expect("connection");
    // version 1, kind 0x81, handle, sender slot 2, seq 2, op code -1 -> zigzag 1, payload
    assert_eq!(
        &relayed[..],
        &[0x01, 0x81, handle as u8, 0x02, 0x02, 0x01, b'y', b'o']
    );
}

/// PROTOCOL.md §2: `00 00 00 02 | 01 05` (cid 5, no request) is answered
/// `01 05 00 04 02 ...` (cid 5, `Response::Error`, `MISSING_PAYLOAD`), and request kind
/// 99 with cid 6 `01 06 00 04 01 ...` (`UNRECOGNIZED_PAYLOAD`).
#[tokio::test]
async fn documented_error_bytes_for_broken_envelopes() {
    let server = TestServer::start().await;
    let conn = server.raw_connection().await;
    let mut raw = raw_session(&conn, &authenticate_frame()).await;
    raw.next_body().await; // Session
    raw.write(&[0, 0, 0, 2, 0x01, 0x05]).await;
    assert_eq!(&raw.next_body().await[..5], &[0x01, 0x05, 0x00, 0x04, 0x02]);
    raw.write(&[0, 0, 0, 3, 0x01, 0x06, 0x63]).await;
    assert_eq!(&raw.next_body().await[..5], &[0x01, 0x06, 0x00, 0x04, 0x01]);
}
