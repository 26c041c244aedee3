//! The matchmaker through the SDK: tickets, groups joined by token, count multiples,
//! removal, limits, disconnects, and token checks. Passes run by hand.

mod common;

use std::time::Duration;

use common::{assert_no_event, next_event, TestServer};
use quicmatch::{auth::Secret, matchmaker::token::MatchToken};
use quicmatch_client::{ErrorCode, Event, MatchId, MatchmakerMatched, Socket};

fn matched(event: Event) -> MatchmakerMatched {
    match event {
        Event::MatchmakerMatched(m) => m,
        other => panic!("expected a matchmaker result, got {other:?}"),
    }
}

async fn clients(server: &TestServer, n: usize) -> Vec<Socket> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(server.client(&format!("player{i}")).await);
    }
    out
}

/// Every client gets its result, with one shared token, and all join one match.
async fn join_all(players: &[Socket]) -> MatchId {
    let mut token = None;
    let mut results = Vec::new();
    for p in players {
        let m = matched(next_event(p, "matchmaker result").await);
        assert_eq!(m.users.len(), players.len());
        assert_eq!(m.self_user.presence, p.presence());
        let t = m.token.clone().expect("a token");
        if let Some(first) = &token {
            assert_eq!(first, &t, "one token for the whole group");
        }
        token = Some(t);
        results.push(m);
    }
    let token = token.expect("token");
    let mut match_id = None;
    for (i, p) in players.iter().enumerate() {
        let m = p.join_match_token(&token).await.expect("join by token");
        assert_eq!(m.size as usize, i + 1);
        match_id.get_or_insert(m.match_id);
        assert_eq!(Some(m.match_id), match_id);
    }
    match_id.expect("match")
}

#[tokio::test]
async fn two_players_meet_by_token() {
    let server = TestServer::start().await;
    let players = clients(&server, 2).await;
    let mut tickets = Vec::new();
    for p in &players {
        tickets.push(
            p.add_matchmaker("*", 2, 2)
                .string_property("mode", "duel")
                .numeric_property("rank", 3.0)
                .await
                .expect("ticket"),
        );
    }
    assert_eq!(server.stats.matchmaker().tickets, 2);
    assert_eq!(server.matchmake(), 1);
    let m = matched(next_event(&players[0], "result").await);
    assert_eq!(m.ticket, tickets[0]);
    assert_eq!(m.users[1].string_properties["mode"], "duel");
    assert_eq!(m.users[1].numeric_properties["rank"], 3.0);
    assert_eq!(m.users[1].party_id, None);
    assert!(m.match_id.is_none());
    let token = m.token.expect("token");
    let m1 = players[0].join_match_token(&token).await.expect("join");
    let m2 = matched(next_event(&players[1], "result").await);
    assert_eq!(m2.token.as_deref(), Some(token.as_str()));
    let joined = players[1].join_match_token(&token).await.expect("join");
    assert_eq!(joined.match_id, m1.match_id);
    assert_eq!(joined.size, 2);
    assert_eq!(server.stats.matchmaker().tickets, 0);
    assert_eq!(server.stats.matchmaker().recent_completions.len(), 2);
}

#[tokio::test]
async fn four_players_fill_one_match() {
    let server = TestServer::start().await;
    let players = clients(&server, 4).await;
    for p in &players {
        p.add_matchmaker("+properties.region:eu", 2, 4)
            .string_property("region", "eu")
            .await
            .expect("ticket");
    }
    let outsider = server.client("us-player").await;
    outsider
        .add_matchmaker("+properties.region:eu", 2, 4)
        .string_property("region", "us")
        .await
        .expect("ticket");
    assert_eq!(server.matchmake(), 1);
    join_all(&players).await;
    assert_no_event(&outsider, Duration::from_millis(100)).await;
    assert_eq!(server.stats.matchmaker().tickets, 1);
}

#[tokio::test]
async fn count_multiple_and_relaxation() {
    let server = TestServer::start().await;
    let players = clients(&server, 5).await;
    for p in &players {
        p.add_matchmaker("*", 2, 6)
            .count_multiple(2)
            .await
            .expect("ticket");
    }
    assert_eq!(server.matchmake(), 0, "first pass waits for 6");
    assert_eq!(server.matchmake(), 1, "second pass takes 4 of 5");
    join_all(&players[..4]).await;
    assert_no_event(&players[4], Duration::from_millis(100)).await;
    assert_eq!(server.stats.matchmaker().tickets, 1, "the newest is left");
}

#[tokio::test]
async fn removed_tickets_do_not_match() {
    let server = TestServer::start().await;
    let players = clients(&server, 2).await;
    let t0 = players[0].add_matchmaker("*", 2, 2).await.expect("ticket");
    players[1].add_matchmaker("*", 2, 2).await.expect("ticket");
    players[0].remove_matchmaker(t0).await.expect("remove");
    let err = players[0].remove_matchmaker(t0).await.expect_err("twice");
    assert_eq!(err.code(), Some(ErrorCode::TICKET_NOT_FOUND));
    let t1 = players[1].add_matchmaker("*", 3, 3).await.expect("ticket");
    let err = players[0]
        .remove_matchmaker(t1)
        .await
        .expect_err("not mine");
    assert_eq!(err.code(), Some(ErrorCode::TICKET_NOT_FOUND));
    assert_eq!(server.matchmake(), 0);
    assert_no_event(&players[1], Duration::from_millis(100)).await;
}

#[tokio::test]
async fn max_tickets_per_session() {
    let server = TestServer::start().await;
    let p = server.client("greedy").await;
    let mut tickets = Vec::new();
    for _ in 0..3 {
        tickets.push(p.add_matchmaker("*", 2, 2).await.expect("ticket"));
    }
    let err = p.add_matchmaker("*", 2, 2).await.expect_err("fourth");
    assert_eq!(err.code(), Some(ErrorCode::LIMIT_EXCEEDED));
    p.remove_matchmaker(tickets[0]).await.expect("remove");
    p.add_matchmaker("*", 2, 2).await.expect("slot freed");
    // Matching one ticket frees its slot and leaves the others.
    let other = server.client("other").await;
    other.add_matchmaker("*", 2, 2).await.expect("ticket");
    assert_eq!(server.matchmake(), 1);
    matched(next_event(&p, "result").await);
    assert_eq!(server.stats.matchmaker().tickets, 2);
    p.add_matchmaker("*", 2, 2)
        .await
        .expect("slot freed by the match");
}

#[tokio::test]
async fn a_disconnect_cancels_every_ticket() {
    let server = TestServer::start().await;
    let gone = server.client("gone").await;
    gone.add_matchmaker("*", 2, 2).await.expect("ticket");
    gone.add_matchmaker("*", 2, 3).await.expect("ticket");
    assert_eq!(server.stats.matchmaker().tickets, 2);
    gone.close().await;
    let stats = server.stats.clone();
    common::eventually("tickets cancelled", || stats.matchmaker().tickets == 0).await;
    // Reconnecting does not restore them.
    let back = server.client("gone").await;
    let stay = server.client("stay").await;
    stay.add_matchmaker("*", 2, 2).await.expect("ticket");
    assert_eq!(server.matchmake(), 0);
    assert_no_event(&back, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn bad_requests_are_rejected_with_reasons() {
    let server = TestServer::start().await;
    let p = server.client("p").await;
    let cases: Vec<(quicmatch_client::AddMatchmaker<'_>, &str)> = vec![
        (p.add_matchmaker("*", 1, 2), "min_count must be >= 2"),
        (
            p.add_matchmaker("*", 3, 2),
            "max_count must be >= min_count",
        ),
        (p.add_matchmaker("*", 2, 5).count_multiple(2), "must divide"),
        (
            p.add_matchmaker("*", 2, 4).count_multiple(0),
            "count_multiple must be >= 1",
        ),
        (p.add_matchmaker("*", 2, 1000), "max_count must be <="),
        (
            p.add_matchmaker("+(properties.a:x", 2, 2),
            "query error at byte 16: missing ')'",
        ),
        (
            p.add_matchmaker("region:eu", 2, 2),
            "must be 'properties.<key>'",
        ),
        (p.add_matchmaker("properties.a:/[/", 2, 2), "invalid regex"),
        (p.add_matchmaker(&"x".repeat(2000), 2, 2), "query longer"),
        (
            p.add_matchmaker("*", 2, 2)
                .numeric_property("x", f64::INFINITY),
            "finite",
        ),
        (
            p.add_matchmaker("*", 2, 2)
                .string_property("k", "v".repeat(300)),
            "at most 256 bytes",
        ),
    ];
    for (add, reason) in cases {
        let err = add.await.expect_err(reason);
        assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT), "{reason}: {err}");
        assert!(err.to_string().contains(reason), "{reason}: {err}");
    }
    let mut many = p.add_matchmaker("*", 2, 2);
    for i in 0..40 {
        many = many.string_property(format!("k{i}"), "v");
    }
    assert_eq!(
        many.await.expect_err("too many").code(),
        Some(ErrorCode::BAD_INPUT)
    );
    assert_eq!(server.stats.matchmaker().tickets, 0);
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let server = TestServer::start().await;
    let players = clients(&server, 2).await;
    for p in &players {
        p.add_matchmaker("*", 2, 2).await.expect("ticket");
    }
    let stranger = server.client("stranger").await;
    server.matchmake();
    let token = matched(next_event(&players[0], "result").await)
        .token
        .expect("token");
    let err = stranger
        .join_match_token(&token)
        .await
        .expect_err("foreign");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    assert!(err.to_string().contains("other users"), "{err}");

    let mut forged = token.clone();
    let i = forged.len() - 3;
    let c = if &forged[i..=i] == "A" { "B" } else { "A" };
    forged.replace_range(i..=i, c);
    let err = players[0]
        .join_match_token(&forged)
        .await
        .expect_err("forged");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));

    let expired = MatchToken {
        match_id: MatchId::new_random(),
        expires_at: quicmatch::auth::unix_now() - 1,
        users: vec![players[0].session().user_id],
    }
    .issue(&Secret::from_bytes(&[7u8; 32]));
    let err = players[0]
        .join_match_token(&expired)
        .await
        .expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");
    let err = players[0]
        .join_match_token("garbage")
        .await
        .expect_err("garbage");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    assert_eq!(server.stats.matches().matches, 0, "nothing changed");
    // The genuine token still works.
    players[0].join_match_token(&token).await.expect("genuine");
}

/// A token admits to its match only while that match has never ended: once every member
/// left, a still-valid token gets MATCH_NOT_FOUND and the id stays dead.
#[tokio::test]
async fn a_token_cannot_revive_an_ended_match() {
    let server = TestServer::start().await;
    let players = clients(&server, 2).await;
    for p in &players {
        p.add_matchmaker("*", 2, 2).await.expect("ticket");
    }
    assert_eq!(server.matchmake(), 1);
    let m = matched(next_event(&players[0], "result").await);
    matched(next_event(&players[1], "result").await);
    let token = m.token.expect("a token");
    let joined = players[0].join_match_token(&token).await.expect("join");
    players[1].join_match_token(&token).await.expect("join");
    for p in &players {
        p.leave_match(joined.match_id).await.expect("leave");
    }
    assert_eq!(server.stats.matches().matches, 0);
    let err = players[0]
        .join_match_token(&token)
        .await
        .expect_err("the match ended");
    assert_eq!(err.code(), Some(ErrorCode::MATCH_NOT_FOUND));
    let err = players[1]
        .join_match(joined.match_id)
        .await
        .expect_err("dead id");
    assert_eq!(err.code(), Some(ErrorCode::MATCH_NOT_FOUND));
    assert_eq!(server.stats.matches().matches, 0);
}
