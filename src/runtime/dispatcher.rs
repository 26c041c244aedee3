//! What a match handler sees and does: its [`MatchContext`] (the match's id, tick,
//! members, and the [`Runtime`](super::Runtime)) and its [`Dispatcher`] (broadcast,
//! kick, relabel, end). Both are handed to callbacks by the engine; a handler never
//! touches the match table directly.

use std::sync::Arc;

use bytes::Bytes;
use quicmatch_protocol::{MatchId, Presence, SessionId};
use tracing::warn;

use super::Runtime;
use crate::matches::MatchTable;

/// The match a callback runs for.
pub struct MatchContext {
    pub(crate) match_id: MatchId,
    pub(crate) handler: Arc<str>,
    pub(crate) tick: u64,
    pub(crate) tick_rate: u32,
    pub(crate) label: Option<String>,
    pub(crate) presences: Vec<Presence>,
    pub(crate) matched: Vec<Presence>,
    pub(crate) runtime: Runtime,
}

impl MatchContext {
    /// The match.
    pub fn match_id(&self) -> MatchId {
        self.match_id
    }

    /// The name its handler was registered under.
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// Ticks run so far (0 before the first).
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// Ticks per second.
    pub fn tick_rate(&self) -> u32 {
        self.tick_rate
    }

    /// The current label.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// The members, in join order.
    pub fn presences(&self) -> &[Presence] {
        &self.presences
    }

    /// The users the matchmaker placed in this match (empty when it was created
    /// otherwise), so `join_attempt` can admit exactly them.
    pub fn matched(&self) -> &[Presence] {
        &self.matched
    }

    /// Create and list matches. Signalling waits for the other match's answer, so it is
    /// refused inside a callback (signal from an RPC or a hook instead).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}

/// What a callback asks of the server. Sends happen at once, in call order; a kick or
/// an end takes effect when the callback returns.
pub struct Dispatcher<'a> {
    pub(crate) table: &'a MatchTable,
    pub(crate) match_id: MatchId,
    pub(crate) kicks: Vec<Presence>,
    pub(crate) ended: Option<String>,
    pub(crate) label: Option<Option<String>>,
}

impl<'a> Dispatcher<'a> {
    pub(crate) fn new(table: &'a MatchTable, match_id: MatchId) -> Self {
        Self {
            table,
            match_id,
            kicks: Vec::new(),
            ended: None,
            label: None,
        }
    }

    /// Sends `data` with `op_code` to `presences` (or every member), attributed to
    /// `sender` (a member) or to the server (`None`), reliably over the control stream
    /// or as a datagram (at most 1 024 bytes). Oversized data is logged and dropped.
    pub fn broadcast(
        &mut self,
        op_code: i64,
        data: impl Into<Bytes>,
        presences: Option<&[Presence]>,
        sender: Option<&Presence>,
        reliable: bool,
    ) {
        let targets: Option<Vec<SessionId>> =
            presences.map(|ps| ps.iter().map(|p| p.session_id).collect());
        if let Err(e) = self.table.server_send(
            self.match_id,
            op_code,
            data.into(),
            targets.as_deref(),
            sender.map(|s| s.session_id),
            reliable,
        ) {
            metrics::counter!("quicmatch_match_broadcast_errors_total").increment(1);
            warn!(match_id = %self.match_id, error = %e, "match broadcast dropped");
        }
    }

    /// Removes these members; they get `MatchEnded`, the others a leave, and the
    /// handler's `leave` runs for them.
    pub fn kick(&mut self, presences: &[Presence]) {
        self.kicks.extend(presences.iter().cloned());
    }

    /// Replaces the label (at most 2 KiB); the next listing sees it. An oversized label
    /// is logged and ignored.
    pub fn set_label(&mut self, label: Option<String>) {
        if label
            .as_ref()
            .is_some_and(|l| l.len() > quicmatch_protocol::MAX_LABEL_LEN)
        {
            warn!(match_id = %self.match_id, "match label over 2 KiB ignored");
            return;
        }
        if self.table.set_label(self.match_id, label.clone()).is_ok() {
            self.label = Some(label);
        }
    }

    /// Ends the match when the callback returns; members get `MatchEnded` with
    /// `reason`.
    pub fn end(&mut self, reason: impl Into<String>) {
        self.ended = Some(reason.into());
    }
}
