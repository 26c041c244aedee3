//! Server configuration: one serde struct with documented defaults, and its validation.
//!
//! Precedence is defaults, then the TOML file (`--config`), then `QUICMATCH_*`
//! environment variables and command-line flags (which `main.rs` applies on top).
//! Every limit the server enforces is a field here or a constant in the protocol crate.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// Everything the server can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP address to listen on. Default `[::]:7350`: every interface, IPv6 and IPv4
    /// (v4-mapped), for LAN play; on a host without IPv6 the server falls back to
    /// `0.0.0.0:7350`.
    pub listen: SocketAddr,
    /// PEM certificate chain. With `key`, replaces the generated development certificate.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Where the development certificate and the token-signing secret are kept.
    /// Default `certs`.
    pub certs_dir: PathBuf,
    /// Where the store (`quicmatch.redb`: storage objects) is kept. The file is
    /// created on the first write and opened at every start after that. Default `data`.
    pub data_dir: PathBuf,
    /// The key every client must present when it authenticates. Default `defaultkey`,
    /// as in Nakama; change it for anything public.
    pub server_key: String,
    /// Serve Prometheus metrics at `http://<addr>/metrics`, with `/healthz` (alive) and
    /// `/readyz` (accepting sessions). Default: off.
    pub metrics: Option<SocketAddr>,
    /// Kernel receive and send buffer of the UDP socket, in bytes. Default 1 MiB: a
    /// burst that arrives while the server is busy waits here instead of being dropped
    /// by the kernel, yet past capacity the queue (and so the latency) stays about a
    /// quarter of what 4 MiB lets build up, without the loss near capacity that 256 KiB
    /// shows (BENCHMARKS.md, "Socket buffers past the knee"). Linux caps it at
    /// `net.core.rmem_max` / `wmem_max`; the server warns at start when it got less.
    /// Range: 64 KiB to 1 GiB.
    pub socket_buffer: usize,
    /// Which QUIC transport serves connections: `"quinn"` (quinn's endpoint, a driver
    /// task per connection) or `"proto"` (one quinn-proto I/O loop on a thread of its
    /// own that hands each received datagram to its session and relays it to every
    /// recipient's connection without waking a task; BENCHMARKS.md, "The quinn-proto
    /// transport"). Both speak the same protocol and pass the same tests. Default
    /// `"quinn"`.
    pub transport: Transport,
    /// I/O loops of the `proto` transport, one thread and one `SO_REUSEPORT` socket
    /// each; connections stay on the loop whose socket took their first packet, a
    /// relay to a member on another loop hands its packet to that loop, and a packet
    /// that arrives on the wrong socket (a migrated client) is passed to its owner by
    /// its connection id. Default `1`: one loop carries a 2-core machine's relay (the
    /// rest of the server runs beside it); give busier servers one loop per core left
    /// after the sessions' and game code's threads. The `quinn` transport ignores it.
    /// Range: 1 to 64.
    pub workers: usize,
    /// Advertise the server on the LAN with mDNS/DNS-SD (`_quicmatch._udp`, TXT: name,
    /// version, certificate fingerprint), so `quicmatch-cli --discover` finds it.
    /// Only on the interfaces the server listens on, and never when it listens on a
    /// loopback address. Default `true`; `--no-advertise` turns it off.
    pub advertise: bool,
    /// The name the server advertises on the LAN (at most 63 bytes). Default: the
    /// host's name.
    pub name: Option<String>,
    /// Sessions and connections.
    pub session: SessionConfig,
    /// Relayed matches.
    pub matches: MatchConfig,
    /// The matchmaker.
    pub matchmaker: MatchmakerConfig,
    /// Parties.
    pub party: PartyConfig,
    /// Storage objects.
    pub storage: StorageConfig,
    /// The relay's time bounds.
    pub relay: RelayConfig,
    /// Joining a cluster of nodes on NATS (off unless `cluster.url` is set).
    pub cluster: ClusterConfig,
}

/// The QUIC transport (`transport` in the configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Transport {
    /// quinn's endpoint and a driver task per connection.
    #[default]
    Quinn,
    /// One quinn-proto I/O loop that relays datagrams inside the loop.
    Proto,
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quinn" => Ok(Self::Quinn),
            "proto" => Ok(Self::Proto),
            other => Err(format!("unknown transport `{other}`: use quinn or proto")),
        }
    }
}

/// The default `socket_buffer`.
pub const DEFAULT_SOCKET_BUFFER: usize = 1 << 20;

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 7350)),
            cert: None,
            key: None,
            certs_dir: PathBuf::from("certs"),
            data_dir: PathBuf::from("data"),
            server_key: "defaultkey".into(),
            metrics: None,
            socket_buffer: DEFAULT_SOCKET_BUFFER,
            transport: Transport::default(),
            workers: 1,
            advertise: true,
            name: None,
            session: SessionConfig::default(),
            matches: MatchConfig::default(),
            matchmaker: MatchmakerConfig::default(),
            party: PartyConfig::default(),
            storage: StorageConfig::default(),
            relay: RelayConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

/// `[session]`: connections and their sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// How long a new connection has to open its control stream and authenticate.
    /// Default `5s`: a handshake and one request take well under a second even on a
    /// poor mobile link, and a connection that never authenticates holds a slot no
    /// longer than this. Range: `100ms` to `60s`.
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// A session not heard from for this long is dead: its connection is closed and
    /// its reconnect grace begins (clients send something at least every second; the
    /// SDK does). Default `5s`: five missed keep-alives, long enough for a Wi-Fi hiccup,
    /// short enough that the others see a crashed player leave within
    /// `idle_timeout + reconnect_grace` (10 s). Range: `2s` to `10m`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A session not heard from for this long is *suspect*: its matchmaker tickets are
    /// skipped by every pass until it is heard again; nothing else changes. Default
    /// `2s`: two missed one-second keep-alives, so a killed client's ticket is not
    /// matched while its death is still being confirmed.
    /// Range: `500ms` to less than `idle_timeout`.
    #[serde(with = "humantime_serde")]
    pub suspect_after: Duration,
    /// Bytes of already-sent events and reliable data each session keeps, so a resume
    /// can replay what the old connection wrote but the client never processed. A gap
    /// larger than this fails with `RESUME_GAP`. Default `512 KiB`: several seconds of a
    /// busy match's reliable traffic; payloads are shared between recipients, so most
    /// sessions hold far less. Range: 0 to 64 MiB.
    pub resume_buffer: usize,
    /// Bytes of unsent reliable traffic (events and reliable data) above which a session
    /// counts as behind. Default `1 MiB`: two seconds of one sender at the default data
    /// rate (500 messages a second) with 1 KiB messages, far more than a match usually
    /// has in flight to one reader. With the largest reliable messages (32 KiB) that
    /// rate comes to about 16 MiB a second, far past this mark; then the timed rule
    /// (`slow_consumer_after`) decides: a reader whose link keeps up drains below it
    /// in time, one that cannot is closed. Range: 16 KiB to 256 MiB.
    pub outbound_bytes: usize,
    /// How long a session may stay above `outbound_bytes` before it is closed with
    /// `SLOW_CONSUMER`. Default `2s`: a reader that keeps reading drains any burst the
    /// rate limits allow well within it. Range: `100ms` to `60s`.
    #[serde(with = "humantime_serde")]
    pub slow_consumer_after: Duration,
    /// A user's new connection closes the user's other sessions (they are told
    /// `SESSION_REPLACED`), as Nakama's `single_socket`. Default `false`: as in Nakama,
    /// one user may be connected from several devices at once unless a game says
    /// otherwise.
    pub single_socket: bool,
    /// Lifetime of the session token returned on authentication (and again on each
    /// resume). Default `1h`: the token only serves to resume the session after a drop,
    /// so it need not outlive a play session, and a leaked one is useless an hour later;
    /// a session that drops more than an hour after its last authentication or resume
    /// starts afresh. Range: `10s` to `30days`.
    #[serde(with = "humantime_serde")]
    pub token_expiry: Duration,
    /// Most unsent frames (events and relayed reliable data) one session may have
    /// waiting: a memory guard beyond the timed `outbound_bytes` rule. Passing it closes
    /// the session with `SLOW_CONSUMER` at once; it must be at least twice
    /// `datagram_burst`, so one sender's whole burst never does. Unreliable data never
    /// counts. Default `16384`: about ten times the default `datagram_burst`, so several
    /// members bursting at once never trip it, while what one stuck session can hold
    /// stays bounded. Range: 64 to 1048576, and at least 2 × `datagram_burst`.
    pub outbound_queue: usize,
    /// Hex-encoded secret (at least 32 bytes) that signs tokens. When absent (the
    /// default) it is read from, or generated into, `certs_dir/session.secret`: secure
    /// without any setup, and tokens stay valid across restarts.
    pub encryption_key: Option<String>,
    /// Most simultaneous connections; more are refused. Default `10000`: well above
    /// the players one server process usually hosts, yet a bound on the memory a flood
    /// of connections can take. Range: 1 to 1000000.
    pub max_connections: usize,
    /// When a connection drops (timeout, reset, network change the client could not
    /// migrate), its session's matches, party and tickets are held this long, and a
    /// client that connects with the session token resumes the same session without
    /// the others seeing a leave. A client that closes politely leaves at once. `0s`
    /// turns holding off. Default `5s`: long enough for a phone to switch networks and
    /// come back, short enough that with `idle_timeout` the others see a crashed player
    /// leave within 10 s. Range: `0s` to `10m`.
    #[serde(with = "humantime_serde")]
    pub reconnect_grace: Duration,
    /// On shutdown (Ctrl-C or SIGTERM), how long sessions get to finish after being
    /// told (`SERVER_SHUTDOWN`) before the server stops anyway. Default `3s`: a few
    /// round trips, time for clients to hear the notice and close politely, well within
    /// the stop timeouts of service managers (systemd 90 s, Kubernetes 30 s).
    /// Range: `0s` to `10m`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// When this many handshakes are already in progress, a new client must first
    /// prove its address with a QUIC Retry: a stateless round trip that costs the
    /// server nothing, so a flood of spoofed handshakes cannot pile up work. Default
    /// `64`: ordinary arrivals, even a lobby connecting at once, stay below it and
    /// connect in one round trip. `0` always asks. Range: 0 to 1000000.
    pub retry_threshold: usize,
    /// Control requests a session may send per second, sustained. Default `100`: far
    /// above what a player's client asks for (a few a second), low enough that no
    /// client can keep the server busy with requests. Range: 0.1 to 100000.
    pub requests_per_second: f64,
    /// Control requests a session may send in a burst. Default `200`: two seconds'
    /// worth, so a client that sets itself up at once (joins, tickets, reads) is not
    /// refused. Range: 1 to 100000.
    pub request_burst: u32,
    /// Match and party data (datagrams and reliable) a session may send per second,
    /// sustained. Default `500`: a 60 Hz game sending a few messages a tick stays
    /// under it. Range: 0.1 to 100000.
    pub datagrams_per_second: f64,
    /// Match and party data a session may send in a burst. Default `1500`: three
    /// seconds' worth, so a client catching up after a hiccup is not refused.
    /// Range: 1 to 100000.
    pub datagram_burst: u32,
    /// Seconds in a row a session may stay over its rate limits (each excess item is
    /// refused with `RATE_LIMITED`) before it is closed with the `RATE_LIMITED` close
    /// code. Default `5`: a client over its limits for a moment is told and can back
    /// off; only one that keeps pushing is cut. Range: 1 to 3600.
    pub rate_limit_strikes: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            auth_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            suspect_after: Duration::from_secs(2),
            resume_buffer: 512 << 10,
            outbound_bytes: 1 << 20,
            slow_consumer_after: Duration::from_secs(2),
            single_socket: false,
            token_expiry: Duration::from_secs(3600),
            outbound_queue: 16_384,
            encryption_key: None,
            max_connections: 10_000,
            reconnect_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(3),
            retry_threshold: 64,
            requests_per_second: 100.0,
            request_burst: 200,
            datagrams_per_second: 500.0,
            datagram_burst: 1500,
            rate_limit_strikes: 5,
        }
    }
}

/// `[matches]`: relayed and server-run (authoritative) matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchConfig {
    /// Most members in one match; a join beyond it gets `MATCH_JOIN_REJECTED`.
    /// Default `64`. Range: 2 to 1024.
    pub max_size: usize,
    /// Most matches one session may be in at once; beyond it `LIMIT_EXCEEDED`.
    /// Default `16`. Range: 1 to 1024.
    pub max_per_session: usize,
    /// Most live matches on the server; beyond it `LIMIT_EXCEEDED`. Default `100000`.
    /// Range: 1 to 10000000.
    pub max_matches: usize,
    /// Creating or joining a match leaves the session's other matches first, as
    /// Nakama's `single_match`. Default `false`.
    pub single_match: bool,
    /// A server-run match whose ticks overrun their budget continuously this long, or
    /// whose callback is still running after this long, is ended. Default `5s`: long
    /// enough to ride out a garbage-collection-like hiccup, short enough that players
    /// are not left in a frozen match. Range: `100ms` to `10m`.
    #[serde(with = "humantime_serde")]
    pub overrun_limit: Duration,
    /// A server-run match nobody has been in for this long is ended. Default `30s`:
    /// time for the players an RPC or the matchmaker sent there to arrive.
    /// Range: `1s` to `24h`.
    #[serde(with = "humantime_serde")]
    pub max_empty: Duration,
    /// Messages a server-run match holds between two ticks; more are refused with
    /// `LIMIT_EXCEEDED` to the sender. Default `4096`: 64 players at the default data
    /// rate for a tick at 1 Hz. Range: 16 to 1000000.
    pub input_queue: usize,
    /// Join attempts waiting for one server-run match; more are refused with
    /// `MATCH_JOIN_REJECTED`. Default `64`. Range: 1 to 10000.
    pub join_queue: usize,
    /// Signals waiting for one server-run match; more are refused. Default `64`.
    /// Range: 1 to 10000.
    pub signal_queue: usize,
    /// How long a join attempt or a signal waits for a server-run match to answer.
    /// Default `5s`. Range: `100ms` to `60s`.
    #[serde(with = "humantime_serde")]
    pub answer_timeout: Duration,
    /// Worker threads running match handlers; `0` means one per core (at least two).
    /// Default `0`. Range: 0 to 1024.
    pub workers: usize,
    /// How often the session registry, the parties and the server-run matches whose
    /// handler keeps snapshots are recorded in the store (only what changed), so they
    /// survive a restart; also done at shutdown. Default `1s`: a crash loses at most
    /// about a second of a match, for one small commit a second. `0s` turns restart
    /// survival off: nothing is recorded, and a shutdown closes sessions with
    /// `SERVER_SHUTDOWN` instead of `SERVER_RESTARTING`.
    /// Range: `0s`, or `100ms` to `1h`.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            max_size: 64,
            max_per_session: 16,
            max_matches: 100_000,
            single_match: false,
            overrun_limit: Duration::from_secs(5),
            max_empty: Duration::from_secs(30),
            input_queue: 4096,
            join_queue: 64,
            signal_queue: 64,
            answer_timeout: Duration::from_secs(5),
            workers: 0,
            snapshot_interval: Duration::from_secs(1),
        }
    }
}

/// `[matchmaker]`: tickets and grouping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchmakerConfig {
    /// Tickets one session (and one party) may hold at once; beyond it
    /// `LIMIT_EXCEEDED`. A slot frees when a ticket matches or is removed. Default `3`.
    /// Range: 1 to 64.
    pub max_tickets: usize,
    /// Time between grouping passes. Default `2s` (Nakama: 15 s). Range: `10ms` to `24h`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Passes a ticket waits for a match of its `max_count` before it accepts the
    /// largest valid smaller size. Default `2`. Range: 1 to 1000.
    pub max_intervals: u32,
    /// Every pair in a group must satisfy each other's query. `false` gives Nakama's
    /// default one-way matching (only the searching ticket's query). Default `true`.
    pub mutual: bool,
    /// How long a match token stays valid. Default `30s`. Range: `1s` to `1h`.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// Largest `max_count` a ticket may ask for (at most 128, so a token naming every
    /// user stays small). Default `64`. Range: 2 to 128.
    pub max_count: usize,
    /// Eligible candidates (ones that accept the searching ticket and that it accepts)
    /// considered per ticket per pass; at most eight times as many tickets are looked
    /// at. Bounds the cost of a pass on a large pool. Default `2000`.
    /// Range: 1 to 1000000.
    pub max_scan: usize,
    /// How long a pass waits for a custom matchmaker processor
    /// (`ServerBuilder::matchmaker_processor`); past it the pass forms no group and no
    /// pass calls the processor again until that call returns. Default `1s`.
    /// Range: `1ms` to `1h`.
    #[serde(with = "humantime_serde")]
    pub processor_timeout: Duration,
}

impl Default for MatchmakerConfig {
    fn default() -> Self {
        Self {
            max_tickets: 3,
            interval: Duration::from_secs(2),
            max_intervals: 2,
            mutual: true,
            token_lifetime: Duration::from_secs(30),
            max_count: 64,
            max_scan: 2000,
            processor_timeout: Duration::from_secs(1),
        }
    }
}

/// `[party]`: parties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartyConfig {
    /// Largest `max_size` a party may have (1 to 256). Default `256`. Range: 1 to 256.
    pub max_size: usize,
    /// Most pending join requests one closed party keeps (also at most its `max_size`);
    /// beyond it `PARTY_JOIN_REQUESTS_FULL`. Default `32`. Range: 1 to 1024.
    pub max_requests: usize,
    /// Parties one session may be a member of at once; beyond it `LIMIT_EXCEEDED`.
    /// Default `4`. Range: 1 to 64.
    pub max_per_session: usize,
    /// Creating or joining a party leaves the session's other parties first, as
    /// Nakama's `single_party`. Default `false`.
    pub single_party: bool,
}

impl Default for PartyConfig {
    fn default() -> Self {
        Self {
            max_size: 256,
            max_requests: 32,
            max_per_session: 4,
            single_party: false,
        }
    }
}

/// `[relay]`: how long relayed data may wait before it is no longer worth sending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Data that waited longer than this in the server's socket before the relay could
    /// read it is not relayed: past capacity a game would rather lose an old position
    /// update than get it late, and each one shed frees the time its fan-out would have
    /// taken, so the backlog drains instead of growing. With the `proto` transport on
    /// Linux the loop knows each packet's kernel receive time: a packet of an
    /// established connection that waited too long is dropped before it is even
    /// decrypted (`quicmatch_io_stale_packets_total`; its sender takes it as network
    /// loss, so reliable data in it is sent again), and a datagram that aged past the
    /// bound after being read is dropped and counted in
    /// `quicmatch_datagrams_dropped_total{reason="stale"}`. quinn does not report
    /// arrival times, so with `quinn` nothing is dropped for age. Default `40ms`: with
    /// the few milliseconds a datagram then spends on the way out and in the client,
    /// an overloaded server's p99 stays within 50 ms (BENCHMARKS.md, "Shedding past
    /// the knee"); far above any wait of a server with headroom. `0s` turns it off.
    /// Range: `0s`, or `1ms` to `10s`.
    #[serde(with = "humantime_serde")]
    pub max_datagram_age: Duration,
    /// The least a session's QUIC congestion window falls to, in bytes (both
    /// transports). Loss-based congestion control reads every lost packet as congestion
    /// and, on a lossy link, shrinks the window towards two packets; a game's datagrams
    /// then wait for acknowledgements and arrive a send interval late. A game's traffic
    /// is set by the game, so the floor keeps it flowing at its own rate; a session
    /// also starts with at least the floor (CUBIC's own first window is about 12 KB),
    /// and above it CUBIC works as usual. Default `32768` (32 KiB); `0` leaves quinn's
    /// own minimum (two packets). Range: 0 to 16 MiB.
    pub min_congestion_window: u64,
}

/// The default `relay.min_congestion_window`.
pub const DEFAULT_MIN_CONGESTION_WINDOW: u64 = 32 << 10;

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            max_datagram_age: Duration::from_millis(40),
            min_congestion_window: DEFAULT_MIN_CONGESTION_WINDOW,
        }
    }
}

/// `[cluster]`: this node's place in a cluster of quicmatch nodes on NATS
/// (docs/cluster.md). Without `url` the section is ignored and no NATS is needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The NATS server(s), `nats://[USER:PASSWORD@]HOST:PORT` (several: comma-separated,
    /// all with the same credentials); `--cluster`. A server not on this machine must
    /// name credentials. Logged with the password hidden. Off when absent.
    pub url: Option<String>,
    /// This node's name in the cluster, unique: 1 to 32 of `A-Z a-z 0-9 _ -`;
    /// `--node-name`. Default: the host's name (made to fit).
    pub node_name: Option<String>,
    /// The cluster's name, the prefix of its buckets (several clusters can share one
    /// NATS): 1 to 32 of `A-Z a-z 0-9 _ -`. Default `quicmatch`.
    pub name: String,
    /// How often the node renews its entry in the registry (with its load). Default
    /// `1s`: one small write a second per node is nothing to NATS.
    /// Range: `100ms` to `10s`.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A node whose entry was not renewed for this long is lost to the others; it must
    /// be at least 3 × `heartbeat` and the same on every node (it is the registry
    /// bucket's expiry). Default `5s`: five missed renewals, like `session.idle_timeout`.
    /// Range: `300ms` to `5m`.
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
    /// A CA certificate (PEM) that signs the NATS servers' TLS certificates; with it
    /// the node connects over TLS only (`tls://` URLs). Without it a `tls://` URL is
    /// checked against the system's roots. Relative to the config file when given
    /// there. Default: none.
    pub tls_ca: Option<PathBuf>,
    /// A file to authenticate to NATS with: a NATS credentials file (`.creds`: user JWT
    /// and nkey seed, for servers in operator mode) or a file holding one user nkey
    /// seed (`SU...`, for servers that list the user's public nkey). Counts as the
    /// credentials a server not on this machine needs; not with `user:password@` in
    /// `url`. Relative to the config file when given there. Default: none.
    pub credentials: Option<PathBuf>,
    /// JetStream replicas of the cluster's buckets: 1, 3 or 5, at most the NATS
    /// servers in the NATS cluster. Default `1` (one `nats-server`); production: `3`.
    pub replicas: u8,
    /// Where JetStream keeps the cluster's buckets: `file` (they outlive a NATS
    /// restart) or `memory`. Default `file`.
    pub storage: ClusterStorage,
    /// How long a request to another node (a join, a listing, a replay, a claim) may
    /// take before it counts as unanswered (`CLUSTER_UNAVAILABLE`, or a node left out of
    /// a listing). Default `2s`: a request takes about a millisecond; this rides out a
    /// NATS server's failover in a NATS cluster of three.
    /// Range: `100ms` to `60s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Reliable bytes a link to one other node may hold unsent before it is reset, and
    /// sent bytes it keeps for a replay. Default `16777216` (16 MiB): seconds of heavy
    /// reliable traffic between two nodes, so a NATS restart loses nothing.
    /// Range: 1 MiB to 1 GiB.
    pub link_buffer: usize,
    /// Datagrams a link to one other node may hold unsent; past this, new ones are
    /// dropped (counted). Default `4096`: about a second of a busy pair of nodes; older
    /// unreliable data would be stale. Range: 64 to 1048576.
    pub datagram_queue: usize,
    /// Where this node's clients connect, as its registry entry shows it to the other
    /// nodes, lobbies and operators: `HOST:PORT`, a name or an address (at most 255
    /// bytes). Default: the address the node listens on (behind NAT or a balancer, set
    /// it).
    pub public_address: Option<String>,
    /// How long the node that runs the cluster's matchmaker passes (its leader) holds
    /// the lease without renewing it: a leader that dies is replaced within this, and
    /// a live one renews every `heartbeat` and stops acting a heartbeat before its
    /// lease could lapse. At least 3 × `heartbeat`, and the same on every node (it is
    /// the lease bucket's expiry). Default `5s`.
    /// Range: `300ms` to `5m`.
    #[serde(with = "humantime_serde")]
    pub leader_lease: Duration,
}

/// Where JetStream keeps the cluster's buckets (`cluster.storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ClusterStorage {
    /// On disk: the registry outlives a NATS restart.
    File,
    /// In memory: faster, gone with the NATS server.
    Memory,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            url: None,
            node_name: None,
            name: "quicmatch".into(),
            heartbeat: Duration::from_secs(1),
            node_ttl: Duration::from_secs(5),
            tls_ca: None,
            credentials: None,
            replicas: 1,
            storage: ClusterStorage::File,
            public_address: None,
            leader_lease: Duration::from_secs(5),
            request_timeout: Duration::from_secs(2),
            link_buffer: 16 << 20,
            datagram_queue: 4096,
        }
    }
}

/// `[storage]`: storage objects in the store under `data_dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Most objects one user may own; a client write that would create more gets
    /// `STORAGE_QUOTA_EXCEEDED` (server code is not limited). Default `1000`.
    /// Range: 1 to 10000000.
    pub max_objects_per_user: usize,
    /// Storage writes and deletes a session may send per second, sustained; beyond it
    /// each is refused with `RATE_LIMITED` (they also count as control requests).
    /// Default `20`. Range: 0.1 to 100000.
    pub writes_per_second: f64,
    /// Storage writes and deletes a session may send in a burst. Default `100`.
    /// Range: 1 to 100000.
    pub write_burst: u32,
    /// Writes (client requests and server code calls) waiting for the store's writer,
    /// which commits whatever is waiting together, with one fsync. A client write that
    /// finds it full is refused with `LIMIT_EXCEEDED`; server code waits for room.
    /// Default `4096`. Range: 16 to 1000000.
    pub write_queue: usize,
    /// Memory the store may use to cache its pages, in bytes. Default `64 MiB`.
    /// Range: 1 MiB to 16 GiB.
    pub cache_size: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            max_objects_per_user: 1000,
            writes_per_second: 20.0,
            write_burst: 100,
            write_queue: 4096,
            cache_size: 64 << 20,
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// The TOML file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl Config {
    /// Reads a TOML file; absent fields keep their defaults. The paths it gives (`cert`,
    /// `key`, `certs_dir`, `data_dir`) are relative to the file's directory, not the
    /// working directory, so a config file and the files next to it can move together.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let fail = |reason: String| ConfigError::File {
            path: path.into(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let mut config: Self = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        // It parsed as a `Config`, so it parses as a table: which keys the file gives.
        let given: toml::Table = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let dir = path.parent().unwrap_or_else(|| std::path::Path::new(""));
        if given.contains_key("cert") {
            config.cert = config.cert.map(|p| dir.join(p));
        }
        if given.contains_key("key") {
            config.key = config.key.map(|p| dir.join(p));
        }
        if given.contains_key("certs_dir") {
            config.certs_dir = dir.join(&config.certs_dir);
        }
        if given.contains_key("data_dir") {
            config.data_dir = dir.join(&config.data_dir);
        }
        let cluster = given.get("cluster").and_then(toml::Value::as_table);
        if cluster.is_some_and(|c| c.contains_key("tls_ca")) {
            config.cluster.tls_ca = config.cluster.tls_ca.map(|p| dir.join(p));
        }
        if cluster.is_some_and(|c| c.contains_key("credentials")) {
            config.cluster.credentials = config.cluster.credentials.map(|p| dir.join(p));
        }
        Ok(config)
    }

    /// The config as one line of JSON for the startup log, with the secrets
    /// (`server_key`, `session.encryption_key`) shown as `"<redacted>"`.
    pub fn to_redacted_json(&self) -> String {
        const REDACTED: &str = "<redacted>";
        let mut value = match serde_json::to_value(self) {
            Ok(value) => value,
            Err(e) => {
                return serde_json::json!({ "error": format!("config not printable: {e}") })
                    .to_string()
            }
        };
        if let Some(key) = value.get_mut("server_key") {
            *key = REDACTED.into();
        }
        if let Some(key) = value
            .get_mut("session")
            .and_then(|s| s.get_mut("encryption_key"))
            .filter(|k| !k.is_null())
        {
            *key = REDACTED.into();
        }
        if let Some(url) = value.get_mut("cluster").and_then(|c| c.get_mut("url")) {
            if let Some(text) = url.as_str() {
                *url = nats_url::redact(text).into();
            }
        }
        value.to_string()
    }
}

pub mod env;
pub mod nats_url;
mod validate;
