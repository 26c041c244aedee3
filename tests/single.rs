//! Nakama's single-session options: `single_socket` (a user's new connection replaces
//! the old one, which is told why), `single_match` (creating or joining a match leaves
//! the others) and `single_party` (creating or joining a party leaves the other). Each
//! is checked on, and off (the default), so neither result can pass by accident.

mod common;

use std::time::{Duration, Instant};

use common::{assert_no_event, next_event, TestServer, TEST_TIMEOUT};
use quicmatch::Config;
use quicmatch_client::{CloseCode, Event, PartyId, Presence, Socket};
use tokio::time::timeout;

async fn server(tune: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = common::test_config();
    tune(&mut config);
    TestServer::start_with(config).await
}

/// Skips events until `who` leaves party `party_id`.
async fn await_party_leave(socket: &Socket, party_id: PartyId, who: &Presence) {
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, socket.next_event()).await {
            Ok(Some(Event::PartyPresence {
                party_id: p,
                leaves,
                ..
            })) if p == party_id && leaves.contains(who) => return,
            Ok(Some(_)) => {}
            other => panic!("waiting for {} to leave the party: {other:?}", who.username),
        }
    }
}

#[tokio::test]
async fn single_socket_replaces_the_older_connection() {
    let server = server(|c| c.session.single_socket = true).await;
    let bob = server.client("bob").await;
    let old = server.client("alice").await;
    let m = old.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    next_event(&old, "bob joins").await;
    let old_presence = old.presence();

    // The same user connects again (same device id, so the same user id).
    let new = server.client("alice").await;
    assert_eq!(new.presence().user_id, old_presence.user_id);
    assert_ne!(new.presence().session_id, old_presence.session_id);
    let code = common::disconnect_code(&old, "the replacement").await;
    assert_eq!(code, Some(CloseCode::SESSION_REPLACED));
    // The old session left at once, not after a reconnect grace.
    common::await_match_leave(&bob, m.match_id, &old_presence, TEST_TIMEOUT).await;
    assert_eq!(server.stats.sessions(), 2);
    assert_eq!(server.stats.held_sessions(), 0);
    new.ping().await.expect("the new connection is served");
}

#[tokio::test]
async fn without_single_socket_a_user_may_have_several_connections() {
    let server = server(|_| {}).await;
    let first = server.client("alice").await;
    let second = server.client("alice").await;
    assert_eq!(first.presence().user_id, second.presence().user_id);
    assert_no_event(&first, Duration::from_millis(300)).await;
    first.ping().await.expect("both served");
    second.ping().await.expect("both served");
    assert_eq!(server.stats.sessions(), 2);
}

#[tokio::test]
async fn single_match_leaves_the_other_matches_on_create_and_join() {
    let server = server(|c| c.matches.single_match = true).await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let carol = server.client("carol").await;
    let first = bob.create_match(None).await.expect("create");
    alice.join_match(first.match_id).await.expect("join");
    next_event(&bob, "alice joins").await;

    // Creating a match leaves the first one.
    let second = alice.create_match(None).await.expect("create");
    common::await_match_leave(&bob, first.match_id, &alice.presence(), TEST_TIMEOUT).await;
    carol.join_match(second.match_id).await.expect("join");
    next_event(&alice, "carol joins").await;

    // Joining one leaves the second (carol sees it); carol's match lives on without her.
    let third = bob.create_match(Some("third")).await.expect("create");
    alice.join_match(third.match_id).await.expect("join");
    common::await_match_leave(&carol, second.match_id, &alice.presence(), TEST_TIMEOUT).await;
    assert_eq!(server.stats.matches().matches, 2, "carol's and the third");
    assert_eq!(server.stats.matches().presences, 3);
    // Alice only hears from the third match now.
    carol
        .send_match_data(second.match_id, 1, b"gone".to_vec(), true, None)
        .await
        .expect("send");
    bob.send_match_data(third.match_id, 1, b"here".to_vec(), true, None)
        .await
        .expect("send");
    loop {
        match next_event(&alice, "data of the third match").await {
            Event::MatchData(d) => {
                assert_eq!(d.match_id, third.match_id);
                break;
            }
            Event::MatchPresence(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn without_single_match_a_session_stays_in_several_matches() {
    let server = server(|_| {}).await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let first = bob.create_match(None).await.expect("create");
    alice.join_match(first.match_id).await.expect("join");
    next_event(&bob, "alice joins").await;
    alice.create_match(None).await.expect("second");
    assert_no_event(&bob, Duration::from_millis(300)).await;
    assert_eq!(server.stats.matches().presences, 3);
}

#[tokio::test]
async fn single_party_leaves_the_other_party_on_create_join_and_accept() {
    let server = server(|c| c.party.single_party = true).await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let carol = server.client("carol").await;
    let first = bob.create_party(true, 4).await.expect("create");
    alice.join_party(first.party_id).await.expect("join");
    next_event(&alice, "snapshot").await;
    next_event(&bob, "alice joins").await;

    // Creating a party leaves the first.
    let second = alice.create_party(true, 4).await.expect("create");
    await_party_leave(&bob, first.party_id, &alice.presence()).await;

    // Joining an open party leaves the one she leads (carol, a member, sees her go).
    carol.join_party(second.party_id).await.expect("join");
    next_event(&alice, "carol joins").await;
    let dave = server.client("dave").await;
    let third = dave.create_party(false, 4).await.expect("closed party");
    alice
        .join_party(first.party_id)
        .await
        .expect("join the open one again");
    await_party_leave(&carol, second.party_id, &alice.presence()).await;
    match next_event(&carol, "carol leads now").await {
        Event::PartyLeader { presence, .. } => assert_eq!(presence, carol.presence()),
        other => panic!("unexpected {other:?}"),
    }

    // A request to a closed party leaves nothing until the leader accepts it.
    alice.join_party(third.party_id).await.expect("request");
    assert_no_event(&carol, Duration::from_millis(200)).await;
    loop {
        if let Event::PartyJoinRequest { .. } = next_event(&dave, "the request").await {
            break;
        }
    }
    dave.accept_party_member(third.party_id, &alice.presence())
        .await
        .expect("accept");
    await_party_leave(&bob, first.party_id, &alice.presence()).await;
}

#[tokio::test]
async fn without_single_party_a_session_stays_in_several_parties() {
    let server = server(|_| {}).await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let first = bob.create_party(true, 4).await.expect("create");
    alice.join_party(first.party_id).await.expect("join");
    next_event(&bob, "alice joins").await;
    alice.create_party(true, 4).await.expect("second");
    assert_no_event(&bob, Duration::from_millis(300)).await;
    assert_eq!(server.stats.parties(), 2);
}
