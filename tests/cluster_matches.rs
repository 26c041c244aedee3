//! Relayed matches across the nodes of a cluster, on a real `nats-server -js`: players
//! connected to three different nodes join one match by id and hear each other's
//! presence, datagrams and reliable data (complete and in order per sender, `seq`
//! increasing); leaves reach everyone; a node that stops ends its matches for members
//! elsewhere with `MatchEnded` and takes its players out of matches elsewhere; an id
//! no node hosts is `MATCH_NOT_FOUND`; a player in a match another node hosts drops,
//! resumes at its home and finds the match (with what was sent meanwhile) as it was;
//! a node killed with SIGKILL ends its matches for members elsewhere (`MatchEnded`,
//! "node lost") and its players leave matches elsewhere; a NATS restart loses no
//! reliable data; joins and leaves in a hurry and the largest messages keep both
//! nodes agreeing; without NATS, cross-node requests say so and local play goes on.
//!
//! The killed node runs as this test binary started again with [`CHILD`] set: only
//! [`server_process`] then does anything, and it serves until it is killed.

mod common;

use std::time::Duration;

use common::{
    assert_no_event,
    cluster::{node_config, sees, three_nodes, ChildNode},
    eventually,
    nats::Nats,
    next_event,
    proxy::{Impairment, Proxy},
    TestServer,
};
use quicmatch_client::{ErrorCode, Event, MatchData, MatchId, MatchPresenceEvent, Socket};
use tokio::time::timeout;

/// Set (to `URL|NAME|DIR`) in the killed node's environment.
const CHILD: &str = "QUICMATCH_CLUSTER_MATCHES_TEST_NODE";

/// The killed node (does nothing unless started by a test with [`CHILD`] set).
#[test]
fn server_process() {
    common::cluster::serve_child(CHILD);
}

fn presence(event: Event) -> MatchPresenceEvent {
    match event {
        Event::MatchPresence(p) => p,
        other => panic!("expected a presence event, got {other:?}"),
    }
}

/// The next match data, skipping nothing else.
async fn data(who: &Socket, what: &str) -> MatchData {
    match next_event(who, what).await {
        Event::MatchData(d) => d,
        other => panic!("{what}: expected match data, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_on_three_nodes_share_one_match() {
    let Some(nats) = Nats::start() else { return };
    let (a, b, c) = three_nodes(&nats).await;
    let alice = a.client("alice").await;
    let bob = b.client("bob").await;
    let carol = c.client("carol").await;

    let m = alice.create_match(None).await.expect("create");
    let joined = bob
        .join_match(m.match_id)
        .await
        .expect("bob joins across nodes");
    assert_eq!(joined.match_id, m.match_id);
    assert_eq!(joined.size, 2);
    let p = presence(next_event(&alice, "bob joins").await);
    assert_eq!(p.joins, vec![bob.presence()]);
    carol.join_match(m.match_id).await.expect("carol joins");
    for who in [&alice, &bob] {
        let p = presence(next_event(who, "carol joins").await);
        assert_eq!(p.joins, vec![carol.presence()]);
    }
    assert_eq!(a.stats.cluster_memberships(), (0, 2), "a hosts two guests");
    assert_eq!(b.stats.cluster_memberships(), (1, 0));

    // Datagrams all ways: from the host's player, and from a guest through the host to
    // the other guest.
    for (sender, name) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
        let mut last = 0;
        for i in 0..3u8 {
            sender
                .send_match_data(m.match_id, 1, vec![i], false, None)
                .await
                .expect("send");
            for who in [&alice, &bob, &carol] {
                if std::ptr::eq(who, sender) {
                    continue;
                }
                let d = data(who, &format!("{name}'s datagram {i}")).await;
                assert_eq!(d.sender.session_id, sender.presence().session_id);
                assert_eq!(&d.data[..], &[i]);
                assert!(!d.reliable);
                if who.presence().session_id == alice.presence().session_id {
                    assert!(d.seq > last, "seq increases");
                    last = d.seq;
                }
            }
        }
    }

    // Reliable data: complete and in order per sender, whichever node each is on.
    const N: u32 = 100;
    for i in 0..N {
        bob.send_match_data(m.match_id, 2, i.to_le_bytes().to_vec(), true, None)
            .await
            .expect("bob sends");
        carol
            .send_match_data(m.match_id, 3, i.to_le_bytes().to_vec(), true, None)
            .await
            .expect("carol sends");
    }
    let mut from_bob = Vec::new();
    let mut from_carol = Vec::new();
    while from_bob.len() < N as usize || from_carol.len() < N as usize {
        let d = data(&alice, "reliable data at the host").await;
        assert!(d.reliable);
        let n = u32::from_le_bytes(d.data[..4].try_into().expect("4 bytes"));
        match d.op_code {
            2 => from_bob.push(n),
            3 => from_carol.push(n),
            other => panic!("op {other}"),
        }
    }
    assert_eq!(from_bob, (0..N).collect::<Vec<_>>());
    assert_eq!(from_carol, (0..N).collect::<Vec<_>>());
    let mut at_carol = Vec::new();
    while at_carol.len() < N as usize {
        let d = data(&carol, "bob's reliable data at carol").await;
        assert_eq!(d.op_code, 2);
        at_carol.push(u32::from_le_bytes(d.data[..4].try_into().expect("4 bytes")));
    }
    assert_eq!(
        at_carol,
        (0..N).collect::<Vec<_>>(),
        "guest to guest, in order"
    );
    for _ in 0..N {
        let d = data(&bob, "carol's reliable data at bob").await;
        assert_eq!(d.op_code, 3);
    }

    // A leave reaches the host's player and the other guest.
    bob.leave_match(m.match_id).await.expect("leave");
    for who in [&alice, &carol] {
        let p = presence(next_event(who, "bob leaves").await);
        assert_eq!(p.leaves, vec![bob.presence()]);
    }
    let stats = a.stats.clone();
    eventually("a has one guest left", || {
        stats.cluster_memberships() == (0, 1)
    })
    .await;

    // The host stops: carol's match ends, said so.
    a.stop().await;
    loop {
        match next_event(&carol, "the match ends with its node").await {
            Event::MatchEnded { match_id, reason } => {
                assert_eq!(match_id, m.match_id);
                assert_eq!(reason, "node stopped");
                break;
            }
            Event::MatchPresence(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(c.stats.cluster_memberships(), (0, 0));
    let err = carol
        .join_match(m.match_id)
        .await
        .expect_err("the match is gone with its node");
    assert_eq!(err.code(), Some(ErrorCode::MATCH_NOT_FOUND));
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_guest_node_takes_its_players_out() {
    let Some(nats) = Nats::start() else { return };
    let (a, b, _c) = three_nodes(&nats).await;
    let alice = a.client("alice").await;
    let bob = b.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    presence(next_event(&alice, "bob joins").await);
    b.stop().await;
    let p = presence(next_event(&alice, "bob's node stopped").await);
    assert_eq!(p.leaves, vec![bob.presence()]);
    assert_eq!(a.stats.cluster_memberships(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_no_node_hosts_is_not_found() {
    let Some(nats) = Nats::start() else { return };
    let (a, _b, _c) = three_nodes(&nats).await;
    let alice = a.client("alice").await;
    let err = alice
        .join_match(MatchId::new_random())
        .await
        .expect_err("no such match");
    assert_eq!(err.code(), Some(ErrorCode::MATCH_NOT_FOUND));
    // The session is unharmed.
    alice.create_match(None).await.expect("create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_in_a_remote_match_resumes_at_its_home() {
    let Some(nats) = Nats::start() else { return };
    let fragile = |name| {
        let mut config = node_config(&nats.url(), name);
        config.session.idle_timeout = Duration::from_secs(2);
        config.session.suspect_after = Duration::from_secs(1);
        config.session.reconnect_grace = Duration::from_secs(5);
        config
    };
    let a = TestServer::start_with(fragile("node-a")).await;
    let b = TestServer::start_with(fragile("node-b")).await;
    sees(&a.stats, &["node-a", "node-b"], "a sees b").await;
    sees(&b.stats, &["node-a", "node-b"], "b sees a").await;
    let alice = a.client("alice").await;
    let proxy = Proxy::start(b.addr, Impairment::CLEAN, 1).await;
    let bob = common::client_via(&b, Some(&proxy), "bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    presence(next_event(&alice, "bob joins").await);
    let bob_presence = bob.presence();
    let token = bob.session().token.clone();

    proxy.cut();
    let stats = b.stats.clone();
    eventually("bob held at home", || stats.held_sessions() == 1).await;
    alice
        .send_match_data(m.match_id, 3, b"while you were away".to_vec(), true, None)
        .await
        .expect("send");

    let back = common::resume(&b, "bob", token).await;
    assert!(back.session().resumed);
    assert_eq!(
        back.session().matches.len(),
        1,
        "the remote match is listed"
    );
    let info = &back.session().matches[0];
    assert_eq!(info.match_id, m.match_id);
    assert_ne!(
        info.handle & (1 << 31),
        0,
        "the home's alias of the host's handle"
    );
    assert_eq!(info.size, 2);
    let d = data(&back, "what was sent while away").await;
    assert_eq!(&d.data[..], b"while you were away");
    back.send_match_data(m.match_id, 4, b"back".to_vec(), false, None)
        .await
        .expect("send");
    let d = data(&alice, "bob's datagram after the resume").await;
    assert_eq!(
        (&d.data[..], d.sender.clone()),
        (&b"back"[..], bob_presence)
    );
    assert_no_event(&alice, Duration::from_millis(300)).await;
    drop(bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_ends_its_matches_and_its_players_leave() {
    let Some(nats) = Nats::start() else { return };
    let a = TestServer::start_with(node_config(&nats.url(), "node-a")).await;
    let mut d = ChildNode::spawn(CHILD, &nats.url(), "node-d");
    sees(&a.stats, &["node-a", "node-d"], "a sees d join").await;
    let dave = d.client("dave").await;
    let erin = d.client("erin").await;
    let alice = a.client("alice").await;
    let hosted_by_d = dave.create_match(None).await.expect("create on d");
    alice
        .join_match(hosted_by_d.match_id)
        .await
        .expect("alice joins d's match");
    let hosted_by_a = alice.create_match(None).await.expect("create on a");
    erin.join_match(hosted_by_a.match_id)
        .await
        .expect("erin joins a's match");
    let p = presence(next_event(&alice, "erin joins").await);
    assert_eq!(p.joins, vec![erin.presence()]);

    // No goodbye: d is gone once its entry goes unrenewed.
    d.kill();
    let (mut ended, mut left) = (false, false);
    while !(ended && left) {
        match next_event(&alice, "d's loss").await {
            Event::MatchEnded { match_id, reason } => {
                assert_eq!(match_id, hosted_by_d.match_id);
                assert_eq!(reason, "node lost");
                ended = true;
            }
            Event::MatchPresence(p) => {
                assert_eq!(p.match_id, hosted_by_a.match_id);
                assert_eq!(p.leaves, vec![erin.presence()]);
                left = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(a.stats.cluster_memberships(), (0, 0));
    // Alice plays on in her own match.
    let bob = a.client("bob").await;
    bob.join_match(hosted_by_a.match_id).await.expect("join");
    presence(next_event(&alice, "bob joins").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_keeps_local_play_and_cross_node_play_comes_back() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    // The default timings: a restart that takes a second or two is shorter than
    // `node_ttl` less a heartbeat, so nobody fences or is judged lost.
    let node = |name| {
        let mut config = node_config(&nats.url(), name);
        config.cluster.heartbeat = Duration::from_secs(1);
        config.cluster.node_ttl = Duration::from_secs(5);
        config.cluster.leader_lease = Duration::from_secs(5);
        config
    };
    let a = TestServer::start_with(node("node-a")).await;
    let b = TestServer::start_with(node("node-b")).await;
    sees(&a.stats, &["node-a", "node-b"], "a sees b").await;
    sees(&b.stats, &["node-a", "node-b"], "b sees a").await;
    let alice = a.client("alice").await;
    let carol = a.client("carol").await;
    let bob = b.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    carol.join_match(m.match_id).await.expect("carol joins");
    presence(next_event(&alice, "carol joins").await);
    bob.join_match(m.match_id).await.expect("bob joins");
    for who in [&alice, &carol] {
        presence(next_event(who, "bob joins").await);
    }
    nats.restart();
    // Local play never stopped.
    carol
        .send_match_data(m.match_id, 1, b"local".to_vec(), true, None)
        .await
        .expect("send");
    let d = data(&alice, "carol's data during the restart").await;
    assert_eq!(&d.data[..], b"local");
    // Cross-node play goes on once NATS is back: reliable data both ways, complete
    // and in order, and a new member from the other node.
    for i in 0..20u32 {
        alice
            .send_match_data(m.match_id, 2, i.to_le_bytes().to_vec(), true, None)
            .await
            .expect("send");
    }
    // Each sender's data in order (two senders' data may interleave: lanes).
    let (mut from_alice, mut from_carol) = (Vec::new(), Vec::new());
    while from_alice.len() < 20 || from_carol.is_empty() {
        let d = data(&bob, "the data sent around the restart").await;
        match d.op_code {
            2 => from_alice.push(u32::from_le_bytes(d.data[..4].try_into().expect("4 bytes"))),
            _ => from_carol.push(d.data),
        }
    }
    assert_eq!(from_alice, (0..20).collect::<Vec<_>>());
    assert_eq!(from_carol, vec![bytes::Bytes::from_static(b"local")]);
    bob.send_match_data(m.match_id, 3, b"back".to_vec(), true, None)
        .await
        .expect("send");
    for i in 0..20u32 {
        let d = data(&carol, "alice's data at carol").await;
        assert_eq!(&d.data[..], &i.to_le_bytes());
    }
    for who in [&alice, &carol] {
        let d = data(who, "bob's data after the restart").await;
        assert_eq!(&d.data[..], b"back");
    }
    let dave = b.client("dave").await;
    dave.join_match(m.match_id)
        .await
        .expect("a new cross-node join");
    for who in [&alice, &carol, &bob] {
        let p = presence(next_event(who, "dave joins").await);
        assert_eq!(p.joins, vec![dave.presence()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoins_in_a_hurry_and_the_largest_messages_cross_intact() {
    let Some(nats) = Nats::start() else { return };
    let a = TestServer::start_with(node_config(&nats.url(), "node-a")).await;
    let b = TestServer::start_with(node_config(&nats.url(), "node-b")).await;
    sees(&a.stats, &["node-a", "node-b"], "a sees b").await;
    sees(&b.stats, &["node-a", "node-b"], "b sees a").await;
    let alice = a.client("alice").await;
    let bob = b.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    // A leave travels on the link and a join as a request: whatever order they reach
    // the host in, both nodes end up agreeing.
    for _ in 0..10 {
        bob.join_match(m.match_id).await.expect("join");
        bob.leave_match(m.match_id).await.expect("leave");
    }
    bob.join_match(m.match_id).await.expect("join for good");
    let (sa, sb) = (a.stats.clone(), b.stats.clone());
    eventually("both nodes agree bob is in", || {
        sa.cluster_memberships() == (0, 1) && sb.cluster_memberships() == (1, 0)
    })
    .await;
    // Alice saw bob come and go alternately (a rejoin that overtook its leave shows
    // as neither), ending with him in.
    let mut inside = false;
    while let Ok(Some(event)) = timeout(Duration::from_millis(500), alice.next_event()).await {
        let p = presence(event);
        for _ in &p.joins {
            assert!(!inside, "joined twice in a row");
            inside = true;
        }
        for _ in &p.leaves {
            assert!(inside, "left without being in");
            inside = false;
        }
    }
    assert!(inside, "bob is in, as both nodes say");
    // Joining again a match one is in changes nothing, on either node.
    let again = bob.join_match(m.match_id).await.expect("join again");
    assert_eq!(again.size, 2);
    assert_eq!(
        (a.stats.cluster_memberships(), b.stats.cluster_memberships()),
        ((0, 1), (1, 0))
    );
    // Payloads at the limit, back to back, both ways: the link cuts its batches to fit.
    let big = |i: u8| vec![i; quicmatch_protocol::MAX_RELIABLE_PAYLOAD];
    for i in 0..4u8 {
        bob.send_match_data(m.match_id, 1, big(i), true, None)
            .await
            .expect("send");
        alice
            .send_match_data(m.match_id, 2, big(i), true, None)
            .await
            .expect("send");
    }
    for i in 0..4u8 {
        assert_eq!(data(&alice, "bob's large data").await.data, big(i));
        assert_eq!(data(&bob, "alice's large data").await.data, big(i));
    }
    assert_eq!(a.stats.cluster_memberships(), (0, 1), "no link was reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_cross_node_requests_say_so_and_local_play_goes_on() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let a = TestServer::start_with(node_config(&nats.url(), "node-a")).await;
    let b = TestServer::start_with(node_config(&nats.url(), "node-b")).await;
    sees(&b.stats, &["node-a", "node-b"], "b sees a").await;
    let alice = a.client("alice").await;
    let bob = b.client("bob").await;
    let carol = b.client("carol").await;
    let on_a = alice.create_match(None).await.expect("create on a");
    let on_b = bob.create_match(None).await.expect("create on b");
    nats.stop();
    // A match of another node, a name: the cluster is needed, and says it is not there.
    for err in [
        carol
            .join_match(on_a.match_id)
            .await
            .expect_err("remote join"),
        carol
            .create_match(Some("duel"))
            .await
            .expect_err("named create"),
    ] {
        assert_eq!(err.code(), Some(ErrorCode::CLUSTER_UNAVAILABLE), "{err}");
    }
    // What is local works as ever.
    carol.join_match(on_b.match_id).await.expect("local join");
    presence(next_event(&bob, "carol joins").await);
    carol
        .send_match_data(on_b.match_id, 1, b"still here".to_vec(), true, None)
        .await
        .expect("send");
    assert_eq!(&data(&bob, "local data").await.data[..], b"still here");
}
