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
    /// UDP address to listen on. Default `0.0.0.0:7350` (every interface, for LAN play).
    pub listen: SocketAddr,
    /// PEM certificate chain. With `key`, replaces the generated development certificate.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Where the development certificate and the token-signing secret are kept.
    /// Default `certs`.
    pub certs_dir: PathBuf,
    /// The key every client must present when it authenticates. Default `defaultkey`,
    /// as in Nakama; change it for anything public.
    pub server_key: String,
    /// Serve Prometheus metrics at `http://<addr>/metrics`. Default: off.
    pub metrics: Option<SocketAddr>,
    /// Kernel receive and send buffer of the UDP socket, in bytes. Default 4 MiB: a
    /// burst that arrives while the server is busy waits here instead of being dropped
    /// by the kernel. Linux caps it at `net.core.rmem_max` / `wmem_max`; the server
    /// warns at start when it got less.
    pub socket_buffer: usize,
    /// Sessions and connections.
    pub session: SessionConfig,
    /// Relayed matches.
    pub matches: MatchConfig,
    /// The matchmaker.
    pub matchmaker: MatchmakerConfig,
    /// Parties.
    pub party: PartyConfig,
}

/// The default `socket_buffer`.
pub const DEFAULT_SOCKET_BUFFER: usize = 4 << 20;

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7350)),
            cert: None,
            key: None,
            certs_dir: PathBuf::from("certs"),
            server_key: "defaultkey".into(),
            metrics: None,
            socket_buffer: DEFAULT_SOCKET_BUFFER,
            session: SessionConfig::default(),
            matches: MatchConfig::default(),
            matchmaker: MatchmakerConfig::default(),
            party: PartyConfig::default(),
        }
    }
}

/// `[session]`: connections and their sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// How long a new connection has to open its control stream and authenticate.
    /// Default `5s`.
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// A connection with no traffic for this long is closed (clients keep it alive).
    /// Default `15s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Lifetime of the session token returned on authentication. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub token_expiry: Duration,
    /// Frames queued for one session (events and relayed reliable data). When it is
    /// full the session reads too slowly and is closed with `SLOW_CONSUMER`.
    /// Default `1024`.
    pub outbound_queue: usize,
    /// Hex-encoded secret (at least 32 bytes) that signs tokens. When absent it is read
    /// from, or generated into, `certs_dir/session.secret`.
    pub encryption_key: Option<String>,
    /// Most simultaneous connections; more are refused. Default `10000`.
    pub max_connections: usize,
    /// When a connection drops (timeout, reset, network change the client could not
    /// migrate), its session's matches, party and tickets are held this long, and a
    /// client that connects with the session token resumes the same session without
    /// the others seeing a leave. A client that closes politely leaves at once. `0s`
    /// turns holding off. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub reconnect_grace: Duration,
    /// On shutdown (Ctrl-C or SIGTERM), how long sessions get to finish after being
    /// told (`SERVER_SHUTDOWN`) before the server stops anyway. Default `3s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// When this many handshakes are already in progress, a new client must first
    /// prove its address with a QUIC Retry: a stateless round trip that costs the
    /// server nothing, so a flood of spoofed handshakes cannot pile up work. Normal
    /// arrivals stay below it and connect in one round trip. Default `64`; `0` always
    /// asks.
    pub retry_threshold: usize,
    /// Control requests a session may send per second, sustained. Default `100`.
    pub requests_per_second: f64,
    /// Control requests a session may send in a burst. Default `200`.
    pub request_burst: u32,
    /// Match and party data (datagrams and reliable) a session may send per second,
    /// sustained. Default `500`.
    pub datagrams_per_second: f64,
    /// Match and party data a session may send in a burst. Default `1500`.
    pub datagram_burst: u32,
    /// Seconds in a row a session may stay over its rate limits (each excess item is
    /// refused with `RATE_LIMITED`) before it is closed with the `RATE_LIMITED` close
    /// code. Default `5`.
    pub rate_limit_strikes: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            auth_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            token_expiry: Duration::from_secs(3600),
            outbound_queue: 1024,
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

/// `[matches]`: relayed matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchConfig {
    /// Most members in one match; a join beyond it gets `MATCH_JOIN_REJECTED`.
    /// Default `64`.
    pub max_size: usize,
    /// Most matches one session may be in at once; beyond it `LIMIT_EXCEEDED`.
    /// Default `16`.
    pub max_per_session: usize,
    /// Most live matches on the server; beyond it `LIMIT_EXCEEDED`. Default `100000`.
    pub max_matches: usize,
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            max_size: 64,
            max_per_session: 16,
            max_matches: 100_000,
        }
    }
}

/// `[matchmaker]`: tickets and grouping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchmakerConfig {
    /// Tickets one session (and one party) may hold at once; beyond it
    /// `LIMIT_EXCEEDED`. A slot frees when a ticket matches or is removed. Default `3`.
    pub max_tickets: usize,
    /// Time between grouping passes. Default `2s` (Nakama: 15 s).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Passes a ticket waits for a match of its `max_count` before it accepts the
    /// largest valid smaller size. Default `2`.
    pub max_intervals: u32,
    /// Every pair in a group must satisfy each other's query. `false` gives Nakama's
    /// default one-way matching (only the searching ticket's query). Default `true`.
    pub mutual: bool,
    /// How long a match token stays valid. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// Largest `max_count` a ticket may ask for (at most 128, so a token naming every
    /// user stays small). Default `64`.
    pub max_count: usize,
    /// Candidates examined per ticket per pass, which bounds the cost of a pass on a
    /// large pool. Default `2000`.
    pub max_scan: usize,
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
        }
    }
}

/// `[party]`: parties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartyConfig {
    /// Largest `max_size` a party may have (1 to 256). Default `256`.
    pub max_size: usize,
    /// Most pending join requests one closed party keeps (also at most its `max_size`);
    /// beyond it `PARTY_JOIN_REQUESTS_FULL`. Default `32`.
    pub max_requests: usize,
    /// Parties one session may be a member of at once; beyond it `LIMIT_EXCEEDED`.
    /// Default `4`.
    pub max_per_session: usize,
}

impl Default for PartyConfig {
    fn default() -> Self {
        Self {
            max_size: 256,
            max_requests: 32,
            max_per_session: 4,
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
    /// Reads a TOML file; absent fields keep their defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.into(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.into(),
            reason: e.to_string(),
        })
    }

    /// Checks every field, so a bad value fails at start instead of at first use.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.cert.is_some() != self.key.is_some() {
            return bad("cert and key must be given together");
        }
        if self.server_key.is_empty()
            || self.server_key.len() > quicmatch_protocol::MAX_SERVER_KEY_LEN
        {
            return bad("server_key must be 1 to 128 bytes");
        }
        if !(64 << 10..=1 << 30).contains(&self.socket_buffer) {
            return bad("socket_buffer must be between 64 KiB and 1 GiB");
        }
        let s = &self.session;
        if s.auth_timeout.is_zero() || s.idle_timeout < Duration::from_secs(1) {
            return bad("session.auth_timeout must be > 0 and session.idle_timeout >= 1s");
        }
        if s.token_expiry < Duration::from_secs(1) {
            return bad("session.token_expiry must be at least 1s");
        }
        if s.outbound_queue == 0 || s.max_connections == 0 {
            return bad("session.outbound_queue and session.max_connections must be > 0");
        }
        if !(s.requests_per_second > 0.0 && s.datagrams_per_second > 0.0)
            || s.request_burst == 0
            || s.datagram_burst == 0
        {
            return bad("session rate limits and bursts must be > 0");
        }
        if let Some(key) = &s.encryption_key {
            match crate::auth::decode_hex(key) {
                Some(bytes) if bytes.len() >= 32 => {}
                _ => return bad("session.encryption_key must be at least 32 hex-encoded bytes"),
            }
        }
        let m = &self.matches;
        if m.max_size < 2 || m.max_per_session == 0 || m.max_matches == 0 {
            return bad("matches.max_size must be >= 2, max_per_session and max_matches > 0");
        }
        let mm = &self.matchmaker;
        if mm.max_tickets == 0 || mm.max_intervals == 0 || mm.max_scan == 0 {
            return bad("matchmaker.max_tickets, max_intervals and max_scan must be > 0");
        }
        if mm.interval < Duration::from_millis(10) {
            return bad("matchmaker.interval must be at least 10ms");
        }
        if mm.token_lifetime < Duration::from_secs(1) {
            return bad("matchmaker.token_lifetime must be at least 1s");
        }
        if !(2..=128).contains(&mm.max_count) {
            return bad("matchmaker.max_count must be 2 to 128");
        }
        let p = &self.party;
        if !(1..=256).contains(&p.max_size) || p.max_requests == 0 || p.max_per_session == 0 {
            return bad("party.max_size must be 1 to 256; max_requests and max_per_session > 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_toml_overrides_them() {
        Config::default().validate().expect("defaults");
        let c: Config = toml::from_str(
            "listen = \"127.0.0.1:9000\"\n[session]\nidle_timeout = \"30s\"\n[matches]\nmax_size = 8\n",
        )
        .expect("parse");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.session.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.session.auth_timeout, Duration::from_secs(5));
        assert_eq!(c.matches.max_size, 8);
        c.validate().expect("valid");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
        let mut c = Config::default();
        c.matches.max_size = 1;
        assert!(c.validate().is_err());
        for bad in [0, 1 << 10, (1 << 30) + 1] {
            let c = Config {
                socket_buffer: bad,
                ..Config::default()
            };
            assert!(c.validate().is_err(), "socket_buffer {bad} accepted");
        }
        let c = Config {
            cert: Some("a.pem".into()),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.session.encryption_key = Some("abcd".into());
        assert!(c.validate().is_err());
    }
}
