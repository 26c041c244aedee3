//! Redundant unreliable data end to end: every message arrives once and in order, and
//! with loss on the sender's link, repeats recover what plain datagrams lose; a
//! repeated datagram (`repeat_after`) is sent twice, delivered once, and skipped when a
//! newer message went out first.

mod common;

use std::time::Duration;

use common::{
    next_event,
    proxy::{Impairment, Proxy},
    TestServer,
};
use quicmatch_client::{Event, Match, MatchId, SendOptions, Socket, MAX_REPEATS, MAX_REPEAT_DELAY};
use quicmatch_protocol::{datagram::RelayHeader, ErrorCode, Request, Response, ServerBody};
use tokio::time::{interval, timeout, Instant};

const POS: i64 = 3;

/// Sends `n` numbered messages, 2 ms apart, with `redundancy` (0: plain datagrams).
async fn send_numbered(s: &Socket, id: MatchId, n: u32, redundancy: usize) {
    send_every(
        s,
        id,
        n,
        Duration::from_millis(2),
        SendOptions::unreliable().redundancy(redundancy),
    )
    .await;
}

/// Sends `n` numbered messages, `every` apart, as `options` say.
async fn send_every(s: &Socket, id: MatchId, n: u32, every: Duration, options: SendOptions) {
    let mut tick = interval(every);
    for i in 1..=n {
        tick.tick().await;
        s.send_match_data_with(id, POS, i.to_be_bytes().to_vec(), options.clone())
            .await
            .expect("send");
    }
}

/// The numbers received, until `last` arrives or nothing has come for a while.
async fn receive_numbered(s: &Socket, last: u32) -> Vec<u32> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match timeout(Duration::from_millis(500), s.next_event()).await {
            Ok(Some(Event::MatchData(d))) if d.op_code == POS => {
                let n = u32::from_be_bytes(d.data.as_ref().try_into().expect("4 bytes"));
                got.push(n);
                if n == last {
                    break;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("disconnected"),
            Err(_) => break,
        }
    }
    got
}

#[tokio::test]
async fn redundant_messages_arrive_once_and_in_order() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let game = alice.create_match(None).await.expect("create");
    bob.join_match(game.match_id).await.expect("join");
    next_event(&alice, "bob joins").await;
    let (_, got) = tokio::join!(
        send_numbered(&alice, game.match_id, 100, 2),
        receive_numbered(&bob, 100)
    );
    // Loopback loses nothing: each of the 100 once, though most came three times.
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
    // A too-high redundancy is refused locally.
    let err = alice
        .send_match_data_with(
            game.match_id,
            POS,
            b"x".to_vec(),
            SendOptions::unreliable().redundancy(4),
        )
        .await
        .expect_err("at most 3");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
}

/// Alice behind a link that loses 20 % of packets (`seed` picks which), bob direct, in
/// one match alice created.
async fn lossy_sender(server: &TestServer, seed: u64) -> (Proxy, Socket, Socket, Match) {
    let lossy = Impairment {
        loss: 0.2,
        ..Impairment::CLEAN
    };
    let proxy = Proxy::start(server.addr, lossy, seed).await;
    let mut config = server.client_config("alice");
    config.server = proxy.addr;
    let alice = timeout(Duration::from_secs(30), Socket::connect(config))
        .await
        .expect("connect in time")
        .expect("connect through the lossy link");
    let bob = server.client("bob").await;
    let game = alice.create_match(None).await.expect("create");
    bob.join_match(game.match_id).await.expect("join");
    (proxy, alice, bob, game)
}

#[tokio::test]
async fn repeats_recover_what_a_lossy_link_drops() {
    let server = TestServer::start().await;
    let (_proxy, alice, bob, game) = lossy_sender(&server, 7).await;

    let (_, plain) = tokio::join!(
        send_numbered(&alice, game.match_id, 300, 0),
        receive_numbered(&bob, 300)
    );
    let (_, redundant) = tokio::join!(
        send_numbered(&alice, game.match_id, 300, 2),
        receive_numbered(&bob, 300)
    );
    for got in [&plain, &redundant] {
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "in order, once: {got:?}"
        );
    }
    // 20 % loss: plain datagrams lose about 60 of 300; with two repeats a message is
    // lost only when three datagrams in a row are (about 0.8 %).
    assert!(plain.len() <= 285, "plain delivered {} of 300", plain.len());
    assert!(
        redundant.len() >= 285,
        "redundant delivered {} of 300",
        redundant.len()
    );
}

#[tokio::test]
async fn a_repeat_recovers_the_newest_state_before_the_next_send() {
    let server = TestServer::start().await;
    let (_proxy, alice, bob, game) = lossy_sender(&server, 11).await;

    // A message every 50 ms, no redundancy: only the repeat, 5 ms later, can bring a
    // message whose datagram was lost, and it does so long before the next message.
    let every = Duration::from_millis(50);
    let repeated = SendOptions::unreliable().repeat_after(Duration::from_millis(5));
    let receive = async {
        let mut got = Vec::new();
        let mut late = 0;
        let start = Instant::now();
        let deadline = start + Duration::from_secs(30);
        while Instant::now() < deadline {
            match timeout(Duration::from_millis(1000), bob.next_event()).await {
                Ok(Some(Event::MatchData(d))) if d.op_code == POS => {
                    let n = u32::from_be_bytes(d.data.as_ref().try_into().expect("4 bytes"));
                    // Message n is sent about n x 50 ms after the first: it arrived
                    // before message n + 1 was even sent.
                    if start.elapsed() > every * n + every / 2 {
                        late += 1;
                    }
                    got.push(n);
                    if n == 200 {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("disconnected"),
                Err(_) => break,
            }
        }
        (got, late)
    };
    let (_, (got, late)) = tokio::join!(
        send_every(&alice, game.match_id, 200, every, repeated),
        receive
    );
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {got:?}"
    );
    // 20 % loss: plain datagrams would lose about 40 of 200; with a repeat a message is
    // lost only with both of its datagrams (about 4 %).
    assert!(got.len() >= 180, "delivered {} of 200", got.len());
    assert!(late <= 10, "{late} messages came after the next send");
}

#[tokio::test]
async fn a_repeat_is_sent_once_and_only_while_its_message_is_the_newest() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let game = alice.create_match(None).await.expect("create");
    // Bob reads raw datagrams, so every copy the server relays is seen.
    let mut bob = server.raw_session("bob").await;
    let reply = bob
        .request(
            Some(1),
            Request::MatchJoin {
                match_id: game.match_id,
            },
        )
        .await;
    let ServerBody::Response(Response::Match(_)) = reply.body else {
        panic!("expected a match, got {reply:?}");
    };
    next_event(&alice, "bob joins").await;
    let copies = |bob: &common::RawSession, want: usize| {
        let conn = bob.conn.clone();
        async move {
            let mut seen = Vec::new();
            while seen.len() < want {
                let d = timeout(Duration::from_secs(10), conn.read_datagram())
                    .await
                    .expect("a datagram in time")
                    .expect("connection open");
                let (header, payload) = RelayHeader::decode(d).expect("decode");
                assert!(header.bundle, "a repeated message travels as a bundle");
                let bundle = quicmatch_protocol::bundle::decode(payload).expect("bundle");
                seen.push(bundle[0].msg_seq);
            }
            // Nothing more comes.
            assert!(
                timeout(Duration::from_millis(300), conn.read_datagram())
                    .await
                    .is_err(),
                "more copies than {want}: {seen:?}"
            );
            seen
        }
    };

    let ms = Duration::from_millis;
    let cases = [
        // Far apart: each message goes twice.
        (
            3,
            ms(100),
            SendOptions::unreliable().repeat_after(ms(20)),
            vec![1, 1, 2, 2, 3, 3],
        ),
        // Faster than the repeat delay: each message is overtaken by the next, so
        // only the last one is repeated.
        (
            5,
            ms(5),
            SendOptions::unreliable().repeat_after(ms(200)),
            vec![4, 5, 6, 7, 8, 8],
        ),
        // Twice more each, 10 ms apart.
        (
            2,
            ms(150),
            SendOptions::unreliable()
                .repeat_after(ms(10))
                .repeat_times(2),
            vec![9, 9, 9, 10, 10, 10],
        ),
    ];
    for (n, every, options, want) in cases {
        let (_, seen) = tokio::join!(
            send_every(&alice, game.match_id, n, every, options),
            copies(&bob, want.len())
        );
        assert_eq!(seen, want);
    }

    // More repeats, or a later repeat, than the bounds allow are refused locally.
    for options in [
        SendOptions::unreliable()
            .repeat_after(ms(1))
            .repeat_times(MAX_REPEATS + 1),
        SendOptions::unreliable().repeat_after(MAX_REPEAT_DELAY + ms(1)),
    ] {
        let err = alice
            .send_match_data_with(game.match_id, POS, b"x".to_vec(), options)
            .await
            .expect_err("out of bounds");
        assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    }
}
