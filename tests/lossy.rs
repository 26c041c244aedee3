//! A lossy, jittery network between clients and the server (10 % loss each way,
//! 20–80 ms one-way delay, some duplication): sessions, matches, data, matchmaking and
//! parties all complete; reliable data is complete and in order; unreliable data
//! arrives at about the offered rate minus loss, and `seq` exposes gaps and stale
//! packets.

mod common;

use std::{collections::HashSet, time::Duration};

use common::{
    proxy::{Impairment, Proxy},
    TestServer, TEST_TIMEOUT,
};
use quicmatch_client::{Event, Socket};
use tokio::time::timeout;

/// Slow networks need more patience than loopback.
const LOSSY_TIMEOUT: Duration = Duration::from_secs(30);

const BAD_NETWORK: Impairment = Impairment {
    loss: 0.10,
    delay: Duration::from_millis(20),
    jitter: Duration::from_millis(60),
    duplicate: 0.02,
};

async fn lossy_client(server: &TestServer, proxy: &Proxy, name: &str) -> Socket {
    // These tests send everything first and read it afterwards, which the SDK's
    // staleness bound would (rightly) drop: they measure loss, not freshness.
    let mut config = server.client_config(name).max_datagram_age(None);
    config.server = proxy.addr;
    timeout(LOSSY_TIMEOUT, Socket::connect(config))
        .await
        .expect("connect in time")
        .expect("connect through the lossy network")
}

async fn event(socket: &Socket, what: &str) -> Event {
    timeout(LOSSY_TIMEOUT, socket.next_event())
        .await
        .unwrap_or_else(|_| panic!("waiting for {what}"))
        .unwrap_or_else(|| panic!("closed while waiting for {what}"))
}

/// The next event that is not unreliable match data.
async fn control_event(socket: &Socket, what: &str) -> Event {
    loop {
        match event(socket, what).await {
            Event::MatchData(d) if !d.reliable => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn matches_and_reliable_data_survive_loss_and_jitter() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr, BAD_NETWORK, 1).await;
    let a = lossy_client(&server, &proxy, "alice").await;
    let b = lossy_client(&server, &proxy, "bob").await;
    let m = a.create_match(None).await.expect("create");
    let joined = b.join_match(m.match_id).await.expect("join");
    assert_eq!(joined.size, 2);
    match control_event(&a, "join").await {
        Event::MatchPresence(p) => assert_eq!(p.joins, vec![b.presence()]),
        other => panic!("unexpected {other:?}"),
    }
    for i in 0..200u32 {
        a.send_match_data(m.match_id, 1, i.to_le_bytes().to_vec(), true, None)
            .await
            .expect("send");
    }
    for i in 0..200u32 {
        match control_event(&b, "reliable data").await {
            Event::MatchData(d) => {
                assert_eq!(&d.data[..], &i.to_le_bytes(), "complete and in order");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    b.leave_match(m.match_id).await.expect("leave");
    match control_event(&a, "leave").await {
        Event::MatchPresence(p) => assert_eq!(p.leaves, vec![b.presence()]),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn unreliable_data_arrives_minus_loss_and_seq_shows_gaps() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr, BAD_NETWORK, 2).await;
    let a = lossy_client(&server, &proxy, "alice").await;
    let b = lossy_client(&server, &proxy, "bob").await;
    let m = a.create_match(None).await.expect("create");
    b.join_match(m.match_id).await.expect("join");
    control_event(&a, "join").await;
    const SENT: u32 = 300;
    for i in 0..SENT {
        a.send_match_data(m.match_id, 2, i.to_le_bytes().to_vec(), false, None)
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seqs = Vec::new();
    let mut payloads = HashSet::new();
    while let Ok(Some(Event::MatchData(d))) =
        timeout(Duration::from_millis(1500), b.next_event()).await
    {
        payloads.insert(u32::from_le_bytes(d.data[..4].try_into().expect("4 bytes")));
        seqs.push(d.seq);
    }
    // Two lossy legs at 10 % each: about 81 % arrives (duplicates add a little).
    let ratio = payloads.len() as f64 / f64::from(SENT);
    assert!((0.65..=0.95).contains(&ratio), "delivery ratio {ratio}");
    // A receiver finds gaps and stale or duplicate packets from seq alone.
    let mut highest = 0;
    let mut stale = 0;
    let mut seen = HashSet::new();
    for s in &seqs {
        let fresh = seen.insert(*s);
        if *s <= highest || !fresh {
            stale += 1;
        }
        highest = highest.max(*s);
    }
    let distinct = seen.len() as u64;
    let gaps = highest - distinct;
    assert!(gaps > 0, "loss shows up as gaps in seq");
    assert_eq!(distinct, payloads.len() as u64, "one seq per message");
    assert!(stale > 0, "jitter reorders, and seq shows the stale ones");
}

#[tokio::test]
async fn matchmaking_and_parties_complete_over_a_bad_network() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr, BAD_NETWORK, 3).await;
    let leader = lossy_client(&server, &proxy, "leader").await;
    let member = lossy_client(&server, &proxy, "member").await;
    let solo = lossy_client(&server, &proxy, "solo").await;
    let party = leader.create_party(true, 2).await.expect("create party");
    member.join_party(party.party_id).await.expect("join party");
    assert!(matches!(
        control_event(&member, "snapshot").await,
        Event::Party(_)
    ));
    assert!(matches!(
        control_event(&leader, "presence").await,
        Event::PartyPresence { .. }
    ));
    member
        .send_party_data(party.party_id, 1, b"ready".to_vec())
        .await
        .expect("party data");
    assert!(matches!(
        control_event(&leader, "party data").await,
        Event::PartyData { .. }
    ));
    leader
        .add_matchmaker_party(party.party_id, "*", 3, 3)
        .await
        .expect("party ticket");
    assert!(matches!(
        control_event(&member, "party ticket").await,
        Event::PartyMatchmakerTicket { .. }
    ));
    solo.add_matchmaker("*", 3, 3).await.expect("ticket");
    assert_eq!(server.matchmake(), 1);
    let mut token = String::new();
    for who in [&leader, &member, &solo] {
        match control_event(who, "matched").await {
            Event::MatchmakerMatched(m) => token = m.token.expect("token"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut ids = Vec::new();
    for who in [&leader, &member, &solo] {
        ids.push(
            timeout(TEST_TIMEOUT * 3, who.join_match_token(&token))
                .await
                .expect("in time")
                .expect("join by token")
                .match_id,
        );
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
}
