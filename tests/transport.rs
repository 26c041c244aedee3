//! The quinn-proto transport (`transport = "proto"`) in every `cargo test`, whatever
//! `QUICMATCH_TRANSPORT` says: its I/O loop really runs, relays both paths, reports bad
//! datagrams through the session, applies the data rate limit on its thread, and
//! releases its port at shutdown. (CI also runs the whole e2e suite on it.)

mod common;

use std::{collections::BTreeSet, time::Duration};

use bytes::Bytes;
use common::{next_event, test_config, three, RawSession, TestServer};
use quicmatch::config::Transport;
use quicmatch_client::{CloseCode, Event};
use quicmatch_protocol::{
    envelope::{Event as WireEvent, MatchInfo, Response, ServerBody},
    CloseCode as ProtoClose, ErrorCode, Request,
};

fn proto() -> quicmatch::Config {
    let mut config = test_config();
    config.transport = Transport::Proto;
    config.workers = 1;
    config
}

/// Names of this process's threads.
fn threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_proto_loop_relays_both_paths_in_order() {
    let server = TestServer::start_with(proto()).await;
    if cfg!(target_os = "linux") {
        assert!(
            threads().iter().any(|t| t.starts_with("quicmatch-io")),
            "the proto transport runs its I/O thread"
        );
    }
    let (a, b, c, m) = three(&server).await;
    const N: u32 = 200;
    for reliable in [true, false] {
        for i in 0..N {
            a.send_match_data(
                m.match_id,
                1,
                Bytes::from(i.to_be_bytes().to_vec()),
                reliable,
                None,
            )
            .await
            .expect("send");
        }
        for who in [&b, &c] {
            let mut got = Vec::new();
            // Datagrams on loopback arrive unless a buffer overflows; reliable ones always.
            while got.len() < N as usize {
                let Ok(Some(ev)) =
                    tokio::time::timeout(Duration::from_secs(2), who.next_event()).await
                else {
                    break;
                };
                if let Event::MatchData(d) = ev {
                    assert_eq!(d.reliable, reliable);
                    got.push(u32::from_be_bytes(d.data[..4].try_into().expect("4 bytes")));
                }
            }
            if reliable {
                assert_eq!(
                    got,
                    (0..N).collect::<Vec<_>>(),
                    "reliable data complete, in order"
                );
            } else {
                assert!(
                    got.len() >= N as usize * 9 / 10,
                    "datagrams relayed: {}",
                    got.len()
                );
                assert!(
                    got.windows(2).all(|w| w[0] < w[1]),
                    "never reordered on loopback"
                );
            }
        }
    }
}

/// Joins `match_id` and returns the match's datagram handle.
async fn join(raw: &mut RawSession, match_id: quicmatch_protocol::MatchId) -> u8 {
    let reply = raw.request(Some(1), Request::MatchJoin { match_id }).await;
    let ServerBody::Response(Response::Match(MatchInfo { handle, .. })) = reply.body else {
        panic!("expected a match, got {reply:?}");
    };
    u8::try_from(handle).expect("a small handle")
}

#[tokio::test]
async fn bad_datagrams_are_answered_through_the_session() {
    let server = TestServer::start_with(proto()).await;
    let alice = server.client("alice").await;
    let m = alice.create_match(None).await.expect("create");
    let mut raw = server.raw_session("dgram").await;
    let handle = join(&mut raw, m.match_id).await;
    next_event(&alice, "raw joins").await;
    // An unknown handle: the sink on the I/O thread hands the error to the session task.
    raw.conn
        .send_datagram(Bytes::from_static(&[0x01, 0x01, 0xfa, 0x00]))
        .expect("send");
    let ev = raw.next().await;
    assert_eq!(ev.cid, None);
    assert!(
        matches!(
            ev.body,
            ServerBody::Event(WireEvent::Error {
                code: ErrorCode::MATCH_NOT_FOUND,
                ..
            })
        ),
        "got {ev:?}"
    );
    // A good one still reaches alice.
    raw.conn
        .send_datagram(Bytes::from(vec![0x01, 0x01, handle, 0x00, 7, 7]))
        .expect("send");
    match next_event(&alice, "raw's data").await {
        Event::MatchData(d) => assert_eq!(&d.data[..], &[7, 7]),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_datagram_flood_is_rate_limited_on_the_loop_and_then_closed() {
    let mut config = proto();
    config.session.datagrams_per_second = 50.0;
    config.session.datagram_burst = 10;
    config.session.rate_limit_strikes = 1;
    let server = TestServer::start_with(config).await;
    let alice = server.client("alice").await;
    let m = alice.create_match(None).await.expect("create");
    let mut raw = server.raw_session("flood").await;
    let handle = join(&mut raw, m.match_id).await;
    let flood = raw.conn.clone();
    let sender = tokio::spawn(async move {
        for _ in 0..20_000 {
            if flood
                .send_datagram(Bytes::from(vec![0x01, 0x01, handle, 0x00, 1]))
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    });
    common::assert_closed_with(&raw.conn, ProtoClose::RATE_LIMITED).await;
    sender.abort();
    // Alice is served on.
    alice.ping().await.expect("others are served");
}

#[tokio::test]
async fn shutdown_closes_every_client_and_frees_the_port() {
    let mut config = proto();
    config.session.shutdown_grace = Duration::from_secs(2);
    let server = TestServer::start_with(config).await;
    let addr = server.addr;
    let a = server.client("alice").await;
    server.stop().await;
    assert_eq!(
        common::disconnect_code(&a, "disconnected").await,
        Some(CloseCode::SERVER_SHUTDOWN)
    );
    let again = std::net::UdpSocket::bind(addr);
    assert!(
        again.is_ok(),
        "the port is free once serve returned: {again:?}"
    );
}

/// The first payload byte (the sender's number) of the match data `socket` receives,
/// reliable and unreliable apart, until `n` of each came or 5 s passed without any.
async fn senders_heard(
    socket: &quicmatch_client::Socket,
    n: usize,
) -> (BTreeSet<u8>, BTreeSet<u8>) {
    let (mut reliable, mut unreliable) = (BTreeSet::new(), BTreeSet::new());
    while reliable.len() < n || unreliable.len() < n {
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(5), socket.next_event()).await
        else {
            break;
        };
        if let Event::MatchData(d) = ev {
            if d.reliable {
                reliable.insert(d.data[0]);
            } else {
                unreliable.insert(d.data[0]);
            }
        }
    }
    (reliable, unreliable)
}

#[tokio::test]
async fn several_loops_relay_between_members_on_different_loops() {
    let mut config = proto();
    config.workers = 2;
    let server = TestServer::start_with(config).await;
    if cfg!(target_os = "linux") {
        let names = threads();
        for loop_name in ["quicmatch-io-0", "quicmatch-io-1"] {
            assert!(
                names.iter().any(|t| t == loop_name),
                "{loop_name} runs: {names:?}"
            );
        }
    }
    // Eight players on their own ports: the kernel spreads them over both loops' sockets
    // (all on one loop has a chance of 1 in 128).
    let mut players = Vec::new();
    for i in 0..8 {
        players.push(server.client(&format!("p{i}")).await);
    }
    let m = players[0].create_match(None).await.expect("create");
    for p in &players[1..] {
        p.join_match(m.match_id).await.expect("join");
    }
    for (i, p) in players.iter().enumerate() {
        for reliable in [true, false] {
            p.send_match_data(m.match_id, 3, Bytes::from(vec![i as u8]), reliable, None)
                .await
                .expect("send");
        }
    }
    for (me, p) in players.iter().enumerate() {
        let (reliable, unreliable) = senders_heard(p, 7).await;
        let others: BTreeSet<u8> = (0..8u8).filter(|i| usize::from(*i) != me).collect();
        assert_eq!(
            reliable, others,
            "player {me}: reliable data from every other"
        );
        assert_eq!(
            unreliable, others,
            "player {me}: datagrams from every other"
        );
    }
}

#[tokio::test]
async fn with_several_loops_migrated_clients_reach_their_own_loop() {
    let mut config = proto();
    config.workers = 2;
    let server = TestServer::start_with(config).await;
    let a = server.client("anchor").await;
    let m = a.create_match(None).await.expect("create");
    // Eight clients move to a new address each: about half of them now land on the
    // other loop's socket, whose loop must hand their packets to the owner (an unknown
    // connection there would be answered with a stateless reset, ending it).
    let mut movers = Vec::new();
    for i in 0..8 {
        let p = server.client(&format!("mover{i}")).await;
        p.join_match(m.match_id).await.expect("join");
        movers.push(p);
    }
    for p in &movers {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
        p.rebind(socket).expect("rebind");
    }
    for (i, p) in movers.iter().enumerate() {
        for reliable in [true, false] {
            p.send_match_data(m.match_id, 4, Bytes::from(vec![i as u8]), reliable, None)
                .await
                .expect("send");
        }
    }
    let (reliable, unreliable) = senders_heard(&a, 8).await;
    let all: BTreeSet<u8> = (0..8).collect();
    assert_eq!(reliable, all, "reliable data from every moved client");
    assert_eq!(unreliable, all, "datagrams from every moved client");
    for p in &movers {
        p.ping()
            .await
            .expect("every moved client keeps its session");
    }
}
