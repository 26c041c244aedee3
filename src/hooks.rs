//! Server hooks: game code that runs inside the server at fixed points, registered on
//! the [`ServerBuilder`](crate::ServerBuilder).
//!
//! - Before a matchmaker ticket is added: rewrite the request (server-trusted
//!   properties, clamped counts, a stricter query) or reject it with a message the
//!   client receives as `RUNTIME_FUNCTION_EXCEPTION`.
//! - When the matchmaker forms a group: return the id of a match the server created for
//!   it (clients get `match_id` instead of a token), or `None` for the usual token.
//!
//! - Instead of the built-in grouping: a custom processor gets the pool once per pass
//!   and returns groups, which the server checks before forming them (see
//!   [`MatchmakerProcessor`]).
//!
//! Hooks run on the thread that triggers them; keep them short and never block.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use quicmatch_protocol::{MatchId, Presence};

use crate::{
    matches::MatchTable,
    matchmaker::pool::{MatchedEntry, PoolTicket},
    runtime::Runtime,
};

/// A matchmaker request as a before-hook sees and may change it.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchmakerAddRequest {
    /// The query (empty means `*`).
    pub query: String,
    /// Smallest acceptable match.
    pub min_count: u32,
    /// Largest acceptable match.
    pub max_count: u32,
    /// Sizes must be a multiple of this.
    pub count_multiple: u32,
    /// String properties.
    pub string_properties: BTreeMap<String, String>,
    /// Numeric properties.
    pub numeric_properties: BTreeMap<String, f64>,
}

/// Runs before a ticket is added: `Ok` with the (possibly rewritten) request, or `Err`
/// with the reason the client is told.
pub type BeforeMatchmakerAdd =
    dyn Fn(&Presence, MatchmakerAddRequest) -> Result<MatchmakerAddRequest, String> + Send + Sync;

/// Runs once per formed group with its entries (oldest ticket first); may return a
/// match for the group, typically from [`MatchedContext::create_match`].
pub type MatchmakerMatched =
    dyn Fn(&MatchedContext<'_>, &[MatchedEntry]) -> Option<MatchId> + Send + Sync;

/// A custom matchmaker: called once per pass with every waiting ticket (oldest first,
/// suspect sessions left out), it returns groups of ticket ids. The server forms a group
/// only if every ticket in it exists and is used once in the pass, no session or party
/// appears twice, and its size suits every ticket's counts (teams and roles are placed
/// by the server); a backfill ticket takes 1 to its seats' worth of players. Other groups
/// are refused with a log line and `quicmatch_matchmaker_processor_rejected_total`. The
/// call runs on its own thread and is bounded by `matchmaker.processor_timeout`.
/// Fallback queries and expiry still apply; the built-in grouping does not run.
pub type MatchmakerProcessor =
    dyn Fn(&[PoolTicket]) -> Vec<Vec<quicmatch_protocol::TicketId>> + Send + Sync;

/// What a matched hook can do.
pub struct MatchedContext<'a> {
    pub(crate) matches: &'a MatchTable,
    pub(crate) runtime: &'a Runtime,
    pub(crate) entries: &'a [MatchedEntry],
    pub(crate) hold: Duration,
}

impl MatchedContext<'_> {
    /// Creates a relayed match for the group: its id works for joining (the first
    /// joiner brings it to life) until the matchmaker's token lifetime passes.
    pub fn create_match(&self) -> MatchId {
        self.matches.reserve(std::time::Instant::now() + self.hold)
    }

    /// Creates a server-authoritative match for the group from the handler registered
    /// as `handler`; its `join_attempt` sees the group in [`MatchContext::matched`].
    /// Return the id from the hook and every player receives it as `match_id`.
    ///
    /// [`MatchContext::matched`]: crate::runtime::MatchContext::matched
    pub fn create_authoritative(
        &self,
        handler: &str,
        params: crate::runtime::Params,
    ) -> Result<MatchId, crate::runtime::RuntimeError> {
        let users = self.entries.iter().map(|e| e.presence.clone()).collect();
        self.runtime.create_match_for(handler, params, users)
    }

    /// The runtime: signal and list matches.
    pub fn runtime(&self) -> &Runtime {
        self.runtime
    }
}

/// The registered hooks.
#[derive(Clone, Default)]
pub struct Hooks {
    pub(crate) before_matchmaker_add: Option<Arc<BeforeMatchmakerAdd>>,
    pub(crate) matchmaker_matched: Option<Arc<MatchmakerMatched>>,
    pub(crate) matchmaker_processor: Option<Arc<MatchmakerProcessor>>,
}
