//! quicmatch: a realtime multiplayer and matchmaking server for games, over QUIC.
//!
//! Build a [`Server`] from a [`Config`], [`bind`](ServerBuilder::bind) it, then
//! [`serve`](Server::serve) until a shutdown future completes:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let server = quicmatch::Server::builder(quicmatch::Config::default()).bind()?;
//! println!("listening on {}", server.local_addr());
//! server.serve(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: the one configuration struct, its defaults and validation.
//! - [`tls`]: certificates (loaded or generated into `certs/`) and the TLS setup.
//! - [`discovery`]: the LAN advertisement (mDNS/DNS-SD) clients find the server by.
//! - [`auth`]: credential rules, stable user ids, signed session tokens.
//! - `server`: the endpoint, its transport tuning and the accept loop.
//! - [`session`]: one task per connection: liveness, resume, the session registry.
//! - [`outbound`]: how tables reach a session: its numbered outbound queue and datagrams.
//! - [`handlers`]: request dispatch, one file per feature area.
//! - [`matches`](mod@matches): the match table and the relay fan-out.
//! - [`matchmaker`]: tickets, the query language, grouping, match tokens.
//! - [`party`]: parties (pure rules in `party::model`, the shared table).
//! - [`metrics`](mod@metrics): the Prometheus exporter and what it reports.
//! - [`hooks`]: game code registered on the builder (before matchmaker add, matched).
//! - [`runtime`]: server-authoritative match handlers, RPC functions, and the context
//!   they and the hooks use to create, signal and list matches.
//! - [`storage`]: storage objects in the embedded store under `data_dir` (the only
//!   module that opens it).
//! - `transport`: the two QUIC transports (quinn, and the quinn-proto I/O loop)
//!   behind one interface sessions use.
//! - `persist`: restart survival: sessions, parties and server-run matches recorded in
//!   the store and put back at start.
//! - `cluster`: membership of a cluster of nodes on NATS (`[cluster]`): the node's
//!   registry entry and its view of the others ([`Stats::cluster_nodes`]).

pub mod auth;
mod cluster;
pub mod config;
pub mod discovery;
pub mod handlers;
pub mod hooks;
pub mod matches;
pub mod matchmaker;
pub mod metrics;
pub mod outbound;
pub mod party;
mod persist;
pub mod runtime;
mod server;
pub mod session;
pub mod storage;
pub mod tls;
mod transport;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{atomic::AtomicUsize, Arc},
};

pub use cluster::ClusterNode;
pub use config::Config;
pub use matches::MatchCounts;
use quicmatch_protocol::{MatchId, Presence};
use rustls::pki_types::CertificateDer;
pub use server::ServerError;

/// The QUIC transport settings quicmatch serves sessions with (stream windows, datagram
/// buffers, the ACK-frequency extension), for embedders and benchmarks that want the
/// same transport.
pub fn transport_config(config: &Config) -> quinn::TransportConfig {
    server::transport(config)
}

/// State every session task shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) matches: matches::MatchTable,
    pub(crate) runtime: runtime::Runtime,
    pub(crate) matchmaker: matchmaker::Matchmaker,
    pub(crate) parties: party::PartyTable,
    pub(crate) sessions: session::SessionRegistry,
    pub(crate) secret: auth::Secret,
    /// SHA-256 of the leaf certificate, as clients pin it.
    pub(crate) fingerprint: String,
    /// Live connections (authenticated or not), for the connection limit and stats.
    pub(crate) connections: AtomicUsize,
    /// Handshakes in progress, for the Retry threshold.
    pub(crate) handshakes: AtomicUsize,
    /// Each session's budget of storage writes.
    pub(crate) storage_limits: storage::WriteLimits,
    /// Set at a shutdown whose state was recorded: sessions are closed with
    /// `SERVER_RESTARTING` so clients resume once the server is back.
    pub(crate) restarting: std::sync::atomic::AtomicBool,
    /// This node's cluster membership (inactive without `cluster.url`).
    pub(crate) cluster: cluster::Cluster,
}

/// Configures a [`Server`] before it binds.
pub struct ServerBuilder {
    config: Config,
    tls: Option<tls::TlsMaterial>,
    secret: Option<Vec<u8>>,
    hooks: hooks::Hooks,
    registry: runtime::Registry,
}

impl ServerBuilder {
    /// Uses this certificate instead of the configured or generated one.
    pub fn certificate(mut self, material: tls::TlsMaterial) -> Self {
        self.tls = Some(material);
        self
    }

    /// Uses this token-signing secret (at least 32 bytes) instead of the configured or
    /// stored one.
    pub fn secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Runs `hook` before every matchmaker ticket is added: it may rewrite the request
    /// or reject it with a message the client receives.
    pub fn before_matchmaker_add(
        mut self,
        hook: impl Fn(
                &Presence,
                hooks::MatchmakerAddRequest,
            ) -> Result<hooks::MatchmakerAddRequest, String>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.hooks.before_matchmaker_add = Some(Arc::new(hook));
        self
    }

    /// Runs `hook` for every group the matchmaker forms; returning a match id sends the
    /// group that match instead of a token.
    pub fn on_matchmaker_matched(
        mut self,
        hook: impl Fn(&hooks::MatchedContext<'_>, &[matchmaker::pool::MatchedEntry]) -> Option<MatchId>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.hooks.matchmaker_matched = Some(Arc::new(hook));
        self
    }

    /// Replaces the matchmaker's built-in grouping with `processor`, called once per pass
    /// with the pool; see [`hooks::MatchmakerProcessor`] for what the server checks.
    pub fn matchmaker_processor(
        mut self,
        processor: impl Fn(&[matchmaker::pool::PoolTicket]) -> Vec<Vec<quicmatch_protocol::TicketId>>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.hooks.matchmaker_processor = Some(Arc::new(processor));
        self
    }

    /// Registers a server-authoritative match handler under `name`: `factory` makes a
    /// fresh handler for each match created with that name (by an RPC, a hook, or
    /// [`runtime::Runtime::create_match`]). A later registration of the same name wins.
    pub fn match_handler<H: runtime::MatchHandler>(
        mut self,
        name: impl Into<String>,
        factory: impl Fn() -> H + Send + Sync + 'static,
    ) -> Self {
        self.registry.handlers.insert(
            name.into(),
            Arc::new(move || Box::new(factory()) as Box<dyn runtime::MatchHandler>),
        );
        self
    }

    /// Registers an RPC function under `id`: a client's `Rpc { id, payload }` runs it on
    /// a blocking thread and gets its output, or `RUNTIME_FUNCTION_EXCEPTION` with its
    /// error. A later registration of the same id wins.
    pub fn rpc(
        mut self,
        id: impl Into<String>,
        function: impl Fn(&runtime::RpcContext<'_>, &str) -> Result<String, String>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.registry.rpcs.insert(id.into(), Arc::new(function));
        self
    }

    /// Uses this store instead of opening `data_dir`'s (see [`storage::Storage::open`],
    /// which gives hooks a handle before the server is built).
    pub fn storage(mut self, storage: storage::Storage) -> Self {
        self.registry.storage = Some(storage);
        self
    }

    /// Validates the configuration, loads or generates the certificate and secret,
    /// opens the store, and binds the UDP socket.
    pub fn bind(self) -> Result<Server, ServerError> {
        server::bind(
            self.config,
            self.tls,
            self.secret,
            self.hooks,
            self.registry,
        )
    }
}

/// A bound server, ready to [`serve`](Self::serve).
pub struct Server {
    endpoint: transport::Endpoint,
    shared: Arc<Shared>,
    cert: CertificateDer<'static>,
}

impl Server {
    /// Starts configuring a server.
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder {
            config,
            tls: None,
            secret: None,
            hooks: hooks::Hooks::default(),
            registry: runtime::Registry::default(),
        }
    }

    /// The bound address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or_else(|_| self.shared.config.listen)
    }

    /// The leaf certificate the server presents.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// SHA-256 of the leaf certificate, lowercase hex: what clients pin.
    pub fn fingerprint(&self) -> String {
        tls::fingerprint(&self.cert)
    }

    /// The runtime game code uses: create, signal and list matches (also from outside
    /// the server's own hooks, e.g. an admin tool embedding it).
    pub fn runtime(&self) -> runtime::Runtime {
        self.shared.runtime.clone()
    }

    /// The store server code uses (also from outside the server's own hooks, e.g. an
    /// admin tool embedding it).
    pub fn storage(&self) -> storage::Storage {
        self.shared.runtime.storage().clone()
    }

    /// A handle to read live counts while the server runs.
    pub fn stats(&self) -> Stats {
        Stats {
            shared: self.shared.clone(),
        }
    }

    /// Serves until `shutdown` completes, then closes every connection with
    /// `SERVER_SHUTDOWN` and waits (bounded) for sessions to finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        server::serve(self.endpoint, self.shared, shutdown).await;
    }
}

/// Live counts of a running server.
#[derive(Clone)]
pub struct Stats {
    shared: Arc<Shared>,
}

/// Where clients can reach a server listening on `addr`: `addr` itself, or, for an
/// unspecified address, each interface's (IPv4, and IPv6 but link-local when listening
/// on `[::]`), then loopback. The startup banner prints them; a cluster node's
/// registry entry gives the first unless `cluster.public_address` says otherwise.
pub fn reachable_addresses(addr: SocketAddr) -> Vec<SocketAddr> {
    if !addr.ip().is_unspecified() {
        return vec![addr];
    }
    let port = addr.port();
    let v6 = addr.is_ipv6();
    let mut reach = Vec::new();
    if let Ok(ifaces) = if_addrs::get_if_addrs() {
        for iface in ifaces.iter().filter(|i| !i.is_loopback()) {
            let ip = iface.ip();
            let link_local =
                matches!(ip, std::net::IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80);
            if ip.is_ipv4() || (v6 && !link_local) {
                reach.push(SocketAddr::new(ip, port));
            }
        }
    }
    reach.push(SocketAddr::from(([127, 0, 0, 1], port)));
    reach
}

impl Stats {
    /// The nodes of this node's cluster as it sees them, itself included once it has
    /// registered; empty when it is not in a cluster (or NATS is out of reach).
    pub fn cluster_nodes(&self) -> Vec<ClusterNode> {
        self.shared.cluster.nodes()
    }

    /// Whether this node runs the cluster's matchmaker passes now (holds the leader's
    /// lease); `false` outside a cluster.
    pub fn cluster_leads_matchmaker(&self) -> bool {
        self.shared.cluster.leads_matchmaker()
    }

    /// Sessions, homed on any node of the cluster, whose tickets the matchmaker's
    /// passes skip because their home suspects them (README "Reconnects"); 0 unless
    /// this node leads the matchmaker.
    pub fn cluster_matchmaker_suspects(&self) -> usize {
        self.shared.cluster.matchmaker_suspects()
    }

    /// Memberships that cross nodes: this node's sessions in matches other nodes host,
    /// and members homed on other nodes in matches this node hosts.
    pub fn cluster_memberships(&self) -> (usize, usize) {
        self.shared.cluster.remote_counts()
    }

    /// Party memberships that cross nodes: this node's sessions in (or asking to join)
    /// parties other nodes host, and sessions homed on other nodes in (or asking to
    /// join) parties this node hosts.
    pub fn cluster_party_memberships(&self) -> (usize, usize) {
        (
            self.shared.cluster.remote_party_memberships(),
            self.shared.sessions.guests(None).len(),
        )
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Live matches and memberships.
    pub fn matches(&self) -> MatchCounts {
        self.shared.matches.counts()
    }

    /// Live server-run (authoritative) matches.
    pub fn authoritative_matches(&self) -> usize {
        self.shared.runtime.engine().len()
    }

    /// The runtime game code uses: create, signal and list matches.
    pub fn runtime(&self) -> runtime::Runtime {
        self.shared.runtime.clone()
    }

    /// Live parties.
    pub fn parties(&self) -> usize {
        self.shared.parties.len()
    }

    /// Authenticated sessions.
    pub fn sessions(&self) -> usize {
        self.shared.sessions.len()
    }

    /// Sessions whose connection dropped, held for their reconnect grace.
    pub fn held_sessions(&self) -> usize {
        self.shared.sessions.held()
    }

    /// Sessions not heard from for `session.suspect_after`, whose matchmaker tickets
    /// every pass skips.
    pub fn suspect_sessions(&self) -> usize {
        self.shared.matchmaker.suspects()
    }

    /// Matchmaker pool size, oldest ticket age, recent completion times.
    pub fn matchmaker(&self) -> matchmaker::pool::PoolStats {
        self.shared.matchmaker.stats()
    }

    /// The matchmaker, to run a pass by hand (`process(Instant::now())`).
    pub fn matchmaker_handle(&self) -> matchmaker::Matchmaker {
        self.shared.matchmaker.clone()
    }
}
