//! Parties through the SDK: joining open and closed parties, leadership, kicks, data,
//! party matchmaking, and concurrent joins.

mod common;

use std::time::Duration;

use common::{
    assert_no_event, next_event,
    party::{presence_change, snapshot},
    TestServer,
};
use quicmatch_client::{ErrorCode, Event, PartyInfo, Socket};

#[tokio::test]
async fn open_join_snapshot_and_presence() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let friend = server.client("friend").await;
    let party = leader.create_party(true, 4).await.expect("create");
    assert_eq!(party.leader, leader.presence());
    assert_eq!(party.presences, vec![leader.presence()]);
    assert_eq!(party.self_presence, leader.presence());
    assert_eq!(party.max_size, 4);
    friend.join_party(party.party_id).await.expect("join");
    let snap = snapshot(next_event(&friend, "snapshot").await);
    assert_eq!(snap.presences, vec![leader.presence(), friend.presence()]);
    assert_eq!(snap.self_presence, friend.presence());
    assert_eq!(snap.leader, leader.presence());
    let (joins, leaves) = presence_change(next_event(&leader, "join").await);
    assert_eq!(joins, vec![friend.presence()]);
    assert!(leaves.is_empty());
    let err = friend.join_party(party.party_id).await.expect_err("twice");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_ALREADY_MEMBER));
    assert_no_event(&friend, Duration::from_millis(100)).await;
    assert_eq!(server.stats.parties(), 1);
}

#[tokio::test]
async fn closed_party_requests_accept_and_decline() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let party = leader.create_party(false, 4).await.expect("create");
    alice.join_party(party.party_id).await.expect("request");
    match next_event(&leader, "join request").await {
        Event::PartyJoinRequest { presences, .. } => assert_eq!(presences, vec![alice.presence()]),
        other => panic!("unexpected {other:?}"),
    }
    let err = alice
        .join_party(party.party_id)
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_JOIN_REQUEST_DUPLICATE));
    bob.join_party(party.party_id).await.expect("request");
    next_event(&leader, "bob's request").await;
    let requests = leader
        .list_party_join_requests(party.party_id)
        .await
        .expect("list");
    assert_eq!(requests, vec![alice.presence(), bob.presence()]);
    let err = alice
        .list_party_join_requests(party.party_id)
        .await
        .expect_err("not a member");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_NOT_MEMBER));

    leader
        .accept_party_member(party.party_id, &alice.presence())
        .await
        .expect("accept");
    let snap = snapshot(next_event(&alice, "snapshot").await);
    assert_eq!(snap.presences.len(), 2);
    presence_change(next_event(&leader, "alice joins").await);

    leader
        .remove_party_member(party.party_id, &bob.presence())
        .await
        .expect("decline");
    match next_event(&bob, "declined").await {
        Event::PartyClose { reason, .. } => assert!(reason.contains("declined"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(leader
        .list_party_join_requests(party.party_id)
        .await
        .expect("list")
        .is_empty());
    let err = leader
        .accept_party_member(party.party_id, &bob.presence())
        .await
        .expect_err("no request");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_JOIN_REQUEST_NOT_FOUND));
    assert_no_event(&alice, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn full_parties_and_bad_sizes() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let a = server.client("a").await;
    let b = server.client("b").await;
    let party = leader.create_party(true, 2).await.expect("create");
    a.join_party(party.party_id).await.expect("join");
    let err = b.join_party(party.party_id).await.expect_err("full");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_FULL));
    for size in [0, 257] {
        let err = leader.create_party(true, size).await.expect_err("bad size");
        assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    }
    let err = b
        .join_party(quicmatch_client::PartyId::new_random())
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_NOT_FOUND));
}

#[tokio::test]
async fn closed_party_request_limit() {
    let mut config = common::test_config();
    config.party.max_requests = 1;
    let server = TestServer::start_with(config).await;
    let leader = server.client("leader").await;
    let a = server.client("a").await;
    let b = server.client("b").await;
    let party = leader.create_party(false, 8).await.expect("create");
    a.join_party(party.party_id).await.expect("request");
    let err = b
        .join_party(party.party_id)
        .await
        .expect_err("requests full");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_JOIN_REQUESTS_FULL));
}

#[tokio::test]
async fn only_the_leader_may() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let member = server.client("member").await;
    let party = leader.create_party(true, 4).await.expect("create");
    member.join_party(party.party_id).await.expect("join");
    let id = party.party_id;
    let target = leader.presence();
    for err in [
        member.close_party(id).await.expect_err("close"),
        member
            .promote_party_member(id, &target)
            .await
            .expect_err("promote"),
        member
            .remove_party_member(id, &target)
            .await
            .expect_err("remove"),
        member
            .accept_party_member(id, &target)
            .await
            .expect_err("accept"),
        member.update_party(id, false).await.expect_err("update"),
        member
            .list_party_join_requests(id)
            .await
            .expect_err("list")
            .clone(),
        member
            .add_matchmaker_party(id, "*", 2, 4)
            .await
            .expect_err("mm"),
    ] {
        assert_eq!(err.code(), Some(ErrorCode::PARTY_NOT_LEADER), "{err}");
    }
    let err = leader
        .remove_party_member(id, &target)
        .await
        .expect_err("self");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_CANNOT_REMOVE_SELF));
}

#[tokio::test]
async fn promote_and_update() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let member = server.client("member").await;
    let party = leader.create_party(true, 4).await.expect("create");
    member.join_party(party.party_id).await.expect("join");
    snapshot(next_event(&member, "snapshot").await);
    presence_change(next_event(&leader, "join").await);
    leader
        .promote_party_member(party.party_id, &member.presence())
        .await
        .expect("promote");
    for who in [&leader, &member] {
        match next_event(who, "new leader").await {
            Event::PartyLeader { presence, .. } => assert_eq!(presence, member.presence()),
            other => panic!("unexpected {other:?}"),
        }
    }
    member
        .update_party(party.party_id, false)
        .await
        .expect("update");
    match next_event(&leader, "update").await {
        Event::PartyUpdate { open, .. } => assert!(!open),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn the_oldest_member_leads_when_the_leader_leaves_or_disconnects() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let second = server.client("second").await;
    let third = server.client("third").await;
    let party = leader.create_party(true, 4).await.expect("create");
    second.join_party(party.party_id).await.expect("join");
    third.join_party(party.party_id).await.expect("join");
    snapshot(next_event(&second, "snapshot").await);
    presence_change(next_event(&second, "third joins").await);
    snapshot(next_event(&third, "snapshot").await);

    leader.leave_party(party.party_id).await.expect("leave");
    for who in [&second, &third] {
        let (_, leaves) = presence_change(next_event(who, "leader leaves").await);
        assert_eq!(leaves, vec![leader.presence()]);
        match next_event(who, "new leader").await {
            Event::PartyLeader { presence, .. } => assert_eq!(presence, second.presence()),
            other => panic!("unexpected {other:?}"),
        }
    }
    // The new leader disconnects: the next oldest takes over.
    let second_presence = second.presence();
    second.close().await;
    let (_, leaves) = presence_change(next_event(&third, "second disconnects").await);
    assert_eq!(leaves, vec![second_presence]);
    match next_event(&third, "third leads").await {
        Event::PartyLeader { presence, .. } => assert_eq!(presence, third.presence()),
        other => panic!("unexpected {other:?}"),
    }
    // The last member out ends the party for good.
    third.leave_party(party.party_id).await.expect("leave");
    let stats = server.stats.clone();
    common::eventually("party gone", || stats.parties() == 0).await;
    let err = leader.join_party(party.party_id).await.expect_err("gone");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_NOT_FOUND));
}

#[tokio::test]
async fn a_kicked_member_is_told() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let kicked = server.client("kicked").await;
    let stays = server.client("stays").await;
    let party = leader.create_party(true, 4).await.expect("create");
    kicked.join_party(party.party_id).await.expect("join");
    stays.join_party(party.party_id).await.expect("join");
    snapshot(next_event(&kicked, "snapshot").await);
    presence_change(next_event(&kicked, "stays joins").await);
    snapshot(next_event(&stays, "snapshot").await);
    leader
        .remove_party_member(party.party_id, &kicked.presence())
        .await
        .expect("kick");
    match next_event(&kicked, "kicked").await {
        Event::PartyClose { reason, .. } => assert!(reason.contains("removed"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
    let (_, leaves) = presence_change(next_event(&stays, "kick seen").await);
    assert_eq!(leaves, vec![kicked.presence()]);
    let err = kicked
        .send_party_data(party.party_id, 1, b"still here?".to_vec())
        .await
        .expect_err("not a member");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_NOT_MEMBER));
}

#[tokio::test]
async fn party_data_goes_to_the_others_only() {
    let server = TestServer::start().await;
    let a = server.client("a").await;
    let b = server.client("b").await;
    let c = server.client("c").await;
    let outsider = server.client("outsider").await;
    let party = a.create_party(true, 4).await.expect("create");
    b.join_party(party.party_id).await.expect("join");
    c.join_party(party.party_id).await.expect("join");
    snapshot(next_event(&b, "snapshot").await);
    presence_change(next_event(&b, "c joins").await);
    snapshot(next_event(&c, "snapshot").await);
    presence_change(next_event(&a, "b joins").await);
    presence_change(next_event(&a, "c joins").await);
    b.send_party_data(party.party_id, 9, b"plan".to_vec())
        .await
        .expect("send");
    for who in [&a, &c] {
        match next_event(who, "party data").await {
            Event::PartyData {
                sender,
                op_code,
                data,
                ..
            } => {
                assert_eq!(sender, b.presence());
                assert_eq!(op_code, 9);
                assert_eq!(&data[..], b"plan");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_no_event(&b, Duration::from_millis(100)).await;
    let err = outsider
        .send_party_data(party.party_id, 1, b"x".to_vec())
        .await
        .expect_err("outsider");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_NOT_MEMBER));
}

#[tokio::test]
async fn a_party_and_a_solo_player_meet_in_one_match() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let member = server.client("member").await;
    let solo = server.client("solo").await;
    let party = leader.create_party(true, 2).await.expect("create");
    member.join_party(party.party_id).await.expect("join");
    snapshot(next_event(&member, "snapshot").await);
    presence_change(next_event(&leader, "join").await);

    let err = leader
        .add_matchmaker_party(party.party_id, "*", 2, 2)
        .await
        .expect_err("party of 2 leaves no room in a match of 2");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    let ticket = leader
        .add_matchmaker_party(party.party_id, "*", 3, 3)
        .string_property("mode", "coop")
        .await
        .expect("party ticket");
    match next_event(&member, "party ticket").await {
        Event::PartyMatchmakerTicket { ticket: t, .. } => assert_eq!(t, ticket),
        other => panic!("unexpected {other:?}"),
    }
    solo.add_matchmaker("*", 3, 3).await.expect("solo ticket");
    assert_eq!(server.matchmake(), 1);
    let mut token = None;
    for who in [&leader, &member, &solo] {
        let m = match next_event(who, "matched").await {
            Event::MatchmakerMatched(m) => m,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(m.users.len(), 3);
        let expected_party = (!std::ptr::eq(who, &solo)).then_some(party.party_id);
        assert_eq!(m.self_user.party_id, expected_party);
        token = m.token;
    }
    let token = token.expect("token");
    let mut ids = Vec::new();
    for who in [&leader, &member, &solo] {
        ids.push(who.join_match_token(&token).await.expect("join").match_id);
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
}

#[tokio::test]
async fn membership_changes_cancel_party_tickets() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let member = server.client("member").await;
    let newcomer = server.client("newcomer").await;
    let party = leader.create_party(true, 4).await.expect("create");
    member.join_party(party.party_id).await.expect("join");
    snapshot(next_event(&member, "snapshot").await);
    presence_change(next_event(&leader, "join").await);
    let ticket = leader
        .add_matchmaker_party(party.party_id, "*", 3, 4)
        .await
        .expect("ticket");
    next_event(&member, "party ticket").await;
    newcomer.join_party(party.party_id).await.expect("join");
    for who in [&leader, &member] {
        let mut cancelled = false;
        for _ in 0..2 {
            match next_event(who, "cancel and join").await {
                Event::MatchmakerTicketCancelled { ticket: t, reason } => {
                    assert_eq!(t, ticket);
                    assert!(reason.contains("joined"), "{reason}");
                    cancelled = true;
                }
                Event::PartyPresence { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(cancelled);
    }
    assert_eq!(server.stats.matchmaker().tickets, 0);
    // A member disconnecting cancels the new ticket too, and the rest are told.
    let ticket = leader
        .add_matchmaker_party(party.party_id, "*", 4, 4)
        .await
        .expect("ticket");
    member.close().await;
    let mut seen = false;
    while !seen {
        if let Event::MatchmakerTicketCancelled { ticket: t, .. } =
            next_event(&leader, "cancel").await
        {
            assert_eq!(t, ticket);
            seen = true;
        }
    }
    let err = leader
        .remove_matchmaker_party(party.party_id, ticket)
        .await
        .expect_err("already cancelled");
    assert_eq!(err.code(), Some(ErrorCode::TICKET_NOT_FOUND));
}

#[tokio::test]
async fn concurrent_joins_lose_no_one_and_never_overflow() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let party = leader.create_party(true, 6).await.expect("create");
    let mut joiners: Vec<Socket> = Vec::new();
    for i in 0..10 {
        joiners.push(server.client(&format!("joiner{i}")).await);
    }
    let results =
        futures_util::future::join_all(joiners.iter().map(|j| j.join_party(party.party_id))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 5, "exactly max_size - 1 joiners get in");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Some(ErrorCode::PARTY_FULL));
    }
    let mut joined = 0;
    let mut seen = std::collections::HashSet::new();
    while joined < 5 {
        let (joins, _) = presence_change(next_event(&leader, "joins").await);
        for p in joins {
            assert!(seen.insert(p.session_id), "no one twice");
            joined += 1;
        }
    }
    let requests = leader
        .list_party_join_requests(party.party_id)
        .await
        .expect("list");
    assert!(requests.is_empty());
}

#[tokio::test]
async fn oversized_labels_and_data_are_refused() {
    use quicmatch_protocol::{Request, Response, ServerBody};
    let server = TestServer::start().await;
    let mut raw = server.raw_session("labeller").await;
    let reply = raw
        .request(
            Some(1),
            Request::PartyCreate {
                open: true,
                max_size: 4,
                label: Some("x".repeat(quicmatch_protocol::MAX_PARTY_LABEL_LEN + 1)),
            },
        )
        .await;
    match reply.body {
        ServerBody::Response(Response::Error { code, message }) => {
            assert_eq!(code, ErrorCode::BAD_INPUT);
            assert!(message.contains("label"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let leader = server.client("leader").await;
    let party = leader.create_party(true, 4).await.expect("create");
    let err = leader
        .send_party_data(
            party.party_id,
            1,
            vec![0u8; quicmatch_protocol::MAX_RELIABLE_PAYLOAD + 1],
        )
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Some(ErrorCode::PAYLOAD_TOO_LARGE));
    assert_eq!(server.stats.parties(), 1, "only the valid party exists");
}

#[tokio::test]
async fn removing_a_party_ticket_tells_the_other_members() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let a = server.client("a").await;
    let b = server.client("b").await;
    let party = leader.create_party(true, 4).await.expect("create");
    a.join_party(party.party_id).await.expect("join");
    b.join_party(party.party_id).await.expect("join");
    snapshot(next_event(&a, "snapshot").await);
    presence_change(next_event(&a, "b joins").await);
    snapshot(next_event(&b, "snapshot").await);
    presence_change(next_event(&leader, "a joins").await);
    presence_change(next_event(&leader, "b joins").await);
    let ticket = leader
        .add_matchmaker_party(party.party_id, "*", 4, 8)
        .await
        .expect("ticket");
    for who in [&a, &b] {
        match next_event(who, "party ticket").await {
            Event::PartyMatchmakerTicket { ticket: t, .. } => assert_eq!(t, ticket),
            other => panic!("unexpected {other:?}"),
        }
    }
    leader
        .remove_matchmaker_party(party.party_id, ticket)
        .await
        .expect("remove");
    for who in [&a, &b] {
        match next_event(who, "ticket cancelled").await {
            Event::MatchmakerTicketCancelled { ticket: t, reason } => {
                assert_eq!(t, ticket);
                assert_eq!(reason, "removed by the party leader");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(server.stats.matchmaker().tickets, 0);
    // The leader asked for it and is not told; a failed removal tells no one.
    assert_no_event(&leader, Duration::from_millis(100)).await;
    let err = leader
        .remove_matchmaker_party(party.party_id, ticket)
        .await
        .expect_err("already removed");
    assert_eq!(err.code(), Some(ErrorCode::TICKET_NOT_FOUND));
    for who in [&a, &b] {
        assert_no_event(who, Duration::from_millis(100)).await;
    }
}

/// A closed party of one with two pending requests; returns the party.
async fn closed_party_with_two_requests(
    leader: &Socket,
    alice: &Socket,
    bob: &Socket,
) -> PartyInfo {
    let party = leader.create_party(false, 4).await.expect("create");
    for who in [alice, bob] {
        who.join_party(party.party_id).await.expect("request");
        match next_event(leader, "join request").await {
            Event::PartyJoinRequest { presences, .. } => {
                assert_eq!(presences, vec![who.presence()]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    party
}

async fn assert_told_the_party_ended(who: &Socket, party: &PartyInfo) {
    match next_event(who, "party close").await {
        Event::PartyClose { party_id, reason } => {
            assert_eq!(party_id, party.party_id);
            assert!(reason.contains("last member"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn pending_requesters_are_told_when_the_last_member_leaves() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let party = closed_party_with_two_requests(&leader, &alice, &bob).await;
    leader.leave_party(party.party_id).await.expect("leave");
    for who in [&alice, &bob] {
        assert_told_the_party_ended(who, &party).await;
    }
    assert_eq!(server.stats.parties(), 0);
    let err = alice.join_party(party.party_id).await.expect_err("gone");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_NOT_FOUND));
    for who in [&leader, &alice, &bob] {
        assert_no_event(who, Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn pending_requesters_are_told_when_the_last_member_disconnects() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let party = closed_party_with_two_requests(&leader, &alice, &bob).await;
    // A requester withdrawing first is not told about the end later.
    bob.leave_party(party.party_id).await.expect("withdraw");
    leader.close().await;
    assert_told_the_party_ended(&alice, &party).await;
    let stats = server.stats.clone();
    common::eventually("party gone", || stats.parties() == 0).await;
    assert_no_event(&bob, Duration::from_millis(100)).await;
    assert_no_event(&alice, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn pending_requesters_are_told_when_single_party_takes_the_last_member() {
    let mut config = common::test_config();
    config.party.single_party = true;
    let server = TestServer::start_with(config).await;
    let leader = server.client("leader").await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let other = server.client("other").await;
    let party = closed_party_with_two_requests(&leader, &alice, &bob).await;
    // Joining another party makes the only member leave this one.
    let elsewhere = other.create_party(true, 4).await.expect("create");
    leader.join_party(elsewhere.party_id).await.expect("join");
    for who in [&alice, &bob] {
        assert_told_the_party_ended(who, &party).await;
    }
    let err = alice.join_party(party.party_id).await.expect_err("gone");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_NOT_FOUND));
}

/// Each of `who` gets a `PartyUpdate` with this open flag and label.
async fn expect_update(who: [&Socket; 2], party: &PartyInfo, open: bool, label: Option<&str>) {
    for socket in who {
        match next_event(socket, "party update").await {
            Event::PartyUpdate {
                party_id,
                open: o,
                label: l,
            } => {
                assert_eq!(party_id, party.party_id);
                assert_eq!(o, open);
                assert_eq!(l.as_deref(), label);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn party_labels_through_the_sdk() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let member = server.client("member").await;
    let party = leader
        .create_party_with(true, 4, Some("raid night"))
        .await
        .expect("create");
    assert_eq!(party.label.as_deref(), Some("raid night"));
    assert_eq!(party.max_size, 4);
    assert!(party.open);
    member.join_party(party.party_id).await.expect("join");
    let snap = snapshot(next_event(&member, "snapshot").await);
    assert_eq!(snap.label.as_deref(), Some("raid night"));
    presence_change(next_event(&leader, "join").await);

    let both = [&leader, &member];
    leader
        .update_party_label(party.party_id, Some("ranked"))
        .await
        .expect("label");
    expect_update(both, &party, true, Some("ranked")).await;
    // Changing the open flag keeps the label; changing the label keeps the flag.
    leader
        .update_party(party.party_id, false)
        .await
        .expect("close");
    expect_update(both, &party, false, Some("ranked")).await;
    leader
        .update_party_label(party.party_id, None)
        .await
        .expect("clear");
    expect_update(both, &party, false, None).await;

    let err = member
        .update_party_label(party.party_id, Some("mine"))
        .await
        .expect_err("not the leader");
    assert_eq!(err.code(), Some(ErrorCode::PARTY_NOT_LEADER));
    let longest = "l".repeat(quicmatch_protocol::MAX_PARTY_LABEL_LEN);
    leader
        .update_party_label(party.party_id, Some(&longest))
        .await
        .expect("the longest label");
    expect_update(both, &party, false, Some(&longest)).await;
    // Refused by the SDK (its message, not the server's "longer than").
    let too_long = "l".repeat(quicmatch_protocol::MAX_PARTY_LABEL_LEN + 1);
    let err = leader
        .update_party_label(party.party_id, Some(&too_long))
        .await
        .expect_err("too long");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    assert!(err.to_string().contains("exceeds"), "{err}");
    let err = leader
        .create_party_with(true, 4, Some(&too_long))
        .await
        .expect_err("too long");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    assert!(err.to_string().contains("exceeds"), "{err}");
    let plain = leader.create_party(true, 4).await.expect("no label");
    assert_eq!(plain.label, None);
    assert_eq!(server.stats.parties(), 2);
    assert_no_event(&member, Duration::from_millis(100)).await;
}
