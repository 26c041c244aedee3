//! The types and constants C sees: the event struct and what it points to, event
//! kinds, return codes, and the server's error and close codes. Everything here is
//! `#[repr(C)]` or a plain integer, so the header cbindgen writes from it is the
//! whole contract.
#![allow(non_camel_case_types)]

use std::{ffi::c_char, ptr};

/// A connected client. Opaque: made by `qm_connect`, ended by `qm_free`.
pub struct qm_client {
    pub(crate) inner: crate::client::Client,
}

/// One session as other players see it. All three strings are NUL-terminated UTF-8
/// and NULL only where the enclosing field says the presence is absent.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qm_presence {
    /// The user (a UUID string); stable for the same device id.
    pub user_id: *const c_char,
    /// The session (a UUID string); what `qm_send_to` and the party calls take.
    pub session_id: *const c_char,
    /// The display name.
    pub username: *const c_char,
}

impl qm_presence {
    /// A presence with every field NULL: "absent".
    pub(crate) const NONE: Self = Self {
        user_id: ptr::null(),
        session_id: ptr::null(),
        username: ptr::null(),
    };
}

/// One user the matchmaker put in a group (`QM_EVENT_MATCHMAKER_MATCHED`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qm_matched_user {
    /// Who.
    pub presence: qm_presence,
    /// The party the user was matched with, or NULL.
    pub party_id: *const c_char,
    /// The ticket's properties as JSON: `{"string":{...},"numeric":{...}}`.
    pub properties_json: *const c_char,
    /// The user's team, from 0, when the tickets asked for teams; -1 otherwise.
    pub team: i32,
}

/// One match in a listing (`QM_EVENT_MATCH_LIST`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qm_match_listing {
    /// The match id.
    pub match_id: *const c_char,
    /// Its label, or NULL.
    pub label: *const c_char,
    /// The server-side handler's name; empty for a relayed match.
    pub handler: *const c_char,
    /// Members now.
    pub size: u32,
    /// Most members.
    pub max_size: u32,
    /// Ticks per second; 0 for a relayed match.
    pub tick_rate: u32,
    /// Whether server code runs the match.
    pub authoritative: bool,
}

/// One event, filled in by `qm_poll`.
///
/// `kind` says which fields mean something; the others are zero or NULL. Every
/// pointer in it (strings, `data`, arrays, and the strings inside the arrays) stays
/// valid until the next `qm_poll` or `qm_free` on the same client: copy what you keep.
/// Strings are NUL-terminated UTF-8. An array with a zero length has a NULL pointer.
///
/// - `QM_EVENT_MATCH`: `request`, `match_id`, `size`, `presences` (every member, this
///   client included, in join order), `self_presence`.
/// - `QM_EVENT_MATCH_PRESENCE`: `match_id`, `presences` (who joined), `leaves`.
/// - `QM_EVENT_MATCH_DATA`: `match_id`, `sender`, `op_code`, `data`/`data_len`,
///   `reliable`, `seq` (a later `seq` was processed later by the match).
/// - `QM_EVENT_MATCHMAKER_TICKET`: `request`, `ticket`, `party_id` (NULL unless the
///   ticket is a party's).
/// - `QM_EVENT_MATCHMAKER_MATCHED`: `ticket`, `token` (join with `qm_join_token`) or
///   `match_id` (join with `qm_match_join`), `users` (with their teams, when the
///   tickets asked for teams), `self_presence`.
/// - `QM_EVENT_MATCHMAKER_TICKET_CANCELLED`: `ticket`, `message`.
/// - `QM_EVENT_MATCH_ENDED`: `match_id`, `message`.
/// - `QM_EVENT_MATCH_LIST`: `request`, `matches`.
/// - `QM_EVENT_RPC`: `request`, `data`/`data_len` (the function's UTF-8 output, also
///   NUL-terminated).
/// - `QM_EVENT_PARTY`: `request` (0 when pushed), `party_id`, `open`, `max_size`,
///   `label`, `leader`, `presences` (members), `self_presence`.
/// - `QM_EVENT_PARTY_PRESENCE`: `party_id`, `presences` (who joined), `leaves`.
/// - `QM_EVENT_PARTY_LEADER`: `party_id`, `leader`.
/// - `QM_EVENT_PARTY_JOIN_REQUEST`: `request` (0 when pushed), `party_id`,
///   `presences` (the requesters).
/// - `QM_EVENT_PARTY_CLOSE`: `party_id`, `message`.
/// - `QM_EVENT_PARTY_DATA`: `party_id`, `sender`, `op_code`, `data`/`data_len`.
/// - `QM_EVENT_PARTY_MATCHMAKER_TICKET`: `party_id`, `ticket`.
/// - `QM_EVENT_PARTY_UPDATE`: `party_id`, `open`, `label`.
/// - `QM_EVENT_ACK`: `request`.
/// - `QM_EVENT_ERROR`: `request` (0 for a failure of something sent without one),
///   `code` (a `QM_CODE_*` from the server, or a negative `QM_ERR_*`), `message`.
/// - `QM_EVENT_RECONNECTING`: `code` (a `QM_CLOSE_*`, or `QM_ERR_DISCONNECTED`),
///   `message`.
/// - `QM_EVENT_RECONNECTED`: `attempts`.
/// - `QM_EVENT_DISCONNECTED`: `code` (a `QM_CLOSE_*` when the server closed the
///   connection, `QM_ERR_DISCONNECTED` otherwise), `message`. The last event.
/// - `QM_EVENT_UNKNOWN`: `message` describes an event this library version does not
///   know; ignore it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct qm_event {
    /// A `QM_EVENT_*` constant.
    pub kind: i32,
    /// The request this event answers (the id a request function returned), or 0.
    pub request: u32,
    /// An error, close or result code; see the kinds above.
    pub code: i32,
    /// A match id, or NULL.
    pub match_id: *const c_char,
    /// A party id, or NULL.
    pub party_id: *const c_char,
    /// A matchmaker ticket id, or NULL.
    pub ticket: *const c_char,
    /// A matchmaker token for `qm_join_token`, or NULL.
    pub token: *const c_char,
    /// A human-readable message or reason, or NULL.
    pub message: *const c_char,
    /// A party label, or NULL.
    pub label: *const c_char,
    /// Who sent match or party data.
    pub sender: qm_presence,
    /// A party's leader.
    pub leader: qm_presence,
    /// This client, as the match, party or matchmaker sees it.
    pub self_presence: qm_presence,
    /// The application-defined message kind of match or party data.
    pub op_code: i64,
    /// Payload bytes, or NULL.
    pub data: *const u8,
    /// Length of `data` in bytes.
    pub data_len: usize,
    /// The match's processing order of this data.
    pub seq: u64,
    /// Members of a match; a party's largest size is `max_size`.
    pub size: u32,
    /// A party's largest size.
    pub max_size: u32,
    /// Connection attempts a resume took.
    pub attempts: u32,
    /// Whether match data came over the reliable path.
    pub reliable: bool,
    /// Whether a party admits joiners at once.
    pub open: bool,
    /// Presences: members, joiners or requesters (see the kinds above).
    pub presences: *const qm_presence,
    /// Length of `presences`.
    pub presences_len: usize,
    /// Presences that left.
    pub leaves: *const qm_presence,
    /// Length of `leaves`.
    pub leaves_len: usize,
    /// Matched users.
    pub users: *const qm_matched_user,
    /// Length of `users`.
    pub users_len: usize,
    /// Listed matches.
    pub matches: *const qm_match_listing,
    /// Length of `matches`.
    pub matches_len: usize,
}

impl qm_event {
    /// An event with every field zero or NULL (`QM_EVENT_NONE`).
    pub(crate) const EMPTY: Self = Self {
        kind: QM_EVENT_NONE,
        request: 0,
        code: 0,
        match_id: ptr::null(),
        party_id: ptr::null(),
        ticket: ptr::null(),
        token: ptr::null(),
        message: ptr::null(),
        label: ptr::null(),
        sender: qm_presence::NONE,
        leader: qm_presence::NONE,
        self_presence: qm_presence::NONE,
        op_code: 0,
        data: ptr::null(),
        data_len: 0,
        seq: 0,
        size: 0,
        max_size: 0,
        attempts: 0,
        reliable: false,
        open: false,
        presences: ptr::null(),
        presences_len: 0,
        leaves: ptr::null(),
        leaves_len: 0,
        users: ptr::null(),
        users_len: 0,
        matches: ptr::null(),
        matches_len: 0,
    };
}

// Event kinds (`qm_event.kind`).

/// No event: what `qm_poll` leaves in `out` when it returns 0 or a negative value.
pub const QM_EVENT_NONE: i32 = 0;
/// This client is in a match: the answer to create, join and join-by-token.
pub const QM_EVENT_MATCH: i32 = 1;
/// Members joined or left a match.
pub const QM_EVENT_MATCH_PRESENCE: i32 = 2;
/// Match data from another member.
pub const QM_EVENT_MATCH_DATA: i32 = 3;
/// A matchmaker ticket was created.
pub const QM_EVENT_MATCHMAKER_TICKET: i32 = 4;
/// The matchmaker formed a group with this client in it.
pub const QM_EVENT_MATCHMAKER_MATCHED: i32 = 5;
/// A request failed, or something sent without a request id did.
pub const QM_EVENT_ERROR: i32 = 6;
/// The connection ended and could not be resumed. Always the last event.
pub const QM_EVENT_DISCONNECTED: i32 = 7;
/// A request succeeded and has nothing else to say.
pub const QM_EVENT_ACK: i32 = 8;
/// The server cancelled one of this client's tickets.
pub const QM_EVENT_MATCHMAKER_TICKET_CANCELLED: i32 = 9;
/// A server-run match ended; this client is no longer in it.
pub const QM_EVENT_MATCH_ENDED: i32 = 10;
/// The answer to `qm_match_list`.
pub const QM_EVENT_MATCH_LIST: i32 = 11;
/// The answer to `qm_rpc`.
pub const QM_EVENT_RPC: i32 = 12;
/// A party snapshot: the answer to `qm_party_create`, or pushed when admitted.
pub const QM_EVENT_PARTY: i32 = 13;
/// Members joined or left a party.
pub const QM_EVENT_PARTY_PRESENCE: i32 = 14;
/// A party has a new leader.
pub const QM_EVENT_PARTY_LEADER: i32 = 15;
/// Sessions asked to join this client's party, or the answer to
/// `qm_party_join_requests`.
pub const QM_EVENT_PARTY_JOIN_REQUEST: i32 = 16;
/// This client is no longer in (or waiting for) a party.
pub const QM_EVENT_PARTY_CLOSE: i32 = 17;
/// Data from another party member.
pub const QM_EVENT_PARTY_DATA: i32 = 18;
/// The party leader put the party into the matchmaker.
pub const QM_EVENT_PARTY_MATCHMAKER_TICKET: i32 = 19;
/// The party leader changed the open flag or the label.
pub const QM_EVENT_PARTY_UPDATE: i32 = 20;
/// The connection was lost; the client is resuming its session.
pub const QM_EVENT_RECONNECTING: i32 = 21;
/// The session resumed: same session, same matches, no event lost.
pub const QM_EVENT_RECONNECTED: i32 = 22;
/// An event this version of the library does not know. Ignore it.
pub const QM_EVENT_UNKNOWN: i32 = 100;

// Return values of the functions that return `int32_t`, and negative `qm_event.code`s.

/// Success.
pub const QM_OK: i32 = 0;
/// A required pointer argument was NULL.
pub const QM_ERR_NULL: i32 = -1;
/// An argument is invalid: not UTF-8, not an id, out of range, malformed JSON.
pub const QM_ERR_BAD_INPUT: i32 = -2;
/// This client is not in that match.
pub const QM_ERR_NOT_MEMBER: i32 = -3;
/// The payload is too large for the path (1024 bytes unreliable, 32 KiB reliable).
pub const QM_ERR_TOO_LARGE: i32 = -4;
/// The connection's send queue is full; try again next frame.
pub const QM_ERR_BUSY: i32 = -5;
/// `qm_close` was called on this client.
pub const QM_ERR_CLOSED: i32 = -6;
/// The connection is gone (and, in an event, there was no close code).
pub const QM_ERR_DISCONNECTED: i32 = -7;
/// No answer within the request timeout (10 s).
pub const QM_ERR_TIMEOUT: i32 = -8;
/// A failure inside the library (a caught panic, an unexpected reply).
pub const QM_ERR_INTERNAL: i32 = -9;

// The server's error codes (`qm_event.code` of `QM_EVENT_ERROR`, when not negative).
// The set is open: treat an unknown code by its message.

/// An unexpected failure inside the server.
pub const QM_CODE_RUNTIME_EXCEPTION: i32 = 0;
/// The server does not know the request kind.
pub const QM_CODE_UNRECOGNIZED_PAYLOAD: i32 = 1;
/// The request was empty.
pub const QM_CODE_MISSING_PAYLOAD: i32 = 2;
/// The request is malformed or a field is out of range (also given by this library
/// for arguments it rejects before sending).
pub const QM_CODE_BAD_INPUT: i32 = 3;
/// No live match has this id.
pub const QM_CODE_MATCH_NOT_FOUND: i32 = 4;
/// The match refused the join (for example, it is full).
pub const QM_CODE_MATCH_JOIN_REJECTED: i32 = 5;
/// No server function of that name.
pub const QM_CODE_RUNTIME_FUNCTION_NOT_FOUND: i32 = 6;
/// A server function or hook returned an error.
pub const QM_CODE_RUNTIME_FUNCTION_EXCEPTION: i32 = 7;
/// Not authenticated.
pub const QM_CODE_UNAUTHENTICATED: i32 = 100;
/// Not a member of the match addressed.
pub const QM_CODE_NOT_MATCH_MEMBER: i32 = 101;
/// A payload is larger than its path allows.
pub const QM_CODE_PAYLOAD_TOO_LARGE: i32 = 102;
/// A per-session or server-wide limit would be exceeded.
pub const QM_CODE_LIMIT_EXCEEDED: i32 = 103;
/// Sending faster than allowed.
pub const QM_CODE_RATE_LIMITED: i32 = 104;
/// No such matchmaker ticket for this client.
pub const QM_CODE_TICKET_NOT_FOUND: i32 = 105;
/// No live party has that id.
pub const QM_CODE_PARTY_NOT_FOUND: i32 = 200;
/// The party is full.
pub const QM_CODE_PARTY_FULL: i32 = 201;
/// The party has its maximum of pending join requests.
pub const QM_CODE_PARTY_JOIN_REQUESTS_FULL: i32 = 202;
/// Already a member of the party.
pub const QM_CODE_PARTY_ALREADY_MEMBER: i32 = 203;
/// A join request for the party is already pending.
pub const QM_CODE_PARTY_JOIN_REQUEST_DUPLICATE: i32 = 204;
/// Only the party leader may do that.
pub const QM_CODE_PARTY_NOT_LEADER: i32 = 205;
/// Not a member of the party.
pub const QM_CODE_PARTY_NOT_MEMBER: i32 = 206;
/// The target is neither a member nor a pending requester.
pub const QM_CODE_PARTY_MEMBER_NOT_FOUND: i32 = 207;
/// No pending join request from that session.
pub const QM_CODE_PARTY_JOIN_REQUEST_NOT_FOUND: i32 = 208;
/// The leader cannot remove itself.
pub const QM_CODE_PARTY_CANNOT_REMOVE_SELF: i32 = 209;

// Connection close codes (`qm_event.code` of `QM_EVENT_DISCONNECTED` and
// `QM_EVENT_RECONNECTING`, when not negative).

/// A normal close.
pub const QM_CLOSE_NORMAL: i32 = 0;
/// Wrong server key, invalid credentials, or a resume no longer possible.
pub const QM_CLOSE_AUTH_FAILED: i32 = 1;
/// Authentication did not arrive in time.
pub const QM_CLOSE_AUTH_TIMEOUT: i32 = 2;
/// The protocol was broken.
pub const QM_CLOSE_PROTOCOL_ERROR: i32 = 3;
/// The client read too slowly: poll every frame.
pub const QM_CLOSE_SLOW_CONSUMER: i32 = 4;
/// The client kept exceeding its rate limits.
pub const QM_CLOSE_RATE_LIMITED: i32 = 5;
/// The server is shutting down.
pub const QM_CLOSE_SERVER_SHUTDOWN: i32 = 6;
/// The server is at its connection limit.
pub const QM_CLOSE_SERVER_FULL: i32 = 7;
/// Another connection took this session over.
pub const QM_CLOSE_SESSION_REPLACED: i32 = 8;
/// A resume asked for events the server no longer has.
pub const QM_CLOSE_RESUME_GAP: i32 = 9;
/// The server heard nothing from this client for too long.
pub const QM_CLOSE_TIMED_OUT: i32 = 10;
/// The server is restarting with this session recorded; the client resumes it.
pub const QM_CLOSE_SERVER_RESTARTING: i32 = 11;

/// The name of an error event's code: a `QM_ERR_*` when negative, else the server's
/// name for a `QM_CODE_*` (so 0 is `RUNTIME_EXCEPTION`).
pub(crate) fn code_name(code: i32) -> &'static std::ffi::CStr {
    match code {
        QM_ERR_NULL => c"QM_ERR_NULL",
        QM_ERR_BAD_INPUT => c"QM_ERR_BAD_INPUT",
        QM_ERR_NOT_MEMBER => c"QM_ERR_NOT_MEMBER",
        QM_ERR_TOO_LARGE => c"QM_ERR_TOO_LARGE",
        QM_ERR_BUSY => c"QM_ERR_BUSY",
        QM_ERR_CLOSED => c"QM_ERR_CLOSED",
        QM_ERR_DISCONNECTED => c"QM_ERR_DISCONNECTED",
        QM_ERR_TIMEOUT => c"QM_ERR_TIMEOUT",
        QM_ERR_INTERNAL => c"QM_ERR_INTERNAL",
        _ => server_code_name(code),
    }
}

/// The names of the server's codes.
fn server_code_name(code: i32) -> &'static std::ffi::CStr {
    match code {
        QM_CODE_RUNTIME_EXCEPTION => c"RUNTIME_EXCEPTION",
        QM_CODE_UNRECOGNIZED_PAYLOAD => c"UNRECOGNIZED_PAYLOAD",
        QM_CODE_MISSING_PAYLOAD => c"MISSING_PAYLOAD",
        QM_CODE_BAD_INPUT => c"BAD_INPUT",
        QM_CODE_MATCH_NOT_FOUND => c"MATCH_NOT_FOUND",
        QM_CODE_MATCH_JOIN_REJECTED => c"MATCH_JOIN_REJECTED",
        QM_CODE_RUNTIME_FUNCTION_NOT_FOUND => c"RUNTIME_FUNCTION_NOT_FOUND",
        QM_CODE_RUNTIME_FUNCTION_EXCEPTION => c"RUNTIME_FUNCTION_EXCEPTION",
        QM_CODE_UNAUTHENTICATED => c"UNAUTHENTICATED",
        QM_CODE_NOT_MATCH_MEMBER => c"NOT_MATCH_MEMBER",
        QM_CODE_PAYLOAD_TOO_LARGE => c"PAYLOAD_TOO_LARGE",
        QM_CODE_LIMIT_EXCEEDED => c"LIMIT_EXCEEDED",
        QM_CODE_RATE_LIMITED => c"RATE_LIMITED",
        QM_CODE_TICKET_NOT_FOUND => c"TICKET_NOT_FOUND",
        QM_CODE_PARTY_NOT_FOUND => c"PARTY_NOT_FOUND",
        QM_CODE_PARTY_FULL => c"PARTY_FULL",
        QM_CODE_PARTY_JOIN_REQUESTS_FULL => c"PARTY_JOIN_REQUESTS_FULL",
        QM_CODE_PARTY_ALREADY_MEMBER => c"PARTY_ALREADY_MEMBER",
        QM_CODE_PARTY_JOIN_REQUEST_DUPLICATE => c"PARTY_JOIN_REQUEST_DUPLICATE",
        QM_CODE_PARTY_NOT_LEADER => c"PARTY_NOT_LEADER",
        QM_CODE_PARTY_NOT_MEMBER => c"PARTY_NOT_MEMBER",
        QM_CODE_PARTY_MEMBER_NOT_FOUND => c"PARTY_MEMBER_NOT_FOUND",
        QM_CODE_PARTY_JOIN_REQUEST_NOT_FOUND => c"PARTY_JOIN_REQUEST_NOT_FOUND",
        QM_CODE_PARTY_CANNOT_REMOVE_SELF => c"PARTY_CANNOT_REMOVE_SELF",
        _ => c"UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use quicmatch_client::ErrorCode;

    use super::*;

    /// Every `QM_CODE_*` is the server's code of the same name and number.
    #[test]
    fn server_codes_match_the_protocol() {
        let ours = (-20..=300).filter(|c| *c >= 0 && server_code_name(*c) != c"UNKNOWN");
        let mut count = 0;
        for code in ours {
            let name = server_code_name(code).to_str().unwrap_or_default();
            let theirs = ErrorCode(u32::try_from(code).unwrap_or(u32::MAX)).name();
            assert_eq!(theirs, Some(name), "code {code}");
            count += 1;
        }
        assert_eq!(count, 24);
    }

    #[test]
    fn local_codes_are_negative_and_named() {
        for code in -9..=-1 {
            assert!(code_name(code).to_bytes().starts_with(b"QM_ERR_"), "{code}");
        }
        assert_eq!(code_name(0), c"RUNTIME_EXCEPTION");
        assert_eq!(code_name(12345), c"UNKNOWN");
    }

    #[test]
    fn close_codes_match_the_protocol() {
        use quicmatch_client::CloseCode;
        let pairs = [
            (QM_CLOSE_NORMAL, CloseCode::NORMAL),
            (QM_CLOSE_AUTH_FAILED, CloseCode::AUTH_FAILED),
            (QM_CLOSE_AUTH_TIMEOUT, CloseCode::AUTH_TIMEOUT),
            (QM_CLOSE_PROTOCOL_ERROR, CloseCode::PROTOCOL_ERROR),
            (QM_CLOSE_SLOW_CONSUMER, CloseCode::SLOW_CONSUMER),
            (QM_CLOSE_RATE_LIMITED, CloseCode::RATE_LIMITED),
            (QM_CLOSE_SERVER_SHUTDOWN, CloseCode::SERVER_SHUTDOWN),
            (QM_CLOSE_SERVER_FULL, CloseCode::SERVER_FULL),
            (QM_CLOSE_SESSION_REPLACED, CloseCode::SESSION_REPLACED),
            (QM_CLOSE_RESUME_GAP, CloseCode::RESUME_GAP),
            (QM_CLOSE_TIMED_OUT, CloseCode::TIMED_OUT),
            (QM_CLOSE_SERVER_RESTARTING, CloseCode::SERVER_RESTARTING),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(i64::from(ours), i64::from(theirs.0), "{theirs}");
        }
    }
}
