//! Names and listings across the nodes of a cluster, on a real `nats-server -js`: one
//! match name is one match in the whole cluster (two nodes creating it at once
//! included), a name is free again once its match ended everywhere, and a listing from
//! any node shows every node's matches in the one listing order.

mod common;

use std::time::Duration;

use common::{cluster::three_nodes, eventually, nats::Nats, next_event};
use quicmatch_client::{ErrorCode, Event, MatchId, MatchOptions, MatchPresenceEvent};

fn presence(event: Event) -> MatchPresenceEvent {
    match event {
        Event::MatchPresence(p) => p,
        other => panic!("expected a presence event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_is_one_match_across_the_cluster() {
    let Some(nats) = Nats::start() else { return };
    let (a, b, c) = three_nodes(&nats).await;
    let alice = a.client("alice").await;
    let bob = b.client("bob").await;
    let carol = c.client("carol").await;
    let dave = b.client("dave").await;
    let duel = alice
        .create_match(Some("duel"))
        .await
        .expect("alice creates duel");
    let same = bob
        .create_match(Some("duel"))
        .await
        .expect("bob creates duel");
    assert_eq!(same.match_id, duel.match_id);
    assert_eq!(same.size, 2, "bob joined alice's");
    presence(next_event(&alice, "bob joins the duel").await);
    // Two nodes creating a new name at once still make one match.
    let (x, y) = tokio::join!(
        carol.create_match(Some("arena")),
        dave.create_match(Some("arena"))
    );
    let (x, y) = (x.expect("carol"), y.expect("dave"));
    assert_eq!(x.match_id, y.match_id);
    assert_eq!(x.size.max(y.size), 2, "one of them joined the other's");
    // Once the duel is over everywhere, the name makes a new match, and it is still one
    // match for everyone who asks for it.
    bob.leave_match(duel.match_id).await.expect("leave");
    alice.leave_match(duel.match_id).await.expect("leave");
    let again = carol.create_match(Some("duel")).await.expect("carol");
    assert_eq!(again.match_id, duel.match_id, "the same name, the same id");
    assert_eq!(again.size, 1, "a new match");
    let joined = alice.create_match(Some("duel")).await.expect("alice again");
    assert_eq!(joined.size, 2);
    loop {
        let p = presence(next_event(&carol, "alice joins the new duel").await);
        if p.match_id == duel.match_id {
            assert_eq!(p.joins, vec![alice.presence()]);
            break;
        }
    }
    alice.leave_match(duel.match_id).await.expect("leave");
    carol.leave_match(duel.match_id).await.expect("leave");
    let sa = a.stats.clone();
    eventually("the duel's host has no match left", || {
        sa.matches().matches == 0
    })
    .await;
    // Its host gives up the name once the match ended: the next duel lives where it is
    // created (asked until the claim is released, a grace after the end).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let hosted_on_c = c.stats.matches().matches;
    loop {
        let m = carol.create_match(Some("duel")).await.expect("carol");
        if c.stats.matches().matches == hosted_on_c + 1 {
            assert_eq!(m.size, 1);
            break;
        }
        carol.leave_match(m.match_id).await.expect("leave");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the name was never given up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_shows_every_nodes_matches_in_one_order() {
    let Some(nats) = Nats::start() else { return };
    let (a, b, c) = three_nodes(&nats).await;
    let alice = a.client("alice").await;
    let bob = b.client("bob").await;
    let erin = b.client("erin").await;
    let carol = c.client("carol").await;
    let on_a = alice
        .create_match_with(None, MatchOptions::default().label(r#"{"mode":"duel"}"#))
        .await
        .expect("create on a");
    let on_b = bob
        .create_match_with(None, MatchOptions::default().label(r#"{"mode":"duel"}"#))
        .await
        .expect("create on b");
    erin.join_match(on_b.match_id).await.expect("join on b");
    bob.create_match_with(None, MatchOptions::default().label(r#"{"mode":"ffa"}"#))
        .await
        .expect("another on b");
    carol
        .create_match_with(None, MatchOptions::default().private(true))
        .await
        .expect("a private one on c");
    // From c: both duels, fuller first; the ffa only without the filter; no private.
    let duels = carol
        .list_matches()
        .query("+label.mode:duel")
        .await
        .expect("list");
    let ids: Vec<MatchId> = duels.iter().map(|m| m.match_id).collect();
    assert_eq!(ids, vec![on_b.match_id, on_a.match_id]);
    let all = carol.list_matches().await.expect("list all");
    assert_eq!(all.len(), 3);
    let first = carol.list_matches().limit(1).await.expect("one");
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].match_id, on_b.match_id,
        "the fullest, from another node"
    );
    // A listed match of another node is joined by its id.
    carol
        .join_match(on_a.match_id)
        .await
        .expect("join from the listing");
    // A bad query is this node's answer, at once.
    let err = carol
        .list_matches()
        .query("+label.mode:")
        .await
        .expect_err("bad query");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
}
