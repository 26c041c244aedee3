//! quicmatch-client: the Rust SDK for the quicmatch server.
//!
//! A [`Socket`] is one authenticated QUIC connection. Requests are `async` methods named
//! after Nakama's SDKs; everything the server pushes arrives through
//! [`Socket::next_event`]. Unreliable match data travels as QUIC datagrams, reliable data
//! and everything else over one ordered control stream.
//!
//! ```no_run
//! use quicmatch_client::{ClientConfig, Credentials, Event, SendOptions, Socket, Trust};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::new(
//!     "127.0.0.1:7350".parse()?,
//!     Trust::CaFile("certs/server.crt".into()),
//!     Credentials::Device { id: "device-0001-abcd".into() },
//! );
//! let socket = Socket::connect(config).await?;
//! let game = socket.create_match(None).await?;
//! println!("share this id: {}", game.match_id);
//! socket.send_match_data(game.match_id, 1, b"hello".to_vec(), SendOptions::unreliable(), None).await?;
//! while let Some(event) = socket.next_event().await {
//!     if let Event::MatchData(data) = event {
//!         println!("{} sent op {}: {:?}", data.sender.username, data.op_code, data.data);
//!     }
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod connect;
mod discovery;
mod driver;
mod inbox;
mod lanes;
mod redundancy;
mod requests;
mod runtime;
mod send;
mod storage;
mod trust;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
pub use discovery::{discover, DiscoveredServer, SERVICE_TYPE};
use quicmatch_protocol::{envelope::ClientEnvelope, frame, Request, Response};
pub use quicmatch_protocol::{
    CloseCode, Composition, Credentials, ErrorCode, MatchId, MatchListRequest, MatchListing,
    MatchmakerMatched, MatchmakerMatchedTeams, MatchmakerOptions, MatchmakerUser, PartyId,
    PartyInfo, Presence, ReadPermission, SessionId, SessionInfo, StorageDeleteObject,
    StorageObject, StorageObjectAck, StorageObjectId, StorageObjectList, StorageWriteObject, Teams,
    TicketId, UserId, WritePermission,
};
/// The QUIC library the SDK's transport types come from (endpoints, connections,
/// transport settings), so a game need not depend on a matching version itself.
pub use quinn;
pub use requests::AddMatchmaker;
pub use runtime::{ListMatches, MatchOptions};
pub use send::{SendOptions, MAX_REPEATS, MAX_REPEAT_DELAY};
pub use storage::{ListStorageObjects, WriteStorageObject};
use tokio::sync::{mpsc, oneshot};
pub use trust::Trust;

use crate::driver::{ClientState, Command};

/// The default [`ClientConfig::max_datagram_age`].
pub const DEFAULT_MAX_DATAGRAM_AGE: Duration = Duration::from_millis(100);

/// Everything needed to connect: build it with [`ClientConfig::new`], then the setters
/// (or by assigning the fields). Marked `#[non_exhaustive]` so that new settings are not
/// a breaking change: it cannot be built with a struct expression outside this crate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The server's UDP address.
    pub server: SocketAddr,
    /// The name checked against the certificate; defaults to the server's IP address
    /// (development certificates list the machine's addresses).
    pub server_name: Option<String>,
    /// Which certificates to accept.
    pub trust: Trust,
    /// The server key; `defaultkey` unless the server was configured otherwise.
    pub server_key: String,
    /// Who the user is.
    pub credentials: Credentials,
    /// The display name to use.
    pub username: Option<String>,
    /// How long a request waits for its reply. Default 10 s.
    pub request_timeout: Duration,
    /// Keep-alive interval: the server counts a session it has not heard from for
    /// 2 s as suspect and one silent for 5 s as dead, so keep this at 1 s or less.
    /// Default 1 s (a QUIC PING of a few bytes, sent only when nothing else was).
    pub keep_alive: Duration,
    /// Close the connection after this long without hearing from the server. Default 15 s.
    pub idle_timeout: Duration,
    /// Events buffered for [`Socket::next_event`]. When full, unreliable data is dropped
    /// and reliable events wait (and, through flow control, the server waits). Default 4096.
    pub event_buffer: usize,
    /// After a lost connection, how long the socket keeps trying to resume its session
    /// (with backoff), surfacing [`Event::Reconnecting`] and then [`Event::Reconnected`]
    /// or [`Event::Disconnected`]. Match it to the server's `session.reconnect_grace`.
    /// `Duration::ZERO` turns automatic resume off. Default 5 s.
    pub reconnect_for: Duration,
    /// Unreliable data that waited longer than this between being received and being
    /// taken by [`Socket::next_event`] (or `try_next_event`) is dropped instead of
    /// delivered, and counted in [`Socket::datagrams_dropped`]: after a stall the game
    /// gets the players' current state, not a backlog of old positions. A task of the
    /// socket's own reads and stamps each datagram as soon as the runtime runs it, so
    /// the bound covers the time the application did not read; a runtime that is itself
    /// blocked (a game loop doing a long load on the runtime's only thread) stamps what
    /// arrived meanwhile only when it runs again. Reliable data and events are never
    /// dropped. `None` (or zero) turns it off: datagrams are then read by `next_event`
    /// itself, one task hop sooner, and a socket nobody reads keeps the newest 256 KiB.
    /// Default 100 ms: six frames at 60 Hz, longer than any wait of an application
    /// that polls every frame.
    pub max_datagram_age: Option<Duration>,
}

impl ClientConfig {
    /// The QUIC transport settings a socket connects with (keep-alive, idle timeout,
    /// datagram buffers, the ACK-frequency extension).
    pub fn transport(&self) -> Result<quinn::TransportConfig, ConnectError> {
        let mut transport = quinn::TransportConfig::default();
        transport
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(self.idle_timeout)
                    .map_err(|e| ConnectError::Config(e.to_string()))?,
            ))
            .max_concurrent_bidi_streams(0u32.into())
            // Lanes: the server's per-sender streams of reliable match data.
            .max_concurrent_uni_streams(quicmatch_protocol::MAX_LANES.into())
            .datagram_receive_buffer_size(Some(256 * 1024))
            .datagram_send_buffer_size(32 * 1024);
        // Ask the server for fewer ACK-only packets (the ACK-frequency extension): it
        // only affects loss recovery, and halves packet counts on busy relays.
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(10u32.into())
            .max_ack_delay(Some(Duration::from_millis(25)));
        transport.ack_frequency_config(Some(ack));
        Ok(transport)
    }

    /// A configuration with the defaults above.
    pub fn new(server: SocketAddr, trust: Trust, credentials: Credentials) -> Self {
        Self {
            server,
            server_name: None,
            trust,
            server_key: "defaultkey".into(),
            credentials,
            username: None,
            request_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(15),
            event_buffer: 4096,
            reconnect_for: Duration::from_secs(5),
            max_datagram_age: Some(DEFAULT_MAX_DATAGRAM_AGE),
        }
    }

    /// Sets the display name.
    pub fn username(mut self, name: impl Into<String>) -> Self {
        self.username = Some(name.into());
        self
    }

    /// Sets the server key.
    pub fn server_key(mut self, key: impl Into<String>) -> Self {
        self.server_key = key.into();
        self
    }

    /// Sets the name checked against the certificate (see the field of the same name).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Sets how long a request waits for its reply.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the keep-alive interval (keep it at 1 s or less; see the field of the same
    /// name).
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Sets how long the connection may stay silent before it is closed.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets how many events are buffered for [`Socket::next_event`].
    pub fn event_buffer(mut self, events: usize) -> Self {
        self.event_buffer = events;
        self
    }

    /// Sets [`max_datagram_age`](Self::max_datagram_age); `None` turns the bound off.
    pub fn max_datagram_age(mut self, age: Option<Duration>) -> Self {
        self.max_datagram_age = age;
        self
    }

    /// Sets how long a lost connection is resumed for (`Duration::ZERO`: never).
    pub fn reconnect_for(mut self, window: Duration) -> Self {
        self.reconnect_for = window;
        self
    }
}

/// Why [`Socket::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration cannot work (bad pin, unreadable CA file, ...).
    #[error("client config: {0}")]
    Config(String),
    /// The local UDP socket could not be opened.
    #[error("local socket: {0}")]
    Io(#[from] std::io::Error),
    /// The connection could not be started.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or the server closed it (for example `AUTH_FAILED`).
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The server did not answer the handshake or authentication in time.
    #[error("timed out")]
    Timeout,
    /// Nothing answered the handshake at that address.
    #[error("no answer from {server} within {waited:?}: is the server running there, and is UDP port {} reachable?", server.port())]
    Unreachable {
        /// The address tried.
        server: SocketAddr,
        /// How long it waited.
        waited: Duration,
    },
    /// The server's certificate is not trusted by this configuration.
    #[error("the certificate of {server} is not trusted ({detail}): trust it with Trust::CaFile (CLI: --ca certs/server.crt from the server's machine), pin it with Trust::pin (CLI: --pin FINGERPRINT, from the server's banner), or on a LAN find the server and pin what it advertises with discover() (CLI: --discover instead of --server)")]
    Untrusted {
        /// The address tried.
        server: SocketAddr,
        /// What the TLS layer said.
        detail: String,
    },
    /// The server answered with something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server's address is of one family (IPv4 or IPv6) and this client can only
    /// use the other: its socket is bound to the other family, or this machine cannot
    /// open a socket of that family or has no route for it.
    #[error("{server} is an {} address, but {reason}: connect to the server's {} address instead (its banner lists them){}", family(server), other_family(server), socket_hint(server, local))]
    AddressFamily {
        /// The address tried.
        server: SocketAddr,
        /// The client socket's own address, when the socket is the cause.
        local: Option<SocketAddr>,
        /// What stands in the way, in words.
        reason: String,
    },
}

/// `"IPv4"` or `"IPv6"`: the family of `addr` (a v4-mapped IPv6 address is IPv4).
pub(crate) fn family(addr: &SocketAddr) -> &'static str {
    match addr {
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_none() => "IPv6",
        _ => "IPv4",
    }
}

/// The family `addr` is not of.
fn other_family(addr: &SocketAddr) -> &'static str {
    if family(addr) == "IPv6" {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// When the client's own socket is what cannot reach `server`: how to bind one that can.
fn socket_hint(server: &SocketAddr, local: &Option<SocketAddr>) -> String {
    match local {
        Some(_) if family(server) == "IPv6" => {
            ", or connect from a socket bound to [::]:0 (IPv6 and IPv4)".into()
        }
        Some(_) => ", or connect from a socket bound to 0.0.0.0:0 or [::]:0".into(),
        None => String::new(),
    }
}

impl ConnectError {
    /// The server's close code and reason, when the server closed the connection.
    pub fn close_code(&self) -> Option<(CloseCode, String)> {
        match self {
            Self::Connection(quinn::ConnectionError::ApplicationClosed(c)) => Some((
                CloseCode(u32::try_from(c.error_code.into_inner()).unwrap_or(u32::MAX)),
                String::from_utf8_lossy(&c.reason).into_owned(),
            )),
            _ => None,
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The server (or the SDK, for checks it can make first) refused the request.
    #[error("{code}: {message}")]
    Server {
        /// Stable numeric code.
        code: ErrorCode,
        /// Reason.
        message: String,
    },
    /// No reply within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The connection is gone.
    #[error("disconnected")]
    Disconnected,
    /// The server sent a reply of the wrong kind.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

impl RequestError {
    fn local(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Server {
            code,
            message: message.into(),
        }
    }

    /// The error code, for errors the server (or SDK) reported.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A match the socket is in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Match {
    /// The match id, to share with other players.
    pub match_id: MatchId,
    /// Members, including this socket.
    pub size: u32,
    /// Every member, including this socket, in join order.
    pub presences: Vec<Presence>,
    /// This socket's presence.
    pub self_presence: Presence,
}

/// Something the server pushed, or a change in the connection.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Members joined or left a match.
    MatchPresence(MatchPresenceEvent),
    /// Match data from another member (or from this socket, if it listed itself).
    MatchData(MatchData),
    /// The matchmaker put this socket in a match: join it with
    /// [`Socket::join_match_token`] (or [`Socket::join_match`] when it carries a
    /// `match_id`).
    MatchmakerMatched(MatchmakerMatched),
    /// The server cancelled a ticket this socket was in.
    MatchmakerTicketCancelled {
        /// The ticket.
        ticket: TicketId,
        /// Why.
        reason: String,
    },
    /// A snapshot of a party this socket was just admitted to.
    Party(PartyInfo),
    /// Members joined or left a party.
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
    /// Sessions asked to join this socket's party (it is the leader).
    PartyJoinRequest {
        /// The party.
        party_id: PartyId,
        /// The requesters.
        presences: Vec<Presence>,
    },
    /// This socket is no longer in (or waiting for) the party.
    PartyClose {
        /// The party.
        party_id: PartyId,
        /// Why: closed by the leader, removed, or request declined.
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
        /// The payload.
        data: Bytes,
    },
    /// The leader put the party into the matchmaker.
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
    /// shutting down); this socket is no longer in it.
    MatchEnded {
        /// The match.
        match_id: MatchId,
        /// Why.
        reason: String,
    },
    /// The matchmaker put this socket in a match with teams (its ticket asked for
    /// teams): the result as [`Event::MatchmakerMatched`] carries it, and every user's
    /// team.
    MatchmakerMatchedTeams(MatchmakerMatchedTeams),
    /// A fire-and-forget send failed.
    Error {
        /// Stable numeric code.
        code: ErrorCode,
        /// Reason.
        message: String,
    },
    /// The connection was lost; the socket is resuming its session (see
    /// [`ClientConfig::reconnect_for`]). Requests waiting for a reply fail with
    /// [`RequestError::Disconnected`]; new ones wait for the resume.
    Reconnecting {
        /// The close code, when the server closed the connection with one.
        code: Option<CloseCode>,
        /// Why the connection was lost.
        reason: String,
    },
    /// The session resumed on a new connection: same session, same matches, and every
    /// event sent meanwhile follows, in order, exactly once.
    Reconnected {
        /// Connection attempts it took.
        attempts: u32,
    },
    /// The connection ended (and could not be resumed); no further events follow.
    Disconnected {
        /// The close code, when the server closed it with one.
        code: Option<CloseCode>,
        /// Why.
        reason: String,
    },
}

/// Members joining or leaving a match.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MatchPresenceEvent {
    /// The match.
    pub match_id: MatchId,
    /// Who joined.
    pub joins: Vec<Presence>,
    /// Who left.
    pub leaves: Vec<Presence>,
}

/// Match data received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MatchData {
    /// The match.
    pub match_id: MatchId,
    /// Who sent it.
    pub sender: Presence,
    /// Application-defined message kind.
    pub op_code: i64,
    /// The payload.
    pub data: Bytes,
    /// Whether it came over the reliable path.
    pub reliable: bool,
    /// The match's processing order: a higher `seq` was processed later, so a receiver
    /// of unreliable data can drop anything older than what it already applied.
    pub seq: u64,
}

impl MatchData {
    /// Whether a server-run match sent this itself rather than on behalf of a member
    /// (then `sender` has nil ids and an empty name).
    pub fn from_server(&self) -> bool {
        self.sender.session_id.0.is_nil()
    }
}

struct Inner {
    /// The current connection, replaced by each automatic resume.
    link: Arc<driver::Link>,
    endpoint: quinn::Endpoint,
    /// Requests to the driver task, which owns the control stream. Bounded: a caller
    /// waits when the driver is behind.
    commands: mpsc::Sender<Command>,
    /// Match views shared with the driver, which updates them in stream order.
    state: Arc<Mutex<ClientState>>,
    next_cid: AtomicU32,
    request_timeout: Duration,
    /// Received datagrams, stamped, when `max_datagram_age` is set.
    inbox: Option<Arc<inbox::Inbox>>,
    /// The runtime the socket connected on, for its own tasks (datagram repeats).
    runtime: tokio::runtime::Handle,
}

/// An authenticated connection to a quicmatch server.
pub struct Socket {
    inner: Arc<Inner>,
    session: SessionInfo,
    events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
}

impl Socket {
    /// Connects, authenticates, and starts receiving.
    pub async fn connect(config: ClientConfig) -> Result<Self, ConnectError> {
        let bind: SocketAddr = if config.server.is_ipv6() {
            "[::]:0"
                .parse()
                .map_err(|_| ConnectError::Config("bind".into()))?
        } else {
            "0.0.0.0:0"
                .parse()
                .map_err(|_| ConnectError::Config("bind".into()))?
        };
        // A machine without IPv6 (or, rarely, IPv4) refuses the socket itself: say which
        // family, rather than only the OS's words.
        let endpoint = quinn::Endpoint::client(bind).map_err(|e| ConnectError::AddressFamily {
            server: config.server,
            local: None,
            reason: format!(
                "this machine cannot open an {} socket ({e})",
                family(&config.server)
            ),
        })?;
        Self::connect_with_endpoint(endpoint, config).await
    }

    /// Like [`connect`](Self::connect), over an existing client endpoint (many sockets
    /// can share one UDP socket).
    pub async fn connect_with_endpoint(
        endpoint: quinn::Endpoint,
        config: ClientConfig,
    ) -> Result<Self, ConnectError> {
        let last_seq = match &config.credentials {
            Credentials::Resume { last_seq, .. } => *last_seq,
            _ => 0,
        };
        let connect::Established {
            conn,
            send,
            frames,
            session,
        } = connect::establish(
            &endpoint,
            &config,
            config.credentials.clone(),
            config.request_timeout,
        )
        .await?;
        let state = Arc::new(Mutex::new(ClientState::default()));
        // A resumed session is already in matches: know them before any event.
        for m in &session.matches {
            lock(&state).on_match(m);
        }
        let (commands, commands_rx) = mpsc::channel(256);
        let (events_tx, events_rx) = mpsc::channel(config.event_buffer.max(1));
        let link = Arc::new(driver::Link::new(conn));
        link.last_seq.store(last_seq, Ordering::Relaxed);
        let request_timeout = config.request_timeout;
        let inbox = config
            .max_datagram_age
            .filter(|age| !age.is_zero())
            .map(|age| {
                let inbox = Arc::new(inbox::Inbox::new(age));
                tokio::spawn(inbox::read(inbox.clone(), link.watch()));
                inbox
            });
        let driver = driver::Driver {
            endpoint: endpoint.clone(),
            config,
            link: link.clone(),
            token: session.token.clone(),
            received: lanes::Received::after(last_seq),
            commands: commands_rx,
            events: events_tx,
            state: state.clone(),
        };
        tokio::spawn(driver.run(send, frames));
        Ok(Self {
            inner: Arc::new(Inner {
                link,
                endpoint,
                commands,
                state,
                next_cid: AtomicU32::new(1),
                request_timeout,
                inbox,
                runtime: tokio::runtime::Handle::current(),
            }),
            session,
            events: tokio::sync::Mutex::new(events_rx),
        })
    }

    /// This connection's session: user id, session id, username and token. Connect
    /// with `Credentials::SessionToken { token }` within the server's reconnect grace
    /// to resume the same session (`resumed` is then true and `matches` lists the
    /// matches it is still in).
    pub fn session(&self) -> &SessionInfo {
        &self.session
    }

    /// The sequence number of the last event this socket processed (0 before the
    /// first). The socket resumes from it by itself; an application that resumes by
    /// hand passes it in [`Credentials::Resume`].
    pub fn last_event_seq(&self) -> u64 {
        self.inner.link.last_seq.load(Ordering::Relaxed)
    }

    /// This socket as a presence.
    pub fn presence(&self) -> Presence {
        Presence {
            user_id: self.session.user_id,
            session_id: self.session.session_id,
            username: self.session.username.clone(),
        }
    }

    /// Moves this socket to a new local UDP socket, as after a network change (Wi-Fi to
    /// mobile data). The connection migrates: the session, its matches, party and
    /// tickets carry on without a leave or a rejoin.
    pub fn rebind(&self, socket: std::net::UdpSocket) -> std::io::Result<()> {
        self.inner.endpoint.rebind(socket)
    }

    /// The underlying QUIC connection (statistics, RTT, `max_datagram_size`); after an
    /// automatic resume, the new one.
    pub fn connection(&self) -> quinn::Connection {
        self.inner.link.get().1
    }

    async fn request(&self, body: Request) -> Result<Response, RequestError> {
        let cid = self.inner.next_cid.fetch_add(1, Ordering::Relaxed);
        let frame = frame::encode(&ClientEnvelope {
            cid: Some(cid),
            body,
        })
        .map_err(|e| RequestError::local(ErrorCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Request { cid, frame, reply })
            .await
            .map_err(|_| RequestError::Disconnected)?;
        match tokio::time::timeout(self.inner.request_timeout, rx).await {
            Err(_) => Err(RequestError::Timeout),
            Ok(Err(_)) => Err(RequestError::Disconnected),
            Ok(Ok(Response::Error { code, message })) => {
                Err(RequestError::Server { code, message })
            }
            Ok(Ok(response)) => Ok(response),
        }
    }

    fn expect_match(&self, response: Response) -> Result<Match, RequestError> {
        match response {
            Response::Match(info) => Ok(Match {
                match_id: info.match_id,
                size: info.size,
                presences: info.presences.into_iter().map(|m| m.presence).collect(),
                self_presence: info.self_presence.presence,
            }),
            other => Err(RequestError::Unexpected(format!("{other:?}"))),
        }
    }

    fn expect_ack(response: Response) -> Result<(), RequestError> {
        match response {
            Response::Ack => Ok(()),
            other => Err(RequestError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The current members of a match this socket is in (including itself), as the
    /// control stream has reported them so far; `None` for a match it is not in.
    pub fn match_presences(&self, match_id: MatchId) -> Option<Vec<Presence>> {
        lock(&self.inner.state).presences(match_id)
    }

    /// The short number that names a match this socket is in on the datagrams of this
    /// connection (PROTOCOL.md §7), for code that writes and reads match
    /// datagrams on [`connection`](Self::connection) itself; `None` for a match it is
    /// not in. It changes when the socket resumes on a new connection.
    pub fn match_handle(&self, match_id: MatchId) -> Option<u32> {
        lock(&self.inner.state)
            .route(match_id, None)
            .map(|(handle, _)| handle)
    }

    /// The next event if one is ready, without waiting: for a game loop that polls once
    /// a frame. `None` means nothing is ready now (or the socket is closed, or another
    /// task is inside [`next_event`](Self::next_event)). Poll it every frame: unreliable
    /// data older than [`max_datagram_age`](ClientConfig::max_datagram_age) is dropped
    /// (with that bound off, this call reads it from the connection itself).
    pub fn try_next_event(&self) -> Option<Event> {
        use futures_util::FutureExt as _;
        let mut events = self.events.try_lock().ok()?;
        if let Ok(event) = events.try_recv() {
            return Some(event);
        }
        if let Some(event) = lock(&self.inner.state).ready.pop_front() {
            return Some(event);
        }
        if let Some(inbox) = &self.inner.inbox {
            return self.next_from_inbox(inbox);
        }
        loop {
            let (generation, conn) = self.inner.link.get();
            if self.inner.link.datagrams_ended(generation) {
                return None;
            }
            match conn.read_datagram().now_or_never()? {
                Ok(datagram) => {
                    if let Some(event) = driver::on_datagram(&self.inner.state, datagram) {
                        return Some(event);
                    }
                }
                Err(_) => {
                    self.inner.link.end_datagrams(generation);
                    return events.try_recv().ok();
                }
            }
        }
    }

    /// The next event the inbox's datagrams make, dropping stale ones.
    fn next_from_inbox(&self, inbox: &inbox::Inbox) -> Option<Event> {
        let now = std::time::Instant::now();
        while let Some(datagram) = inbox.take(now) {
            if let Some(event) = driver::on_datagram(&self.inner.state, datagram) {
                return Some(event);
            }
        }
        None
    }

    /// The next pushed event, or `None` after [`Event::Disconnected`] has been returned.
    /// Unreliable match data older than
    /// [`max_datagram_age`](ClientConfig::max_datagram_age) is dropped rather than
    /// returned; with that bound off, it is read from the connection by this call
    /// itself, so call it steadily: while nobody does, the newest datagrams are kept
    /// and the oldest dropped.
    pub async fn next_event(&self) -> Option<Event> {
        let mut events = self.events.lock().await;
        loop {
            if let Some(event) = lock(&self.inner.state).ready.pop_front() {
                return Some(event);
            }
            if let Some(inbox) = &self.inner.inbox {
                if let Ok(event) = events.try_recv() {
                    return Some(event);
                }
                if let Some(event) = self.next_from_inbox(inbox) {
                    return Some(event);
                }
                tokio::select! {
                    biased;
                    event = events.recv() => return event,
                    () = inbox.readable() => continue,
                }
            }
            let (generation, conn) = self.inner.link.get();
            let datagrams_open = !self.inner.link.datagrams_ended(generation);
            tokio::select! {
                biased;
                event = events.recv() => return event,
                datagram = conn.read_datagram(), if datagrams_open => match datagram {
                    Ok(datagram) => {
                        if let Some(event) = driver::on_datagram(&self.inner.state, datagram) {
                            return Some(event);
                        }
                    }
                    // The driver reports the loss (and any resume) through `events`.
                    Err(_) => self.inner.link.end_datagrams(generation),
                },
            }
        }
    }

    /// Unreliable messages this socket dropped itself rather than deliver late: they
    /// waited past [`max_datagram_age`](ClientConfig::max_datagram_age), or arrived
    /// while 4096 were already waiting. Always 0 with the bound off.
    pub fn datagrams_dropped(&self) -> u64 {
        self.inner.inbox.as_ref().map_or(0, |i| i.dropped())
    }

    /// Closes the connection politely (the server ends the session at once) and waits
    /// briefly for the server to be told. Reliable data and requests sent before it
    /// reach the server first: closing a QUIC connection discards what the peer has not
    /// acknowledged, so it waits (at most a second) for the answer to a ping, which the
    /// server gives only after everything before it on the stream.
    pub async fn close(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ping()).await;
        self.connection()
            .close(quinn::VarInt::from_u32(CloseCode::NORMAL.0), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }
}

fn lock(state: &Mutex<ClientState>) -> std::sync::MutexGuard<'_, ClientState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}
