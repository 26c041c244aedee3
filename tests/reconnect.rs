//! Reconnect grace: a client whose connection drops can come back with its session
//! token and carry on as the same session, with no leave/join flicker for the others;
//! after the grace period the usual leaves and cancellations happen.

mod common;

use std::time::Duration;

use common::{
    assert_no_event, client_via, next_event,
    proxy::{Impairment, Proxy},
    TestServer, TEST_TIMEOUT,
};
use quicmatch_client::{CloseCode, Credentials, Event, Match, Socket};
use tokio::time::timeout;

async fn start(grace: Duration) -> TestServer {
    let mut config = common::test_config();
    config.session.idle_timeout = Duration::from_secs(2);
    config.session.suspect_after = Duration::from_secs(1);
    config.session.reconnect_grace = grace;
    TestServer::start_with(config).await
}

/// Alice (steady) and Bob (behind `proxy`) in one match, Bob with a ticket.
async fn alice_and_fragile_bob(server: &TestServer, proxy: &Proxy) -> (Socket, Socket, Match) {
    let alice = client_via(server, None, "alice").await;
    let bob = client_via(server, Some(proxy), "bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    next_event(&alice, "bob joins").await;
    bob.add_matchmaker("*", 3, 3).await.expect("ticket");
    (alice, bob, m)
}

#[tokio::test]
async fn a_dropped_client_resumes_within_the_grace() {
    let server = start(Duration::from_secs(5)).await;
    let proxy = Proxy::start(server.addr, Impairment::CLEAN, 1).await;
    let (alice, bob, m) = alice_and_fragile_bob(&server, &proxy).await;
    let bob_presence = bob.presence();
    let token = bob.session().token.clone();

    proxy.cut();
    let stats = server.stats.clone();
    common::eventually("bob held", || stats.held_sessions() == 1).await;
    // Sent while bob is away: waits in his queue.
    alice
        .send_match_data(m.match_id, 3, b"while you were away".to_vec(), true, None)
        .await
        .expect("send");

    let back = common::resume(&server, "bob", token).await;
    assert!(back.session().resumed);
    assert_eq!(back.presence(), bob_presence, "same user, same session id");
    assert_eq!(back.session().matches.len(), 1);
    assert_eq!(back.session().matches[0].match_id, m.match_id);
    match next_event(&back, "the message sent while away").await {
        Event::MatchData(d) => assert_eq!(&d.data[..], b"while you were away"),
        other => panic!("unexpected {other:?}"),
    }
    // Datagrams flow both ways on the new connection.
    back.send_match_data(m.match_id, 4, b"back".to_vec(), false, None)
        .await
        .expect("send");
    match next_event(&alice, "bob's datagram").await {
        Event::MatchData(d) => {
            assert_eq!(&d.data[..], b"back");
            assert_eq!(d.sender, bob_presence);
        }
        other => panic!("unexpected {other:?}"),
    }
    alice
        .send_match_data(m.match_id, 5, b"hi".to_vec(), false, None)
        .await
        .expect("send");
    assert!(matches!(
        next_event(&back, "alice's datagram").await,
        Event::MatchData(_)
    ));
    // Alice never saw bob leave or join again, and his ticket is still there.
    assert_no_event(&alice, Duration::from_millis(300)).await;
    assert_eq!(server.stats.matches().presences, 2);
    assert_eq!(server.stats.matchmaker().tickets, 1);
    assert_eq!(server.stats.held_sessions(), 0);
    drop(bob);
}

#[tokio::test]
async fn after_the_grace_the_usual_leave_happens() {
    let server = start(Duration::from_millis(500)).await;
    let proxy = Proxy::start(server.addr, Impairment::CLEAN, 2).await;
    let (alice, bob, _match) = alice_and_fragile_bob(&server, &proxy).await;
    let token = bob.session().token.clone();
    let bob_presence = bob.presence();
    proxy.cut();
    match next_event(&alice, "bob's leave after the grace").await {
        Event::MatchPresence(p) => assert_eq!(p.leaves, vec![bob_presence]),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.stats.matchmaker().tickets, 0, "tickets cancelled");
    let mut config = server.client_config("bob");
    config.credentials = Credentials::SessionToken { token };
    let err = timeout(TEST_TIMEOUT, Socket::connect(config))
        .await
        .expect("answer in time")
        .err()
        .expect("too late to resume");
    assert_eq!(err.close_code().map(|c| c.0), Some(CloseCode::AUTH_FAILED));
}

#[tokio::test]
async fn a_polite_close_leaves_at_once() {
    let server = start(Duration::from_secs(30)).await;
    let alice = client_via(&server, None, "alice").await;
    let bob = client_via(&server, None, "bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    next_event(&alice, "bob joins").await;
    bob.close().await;
    assert!(matches!(
        next_event(&alice, "leave").await,
        Event::MatchPresence(_)
    ));
    assert_eq!(server.stats.held_sessions(), 0);
}
