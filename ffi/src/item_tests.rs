//! Unit tests of the conversion from SDK events and request outcomes to [`Item`]s.

use std::{collections::BTreeMap, str::FromStr};

use quicmatch_client::{CloseCode, ErrorCode, MatchmakerUser, SessionId, UserId};

use super::*;

/// An id of any kind whose last digits are `n`.
pub(crate) fn id<T: FromStr>(n: u32) -> T
where
    T::Err: std::fmt::Debug,
{
    match format!("00000000-0000-4000-8000-{n:012}").parse() {
        Ok(id) => id,
        Err(e) => unreachable!("a well-formed uuid: {e:?}"),
    }
}

pub(crate) fn presence(n: u32) -> Presence {
    Presence {
        user_id: id::<UserId>(n),
        session_id: id::<SessionId>(n + 100),
        username: format!("player-{n}"),
    }
}

#[test]
fn match_data_keeps_every_field() {
    let item = Item::match_data(MatchDataParts {
        match_id: id(1),
        sender: presence(2),
        op_code: -7,
        data: Bytes::from_static(b"pos 1 2"),
        reliable: true,
        seq: 42,
    });
    assert_eq!(item.kind, QM_EVENT_MATCH_DATA);
    assert_eq!(item.request, 0);
    assert_eq!(
        item.match_id.as_deref(),
        Some(id::<MatchId>(1).to_string().as_str())
    );
    assert_eq!(item.sender, Some(presence(2)));
    assert_eq!(item.op_code, -7);
    assert_eq!(item.data.as_deref(), Some(&b"pos 1 2"[..]));
    assert!(item.reliable);
    assert_eq!(item.seq, 42);
}

#[test]
fn joins_and_presence_changes() {
    let item = Item::in_match(9, id(1), 2, vec![presence(1), presence(2)], presence(2));
    assert_eq!(item.kind, QM_EVENT_MATCH);
    assert_eq!(item.request, 9);
    assert_eq!(item.size, 2);
    assert_eq!(item.presences.len(), 2);
    assert_eq!(item.self_presence, Some(presence(2)));

    let item = Item::presence(id(1), vec![presence(3)], vec![presence(1)]);
    assert_eq!(item.kind, QM_EVENT_MATCH_PRESENCE);
    assert_eq!(item.presences, vec![presence(3)]);
    assert_eq!(item.leaves, vec![presence(1)]);
}

#[test]
fn matched_carries_users_and_their_properties_as_json() {
    let user = |n: u32, party: Option<PartyId>| MatchmakerUser {
        presence: presence(n),
        party_id: party,
        string_properties: BTreeMap::from([("mode".to_owned(), "duel".to_owned())]),
        numeric_properties: BTreeMap::from([("skill".to_owned(), 5.5)]),
    };
    let event = Event::MatchmakerMatched(MatchmakerMatched {
        ticket: id(7),
        token: Some("signed-token".into()),
        match_id: None,
        users: vec![user(1, None), user(2, Some(id(8)))],
        self_user: user(2, Some(id(8))),
    });
    let item = Item::from_event(event);
    assert_eq!(item.kind, QM_EVENT_MATCHMAKER_MATCHED);
    assert_eq!(item.ticket, Some(id::<TicketId>(7).to_string()));
    assert_eq!(item.token.as_deref(), Some("signed-token"));
    assert_eq!(item.match_id, None);
    assert_eq!(item.self_presence, Some(presence(2)));
    assert_eq!(item.users.len(), 2);
    assert_eq!(item.users[0].party_id, None);
    assert_eq!(item.users[1].party_id, Some(id::<PartyId>(8).to_string()));
    let props: serde_json::Value =
        serde_json::from_str(&item.users[0].properties_json).unwrap_or_default();
    assert_eq!(props["string"]["mode"], "duel");
    assert_eq!(props["numeric"]["skill"], 5.5);
    assert_eq!((item.users[0].team, item.users[1].team), (-1, -1));
}

#[test]
fn matched_with_teams_gives_each_user_its_team() {
    let user = |n: u32| MatchmakerUser {
        presence: presence(n),
        party_id: None,
        string_properties: BTreeMap::new(),
        numeric_properties: BTreeMap::new(),
    };
    let matched = MatchmakerMatched {
        ticket: id(7),
        token: Some("signed-token".into()),
        match_id: None,
        users: vec![user(1), user(2), user(3)],
        self_user: user(3),
    };
    let item = Item::from_event(Event::MatchmakerMatchedTeams(
        quicmatch_client::MatchmakerMatchedTeams {
            matched,
            teams: vec![1, 0],
        },
    ));
    assert_eq!(item.kind, QM_EVENT_MATCHMAKER_MATCHED);
    assert_eq!(item.token.as_deref(), Some("signed-token"));
    let teams: Vec<i32> = item.users.iter().map(|u| u.team).collect();
    // A user the server gave no team (it never does) reads as -1, not as team 0.
    assert_eq!(teams, vec![1, 0, -1]);
}

#[test]
fn party_events() {
    let info = PartyInfo {
        party_id: id(1),
        open: true,
        max_size: 4,
        label: Some("squad".into()),
        leader: presence(1),
        presences: vec![presence(1), presence(2)],
        self_presence: presence(2),
    };
    let item = Item::from_event(Event::Party(info.clone()));
    assert_eq!(item.kind, QM_EVENT_PARTY);
    assert_eq!(item.request, 0);
    assert!(item.open);
    assert_eq!(item.max_size, 4);
    assert_eq!(item.label.as_deref(), Some("squad"));
    assert_eq!(item.leader, Some(presence(1)));
    assert_eq!(item.presences.len(), 2);
    assert_eq!(Item::party(3, info).request, 3);

    let party = id::<PartyId>(1);
    let cases = [
        (
            Event::PartyPresence {
                party_id: party,
                joins: vec![presence(3)],
                leaves: vec![presence(2)],
            },
            QM_EVENT_PARTY_PRESENCE,
        ),
        (
            Event::PartyLeader {
                party_id: party,
                presence: presence(2),
            },
            QM_EVENT_PARTY_LEADER,
        ),
        (
            Event::PartyJoinRequest {
                party_id: party,
                presences: vec![presence(4)],
            },
            QM_EVENT_PARTY_JOIN_REQUEST,
        ),
        (
            Event::PartyClose {
                party_id: party,
                reason: "closed by the leader".into(),
            },
            QM_EVENT_PARTY_CLOSE,
        ),
        (
            Event::PartyData {
                party_id: party,
                sender: presence(1),
                op_code: 5,
                data: Bytes::from_static(b"ready"),
            },
            QM_EVENT_PARTY_DATA,
        ),
        (
            Event::PartyMatchmakerTicket {
                party_id: party,
                ticket: id(9),
            },
            QM_EVENT_PARTY_MATCHMAKER_TICKET,
        ),
        (
            Event::PartyUpdate {
                party_id: party,
                open: false,
                label: None,
            },
            QM_EVENT_PARTY_UPDATE,
        ),
    ];
    for (event, kind) in cases {
        let item = Item::from_event(event);
        assert_eq!(item.kind, kind);
        assert_eq!(item.party_id, Some(party.to_string()), "kind {kind}");
        match kind {
            QM_EVENT_PARTY_PRESENCE => {
                assert_eq!((item.presences.len(), item.leaves.len()), (1, 1));
            }
            QM_EVENT_PARTY_LEADER => assert_eq!(item.leader, Some(presence(2))),
            QM_EVENT_PARTY_JOIN_REQUEST => assert_eq!(item.presences, vec![presence(4)]),
            QM_EVENT_PARTY_CLOSE => {
                assert_eq!(item.message.as_deref(), Some("closed by the leader"));
            }
            QM_EVENT_PARTY_DATA => {
                assert_eq!(item.sender, Some(presence(1)));
                assert_eq!(
                    (item.op_code, item.data.as_deref()),
                    (5, Some(&b"ready"[..]))
                );
            }
            QM_EVENT_PARTY_MATCHMAKER_TICKET => {
                assert_eq!(item.ticket, Some(id::<TicketId>(9).to_string()));
            }
            _ => assert!(!item.open && item.label.is_none()),
        }
    }
}

#[test]
fn connection_events_and_their_codes() {
    let item = Item::from_event(Event::Disconnected {
        code: Some(CloseCode::SERVER_SHUTDOWN),
        reason: "bye".into(),
    });
    assert_eq!((item.kind, item.code), (QM_EVENT_DISCONNECTED, 6));
    assert!(item.is_final());
    let item = Item::from_event(Event::Disconnected {
        code: None,
        reason: "closed".into(),
    });
    assert_eq!(item.code, QM_ERR_DISCONNECTED);
    let item = Item::from_event(Event::Reconnecting {
        code: Some(CloseCode::TIMED_OUT),
        reason: "lost".into(),
    });
    assert_eq!((item.kind, item.code), (QM_EVENT_RECONNECTING, 10));
    assert!(!item.is_final());
    let item = Item::from_event(Event::Reconnected { attempts: 3 });
    assert_eq!((item.kind, item.attempts), (QM_EVENT_RECONNECTED, 3));
    let item = Item::lost("gone");
    assert_eq!(
        (item.kind, item.code),
        (QM_EVENT_DISCONNECTED, QM_ERR_DISCONNECTED)
    );
}

#[test]
fn match_and_matchmaker_pushes() {
    let item = Item::from_event(Event::MatchEnded {
        match_id: id(1),
        reason: "handler ended it".into(),
    });
    assert_eq!(item.kind, QM_EVENT_MATCH_ENDED);
    assert_eq!(item.match_id, Some(id::<MatchId>(1).to_string()));
    let item = Item::from_event(Event::MatchmakerTicketCancelled {
        ticket: id(2),
        reason: "party changed".into(),
    });
    assert_eq!(item.kind, QM_EVENT_MATCHMAKER_TICKET_CANCELLED);
    assert_eq!(item.message.as_deref(), Some("party changed"));
    let item = Item::from_event(Event::Error {
        code: ErrorCode::NOT_MATCH_MEMBER,
        message: "not in that match".into(),
    });
    assert_eq!(
        (item.kind, item.request, item.code),
        (QM_EVENT_ERROR, 0, 101)
    );
}

#[test]
fn request_outcomes() {
    let refused = RequestError::Server {
        code: ErrorCode::MATCH_NOT_FOUND,
        message: "no such match".into(),
    };
    let item = Item::failed(4, &refused);
    assert_eq!((item.kind, item.request, item.code), (QM_EVENT_ERROR, 4, 4));
    assert_eq!(item.message.as_deref(), Some("no such match"));
    assert_eq!(Item::failed(1, &RequestError::Timeout).code, QM_ERR_TIMEOUT);
    assert_eq!(
        Item::failed(1, &RequestError::Disconnected).code,
        QM_ERR_DISCONNECTED
    );
    assert_eq!(
        Item::failed(1, &RequestError::Unexpected("Pong".into())).code,
        QM_ERR_INTERNAL
    );

    assert_eq!(
        Item::ack(5),
        Item {
            kind: QM_EVENT_ACK,
            request: 5,
            ..Item::default()
        }
    );
    let item = Item::ticket(6, id(3), Some(id(4)));
    assert_eq!(item.kind, QM_EVENT_MATCHMAKER_TICKET);
    assert_eq!(item.ticket, Some(id::<TicketId>(3).to_string()));
    assert_eq!(item.party_id, Some(id::<PartyId>(4).to_string()));
    assert_eq!(Item::ticket(6, id(3), None).party_id, None);

    let item = Item::rpc(7, "{\"ok\":true}".into());
    assert_eq!(item.kind, QM_EVENT_RPC);
    assert_eq!(item.data.as_deref(), Some(&b"{\"ok\":true}"[..]));

    let listing = MatchListing {
        match_id: id(1),
        authoritative: false,
        label: Some("casual".into()),
        size: 1,
        max_size: 8,
        tick_rate: 0,
        handler: String::new(),
    };
    let item = Item::listing(8, vec![listing.clone()]);
    assert_eq!(
        (item.kind, item.matches.clone()),
        (QM_EVENT_MATCH_LIST, vec![listing])
    );

    let item = Item::join_requests(9, id(2), vec![presence(5)]);
    assert_eq!((item.kind, item.request), (QM_EVENT_PARTY_JOIN_REQUEST, 9));
}
