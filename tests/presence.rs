//! Presence events: exactly the expected joins and leaves, none when nothing changed,
//! and a disconnect is a leave.

mod common;

use std::time::Duration;

use common::{assert_no_event, next_event, TestServer};
use quicmatch_client::{Event, MatchPresenceEvent};

fn presence(event: Event) -> MatchPresenceEvent {
    match event {
        Event::MatchPresence(p) => p,
        other => panic!("expected a presence event, got {other:?}"),
    }
}

#[tokio::test]
async fn joins_and_leaves_go_to_the_others_only() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let carol = server.client("carol").await;
    let m = alice.create_match(None).await.expect("create");
    assert_no_event(&alice, Duration::from_millis(100)).await;

    bob.join_match(m.match_id).await.expect("join");
    let p = presence(next_event(&alice, "bob joins").await);
    assert_eq!(p.match_id, m.match_id);
    assert_eq!(p.joins, vec![bob.presence()]);
    assert!(p.leaves.is_empty());
    assert_no_event(&bob, Duration::from_millis(100)).await;

    carol.join_match(m.match_id).await.expect("join");
    for who in [&alice, &bob] {
        let p = presence(next_event(who, "carol joins").await);
        assert_eq!(p.joins, vec![carol.presence()]);
    }

    bob.leave_match(m.match_id).await.expect("leave");
    for who in [&alice, &carol] {
        let p = presence(next_event(who, "bob leaves").await);
        assert!(p.joins.is_empty());
        assert_eq!(p.leaves, vec![bob.presence()]);
    }
    assert_no_event(&bob, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn nothing_is_sent_when_nothing_changed() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    presence(next_event(&alice, "bob joins").await);
    bob.join_match(m.match_id).await.expect("join again");
    bob.create_match(None).await.expect("unrelated match");
    bob.leave_match(quicmatch_client::MatchId::new_random())
        .await
        .expect("leave unknown");
    assert_no_event(&alice, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn disconnect_is_a_leave_in_every_match() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let m1 = alice.create_match(None).await.expect("create");
    let m2 = alice.create_match(Some("second")).await.expect("create");
    bob.join_match(m1.match_id).await.expect("join");
    bob.join_match(m2.match_id).await.expect("join");
    presence(next_event(&alice, "join 1").await);
    presence(next_event(&alice, "join 2").await);
    let bob_presence = bob.presence();
    bob.close().await;
    let mut left = Vec::new();
    for _ in 0..2 {
        let p = presence(next_event(&alice, "bob's leave").await);
        assert_eq!(p.leaves, vec![bob_presence.clone()]);
        left.push(p.match_id);
    }
    left.sort();
    let mut expected = vec![m1.match_id, m2.match_id];
    expected.sort();
    assert_eq!(left, expected);
}

#[tokio::test]
async fn dropped_socket_is_a_leave() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    presence(next_event(&alice, "join").await);
    let bob_presence = bob.presence();
    drop(bob);
    let p = presence(next_event(&alice, "leave after drop").await);
    assert_eq!(p.leaves, vec![bob_presence]);
}

#[tokio::test]
async fn an_idle_timeout_is_a_leave() {
    let mut config = common::test_config();
    config.session.idle_timeout = Duration::from_secs(2);
    config.session.suspect_after = Duration::from_secs(1);
    // A timed-out session is held for its reconnect grace, then leaves.
    config.session.reconnect_grace = Duration::from_millis(500);
    let server = TestServer::start_with(config).await;
    let mut lively = server.client_config("alice");
    lively.keep_alive = Duration::from_millis(200);
    let alice = tokio::time::timeout(
        common::TEST_TIMEOUT,
        quicmatch_client::Socket::connect(lively),
    )
    .await
    .expect("waiting for connect")
    .expect("connect");
    // Bob sends no keep-alives, so the server hears nothing from him once he is idle.
    let mut silent = server.client_config("bob");
    silent.keep_alive = Duration::from_secs(60);
    // Alive but silent: it would resume the session itself once told it timed out.
    silent.reconnect_for = Duration::ZERO;
    let bob = tokio::time::timeout(
        common::TEST_TIMEOUT,
        quicmatch_client::Socket::connect(silent),
    )
    .await
    .expect("waiting for connect")
    .expect("connect");
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    presence(next_event(&alice, "join").await);
    let p = presence(next_event(&alice, "bob's idle-timeout leave").await);
    assert_eq!(p.leaves, vec![bob.presence()]);
    alice.ping().await.expect("alice stays connected");
}
