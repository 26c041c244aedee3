//! What nodes of a cluster say to each other (docs/cluster.md §3): the subjects a node
//! listens on and the messages on them, encoded by the protocol crate's one codec
//! (`frame::encode_peer`, a version byte then bincode under the 64 KiB frame limit).
//! Every message names its sender's node and incarnation, and link and datagram
//! messages the incarnation they are for, so a restarted node never takes what was
//! meant for its predecessor.

use std::collections::BTreeMap;

use bytes::Bytes;
use quicmatch_protocol::{
    ErrorCode, MatchId, MatchInfo, MatchListRequest, MatchListing, PartyId, Presence, SessionId,
    TicketId,
};
use serde::{Deserialize, Serialize};

use crate::matchmaker::shared::GroupResult;

/// Requests to a node, answered by [`Reply`] within `request_timeout`.
pub(super) fn request_subject(cluster: &str, node: &str) -> String {
    format!("qm.{cluster}.n.{node}.req")
}

/// Link messages to a node: ordered and numbered.
pub(super) fn link_subject(cluster: &str, node: &str) -> String {
    format!("qm.{cluster}.n.{node}.l")
}

/// Datagrams to a node: at most once, never retried.
pub(super) fn datagram_subject(cluster: &str, node: &str) -> String {
    format!("qm.{cluster}.n.{node}.dg")
}

/// A node's name and incarnation: who sent a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Sender {
    pub(crate) node: String,
    pub(crate) incarnation: u64,
}

/// Node `node`'s incarnation `incarnation`, for the unit tests.
#[cfg(test)]
pub(super) fn sender(node: &str, incarnation: u64) -> Sender {
    Sender {
        node: node.into(),
        incarnation,
    }
}

/// A request to a node.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Request {
    pub(super) from: Sender,
    pub(super) body: RequestBody,
}

/// What a node is asked.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum RequestBody {
    /// Joins `presence`, homed on the sender, to a match this node hosts (asked of every
    /// live node at once: only the host can say yes).
    Join {
        match_id: MatchId,
        presence: Presence,
        /// The home's number for this attempt, which a `Leave` undoing it names.
        attempt: u64,
        /// For a server-run match's handler (`join_attempt`).
        metadata: BTreeMap<String, String>,
    },
    /// The matches (among those listed) a session homed on the sender is still in, as
    /// it sees them: what its resume tells the client.
    Infos {
        session: SessionId,
        matches: Vec<MatchId>,
    },
    /// Publish again the batches of the link to the sender from `seq` on: the sender
    /// found a gap.
    Replay { seq: u64 },
    /// The node's own listing for a client of the sender, ranked for merging.
    List(MatchListRequest),
    /// The matchmaker's leader formed a group with tickets of the receiver: it tells
    /// their sessions (once; a repeat delivers nothing). `placement` is the claim the
    /// leader made for the receiver on the group's token match (its revision).
    Matched {
        result: GroupResult,
        placement: Option<u64>,
    },
    /// The leader dropped tickets of the receiver (expired): their members are told.
    TicketsCancelled {
        tickets: Vec<TicketId>,
        reason: String,
    },
    /// A party request (any but a create or data) of a session homed on the sender, for
    /// a party this node hosts; a join of a party the home does not know is asked of
    /// every live node at once (only the host answers other than `PARTY_NOT_FOUND`).
    /// Answered with [`Reply::Party`].
    Party {
        presence: Presence,
        request: quicmatch_protocol::Request,
    },
}

/// One match of a node's listing, with what ranks it among other nodes' (its query
/// score, its age in nanoseconds: newer first, and its node's creation order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Listed {
    pub(crate) listing: MatchListing,
    pub(crate) score: f64,
    pub(crate) age_ns: u64,
    pub(crate) created: u64,
}

/// A refusal: the code and message the client is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Reply {
    /// The member joined; the info is as the host sees it (its handle).
    Joined(MatchInfo),
    Refused(Refusal),
    Infos(Vec<MatchInfo>),
    /// Whether what a `Replay` asked for is still kept (and is being published).
    Replaying(bool),
    /// A node's listing, in its order (trimmed from the end to fit a message).
    Listed(Vec<Listed>),
    /// A `Matched` or `TicketsCancelled` was applied.
    Done,
    /// What a `Party` request gave: the client's reply, or its refusal.
    Party(Result<Option<quicmatch_protocol::envelope::Response>, Refusal>),
}

/// One numbered batch of a link: from one incarnation to one incarnation.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LinkMsg {
    pub(super) from: Sender,
    /// The receiver's incarnation.
    pub(super) to: u64,
    /// 1, 2, ... for each (sender, receiver) incarnation pair; a gap means items lost.
    pub(super) seq: u64,
    /// A probe carries no items, only the sender's latest number, so a lost last batch
    /// shows too.
    pub(super) probe: bool,
    pub(super) items: Vec<Item>,
}

/// What a link carries, in the order it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum Item {
    /// Host to home: an event or reliable data (an encoded `Event`) for members of a
    /// match homed on the receiver, on the sender's lane (`slot`) where it has one.
    Push {
        match_id: MatchId,
        sessions: Vec<SessionId>,
        lane: Option<u32>,
        body: Bytes,
    },
    /// Home to host: reliable data a member sent to its match.
    Data {
        match_id: MatchId,
        sender: SessionId,
        op_code: i64,
        data: Bytes,
        targets: Option<Vec<SessionId>>,
    },
    /// Home to host: a member left the match, undoing join `attempt` (a join and its
    /// leave travel by different subjects and may arrive in either order).
    Leave {
        match_id: MatchId,
        session: SessionId,
        attempt: u64,
    },
    /// Host to home: the host ended the session's membership (a link it could not
    /// repair); the home tells the session with `MatchEnded`.
    Ended {
        match_id: MatchId,
        session: SessionId,
        /// The join attempt that made it a member.
        attempt: u64,
        reason: String,
    },
    /// Host to home: an event for sessions homed on the receiver that are in (or asking
    /// to join) parties of the sender, or in its parties' matchmaker tickets.
    PartyPush {
        sessions: Vec<SessionId>,
        body: Bytes,
    },
    /// Home to host: party data a member sent.
    PartyData {
        party_id: PartyId,
        sender: SessionId,
        op_code: i64,
        data: Bytes,
    },
    /// Home to host: the session ended for good: it leaves every party of the host, and
    /// a party request of it still on its way is refused.
    PartyGone { session: SessionId },
    /// Home to host, after a link reset only: the session is no longer in the party
    /// (its home told it the party closed for it).
    PartyLeave {
        party_id: PartyId,
        session: SessionId,
    },
}

/// A datagram between two nodes.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct DatagramMsg {
    pub(super) from: Sender,
    pub(super) to: u64,
    pub(super) body: DatagramBody,
}

/// The two directions of unreliable data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum DatagramBody {
    /// Home to host: a member's datagram, in the client's format with the host's
    /// handle of the match.
    ToHost { sender: SessionId, datagram: Bytes },
    /// Host to home: a relayed datagram (the host's handle) for members homed there.
    ToMembers {
        match_id: MatchId,
        sessions: Vec<SessionId>,
        datagram: Bytes,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use quicmatch_protocol::frame;

    #[test]
    fn messages_round_trip_through_the_peer_codec() {
        let from = Sender {
            node: "node-a".into(),
            incarnation: 7,
        };
        let msg = LinkMsg {
            from: from.clone(),
            to: 9,
            seq: 3,
            probe: false,
            items: vec![
                Item::Push {
                    match_id: MatchId(uuid::Uuid::from_u128(1)),
                    sessions: vec![SessionId(uuid::Uuid::from_u128(2))],
                    lane: Some(4),
                    body: Bytes::from_static(b"event"),
                },
                Item::Ended {
                    match_id: MatchId(uuid::Uuid::from_u128(1)),
                    session: SessionId(uuid::Uuid::from_u128(2)),
                    attempt: 3,
                    reason: "cluster link lost".into(),
                },
            ],
        };
        let bytes = frame::encode_peer(&msg).expect("encode");
        let back: LinkMsg = frame::decode_peer(&bytes).expect("decode");
        assert_eq!((back.from, back.to, back.seq), (from, 9, 3));
        assert_eq!(back.items, msg.items);
        assert!(frame::decode_peer::<LinkMsg>(&bytes[..bytes.len() - 1]).is_err());
        assert!(frame::decode_peer::<DatagramMsg>(b"\x01garbage").is_err());
        assert_eq!(link_subject("prod", "b"), "qm.prod.n.b.l");
    }
}
