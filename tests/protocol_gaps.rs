//! What a client written from PROTOCOL.md alone needs to know beyond the message layout:
//! the error codes of broken envelopes, what a second stream or a client without
//! datagram support gets, how maps decode, default usernames, fire-and-forget replies,
//! and targets that are not members. Each test pins a sentence of PROTOCOL.md.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{next_event, RawSession, TestServer};
use quicmatch_protocol::{
    envelope::{Event as WireEvent, MatchInfo, ServerBody, ServerEnvelope},
    frame, CloseCode, Credentials, ErrorCode, MatchId, Request, Response, SessionId, ALPN_V2,
};
use tokio::time::timeout;

/// A frame around `body`.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// The error code and cid of an error reply or error event.
fn error_of(env: &ServerEnvelope) -> (Option<u32>, ErrorCode) {
    match &env.body {
        ServerBody::Response(Response::Error { code, .. })
        | ServerBody::Event(WireEvent::Error { code, .. }) => (env.cid, *code),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn join(raw: &mut RawSession, cid: u32, match_id: MatchId) -> MatchInfo {
    let reply = raw
        .request(Some(cid), Request::MatchJoin { match_id })
        .await;
    let ServerBody::Response(Response::Match(info)) = reply.body else {
        panic!("expected a match, got {reply:?}");
    };
    info
}

/// PROTOCOL.md §2, §4, §8: the error codes of envelopes that do not decode.
#[tokio::test]
async fn broken_envelopes_get_the_documented_codes() {
    let server = TestServer::start().await;
    let mut raw = server.raw_session("envelopes").await;

    // `01 05`: cid Some(5) and no request: MISSING_PAYLOAD, with the cid.
    raw.write(&framed(&[0x01, 0x05])).await;
    assert_eq!(
        error_of(&raw.next().await),
        (Some(5), ErrorCode::MISSING_PAYLOAD)
    );
    // `00`: cid None and no request: MISSING_PAYLOAD as an error event.
    raw.write(&framed(&[0x00])).await;
    let env = raw.next().await;
    assert!(matches!(
        env.body,
        ServerBody::Event(WireEvent::Error { .. })
    ));
    assert_eq!(error_of(&env), (None, ErrorCode::MISSING_PAYLOAD));

    // MatchCreate whose name has Option tag 2: BAD_INPUT (not UNRECOGNIZED_PAYLOAD).
    raw.write(&framed(&[0x01, 0x06, 0x02, 0x02])).await;
    assert_eq!(error_of(&raw.next().await), (Some(6), ErrorCode::BAD_INPUT));

    // MatchCreate whose name claims 70 000 bytes (more than a frame may hold) and
    // 1 000 bytes (more than this frame holds): BAD_INPUT (not PAYLOAD_TOO_LARGE).
    raw.write(&framed(&[
        0x01, 0x07, 0x02, 0x01, 0xfc, 0x70, 0x11, 0x01, 0x00, b'a',
    ]))
    .await;
    assert_eq!(error_of(&raw.next().await), (Some(7), ErrorCode::BAD_INPUT));
    raw.write(&framed(&[0x01, 0x08, 0x02, 0x01, 0xfb, 0xe8, 0x03, b'a']))
        .await;
    assert_eq!(error_of(&raw.next().await), (Some(8), ErrorCode::BAD_INPUT));

    // Request kind 99: UNRECOGNIZED_PAYLOAD, with the cid, whatever follows it.
    raw.write(&framed(&[0x01, 0x09, 0x63, 0x02, 0x02])).await;
    assert_eq!(
        error_of(&raw.next().await),
        (Some(9), ErrorCode::UNRECOGNIZED_PAYLOAD)
    );

    // A length prefix over 65 536 is the only PAYLOAD_TOO_LARGE of the framing, and it
    // closes the connection rather than being answered.
    let pong = raw.request(Some(10), Request::Ping).await;
    assert_eq!(pong.body, ServerBody::Response(Response::Pong));
    raw.write(&[0x00, 0x01, 0x00, 0x01]).await;
    common::assert_closed_with(&raw.conn, CloseCode::PROTOCOL_ERROR).await;
}

/// PROTOCOL.md §6.1 item 1: an undecodable first frame closes with PROTOCOL_ERROR, a
/// decodable one that is not `Authenticate` with AUTH_FAILED.
#[tokio::test]
async fn an_undecodable_first_frame_is_a_protocol_error() {
    let server = TestServer::start().await;
    for first in [
        &[0x01, 0x00][..],
        &[0x01, 0x00, 0x63],
        &[0x01, 0x00, 0x02, 0x02],
    ] {
        let conn = server.raw_connection().await;
        let (mut send, _recv) = conn.open_bi().await.expect("stream");
        send.write_all(&framed(first)).await.expect("write");
        common::assert_closed_with(&conn, CloseCode::PROTOCOL_ERROR).await;
    }
    let conn = server.raw_connection().await;
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    send.write_all(&framed(&[0x01, 0x00, 0x01]))
        .await
        .expect("write"); // Ping
    common::assert_closed_with(&conn, CloseCode::AUTH_FAILED).await;
}

/// PROTOCOL.md §1: one bidirectional stream and no unidirectional one. quinn honours
/// the server's stream limits, so a second stream never opens (and nothing breaks);
/// a stack that ignored them would get STREAM_LIMIT_ERROR.
#[tokio::test]
async fn a_second_stream_is_never_granted() {
    let server = TestServer::start().await;
    let mut raw = server.raw_session("streams").await;
    assert!(
        timeout(Duration::from_millis(500), raw.conn.open_bi())
            .await
            .is_err(),
        "the server granted a second bidirectional stream"
    );
    assert!(
        timeout(Duration::from_millis(200), raw.conn.open_uni())
            .await
            .is_err(),
        "the server granted a unidirectional stream"
    );
    assert!(raw.conn.close_reason().is_none());
    let pong = raw.request(Some(1), Request::Ping).await;
    assert_eq!(pong.body, ServerBody::Response(Response::Pong));
}

/// PROTOCOL.md §1 and §7: a client that does not advertise `max_datagram_frame_size`
/// is served; the datagrams relayed to it are dropped without a word to anyone.
#[tokio::test]
async fn a_client_without_datagrams_is_served_and_its_datagrams_are_dropped() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let m = alice.create_match(None).await.expect("create");
    let mut transport = quinn::TransportConfig::default();
    transport.datagram_receive_buffer_size(None);
    let mut raw = server.raw_session_with("nodgram", transport).await;
    join(&mut raw, 1, m.match_id).await;
    next_event(&alice, "raw joins").await;

    // Reliable data both ways.
    alice
        .send_match_data(m.match_id, 1, b"reliable".to_vec(), true, None)
        .await
        .expect("send");
    let env = raw.next().await;
    let ServerBody::Event(WireEvent::MatchData { seq, data, .. }) = env.body else {
        panic!("expected match data, got {env:?}");
    };
    assert_eq!((seq, &data[..]), (1, &b"reliable"[..]));
    raw.send_request(
        None,
        Request::MatchDataSend {
            match_id: m.match_id,
            op_code: 2,
            data: Bytes::from_static(b"back"),
            targets: None,
        },
    )
    .await;
    match next_event(&alice, "reliable data from raw").await {
        quicmatch_client::Event::MatchData(d) => assert_eq!(&d.data[..], b"back"),
        other => panic!("unexpected {other:?}"),
    }

    // Alice's datagram is relayed (it takes seq 3) but never reaches the raw client,
    // and alice hears no error.
    alice
        .send_match_data(m.match_id, 3, b"lost".to_vec(), false, None)
        .await
        .expect("send");
    assert!(
        timeout(Duration::from_millis(300), raw.conn.read_datagram())
            .await
            .is_err(),
        "a datagram reached a client that does not take them"
    );
    common::assert_no_event(&alice, Duration::from_millis(100)).await;
    alice
        .send_match_data(m.match_id, 4, b"after".to_vec(), true, None)
        .await
        .expect("send");
    let env = raw.next().await;
    let ServerBody::Event(WireEvent::MatchData { seq, op_code, .. }) = env.body else {
        panic!("expected match data, got {env:?}");
    };
    assert_eq!((seq, op_code), (4, 4), "the dropped datagram took seq 3");

    // quinn will not send datagrams when it does not receive them.
    assert!(matches!(
        raw.conn.send_datagram(Bytes::from_static(&[1, 1, 1, 0])),
        Err(quinn::SendDatagramError::Disabled)
    ));
    let pong = raw.request(Some(2), Request::Ping).await;
    assert_eq!(pong.body, ServerBody::Response(Response::Pong));
}

/// PROTOCOL.md §3: map keys may come in any order, and of duplicate keys the last wins.
#[tokio::test]
async fn map_keys_out_of_order_and_duplicated_are_accepted() {
    let server = TestServer::start().await;
    let mut ann = server.raw_session("ann").await;
    let mut bob = server.raw_session("bob").await;

    // MatchmakerAdd { query "", 2, 2, None, {"zeta": "z", "mode": "a", "mode": "b"},
    // {"skill": 1.0, "rank": 2.0} } with cid 1.
    let mut body = vec![0x01, 0x01, 0x06, 0x00, 0x02, 0x02, 0x00, 0x03];
    for (k, v) in [("zeta", "z"), ("mode", "a"), ("mode", "b")] {
        body.push(k.len() as u8);
        body.extend_from_slice(k.as_bytes());
        body.push(v.len() as u8);
        body.extend_from_slice(v.as_bytes());
    }
    body.push(0x02);
    for (k, v) in [("skill", 1.0f64), ("rank", 2.0)] {
        body.push(k.len() as u8);
        body.extend_from_slice(k.as_bytes());
        body.extend_from_slice(&v.to_le_bytes());
    }
    ann.write(&framed(&body)).await;
    let reply = ann.next().await;
    assert!(
        matches!(
            reply.body,
            ServerBody::Response(Response::MatchmakerTicket { .. })
        ),
        "{reply:?}"
    );
    // Bob only matches a ticket whose mode is the last value given.
    let reply = bob
        .request(
            Some(1),
            Request::MatchmakerAdd(quicmatch_protocol::MatchmakerAdd {
                query: "+properties.mode:b".into(),
                min_count: 2,
                max_count: 2,
                count_multiple: None,
                string_properties: Default::default(),
                numeric_properties: Default::default(),
            }),
        )
        .await;
    assert!(matches!(
        reply.body,
        ServerBody::Response(Response::MatchmakerTicket { .. })
    ));
    assert_eq!(server.matchmake(), 1);
    let env = ann.next().await;
    let ServerBody::Event(WireEvent::MatchmakerMatched(matched)) = env.body else {
        panic!("expected MatchmakerMatched, got {env:?}");
    };
    let strings: Vec<_> = matched.self_user.string_properties.into_iter().collect();
    assert_eq!(
        strings,
        [("mode".into(), "b".into()), ("zeta".into(), "z".into())]
    );
    let numbers: Vec<_> = matched.self_user.numeric_properties.into_iter().collect();
    assert_eq!(numbers, [("rank".into(), 2.0), ("skill".into(), 1.0)]);
}

/// PROTOCOL.md §6 item 1: without a username, the name is ten lowercase letters
/// derived from the user id.
#[tokio::test]
async fn a_missing_username_is_derived_from_the_user_id() {
    let server = TestServer::start().await;
    let conn = server.raw_connection().await;
    let (send, recv) = conn.open_bi().await.expect("stream");
    let mut raw = RawSession {
        conn,
        send,
        frames: tokio_util::codec::FramedRead::new(recv, frame::FrameCodec),
    };
    let reply = raw
        .request(
            Some(0),
            Request::Authenticate {
                server_key: "defaultkey".into(),
                credentials: Credentials::Device {
                    id: "device-anonymous-01".into(),
                },
                username: None,
            },
        )
        .await;
    let ServerBody::Response(Response::Session(session)) = reply.body else {
        panic!("expected a session, got {reply:?}");
    };
    let expected: String = session.user_id.as_bytes()[..10]
        .iter()
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    assert_eq!(session.username, expected);
}

/// PROTOCOL.md §4: a request without a cid still gets its success response (with no
/// cid), except the two data sends, which get nothing; failures come as error events,
/// numbered like every other event with protocol 2.
#[tokio::test]
async fn requests_without_a_cid() {
    let server = TestServer::start().await;
    let conn = server
        .raw_connection_alpn(quinn::TransportConfig::default(), ALPN_V2)
        .await;
    let (send, recv) = conn.open_bi().await.expect("stream");
    let mut raw = RawSession {
        conn,
        send,
        frames: tokio_util::codec::FramedRead::new(recv, frame::FrameCodec),
    };
    let reply = raw
        .request(
            Some(0),
            Request::Authenticate {
                server_key: "defaultkey".into(),
                credentials: Credentials::Device {
                    id: "device-nocid-0000".into(),
                },
                username: None,
            },
        )
        .await;
    assert!(matches!(
        reply.body,
        ServerBody::Response(Response::Session(_))
    ));
    let pong = raw.request(None, Request::Ping).await;
    assert_eq!(pong.cid, None);
    assert_eq!(pong.body, ServerBody::Response(Response::Pong));
    let created = raw.request(None, Request::MatchCreate { name: None }).await;
    let ServerBody::Response(Response::Match(info)) = created.body else {
        panic!("expected a match, got {created:?}");
    };
    // A data send without cid: nothing back on success.
    raw.send_request(
        None,
        Request::MatchDataSend {
            match_id: info.match_id,
            op_code: 1,
            data: Bytes::new(),
            targets: None,
        },
    )
    .await;
    // A failing one: an error event, numbered (protocol 2).
    let env = raw
        .request(
            None,
            Request::MatchDataSend {
                match_id: MatchId::new_random(),
                op_code: 1,
                data: Bytes::new(),
                targets: None,
            },
        )
        .await;
    assert!(
        matches!(
            env.body,
            ServerBody::Sequenced {
                event: WireEvent::Error {
                    code: ErrorCode::MATCH_NOT_FOUND,
                    ..
                },
                ..
            }
        ),
        "{env:?}"
    );
    assert_eq!(env.cid, None);
}

/// PROTOCOL.md §6 item 8 and §7: targets that are not members are skipped silently.
#[tokio::test]
async fn targets_that_are_not_members_are_skipped() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let m = alice.create_match(None).await.expect("create");
    let mut raw = server.raw_session("targets").await;
    let info = join(&mut raw, 1, m.match_id).await;
    next_event(&alice, "raw joins").await;
    let stranger = server.client("stranger").await;
    let reply = raw
        .request(
            Some(2),
            Request::MatchDataSend {
                match_id: m.match_id,
                op_code: 5,
                data: Bytes::from_static(b"to some"),
                targets: Some(vec![
                    SessionId::new_random(),
                    stranger.presence().session_id,
                    alice.presence().session_id,
                    alice.presence().session_id,
                ]),
            },
        )
        .await;
    assert_eq!(reply.cid, Some(2));
    assert_eq!(reply.body, ServerBody::Response(Response::Ack));
    match next_event(&alice, "targeted data").await {
        quicmatch_client::Event::MatchData(d) => assert_eq!(&d.data[..], b"to some"),
        other => panic!("unexpected {other:?}"),
    }
    common::assert_no_event(&alice, Duration::from_millis(100)).await;
    common::assert_no_event(&stranger, Duration::from_millis(100)).await;

    // A datagram to slots 99 and alice's slot: alice gets one copy, no error comes back.
    let alice_slot = info
        .presences
        .iter()
        .find(|p| p.presence.session_id == alice.presence().session_id)
        .expect("alice in the match")
        .slot;
    let dgram = vec![
        0x01,
        0x02,
        info.handle as u8,
        0x0c,
        0x02,
        99,
        alice_slot as u8,
        b'd',
    ];
    raw.conn.send_datagram(dgram.into()).expect("datagram");
    match next_event(&alice, "targeted datagram").await {
        quicmatch_client::Event::MatchData(d) => {
            assert_eq!((d.op_code, &d.data[..]), (6, &b"d"[..]));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        timeout(Duration::from_millis(200), raw.next_body())
            .await
            .is_err(),
        "no error for a slot that is not a member"
    );
}
