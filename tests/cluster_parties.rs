//! Parties across the nodes of a cluster, on a real `nats-server -js`: players homed on
//! three nodes join one party and see what its members on one node see (snapshots,
//! presence, data both ways, leadership, label, removal); a remote leader matchmakes the
//! party with a solo on a third node and all meet in one match by the token; closed
//! parties take requests from other nodes; a player that ends its session leaves the
//! party on its host; and a node killed with SIGKILL closes its parties for players
//! elsewhere, while its players leave the parties of the others. A home keeps one
//! session in at most 64 parties of other nodes.
//!
//! The killed node runs as this test binary started again with [`CHILD`] set: only
//! [`server_process`] then does anything, and it serves until it is killed.

mod common;

use std::time::Duration;

use common::{
    assert_no_event,
    cluster::{quick_node, sees, ChildNode},
    eventually,
    nats::Nats,
    next_event,
    party::{presence_change, snapshot},
    TestServer, TEST_TIMEOUT,
};
use quicmatch_client::{ErrorCode, Event, MatchmakerMatched, PartyId, Presence, Socket};
use tokio::time::timeout;

/// Set (to `URL|NAME|DIR`) in the killed node's environment.
const CHILD: &str = "QUICMATCH_CLUSTER_PARTIES_TEST_NODE";

/// The killed node (does nothing unless started by a test with [`CHILD`] set).
#[test]
fn server_process() {
    common::cluster::serve_child(CHILD);
}

/// `node-a`, `node-b` and `node-c`, once each sees all three.
async fn three_nodes(url: &str) -> (TestServer, TestServer, TestServer) {
    let a = quick_node(url, "node-a").await;
    let b = quick_node(url, "node-b").await;
    let c = quick_node(url, "node-c").await;
    let all = ["node-a", "node-b", "node-c"];
    for s in [&a, &b, &c] {
        sees(&s.stats, &all, "each sees all three").await;
    }
    (a, b, c)
}

fn leader_of(event: Event) -> Presence {
    match event {
        Event::PartyLeader { presence, .. } => presence,
        other => panic!("expected a new leader, got {other:?}"),
    }
}

fn party_data(event: Event) -> (Presence, i64, Vec<u8>) {
    match event {
        Event::PartyData {
            sender,
            op_code,
            data,
            ..
        } => (sender, op_code, data.to_vec()),
        other => panic!("expected party data, got {other:?}"),
    }
}

fn closed(event: Event, party: PartyId) -> String {
    match event {
        Event::PartyClose { party_id, reason } => {
            assert_eq!(party_id, party);
            reason
        }
        other => panic!("expected the party to close, got {other:?}"),
    }
}

/// The next matchmaker result on `who`, skipping other events.
async fn matched(who: &Socket, what: &str) -> MatchmakerMatched {
    loop {
        match timeout(TEST_TIMEOUT, who.next_event()).await {
            Ok(Some(Event::MatchmakerMatched(m))) => return m,
            Ok(Some(_)) => {}
            Ok(None) => panic!("{what}: socket closed"),
            Err(_) => panic!("{what}: no result in time"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_spans_three_nodes_and_matchmakes_with_a_solo() {
    let Some(nats) = Nats::start() else { return };
    let (a, b, c) = three_nodes(&nats.url()).await;
    let alice = a.client("alice").await;
    let bob = b.client("bob").await;
    let carol = c.client("carol").await;
    let party = alice.create_party(true, 4).await.expect("create on a");
    let id = party.party_id;

    // Bob, homed on b, joins the party a hosts, as he would on one node.
    bob.join_party(id).await.expect("bob joins from b");
    let snap = snapshot(next_event(&bob, "bob's snapshot").await);
    assert_eq!(snap.presences, vec![alice.presence(), bob.presence()]);
    assert_eq!(snap.leader, alice.presence());
    assert_eq!(snap.self_presence, bob.presence());
    let (joins, _) = presence_change(next_event(&alice, "bob joins").await);
    assert_eq!(joins, vec![bob.presence()]);
    let again = bob.join_party(id).await.expect_err("twice");
    assert_eq!(again.code(), Some(ErrorCode::PARTY_ALREADY_MEMBER));
    assert_eq!(a.stats.cluster_party_memberships(), (0, 1));
    assert_eq!(b.stats.cluster_party_memberships(), (1, 0));

    // Carol, on c, too: both others hear it.
    carol.join_party(id).await.expect("carol joins from c");
    snapshot(next_event(&carol, "carol's snapshot").await);
    for who in [&alice, &bob] {
        let (joins, _) = presence_change(next_event(who, "carol joins").await);
        assert_eq!(joins, vec![carol.presence()]);
    }

    // Data both ways, each sender's in order, never back to the sender.
    for n in 0..3u8 {
        bob.send_party_data(id, 7, vec![n])
            .await
            .expect("bob sends");
    }
    for n in 0..3u8 {
        for who in [&alice, &carol] {
            assert_eq!(
                party_data(next_event(who, "bob's data").await),
                (bob.presence(), 7, vec![n])
            );
        }
    }
    // Only one sender's order is kept: Alice sends once Bob's data has arrived.
    alice
        .send_party_data(id, 8, vec![9])
        .await
        .expect("alice sends");
    for who in [&bob, &carol] {
        assert_eq!(
            party_data(next_event(who, "alice's data").await),
            (alice.presence(), 8, vec![9])
        );
    }

    // Leadership passes to Bob on b; he leads from there.
    alice
        .promote_party_member(id, bob.presence().session_id)
        .await
        .expect("promote");
    for who in [&alice, &bob, &carol] {
        assert_eq!(
            leader_of(next_event(who, "new leader").await),
            bob.presence()
        );
    }
    let not_leader = alice
        .update_party(id, false)
        .await
        .expect_err("alice no longer leads");
    assert_eq!(not_leader.code(), Some(ErrorCode::PARTY_NOT_LEADER));
    bob.update_party_label(id, Some("squad"))
        .await
        .expect("label");
    for who in [&alice, &bob, &carol] {
        match next_event(who, "label").await {
            Event::PartyUpdate { label, .. } => assert_eq!(label.as_deref(), Some("squad")),
            other => panic!("unexpected {other:?}"),
        }
    }

    // Bob removes Carol: she hears the close, the others her leaving.
    bob.remove_party_member(id, carol.presence().session_id)
        .await
        .expect("remove");
    for who in [&alice, &bob] {
        let (_, leaves) = presence_change(next_event(who, "carol leaves").await);
        assert_eq!(leaves, vec![carol.presence()]);
    }
    assert_eq!(
        closed(next_event(&carol, "carol removed").await, id),
        "removed by the leader"
    );
    let gone = carol
        .send_party_data(id, 1, vec![1])
        .await
        .expect_err("no longer a member");
    assert!(
        matches!(
            gone.code(),
            Some(ErrorCode::PARTY_NOT_MEMBER | ErrorCode::PARTY_NOT_FOUND)
        ),
        "{gone:?}"
    );
    eventually("c forgets carol's party", || {
        c.stats.cluster_party_memberships() == (0, 0)
    })
    .await;

    // Bob, the leader on b, matchmakes the party (hosted on a) with Dave, a solo on c.
    let dave = c.client("dave").await;
    let ticket = bob
        .add_matchmaker_party(id, "*", 3, 3)
        .await
        .expect("party ticket");
    match next_event(&alice, "the party's ticket").await {
        Event::PartyMatchmakerTicket { ticket: t, .. } => assert_eq!(t, ticket),
        other => panic!("unexpected {other:?}"),
    }
    let solo = dave.add_matchmaker("*", 3, 3).await.expect("solo ticket");
    let got = matched(&dave, "dave's result").await;
    assert_eq!(got.ticket, solo);
    assert_eq!(got.users.len(), 3);
    let token = got.token.clone().expect("token");
    for (who, name) in [(&alice, "alice"), (&bob, "bob")] {
        let m = matched(who, name).await;
        assert_eq!(m.ticket, ticket, "{name} hears the party's ticket");
        assert_eq!(m.token.as_deref(), Some(token.as_str()));
    }
    let joined = [
        alice.join_match_token(&token).await.expect("alice joins"),
        bob.join_match_token(&token).await.expect("bob joins"),
        dave.join_match_token(&token).await.expect("dave joins"),
    ];
    assert!(joined.iter().all(|m| m.match_id == joined[0].match_id));
    assert_eq!(joined[2].size, 3, "one match of the three");

    // Bob leaves; Alice leads again, alone, and closes the party.
    bob.leave_party(id).await.expect("bob leaves");
    let mut left = false;
    let mut leads = false;
    while !(left && leads) {
        match next_event(&alice, "bob leaves").await {
            Event::PartyPresence { leaves, .. } => {
                assert_eq!(leaves, vec![bob.presence()]);
                left = true;
            }
            Event::PartyLeader { presence, .. } => {
                assert_eq!(presence, alice.presence());
                leads = true;
            }
            // The match's own events.
            Event::MatchPresence(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    eventually("a and b forget bob's membership", || {
        a.stats.cluster_party_memberships() == (0, 0)
            && b.stats.cluster_party_memberships() == (0, 0)
    })
    .await;
    let err = bob.leave_party(PartyId::new_random()).await;
    assert!(
        err.is_ok(),
        "leaving a party one is not in succeeds: {err:?}"
    );
    let err = bob
        .join_party(PartyId::new_random())
        .await
        .expect_err("no such party");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_NOT_FOUND));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_party_takes_requests_from_other_nodes() {
    let Some(nats) = Nats::start() else { return };
    let a = quick_node(&nats.url(), "node-a").await;
    let b = quick_node(&nats.url(), "node-b").await;
    for s in [&a, &b] {
        sees(&s.stats, &["node-a", "node-b"], "both see both").await;
    }
    let leader = a.client("leader").await;
    let bob = b.client("bob").await;
    let erin = b.client("erin").await;
    let party = leader.create_party(false, 4).await.expect("create");
    let id = party.party_id;
    for (who, name) in [(&bob, "bob"), (&erin, "erin")] {
        who.join_party(id).await.expect("asks to join");
        match next_event(&leader, name).await {
            Event::PartyJoinRequest { presences, .. } => {
                assert_eq!(presences, vec![who.presence()]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let asked = leader.list_party_join_requests(id).await.expect("list");
    assert_eq!(asked, vec![bob.presence(), erin.presence()]);
    let not_leader = bob
        .list_party_join_requests(id)
        .await
        .expect_err("bob does not lead");
    assert_eq!(not_leader.code(), Some(ErrorCode::PARTY_NOT_MEMBER));
    leader
        .accept_party_member(id, bob.presence().session_id)
        .await
        .expect("accept");
    let snap = snapshot(next_event(&bob, "bob admitted").await);
    assert_eq!(snap.presences, vec![leader.presence(), bob.presence()]);
    presence_change(next_event(&leader, "bob joins").await);
    leader
        .remove_party_member(id, erin.presence().session_id)
        .await
        .expect("decline");
    assert_eq!(
        closed(next_event(&erin, "erin declined").await, id),
        "join request declined"
    );

    // Bob's session ends: he leaves the party on a at once.
    bob.close().await;
    let (_, leaves) = presence_change(next_event(&leader, "bob's session ends").await);
    assert_eq!(leaves, vec![bob.presence()]);
    eventually("a forgets bob", || {
        a.stats.cluster_party_memberships() == (0, 0)
    })
    .await;
    // The leader closes the party: the only other (erin, declined) hears nothing more.
    leader.close_party(id).await.expect("close");
    assert_no_event(&erin, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_closes_its_parties_and_its_players_leave() {
    let Some(nats) = Nats::start() else { return };
    let a = quick_node(&nats.url(), "node-a").await;
    let mut d = ChildNode::spawn(CHILD, &nats.url(), "node-d");
    sees(&a.stats, &["node-a", "node-d"], "a sees d join").await;
    let dave = d.client("dave").await;
    let erin = d.client("erin").await;
    let alice = a.client("alice").await;
    let hosted_by_d = dave.create_party(true, 4).await.expect("create on d");
    alice
        .join_party(hosted_by_d.party_id)
        .await
        .expect("alice joins d's party");
    snapshot(next_event(&alice, "alice's snapshot").await);
    let hosted_by_a = alice.create_party(true, 4).await.expect("create on a");
    erin.join_party(hosted_by_a.party_id)
        .await
        .expect("erin joins a's party");
    let (joins, _) = presence_change(next_event(&alice, "erin joins").await);
    assert_eq!(joins, vec![erin.presence()]);
    assert_eq!(a.stats.cluster_party_memberships(), (1, 1));

    // No goodbye: d is gone once its entry goes unrenewed.
    d.kill();
    let (mut ended, mut left) = (false, false);
    while !(ended && left) {
        match next_event(&alice, "d's loss").await {
            Event::PartyClose { party_id, reason } => {
                assert_eq!(party_id, hosted_by_d.party_id);
                assert_eq!(reason, "node lost");
                ended = true;
            }
            Event::PartyPresence {
                party_id, leaves, ..
            } => {
                assert_eq!(party_id, hosted_by_a.party_id);
                assert_eq!(leaves, vec![erin.presence()]);
                left = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(a.stats.cluster_party_memberships(), (0, 0));
    // Alice's own party goes on.
    let bob = a.client("bob").await;
    bob.join_party(hosted_by_a.party_id).await.expect("join");
    presence_change(next_event(&alice, "bob joins").await);
}

/// A home lets one session be in at most 64 parties of other nodes: the 65th join is
/// refused with `LIMIT_EXCEEDED` (each host would allow it), and a leave makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_in_at_most_64_parties_of_other_nodes() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let node = |name: &str| {
        let mut config = common::cluster::node_config(&url, name);
        config.party.max_per_session = 64;
        TestServer::start_with(config)
    };
    let (a, b, c) = (
        node("node-a").await,
        node("node-b").await,
        node("node-c").await,
    );
    let all = ["node-a", "node-b", "node-c"];
    for s in [&a, &b, &c] {
        sees(&s.stats, &all, "all see all").await;
    }
    let (alice, bob, carol) = (
        a.client("alice").await,
        b.client("bob").await,
        c.client("carol").await,
    );
    // 33 parties on node-a and 32 on node-c: no host holds more than 64 of bob's.
    let mut parties = Vec::new();
    for i in 0..65 {
        let host = if i < 33 { &alice } else { &carol };
        parties.push(host.create_party(true, 4).await.expect("create").party_id);
    }
    for (i, party) in parties.iter().take(64).enumerate() {
        bob.join_party(*party)
            .await
            .unwrap_or_else(|e| panic!("join {i}: {e}"));
    }
    eventually("bob in 64 parties elsewhere", || {
        b.stats.cluster_party_memberships().0 == 64
    })
    .await;
    let err = bob.join_party(parties[64]).await.expect_err("a 65th");
    assert_eq!(err.code(), Some(ErrorCode::LIMIT_EXCEEDED), "{err}");
    bob.leave_party(parties[0]).await.expect("leave one");
    bob.join_party(parties[64])
        .await
        .expect("room for the 65th");
    eventually("still 64", || b.stats.cluster_party_memberships().0 == 64).await;
}
