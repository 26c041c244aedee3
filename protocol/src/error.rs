//! Error codes sent to clients, connection close codes, and the decode error.
//!
//! Numbers are stable: a client compares codes, never message strings. Codes 0 to 7 are
//! Nakama's `Error.code` values with the same meaning; 100 and up are ours (200s:
//! parties, 300s: storage).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable numeric error code carried by `Error` replies and error events.
///
/// It is an open set: a client must accept codes it does not know (a newer server may
/// send them) and treat them by their message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorCode(pub u32);

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// Every code this version knows, in numeric order.
            pub const ALL: &'static [Self] = &[$(Self::$name,)*];

            /// The SCREAMING_SNAKE name of a known code, `None` for an unknown one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// An unexpected failure inside the server; details are in the server log.
    RUNTIME_EXCEPTION = 0,
    /// The request kind (the envelope's top-level variant index) or datagram kind is
    /// unknown to this server. Never sent for a bad tag nested inside a request.
    UNRECOGNIZED_PAYLOAD = 1,
    /// The envelope carried no request: its body ends right after the `cid`.
    MISSING_PAYLOAD = 2,
    /// The request is malformed (a bad nested tag, a length running past the end of
    /// the frame, trailing bytes, ...) or a field is out of range; the message says which.
    BAD_INPUT = 3,
    /// No live match has this id or handle.
    MATCH_NOT_FOUND = 4,
    /// The match refused the join (for example, it is full).
    MATCH_JOIN_REJECTED = 5,
    /// No server function of that name is registered.
    RUNTIME_FUNCTION_NOT_FOUND = 6,
    /// A server function or hook returned an error.
    RUNTIME_FUNCTION_EXCEPTION = 7,
    /// A request other than `Authenticate` arrived before authentication, or a second
    /// `Authenticate` arrived after it.
    UNAUTHENTICATED = 100,
    /// The sender is not a member of the match it addressed.
    NOT_MATCH_MEMBER = 101,
    /// A payload is larger than the limit for its path (reliable data, an RPC payload, a
    /// datagram). Never sent for a control frame that does not decode: an oversized
    /// length prefix closes the connection, and an inner length past the end is
    /// `BAD_INPUT`.
    PAYLOAD_TOO_LARGE = 102,
    /// A per-session or server-wide limit would be exceeded.
    LIMIT_EXCEEDED = 103,
    /// The sender is sending faster than its allowance.
    RATE_LIMITED = 104,
    /// No such matchmaker ticket for this caller (never existed, already matched,
    /// cancelled, or someone else's).
    TICKET_NOT_FOUND = 105,
    /// No live party has that id.
    PARTY_NOT_FOUND = 200,
    /// The party is at its maximum size.
    PARTY_FULL = 201,
    /// The (closed) party already has its maximum of pending join requests.
    PARTY_JOIN_REQUESTS_FULL = 202,
    /// The caller is already a member of the party.
    PARTY_ALREADY_MEMBER = 203,
    /// The caller already has a pending join request for the party.
    PARTY_JOIN_REQUEST_DUPLICATE = 204,
    /// Only the party leader may do that.
    PARTY_NOT_LEADER = 205,
    /// The caller is not a member of the party.
    PARTY_NOT_MEMBER = 206,
    /// The target is neither a member nor a pending requester.
    PARTY_MEMBER_NOT_FOUND = 207,
    /// No pending join request from that session.
    PARTY_JOIN_REQUEST_NOT_FOUND = 208,
    /// The leader cannot remove itself (leave or close instead).
    PARTY_CANNOT_REMOVE_SELF = 209,
    /// A conditional storage write or delete named a version the object does not have
    /// (`*`: the object exists; a version: the object is absent or was written since).
    /// Nothing in the request was written.
    STORAGE_VERSION_CONFLICT = 300,
    /// A storage write or delete touches an object whose write permission the caller
    /// lacks (`NoWrite`: only server code may change it). Nothing was written.
    STORAGE_PERMISSION_DENIED = 301,
    /// A storage value is not a JSON object. Nothing was written.
    STORAGE_INVALID_JSON = 302,
    /// A storage value is larger than `MAX_STORAGE_VALUE_LEN`. Nothing was written.
    STORAGE_VALUE_TOO_LARGE = 303,
    /// The write would give the caller more objects than the server's
    /// `storage.max_objects_per_user`. Nothing was written.
    STORAGE_QUOTA_EXCEEDED = 304,
    /// The store cannot be used now (its file is held by another process, or the server
    /// is shutting down); retry later. Nothing was written.
    STORAGE_UNAVAILABLE = 305,
    /// The request needs another node of the cluster, which cannot be reached now (NATS
    /// is out, or the node did not answer in time); retry later. Local play goes on.
    CLUSTER_UNAVAILABLE = 400,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ERROR_{}", self.0),
        }
    }
}

/// Application close codes for the QUIC `CONNECTION_CLOSE` frame; the reason bytes are
/// UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u32);

macro_rules! close_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        impl CloseCode {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// The SCREAMING_SNAKE name of a known code, `None` for an unknown one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

close_codes! {
    /// A normal close by either side.
    NORMAL = 0,
    /// Wrong server key, an invalid device or custom id or username, a resume that is no
    /// longer possible, or a first frame that decodes but is not `Authenticate`.
    AUTH_FAILED = 1,
    /// No `Authenticate` frame arrived in time.
    AUTH_TIMEOUT = 2,
    /// The peer broke the framing (an oversized length prefix), sent a first frame that
    /// does not decode, or ended the control stream before authenticating. (A second
    /// stream is refused by QUIC's stream limits instead.)
    PROTOCOL_ERROR = 3,
    /// The session's outbound queue overflowed: it reads too slowly.
    SLOW_CONSUMER = 4,
    /// The peer kept exceeding its rate limits.
    RATE_LIMITED = 5,
    /// The server is shutting down.
    SERVER_SHUTDOWN = 6,
    /// The server is at its connection limit.
    SERVER_FULL = 7,
    /// Another connection took this session over: a resume with the session's token,
    /// or (with `session.single_socket`) a new connection of the same user.
    SESSION_REPLACED = 8,
    /// A resume asked for events the server no longer buffers; start a fresh session.
    RESUME_GAP = 9,
    /// Nothing was heard from the client for `session.idle_timeout`.
    TIMED_OUT = 10,
    /// The server is stopping and has recorded this session: resume it with its token
    /// once the server is back (within `session.reconnect_grace` of its restart).
    SERVER_RESTARTING = 11,
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "CLOSE_{}", self.0),
        }
    }
}

/// Why a frame or datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix announces more than the frame limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input ended inside a field.
    #[error("truncated input")]
    Truncated,
    /// The message kind is not one this version knows.
    #[error("unknown message kind {0}")]
    UnknownKind(u32),
    /// The datagram's version byte is not [`crate::PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// Bytes were left over after the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// Any other malformed content.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The envelope ends right after its `cid`: it carries no request.
    #[error("missing payload: the envelope carries no request")]
    MissingPayload,
}

impl DecodeError {
    /// The error code a server answers this decode failure with.
    ///
    /// Only an unknown *top-level* kind (request or datagram kind) is
    /// `UNRECOGNIZED_PAYLOAD`, and only a length over the limit of the whole frame or
    /// datagram payload is `PAYLOAD_TOO_LARGE`; a bad nested tag or an inner length that
    /// runs past the end is `BAD_INPUT`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownKind(_) => ErrorCode::UNRECOGNIZED_PAYLOAD,
            Self::FrameTooLarge { .. } => ErrorCode::PAYLOAD_TOO_LARGE,
            Self::MissingPayload => ErrorCode::MISSING_PAYLOAD,
            Self::Truncated | Self::Version(_) | Self::TrailingBytes(_) | Self::Malformed(_) => {
                ErrorCode::BAD_INPUT
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_stable_numbers_and_names() {
        assert_eq!(ErrorCode::MATCH_NOT_FOUND.0, 4);
        assert_eq!(ErrorCode::BAD_INPUT.to_string(), "BAD_INPUT");
        assert_eq!(ErrorCode(9999).to_string(), "ERROR_9999");
        assert_eq!(CloseCode::SLOW_CONSUMER.to_string(), "SLOW_CONSUMER");
        let mut seen = std::collections::HashSet::new();
        assert!(ErrorCode::ALL.iter().all(|c| seen.insert(c.0)));
    }
}
