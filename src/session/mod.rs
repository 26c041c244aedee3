//! One task per connection: authenticate first, then serve control frames, datagrams and
//! the outbound queue until the connection ends, then leave everything in one place.
//!
//! The task owns its session state, so none of it needs a lock. It is the only writer of
//! its control stream: a reply is written before the task looks at its outbound queue
//! again, so a client always reads its `Match` reply before any event of that match.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt as _};
use quicmatch_protocol::{
    datagram::ClientDatagram,
    envelope::{Response, ServerBody, ServerEnvelope, SessionInfo},
    frame::{self, FrameCodec, FrameError},
    CloseCode, Credentials, ErrorCode, MatchId, Presence, Request, SessionId,
};
use quinn::{Connection, SendStream, VarInt};
use tokio::sync::mpsc;
use tokio_util::{codec::FramedRead, sync::CancellationToken};
use tracing::{debug, info, info_span, warn, Instrument as _};

mod rate;

use crate::{
    auth::{self, AuthError},
    handlers::{self, ApiError},
    Shared,
};

/// Initial read buffer of a control stream (it grows when a frame needs more), kept
/// small because every idle connection holds one.
const CONTROL_READ_BUFFER: usize = 512;

/// Most frames the writer takes from the outbound queue per write, so one burst of
/// events goes out in few packets without starving the reader.
const WRITE_BATCH: usize = 64;

/// Datagrams a session handles per wake-up before looking at its other inputs.
const DATAGRAM_DRAIN: usize = 32;

/// What other parts of the server hold to reach a session: cheap to clone.
#[derive(Clone)]
pub struct SessionHandle {
    /// Who the session is (shared, so cloning a handle on the relay path never copies
    /// the username).
    pub presence: Arc<Presence>,
    conn: Connection,
    /// Encoded frames for this session's control stream. Senders: the match table (and
    /// any other shared table) pushing events and reliable data. Receiver: the session
    /// task, which writes them in order. Bounded by `session.outbound_queue`; when full,
    /// the session is closed as a slow consumer rather than letting it delay others.
    tx: mpsc::Sender<Bytes>,
}

impl SessionHandle {
    /// Queues a frame without waiting. A full queue closes the session with
    /// `SLOW_CONSUMER`; a closed one means the session is already ending.
    pub fn push_frame(&self, frame: Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(frame) {
            warn!(session = %self.presence.session_id, "outbound queue full; closing slow consumer");
            metrics::counter!("quicmatch_slow_consumer_closes_total").increment(1);
            close(&self.conn, CloseCode::SLOW_CONSUMER, "outbound queue full");
        }
    }

    /// Sends a datagram, dropping the oldest queued one if quinn's buffer is full.
    /// Returns `false` only when the datagram is too large for this peer's path.
    pub fn send_datagram(&self, datagram: Bytes) -> bool {
        let len = datagram.len() as u64;
        match self.conn.send_datagram(datagram) {
            Ok(()) => {
                metrics::counter!("quicmatch_datagrams_out_total").increment(1);
                metrics::counter!("quicmatch_datagram_bytes_out_total").increment(len);
                true
            }
            Err(quinn::SendDatagramError::TooLarge) => {
                metrics::counter!("quicmatch_datagrams_dropped_total", "reason" => "too_large")
                    .increment(1);
                false
            }
            Err(_) => {
                metrics::counter!("quicmatch_datagrams_dropped_total", "reason" => "connection_lost")
                    .increment(1);
                true
            }
        }
    }
}

/// Every session by id (connected, or held during its reconnect grace), so the
/// matchmaker and the party table can reach sessions they did not get a handle from.
#[derive(Clone, Default)]
pub struct SessionRegistry {
    /// One lock over both maps, held only for map operations, never across an `.await`.
    inner: Arc<std::sync::Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    /// Sessions others can push to. A held session stays here, so what is pushed to it
    /// waits in its queue for the client to come back.
    live: HashMap<SessionId, SessionHandle>,
    /// Sessions whose connection dropped, waiting for a resume.
    held: HashMap<SessionId, Held>,
    next_generation: u64,
}

/// Who may take a held session out of the registry.
#[derive(Debug, Clone, Copy)]
enum Taker {
    /// A client resuming: only for the user the session belongs to.
    Resume(quicmatch_protocol::UserId),
    /// The expiry timer started when this hold began (not one of an older hold).
    Expiry(u64),
}

/// A session whose connection dropped, kept for its reconnect grace.
pub(crate) struct Held {
    state: SessionState,
    /// The session's outbound queue, still filling while the client is away.
    rx: mpsc::Receiver<Bytes>,
    /// Tells a resumed-then-dropped-again session from the one an expiry timer was
    /// started for.
    generation: u64,
}

impl SessionRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, handle: SessionHandle) {
        self.lock().live.insert(handle.presence.session_id, handle);
    }

    fn remove(&self, id: SessionId) {
        self.lock().live.remove(&id);
    }

    fn hold(&self, state: SessionState, rx: mpsc::Receiver<Bytes>) -> u64 {
        let mut reg = self.lock();
        reg.next_generation += 1;
        let generation = reg.next_generation;
        reg.held.insert(
            state.handle.presence.session_id,
            Held {
                state,
                rx,
                generation,
            },
        );
        generation
    }

    /// Takes a held session out, if `taker` may have it.
    fn take_held(&self, id: SessionId, taker: Taker) -> Option<Held> {
        let mut reg = self.lock();
        let held = reg.held.get(&id)?;
        let allowed = match taker {
            Taker::Resume(user) => held.state.handle.presence.user_id == user,
            Taker::Expiry(generation) => held.generation == generation,
        };
        if allowed {
            reg.held.remove(&id)
        } else {
            None
        }
    }

    /// Takes every held session (at shutdown).
    pub(crate) fn take_all_held(&self) -> Vec<Held> {
        self.lock().held.drain().map(|(_, h)| h).collect()
    }

    /// The session, if it is connected or held.
    pub fn get(&self, id: SessionId) -> Option<SessionHandle> {
        self.lock().live.get(&id).cloned()
    }

    /// Sessions connected or held.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.lock().live.is_empty()
    }

    /// Sessions held for a reconnect.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }
}

impl Held {
    /// Ends a held session for good: the usual leaves and cancellations happen.
    pub(crate) fn expire(self, shared: &Shared) {
        info!(session = %self.state.handle.presence.session_id, "reconnect grace over");
        leave_everything(shared, &self.state);
    }
}

/// State only the session task touches.
pub(crate) struct SessionState {
    pub(crate) handle: SessionHandle,
    limiter: rate::Limiter,
    /// Matches this session is in, so a disconnect leaves each of them.
    pub(crate) joined: HashSet<MatchId>,
}

fn close(conn: &Connection, code: CloseCode, reason: &str) {
    conn.close(VarInt::from_u32(code.0), reason.as_bytes());
}

/// Serves one connection from its first frame to its end.
pub(crate) async fn run(shared: Arc<Shared>, conn: Connection, shutdown: CancellationToken) {
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
            debug!(%remote, %code, %reason, "authentication failed");
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
    /// A held session, resumed.
    Resumed(Held),
}

/// A connection that authenticated.
struct Authed {
    send: SendStream,
    frames: Frames,
    cid: Option<u32>,
    who: Who,
}

type Frames = FramedRead<quinn::RecvStream, FrameCodec>;

async fn authenticate(shared: &Shared, conn: &Connection) -> Result<Authed, (CloseCode, String)> {
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
    let who = if let Credentials::SessionToken { token } = &credentials {
        let gone = || {
            (
                CloseCode::AUTH_FAILED,
                "the session cannot be resumed: token invalid or expired, or grace period over"
                    .to_owned(),
            )
        };
        let claims =
            auth::verify_token(&shared.secret, token, auth::unix_now()).ok_or_else(gone)?;
        // A token for another user's session takes nothing: the hold stays intact.
        let held = shared
            .sessions
            .take_held(claims.sid, Taker::Resume(claims.uid))
            .ok_or_else(gone)?;
        Who::Resumed(held)
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

/// Whether a connection ended by accident (timeout, reset), so its session is held for
/// a resume, rather than by a close from either side.
fn dropped(conn: &Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(
            quinn::ConnectionError::TimedOut
                | quinn::ConnectionError::Reset
                | quinn::ConnectionError::ConnectionClosed(_)
        )
    )
}

async fn write(send: &mut SendStream, frame: &[u8]) -> bool {
    send.write_all(frame).await.is_ok()
}

async fn serve(shared: Arc<Shared>, conn: Connection, shutdown: CancellationToken, authed: Authed) {
    let Authed {
        mut send,
        mut frames,
        cid: auth_cid,
        who,
    } = authed;
    let send = &mut send;
    let (mut state, mut rx, resumed) = match who {
        Who::Fresh(identity, session_id) => {
            let (tx, rx) = mpsc::channel(shared.config.session.outbound_queue);
            let presence = Presence {
                user_id: identity.user_id,
                session_id,
                username: identity.username,
            };
            let state = SessionState {
                handle: SessionHandle {
                    presence: Arc::new(presence),
                    conn: conn.clone(),
                    tx,
                },
                joined: HashSet::new(),
                limiter: rate::Limiter::new(&shared.config.session, std::time::Instant::now()),
            };
            (state, rx, false)
        }
        Who::Resumed(held) => {
            let mut state = held.state;
            // Same session, same queue (what arrived while away is still in it), new
            // connection.
            state.handle = SessionHandle {
                presence: state.handle.presence.clone(),
                conn: conn.clone(),
                tx: state.handle.tx.clone(),
            };
            shared.matches.rebind(&state.handle, &state.joined);
            (state, held.rx, true)
        }
    };
    shared.sessions.insert(state.handle.clone());
    let presence = state.handle.presence.clone();
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
            shared.matches.infos(presence.session_id, &state.joined)
        } else {
            Vec::new()
        },
    };
    info!(user = %info.user_id, username = %info.username, resumed, "session started");
    let welcome = frame::encode(&ServerEnvelope {
        cid: auth_cid,
        body: ServerBody::Response(Response::Session(info)),
    });
    let mut alive = match welcome {
        Ok(f) => write(send, &f).await,
        Err(_) => false,
    };
    let mut batch = Vec::new();
    // Both futures live across iterations: re-creating them on every wake-up would
    // register and unregister their waiters once per datagram.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut next_datagram = std::pin::pin!(conn.read_datagram());
    while alive {
        tokio::select! {
            biased;
            () = &mut cancelled => {
                close(&conn, CloseCode::SERVER_SHUTDOWN, "server shutting down");
                alive = false;
            }
            n = rx.recv_many(&mut batch, WRITE_BATCH) => {
                alive = n > 0 && send.write_all_chunks(&mut batch).await.is_ok();
                batch.clear();
            }
            frame = frames.next() => match frame {
                Some(Ok(body)) => match on_frame(&shared, &mut state, &body) {
                    Step::Reply(Some(reply)) => alive = write(send, &reply).await,
                    Step::Reply(None) => {}
                    Step::Close(code, reason) => {
                        close(&conn, code, reason);
                        alive = false;
                    }
                },
                Some(Err(FrameError::Decode(e))) => {
                    debug!(error = %e, "broken framing");
                    close(&conn, CloseCode::PROTOCOL_ERROR, &e.to_string());
                    alive = false;
                }
                Some(Err(FrameError::Io(_))) | None => {
                    // Closing would overwrite why the connection ended (a timeout is
                    // held for a resume), so close only a connection still open.
                    if conn.close_reason().is_none() {
                        close(&conn, CloseCode::NORMAL, "control stream closed");
                    }
                    alive = false;
                }
            },
            datagram = &mut next_datagram => {
                let mut datagram = datagram;
                // Under load several datagrams wait: take them in one wake-up, up to a
                // bound so the control stream is not starved.
                for _ in 0..DATAGRAM_DRAIN {
                    next_datagram.set(conn.read_datagram());
                    let Ok(d) = datagram else {
                        alive = false;
                        break;
                    };
                    match on_datagram(&shared, &mut state, d) {
                        Step::Reply(Some(reply)) => alive = write(send, &reply).await,
                        Step::Reply(None) => {}
                        Step::Close(code, reason) => {
                            close(&conn, code, reason);
                            alive = false;
                        }
                    }
                    if !alive {
                        break;
                    }
                    match next_datagram.as_mut().now_or_never() {
                        Some(d) => datagram = d,
                        None => break,
                    }
                }
            }
        }
    }
    let grace = shared.config.session.reconnect_grace;
    if !grace.is_zero() && !shutdown.is_cancelled() && dropped(&conn) {
        let id = state.handle.presence.session_id;
        let generation = shared.sessions.hold(state, rx);
        info!(reason = ?conn.close_reason(), ?grace, "connection dropped; session held");
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(held) = shared.sessions.take_held(id, Taker::Expiry(generation)) {
                held.expire(&shared);
            }
        });
        return;
    }
    leave_everything(&shared, &state);
    info!(reason = ?conn.close_reason(), "session ended");
}

/// What the session does after one frame or datagram.
enum Step {
    /// Carry on, writing this reply first if there is one.
    Reply(Option<Bytes>),
    /// Close the connection.
    Close(CloseCode, &'static str),
}

/// Applies the rate limit; `Err` carries the step to take instead of processing.
fn admit(state: &mut SessionState, kind: rate::Kind, cid: Option<u32>) -> Result<(), Step> {
    match state.limiter.check(kind, std::time::Instant::now()) {
        rate::Verdict::Allow => Ok(()),
        rate::Verdict::Reject { tell } => {
            metrics::counter!("quicmatch_rate_limited_total").increment(1);
            let reply = tell.then(|| {
                handlers::reply_frame(
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
            if let Err(step) = admit(state, kind, env.cid) {
                return step;
            }
            let outcome = handlers::dispatch(shared, state, env.cid, env.body);
            Step::Reply(handlers::reply_frame(env.cid, outcome))
        }
        Err((cid, e)) => {
            if let Err(step) = admit(state, rate::Kind::Request, cid) {
                return step;
            }
            debug!(error = %e, "undecodable request");
            Step::Reply(handlers::reply_frame(
                cid,
                Err(ApiError::new(e.code(), e.to_string())),
            ))
        }
    }
}

fn on_datagram(shared: &Shared, state: &mut SessionState, datagram: Bytes) -> Step {
    metrics::counter!("quicmatch_datagrams_in_total").increment(1);
    metrics::counter!("quicmatch_datagram_bytes_in_total").increment(datagram.len() as u64);
    if let Err(step) = admit(state, rate::Kind::Datagram, None) {
        return step;
    }
    let result = ClientDatagram::decode(datagram)
        .map_err(|e| ApiError::new(e.code(), e.to_string()))
        .and_then(|d| {
            shared
                .matches
                .send_unreliable(state.handle.presence.session_id, d)
        });
    match result {
        Ok(()) => Step::Reply(None),
        Err(e) => {
            metrics::counter!("quicmatch_datagrams_dropped_total", "reason" => e.code.to_string())
                .increment(1);
            Step::Reply(handlers::reply_frame(None, Err(e)))
        }
    }
}

/// The single cleanup path: every way a session ends comes through here.
fn leave_everything(shared: &Shared, state: &SessionState) {
    let id = state.handle.presence.session_id;
    shared.sessions.remove(id);
    shared.matchmaker.remove_session(id);
    shared.parties.disconnect(id);
    for m in &state.joined {
        shared.matches.leave(*m, id);
    }
}
