//! Sessions at their edges: a killed client is seen leaving within
//! `idle_timeout + reconnect_grace` and its tickets are never matched once it is suspect;
//! a resume takes over at once and replays everything in order, exactly once; a resume
//! too far behind gets `RESUME_GAP`; the SDK resumes by itself across a blackout.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_no_event, next_event,
    proxy::{Impairment, Proxy},
    TestServer, TEST_TIMEOUT,
};
use quicmatch_client::{CloseCode, Credentials, Event, Socket};
use tokio::time::timeout;

async fn connect(config: quicmatch_client::ClientConfig) -> Socket {
    timeout(TEST_TIMEOUT, Socket::connect(config))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// A client whose traffic goes through `proxy`.
async fn via(server: &TestServer, proxy: &Proxy, name: &str, reconnect_for: Duration) -> Socket {
    let mut config = server.client_config(name);
    config.server = proxy.addr;
    config.reconnect_for = reconnect_for;
    connect(config).await
}

#[tokio::test]
async fn a_killed_client_leaves_in_time_and_its_ticket_is_never_matched() {
    // The defaults under test: suspect after 2 s, dead after 5 s, held 5 s.
    let server = TestServer::start().await;
    let defaults = quicmatch::Config::default().session;
    let proxy = Proxy::start(server.addr, Impairment::CLEAN, 11).await;
    let alice = server.client("alice").await;
    let bob = via(&server, &proxy, "bob", Duration::ZERO).await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    next_event(&alice, "bob joins").await;
    bob.add_matchmaker("*", 2, 2).await.expect("bob's ticket");
    let bob_presence = bob.presence();

    // Killed: nothing more reaches the server, and no close.
    proxy.cut();
    let killed = Instant::now();
    let carol = server.client("carol").await;
    carol
        .add_matchmaker("*", 2, 2)
        .await
        .expect("carol's ticket");
    let stats = server.stats.clone();
    common::eventually("bob suspect", || stats.suspect_sessions() == 1).await;
    assert_eq!(server.matchmake(), 0, "a suspect ticket is never grouped");
    assert_eq!(server.stats.matchmaker().tickets, 2);

    let limit = defaults.idle_timeout + defaults.reconnect_grace + Duration::from_secs(1);
    common::await_match_leave(
        &alice,
        m.match_id,
        &bob_presence,
        limit.saturating_sub(killed.elapsed()),
    )
    .await;
    // His ticket went with him; carol's waits for a live partner.
    assert_eq!(server.matchmake(), 0);
    assert_eq!(server.stats.matchmaker().tickets, 1);
    assert_eq!(server.stats.suspect_sessions(), 0);
    let dave = server.client("dave").await;
    dave.add_matchmaker("*", 2, 2).await.expect("dave's ticket");
    assert_eq!(server.matchmake(), 1);
    match next_event(&carol, "carol matched").await {
        Event::MatchmakerMatched(mm) => {
            let names: Vec<_> = mm
                .users
                .iter()
                .map(|u| u.presence.username.clone())
                .collect();
            assert!(
                !names.contains(&"bob".to_owned()),
                "matched with a ghost: {names:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_client_heard_again_is_no_longer_suspect() {
    let mut config = common::test_config();
    config.session.suspect_after = Duration::from_millis(500);
    config.session.idle_timeout = Duration::from_secs(5);
    let server = TestServer::start_with(config).await;
    let proxy = Proxy::start(server.addr, Impairment::CLEAN, 12).await;
    let bob = via(&server, &proxy, "bob", Duration::ZERO).await;
    bob.add_matchmaker("*", 2, 2).await.expect("ticket");
    proxy.cut();
    let stats = server.stats.clone();
    common::eventually("bob suspect", || stats.suspect_sessions() == 1).await;
    proxy.restore();
    common::eventually("bob heard again", || stats.suspect_sessions() == 0).await;
    let carol = server.client("carol").await;
    carol.add_matchmaker("*", 2, 2).await.expect("ticket");
    assert_eq!(server.matchmake(), 1, "bob's ticket is back in play");
}

#[tokio::test]
async fn an_immediate_resume_replays_everything_in_order_exactly_once() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr, Impairment::CLEAN, 13).await;
    let alice = server.client("alice").await;
    let bob = via(&server, &proxy, "bob", Duration::ZERO).await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    next_event(&alice, "bob joins").await;
    let carol = server.client("carol").await;
    carol.join_match(m.match_id).await.expect("carol joins");
    next_event(&alice, "carol joins").await;
    assert!(matches!(
        next_event(&bob, "carol joins").await,
        Event::MatchPresence(_)
    ));
    let seen = bob.last_event_seq();
    assert!(seen > 0, "events are numbered");
    let token = bob.session().token.clone();
    let bob_presence = bob.presence();

    // Bob's connection dies; the server has not noticed yet.
    proxy.cut();
    carol.leave_match(m.match_id).await.expect("carol leaves");
    next_event(&alice, "carol leaves").await;
    for i in 0..200u32 {
        alice
            .send_match_data(m.match_id, 1, i.to_be_bytes().to_vec(), true, None)
            .await
            .expect("send");
    }
    let dave = server.client("dave").await;
    dave.join_match(m.match_id).await.expect("dave joins");
    next_event(&alice, "dave joins").await;

    // Bob comes back at once on a new connection.
    let mut config = server.client_config("bob");
    config.credentials = Credentials::Resume {
        token,
        last_seq: seen,
    };
    let back = connect(config).await;
    assert!(back.session().resumed);
    assert_eq!(back.presence(), bob_presence, "same session");
    // Presence changes come in order on the control stream, alice's data in order on
    // her lane (protocol 3); the two streams do not wait for each other.
    let (mut presences, mut next) = (Vec::new(), 0u32);
    while presences.len() < 2 || next < 200 {
        match next_event(&back, "the replay").await {
            Event::MatchData(d) => {
                assert!(d.reliable);
                assert_eq!(
                    &d.data[..],
                    next.to_be_bytes(),
                    "message {next} in order, once"
                );
                next += 1;
            }
            Event::MatchPresence(p) => presences.push(p),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        presences[0].leaves[0].username, "carol",
        "carol's leave first"
    );
    assert_eq!(presences[1].joins[0].username, "dave", "then dave's join");
    assert_no_event(&back, Duration::from_millis(300)).await;
    // Nobody saw bob leave or come back, and he is still a member.
    assert_no_event(&alice, Duration::from_millis(100)).await;
    assert_eq!(server.stats.matches().presences, 3);
    back.send_match_data(m.match_id, 2, b"back".to_vec(), true, None)
        .await
        .expect("send");
    match next_event(&alice, "bob's message").await {
        Event::MatchData(d) => assert_eq!(d.sender, bob_presence),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_resume_beyond_the_buffer_gets_resume_gap_and_ends_the_session() {
    let mut config = common::test_config();
    config.session.resume_buffer = 4 << 10;
    let server = TestServer::start_with(config).await;
    let proxy = Proxy::start(server.addr, Impairment::CLEAN, 14).await;
    let alice = server.client("alice").await;
    let bob = via(&server, &proxy, "bob", Duration::ZERO).await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    next_event(&alice, "bob joins").await;
    for i in 0..40u32 {
        alice
            .send_match_data(m.match_id, 1, vec![i as u8; 512], true, None)
            .await
            .expect("send");
    }
    for _ in 0..40 {
        next_event(&bob, "message").await;
    }
    let token = bob.session().token.clone();
    proxy.cut();
    let mut config = server.client_config("bob");
    config.credentials = Credentials::Resume { token, last_seq: 1 };
    let err = timeout(TEST_TIMEOUT, Socket::connect(config))
        .await
        .expect("answer in time")
        .err()
        .expect("too far behind to resume");
    let (code, reason) = err.close_code().expect("a close code");
    assert_eq!(code, CloseCode::RESUME_GAP, "{reason}");
    // The client starts afresh, so the old session is gone at once.
    common::await_match_leave(&alice, m.match_id, &bob.presence(), Duration::from_secs(2)).await;
}

#[tokio::test]
async fn the_sdk_resumes_by_itself_across_a_blackout_on_a_lossy_path() {
    let mut config = common::test_config();
    config.session.idle_timeout = Duration::from_secs(2);
    config.session.suspect_after = Duration::from_secs(1);
    config.session.reconnect_grace = Duration::from_secs(15);
    let server = TestServer::start_with(config).await;
    let lossy = Impairment {
        loss: 0.10,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(60),
        duplicate: 0.0,
    };
    let proxy = Proxy::start(server.addr, lossy, 15).await;
    let alice = server.client("alice").await;
    let bob = via(&server, &proxy, "bob", Duration::from_secs(15)).await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    next_event(&alice, "bob joins").await;
    let bob_presence = bob.presence();

    proxy.cut();
    let blackout = tokio::time::sleep(Duration::from_secs(3));
    for i in 0..100u32 {
        alice
            .send_match_data(m.match_id, 1, i.to_be_bytes().to_vec(), true, None)
            .await
            .expect("send");
    }
    blackout.await;
    proxy.restore();

    let mut got = Vec::new();
    let mut reconnected = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 100 {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = timeout(left, bob.next_event())
            .await
            .expect("bob's events in time")
            .expect("bob's socket open");
        match event {
            Event::Reconnecting { .. } => assert!(!reconnected, "one resume"),
            Event::Reconnected { .. } => reconnected = true,
            Event::MatchData(d) => {
                got.push(u32::from_be_bytes(d.data[..].try_into().expect("4 bytes")))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(reconnected, "the connection died and was resumed");
    assert_eq!(
        got,
        (0..100).collect::<Vec<_>>(),
        "complete, in order, once"
    );
    assert_no_event(&bob, Duration::from_millis(300)).await;
    // The others never saw bob leave, and he carries on as the same session.
    assert_eq!(server.stats.matches().presences, 2);
    assert_eq!(bob.presence(), bob_presence);
    bob.send_match_data(m.match_id, 2, b"still here".to_vec(), true, None)
        .await
        .expect("send after the resume");
    match next_event(&alice, "bob's message after the resume").await {
        Event::MatchData(d) => assert_eq!(d.sender, bob_presence),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_resume_takes_over_a_connection_that_still_looks_alive() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let mut config = server.client_config("bob");
    config.reconnect_for = Duration::ZERO;
    let old = connect(config).await;
    let m = alice.create_match(None).await.expect("create");
    old.join_match(m.match_id).await.expect("join");
    next_event(&alice, "bob joins").await;
    let mut config = server.client_config("bob");
    config.credentials = Credentials::Resume {
        token: old.session().token.clone(),
        last_seq: old.last_event_seq(),
    };
    let new = connect(config).await;
    assert!(new.session().resumed);
    assert_eq!(new.presence(), old.presence());
    // The old connection is told why it was closed.
    let code = common::disconnect_code(&old, "the takeover").await;
    assert_eq!(code, Some(CloseCode::SESSION_REPLACED));
    assert_no_event(&alice, Duration::from_millis(300)).await;
    alice
        .send_match_data(m.match_id, 1, b"to the new one".to_vec(), true, None)
        .await
        .expect("send");
    match next_event(&new, "data on the new connection").await {
        Event::MatchData(d) => assert_eq!(&d.data[..], b"to the new one"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.stats.sessions(), 2);
}

/// A session waiting for a slow RPC still steps aside at once for a resume.
#[tokio::test]
async fn a_resume_takes_over_a_session_waiting_for_an_rpc() {
    let server = TestServer::start_built(common::test_config(), |b| {
        b.rpc("slow", |_, _| {
            std::thread::sleep(Duration::from_secs(3));
            Ok("done".into())
        })
    })
    .await;
    let mut config = server.client_config("bob");
    config.reconnect_for = Duration::ZERO;
    let old = std::sync::Arc::new(connect(config).await);
    let waiting = old.clone();
    let call = tokio::spawn(async move { waiting.rpc("slow", "").await });
    // The request is on its way; resume meanwhile.
    tokio::task::yield_now().await;
    let mut config = server.client_config("bob");
    config.credentials = Credentials::Resume {
        token: old.session().token.clone(),
        last_seq: old.last_event_seq(),
    };
    // Had the old session been deaf until the RPC returned (3 s), the takeover (2 s at
    // most) would have been refused with AUTH_FAILED.
    let new = connect(config).await;
    assert!(new.session().resumed);
    let answer = timeout(TEST_TIMEOUT, call)
        .await
        .expect("answered")
        .expect("task");
    assert!(answer.is_err(), "the old connection is gone: {answer:?}");
}
