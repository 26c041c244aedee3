//! The quicmatch wire protocol: everything that crosses the network, and nothing that runs.
//!
//! Both the server and the client SDK import their wire types from here, so the two can
//! never disagree about a byte. The crate has no async runtime and no I/O; the optional
//! `codec` feature adds a `tokio-util` codec for the control-stream framing.
//!
//! # Layout
//! - [`ids`]: newtype identifiers (`UserId`, `SessionId`, `MatchId`, ...).
//! - [`envelope`]: the control-stream envelope and the `Request`, `Response` and `Event`
//!   enums.
//! - [`error`]: stable numeric error codes, connection close codes, decode errors.
//! - [`frame`]: control-stream framing and the one place that calls bincode.
//! - [`datagram`]: hand-written headers of the unreliable match-data datagrams.
//! - [`bundle`]: the payload of redundant datagrams (a sender's newest messages).
//! - [`matchmaking`]: matchmaker ticket options (roles, teams, widening, expiry).
//! - [`storage`]: storage objects, their permissions and the storage requests' parts.
//!
//! `PROTOCOL.md` at the repository root describes all of it byte by byte.
#![warn(missing_docs)]

pub mod bundle;
pub mod datagram;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod ids;
pub mod matchmaking;
pub mod storage;

pub use envelope::{
    ClientEnvelope, Credentials, Event, MatchInfo, MatchListRequest, MatchListing, MatchmakerAdd,
    MatchmakerMatched, MatchmakerUser, Member, PartyInfo, Presence, Request, Response, ServerBody,
    ServerEnvelope, SessionInfo,
};
pub use error::{CloseCode, DecodeError, ErrorCode};
pub use ids::{MatchId, PartyId, SessionId, TicketId, UserId};
pub use matchmaking::{Composition, MatchmakerMatchedTeams, MatchmakerOptions, Teams};
pub use storage::{
    ReadPermission, StorageDeleteObject, StorageListRequest, StorageObject, StorageObjectAck,
    StorageObjectId, StorageObjectList, StorageWriteObject, WritePermission,
};

/// The ALPN protocol name of version 1; a peer offering neither version fails the
/// handshake.
pub const ALPN: &[u8] = b"quicmatch/1";

/// The ALPN protocol name of version 2: version 1 plus sequenced events
/// ([`envelope::ServerBody::Sequenced`]) and lossless resume
/// ([`envelope::Credentials::Resume`]). Servers accept both; the Rust SDK offers this one.
pub const ALPN_V2: &[u8] = b"quicmatch/2";

/// The ALPN protocol name of version 3: version 2 plus *lanes*: the server sends
/// reliable match data relayed from one member of a relayed match on a unidirectional
/// stream of its own per (match, sender), so a lost packet of one sender's data never
/// holds back another's. Lane frames are the same sequenced event frames as on the
/// control stream, after one [`LANE_STREAM`] byte. Servers accept all three versions;
/// the Rust SDK offers this one first.
pub const ALPN_V3: &[u8] = b"quicmatch/3";

/// First byte of a server-opened unidirectional stream that is a lane (protocol 3).
pub const LANE_STREAM: u8 = 0x01;

/// Most lanes the server keeps open to one session; data for further (match, sender)
/// pairs goes on the control stream. A protocol 3 client allows at least this many
/// concurrent unidirectional streams.
pub const MAX_LANES: u32 = 256;

/// Version byte at the start of every datagram.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest control-stream frame body in bytes (the 4-byte length prefix excluded).
/// Checked against the length prefix before any buffer is allocated.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Largest match-data payload carried by one unreliable datagram. Leaves room for the
/// largest header inside a QUIC datagram on a path with the minimum 1200-byte MTU.
pub const MAX_DATAGRAM_PAYLOAD: usize = 1024;

/// Largest match-data payload sent reliably over the control stream.
pub const MAX_RELIABLE_PAYLOAD: usize = 32 * 1024;

/// Largest number of recipients one match-data message may name.
pub const MAX_TARGETS: usize = 64;

/// Largest match name, in bytes.
pub const MAX_MATCH_NAME_LEN: usize = 128;

/// Largest username, in bytes.
pub const MAX_USERNAME_LEN: usize = 128;

/// Device ids are 10 to 128 bytes, as in Nakama.
pub const DEVICE_ID_LEN: std::ops::RangeInclusive<usize> = 10..=128;

/// Custom ids are 6 to 128 bytes, as in Nakama.
pub const CUSTOM_ID_LEN: std::ops::RangeInclusive<usize> = 6..=128;

/// Largest server key, in bytes.
pub const MAX_SERVER_KEY_LEN: usize = 128;

/// Largest session or match token, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Largest party size.
pub const MAX_PARTY_SIZE: usize = 256;

/// Longest party label, in bytes.
pub const MAX_PARTY_LABEL_LEN: usize = 2048;

/// Longest matchmaker query, in bytes.
pub const MAX_QUERY_LEN: usize = 1024;

/// Most properties (string and numeric together) on one matchmaker ticket.
pub const MAX_PROPERTIES: usize = 32;

/// Longest property key, in bytes.
pub const MAX_PROPERTY_KEY_LEN: usize = 64;

/// Longest string property value, in bytes.
pub const MAX_PROPERTY_VALUE_LEN: usize = 256;

/// Longest match label, in bytes.
pub const MAX_LABEL_LEN: usize = 2048;

/// Most metadata entries on a join.
pub const MAX_METADATA_ENTRIES: usize = 32;

/// Largest RPC payload, either way, in bytes.
pub const MAX_RPC_PAYLOAD: usize = 32 * 1024;

/// Longest RPC name, in bytes.
pub const MAX_RPC_ID_LEN: usize = 128;

/// Largest parameters or signal payload given to a match handler, in bytes.
pub const MAX_HANDLER_PARAMS: usize = 32 * 1024;

/// Most matches one listing returns.
pub const MAX_LIST_LIMIT: u32 = 100;

/// Largest error or close message the server sends, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Most values one matchmaker composition may count.
pub const MAX_COMPOSITION_VALUES: usize = 16;

/// Most teams one matchmaker ticket may ask for.
pub const MAX_TEAMS: u32 = 16;

/// Most passes a matchmaker ticket's `fallback_after` or `expires_after` may name.
pub const MAX_TICKET_PASSES: u32 = 1_000_000;

/// Most latest-state op codes one match may keep.
pub const MAX_LATEST_OP_CODES: usize = 8;

/// Largest message a match keeps as latest state, in bytes.
pub const MAX_LATEST_PAYLOAD: usize = MAX_DATAGRAM_PAYLOAD;

/// Longest storage collection name, in bytes.
pub const MAX_STORAGE_COLLECTION_LEN: usize = 128;

/// Longest storage key, in bytes.
pub const MAX_STORAGE_KEY_LEN: usize = 128;

/// Largest storage value (a JSON object as text), in bytes: 63 KiB, so that one object
/// with its collection, key, owner, version and times always fits in one control frame
/// ([`MAX_FRAME_LEN`]), written or read.
pub const MAX_STORAGE_VALUE_LEN: usize = 63 * 1024;

/// Longest version a conditional storage write or delete may name, in bytes.
pub const MAX_STORAGE_VERSION_LEN: usize = 64;

/// Most objects one storage write, read or delete names (all of them within one frame).
pub const MAX_STORAGE_BATCH: usize = 32;

/// Most objects one storage listing returns.
pub const MAX_STORAGE_LIST_LIMIT: u32 = 100;

/// Longest storage listing cursor, in bytes.
pub const MAX_STORAGE_CURSOR_LEN: usize = 256;
