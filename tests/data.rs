//! Match data: datagrams and reliable frames, broadcast and targeted, errors, order;
//! reliable data sent just before `close` still arrives.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{assert_no_event, next_event, three, TestServer};
use quicmatch_client::{ErrorCode, Event, MatchData, MatchId, Socket};
use tokio::time::timeout;

fn data(event: Event) -> MatchData {
    match event {
        Event::MatchData(d) => d,
        other => panic!("expected match data, got {other:?}"),
    }
}

#[tokio::test]
async fn broadcast_reaches_everyone_but_the_sender() {
    let server = TestServer::start().await;
    let (a, b, c, m) = three(&server).await;
    for reliable in [false, true] {
        a.send_match_data(m.match_id, 7, Bytes::from_static(b"hi"), reliable, None)
            .await
            .expect("send");
        for who in [&b, &c] {
            let d = data(next_event(who, "data").await);
            assert_eq!(d.match_id, m.match_id);
            assert_eq!(d.sender, a.presence());
            assert_eq!(d.op_code, 7);
            assert_eq!(&d.data[..], b"hi");
            assert_eq!(d.reliable, reliable);
        }
        assert_no_event(&a, Duration::from_millis(150)).await;
    }
}

#[tokio::test]
async fn targeted_sends_reach_only_the_listed() {
    let server = TestServer::start().await;
    let (a, b, c, m) = three(&server).await;
    for reliable in [false, true] {
        a.send_match_data(
            m.match_id,
            -1,
            b"only bob".to_vec(),
            reliable,
            Some(&[b.presence()]),
        )
        .await
        .expect("send");
        let d = data(next_event(&b, "targeted data").await);
        assert_eq!(&d.data[..], b"only bob");
        assert_eq!(d.op_code, -1);
        assert_no_event(&c, Duration::from_millis(150)).await;
        assert_no_event(&a, Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_sender_hears_itself_only_when_listed() {
    let server = TestServer::start().await;
    let (a, b, _c, m) = three(&server).await;
    for reliable in [false, true] {
        a.send_match_data(
            m.match_id,
            3,
            b"echo".to_vec(),
            reliable,
            Some(&[a.presence(), b.presence()]),
        )
        .await
        .expect("send");
        let own = data(next_event(&a, "own echo").await);
        assert_eq!(own.sender, a.presence());
        assert_eq!(&own.data[..], b"echo");
        data(next_event(&b, "bob's copy").await);
    }
}

#[tokio::test]
async fn non_members_get_an_error_event() {
    let server = TestServer::start().await;
    let (a, b, _c, m) = three(&server).await;
    let outsider = server.client("outsider").await;
    outsider
        .send_match_data(m.match_id, 1, b"let me in".to_vec(), true, None)
        .await
        .expect("queued");
    match next_event(&outsider, "error event").await {
        Event::Error { code, .. } => assert_eq!(code, ErrorCode::NOT_MATCH_MEMBER),
        other => panic!("unexpected {other:?}"),
    }
    // The unreliable path refuses before sending: the socket knows it is not a member.
    let err = outsider
        .send_match_data(m.match_id, 1, b"x".to_vec(), false, None)
        .await
        .expect_err("not a member");
    assert_eq!(err.code(), Some(ErrorCode::NOT_MATCH_MEMBER));
    assert_no_event(&b, Duration::from_millis(100)).await;
    // The connection survives.
    outsider.ping().await.expect("still connected");
    a.ping().await.expect("others unaffected");
}

#[tokio::test]
async fn oversize_payloads_are_errors() {
    let server = TestServer::start().await;
    let (a, b, _c, m) = three(&server).await;
    let big = vec![0u8; quicmatch_protocol::MAX_DATAGRAM_PAYLOAD + 1];
    let err = a
        .send_match_data(m.match_id, 1, big.clone(), false, None)
        .await
        .expect_err("too large for a datagram");
    assert_eq!(err.code(), Some(ErrorCode::PAYLOAD_TOO_LARGE));
    // The same payload is fine reliably.
    a.send_match_data(m.match_id, 1, big, true, None)
        .await
        .expect("reliable");
    assert_eq!(data(next_event(&b, "big reliable").await).data.len(), 1025);
    let huge = vec![0u8; quicmatch_protocol::MAX_RELIABLE_PAYLOAD + 1];
    let err = a
        .send_match_data(m.match_id, 1, huge, true, None)
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Some(ErrorCode::PAYLOAD_TOO_LARGE));
    a.ping().await.expect("still connected");
}

#[tokio::test]
async fn a_thousand_reliable_messages_arrive_in_order() {
    let server = TestServer::start().await;
    let (a, b, c, m) = three(&server).await;
    for i in 0u32..1000 {
        a.send_match_data(m.match_id, 1, i.to_le_bytes().to_vec(), true, None)
            .await
            .expect("send");
    }
    for who in [&b, &c] {
        let mut last_seq = 0;
        for i in 0u32..1000 {
            let d = data(next_event(who, "reliable message").await);
            assert_eq!(&d.data[..], &i.to_le_bytes(), "message {i} out of order");
            assert!(d.seq > last_seq, "seq must increase");
            last_seq = d.seq;
        }
    }
}

#[tokio::test]
async fn unreliable_data_carries_increasing_seq() {
    let server = TestServer::start().await;
    let (a, b, _c, m) = three(&server).await;
    for i in 0u8..20 {
        a.send_match_data(m.match_id, 2, vec![i], false, None)
            .await
            .expect("send");
        // One at a time keeps loopback from dropping any, so every one is checked.
        let d = data(next_event(&b, "datagram").await);
        assert_eq!(d.data[0], i);
        assert!(!d.reliable);
    }
    // seq is shared with the reliable path: a later reliable message has a higher seq.
    a.send_match_data(m.match_id, 2, vec![1], false, None)
        .await
        .expect("send");
    let unreliable = data(next_event(&b, "datagram").await);
    a.send_match_data(m.match_id, 2, vec![2], true, None)
        .await
        .expect("send");
    let reliable = data(next_event(&b, "reliable").await);
    assert!(reliable.seq > unreliable.seq);
}

#[tokio::test]
async fn data_from_a_new_member_resolves_its_sender() {
    let server = TestServer::start().await;
    let a = server.client("alice").await;
    let m = a.create_match(None).await.expect("create");
    let b = server.client("bob").await;
    b.join_match(m.match_id).await.expect("join");
    // Bob's datagram may overtake the join event on the control stream; the SDK holds it
    // until it knows who slot 2 is.
    b.send_match_data(m.match_id, 9, b"first".to_vec(), false, None)
        .await
        .expect("send");
    let mut got_join = false;
    let mut got_data = false;
    while !(got_join && got_data) {
        match next_event(&a, "join and data").await {
            Event::MatchPresence(p) => {
                assert_eq!(p.joins, vec![b.presence()]);
                got_join = true;
            }
            Event::MatchData(d) => {
                assert_eq!(d.sender, b.presence());
                got_data = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A game loop polls once a frame and never waits: `try_next_event` hands over what is
/// ready (reliable events and datagrams alike) and `None` otherwise.
#[tokio::test]
async fn a_frame_loop_polls_events_without_waiting() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    next_event(&alice, "bob joins").await;
    assert!(bob.try_next_event().is_none(), "nothing is ready yet");
    alice
        .send_match_data(m.match_id, 1, b"reliable".to_vec(), true, None)
        .await
        .expect("send");
    alice
        .send_match_data(m.match_id, 2, b"datagram".to_vec(), false, None)
        .await
        .expect("send");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + common::TEST_TIMEOUT;
    while got.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "frames without the data: {got:?}"
        );
        while let Some(event) = bob.try_next_event() {
            if let Event::MatchData(d) = event {
                got.push(d.op_code);
            }
        }
        // The rest of the frame.
        tokio::time::sleep(Duration::from_millis(16)).await;
    }
    got.sort();
    assert_eq!(got, [1, 2]);
    assert!(bob.try_next_event().is_none());
}

/// The options form says how and to whom, instead of a bare bool.
#[tokio::test]
async fn send_options_choose_the_path_and_the_recipients() {
    use quicmatch_client::SendOptions;
    let server = TestServer::start().await;
    let (a, b, c, m) = three(&server).await;
    a.send_match_data_with(
        m.match_id,
        5,
        b"only b".to_vec(),
        SendOptions::reliable().to(&[b.presence()]),
    )
    .await
    .expect("send");
    let got = data(next_event(&b, "b's message").await);
    assert!(got.reliable);
    assert_eq!(&got.data[..], b"only b");
    a.send_match_data_with(
        m.match_id,
        6,
        b"everyone".to_vec(),
        SendOptions::unreliable(),
    )
    .await
    .expect("send");
    for s in [&b, &c] {
        let got = data(next_event(s, "datagram").await);
        assert!(!got.reliable);
        assert_eq!(got.op_code, 6);
    }
    assert_no_event(&c, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn reliable_data_sent_just_before_close_arrives() {
    let server = TestServer::start().await;
    let (alice, bob, _carol, m) = three(&server).await;
    for i in 0..20u8 {
        bob.send_match_data(m.match_id, 2, vec![i], true, None)
            .await
            .expect("send");
    }
    bob.close().await;
    let mut got = Vec::new();
    while got.len() < 20 {
        match next_event(&alice, "bob's last data").await {
            Event::MatchData(d) => got.push(d.data[0]),
            Event::MatchPresence(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn data_queued_before_a_shutdown_arrives_before_the_close() {
    const N: u32 = 1400;
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    // Bob holds few events and does not read until the stop: most of the data is still
    // on its way (in flow control, in the server's queues) when the server stops.
    let bob = timeout(
        common::TEST_TIMEOUT,
        Socket::connect(server.client_config("bob").event_buffer(8)),
    )
    .await
    .expect("waiting for connect")
    .expect("connect");
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    next_event(&alice, "bob joins").await;
    for i in 0..N {
        let mut payload = vec![0u8; 8000];
        payload[..4].copy_from_slice(&i.to_le_bytes());
        alice
            .send_match_data(m.match_id, 1, payload, true, None)
            .await
            .expect("send");
    }
    // The reply comes after the server has taken all of it: one stream, in order.
    alice.list_matches().await.expect("list");
    // Stopping waits for every session; bob's reads below are what let it finish.
    let stopping = tokio::spawn(server.stop());
    let mut got = 0u32;
    loop {
        match next_event(&bob, "the data, then the close").await {
            Event::MatchData(d) => {
                assert_eq!(&d.data[..4], &got.to_le_bytes(), "in order");
                got += 1;
            }
            Event::Disconnected { code, .. } => {
                assert_eq!(code, Some(quicmatch_client::CloseCode::SERVER_SHUTDOWN));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(got, N, "everything queued before the stop arrived");
    stopping.await.expect("stopped");
}

/// A client that writes its own datagrams (an engine's network layer, a load tester)
/// uses the socket's connection and the match's handle: the others get them as any
/// match data, and the handle is gone once the socket left the match.
#[tokio::test]
async fn datagrams_written_on_the_connection_with_the_match_handle_arrive() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    next_event(&alice, "bob joins").await;
    let handle = alice.match_handle(m.match_id).expect("alice's handle");
    let datagram =
        quicmatch_protocol::datagram::encode_client(handle, 42, None, b"written by hand");
    alice
        .connection()
        .send_datagram(datagram)
        .expect("send the datagram");
    match next_event(&bob, "the datagram").await {
        Event::MatchData(d) => {
            assert_eq!((d.op_code, d.data.as_ref()), (42, &b"written by hand"[..]));
            assert_eq!(d.sender.session_id, alice.presence().session_id);
            assert!(!d.reliable);
        }
        other => panic!("expected match data, got {other:?}"),
    }
    alice.leave_match(m.match_id).await.expect("leave");
    assert_eq!(alice.match_handle(m.match_id), None);
    assert_eq!(bob.match_handle(MatchId::new_random()), None);
}
