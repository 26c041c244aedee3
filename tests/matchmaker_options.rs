//! Matchmaker options through the SDK: roles (composition), teams, widening, expiry,
//! backfill from server code, and a custom processor. Passes run by hand.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{assert_no_event, next_event, test_config, TestServer};
use quicmatch::runtime::Properties;
use quicmatch_client::{ErrorCode, Event, MatchmakerMatched, MatchmakerMatchedTeams, Socket};

fn matched(event: Event) -> MatchmakerMatched {
    match event {
        Event::MatchmakerMatched(m) => m,
        other => panic!("expected a matchmaker result, got {other:?}"),
    }
}

fn matched_teams(event: Event) -> MatchmakerMatchedTeams {
    match event {
        Event::MatchmakerMatchedTeams(m) => m,
        other => panic!("expected a matchmaker result with teams, got {other:?}"),
    }
}

const ROLES: [(&str, u32); 3] = [("tank", 1), ("healer", 1), ("dps", 1)];

async fn role_ticket(s: &Socket, role: &str) {
    s.add_matchmaker("*", 3, 3)
        .string_property("role", role)
        .composition("role", ROLES)
        .await
        .expect("ticket");
}

#[tokio::test]
async fn a_composition_groups_exactly_one_of_each_role() {
    let server = TestServer::start().await;
    let tank = server.client("tank").await;
    let tank2 = server.client("tank2").await;
    let healer = server.client("healer").await;
    let dps = server.client("dps").await;
    role_ticket(&tank, "tank").await;
    role_ticket(&tank2, "tank").await;
    role_ticket(&healer, "healer").await;
    assert_eq!(server.matchmake(), 0, "no dps yet");
    role_ticket(&dps, "dps").await;
    assert_eq!(server.matchmake(), 1);
    let mut names = Vec::new();
    for s in [&tank, &healer, &dps] {
        let m = matched(next_event(s, "result").await);
        assert_eq!(m.users.len(), 3);
        names = m
            .users
            .iter()
            .map(|u| u.string_properties["role"].clone())
            .collect::<Vec<_>>();
    }
    names.sort();
    assert_eq!(names, ["dps", "healer", "tank"]);
    assert_no_event(&tank2, Duration::from_millis(100)).await;
    assert_eq!(
        server.stats.matchmaker().tickets,
        1,
        "the second tank waits"
    );
}

#[tokio::test]
async fn a_party_brings_its_members_roles() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let friend = server.client("friend").await;
    let healer = server.client("healer").await;
    let party = leader.create_party(true, 2).await.expect("party");
    friend.join_party(party.party_id).await.expect("join");
    next_event(&friend, "snapshot").await;
    next_event(&leader, "presence").await;
    leader
        .add_matchmaker_party(party.party_id, "*", 3, 3)
        .string_property("role", "dps,tank")
        .composition("role", ROLES)
        .await
        .expect("party ticket");
    next_event(&friend, "party ticket").await;
    role_ticket(&healer, "healer").await;
    assert_eq!(server.matchmake(), 1);
    for s in [&leader, &friend, &healer] {
        let m = matched(next_event(s, "result").await);
        assert_eq!(m.users.len(), 3);
    }
}

#[tokio::test]
async fn teams_are_assigned_balanced_and_the_same_for_everyone() {
    let server = TestServer::start().await;
    let mut players = Vec::new();
    for (i, skill) in [10.0, 9.0, 1.0, 2.0].into_iter().enumerate() {
        let s = server.client(&format!("p{i}")).await;
        s.add_matchmaker("*", 4, 4)
            .numeric_property("skill", skill)
            .teams(2)
            .balance_teams_on("skill")
            .await
            .expect("ticket");
        players.push(s);
    }
    assert_eq!(server.matchmake(), 1);
    let mut seen: Option<MatchmakerMatchedTeams> = None;
    for s in &players {
        let m = matched_teams(next_event(s, "result").await);
        assert_eq!(m.teams.len(), m.matched.users.len());
        assert!(m.matched.token.is_some());
        if let Some(first) = &seen {
            assert_eq!(first.teams, m.teams);
            assert_eq!(first.matched.users, m.matched.users);
        }
        seen = Some(m);
    }
    let m = seen.expect("result");
    let team_of = |skill: f64| {
        let i = m
            .matched
            .users
            .iter()
            .position(|u| u.numeric_properties["skill"] == skill)
            .expect("user");
        m.teams[i]
    };
    assert_ne!(team_of(10.0), team_of(9.0), "the two strongest play apart");
    let mut sizes = [0, 0];
    for t in &m.teams {
        sizes[*t as usize] += 1;
    }
    assert_eq!(sizes, [2, 2]);
}

#[tokio::test]
async fn a_ticket_expires_and_its_owner_is_told() {
    let server = TestServer::start().await;
    let lonely = server.client("lonely").await;
    let ticket = lonely
        .add_matchmaker("*", 2, 2)
        .expires_after(2)
        .await
        .expect("ticket");
    server.matchmake();
    assert_no_event(&lonely, Duration::from_millis(100)).await;
    server.matchmake();
    match next_event(&lonely, "expiry").await {
        Event::MatchmakerTicketCancelled { ticket: t, reason } => {
            assert_eq!(t, ticket);
            assert_eq!(reason, "expired");
        }
        other => panic!("expected a cancellation, got {other:?}"),
    }
    assert_eq!(server.stats.matchmaker().tickets, 0);
    let err = lonely.remove_matchmaker(ticket).await.expect_err("gone");
    assert_eq!(err.code(), Some(ErrorCode::TICKET_NOT_FOUND));
}

#[tokio::test]
async fn a_fallback_query_widens_the_search() {
    let server = TestServer::start().await;
    let picky = server.client("picky").await;
    let casual = server.client("casual").await;
    picky
        .add_matchmaker("+properties.mode:ranked", 2, 2)
        .string_property("mode", "ranked")
        .fallback_query("*", 1)
        .await
        .expect("ticket");
    casual
        .add_matchmaker("*", 2, 2)
        .string_property("mode", "casual")
        .await
        .expect("ticket");
    assert_eq!(server.matchmake(), 0, "first pass: ranked only");
    assert_eq!(server.matchmake(), 1, "second pass: anyone");
    matched(next_event(&picky, "result").await);
    matched(next_event(&casual, "result").await);
}

#[tokio::test]
async fn bad_options_are_refused_with_a_reason() {
    let server = TestServer::start().await;
    let s = server.client("s").await;
    let err = s
        .add_matchmaker("*", 3, 3)
        .composition("role", ROLES)
        .await
        .expect_err("no role property");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    assert!(
        err.to_string().contains("needs the string property"),
        "{err}"
    );
    let err = s
        .add_matchmaker("*", 4, 4)
        .teams(3)
        .await
        .expect_err("4 is not a multiple of 3");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    let err = s
        .add_matchmaker("*", 2, 2)
        .fallback_query("+properties.x:+3", 1)
        .await
        .expect_err("bad fallback query");
    assert!(err.to_string().contains("fallback query"), "{err}");
    let err = s
        .add_matchmaker("*", 2, 2)
        .expires_after(0)
        .await
        .expect_err("zero passes");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    // The session carries on.
    s.add_matchmaker("*", 2, 2).await.expect("a plain ticket");
}

#[tokio::test]
async fn a_backfill_sends_players_to_a_live_match() {
    let server = TestServer::start().await;
    let host = server.client("host").await;
    let live = host.create_match(None).await.expect("match");
    let mm = server.runtime.matchmaker();
    let props = Properties {
        strings: BTreeMap::from([("mode".to_owned(), "coop".to_owned())]),
        numbers: BTreeMap::new(),
    };
    mm.backfill(live.match_id, "+properties.mode:coop", 2, props.clone())
        .expect("backfill");
    let missing = mm
        .backfill(
            quicmatch_client::MatchId::new_random(),
            "*",
            1,
            props.clone(),
        )
        .expect_err("no such match");
    assert_eq!(missing, quicmatch::runtime::RuntimeError::MatchNotFound);
    let a = server.client("a").await;
    let b = server.client("b").await;
    for s in [&a, &b] {
        s.add_matchmaker("+properties.mode:coop", 2, 4)
            .string_property("mode", "coop")
            .await
            .expect("ticket");
    }
    assert_eq!(server.matchmake(), 1);
    for s in [&a, &b] {
        let m = matched(next_event(s, "backfill result").await);
        assert_eq!(m.match_id, Some(live.match_id));
        assert!(m.token.is_none());
        assert_eq!(m.users.len(), 2);
        let joined = s
            .join_match(live.match_id)
            .await
            .expect("join the live match");
        assert_eq!(joined.match_id, live.match_id);
    }
    // Both seats are taken: the backfill is gone.
    assert_eq!(server.stats.matchmaker().tickets, 0);

    // A backfill whose match ends is dropped at the next pass.
    let ticket = mm
        .backfill(live.match_id, "*", 3, Properties::default())
        .expect("backfill");
    for s in [&host, &a, &b] {
        s.leave_match(live.match_id).await.expect("leave");
    }
    assert_eq!(server.stats.matchmaker().tickets, 1);
    server.matchmake();
    assert_eq!(server.stats.matchmaker().tickets, 0);
    assert!(mm.cancel_backfill(ticket).is_err());
}

#[tokio::test]
async fn a_custom_processor_chooses_groups_and_invalid_ones_are_refused() {
    let server = TestServer::start_built(test_config(), |b| {
        b.matchmaker_processor(|pool| {
            // Pairs tickets with the same "code"; also returns a lone ticket, which the
            // server must refuse.
            let mut by_code: BTreeMap<String, Vec<_>> = BTreeMap::new();
            for t in pool {
                let code = t
                    .properties
                    .strings
                    .get("code")
                    .cloned()
                    .unwrap_or_default();
                by_code.entry(code).or_default().push(t.ticket);
            }
            by_code.into_values().collect()
        })
    })
    .await;
    let a = server.client("a").await;
    let b = server.client("b").await;
    let c = server.client("c").await;
    let d = server.client("d").await;
    for (s, code) in [(&a, "x"), (&b, "y"), (&c, "x"), (&d, "z")] {
        // Queries do not bind a processor: it decides who plays with whom.
        s.add_matchmaker("+properties.nobody:1", 2, 2)
            .string_property("code", code)
            .await
            .expect("ticket");
    }
    assert_eq!(server.matchmake(), 1);
    let m = matched(next_event(&a, "result").await);
    let names: Vec<&str> = m
        .users
        .iter()
        .map(|u| u.presence.username.as_str())
        .collect();
    assert_eq!(names, ["a", "c"]);
    matched(next_event(&c, "result").await);
    assert_no_event(&b, Duration::from_millis(100)).await;
    assert_eq!(server.stats.matchmaker().tickets, 2, "b and d stay");
}

#[tokio::test]
async fn a_slow_processor_is_bounded_by_its_timeout() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    };
    let mut config = test_config();
    config.matchmaker.processor_timeout = Duration::from_millis(100);
    let (release, wait) = mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let server = TestServer::start_built(config, move |b| {
        b.matchmaker_processor(move |pool| {
            // The first call hangs until the test releases it.
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                let _ = wait.lock().map(|w| w.recv_timeout(Duration::from_secs(30)));
            }
            vec![pool.iter().map(|t| t.ticket).collect()]
        })
    })
    .await;
    let a = server.client("a").await;
    let b = server.client("b").await;
    for s in [&a, &b] {
        s.add_matchmaker("*", 2, 2).await.expect("ticket");
    }
    assert_eq!(server.matchmake(), 0, "the pass gives up after 100 ms");
    assert_eq!(server.matchmake(), 0, "the stuck call is not repeated");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(server.stats.matchmaker().tickets, 2, "nothing was lost");
    release.send(()).expect("release");
    // Once the stuck call returns, the next pass calls the processor again.
    common::eventually("a pass forms the group", || server.matchmake() == 1).await;
    matched(next_event(&a, "result").await);
    matched(next_event(&b, "result").await);
}
