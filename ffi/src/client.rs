//! One C client: its own tokio runtime (one background worker thread), the SDK socket,
//! and the pump task that turns everything the socket reports, and every request's
//! outcome, into one ordered queue the game thread drains with `qm_poll`.
//!
//! Nothing here blocks the game thread except connecting and freeing: requests are
//! handed to the pump through a bounded queue and answered later as events; sends are
//! tried once and report "busy" rather than wait.

use std::{
    future::Future,
    net::{SocketAddr, ToSocketAddrs as _},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use futures_util::{stream::FuturesUnordered, FutureExt as _, StreamExt as _};
use quicmatch_client::{
    ClientConfig, Credentials, ErrorCode, MatchId, Presence, RequestError, SessionId, Socket,
    Trust, UserId,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{item::Item, types::*, view::Held};

/// Requests waiting to reach the pump. When full, a request function returns 0 (not
/// sent) and the game may try again; the pump takes them as fast as it can start them.
const REQUEST_QUEUE: usize = 256;
/// Requests the pump runs at once; beyond it, it stops taking from the queue, which
/// then fills.
const MAX_IN_FLIGHT: usize = 256;
/// Events waiting for `qm_poll`. When full the pump waits, which leaves the SDK's own
/// buffer to fill: unreliable data is then dropped and reliable data waits (and, through
/// flow control, the server). A game that polls every frame never gets near it.
const EVENT_QUEUE: usize = 1024;
/// How long `qm_free` waits for the server to be told of the close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long `qm_free` waits for the background thread to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

type Outcome = Pin<Box<dyn Future<Output = Item> + Send>>;
/// A request: given the socket, the future of its outcome.
type Job = Box<dyn FnOnce(Arc<Socket>) -> Outcome + Send>;

/// What `qm_connect` needs, already checked.
pub(crate) struct ConnectArgs<'a> {
    pub(crate) server: &'a str,
    pub(crate) trust: &'a str,
    pub(crate) server_key: Option<&'a str>,
    pub(crate) device_id: &'a str,
    pub(crate) username: Option<&'a str>,
}

/// The state `qm_poll` works on.
struct PollState {
    /// Filled by the pump, in order; closed when the pump ends.
    events: mpsc::Receiver<Item>,
    /// The event last returned: `qm_poll`'s pointers point into it.
    current: Option<Held>,
    /// Whether the last event (`QM_EVENT_DISCONNECTED`) has been handed out.
    finished: bool,
}

/// This client's own presence, as C strings that live as long as the client.
struct SelfStrings {
    user_id: std::ffi::CString,
    session_id: std::ffi::CString,
    username: std::ffi::CString,
}

/// Everything behind a `qm_client` pointer.
pub(crate) struct Client {
    runtime: Option<tokio::runtime::Runtime>,
    socket: Arc<Socket>,
    /// To the pump: requests to run. Bounded (see [`REQUEST_QUEUE`]); closed by the
    /// pump once the connection is gone.
    jobs: mpsc::Sender<Job>,
    /// Behind a lock although one thread at a time uses a client: a caller that breaks
    /// that rule gets serialised calls rather than a data race.
    poll: Mutex<PollState>,
    next_request: AtomicU32,
    /// Set by `qm_close`: nothing new is sent after it.
    closing: AtomicBool,
    /// Stops the pump when the client is freed.
    stop: CancellationToken,
    me: SelfStrings,
}

fn lock(m: &Mutex<PollState>) -> MutexGuard<'_, PollState> {
    // A panic while polling (caught at the boundary) leaves nothing half-updated that
    // matters: the next poll simply goes on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn c_string(s: String) -> std::ffi::CString {
    std::ffi::CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

/// Resolves `host:port`; a host that is a name (not an address) is also the name the
/// certificate is checked against.
fn resolve(server: &str) -> Result<(SocketAddr, Option<String>), String> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok((addr, None));
    }
    let addr = server
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {server:?} (expected host:port): {e}"))?
        .next()
        .ok_or_else(|| format!("{server:?} resolves to no address"))?;
    let host = server.rsplit_once(':').map(|(h, _)| h.to_owned());
    Ok((addr, host))
}

fn trust(spec: &str) -> Result<Trust, String> {
    if let Some(path) = spec.strip_prefix("ca:") {
        Ok(Trust::CaFile(path.into()))
    } else if let Some(hex) = spec.strip_prefix("pin:") {
        Trust::pin(hex).map_err(|e| e.to_string())
    } else if spec == "platform" {
        Ok(Trust::PlatformRoots)
    } else {
        Err(format!(
            "trust must be \"ca:PATH\", \"pin:HEX\" or \"platform\", got {spec:?}"
        ))
    }
}

impl Client {
    /// Starts the runtime, connects and authenticates, and starts the pump.
    pub(crate) fn connect(args: ConnectArgs<'_>) -> Result<Self, String> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err("qm_connect was called on a thread that runs a tokio runtime".into());
        }
        let (server, server_name) = resolve(args.server)?;
        let mut config = ClientConfig::new(
            server,
            trust(args.trust)?,
            Credentials::Device {
                id: args.device_id.to_owned(),
            },
        );
        config.server_name = server_name;
        if let Some(name) = args.username {
            config = config.username(name);
        }
        if let Some(key) = args.server_key {
            config = config.server_key(key);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("quicmatch")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the background thread: {e}"))?;
        let socket = match runtime.block_on(Socket::connect(config)) {
            Ok(socket) => Arc::new(socket),
            Err(e) => {
                runtime.shutdown_timeout(SHUTDOWN_WAIT);
                return Err(e.to_string());
            }
        };
        let (jobs, jobs_rx) = mpsc::channel(REQUEST_QUEUE);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let stop = CancellationToken::new();
        runtime.spawn(pump(socket.clone(), jobs_rx, events_tx, stop.clone()));
        let session = socket.session();
        let me = SelfStrings {
            user_id: c_string(session.user_id.to_string()),
            session_id: c_string(session.session_id.to_string()),
            username: c_string(session.username.clone()),
        };
        Ok(Self {
            runtime: Some(runtime),
            socket,
            jobs,
            poll: Mutex::new(PollState {
                events,
                current: None,
                finished: false,
            }),
            next_request: AtomicU32::new(1),
            closing: AtomicBool::new(false),
            stop,
            me,
        })
    }

    /// Unreliable messages the SDK dropped rather than deliver late.
    pub(crate) fn datagrams_dropped(&self) -> u64 {
        self.socket.datagrams_dropped()
    }

    /// This client's presence; its strings live as long as the client.
    pub(crate) fn presence(&self) -> qm_presence {
        qm_presence {
            user_id: self.me.user_id.as_ptr(),
            session_id: self.me.session_id.as_ptr(),
            username: self.me.username.as_ptr(),
        }
    }

    fn request_id(&self) -> u32 {
        loop {
            let id = self.next_request.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Hands a request to the pump; its outcome arrives as an event carrying the
    /// returned id. 0: not sent (closed, disconnected, or the queue is full).
    pub(crate) fn submit<F, Fut>(&self, make: F) -> u32
    where
        F: FnOnce(Arc<Socket>, u32) -> Fut + Send + 'static,
        Fut: Future<Output = Item> + Send + 'static,
    {
        if self.closing.load(Ordering::Acquire) {
            return 0;
        }
        let id = self.request_id();
        let job: Job = Box::new(move |socket| Box::pin(make(socket, id)));
        match self.jobs.try_send(job) {
            Ok(()) => id,
            Err(_) => 0,
        }
    }

    /// A request whose arguments were refused before sending: it still gets an id, and
    /// its `QM_EVENT_ERROR` (with `QM_CODE_BAD_INPUT`) follows like any answer.
    pub(crate) fn reject(&self, message: String) -> u32 {
        let code = i32::try_from(ErrorCode::BAD_INPUT.0).unwrap_or(QM_ERR_BAD_INPUT);
        self.submit(move |_, id| async move { Item::error(id, code, message) })
    }

    /// The next event, laid out in `out`. 1: an event; 0: none now; negative: the
    /// client is finished (its last event was handed out).
    pub(crate) fn poll(&self, out: &mut qm_event) -> i32 {
        let mut state = lock(&self.poll);
        // The previous event's pointers end here, as documented.
        state.current = None;
        *out = qm_event::EMPTY;
        if state.finished {
            return QM_ERR_DISCONNECTED;
        }
        let item = match state.events.try_recv() {
            Ok(item) => item,
            Err(mpsc::error::TryRecvError::Empty) => return 0,
            // The pump ended without a last event (it cannot, short of a bug): C still
            // gets one.
            Err(mpsc::error::TryRecvError::Disconnected) => {
                Item::lost("the background task stopped")
            }
        };
        state.finished = item.is_final();
        let held = Held::new(item);
        *out = *held.view();
        state.current = Some(held);
        1
    }

    /// Sends match data now, or says why not: too large, not a member, busy, closed.
    pub(crate) fn send(
        &self,
        match_id: MatchId,
        op_code: i64,
        data: bytes::Bytes,
        reliable: bool,
        targets: Option<Vec<SessionId>>,
    ) -> i32 {
        if self.closing.load(Ordering::Acquire) {
            return QM_ERR_CLOSED;
        }
        if self.jobs.is_closed() {
            return QM_ERR_DISCONNECTED;
        }
        // The SDK checks membership itself only for datagrams; check it for both, so
        // a reliable send to a match this client is not in fails here too.
        if self.socket.match_presences(match_id).is_none() {
            return QM_ERR_NOT_MEMBER;
        }
        // The SDK routes by session id only; the rest of each presence is not read.
        let targets: Option<Vec<Presence>> = targets.map(|ids| {
            ids.into_iter()
                .map(|session_id| Presence {
                    user_id: UserId(session_id.0),
                    session_id,
                    username: String::new(),
                })
                .collect()
        });
        let Some(runtime) = &self.runtime else {
            return QM_ERR_CLOSED;
        };
        let _context = runtime.enter();
        let socket = &self.socket;
        // Polled once: a datagram goes out at once, reliable data is queued unless the
        // connection's queue is full, and then the game hears "busy" instead of waiting.
        let sent = socket
            .send_match_data(match_id, op_code, data, reliable, targets.as_deref())
            .now_or_never();
        match sent {
            None => QM_ERR_BUSY,
            Some(Ok(())) => QM_OK,
            Some(Err(e)) => send_error(&e),
        }
    }

    /// Starts a polite close: nothing new is sent, the server is told, and the events
    /// already on their way still arrive, ending with `QM_EVENT_DISCONNECTED`.
    pub(crate) fn close(&self) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(runtime) = &self.runtime {
            let socket = self.socket.clone();
            runtime.spawn(async move { socket.close().await });
        }
    }
}

fn send_error(e: &RequestError) -> i32 {
    match e.code() {
        Some(ErrorCode::PAYLOAD_TOO_LARGE) => QM_ERR_TOO_LARGE,
        Some(ErrorCode::NOT_MATCH_MEMBER) => QM_ERR_NOT_MEMBER,
        Some(ErrorCode::BAD_INPUT) => QM_ERR_BAD_INPUT,
        Some(_) => QM_ERR_INTERNAL,
        None => match e {
            RequestError::Disconnected => QM_ERR_DISCONNECTED,
            RequestError::Timeout => QM_ERR_TIMEOUT,
            _ => QM_ERR_INTERNAL,
        },
    }
}

impl Drop for Client {
    /// Freeing: stop the pump, close the connection (waiting briefly so the server
    /// hears of it), and end the background thread. Every path out of a client goes
    /// through here.
    fn drop(&mut self) {
        self.stop.cancel();
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Cannot wait on a thread that runs a runtime: close without waiting.
            self.socket.connection().close(0u32.into(), b"freed");
            runtime.shutdown_background();
            return;
        }
        let socket = self.socket.clone();
        runtime.block_on(async move {
            let _ = tokio::time::timeout(CLOSE_WAIT, socket.close()).await;
        });
        runtime.shutdown_timeout(SHUTDOWN_WAIT);
    }
}

/// The client's background task: runs requests and forwards events, in order.
///
/// A request's outcome is taken before any event read after it completed. The SDK
/// answers a request before it passes on the events that followed the answer on the
/// stream, so the game sees, say, `QM_EVENT_MATCH` before that match's first presence
/// event. Once the connection is gone it takes no new requests, lets the ones running
/// finish (they fail at once), and sends the SDK's `Disconnected` last.
async fn pump(
    socket: Arc<Socket>,
    mut jobs: mpsc::Receiver<Job>,
    events: mpsc::Sender<Item>,
    stop: CancellationToken,
) {
    let mut running: FuturesUnordered<Outcome> = FuturesUnordered::new();
    let mut last: Option<Item> = None;
    let mut jobs_open = true;
    loop {
        let connected = last.is_none();
        if !connected && !jobs_open && running.is_empty() {
            break;
        }
        let item = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            Some(item) = running.next(), if !running.is_empty() => item,
            job = jobs.recv(), if jobs_open && running.len() < MAX_IN_FLIGHT => {
                match job {
                    Some(job) => running.push(job(socket.clone())),
                    None => jobs_open = false,
                }
                continue;
            }
            event = socket.next_event(), if connected => {
                let item = event.map_or_else(|| Item::lost("connection ended"), Item::from_event);
                if item.is_final() {
                    // No new requests; those already queued still run (and fail).
                    jobs.close();
                    last = Some(item);
                    continue;
                }
                item
            }
        };
        if events.send(item).await.is_err() {
            return;
        }
    }
    if let Some(item) = last {
        let _ = events.send(item).await;
    }
}
