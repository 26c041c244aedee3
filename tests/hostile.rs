//! Hostile input: garbage frames, oversized length prefixes, unknown kinds, truncated and
//! foreign datagrams. Each gets an error code or a close, and honest players carry on.

mod common;

use common::{next_event, TestServer, TEST_TIMEOUT};
use futures_util::StreamExt as _;
use quicmatch_client::{CloseCode, Event};
use quicmatch_protocol::{
    envelope::{Event as WireEvent, MatchInfo, ServerBody},
    ErrorCode, MatchId, Request, Response,
};
use tokio::time::timeout;

fn error_code(body: &ServerBody) -> ErrorCode {
    match body {
        ServerBody::Response(Response::Error { code, .. })
        | ServerBody::Event(WireEvent::Error { code, .. }) => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_frames_get_errors_and_the_connection_survives() {
    let server = TestServer::start().await;
    let mut raw = server.raw_session("garbage").await;
    // Random body behind a valid length: cid Some(4) then nonsense.
    raw.write(&[0, 0, 0, 6, 0x01, 0x04, 0x03, 0xff, 0xff, 0xff])
        .await;
    let reply = raw.next().await;
    assert_eq!(reply.cid, Some(4));
    assert_eq!(error_code(&reply.body), ErrorCode::BAD_INPUT);

    // An unknown request kind keeps its cid and gets UNRECOGNIZED_PAYLOAD.
    raw.write(&[0, 0, 0, 3, 0x01, 0x05, 0x63]).await;
    let reply = raw.next().await;
    assert_eq!(reply.cid, Some(5));
    assert_eq!(error_code(&reply.body), ErrorCode::UNRECOGNIZED_PAYLOAD);

    // An empty body: no cid can be read, so the error comes as an event. It is
    // BAD_INPUT, not MISSING_PAYLOAD: that needs a complete cid (PROTOCOL.md §2).
    raw.write(&[0, 0, 0, 0]).await;
    let reply = raw.next().await;
    assert_eq!(reply.cid, None);
    assert_eq!(error_code(&reply.body), ErrorCode::BAD_INPUT);
    // A body that ends inside the cid (`Some`, then nothing): the same.
    raw.write(&[0, 0, 0, 1, 0x01]).await;
    let reply = raw.next().await;
    assert_eq!(reply.cid, None);
    assert_eq!(error_code(&reply.body), ErrorCode::BAD_INPUT);
    // A body that ends right after the cid: MISSING_PAYLOAD, with the cid.
    raw.write(&[0, 0, 0, 2, 0x01, 0x0b]).await;
    let reply = raw.next().await;
    assert_eq!(reply.cid, Some(11));
    assert_eq!(error_code(&reply.body), ErrorCode::MISSING_PAYLOAD);

    // MatchJoin (3) whose id has 5 bytes instead of 16: BAD_INPUT with the cid.
    raw.write(&[0, 0, 0, 9, 0x01, 0x07, 0x03, 0x05, 1, 2, 3, 4, 5])
        .await;
    let reply = raw.next().await;
    assert_eq!(reply.cid, Some(7));
    assert_eq!(error_code(&reply.body), ErrorCode::BAD_INPUT);

    let pong = raw.request(Some(6), Request::Ping).await;
    assert_eq!(pong.body, ServerBody::Response(Response::Pong));
}

#[tokio::test]
async fn an_oversized_length_prefix_closes_only_that_connection() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    next_event(&alice, "join").await;

    let mut raw = server.raw_session("huge").await;
    raw.write(&[0xff, 0xff, 0xff, 0xf0]).await;
    common::assert_closed_with(&raw.conn, CloseCode::PROTOCOL_ERROR).await;
    alice
        .send_match_data(m.match_id, 1, b"still here".to_vec(), true, None)
        .await
        .expect("send");
    match next_event(&bob, "data after the attack").await {
        Event::MatchData(d) => assert_eq!(&d.data[..], b"still here"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn bad_datagrams_get_error_events() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let m = alice.create_match(None).await.expect("create");
    let mut raw = server.raw_session("dgram").await;

    // Join to learn the handle, then leave: the handle is live but we are no member.
    let reply = raw
        .request(
            Some(1),
            Request::MatchJoin {
                match_id: m.match_id,
            },
        )
        .await;
    let ServerBody::Response(Response::Match(MatchInfo { handle, .. })) = reply.body else {
        panic!("expected a match, got {reply:?}");
    };
    raw.request(
        Some(2),
        Request::MatchLeave {
            match_id: m.match_id,
        },
    )
    .await;
    next_event(&alice, "raw joins").await;
    next_event(&alice, "raw leaves").await;

    let cases: Vec<(Vec<u8>, ErrorCode)> = vec![
        (vec![0x01], ErrorCode::BAD_INPUT),                   // truncated
        (vec![0x09, 0x01, 0x01, 0x00], ErrorCode::BAD_INPUT), // wrong version
        (
            vec![0x01, 0x42, 0x01, 0x00],
            ErrorCode::UNRECOGNIZED_PAYLOAD,
        ), // unknown kind
        (vec![0x01, 0x01, 0xfa, 0x00], ErrorCode::MATCH_NOT_FOUND), // unknown handle 250
        (
            vec![0x01, 0x01, handle as u8, 0x00, 1, 2, 3],
            ErrorCode::NOT_MATCH_MEMBER,
        ),
        // A bundle (kind 0x03) whose payload is not one.
        (
            vec![0x01, 0x03, handle as u8, 0x00, 9, 1, 2],
            ErrorCode::BAD_INPUT,
        ),
    ];
    for (bytes, code) in cases {
        raw.conn.send_datagram(bytes.clone().into()).expect("send");
        let ev = raw.next().await;
        assert_eq!(ev.cid, None);
        assert_eq!(error_code(&ev.body), code, "datagram {bytes:?}");
    }
    let mut big = vec![0x01, 0x01, handle as u8, 0x00];
    big.extend(std::iter::repeat_n(
        0u8,
        quicmatch_protocol::MAX_DATAGRAM_PAYLOAD + 1,
    ));
    raw.conn.send_datagram(big.into()).expect("send");
    assert_eq!(
        error_code(&raw.next().await.body),
        ErrorCode::PAYLOAD_TOO_LARGE
    );

    // Alice heard nothing of it, and the raw client is still served.
    common::assert_no_event(&alice, std::time::Duration::from_millis(100)).await;
    let pong = raw.request(Some(3), Request::Ping).await;
    assert_eq!(pong.body, ServerBody::Response(Response::Pong));
}

#[tokio::test]
async fn requests_for_foreign_matches_are_refused() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let m = alice.create_match(None).await.expect("create");
    let mut raw = server.raw_session("foreign").await;
    let reply = raw
        .request(
            Some(1),
            Request::MatchDataSend {
                match_id: m.match_id,
                op_code: 1,
                data: bytes::Bytes::from_static(b"x"),
                targets: None,
            },
        )
        .await;
    assert_eq!(reply.cid, Some(1));
    assert_eq!(error_code(&reply.body), ErrorCode::NOT_MATCH_MEMBER);
    let reply = raw
        .request(
            Some(2),
            Request::MatchDataSend {
                match_id: MatchId::new_random(),
                op_code: 1,
                data: bytes::Bytes::new(),
                targets: None,
            },
        )
        .await;
    assert_eq!(error_code(&reply.body), ErrorCode::MATCH_NOT_FOUND);
    common::assert_no_event(&alice, std::time::Duration::from_millis(100)).await;
}

/// While two honest players exchange reliable data, hostile connections spray garbage
/// of every kind at the server. The honest players lose nothing, the hostile ones get
/// error codes or are closed, and no server task panics.
#[tokio::test]
async fn honest_players_lose_nothing_while_others_attack() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    next_event(&alice, "join").await;
    let ticket = alice.add_matchmaker("*", 4, 4).await.expect("ticket");

    let answered = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for seed in 0..4u64 {
        let mut raw = server.raw_session(&format!("attacker{seed}")).await;
        let answered = answered.clone();
        let match_id = m.match_id;
        attackers.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            for i in 0..200u32 {
                match rng.u8(0..8) {
                    0 => {
                        // A random body behind a valid length.
                        let len = rng.usize(0..64);
                        let mut frame = (len as u32).to_be_bytes().to_vec();
                        frame.extend((0..len).map(|_| rng.u8(..)));
                        raw.write(&frame).await;
                    }
                    1 => {
                        let junk: Vec<u8> = (0..rng.usize(0..1200)).map(|_| rng.u8(..)).collect();
                        let _ = raw.conn.send_datagram(junk.into());
                    }
                    2 => {
                        raw.send_request(Some(i), Request::MatchmakerRemove { ticket })
                            .await;
                    }
                    3 => {
                        raw.send_request(
                            Some(i),
                            Request::MatchDataSend {
                                match_id,
                                op_code: 1,
                                data: bytes::Bytes::from_static(b"spoof"),
                                targets: None,
                            },
                        )
                        .await;
                    }
                    4 => {
                        raw.send_request(
                            Some(i),
                            Request::MatchJoinToken {
                                token: format!("m1.{}.forged", "A".repeat(rng.usize(0..100))),
                            },
                        )
                        .await;
                    }
                    5 => {
                        // An unknown request kind.
                        raw.write(&[0, 0, 0, 3, 1, 9, 0x7f]).await;
                    }
                    6 => {
                        let _ = raw
                            .conn
                            .send_datagram(bytes::Bytes::from_static(&[1, 1, 0xfa]));
                    }
                    _ => {
                        raw.send_request(Some(i), Request::MatchLeave { match_id })
                            .await;
                    }
                }
            }
            // Drain what the server answered until it goes quiet or closes us.
            while let Ok(Some(Ok(_))) =
                timeout(std::time::Duration::from_millis(300), raw.frames.next()).await
            {
                answered.fetch_add(1, Ordering::Relaxed);
            }
            // Finally, an oversized length prefix: this one must be closed.
            let _ = raw.send.write_all(&[0xff, 0xff, 0xff, 0xff]).await;
            matches!(
                timeout(TEST_TIMEOUT, raw.conn.closed()).await,
                Ok(quinn::ConnectionError::ApplicationClosed(_))
            )
        }));
    }
    for i in 0..500u32 {
        alice
            .send_match_data(m.match_id, 1, i.to_le_bytes().to_vec(), true, None)
            .await
            .expect("send");
    }
    for i in 0..500u32 {
        match next_event(&bob, "honest data").await {
            Event::MatchData(d) => assert_eq!(&d.data[..], &i.to_le_bytes(), "lost or reordered"),
            other => panic!("unexpected {other:?}"),
        }
    }
    for a in attackers {
        assert!(
            a.await.expect("attacker task"),
            "an attacker was not closed"
        );
    }
    assert!(
        answered.load(Ordering::Relaxed) > 0,
        "attackers got error answers"
    );
    alice.ping().await.expect("alice still served");
    bob.ping().await.expect("bob still served");
    assert_eq!(
        server.stats.matchmaker().tickets,
        1,
        "no one removed alice's ticket"
    );
    assert_eq!(server.stats.matches().presences, 2);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a server task panicked");
}
