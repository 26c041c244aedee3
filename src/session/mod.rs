//! One task per connection: authenticate first, then serve control frames, datagrams and
//! the outbound queue until the connection ends, then hand the session on, hold it, or
//! leave everything in one place. The task also owns the session's liveness: when it
//! last heard from the client, suspicion, death, and the slow-consumer rule.
//!
//! The task owns its session state, so none of it needs a lock. It is the only writer of
//! its control stream: a reply is queued behind what is already being written and
//! before anything taken from the outbound queue later, so a client always reads its
//! `Match` reply before any event of that match.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt as _};
use quicmatch_protocol::{
    datagram::ClientDatagram,
    envelope::{Response, ServerBody, ServerEnvelope, SessionInfo},
    frame::{self, FrameCodec, FrameError},
    CloseCode, Credentials, ErrorCode, Presence, Request, SessionId, ALPN_V2, ALPN_V3,
};
use rustc_hash::FxHashSet;
use tokio_util::{codec::FramedRead, sync::CancellationToken};
use tracing::{debug, info, info_span, Instrument as _};

mod lanes;
mod rate;
mod registry;

pub(crate) use self::registry::Held;
pub use self::registry::SessionRegistry;
use self::registry::{Ending, Kick, Kicker};
pub use crate::outbound::SessionHandle;
use crate::{
    auth::{self, AuthError},
    handlers::{self, ApiError},
    outbound::{self, close, Outbound, Taken},
    transport::{Conn, RecvStream, SendStream},
    Shared,
};

/// Initial read buffer of a control stream (it grows when a frame needs more), kept
/// small because every idle connection holds one.
const CONTROL_READ_BUFFER: usize = 512;

/// Most frames the writer takes from the outbound queue per write, so one burst of
/// events goes out in few packets without starving the reader.
const WRITE_BATCH: usize = 64;

/// At shutdown, how long a session may spend writing what was already queued for it
/// before its connection is closed, and how many write batches it takes from its queue
/// (a reader that does not read is not waited for).
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(200);
const SHUTDOWN_FLUSH_BATCHES: usize = 16;
/// How long a shutting-down session waits for the client to acknowledge its last
/// frames before closing; a client that is gone costs its session no more.
const SHUTDOWN_ACKNOWLEDGED: Duration = Duration::from_secs(1);

/// Datagrams a session handles per wake-up before looking at its other inputs.
const DATAGRAM_DRAIN: usize = 32;

/// Bytes of replies waiting behind a blocked write before the task stops reading
/// requests (flow control then slows the client down instead of memory growing).
const MAX_PENDING_REPLIES: usize = 256 * 1024;

/// Longest gap between liveness checks; shorter when `suspect_after` is short.
/// (Every session's task wakes this often, so at 10 000 idle sessions it is 20 000
/// wake-ups a second; quinn's own idle timer also catches a dead connection.)
const MAX_LIVENESS_TICK: Duration = Duration::from_millis(500);

/// State only the session task touches.
pub(crate) struct SessionState {
    pub(crate) handle: SessionHandle,
    /// Shared with the datagram sink of the `proto` transport, which applies the data
    /// budget on the I/O thread.
    limiter: Arc<Mutex<rate::Limiter>>,
    /// Matches this session is in, so a disconnect leaves each of them.
    /// Checked on every outbound batch (lanes of left matches close), so with a cheap
    /// hasher: server-made ids, at most `matches.max_per_session` of them.
    pub(crate) joined: FxHashSet<quicmatch_protocol::MatchId>,
}

impl SessionState {
    /// A session restored after a restart, with no connection yet: its queue keeps
    /// what is sent to it until it resumes.
    pub(crate) fn restored(shared: &Shared, presence: Presence) -> Self {
        Self {
            handle: SessionHandle {
                presence: Arc::new(presence),
                conn: None,
                outbound: Arc::new(Outbound::restored(outbound::Limits::new(
                    &shared.config.session,
                ))),
                remote: None,
            },
            joined: FxHashSet::default(),
            limiter: Arc::new(Mutex::new(rate::Limiter::new(
                &shared.config.session,
                Instant::now(),
            ))),
        }
    }
}

/// Serves one connection from its first frame to its end.
pub(crate) async fn run(shared: Arc<Shared>, conn: Conn, shutdown: CancellationToken) {
    let remote = conn.remote_address();
    let auth = tokio::time::timeout(
        shared.config.session.auth_timeout,
        authenticate(&shared, &conn),
    )
    .await;
    let authed = match auth {
        Ok(Ok(ok)) => ok,
        Ok(Err((code, reason))) => {
            metrics::counter!("quicmatch_auth_failures_total", "reason" => code.to_string())
                .increment(1);
            info!(%remote, %code, %reason, "authentication failed");
            close(&conn, code, &reason);
            return;
        }
        Err(_) => {
            metrics::counter!("quicmatch_auth_failures_total", "reason" => CloseCode::AUTH_TIMEOUT.to_string())
                .increment(1);
            debug!(%remote, "authentication timed out");
            close(
                &conn,
                CloseCode::AUTH_TIMEOUT,
                "no Authenticate frame in time",
            );
            return;
        }
    };
    let session_id = match &authed.who {
        Who::Fresh(_, id) => *id,
        Who::Resumed(held) => held.state.handle.presence.session_id,
    };
    let span = info_span!("session", %remote, session = %session_id);
    // Boxed: an inlined inner future is laid out beside the outer one's locals, and this
    // task lives as long as the connection.
    Box::pin(serve(shared, conn, shutdown, authed))
        .instrument(span)
        .await;
}

/// Who a connection turned out to be.
enum Who {
    /// A new session for this identity.
    Fresh(auth::Identity, SessionId),
    /// A session taken over from a held or replaced connection.
    Resumed(Box<Held>),
}

/// A connection that authenticated.
struct Authed {
    send: SendStream,
    frames: Frames,
    cid: Option<u32>,
    who: Who,
}

type Frames = FramedRead<RecvStream, FrameCodec>;

/// What the connection negotiated: protocol 2 numbers events, protocol 3 adds lanes.
fn speaks(conn: &Conn) -> outbound::Speaks {
    let protocol = conn.alpn();
    let is = |alpn: &[u8]| protocol.as_deref() == Some(alpn);
    outbound::Speaks {
        sequenced: is(ALPN_V2) || is(ALPN_V3),
        lanes: is(ALPN_V3),
    }
}

async fn authenticate(shared: &Shared, conn: &Conn) -> Result<Authed, (CloseCode, String)> {
    let protocol = |m: &str| (CloseCode::PROTOCOL_ERROR, m.to_owned());
    let (send, recv) = conn
        .accept_bi()
        .await
        .map_err(|e| protocol(&format!("no control stream: {e}")))?;
    // Control frames are small: start the read buffer small, it grows for big ones.
    let mut frames = FramedRead::with_capacity(recv, FrameCodec, CONTROL_READ_BUFFER);
    let body = match frames.next().await {
        Some(Ok(body)) => body,
        Some(Err(e)) => return Err(protocol(&e.to_string())),
        None => return Err(protocol("control stream ended before Authenticate")),
    };
    let env = frame::decode_client(&body).map_err(|(_, e)| protocol(&e.to_string()))?;
    let Request::Authenticate {
        server_key,
        credentials,
        username,
    } = env.body
    else {
        return Err((
            CloseCode::AUTH_FAILED,
            "the first frame must be Authenticate".into(),
        ));
    };
    let failed = |e: AuthError| (CloseCode::AUTH_FAILED, e.to_string());
    if !shared
        .secret
        .equal_constant_time(server_key.as_bytes(), shared.config.server_key.as_bytes())
    {
        return Err(failed(AuthError::ServerKey));
    }
    let (token, last_seq) = match &credentials {
        Credentials::SessionToken { token } => (Some(token), None),
        Credentials::Resume { token, last_seq } => (Some(token), Some(*last_seq)),
        _ => (None, None),
    };
    let who = if let Some(token) = token {
        let gone = || {
            (
                CloseCode::AUTH_FAILED,
                "the session cannot be resumed: token invalid or expired, or grace period over"
                    .to_owned(),
            )
        };
        let claims =
            auth::verify_token(&shared.secret, token, auth::unix_now()).ok_or_else(gone)?;
        // A token for another user's session takes nothing: the session stays intact.
        let held = shared
            .sessions
            .claim(claims.sid, claims.uid)
            .await
            .ok_or_else(gone)?;
        if let Some(last_seq) = last_seq {
            if let Err(gap) = held.state.handle.outbound.rewind(last_seq) {
                // The client starts afresh; the old session must not linger as a ghost.
                held.expire(shared);
                metrics::counter!("quicmatch_resume_gaps_total").increment(1);
                return Err((
                    CloseCode::RESUME_GAP,
                    format!(
                        "events after {last_seq} are no longer buffered (kept: {} to {}); start a new session",
                        gap.oldest,
                        gap.next.saturating_sub(1)
                    ),
                ));
            }
        }
        Who::Resumed(Box::new(held))
    } else {
        let identity = auth::identify(&credentials, username.as_deref()).map_err(failed)?;
        Who::Fresh(identity, SessionId::new_random())
    };
    Ok(Authed {
        send,
        frames,
        cid: env.cid,
        who,
    })
}

/// How a connection ended when nobody on this side decided it.
fn ending_of(conn: &Conn) -> Ending {
    ending_for(conn.close_reason().as_ref())
}

fn ending_for(reason: Option<&quinn::ConnectionError>) -> Ending {
    match reason {
        // A close by the client, in the application or (with NO_ERROR) in the
        // transport, is a polite goodbye: leave at once.
        Some(quinn::ConnectionError::ApplicationClosed(_)) => Ending::Final,
        Some(quinn::ConnectionError::ConnectionClosed(c))
            if c.error_code == quinn::TransportErrorCode::NO_ERROR =>
        {
            Ending::Final
        }
        Some(quinn::ConnectionError::LocallyClosed) => Ending::Final,
        // Timeouts, resets and transport failures: the client may come back.
        Some(_) => Ending::Dropped,
        None => Ending::Final,
    }
}

/// When the session last heard from its client, and what it concluded.
struct Liveness {
    /// UDP datagrams received on the connection at the last check.
    seen: u64,
    last_heard: Instant,
    suspect: bool,
}

/// What a liveness check concluded.
enum Verdict {
    Alive,
    /// Not heard from for `idle_timeout`.
    Dead(Duration),
    /// Its unsent backlog stayed above the high-water mark too long.
    Slow,
}

impl Liveness {
    fn check(&mut self, shared: &Shared, handle: &SessionHandle, conn: &Conn) -> Verdict {
        let now = Instant::now();
        let s = &shared.config.session;
        let seen = conn.udp_rx_datagrams();
        let id = handle.presence.session_id;
        if seen != self.seen {
            self.seen = seen;
            self.last_heard = now;
            if self.suspect {
                self.suspect = false;
                shared.matchmaker.set_suspect(id, false);
                debug!("heard again; no longer suspect");
            }
        }
        let silent = now.saturating_duration_since(self.last_heard);
        if handle.outbound.behind_for(now, s.slow_consumer_after) {
            return Verdict::Slow;
        }
        if silent >= s.idle_timeout {
            return Verdict::Dead(silent);
        }
        if silent >= s.suspect_after && !self.suspect {
            self.suspect = true;
            shared.matchmaker.set_suspect(id, true);
            metrics::counter!("quicmatch_sessions_suspected_total").increment(1);
            debug!(?silent, "silent; suspect");
        }
        Verdict::Alive
    }
}

/// Sets up the session state for this connection: new, or taken over.
fn start(shared: &Shared, conn: &Conn, who: Who) -> (SessionState, bool) {
    match who {
        Who::Fresh(identity, session_id) => {
            let presence = Presence {
                user_id: identity.user_id,
                session_id,
                username: identity.username,
            };
            let state = SessionState {
                handle: SessionHandle {
                    presence: Arc::new(presence),
                    conn: Some(conn.clone()),
                    outbound: Arc::new(Outbound::new(outbound::Limits::new(
                        &shared.config.session,
                    ))),
                    remote: None,
                },
                joined: FxHashSet::default(),
                limiter: Arc::new(Mutex::new(rate::Limiter::new(
                    &shared.config.session,
                    Instant::now(),
                ))),
            };
            (state, false)
        }
        Who::Resumed(held) => {
            let mut state = held.state;
            // Same session, same queue (what arrived while away is still in it), new
            // connection.
            state.handle = SessionHandle {
                presence: state.handle.presence.clone(),
                conn: Some(conn.clone()),
                outbound: state.handle.outbound.clone(),
                remote: None,
            };
            state.handle.outbound.set_connected(true);
            shared.matches.rebind(&state.handle, &state.joined);
            (state, true)
        }
    }
}

async fn serve(shared: Arc<Shared>, conn: Conn, shutdown: CancellationToken, authed: Authed) {
    let Authed {
        mut send,
        mut frames,
        cid: auth_cid,
        who,
    } = authed;
    let send = &mut send;
    let (mut state, resumed) = start(&shared, &conn, who);
    let kicker = Arc::new(Kicker::default());
    shared.sessions.insert(state.handle.clone(), kicker.clone());
    let presence = state.handle.presence.clone();
    if resumed {
        shared.matchmaker.set_suspect(presence.session_id, false);
    } else if shared.config.session.single_socket {
        for held in shared
            .sessions
            .replace_user(presence.user_id, presence.session_id)
        {
            held.expire(&shared);
        }
    }
    let identity = auth::Identity {
        user_id: presence.user_id,
        username: presence.username.clone(),
    };
    let claims = auth::claims_for(
        &identity,
        presence.session_id,
        shared.config.session.token_expiry,
    );
    let info = SessionInfo {
        user_id: presence.user_id,
        session_id: presence.session_id,
        username: presence.username.clone(),
        token: auth::issue_token(&shared.secret, &claims),
        token_expires_at: claims.exp,
        resumed,
        matches: if resumed {
            let mut infos = shared.matches.infos(presence.session_id, &state.joined);
            infos.extend(shared.cluster.infos(&state.handle, &state.joined).await);
            infos
        } else {
            Vec::new()
        },
    };
    info!(user = %info.user_id, username = %info.username, resumed, "session started");
    let speaks = speaks(&conn);
    let mut lanes = lanes::Lanes::new(conn.clone(), state.handle.outbound.clone());
    // With the `proto` transport datagrams never wake this task: the I/O loop hands
    // them to a sink that relays them on its own thread; only what the session must act
    // on (an error reply, a close) comes back here.
    let (sink_tx, mut sink_rx) = tokio::sync::mpsc::channel::<SinkStep>(SINK_STEPS);
    let _sink = SinkGuard::install(&conn, || {
        datagram_sink(
            shared.clone(),
            state.handle.clone(),
            state.limiter.clone(),
            sink_tx.clone(),
        )
    });
    // Chunks being written, in order: the welcome first, then replies and batches
    // taken from the outbound queue. A write that blocks (the client reads slowly)
    // stays here while the task goes on checking liveness and the slow-consumer rule.
    let mut pending: Vec<Bytes> = frame::encode(&ServerEnvelope {
        cid: auth_cid,
        body: ServerBody::Response(Response::Session(info)),
    })
    .into_iter()
    .collect();
    let mut pending_bytes = 0usize;
    let mut alive = !pending.is_empty();
    let mut ending: Option<Ending> = None;
    let s = &shared.config.session;
    let mut tick = tokio::time::interval((s.suspect_after / 4).min(MAX_LIVENESS_TICK));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut liveness = Liveness {
        seen: conn.udp_rx_datagrams(),
        last_heard: Instant::now(),
        suspect: false,
    };
    let outbound = state.handle.outbound.clone();
    // Both futures live across iterations: re-creating them on every wake-up would
    // register and unregister their waiters once per datagram.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut next_datagram = std::pin::pin!(conn.read_datagram());
    let end = |code: CloseCode, reason: &str, how: Ending, ending: &mut Option<Ending>| {
        close(&conn, code, reason);
        *ending = Some(how);
        false
    };
    let mut waiting: Option<Waiting> = None;
    let mut taken = Taken::default();
    while alive {
        let mut replies: Vec<Bytes> = Vec::new();
        tokio::select! {
            biased;
            () = &mut cancelled => {
                // What is already queued (a match's last words, `MatchEnded`) goes out
                // before the close, unless a join's reply is still due first.
                if !waiting.as_ref().is_some_and(|w| w.holds) {
                    for _ in 0..SHUTDOWN_FLUSH_BATCHES {
                        let mut taken = outbound.take_before_shutdown(WRITE_BATCH, speaks, Instant::now());
                        if taken.control.is_empty() && taken.lanes.is_empty() {
                            break;
                        }
                        pending.extend(taken.control);
                        lanes.route(&mut taken.lanes, &mut pending);
                    }
                }
                let _ = tokio::time::timeout(SHUTDOWN_FLUSH, send.write_all_chunks(&mut pending)).await;
                // A close discards what the client has not acknowledged yet: the
                // streams end here, and the close waits (bounded, for a client that is
                // gone) until the client has all of them.
                let lanes_acknowledged = lanes.finish_all();
                let _ = send.finish();
                let _ = tokio::time::timeout(SHUTDOWN_ACKNOWLEDGED, async {
                    send.acknowledged().await;
                    lanes_acknowledged.await;
                })
                .await;
                alive = if shared.restarting.load(std::sync::atomic::Ordering::Acquire) {
                    end(CloseCode::SERVER_RESTARTING, "server restarting; resume when it is back", Ending::Final, &mut ending)
                } else {
                    end(CloseCode::SERVER_SHUTDOWN, "server shutting down", Ending::Final, &mut ending)
                };
            }
            () = kicker.token.cancelled() => {
                alive = match kicker.why() {
                    Some(Kick::SingleSocket) => end(
                        CloseCode::SESSION_REPLACED,
                        "a newer connection of this user replaced this session",
                        Ending::Final,
                        &mut ending,
                    ),
                    _ => end(
                        CloseCode::SESSION_REPLACED,
                        "this session was resumed on another connection",
                        Ending::Replaced,
                        &mut ending,
                    ),
                };
            }
            written = send.write_all_chunks(&mut pending), if !pending.is_empty() => {
                alive = written.is_ok();
                pending.clear();
                pending_bytes = 0;
            }
            outcome = wait_for(&mut waiting), if waiting.is_some() => {
                let cid = waiting.take().and_then(|w| w.cid);
                let outcome = handlers::finish(&shared, &mut state, outcome);
                replies.extend(handlers::reply_frame(&state.handle, cid, outcome));
            }
            () = outbound.wake.notified(), if pending.is_empty() && !waiting.as_ref().is_some_and(|w| w.holds) => {
                outbound.take_into(&mut taken, WRITE_BATCH, speaks, Instant::now());
                // `pending` is empty here: the two swap buffers, both keeping theirs.
                std::mem::swap(&mut pending, &mut taken.control);
                lanes.retain(&state.joined);
                lanes.route(&mut taken.lanes, &mut pending);
                taken.clear();
            }
            _ = tick.tick() => match liveness.check(&shared, &state.handle, &conn) {
                Verdict::Alive => {}
                Verdict::Dead(silent) => {
                    info!(?silent, "nothing heard; connection dead");
                    metrics::counter!("quicmatch_sessions_timed_out_total").increment(1);
                    alive = end(CloseCode::TIMED_OUT, "nothing heard from the client", Ending::Dropped, &mut ending);
                }
                Verdict::Slow => {
                    metrics::counter!("quicmatch_slow_consumer_closes_total").increment(1);
                    alive = end(CloseCode::SLOW_CONSUMER, "reading too slowly: outbound backlog stayed over its limit", Ending::Final, &mut ending);
                }
            },
            frame = frames.next(), if pending_bytes < MAX_PENDING_REPLIES && waiting.is_none() => match frame {
                Some(Ok(body)) => match on_frame(&shared, &mut state, &body) {
                    Step::Reply(reply) => replies.extend(reply),
                    // Later requests wait behind this one (replies stay in order); the
                    // rest of the loop carries on meanwhile.
                    Step::Wait(cid, later, holds) => waiting = Some(Waiting { cid, later, holds }),
                    Step::Close(code, reason) => {
                        alive = end(code, reason, Ending::Final, &mut ending);
                    }
                },
                Some(Err(FrameError::Decode(e))) => {
                    debug!(error = %e, "broken framing");
                    alive = end(CloseCode::PROTOCOL_ERROR, &e.to_string(), Ending::Final, &mut ending);
                }
                Some(Err(FrameError::Io(_))) | None => {
                    // Closing would overwrite why the connection ended (a timeout is
                    // held for a resume), so close only a connection still open.
                    if conn.close_reason().is_none() {
                        end(CloseCode::NORMAL, "control stream closed", Ending::Final, &mut ending);
                    }
                    alive = false;
                }
            },
            Some(step) = sink_rx.recv() => match step {
                SinkStep::Reply(frame) => replies.push(frame),
                SinkStep::Close(code, reason) => {
                    alive = end(code, reason, Ending::Final, &mut ending);
                }
            },
            datagram = &mut next_datagram => {
                let mut datagram = datagram;
                // Under load several datagrams wait: take them in one wake-up, up to a
                // bound so the control stream is not starved. The bound is checked
                // before taking another, so none taken is ever left unhandled.
                for taken in 1..=DATAGRAM_DRAIN {
                    next_datagram.set(conn.read_datagram());
                    let Ok(d) = datagram else {
                        alive = false;
                        break;
                    };
                    match on_datagram(&shared, &state.handle, &state.limiter, d) {
                        Step::Reply(reply) => replies.extend(reply),
                        Step::Wait(..) => {}
                        Step::Close(code, reason) => {
                            alive = end(code, reason, Ending::Final, &mut ending);
                        }
                    }
                    if !alive || taken == DATAGRAM_DRAIN {
                        break;
                    }
                    match next_datagram.as_mut().now_or_never() {
                        Some(d) => datagram = d,
                        None => break,
                    }
                }
            }
        }
        pending_bytes += replies.iter().map(Bytes::len).sum::<usize>();
        pending.append(&mut replies);
    }
    let ending = ending.unwrap_or_else(|| ending_of(&conn));
    let grace = if shutdown.is_cancelled() {
        Duration::ZERO
    } else {
        shared.config.session.reconnect_grace
    };
    info!(reason = ?conn.close_reason(), ?ending, "connection ended");
    shared.sessions.retire(&shared, state, ending, grace);
}

/// What a datagram sink (the `proto` transport) asks of the session task.
enum SinkStep {
    Reply(Bytes),
    Close(CloseCode, &'static str),
}

/// Error replies and closes a sink may leave for the session task; past this, error
/// replies to datagrams are dropped (they are advice: the datagrams were dropped).
const SINK_STEPS: usize = 64;

fn datagram_sink(
    shared: Arc<Shared>,
    handle: SessionHandle,
    limiter: Arc<Mutex<rate::Limiter>>,
    tx: tokio::sync::mpsc::Sender<SinkStep>,
) -> crate::transport::proto::Sink {
    let max_age = shared.config.relay.max_datagram_age;
    Box::new(move |datagram, arrived| {
        count_in(&handle, &datagram);
        let step = match admit(&handle, &limiter, rate::Kind::Datagram, None) {
            Err(step) => step,
            Ok(()) if is_stale(arrived, Instant::now(), max_age) => {
                metrics::counter!("quicmatch_datagrams_dropped_total", "reason" => "stale")
                    .increment(1);
                return;
            }
            Ok(()) => relay_datagram(&shared, &handle, datagram),
        };
        match step {
            Step::Reply(Some(frame)) => {
                let _ = tx.try_send(SinkStep::Reply(frame));
            }
            Step::Close(code, reason) => {
                let _ = tx.try_send(SinkStep::Close(code, reason));
            }
            Step::Reply(None) | Step::Wait(..) => {}
        }
    })
}

/// Removes a `proto` connection's sink when the session task ends however it ends (the
/// sink holds the session's handle, which holds the connection), and closes a
/// connection nobody closed, as dropping a quinn connection does.
struct SinkGuard(Option<crate::transport::proto::Conn>);

impl SinkGuard {
    fn install(conn: &Conn, sink: impl FnOnce() -> crate::transport::proto::Sink) -> Self {
        match conn {
            Conn::Proto(c) => {
                c.set_sink(sink());
                Self(Some(c.clone()))
            }
            Conn::Quinn(_) => Self(None),
        }
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.clear_sink();
            if c.close_reason().is_none() {
                c.close(quinn_proto::VarInt::from_u32(CloseCode::NORMAL.0), b"");
            }
        }
    }
}

/// A request whose answer server code gives later.
struct Waiting {
    cid: Option<u32>,
    later: handlers::Later,
    /// Whether events wait for it (a join: its `Match` reply goes first).
    holds: bool,
}

/// The answer of the request being waited for; never resolves when there is none (its
/// select branch is off then).
async fn wait_for(waiting: &mut Option<Waiting>) -> handlers::Outcome {
    match waiting {
        Some(w) => w.later.as_mut().await,
        None => std::future::pending().await,
    }
}

/// What the session does after one frame or datagram.
enum Step {
    /// Carry on, writing this reply first if there is one.
    Reply(Option<Bytes>),
    /// Wait for server code's answer to the request with this `cid`, then reply. The
    /// `bool` says whether events wait too (a join: its `Match` reply goes first).
    Wait(Option<u32>, handlers::Later, bool),
    /// Close the connection.
    Close(CloseCode, &'static str),
}

/// Applies the rate limit; `Err` carries the step to take instead of processing.
fn admit(
    handle: &SessionHandle,
    limiter: &Mutex<rate::Limiter>,
    kind: rate::Kind,
    cid: Option<u32>,
) -> Result<(), Step> {
    let verdict = limiter
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .check(kind, Instant::now());
    match verdict {
        rate::Verdict::Allow => Ok(()),
        rate::Verdict::Reject { tell } => {
            metrics::counter!("quicmatch_rate_limited_total").increment(1);
            let reply = tell.then(|| {
                handlers::reply_frame(
                    handle,
                    cid,
                    Err(ApiError::new(
                        ErrorCode::RATE_LIMITED,
                        "over the rate limit; excess requests and datagrams are dropped",
                    )),
                )
            });
            Err(Step::Reply(reply.flatten()))
        }
        rate::Verdict::Close => Err(Step::Close(
            CloseCode::RATE_LIMITED,
            "persistently over the rate limit",
        )),
    }
}

fn on_frame(shared: &Shared, state: &mut SessionState, body: &[u8]) -> Step {
    match frame::decode_client(body) {
        Ok(env) => {
            // Match and party data share the data budget with datagrams.
            let kind = match env.body {
                Request::MatchDataSend { .. } | Request::PartyDataSend { .. } => {
                    rate::Kind::Datagram
                }
                _ => rate::Kind::Request,
            };
            if let Err(step) = admit(&state.handle, &state.limiter, kind, env.cid) {
                return step;
            }
            // A create with a name joins the match of that name, in a cluster perhaps on
            // another node: its reply, too, goes before the match's events.
            // A party request for a party of another node likewise: its reply goes
            // before the events the party's host sends meanwhile.
            let joins = matches!(
                env.body,
                Request::MatchJoin { .. }
                    | Request::MatchJoinWith { .. }
                    | Request::MatchCreate { .. }
                    | Request::MatchCreateWith { .. }
                    | Request::MatchCreateWithLatest { .. }
            ) || env.body.party_id().is_some();
            match handlers::dispatch(shared, state, env.cid, env.body) {
                handlers::Dispatched::Now(outcome) => {
                    Step::Reply(handlers::reply_frame(&state.handle, env.cid, outcome))
                }
                handlers::Dispatched::Later(later) => Step::Wait(env.cid, later, joins),
            }
        }
        Err((cid, e)) => {
            if let Err(step) = admit(&state.handle, &state.limiter, rate::Kind::Request, cid) {
                return step;
            }
            debug!(error = %e, "undecodable request");
            Step::Reply(handlers::reply_frame(
                &state.handle,
                cid,
                Err(ApiError::new(e.code(), e.to_string())),
            ))
        }
    }
}

fn on_datagram(
    shared: &Shared,
    handle: &SessionHandle,
    limiter: &Mutex<rate::Limiter>,
    datagram: Bytes,
) -> Step {
    count_in(handle, &datagram);
    if let Err(step) = admit(handle, limiter, rate::Kind::Datagram, None) {
        return step;
    }
    relay_datagram(shared, handle, datagram)
}

/// Every datagram a session receives, admitted or not.
fn count_in(handle: &SessionHandle, datagram: &Bytes) {
    let counters = &handle.outbound.counters;
    counters.datagrams_in.increment(1);
    counters.bytes_in.increment(datagram.len() as u64);
}

/// Whether a datagram that reached the server at `arrived` waited past `max_age` (zero:
/// never). Counted in the rate limit all the same: a flood that makes its own
/// datagrams stale is still a flood.
fn is_stale(arrived: Instant, now: Instant, max_age: Duration) -> bool {
    !max_age.is_zero() && now.saturating_duration_since(arrived) > max_age
}

/// Decodes an admitted datagram and relays it to its match or party.
fn relay_datagram(shared: &Shared, handle: &SessionHandle, datagram: Bytes) -> Step {
    let result = ClientDatagram::decode(datagram)
        .map_err(|e| ApiError::new(e.code(), e.to_string()))
        .and_then(|d| {
            if d.handle & crate::cluster::ALIAS_BIT != 0 && shared.cluster.is_active() {
                // A match another node hosts: this node's alias names it.
                return Ok(shared.cluster.datagram(handle.presence.session_id, d)?);
            }
            shared
                .matches
                .send_unreliable(handle.presence.session_id, d)
        });
    match result {
        Ok(()) => Step::Reply(None),
        Err(e) => {
            metrics::counter!("quicmatch_datagrams_dropped_total", "reason" => e.code.to_string())
                .increment(1);
            Step::Reply(handlers::reply_frame(handle, None, Err(e)))
        }
    }
}

/// The single cleanup path: every way a session ends comes through here.
pub(crate) fn leave_everything(shared: &Shared, state: &SessionState) {
    let id = state.handle.presence.session_id;
    shared.sessions.remove(id);
    shared.matchmaker.remove_session(id);
    shared.parties.disconnect(id);
    shared.cluster.party_session_ended(id);
    for m in &state.joined {
        handlers::leave_any(shared, *m, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::{ConnectionError as E, TransportErrorCode};

    #[test]
    fn a_datagram_is_stale_only_once_it_waited_past_the_bound() {
        let arrived = Instant::now();
        let bound = Duration::from_millis(50);
        assert!(!is_stale(arrived, arrived, bound));
        assert!(
            !is_stale(arrived, arrived + bound, bound),
            "at the bound: still sent"
        );
        assert!(is_stale(
            arrived,
            arrived + bound + Duration::from_micros(1),
            bound
        ));
        assert!(
            !is_stale(arrived, arrived + Duration::from_secs(60), Duration::ZERO),
            "0s turns the bound off"
        );
        // An arrival after `now` (stamped on another core a moment later) is fresh.
        assert!(!is_stale(
            arrived + Duration::from_millis(1),
            arrived,
            bound
        ));
    }

    #[test]
    fn polite_closes_end_the_session_and_drops_hold_it() {
        let transport = |code| {
            E::ConnectionClosed(quinn::ConnectionClose {
                error_code: code,
                frame_type: None,
                reason: Bytes::from_static(b"bye"),
            })
        };
        let app = E::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(0),
            reason: Bytes::new(),
        });
        assert_eq!(ending_for(Some(&app)), Ending::Final);
        assert_eq!(
            ending_for(Some(&transport(TransportErrorCode::NO_ERROR))),
            Ending::Final,
            "a transport CONNECTION_CLOSE with NO_ERROR is a goodbye"
        );
        assert_eq!(
            ending_for(Some(&transport(TransportErrorCode::PROTOCOL_VIOLATION))),
            Ending::Dropped
        );
        assert_eq!(ending_for(Some(&E::TimedOut)), Ending::Dropped);
        assert_eq!(ending_for(Some(&E::Reset)), Ending::Dropped);
        assert_eq!(ending_for(Some(&E::LocallyClosed)), Ending::Final);
    }
}
