//! Match lifecycle: create, join, join twice, leave, last leave ends the match, named
//! join-or-create, limits.

mod common;

use common::{eventually, next_event, TestServer};
use quicmatch_client::{ErrorCode, Event, MatchId};

#[tokio::test]
async fn create_then_join_by_id() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let created = alice.create_match(None).await.expect("create");
    assert_eq!(created.size, 1);
    assert_eq!(created.presences, vec![alice.presence()]);
    assert_eq!(created.self_presence, alice.presence());

    let joined = bob.join_match(created.match_id).await.expect("join");
    assert_eq!(joined.match_id, created.match_id);
    assert_eq!(joined.size, 2, "size includes self");
    assert_eq!(joined.presences, vec![alice.presence(), bob.presence()]);
    assert_eq!(joined.self_presence, bob.presence());
    assert_eq!(server.stats.matches().matches, 1);
    assert_eq!(server.stats.matches().presences, 2);
}

#[tokio::test]
async fn random_ids_are_unique() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let a = alice.create_match(None).await.expect("create");
    let b = alice.create_match(None).await.expect("create");
    assert_ne!(a.match_id, b.match_id);
}

#[tokio::test]
async fn joining_twice_is_idempotent() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    match next_event(&alice, "bob's join").await {
        Event::MatchPresence(p) => assert_eq!(p.joins, vec![bob.presence()]),
        other => panic!("unexpected {other:?}"),
    }
    let again = bob.join_match(m.match_id).await.expect("join again");
    assert_eq!(again.size, 2);
    let again = alice
        .join_match(m.match_id)
        .await
        .expect("creator joins again");
    assert_eq!(again.presences.len(), 2);
    common::assert_no_event(&alice, std::time::Duration::from_millis(200)).await;
    assert_eq!(server.stats.matches().presences, 2);
}

#[tokio::test]
async fn unknown_match_is_not_found() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let err = alice
        .join_match(MatchId::new_random())
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Some(ErrorCode::MATCH_NOT_FOUND));
}

#[tokio::test]
async fn malformed_ids_do_not_parse() {
    let err = "not-a-match".parse::<MatchId>().expect_err("malformed");
    assert!(err.to_string().contains("invalid match id"));
}

#[tokio::test]
async fn last_leave_ends_the_match_for_good() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    alice.leave_match(m.match_id).await.expect("leave");
    assert_eq!(server.stats.matches().matches, 1);
    bob.leave_match(m.match_id).await.expect("leave");
    assert_eq!(server.stats.matches().matches, 0);
    let err = alice.join_match(m.match_id).await.expect_err("ended");
    assert_eq!(err.code(), Some(ErrorCode::MATCH_NOT_FOUND));
    // Leaving again (or leaving a match never joined) is still acknowledged.
    bob.leave_match(m.match_id).await.expect("leave again");
    bob.leave_match(MatchId::new_random())
        .await
        .expect("leave unknown");
}

#[tokio::test]
async fn named_match_is_join_or_create() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let a = alice.create_match(Some("lobby-7")).await.expect("create");
    assert_eq!(a.size, 1);
    let b = bob
        .create_match(Some("lobby-7"))
        .await
        .expect("create same name");
    assert_eq!(a.match_id, b.match_id);
    assert_eq!(b.size, 2);
    assert_eq!(b.presences, vec![alice.presence(), bob.presence()]);
    let other = bob.create_match(Some("lobby-8")).await.expect("other name");
    assert_ne!(other.match_id, a.match_id);
    let err = alice
        .create_match(Some(&"n".repeat(129)))
        .await
        .expect_err("long name");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    let err = alice.create_match(Some("")).await.expect_err("empty name");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
}

#[tokio::test]
async fn full_matches_reject_and_session_limits_apply() {
    let mut config = common::test_config();
    config.matches.max_size = 2;
    config.matches.max_per_session = 2;
    let server = TestServer::start_with(config).await;
    let a = server.client("a").await;
    let b = server.client("b").await;
    let c = server.client("c").await;
    let m = a.create_match(None).await.expect("create");
    b.join_match(m.match_id).await.expect("join");
    let err = c.join_match(m.match_id).await.expect_err("full");
    assert_eq!(err.code(), Some(ErrorCode::MATCH_JOIN_REJECTED));
    a.create_match(None).await.expect("second match");
    let err = a.create_match(None).await.expect_err("third match");
    assert_eq!(err.code(), Some(ErrorCode::LIMIT_EXCEEDED));
    // Re-joining a match already in does not count against the limit.
    a.join_match(m.match_id).await.expect("rejoin");
}

#[tokio::test]
async fn disconnect_cleans_up_matches() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    alice.create_match(None).await.expect("create");
    alice.create_match(Some("named")).await.expect("create");
    assert_eq!(server.stats.matches().matches, 2);
    alice.close().await;
    let stats = server.stats.clone();
    eventually("matches to end", || stats.matches().matches == 0).await;
    eventually("connections to drop", || stats.connections() == 0).await;
}
