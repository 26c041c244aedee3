//! One matchmaker pool across the nodes of a cluster, on a real `nats-server -js`:
//! 200 tickets added through three nodes all match, each exactly once, players from
//! different nodes meet in one match by their token, on the node homing most of the
//! group; a cancelled ticket never matches; and when the leader (a node in a child
//! process) is killed with SIGKILL, another node takes the lease within it and every
//! ticket of the surviving nodes still matches exactly once.
//!
//! The killed node runs as this test binary started again with [`CHILD`] set: only
//! [`server_process`] then does anything, and it serves until it is killed.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use common::{
    assert_no_event,
    cluster::{node_config, quick_node, sees, ChildNode},
    eventually,
    nats::Nats,
    proxy::{Impairment, Proxy},
    TestServer, TEST_TIMEOUT,
};
use quicmatch::runtime::Properties;
use quicmatch_client::{Event, MatchmakerMatched, Socket, TicketId};
use tokio::time::timeout;

/// Set (to `URL|NAME|DIR`) in the killed node's environment.
const CHILD: &str = "QUICMATCH_CLUSTER_MATCHMAKER_TEST_NODE";

/// The killed node (does nothing unless started by a test with [`CHILD`] set).
#[test]
fn server_process() {
    common::cluster::serve_child(CHILD);
}

/// `node-a` and `node-b`, once each sees both.
async fn two_nodes(url: &str) -> (TestServer, TestServer) {
    let a = quick_node(url, "node-a").await;
    let b = quick_node(url, "node-b").await;
    for s in [&a, &b] {
        sees(&s.stats, &["node-a", "node-b"], "both see both").await;
    }
    (a, b)
}

/// Waits for `count` matchmaker results on `who`, skipping other events.
async fn results(who: &Socket, count: usize, what: &str) -> Vec<MatchmakerMatched> {
    let mut got = Vec::new();
    while got.len() < count {
        match timeout(TEST_TIMEOUT, who.next_event()).await {
            Ok(Some(Event::MatchmakerMatched(m))) => got.push(m),
            Ok(Some(_)) => {}
            Ok(None) => panic!("{what}: socket closed"),
            Err(_) => panic!("{what}: {} of {count} results in time", got.len()),
        }
    }
    got
}

/// Every ticket in `results` appears once, and each group's users all heard it with
/// the same token.
fn once_each(results: &[MatchmakerMatched]) -> HashMap<TicketId, String> {
    let mut tokens = HashMap::new();
    for m in results {
        let token = m.token.clone().expect("a token");
        assert!(
            tokens.insert(m.ticket, token).is_none(),
            "ticket {} matched twice",
            m.ticket
        );
    }
    tokens
}

/// Waits until some node (the only one running) holds the matchmaker's lease, read
/// straight from its bucket.
async fn holds_the_lease(url: &str) {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        if let Ok(kv) = js.get_key_value("qm_quicmatch_leader").await {
            if let Ok(Some(_)) = kv.entry("matchmaker").await {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first node takes the matchmaker's lease in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the key-value bucket `name` holds no message at all (no value, no
/// delete marker), read straight from its stream.
async fn bucket_empties(url: &str, name: &str) {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    let mut left = u64::MAX;
    while left > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} still holds {left} messages"
        );
        if let Ok(mut stream) = js.get_stream(format!("KV_{name}")).await {
            if let Ok(info) = stream.info().await {
                left = info.state.messages;
            }
        }
        if left > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tickets_through_three_nodes_match_once_each() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let (a, b, c) = (
        quick_node(&url, "node-a").await,
        quick_node(&url, "node-b").await,
        quick_node(&url, "node-c").await,
    );
    let all = ["node-a", "node-b", "node-c"];
    for s in [&a, &b, &c] {
        sees(&s.stats, &all, "every node sees all three").await;
    }
    let (sa, sb, sc) = (a.stats.clone(), b.stats.clone(), c.stats.clone());
    eventually("one node leads the matchmaker", || {
        [&sa, &sb, &sc]
            .iter()
            .filter(|s| s.cluster_leads_matchmaker())
            .count()
            == 1
    })
    .await;
    // 100 players spread over the nodes, two tickets each: one pool of 200.
    let servers = [&a, &b, &c];
    let mut players = Vec::new();
    for i in 0..100 {
        players.push(servers[i % 3].client(&format!("p{i}")).await);
    }
    // Everyone's first ticket, then everyone's second: the pool pairs the oldest
    // first, so the last two tickets are never one player's (who cannot be matched
    // with itself).
    let mut tickets: BTreeMap<TicketId, usize> = BTreeMap::new();
    for _ in 0..2 {
        for (i, p) in players.iter().enumerate() {
            let t = p.add_matchmaker("*", 2, 2).await.expect("ticket");
            tickets.insert(t, i);
        }
    }
    assert_eq!(tickets.len(), 200);
    let mut all_results = Vec::new();
    let mut seen_by: HashMap<TicketId, usize> = HashMap::new();
    for (i, p) in players.iter().enumerate() {
        for m in results(p, 2, &format!("player {i}")).await {
            assert_eq!(
                tickets.get(&m.ticket),
                Some(&i),
                "a result for its own ticket"
            );
            assert_eq!(m.users.len(), 2);
            seen_by.insert(m.ticket, i);
            all_results.push(m);
        }
    }
    let tokens = once_each(&all_results);
    assert_eq!(tokens.len(), 200, "every ticket matched");
    // Each group's two users got one token: 100 groups.
    let mut groups: HashMap<&str, usize> = HashMap::new();
    for t in tokens.values() {
        *groups.entry(t.as_str()).or_default() += 1;
    }
    assert_eq!(groups.len(), 100);
    assert!(groups.values().all(|n| *n == 2));
    for p in &players {
        assert_no_event(p, Duration::from_millis(50)).await;
    }
    for s in [&a, &b, &c] {
        assert_eq!(
            s.stats.matchmaker().tickets,
            0,
            "no ticket left at its home"
        );
    }
    // Every ticket's key was deleted, and the leader purges the delete markers: the
    // bucket does not keep one per ticket ever made.
    bucket_empties(&url, "qm_quicmatch_tickets").await;

    // A group whose two players are on different nodes meets in one match.
    let cross = all_results
        .iter()
        .find(|m| {
            let home = |s: &quicmatch_client::Presence| {
                players
                    .iter()
                    .position(|p| p.presence().session_id == s.session_id)
            };
            let (x, y) = (home(&m.users[0].presence), home(&m.users[1].presence));
            matches!((x, y), (Some(x), Some(y)) if x % 3 != y % 3)
        })
        .expect("some group spans two nodes");
    let token = cross.token.clone().expect("token");
    let who: Vec<&Socket> = cross
        .users
        .iter()
        .filter_map(|u| {
            players
                .iter()
                .find(|p| p.presence().session_id == u.presence.session_id)
        })
        .collect();
    let first = who[0].join_match_token(&token).await.expect("first joins");
    let second = who[1].join_match_token(&token).await.expect("second joins");
    assert_eq!(first.match_id, second.match_id, "one match");
    assert_eq!(first.size.max(second.size), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_ticket_never_matches() {
    let Some(nats) = Nats::start() else { return };
    let (a, b) = two_nodes(&nats.url()).await;
    let alice = a.client("alice").await;
    let bob = b.client("bob").await;
    let carol = b.client("carol").await;
    // Only alice and bob ask for duels; bob cancels his before anyone else asks.
    let t = bob
        .add_matchmaker("+properties.mode:duel", 2, 2)
        .string_property("mode", "duel")
        .await
        .expect("bob's ticket");
    bob.remove_matchmaker(t).await.expect("cancel");
    let ta = alice
        .add_matchmaker("+properties.mode:duel", 2, 2)
        .string_property("mode", "duel")
        .await
        .expect("alice's ticket");
    // No duel without bob.
    assert_no_event(&alice, Duration::from_millis(800)).await;
    assert_no_event(&bob, Duration::from_millis(50)).await;
    let tc = carol
        .add_matchmaker("+properties.mode:duel", 2, 2)
        .string_property("mode", "duel")
        .await
        .expect("carol's ticket");
    let m = results(&alice, 1, "alice meets carol").await.remove(0);
    assert_eq!(m.ticket, ta);
    let other = m
        .users
        .iter()
        .find(|u| u.presence.session_id != alice.presence().session_id);
    assert_eq!(
        other.map(|u| u.presence.session_id),
        Some(carol.presence().session_id)
    );
    assert_eq!(results(&carol, 1, "carol meets alice").await[0].ticket, tc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_no_ticket_matches_twice() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    // The child node joins first, so it takes the lease.
    let mut d = ChildNode::spawn(CHILD, &url, "node-d");
    holds_the_lease(&url).await;
    let a = quick_node(&url, "node-a").await;
    let b = quick_node(&url, "node-b").await;
    for s in [&a, &b] {
        sees(&s.stats, &["node-a", "node-b", "node-d"], "a and b see d").await;
    }
    assert!(!a.stats.cluster_leads_matchmaker() && !b.stats.cluster_leads_matchmaker());
    let mut players = Vec::new();
    for i in 0..40 {
        let server = if i % 2 == 0 { &a } else { &b };
        players.push(server.client(&format!("p{i}")).await);
    }
    let mut tickets = HashMap::new();
    for (i, p) in players.iter().enumerate() {
        let t = p.add_matchmaker("*", 2, 2).await.expect("ticket");
        tickets.insert(t, i);
    }
    // Killed while its passes may be half-way through the pool.
    d.kill();
    let (sa, sb) = (a.stats.clone(), b.stats.clone());
    eventually("a or b takes the lease", || {
        sa.cluster_leads_matchmaker() || sb.cluster_leads_matchmaker()
    })
    .await;
    let mut all = Vec::new();
    for (i, p) in players.iter().enumerate() {
        let got = results(p, 1, &format!("player {i}")).await;
        assert_eq!(tickets.get(&got[0].ticket), Some(&i));
        all.extend(got);
    }
    let tokens = once_each(&all);
    assert_eq!(tokens.len(), 40, "every ticket of a and b matched");
    // Each player matched once.
    for p in &players {
        assert_no_event(p, Duration::from_millis(50)).await;
    }
    // The groups' tokens work wherever their players are.
    let m = &all[0];
    let token = m.token.clone().expect("token");
    let mut sizes = Vec::new();
    for u in &m.users {
        let p = players
            .iter()
            .find(|p| p.presence().session_id == u.presence.session_id)
            .expect("a player of a or b");
        sizes.push(p.join_match_token(&token).await.expect("join").size);
    }
    assert_eq!(sizes.iter().max(), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_on_one_node_matches_a_solo_on_another() {
    let Some(nats) = Nats::start() else { return };
    let (a, b) = two_nodes(&nats.url()).await;
    let leader = a.client("leader").await;
    let member = a.client("member").await;
    let solo = b.client("solo").await;
    let party = leader.create_party(true, 4).await.expect("create");
    member.join_party(party.party_id).await.expect("join");
    let party_ticket = leader
        .add_matchmaker_party(party.party_id, "*", 3, 3)
        .await
        .expect("party ticket");
    let solo_ticket = solo.add_matchmaker("*", 3, 3).await.expect("solo ticket");
    let got = results(&solo, 1, "the solo's result").await.remove(0);
    assert_eq!(got.ticket, solo_ticket);
    assert_eq!(got.users.len(), 3);
    let token = got.token.clone().expect("token");
    for (who, name) in [(&leader, "leader"), (&member, "member")] {
        let m = results(who, 1, name).await.remove(0);
        assert_eq!(m.ticket, party_ticket, "{name} hears the party's ticket");
        assert_eq!(m.token.as_deref(), Some(token.as_str()));
        assert_eq!(m.users.len(), 3);
    }
    // The match lives where two of the three are: the solo joins it on node-a.
    let joined = [
        leader.join_match_token(&token).await.expect("leader joins"),
        member.join_match_token(&token).await.expect("member joins"),
        solo.join_match_token(&token).await.expect("solo joins"),
    ];
    assert!(joined.iter().all(|m| m.match_id == joined[0].match_id));
    assert_eq!(joined[2].size, 3);
    assert_eq!(a.stats.matches().matches, 1, "hosted on the party's node");
    assert_eq!(b.stats.matches().matches, 0);
}

/// A player whose connection goes silent is suspect on its home, and the leader, on
/// another node, skips its ticket until it is heard again; then it matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspect_players_ticket_waits_on_the_leader_until_heard_again() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let a = quick_node(&url, "node-a").await;
    eventually("node-a leads", || a.stats.cluster_leads_matchmaker()).await;
    let mut config = node_config(&url, "node-b");
    config.matchmaker.interval = Duration::from_millis(100);
    config.session.suspect_after = Duration::from_millis(500);
    config.session.idle_timeout = Duration::from_secs(30);
    let b = TestServer::start_with(config).await;
    for s in [&a, &b] {
        sees(&s.stats, &["node-a", "node-b"], "both see both").await;
    }
    let proxy = Proxy::start(b.addr, Impairment::CLEAN, 31).await;
    let mut bob_config = b.client_config("bob");
    bob_config.server = proxy.addr;
    let bob = timeout(TEST_TIMEOUT, Socket::connect(bob_config))
        .await
        .expect("connect in time")
        .expect("connect");
    bob.add_matchmaker("*", 2, 2).await.expect("bob's ticket");

    proxy.cut();
    eventually("bob suspect at home", || b.stats.suspect_sessions() == 1).await;
    eventually("the leader skips bob", || {
        a.stats.cluster_matchmaker_suspects() == 1
    })
    .await;
    let carol = a.client("carol").await;
    carol
        .add_matchmaker("*", 2, 2)
        .await
        .expect("carol's ticket");
    // Ten passes: no match with a silent player.
    assert_no_event(&carol, Duration::from_secs(1)).await;

    proxy.restore();
    eventually("bob heard again", || b.stats.suspect_sessions() == 0).await;
    let m = results(&carol, 1, "carol meets bob").await.remove(0);
    assert!(
        m.users
            .iter()
            .any(|u| u.presence.session_id == bob.presence().session_id),
        "carol's partner is bob: {:?}",
        m.users
    );
    results(&bob, 1, "bob meets carol").await;
    eventually("the leader holds no suspect", || {
        a.stats.cluster_matchmaker_suspects() == 0
    })
    .await;
}

/// A ticket the leader cannot read (its node takes larger groups than the leader's
/// config allows) is cancelled with the reason, not left waiting; tickets it can read
/// from the same node still match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_the_leader_cannot_read_is_cancelled_with_the_reason() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let mut config = node_config(&url, "node-a");
    config.matchmaker.interval = Duration::from_millis(100);
    config.matchmaker.max_count = 4;
    let a = TestServer::start_with(config).await;
    eventually("node-a leads", || a.stats.cluster_leads_matchmaker()).await;
    let b = quick_node(&url, "node-b").await;
    for s in [&a, &b] {
        sees(&s.stats, &["node-a", "node-b"], "both see both").await;
    }
    let bob = b.client("bob").await;
    let big = bob
        .add_matchmaker("*", 2, 8)
        .await
        .expect("node-b takes groups of 8");
    match timeout(TEST_TIMEOUT, bob.next_event()).await {
        Ok(Some(Event::MatchmakerTicketCancelled { ticket, reason })) => {
            assert_eq!(ticket, big);
            assert!(
                reason.contains("cannot read") && reason.contains('4'),
                "{reason}"
            );
        }
        other => panic!("expected the ticket cancelled, got {other:?}"),
    }
    let small = bob.add_matchmaker("*", 2, 2).await.expect("a duel");
    let carol = a.client("carol").await;
    carol.add_matchmaker("*", 2, 2).await.expect("carol's duel");
    assert_eq!(results(&bob, 1, "bob's duel").await[0].ticket, small);
    bucket_empties(&url, "qm_quicmatch_tickets").await;
}

/// Server code on node-a backfills a live match there; players on node-b fill its
/// seats through the one pool, each told the match's id, and join it there. The
/// backfill keeps the seats a group left (its home in step) until it is full, and one
/// whose match ends leaves the shared pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_on_one_node_takes_players_from_another() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let (a, b) = two_nodes(&url).await;
    let host = a.client("host").await;
    let live = host.create_match(None).await.expect("match");
    let mm = a.runtime.matchmaker();
    let coop = Properties {
        strings: BTreeMap::from([("mode".to_owned(), "coop".to_owned())]),
        numbers: BTreeMap::new(),
    };
    mm.backfill(live.match_id, "+properties.mode:coop", 3, coop.clone())
        .expect("backfill");
    assert_eq!(a.stats.matchmaker().tickets, 1, "the backfill on its home");

    let mut players = Vec::new();
    for (i, name) in ["p1", "p2", "p3"].into_iter().enumerate() {
        let p = b.client(name).await;
        p.add_matchmaker("+properties.mode:coop", 2, 4)
            .string_property("mode", "coop")
            .await
            .expect("ticket");
        let m = results(&p, 1, name).await.remove(0);
        assert_eq!(
            m.match_id,
            Some(live.match_id),
            "{name} sent to the live match"
        );
        assert!(m.token.is_none());
        let joined = p
            .join_match(live.match_id)
            .await
            .expect("join across nodes");
        assert_eq!(joined.match_id, live.match_id);
        // The home keeps the seats left: two, one, then none (the backfill is gone).
        let left = 2 - i;
        eventually(&format!("{left} seats left on the home"), || {
            a.stats.matchmaker().tickets == usize::from(left > 0)
        })
        .await;
        players.push(p);
    }
    // Full: another coop player waits for company rather than a seat.
    let late = b.client("late").await;
    let t = late
        .add_matchmaker("+properties.mode:coop", 2, 4)
        .string_property("mode", "coop")
        .await
        .expect("ticket");
    assert_no_event(&late, Duration::from_millis(500)).await;
    late.remove_matchmaker(t).await.expect("cancel");
    bucket_empties(&url, "qm_quicmatch_tickets").await;

    // A backfill whose match ends leaves the shared pool.
    mm.backfill(live.match_id, "*", 2, Properties::default())
        .expect("backfill");
    eventually("shared", || a.stats.matchmaker().tickets == 1).await;
    host.leave_match(live.match_id).await.expect("leave");
    for p in &players {
        p.leave_match(live.match_id).await.expect("leave");
    }
    eventually("dropped with its match", || {
        a.stats.matchmaker().tickets == 0
    })
    .await;
    bucket_empties(&url, "qm_quicmatch_tickets").await;
}
