//! The control-stream envelope and every message it can carry.
//!
//! A client sends [`ClientEnvelope`]s holding a [`Request`]; the server sends
//! [`ServerEnvelope`]s holding either a [`Response`] (with the request's `cid`) or an
//! [`Event`] it pushes on its own (with no `cid`). Enum variants are encoded by their
//! position, so new variants are only ever appended.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{
    error::ErrorCode,
    ids::{MatchId, PartyId, SessionId, TicketId, UserId},
};

/// What a client sends on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientEnvelope {
    /// Correlation id chosen by the client; the reply carries the same value. `None` for
    /// fire-and-forget requests, which get no reply on success.
    pub cid: Option<u32>,
    /// The request.
    pub body: Request,
}

/// What the server sends on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerEnvelope {
    /// The `cid` of the request this answers; `None` on pushed events.
    pub cid: Option<u32>,
    /// A response or an event.
    pub body: ServerBody,
}

/// The two kinds of server message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerBody {
    /// The answer to a request.
    Response(Response),
    /// Something that happened, pushed by the server (protocol `quicmatch/1`).
    Event(Event),
    /// A pushed event with its per-session sequence number (protocol `quicmatch/2`):
    /// 1 for the session's first event, one more for each after it, across resumes. A
    /// client remembers the last one it processed and presents it in
    /// [`Credentials::Resume`], and the server replays what came after.
    Sequenced {
        /// This event's number in the session.
        seq: u64,
        /// The event.
        event: Event,
    },
}

/// How a client proves who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Credentials {
    /// A device id: 10 to 128 bytes, no whitespace or control characters.
    Device {
        /// The device id.
        id: String,
    },
    /// A custom id from the game's own account system: 6 to 128 bytes, no whitespace or
    /// control characters.
    Custom {
        /// The custom id.
        id: String,
    },
    /// The token of a session whose connection dropped: within the server's reconnect
    /// grace period, the same session resumes with its matches, party and tickets.
    SessionToken {
        /// The token from [`SessionInfo::token`].
        token: String,
    },
    /// Resume a session without losing anything (protocol `quicmatch/2`): takes over the
    /// session at once, even while its old connection still looks alive, and replays
    /// every event numbered after `last_seq` before anything new. When those events are
    /// no longer buffered the connection is closed with `RESUME_GAP`.
    Resume {
        /// The token from [`SessionInfo::token`].
        token: String,
        /// The `seq` of the last [`ServerBody::Sequenced`] event the client processed
        /// (0 when it processed none).
        last_seq: u64,
    },
}

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// The first frame of every connection.
    Authenticate {
        /// The server key shared by the game's clients (Nakama's `defaultkey`).
        server_key: String,
        /// Who the user is.
        credentials: Credentials,
        /// The display name; derived from the user id when absent.
        username: Option<String>,
    },
    /// Answered by [`Response::Pong`].
    Ping,
    /// Create a match; with a name, join it if it already exists.
    MatchCreate {
        /// Same name, same match (while it lives).
        name: Option<String>,
    },
    /// Join a live match by id.
    MatchJoin {
        /// The match.
        match_id: MatchId,
    },
    /// Leave a match; always acknowledged.
    MatchLeave {
        /// The match.
        match_id: MatchId,
    },
    /// Reliable match data, relayed over the control stream.
    MatchDataSend {
        /// The match.
        match_id: MatchId,
        /// Application-defined message kind.
        op_code: i64,
        /// Opaque payload, at most [`crate::MAX_RELIABLE_PAYLOAD`] bytes.
        data: Bytes,
        /// Only these sessions receive it; `None` means every other member.
        targets: Option<Vec<SessionId>>,
    },
    /// Put this session into the matchmaker; answered by [`Response::MatchmakerTicket`].
    MatchmakerAdd(MatchmakerAdd),
    /// Cancel one of this session's own tickets.
    MatchmakerRemove {
        /// The ticket.
        ticket: TicketId,
    },
    /// Join (or, as the first arrival, create) the match a matchmaker token names.
    MatchJoinToken {
        /// The token from [`Event::MatchmakerMatched`].
        token: String,
    },
    /// Create a party led by the caller; answered by [`Response::Party`].
    PartyCreate {
        /// Open parties admit joiners at once; closed ones queue requests for the leader.
        open: bool,
        /// Most members, 1 to 256.
        max_size: u32,
        /// Free-form text shown to members, at most 2048 bytes.
        label: Option<String>,
    },
    /// Join an open party, or ask to join a closed one.
    PartyJoin {
        /// The party.
        party_id: PartyId,
    },
    /// Leave a party (always acknowledged).
    PartyLeave {
        /// The party.
        party_id: PartyId,
    },
    /// Leader only: end the party.
    PartyClose {
        /// The party.
        party_id: PartyId,
    },
    /// Leader only: admit a pending requester.
    PartyAccept {
        /// The party.
        party_id: PartyId,
        /// The requester's session.
        session_id: SessionId,
    },
    /// Leader only: remove a member, or decline a pending request.
    PartyRemove {
        /// The party.
        party_id: PartyId,
        /// The member's or requester's session.
        session_id: SessionId,
    },
    /// Leader only: make another member the leader.
    PartyPromote {
        /// The party.
        party_id: PartyId,
        /// The new leader's session.
        session_id: SessionId,
    },
    /// Leader only: list pending join requests.
    PartyJoinRequestList {
        /// The party.
        party_id: PartyId,
    },
    /// Leader only: open or close the party, or change its label.
    PartyUpdate {
        /// The party.
        party_id: PartyId,
        /// The new open flag, if it changes.
        open: Option<bool>,
        /// The new label, if it changes.
        label: Option<String>,
    },
    /// Reliable data to every other member.
    PartyDataSend {
        /// The party.
        party_id: PartyId,
        /// Application-defined message kind.
        op_code: i64,
        /// Opaque payload, at most [`crate::MAX_RELIABLE_PAYLOAD`] bytes.
        data: Bytes,
    },
    /// Leader only: one matchmaker ticket holding every member.
    PartyMatchmakerAdd {
        /// The party.
        party_id: PartyId,
        /// The ticket's query, counts and properties.
        request: MatchmakerAdd,
    },
    /// Leader only: cancel one of the party's tickets.
    PartyMatchmakerRemove {
        /// The party.
        party_id: PartyId,
        /// The ticket.
        ticket: TicketId,
    },
    /// Create a relayed match with a label, a size limit or privacy (and, with a
    /// name, join it if it already exists, as `MatchCreate`).
    MatchCreateWith {
        /// Same name, same match (while it lives).
        name: Option<String>,
        /// Free text shown in listings, usually JSON; at most [`crate::MAX_LABEL_LEN`]
        /// bytes.
        label: Option<String>,
        /// Most members (2 to the server's `matches.max_size`); `None`: the server's.
        max_size: Option<u32>,
        /// Joinable by id but never listed.
        private: bool,
    },
    /// Join a live match by id, with metadata an authoritative match's `join_attempt`
    /// sees.
    MatchJoinWith {
        /// The match.
        match_id: MatchId,
        /// At most [`crate::MAX_METADATA_ENTRIES`] entries, keys and values bounded
        /// like matchmaker properties.
        metadata: BTreeMap<String, String>,
    },
    /// List joinable matches; answered by [`Response::MatchList`].
    MatchList(MatchListRequest),
    /// Call a server function by name; answered by [`Response::Rpc`].
    Rpc {
        /// The function's registered name.
        id: String,
        /// Its input, usually JSON; at most [`crate::MAX_RPC_PAYLOAD`] bytes.
        payload: String,
    },
    /// [`Request::MatchmakerAdd`] with options (roles, teams, widening, expiry);
    /// answered by [`Response::MatchmakerTicket`].
    MatchmakerAddWith {
        /// The ticket's query, counts and properties.
        request: MatchmakerAdd,
        /// The options.
        options: crate::MatchmakerOptions,
    },
    /// [`Request::PartyMatchmakerAdd`] with options; answered by
    /// [`Response::PartyMatchmakerTicket`].
    PartyMatchmakerAddWith {
        /// The party.
        party_id: PartyId,
        /// The ticket's query, counts and properties.
        request: MatchmakerAdd,
        /// The options.
        options: crate::MatchmakerOptions,
    },
    /// [`Request::MatchCreateWith`] plus latest-state op codes: the server keeps each
    /// member's newest broadcast under these op codes and sends them to a member who
    /// joins later, right after its `Match` reply.
    MatchCreateWithLatest {
        /// Same name, same match (while it lives).
        name: Option<String>,
        /// Free text shown in listings; at most [`crate::MAX_LABEL_LEN`] bytes.
        label: Option<String>,
        /// Most members; `None`: the server's.
        max_size: Option<u32>,
        /// Joinable by id but never listed.
        private: bool,
        /// At most [`crate::MAX_LATEST_OP_CODES`] op codes.
        latest_op_codes: Vec<i64>,
    },
    /// Write objects the caller owns, all or none; answered by [`Response::StorageAcks`].
    StorageWrite {
        /// 1 to [`crate::MAX_STORAGE_BATCH`] objects, each named once.
        objects: Vec<crate::StorageWriteObject>,
    },
    /// Read objects; answered by [`Response::StorageObjects`] with those that exist and
    /// the caller may read.
    StorageRead {
        /// 1 to [`crate::MAX_STORAGE_BATCH`] objects.
        ids: Vec<crate::StorageObjectId>,
    },
    /// List a collection's objects the caller may read; answered by
    /// [`Response::StorageList`].
    StorageList(crate::StorageListRequest),
    /// Delete objects the caller owns, all or none; answered by [`Response::Ack`].
    StorageDelete {
        /// 1 to [`crate::MAX_STORAGE_BATCH`] objects, each named once.
        objects: Vec<crate::StorageDeleteObject>,
    },
}

/// What a match listing asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchListRequest {
    /// Most matches returned, 1 to 100.
    pub limit: u32,
    /// Only authoritative (`Some(true)`) or only relayed (`Some(false)`) matches.
    pub authoritative: Option<bool>,
    /// Only matches whose label is exactly this.
    pub label: Option<String>,
    /// Only matches with at least this many members.
    pub min_size: Option<u32>,
    /// Only matches with at most this many members.
    pub max_size: Option<u32>,
    /// The matchmaker's query language over the label parsed as JSON, fields prefixed
    /// `label.` (nested keys dotted); a label that is not JSON is the field `label`.
    pub query: Option<String>,
}

/// One match in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchListing {
    /// The match.
    pub match_id: MatchId,
    /// Whether server code runs it.
    pub authoritative: bool,
    /// Its label, if any.
    pub label: Option<String>,
    /// Members now.
    pub size: u32,
    /// Most members.
    pub max_size: u32,
    /// Ticks per second (0 for relayed matches).
    pub tick_rate: u32,
    /// The registered handler's name (empty for relayed matches).
    pub handler: String,
}

/// A matchmaker ticket request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchmakerAdd {
    /// Who this ticket accepts, in the query language; empty means `*`.
    pub query: String,
    /// Smallest acceptable match, this session included (at least 2).
    pub min_count: u32,
    /// Largest acceptable match; the matchmaker tries this size first.
    pub max_count: u32,
    /// Match sizes must be a multiple of this; `None` means 1.
    pub count_multiple: Option<u32>,
    /// String properties others' queries see.
    pub string_properties: BTreeMap<String, String>,
    /// Numeric properties others' queries see.
    pub numeric_properties: BTreeMap<String, f64>,
}

impl Request {
    /// How many request kinds this version knows; indices at or above it are unknown.
    pub const KINDS: u32 = 32;

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Authenticate { .. } => "authenticate",
            Self::Ping => "ping",
            Self::MatchCreate { .. } => "match_create",
            Self::MatchJoin { .. } => "match_join",
            Self::MatchLeave { .. } => "match_leave",
            Self::MatchDataSend { .. } => "match_data_send",
            Self::MatchmakerAdd(_) => "matchmaker_add",
            Self::MatchmakerRemove { .. } => "matchmaker_remove",
            Self::MatchJoinToken { .. } => "match_join_token",
            Self::PartyCreate { .. } => "party_create",
            Self::PartyJoin { .. } => "party_join",
            Self::PartyLeave { .. } => "party_leave",
            Self::PartyClose { .. } => "party_close",
            Self::PartyAccept { .. } => "party_accept",
            Self::PartyRemove { .. } => "party_remove",
            Self::PartyPromote { .. } => "party_promote",
            Self::PartyJoinRequestList { .. } => "party_join_request_list",
            Self::PartyUpdate { .. } => "party_update",
            Self::PartyDataSend { .. } => "party_data_send",
            Self::PartyMatchmakerAdd { .. } => "party_matchmaker_add",
            Self::PartyMatchmakerRemove { .. } => "party_matchmaker_remove",
            Self::MatchCreateWith { .. } => "match_create_with",
            Self::MatchJoinWith { .. } => "match_join_with",
            Self::MatchList(_) => "match_list",
            Self::Rpc { .. } => "rpc",
            Self::MatchmakerAddWith { .. } => "matchmaker_add_with",
            Self::PartyMatchmakerAddWith { .. } => "party_matchmaker_add_with",
            Self::MatchCreateWithLatest { .. } => "match_create_with_latest",
            Self::StorageWrite { .. } => "storage_write",
            Self::StorageRead { .. } => "storage_read",
            Self::StorageList(_) => "storage_list",
            Self::StorageDelete { .. } => "storage_delete",
        }
    }

    /// The party a party request acts on (`None` for a create and for every request
    /// that is not a party's).
    pub fn party_id(&self) -> Option<PartyId> {
        match self {
            Self::PartyJoin { party_id }
            | Self::PartyLeave { party_id }
            | Self::PartyClose { party_id }
            | Self::PartyAccept { party_id, .. }
            | Self::PartyRemove { party_id, .. }
            | Self::PartyPromote { party_id, .. }
            | Self::PartyJoinRequestList { party_id }
            | Self::PartyUpdate { party_id, .. }
            | Self::PartyDataSend { party_id, .. }
            | Self::PartyMatchmakerAdd { party_id, .. }
            | Self::PartyMatchmakerAddWith { party_id, .. }
            | Self::PartyMatchmakerRemove { party_id, .. } => Some(*party_id),
            _ => None,
        }
    }
}

/// The server's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Authentication succeeded.
    Session(SessionInfo),
    /// The answer to [`Request::Ping`].
    Pong,
    /// The caller is in this match (reply to create and join).
    Match(MatchInfo),
    /// The request succeeded and has nothing to return.
    Ack,
    /// The request failed; nothing changed.
    Error {
        /// Stable numeric code.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
    },
    /// The ticket a `MatchmakerAdd` created.
    MatchmakerTicket {
        /// The ticket.
        ticket: TicketId,
    },
    /// The party just created.
    Party(PartyInfo),
    /// Pending join requests of a party.
    PartyJoinRequests {
        /// The party.
        party_id: PartyId,
        /// The requesters, oldest first.
        presences: Vec<Presence>,
    },
    /// The ticket a `PartyMatchmakerAdd` created.
    PartyMatchmakerTicket {
        /// The party.
        party_id: PartyId,
        /// The ticket.
        ticket: TicketId,
    },
    /// The matches a `MatchList` found, in the documented order.
    MatchList {
        /// The matches.
        matches: Vec<MatchListing>,
    },
    /// What a server function returned.
    Rpc {
        /// The function's name.
        id: String,
        /// Its output.
        payload: String,
    },
    /// The new versions a `StorageWrite` gave its objects, in request order.
    StorageAcks {
        /// One per object written.
        acks: Vec<crate::StorageObjectAck>,
    },
    /// The objects a `StorageRead` found that the caller may read, in request order.
    StorageObjects {
        /// The objects.
        objects: Vec<crate::StorageObject>,
    },
    /// One page of a `StorageList`.
    StorageList(crate::StorageObjectList),
}

/// A party as one member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyInfo {
    /// The party.
    pub party_id: PartyId,
    /// Whether joiners are admitted at once.
    pub open: bool,
    /// Most members.
    pub max_size: u32,
    /// Free-form text set by the leader.
    pub label: Option<String>,
    /// The leader.
    pub leader: Presence,
    /// Every member, in join order (the leader included).
    pub presences: Vec<Presence>,
    /// The recipient.
    pub self_presence: Presence,
}

/// The authenticated session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Stable for the same credentials.
    pub user_id: UserId,
    /// New for every connection.
    pub session_id: SessionId,
    /// The display name.
    pub username: String,
    /// A signed token naming this user and session.
    pub token: String,
    /// When the token expires, in seconds since the Unix epoch.
    pub token_expires_at: u64,
    /// Whether this connection resumed an earlier session (same session id).
    pub resumed: bool,
    /// The matches the session is in (only when resumed).
    pub matches: Vec<MatchInfo>,
}

/// One session as other players see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Presence {
    /// The user.
    pub user_id: UserId,
    /// The session (membership is per session).
    pub session_id: SessionId,
    /// The display name.
    pub username: String,
}

impl From<&Presence> for SessionId {
    fn from(p: &Presence) -> Self {
        p.session_id
    }
}

/// A presence inside a match, with the short slot number that identifies it in
/// datagram headers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Unique within the match for its whole life; never reused.
    pub slot: u32,
    /// Who it is.
    pub presence: Presence,
}

/// The state of a match as one member sees it on create or join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchInfo {
    /// The match.
    pub match_id: MatchId,
    /// The short number that names this match in datagrams.
    pub handle: u32,
    /// Number of members, including the caller.
    pub size: u32,
    /// Every member, including the caller, in join order.
    pub presences: Vec<Member>,
    /// The caller.
    pub self_presence: Member,
}

/// Something the server pushes without being asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A fire-and-forget request (or a datagram) failed.
    Error {
        /// Stable numeric code.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
    },
    /// Members joined or left a match; never sent when nothing changed.
    MatchPresence {
        /// The match.
        match_id: MatchId,
        /// Who joined.
        joins: Vec<Member>,
        /// Who left.
        leaves: Vec<Member>,
    },
    /// Reliable match data from another member.
    MatchData {
        /// The match.
        match_id: MatchId,
        /// The sender's slot in the match.
        sender_slot: u32,
        /// The match's processing order, shared by reliable and unreliable data.
        seq: u64,
        /// Application-defined message kind.
        op_code: i64,
        /// Opaque payload.
        data: Bytes,
    },
    /// The matchmaker formed a match that includes this session.
    MatchmakerMatched(MatchmakerMatched),
    /// The server cancelled a ticket this session was in (for example, a party member
    /// disconnected or the party changed).
    MatchmakerTicketCancelled {
        /// The ticket.
        ticket: TicketId,
        /// Why.
        reason: String,
    },
    /// A snapshot of a party this session was just admitted to.
    Party(PartyInfo),
    /// Members joined or left a party; never sent when nothing changed.
    PartyPresence {
        /// The party.
        party_id: PartyId,
        /// Who joined.
        joins: Vec<Presence>,
        /// Who left.
        leaves: Vec<Presence>,
    },
    /// The party has a new leader.
    PartyLeader {
        /// The party.
        party_id: PartyId,
        /// The new leader.
        presence: Presence,
    },
    /// Sessions asked to join the recipient's (closed) party.
    PartyJoinRequest {
        /// The party.
        party_id: PartyId,
        /// The requesters.
        presences: Vec<Presence>,
    },
    /// The recipient is no longer in (or waiting for) the party: it was closed, the
    /// recipient was removed, or its request was declined.
    PartyClose {
        /// The party.
        party_id: PartyId,
        /// Why.
        reason: String,
    },
    /// Data from another party member.
    PartyData {
        /// The party.
        party_id: PartyId,
        /// Who sent it.
        sender: Presence,
        /// Application-defined message kind.
        op_code: i64,
        /// Opaque payload.
        data: Bytes,
    },
    /// The party leader put the party into the matchmaker.
    PartyMatchmakerTicket {
        /// The party.
        party_id: PartyId,
        /// The ticket.
        ticket: TicketId,
    },
    /// The leader changed the party's open flag or label.
    PartyUpdate {
        /// The party.
        party_id: PartyId,
        /// Whether joiners are admitted at once.
        open: bool,
        /// The label.
        label: Option<String>,
    },
    /// An authoritative match ended (its handler ended it, failed, or the server is
    /// shutting down); the recipient is no longer in it.
    MatchEnded {
        /// The match.
        match_id: MatchId,
        /// Why.
        reason: String,
    },
    /// The matchmaker formed a match with teams that includes this session (sent instead
    /// of [`Event::MatchmakerMatched`] to tickets that asked for teams).
    MatchmakerMatchedTeams(crate::MatchmakerMatchedTeams),
}

/// A matchmaker result, sent to every matched session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchmakerMatched {
    /// The ticket of the recipient that matched.
    pub ticket: TicketId,
    /// A signed, short-lived token to join the new match with `MatchJoinToken`; absent
    /// when the server chose a match (`match_id`).
    pub token: Option<String>,
    /// A match the server created for this group; join it by id.
    pub match_id: Option<MatchId>,
    /// Every matched user, oldest ticket first.
    pub users: Vec<MatchmakerUser>,
    /// The recipient's own entry.
    pub self_user: MatchmakerUser,
}

/// One matched user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchmakerUser {
    /// Who.
    pub presence: Presence,
    /// The party the user was matched with, if any.
    pub party_id: Option<PartyId>,
    /// The ticket's string properties.
    pub string_properties: BTreeMap<String, String>,
    /// The ticket's numeric properties.
    pub numeric_properties: BTreeMap<String, f64>,
}
