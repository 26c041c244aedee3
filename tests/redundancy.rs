//! Redundant unreliable data end to end: every message arrives once and in order, and
//! with loss on the sender's link, repeats recover what plain datagrams lose.

mod common;

use std::time::Duration;

use common::{
    next_event,
    proxy::{Impairment, Proxy},
    TestServer,
};
use quicmatch_client::{Event, MatchId, SendOptions, Socket};
use tokio::time::{interval, timeout, Instant};

const POS: i64 = 3;

/// Sends `n` numbered messages, 2 ms apart, with `redundancy` (0: plain datagrams).
async fn send_numbered(s: &Socket, id: MatchId, n: u32, redundancy: usize) {
    let mut tick = interval(Duration::from_millis(2));
    for i in 1..=n {
        tick.tick().await;
        s.send_match_data_with(
            id,
            POS,
            i.to_be_bytes().to_vec(),
            SendOptions::unreliable().redundancy(redundancy),
        )
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
    assert_eq!(err.code(), Some(quicmatch_client::ErrorCode::BAD_INPUT));
}

#[tokio::test]
async fn repeats_recover_what_a_lossy_link_drops() {
    let server = TestServer::start().await;
    let lossy = Impairment {
        loss: 0.2,
        ..Impairment::CLEAN
    };
    let proxy = Proxy::start(server.addr, lossy, 7).await;
    let mut config = server.client_config("alice");
    config.server = proxy.addr;
    let alice = timeout(Duration::from_secs(30), Socket::connect(config))
        .await
        .expect("connect in time")
        .expect("connect through the lossy link");
    let bob = server.client("bob").await;
    let game = alice.create_match(None).await.expect("create");
    bob.join_match(game.match_id).await.expect("join");

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
