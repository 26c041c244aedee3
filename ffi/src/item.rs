//! What the SDK reports, turned into one flat, owned record per C event: pushed
//! [`Event`]s, and each request's outcome tagged with its request id. Pure data, no
//! pointers; `view` lays an [`Item`] out as a `qm_event`.

use bytes::Bytes;
use quicmatch_client::{
    Event, Match, MatchId, MatchListing, MatchmakerMatched, PartyId, PartyInfo, Presence,
    RequestError, TicketId,
};

use crate::types::*;

/// One event for C, owning everything its pointers will point at. Fields a kind does
/// not use stay at their defaults (see `qm_event` for which kind uses which).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Item {
    pub(crate) kind: i32,
    pub(crate) request: u32,
    pub(crate) code: i32,
    pub(crate) match_id: Option<String>,
    pub(crate) party_id: Option<String>,
    pub(crate) ticket: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) sender: Option<Presence>,
    pub(crate) leader: Option<Presence>,
    pub(crate) self_presence: Option<Presence>,
    pub(crate) op_code: i64,
    pub(crate) data: Option<Bytes>,
    pub(crate) seq: u64,
    pub(crate) size: u32,
    pub(crate) max_size: u32,
    pub(crate) attempts: u32,
    pub(crate) reliable: bool,
    pub(crate) open: bool,
    pub(crate) presences: Vec<Presence>,
    pub(crate) leaves: Vec<Presence>,
    pub(crate) users: Vec<MatchedUser>,
    pub(crate) matches: Vec<MatchListing>,
}

/// A matched user with its properties already written as JSON.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MatchedUser {
    pub(crate) presence: Presence,
    pub(crate) party_id: Option<String>,
    pub(crate) properties_json: String,
    /// From 0; -1 when the tickets asked for no teams.
    pub(crate) team: i32,
}

/// The fields of the SDK's `MatchData` (which only the SDK can build), so the
/// conversion can be tested on its own.
struct MatchDataParts {
    match_id: MatchId,
    sender: Presence,
    op_code: i64,
    data: Bytes,
    reliable: bool,
    seq: u64,
}

/// A close code as C sees it: the number, or `QM_ERR_DISCONNECTED` without one.
fn close_code(code: Option<quicmatch_client::CloseCode>) -> i32 {
    code.and_then(|c| i32::try_from(c.0).ok())
        .unwrap_or(QM_ERR_DISCONNECTED)
}

impl Item {
    fn new(kind: i32, request: u32) -> Self {
        Self {
            kind,
            request,
            ..Self::default()
        }
    }

    /// A request answered with nothing more to say.
    pub(crate) fn ack(request: u32) -> Self {
        Self::new(QM_EVENT_ACK, request)
    }

    /// A request that failed (or, with request 0, a push that reports a failure).
    pub(crate) fn error(request: u32, code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: Some(message.into()),
            ..Self::new(QM_EVENT_ERROR, request)
        }
    }

    /// A request the SDK or the server refused.
    pub(crate) fn failed(request: u32, error: &RequestError) -> Self {
        let code = match error {
            RequestError::Server { code, .. } => i32::try_from(code.0).unwrap_or(i32::MAX),
            RequestError::Timeout => QM_ERR_TIMEOUT,
            RequestError::Disconnected => QM_ERR_DISCONNECTED,
            _ => QM_ERR_INTERNAL,
        };
        let message = match error {
            RequestError::Server { message, .. } => message.clone(),
            other => other.to_string(),
        };
        Self::error(request, code, message)
    }

    /// The answer to create, join or join-by-token.
    pub(crate) fn joined(request: u32, m: Match) -> Self {
        Self::in_match(request, m.match_id, m.size, m.presences, m.self_presence)
    }

    /// [`joined`](Self::joined), from the parts of a `Match`.
    fn in_match(
        request: u32,
        match_id: MatchId,
        size: u32,
        presences: Vec<Presence>,
        self_presence: Presence,
    ) -> Self {
        Self {
            match_id: Some(match_id.to_string()),
            size,
            presences,
            self_presence: Some(self_presence),
            ..Self::new(QM_EVENT_MATCH, request)
        }
    }

    /// Members joined or left a match.
    fn presence(match_id: MatchId, joins: Vec<Presence>, leaves: Vec<Presence>) -> Self {
        Self {
            match_id: Some(match_id.to_string()),
            presences: joins,
            leaves,
            ..Self::new(QM_EVENT_MATCH_PRESENCE, 0)
        }
    }

    /// Match data received.
    fn match_data(d: MatchDataParts) -> Self {
        Self {
            match_id: Some(d.match_id.to_string()),
            sender: Some(d.sender),
            op_code: d.op_code,
            data: Some(d.data),
            reliable: d.reliable,
            seq: d.seq,
            ..Self::new(QM_EVENT_MATCH_DATA, 0)
        }
    }

    /// The answer to a matchmaker add (a party's when `party` is given).
    pub(crate) fn ticket(request: u32, ticket: TicketId, party: Option<PartyId>) -> Self {
        Self {
            ticket: Some(ticket.to_string()),
            party_id: party.map(|p| p.to_string()),
            ..Self::new(QM_EVENT_MATCHMAKER_TICKET, request)
        }
    }

    /// A party snapshot: the answer to a create (or pushed, with request 0).
    pub(crate) fn party(request: u32, info: PartyInfo) -> Self {
        Self {
            party_id: Some(info.party_id.to_string()),
            open: info.open,
            max_size: info.max_size,
            label: info.label,
            leader: Some(info.leader),
            presences: info.presences,
            self_presence: Some(info.self_presence),
            ..Self::new(QM_EVENT_PARTY, request)
        }
    }

    /// The answer to a listing.
    pub(crate) fn listing(request: u32, matches: Vec<MatchListing>) -> Self {
        Self {
            matches,
            ..Self::new(QM_EVENT_MATCH_LIST, request)
        }
    }

    /// The answer to an RPC: the output as bytes, with a NUL after them so C can read
    /// it as a string too (`data_len` leaves the NUL out).
    pub(crate) fn rpc(request: u32, payload: String) -> Self {
        let len = payload.len();
        let mut bytes = payload.into_bytes();
        bytes.push(0);
        Self {
            data: Some(Bytes::from(bytes).slice(..len)),
            ..Self::new(QM_EVENT_RPC, request)
        }
    }

    /// The answer to a party join-request listing.
    pub(crate) fn join_requests(request: u32, party: PartyId, presences: Vec<Presence>) -> Self {
        Self {
            party_id: Some(party.to_string()),
            presences,
            ..Self::new(QM_EVENT_PARTY_JOIN_REQUEST, request)
        }
    }

    /// The connection ended with no event from the SDK saying so (the background task
    /// stopped): C still gets its last event.
    pub(crate) fn lost(message: impl Into<String>) -> Self {
        Self {
            code: QM_ERR_DISCONNECTED,
            message: Some(message.into()),
            ..Self::new(QM_EVENT_DISCONNECTED, 0)
        }
    }

    /// Whether this is the last event of a client.
    pub(crate) fn is_final(&self) -> bool {
        self.kind == QM_EVENT_DISCONNECTED
    }

    /// A pushed SDK event. Kinds this version does not know become
    /// `QM_EVENT_UNKNOWN`, described in `message`.
    pub(crate) fn from_event(event: Event) -> Self {
        match event {
            Event::MatchPresence(p) => Self::presence(p.match_id, p.joins, p.leaves),
            Event::MatchData(d) => Self::match_data(MatchDataParts {
                match_id: d.match_id,
                sender: d.sender,
                op_code: d.op_code,
                data: d.data,
                reliable: d.reliable,
                seq: d.seq,
            }),
            Event::MatchmakerMatched(m) => Self::matched(m, &[]),
            Event::MatchmakerMatchedTeams(m) => Self::matched(m.matched, &m.teams),
            Event::MatchmakerTicketCancelled { ticket, reason } => Self {
                ticket: Some(ticket.to_string()),
                message: Some(reason),
                ..Self::new(QM_EVENT_MATCHMAKER_TICKET_CANCELLED, 0)
            },
            Event::Party(info) => Self::party(0, info),
            Event::PartyPresence {
                party_id,
                joins,
                leaves,
            } => Self {
                party_id: Some(party_id.to_string()),
                presences: joins,
                leaves,
                ..Self::new(QM_EVENT_PARTY_PRESENCE, 0)
            },
            Event::PartyLeader { party_id, presence } => Self {
                party_id: Some(party_id.to_string()),
                leader: Some(presence),
                ..Self::new(QM_EVENT_PARTY_LEADER, 0)
            },
            Event::PartyJoinRequest {
                party_id,
                presences,
            } => Self::join_requests(0, party_id, presences),
            Event::PartyClose { party_id, reason } => Self {
                party_id: Some(party_id.to_string()),
                message: Some(reason),
                ..Self::new(QM_EVENT_PARTY_CLOSE, 0)
            },
            Event::PartyData {
                party_id,
                sender,
                op_code,
                data,
            } => Self {
                party_id: Some(party_id.to_string()),
                sender: Some(sender),
                op_code,
                data: Some(data),
                ..Self::new(QM_EVENT_PARTY_DATA, 0)
            },
            Event::PartyMatchmakerTicket { party_id, ticket } => Self {
                party_id: Some(party_id.to_string()),
                ticket: Some(ticket.to_string()),
                ..Self::new(QM_EVENT_PARTY_MATCHMAKER_TICKET, 0)
            },
            Event::PartyUpdate {
                party_id,
                open,
                label,
            } => Self {
                party_id: Some(party_id.to_string()),
                open,
                label,
                ..Self::new(QM_EVENT_PARTY_UPDATE, 0)
            },
            Event::MatchEnded { match_id, reason } => Self {
                match_id: Some(match_id.to_string()),
                message: Some(reason),
                ..Self::new(QM_EVENT_MATCH_ENDED, 0)
            },
            Event::Error { code, message } => {
                Self::error(0, i32::try_from(code.0).unwrap_or(i32::MAX), message)
            }
            Event::Reconnecting { code, reason } => Self {
                code: close_code(code),
                message: Some(reason),
                ..Self::new(QM_EVENT_RECONNECTING, 0)
            },
            Event::Reconnected { attempts } => Self {
                attempts,
                ..Self::new(QM_EVENT_RECONNECTED, 0)
            },
            Event::Disconnected { code, reason } => Self {
                code: close_code(code),
                message: Some(reason),
                ..Self::new(QM_EVENT_DISCONNECTED, 0)
            },
            // The SDK grows new events; a game built against this header cannot act on
            // them, so they are passed on as something to ignore.
            other => Self {
                message: Some(format!("{other:?}")),
                ..Self::new(QM_EVENT_UNKNOWN, 0)
            },
        }
    }

    /// A matchmaker result; `teams` holds each user's team, in order (empty: none).
    fn matched(m: MatchmakerMatched, teams: &[u32]) -> Self {
        let users = m
            .users
            .into_iter()
            .enumerate()
            .map(|(i, u)| MatchedUser {
                presence: u.presence,
                party_id: u.party_id.map(|p| p.to_string()),
                properties_json: properties_json(&u.string_properties, &u.numeric_properties),
                team: teams
                    .get(i)
                    .and_then(|t| i32::try_from(*t).ok())
                    .unwrap_or(-1),
            })
            .collect();
        Self {
            ticket: Some(m.ticket.to_string()),
            token: m.token,
            match_id: m.match_id.map(|id| id.to_string()),
            users,
            self_presence: Some(m.self_user.presence),
            ..Self::new(QM_EVENT_MATCHMAKER_MATCHED, 0)
        }
    }
}

/// Properties in the shape `qm_matchmaker_add` takes them.
fn properties_json(
    strings: &std::collections::BTreeMap<String, String>,
    numbers: &std::collections::BTreeMap<String, f64>,
) -> String {
    serde_json::json!({ "string": strings, "numeric": numbers }).to_string()
}

#[cfg(test)]
#[path = "item_tests.rs"]
pub(crate) mod tests;
