//! Latest-state op codes: a late joiner gets every member's newest broadcast under the
//! match's latest-state op codes right after its `Match` reply, before live data; only
//! broadcasts are kept, a member's state goes when it leaves, and limits are enforced.

mod common;

use std::time::Duration;

use common::{assert_no_event, next_event, TestServer};
use quicmatch_client::{ErrorCode, Event, MatchData, MatchOptions, Socket};

const POS: i64 = 1;
const CHAT: i64 = 2;

fn data(event: Event) -> MatchData {
    match event {
        Event::MatchData(d) => d,
        other => panic!("expected match data, got {other:?}"),
    }
}

/// The next match data, skipping presence events.
async fn next_data(s: &Socket, what: &str) -> MatchData {
    loop {
        match next_event(s, what).await {
            Event::MatchPresence(_) => continue,
            other => return data(other),
        }
    }
}

#[tokio::test]
async fn a_late_joiner_gets_the_latest_state_before_live_data() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let game = alice
        .create_match_with(None, MatchOptions::default().latest_state([POS]))
        .await
        .expect("create");
    bob.join_match(game.match_id).await.expect("bob joins");
    next_event(&alice, "bob's join").await;

    // Alice moves twice (datagrams); bob moves once (reliable) and chats; bob also
    // whispers a position to alice only, which is not kept.
    alice
        .send_match_data(game.match_id, POS, b"a1".to_vec(), false, None)
        .await
        .expect("send");
    assert_eq!(next_data(&bob, "a1").await.data.as_ref(), b"a1");
    alice
        .send_match_data(game.match_id, POS, b"a2".to_vec(), false, None)
        .await
        .expect("send");
    assert_eq!(next_data(&bob, "a2").await.data.as_ref(), b"a2");
    bob.send_match_data(game.match_id, POS, b"b1".to_vec(), true, None)
        .await
        .expect("send");
    bob.send_match_data(game.match_id, CHAT, b"hi".to_vec(), true, None)
        .await
        .expect("send");
    bob.send_match_data(
        game.match_id,
        POS,
        b"secret".to_vec(),
        true,
        Some(&[alice.presence()]),
    )
    .await
    .expect("send");
    for want in [&b"b1"[..], b"hi", b"secret"] {
        assert_eq!(
            next_data(&alice, "bob's messages").await.data.as_ref(),
            want
        );
    }

    let carol = server.client("carol").await;
    let joined = carol.join_match(game.match_id).await.expect("carol joins");
    assert_eq!(joined.size, 3);
    let first = data(next_event(&carol, "alice's state").await);
    let second = data(next_event(&carol, "bob's state").await);
    assert_eq!(
        (first.sender.username.as_str(), first.data.as_ref()),
        ("alice", &b"a2"[..])
    );
    assert_eq!(
        (second.sender.username.as_str(), second.data.as_ref()),
        ("bob", &b"b1"[..])
    );
    assert!(first.seq < second.seq, "oldest seq first");
    assert!(first.reliable && second.reliable);
    assert_eq!(first.op_code, POS);
    // Then live data.
    alice
        .send_match_data(game.match_id, POS, b"a3".to_vec(), false, None)
        .await
        .expect("send");
    let live = next_data(&carol, "live").await;
    assert_eq!(live.data.as_ref(), b"a3");
    assert!(live.seq > second.seq);

    // Bob leaves: his state goes with him.
    bob.leave_match(game.match_id).await.expect("leave");
    next_event(&alice, "bob's leave").await;
    let dave = server.client("dave").await;
    dave.join_match(game.match_id).await.expect("dave joins");
    let only = data(next_event(&dave, "alice's newest").await);
    assert_eq!(
        (only.sender.username.as_str(), only.data.as_ref()),
        ("alice", &b"a3"[..])
    );
    assert_no_event(&dave, Duration::from_millis(150)).await;
}

#[tokio::test]
async fn matches_without_latest_state_send_nothing_on_join_and_limits_hold() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let game = alice.create_match(None).await.expect("create");
    alice
        .send_match_data(game.match_id, POS, b"a1".to_vec(), true, None)
        .await
        .expect("send");
    let bob = server.client("bob").await;
    bob.join_match(game.match_id).await.expect("join");
    assert_no_event(&bob, Duration::from_millis(150)).await;

    let err = alice
        .create_match_with(None, MatchOptions::default().latest_state(0..9))
        .await
        .expect_err("nine op codes");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    assert!(err.to_string().contains("at most 8"), "{err}");
    // Duplicates count once.
    alice
        .create_match_with(
            None,
            MatchOptions::default().latest_state([1, 1, 2, 2, 3, 4, 5, 6, 7, 8]),
        )
        .await
        .expect("eight distinct op codes");
}

/// On the wire, the joiner's `Match` reply comes before the kept messages.
#[tokio::test]
async fn the_match_reply_precedes_the_latest_state_on_the_wire() {
    use quicmatch_protocol::{
        envelope::{Event as WireEvent, Response, ServerBody},
        Request,
    };
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let game = alice
        .create_match_with(None, MatchOptions::default().latest_state([POS]))
        .await
        .expect("create");
    alice
        .send_match_data(game.match_id, POS, b"a1".to_vec(), true, None)
        .await
        .expect("send");
    // A member sees it relayed, so the server has kept it.
    let bob = server.client("bob").await;
    bob.join_match(game.match_id).await.expect("join");
    assert_eq!(data(next_event(&bob, "a1").await).data.as_ref(), b"a1");

    let mut raw = server.raw_session("raw").await;
    raw.send_request(
        Some(9),
        Request::MatchJoin {
            match_id: game.match_id,
        },
    )
    .await;
    let first = raw.next().await;
    assert_eq!(first.cid, Some(9), "the reply first: {first:?}");
    assert!(matches!(
        first.body,
        ServerBody::Response(Response::Match(_))
    ));
    let second = raw.next().await;
    let event = match second.body {
        ServerBody::Event(e) => e,
        ServerBody::Sequenced { event, .. } => event,
        other => panic!("expected the kept message, got {other:?}"),
    };
    assert!(
        matches!(event, WireEvent::MatchData { ref data, .. } if data.as_ref() == b"a1"),
        "{event:?}"
    );
}
