//! Staying up for honest players: rate limits, Retry under load, slow consumers,
//! connection migration, and graceful shutdown.

mod common;

use std::time::Duration;

use common::{assert_no_event, next_event, TestServer, TEST_TIMEOUT};
use quicmatch_client::{CloseCode, ErrorCode, Event, Socket};
use quicmatch_protocol::{Request, Response, ServerBody};
use tokio::time::timeout;

#[tokio::test]
async fn request_floods_are_refused_then_closed() {
    let mut config = common::test_config();
    config.session.requests_per_second = 20.0;
    config.session.request_burst = 20;
    config.session.rate_limit_strikes = 2;
    let server = TestServer::start_with(config).await;
    let honest = server.client("honest").await;
    let mut raw = server.raw_session("flood").await;
    // The burst passes, the excess is refused with RATE_LIMITED (once per second).
    for cid in 1..=60 {
        raw.send_request(Some(cid), Request::Ping).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..21 {
        match raw.next().await.body {
            ServerBody::Response(Response::Pong) => pongs += 1,
            ServerBody::Response(Response::Error { code, .. }) => {
                assert_eq!(code, ErrorCode::RATE_LIMITED);
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((pongs, limited), (20, 1));
    // Keep flooding for longer than the strikes allow: the connection is closed.
    let conn = raw.conn.clone();
    let flood = tokio::spawn(async move {
        for cid in 100..100_000u32 {
            let frame = quicmatch_protocol::frame::encode(&quicmatch_protocol::ClientEnvelope {
                cid: Some(cid),
                body: Request::Ping,
            })
            .expect("encode");
            if raw.send.write_all(&frame).await.is_err() {
                break;
            }
            if cid % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    common::assert_closed_with(&conn, CloseCode::RATE_LIMITED).await;
    flood.abort();
    honest.ping().await.expect("others are served");
}

#[tokio::test]
async fn datagram_floods_are_dropped_with_one_error() {
    let mut config = common::test_config();
    config.session.datagrams_per_second = 10.0;
    config.session.datagram_burst = 5;
    let server = TestServer::start_with(config).await;
    let a = server.client("a").await;
    let b = server.client("b").await;
    let m = a.create_match(None).await.expect("create");
    b.join_match(m.match_id).await.expect("join");
    next_event(&a, "join").await;
    for i in 0..20u8 {
        a.send_match_data(m.match_id, 1, vec![i], false, None)
            .await
            .expect("send");
    }
    match next_event(&a, "rate limit error").await {
        Event::Error { code, .. } => assert_eq!(code, ErrorCode::RATE_LIMITED),
        other => panic!("unexpected {other:?}"),
    }
    let mut got = 0;
    while let Ok(Some(Event::MatchData(_))) =
        timeout(Duration::from_millis(300), b.next_event()).await
    {
        got += 1;
    }
    assert!(
        (5..=7).contains(&got),
        "the burst got through, the rest was dropped: {got}"
    );
    assert_no_event(&a, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn clients_connect_through_retry() {
    let mut config = common::test_config();
    config.session.retry_threshold = 0;
    let server = TestServer::start_with(config).await;
    let a = server.client("retried").await;
    a.ping().await.expect("served after address validation");
}

#[tokio::test]
async fn a_slow_consumer_is_closed_and_the_others_carry_on() {
    let mut config = common::test_config();
    config.session.outbound_bytes = 64 << 10;
    config.session.slow_consumer_after = Duration::from_millis(500);
    let server = TestServer::start_with(config).await;
    let sender = server.client("sender").await;
    let reader = server.client("reader").await;
    let m = sender.create_match(None).await.expect("create");
    reader.join_match(m.match_id).await.expect("join");
    next_event(&sender, "reader joins").await;
    // A raw member that never reads its control stream, with a small receive window so
    // that the server's writes to it stall quickly.
    let mut small = quinn::TransportConfig::default();
    small
        .stream_receive_window(quinn::VarInt::from_u32(16 * 1024))
        .receive_window(quinn::VarInt::from_u32(32 * 1024));
    let mut stalled = server.raw_session_with("stalled", small).await;
    let reply = stalled
        .request(
            Some(1),
            Request::MatchJoin {
                match_id: m.match_id,
            },
        )
        .await;
    assert!(matches!(
        reply.body,
        ServerBody::Response(Response::Match(_))
    ));
    next_event(&sender, "stalled joins").await;
    next_event(&reader, "stalled joins").await;
    let stalled_conn = stalled.conn.clone();
    // The honest reader reads as it goes: it gets every message, in order, and sees
    // the stalled member leave.
    let reading = tokio::spawn(async move {
        let mut next = 0u32;
        let mut left = false;
        while next < 300 || !left {
            match next_event(&reader, "data and leave").await {
                Event::MatchData(d) => {
                    assert_eq!(u32::from_le_bytes(d.data[..4].try_into().expect("4")), next);
                    next += 1;
                }
                Event::MatchPresence(p) => {
                    assert_eq!(p.leaves.len(), 1);
                    left = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let payload = vec![7u8; 2 * 1024];
    for i in 0..300u32 {
        let mut data = payload.clone();
        data[..4].copy_from_slice(&i.to_le_bytes());
        sender
            .send_match_data(m.match_id, 1, data, true, None)
            .await
            .expect("send");
        // A game sends in ticks, not in one burst.
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    common::assert_closed_with(&stalled_conn, CloseCode::SLOW_CONSUMER).await;
    timeout(TEST_TIMEOUT, reading)
        .await
        .expect("reader done in time")
        .expect("reader saw everything");
    sender.ping().await.expect("the sender is still served");
    drop(stalled);
}

/// One member sends its whole allowed burst (1,500 reliable 1 KB messages) at once,
/// then keeps sending within its rate: members that keep reading are never closed, and
/// one that stops reading is closed with `SLOW_CONSUMER` (once its backlog has stayed
/// over the mark for `slow_consumer_after`) and is told so. Default limits throughout.
#[tokio::test]
async fn a_full_burst_never_closes_readers_that_keep_reading() {
    const BURST: u32 = 1500;
    /// After the burst, 40 messages every 100 ms: inside the 500/s sustained rate.
    const PACE: u32 = 40;
    let server = TestServer::start().await;
    let sender = server.client("sender").await;
    let m = sender.create_match(None).await.expect("create");
    let mut readers = Vec::new();
    for name in ["reader-a", "reader-b", "reader-c"] {
        let reader = server.client(name).await;
        reader.join_match(m.match_id).await.expect("join");
        next_event(&sender, "reader joins").await;
        readers.push(reader);
    }
    // Stops reading: its socket buffers only a few events, so once the transport's
    // buffers are full its control stream stalls and the server's backlog grows.
    let mut config = server.client_config("stopped");
    config.event_buffer = 4;
    config.reconnect_for = Duration::ZERO;
    let stopped = timeout(TEST_TIMEOUT, Socket::connect(config))
        .await
        .expect("connect in time")
        .expect("connect");
    stopped.join_match(m.match_id).await.expect("join");
    next_event(&sender, "stopped joins").await;
    let stopped_presence = stopped.presence();
    let stopped_left = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for reader in readers {
        // Joins that happened before it arrived are already done with.
        while let Ok(Some(_)) = timeout(Duration::from_millis(100), reader.next_event()).await {}
        let stopped_presence = stopped_presence.clone();
        let stopped_left = stopped_left.clone();
        tasks.push(tokio::spawn(async move {
            let mut next = 0u32;
            let mut saw_leave = false;
            loop {
                let what = format!("message {next}, stopped left: {saw_leave}");
                match next_event(&reader, &what).await {
                    Event::MatchData(d) if d.op_code == 2 => break,
                    Event::MatchData(d) => {
                        assert_eq!(u32::from_le_bytes(d.data[..4].try_into().expect("4")), next);
                        next += 1;
                    }
                    Event::MatchPresence(p) => {
                        assert_eq!(
                            p.leaves,
                            std::slice::from_ref(&stopped_presence),
                            "only the stopped reader leaves"
                        );
                        saw_leave = true;
                        stopped_left.notify_one();
                    }
                    other => panic!("a reader that keeps reading got {other:?}"),
                }
            }
            assert!(next >= BURST && saw_leave);
            reader
        }));
    }
    let payload = vec![7u8; 1024];
    let message = |i: u32| {
        let mut data = payload.clone();
        data[..4].copy_from_slice(&i.to_le_bytes());
        data
    };
    for i in 0..BURST {
        sender
            .send_match_data(m.match_id, 1, message(i), true, None)
            .await
            .expect("send");
    }
    let mut i = BURST;
    let leave = stopped_left.notified();
    tokio::pin!(leave);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::select! {
            () = &mut leave => break,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                assert!(tokio::time::Instant::now() < deadline, "the stopped reader was never closed");
                for _ in 0..PACE {
                    sender.send_match_data(m.match_id, 1, message(i), true, None).await.expect("send");
                    i += 1;
                }
            }
        }
    }
    sender
        .send_match_data(m.match_id, 2, b"done".to_vec(), true, None)
        .await
        .expect("send");
    let mut still_here = Vec::new();
    for task in tasks {
        let reader = timeout(Duration::from_secs(30), task)
            .await
            .expect("readers done in time")
            .expect("every reader got every message and stayed");
        reader.ping().await.expect("still connected");
        still_here.push(reader);
    }
    // The stopped reader, reading at last, learns why it was closed.
    let code = common::disconnect_code(&stopped, "the close").await;
    assert_eq!(code, Some(CloseCode::SLOW_CONSUMER));
    assert_eq!(server.stats.matches().presences, 4);
}

#[tokio::test]
async fn a_client_that_changes_address_keeps_its_session() {
    let server = TestServer::start().await;
    let a = server.client("a").await;
    let b = server.client("b").await;
    let m = a.create_match(None).await.expect("create");
    b.join_match(m.match_id).await.expect("join");
    next_event(&a, "join").await;
    let ticket = b.add_matchmaker("*", 3, 3).await.expect("ticket");
    // The old socket is closed by the rebind: anything that arrives now came through
    // the new address.
    let new_socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    b.rebind(new_socket).expect("rebind");
    // Traffic from the new address: the server follows the migration.
    b.send_match_data(m.match_id, 5, b"moved".to_vec(), true, None)
        .await
        .expect("send");
    match next_event(&a, "data after migration").await {
        Event::MatchData(d) => {
            assert_eq!(&d.data[..], b"moved");
            assert_eq!(d.sender, b.presence());
        }
        other => panic!("unexpected {other:?}"),
    }
    b.send_match_data(m.match_id, 6, b"dgram".to_vec(), false, None)
        .await
        .expect("send");
    match next_event(&a, "datagram after migration").await {
        Event::MatchData(d) => assert_eq!(&d.data[..], b"dgram"),
        other => panic!("unexpected {other:?}"),
    }
    assert_no_event(&a, Duration::from_millis(200)).await;
    assert_eq!(server.stats.matches().presences, 2);
    assert_eq!(server.stats.matchmaker().tickets, 1, "ticket {ticket} kept");
    b.ping().await.expect("same session still answers");
}

#[tokio::test]
async fn shutdown_tells_clients_and_finishes() {
    let server = TestServer::start().await;
    let a = server.client("a").await;
    let stats = server.stats.clone();
    server.stop().await;
    let mut closed_code = None;
    while let Ok(Some(event)) = timeout(TEST_TIMEOUT, a.next_event()).await {
        if let Event::Disconnected { code, .. } = event {
            closed_code = code;
            break;
        }
    }
    assert_eq!(closed_code, Some(CloseCode::SERVER_SHUTDOWN));
    assert_eq!(stats.connections(), 0);
    assert_eq!(stats.sessions(), 0);
}
