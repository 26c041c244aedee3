//! Game code inside the server: match handlers (server-authoritative matches), RPC
//! functions, and the one [`Runtime`] context they, and the hooks, receive to create,
//! signal and list matches and to use storage objects ([`Runtime::storage`]).
//!
//! Register both on the builder:
//!
//! ```no_run
//! use quicmatch::runtime::{Dispatcher, MatchContext, MatchHandler, MatchInit, Inbound};
//!
//! struct Echo;
//!
//! impl MatchHandler for Echo {
//!     fn init(&mut self, _ctx: &MatchContext, _params: &serde_json::Value) -> Result<MatchInit, String> {
//!         Ok(MatchInit::new(10).label(r#"{"mode":"echo"}"#))
//!     }
//!     fn tick(&mut self, _ctx: &MatchContext, d: &mut Dispatcher<'_>, messages: Vec<Inbound>) {
//!         for m in messages {
//!             d.broadcast(m.op_code, m.data, None, Some(&m.sender), m.reliable);
//!         }
//!     }
//! }
//!
//! let server = quicmatch::Server::builder(quicmatch::Config::default())
//!     .match_handler("echo", || Echo)
//!     .rpc("create_echo", |ctx, _payload| {
//!         let id = ctx.runtime.create_match("echo", serde_json::Value::Null).map_err(|e| e.to_string())?;
//!         Ok(id.to_string())
//!     });
//! ```
//!
//! Handler callbacks are synchronous and run one at a time per match on a pool of
//! worker threads (`engine`), never on a session or I/O task; a panicking or runaway
//! handler ends only its own match (see [`MatchHandler`]).

mod dispatcher;
mod engine;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, OnceLock},
    time::Duration,
};

pub use dispatcher::{Dispatcher, MatchContext};
pub(crate) use engine::{Engine, Kept, Restored, Snapshots};
use quicmatch_protocol::{ErrorCode, MatchId, MatchListRequest, MatchListing, Presence, TicketId};

pub use crate::matches::Inbound;
pub use crate::matchmaker::query::Properties;
use crate::{config::MatchConfig, handlers::ApiError, matches::MatchTable, storage::Storage};

/// Parameters a match is created with (JSON; at most
/// [`quicmatch_protocol::MAX_HANDLER_PARAMS`] bytes serialized).
pub type Params = serde_json::Value;

/// What `init` decides about a new match.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MatchInit {
    /// Ticks per second, 1 to 60.
    pub tick_rate: u32,
    /// The label listings show (at most 2 KiB, usually JSON).
    pub label: Option<String>,
    /// Most members; `None`: the server's `matches.max_size`.
    pub max_size: Option<u32>,
}

impl MatchInit {
    /// A match ticking `tick_rate` times a second, with no label.
    pub fn new(tick_rate: u32) -> Self {
        Self {
            tick_rate,
            label: None,
            max_size: None,
        }
    }

    /// Sets the label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Sets the most members the match admits (its `join_attempt` may refuse sooner).
    pub fn max_size(mut self, max_size: u32) -> Self {
        self.max_size = Some(max_size);
        self
    }
}

/// A `join_attempt`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinDecision {
    /// Admit the presence.
    Accept,
    /// Refuse it; the client gets `MATCH_JOIN_REJECTED` with this reason.
    Reject(String),
}

/// A server-authoritative match's logic, with Nakama's life cycle.
///
/// Callbacks run one at a time per match on the worker pool. Each gets the match's
/// [`MatchContext`] and, except `init`, a [`Dispatcher`] to broadcast, kick, relabel or
/// end the match. A callback that panics ends its match (members get `MatchEnded`); a
/// match whose ticks overrun their budget continuously for `matches.overrun_limit` is
/// ended too. Keep callbacks short and never block in them.
pub trait MatchHandler: Send + 'static {
    /// Called once when the match is created, with the creator's parameters.
    fn init(&mut self, ctx: &MatchContext, params: &Params) -> Result<MatchInit, String>;

    /// May `presence` join? Called promptly (not on a tick). Default: accept.
    fn join_attempt(
        &mut self,
        ctx: &MatchContext,
        dispatcher: &mut Dispatcher<'_>,
        presence: &Presence,
        metadata: &BTreeMap<String, String>,
    ) -> JoinDecision {
        let _ = (ctx, dispatcher, presence, metadata);
        JoinDecision::Accept
    }

    /// Presences that were accepted and are now members.
    fn join(
        &mut self,
        ctx: &MatchContext,
        dispatcher: &mut Dispatcher<'_>,
        presences: &[Presence],
    ) {
        let _ = (ctx, dispatcher, presences);
    }

    /// Presences that left, were disconnected for good, or were kicked.
    fn leave(
        &mut self,
        ctx: &MatchContext,
        dispatcher: &mut Dispatcher<'_>,
        presences: &[Presence],
    ) {
        let _ = (ctx, dispatcher, presences);
    }

    /// One tick: every message members sent since the last tick, in arrival order.
    fn tick(&mut self, ctx: &MatchContext, dispatcher: &mut Dispatcher<'_>, messages: Vec<Inbound>);

    /// Server code talking to the running match ([`Runtime::signal`]); the reply goes
    /// back to the caller. Default: an empty reply.
    fn signal(
        &mut self,
        ctx: &MatchContext,
        dispatcher: &mut Dispatcher<'_>,
        data: &str,
    ) -> String {
        let _ = (ctx, dispatcher, data);
        String::new()
    }

    /// The server is shutting down; the match ends after this returns. (A match whose
    /// [`snapshot`](Self::snapshot) gives bytes is kept for the restart instead, and
    /// this is not called.)
    fn terminate(&mut self, ctx: &MatchContext, dispatcher: &mut Dispatcher<'_>, grace: Duration) {
        let _ = (ctx, dispatcher, grace);
    }

    /// The match's state to keep across a server restart (a crash or a planned one),
    /// or `None` (the default) to let the match end with the server.
    ///
    /// Called between callbacks every `matches.snapshot_interval` and once more at
    /// shutdown; the bytes are written to the store (only when they changed, off the
    /// tick path). Keep it cheap: serialize the state, nothing else. After a restart
    /// the match comes back through [`restore`](Self::restore) with the newest bytes.
    fn snapshot(&mut self, ctx: &MatchContext) -> Option<Vec<u8>> {
        let _ = ctx;
        None
    }

    /// Rebuilds the match after a restart from its newest [`snapshot`](Self::snapshot),
    /// instead of `init`; returns the tick rate, label and size limit as `init` does.
    ///
    /// `ctx` has the match's id, its tick count and members at the snapshot; members
    /// are held for their reconnect grace and resume without the others seeing them
    /// leave, and those who do not come back leave as usual (`leave`). An `Err` drops
    /// the match. Default: refuse.
    fn restore(&mut self, ctx: &MatchContext, snapshot: &[u8]) -> Result<MatchInit, String> {
        let _ = (ctx, snapshot);
        Err("this handler does not restore snapshots".into())
    }
}

/// Makes a fresh handler for each match of a registered name.
pub type HandlerFactory = dyn Fn() -> Box<dyn MatchHandler> + Send + Sync;

/// An RPC function: the caller's payload in, a payload out (or an error message the
/// client receives as `RUNTIME_FUNCTION_EXCEPTION`). Runs on a blocking thread.
pub type RpcFunction = dyn Fn(&RpcContext<'_>, &str) -> Result<String, String> + Send + Sync;

/// What an RPC function gets besides its payload.
#[non_exhaustive]
pub struct RpcContext<'a> {
    /// Who called.
    pub caller: &'a Presence,
    /// Create, signal and list matches; storage objects.
    pub runtime: &'a Runtime,
}

/// Why a runtime call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No handler of that name is registered.
    #[error("no match handler named {0:?}")]
    UnknownHandler(String),
    /// The handler's `init` refused, or returned values out of range.
    #[error("match init failed: {0}")]
    Init(String),
    /// No such live server-run match.
    #[error("match not found")]
    MatchNotFound,
    /// Parameters or a signal larger than the limit.
    #[error("{0}")]
    TooLarge(String),
    /// The match's queue for this kind of input is full.
    #[error("{0}")]
    Busy(String),
    /// The match ended before it answered, or its callback failed.
    #[error("{0}")]
    Failed(String),
    /// A listing request out of range, or a bad query.
    #[error("{0}")]
    BadRequest(String),
    /// A server limit.
    #[error("{0}")]
    Limit(String),
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let code = match &e {
            RuntimeError::UnknownHandler(_) => ErrorCode::RUNTIME_FUNCTION_NOT_FOUND,
            RuntimeError::MatchNotFound => ErrorCode::MATCH_NOT_FOUND,
            RuntimeError::TooLarge(_) => ErrorCode::PAYLOAD_TOO_LARGE,
            RuntimeError::Busy(_) | RuntimeError::Limit(_) => ErrorCode::LIMIT_EXCEEDED,
            RuntimeError::BadRequest(_) => ErrorCode::BAD_INPUT,
            RuntimeError::Init(_) | RuntimeError::Failed(_) => {
                ErrorCode::RUNTIME_FUNCTION_EXCEPTION
            }
        };
        Self::new(code, e.to_string())
    }
}

/// What game code registered on the builder.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    pub(crate) handlers: HashMap<String, Arc<HandlerFactory>>,
    pub(crate) rpcs: HashMap<String, Arc<RpcFunction>>,
    /// A store given to the builder, used instead of opening `data_dir`'s.
    pub(crate) storage: Option<Storage>,
}

/// The server as game code sees it: create server-run matches, signal them, list
/// matches. Cheap to clone. Its blocking call ([`signal`](Self::signal)) belongs on
/// blocking threads (RPC functions and hooks run on one); inside a match handler's
/// callback it is refused, so no worker waits on another.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    registry: Arc<Registry>,
    matches: MatchTable,
    /// The matchmaker, set once the server has made it (it holds this runtime).
    backfills: Arc<OnceLock<Arc<dyn Backfills>>>,
    storage: Storage,
}

/// What the runtime needs of the matchmaker; the matchmaker implements it.
pub(crate) trait Backfills: Send + Sync {
    /// Adds a backfill ticket.
    fn backfill(
        &self,
        match_id: MatchId,
        query: &str,
        seats: u32,
        properties: Properties,
    ) -> Result<TicketId, RuntimeError>;
    /// Cancels a backfill ticket.
    fn cancel_backfill(&self, ticket: TicketId) -> Result<(), RuntimeError>;
}

/// The matchmaker as game code sees it: backfill seats of live matches.
pub struct MatchmakerAccess<'a> {
    backfills: Option<&'a Arc<dyn Backfills>>,
}

impl MatchmakerAccess<'_> {
    /// Asks the matchmaker for `count` players for the live match `match_id`, found
    /// with `query` (when matching is mutual, their queries must accept `properties`).
    /// Each pass fills what seats it can; matched players receive `match_id` and join
    /// it. The ticket lasts until its seats are filled, it is cancelled, or the match
    /// ends.
    pub fn backfill(
        &self,
        match_id: MatchId,
        query: &str,
        count: u32,
        properties: Properties,
    ) -> Result<TicketId, RuntimeError> {
        self.get()?.backfill(match_id, query, count, properties)
    }

    /// Cancels a backfill ticket (`MatchNotFound`-like `BadRequest` if it is gone).
    pub fn cancel_backfill(&self, ticket: TicketId) -> Result<(), RuntimeError> {
        self.get()?.cancel_backfill(ticket)
    }

    fn get(&self) -> Result<&Arc<dyn Backfills>, RuntimeError> {
        self.backfills
            .ok_or_else(|| RuntimeError::Failed("the matchmaker is not running".into()))
    }
}

impl Runtime {
    pub(crate) fn new(
        registry: Registry,
        matches: MatchTable,
        config: &MatchConfig,
        storage: Storage,
    ) -> Self {
        Self {
            engine: Engine::start(matches.clone(), config),
            registry: Arc::new(registry),
            matches,
            backfills: Arc::new(OnceLock::new()),
            storage,
        }
    }

    /// Storage objects, with full access: any owner, no permission checks or per-user
    /// quota (version conditions and size limits still apply). Its calls block; see
    /// [`Storage`].
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Connects the matchmaker (once, when the server is built).
    pub(crate) fn set_backfills(&self, backfills: Arc<dyn Backfills>) {
        let _ = self.backfills.set(backfills);
    }

    /// The matchmaker: backfill live matches.
    pub fn matchmaker(&self) -> MatchmakerAccess<'_> {
        MatchmakerAccess {
            backfills: self.backfills.get(),
        }
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Creates a server-run match from the handler registered as `handler`; returns its
    /// id once `init` has run.
    pub fn create_match(&self, handler: &str, params: Params) -> Result<MatchId, RuntimeError> {
        self.create_match_for(handler, params, Vec::new())
    }

    /// Like [`create_match`](Self::create_match), telling the handler which users the
    /// matchmaker placed in it ([`MatchContext::matched`]).
    pub fn create_match_for(
        &self,
        handler: &str,
        params: Params,
        matched: Vec<Presence>,
    ) -> Result<MatchId, RuntimeError> {
        let factory = self
            .registry
            .handlers
            .get(handler)
            .ok_or_else(|| RuntimeError::UnknownHandler(handler.to_owned()))?;
        let size = serde_json::to_vec(&params).map_or(usize::MAX, |v| v.len());
        if size > quicmatch_protocol::MAX_HANDLER_PARAMS {
            return Err(RuntimeError::TooLarge(format!(
                "match parameters of {size} bytes exceed {}",
                quicmatch_protocol::MAX_HANDLER_PARAMS
            )));
        }
        self.engine
            .create(handler, factory(), &params, matched, self.clone())
    }

    /// Sends `data` to a running match's `signal` callback and waits for its reply
    /// (bounded by `matches.answer_timeout`).
    pub fn signal(&self, match_id: MatchId, data: &str) -> Result<String, RuntimeError> {
        if data.len() > quicmatch_protocol::MAX_HANDLER_PARAMS {
            return Err(RuntimeError::TooLarge(format!(
                "signal of {} bytes exceeds {}",
                data.len(),
                quicmatch_protocol::MAX_HANDLER_PARAMS
            )));
        }
        self.engine.signal(match_id, data)
    }

    /// Lists matches as a client's `MatchList` does.
    pub fn list_matches(
        &self,
        request: &MatchListRequest,
    ) -> Result<Vec<MatchListing>, RuntimeError> {
        self.matches
            .list(request)
            .map_err(|e| RuntimeError::BadRequest(e.message))
    }

    /// A fresh handler of the kind registered as `name`.
    pub(crate) fn handler(&self, name: &str) -> Option<Box<dyn MatchHandler>> {
        self.registry.handlers.get(name).map(|factory| factory())
    }

    /// The RPC function registered as `id`.
    pub(crate) fn rpc(&self, id: &str) -> Option<Arc<RpcFunction>> {
        self.registry.rpcs.get(id).cloned()
    }
}
