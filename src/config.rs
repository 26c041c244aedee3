//! Server configuration: one serde struct with documented defaults, and its validation.
//!
//! Precedence is defaults, then the TOML file (`--config`), then `QUICMATCH_*`
//! environment variables and command-line flags (which `main.rs` applies on top).
//! Every limit the server enforces is a field here or a constant in the protocol crate.

use std::{fmt::Display, net::SocketAddr, path::PathBuf, time::Duration};

use humantime::format_duration as human;
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
    /// warns at start when it got less. Range: 64 KiB to 1 GiB.
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
    /// Default `5s`. Range: `100ms` to `60s`.
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
    /// counts as behind. Default `1 MiB`: a second of the heaviest reliable traffic the
    /// default rate limits let one sender produce. Range: 16 KiB to 256 MiB.
    pub outbound_bytes: usize,
    /// How long a session may stay above `outbound_bytes` before it is closed with
    /// `SLOW_CONSUMER`. Default `2s`: a reader that keeps reading drains any burst the
    /// rate limits allow well within it. Range: `100ms` to `60s`.
    #[serde(with = "humantime_serde")]
    pub slow_consumer_after: Duration,
    /// A user's new connection closes the user's other sessions (they are told
    /// `SESSION_REPLACED`), as Nakama's `single_socket`. Default `false`.
    pub single_socket: bool,
    /// Lifetime of the session token returned on authentication. Default `1h`.
    /// Range: `10s` to `30days`.
    #[serde(with = "humantime_serde")]
    pub token_expiry: Duration,
    /// Most unsent frames (events and relayed reliable data) one session may have
    /// waiting: a memory guard beyond the timed `outbound_bytes` rule. Passing it closes
    /// the session with `SLOW_CONSUMER` at once; it must be at least twice
    /// `datagram_burst`, so one sender's whole burst never does. Unreliable data never
    /// counts. Default `16384`. Range: 64 to 1048576, and at least 2 × `datagram_burst`.
    pub outbound_queue: usize,
    /// Hex-encoded secret (at least 32 bytes) that signs tokens. When absent it is read
    /// from, or generated into, `certs_dir/session.secret`.
    pub encryption_key: Option<String>,
    /// Most simultaneous connections; more are refused. Default `10000`.
    /// Range: 1 to 1000000.
    pub max_connections: usize,
    /// When a connection drops (timeout, reset, network change the client could not
    /// migrate), its session's matches, party and tickets are held this long, and a
    /// client that connects with the session token resumes the same session without
    /// the others seeing a leave. A client that closes politely leaves at once. `0s`
    /// turns holding off. Default `5s`. Range: `0s` to `10m`.
    #[serde(with = "humantime_serde")]
    pub reconnect_grace: Duration,
    /// On shutdown (Ctrl-C or SIGTERM), how long sessions get to finish after being
    /// told (`SERVER_SHUTDOWN`) before the server stops anyway. Default `3s`.
    /// Range: `0s` to `10m`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// When this many handshakes are already in progress, a new client must first
    /// prove its address with a QUIC Retry: a stateless round trip that costs the
    /// server nothing, so a flood of spoofed handshakes cannot pile up work. Normal
    /// arrivals stay below it and connect in one round trip. Default `64`; `0` always
    /// asks. Range: 0 to 1000000.
    pub retry_threshold: usize,
    /// Control requests a session may send per second, sustained. Default `100`.
    /// Range: 0.1 to 100000.
    pub requests_per_second: f64,
    /// Control requests a session may send in a burst. Default `200`. Range: 1 to 100000.
    pub request_burst: u32,
    /// Match and party data (datagrams and reliable) a session may send per second,
    /// sustained. Default `500`. Range: 0.1 to 100000.
    pub datagrams_per_second: f64,
    /// Match and party data a session may send in a burst. Default `1500`.
    /// Range: 1 to 100000.
    pub datagram_burst: u32,
    /// Seconds in a row a session may stay over its rate limits (each excess item is
    /// refused with `RATE_LIMITED`) before it is closed with the `RATE_LIMITED` close
    /// code. Default `5`. Range: 1 to 3600.
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

/// `[matches]`: relayed matches.
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
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            max_size: 64,
            max_per_session: 16,
            max_matches: 100_000,
            single_match: false,
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
    /// Candidates examined per ticket per pass, which bounds the cost of a pass on a
    /// large pool. Default `2000`. Range: 1 to 1000000.
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

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// Passes every numeric and duration key with its range to `$m` (`validate` checks them;
/// the tests probe them), as `check section.field = lo, hi;` where `check` is `range` or
/// `range_duration`. Each field's documentation says the same ("Range: ..."; the tests in
/// `tests/config.rs` hold the two together). `session.suspect_after`, bounded by another
/// key, and `outbound_queue`'s `2 × datagram_burst` are checked after these.
macro_rules! with_bounded_keys {
    ($m:ident!($($arg:tt)*)) => {
        $m! { $($arg)*
            range socket_buffer = 64 << 10, 1 << 30;
            range_duration session.auth_timeout = 100 * MS, 60 * SEC;
            range_duration session.idle_timeout = 2 * SEC, 10 * MIN;
            range_duration session.token_expiry = 10 * SEC, 30 * DAY;
            range_duration session.reconnect_grace = 0 * SEC, 10 * MIN;
            range_duration session.shutdown_grace = 0 * SEC, 10 * MIN;
            range_duration session.slow_consumer_after = 100 * MS, 60 * SEC;
            range session.resume_buffer = 0, 64 << 20;
            range session.outbound_bytes = 16 << 10, 256 << 20;
            range session.max_connections = 1, 1_000_000;
            range session.retry_threshold = 0, 1_000_000;
            range session.requests_per_second = 0.1, 100_000.0;
            range session.datagrams_per_second = 0.1, 100_000.0;
            range session.request_burst = 1, 100_000;
            range session.datagram_burst = 1, 100_000;
            range session.rate_limit_strikes = 1, 3600;
            range session.outbound_queue = 64, 1 << 20;
            range matches.max_size = 2, 1024;
            range matches.max_per_session = 1, 1024;
            range matches.max_matches = 1, 10_000_000;
            range matchmaker.max_tickets = 1, 64;
            range_duration matchmaker.interval = 10 * MS, 24 * 60 * MIN;
            range matchmaker.max_intervals = 1, 1000;
            range_duration matchmaker.token_lifetime = SEC, 60 * MIN;
            range matchmaker.max_count = 2, 128;
            range matchmaker.max_scan = 1, 1_000_000;
            range party.max_size = 1, 256;
            range party.max_requests = 1, 1024;
            range party.max_per_session = 1, 64;
        }
    };
}

/// Checks each `$c.section.field`, naming it by its dotted path, so the message always
/// spells the key as the config file does.
macro_rules! check_bounds {
    ($c:ident; $($check:ident $($part:ident).+ = $lo:expr, $hi:expr;)*) => {
        $($check(&[$(stringify!($part)),+].join("."), $c.$($part).+, $lo, $hi)?;)*
    };
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

    /// Checks every field against the range its documentation gives (and the rules that
    /// tie fields together), so a bad value fails at start instead of at first use. The
    /// message names the dotted key, the value given and the allowed range.
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
        let c = self;
        with_bounded_keys!(check_bounds!(c;));
        let s = &self.session;
        if !(500 * MS..s.idle_timeout).contains(&s.suspect_after) {
            let below = format!("less than session.idle_timeout = {}", human(s.idle_timeout));
            let (key, v) = ("session.suspect_after", human(s.suspect_after));
            return out_of_range(key, v, "500ms", below);
        }
        let min_queue = 2 * s.datagram_burst as usize; // both in range, so no overflow
        if s.outbound_queue < min_queue {
            let hi = "1048576; at least 2 × session.datagram_burst, so one sender's burst \
                      cannot by itself overflow a reader";
            return out_of_range("session.outbound_queue", s.outbound_queue, min_queue, hi);
        }
        if let Some(key) = &s.encryption_key {
            match crate::auth::decode_hex(key) {
                Some(bytes) if bytes.len() >= 32 => {}
                _ => return bad("session.encryption_key must be at least 32 hex-encoded bytes"),
            }
        }
        Ok(())
    }
}

type Checked = Result<(), ConfigError>;

/// `key = value is out of range (lo to hi)`.
fn out_of_range(key: &str, v: impl Display, lo: impl Display, hi: impl Display) -> Checked {
    let message = format!("{key} = {v} is out of range ({lo} to {hi})");
    Err(ConfigError::Invalid(message))
}

/// `lo <= value <= hi`; NaN never is.
fn range<T: PartialOrd + Display + Copy>(key: &str, v: T, lo: T, hi: T) -> Checked {
    match (lo..=hi).contains(&v) {
        true => Ok(()),
        false => out_of_range(key, v, lo, hi),
    }
}

/// [`range`] for durations, written as in the config file (`1h 30m`).
fn range_duration(key: &str, v: Duration, lo: Duration, hi: Duration) -> Checked {
    match (lo..=hi).contains(&v) {
        true => Ok(()),
        false => out_of_range(key, human(v), human(lo), human(hi)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        let c = Config {
            cert: Some("a.pem".into()),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.session.encryption_key = Some("abcd".into());
        assert!(c.validate().is_err());
    }

    /// A bounded value as a number (durations in nanoseconds), so one test covers all.
    trait Num: Copy + 'static {
        /// From just inside a bound to just past it.
        const STEP: f64;
        fn num(self) -> f64;
        /// As near to `v` as the type goes.
        fn from(v: f64) -> Self;
    }
    macro_rules! num {
        ($($t:ty: $step:expr, |$x:ident| $num:expr, |$v:ident| $from:expr;)*) => {$(
            impl Num for $t {
                const STEP: f64 = $step;
                fn num(self) -> f64 { let $x = self; $num }
                fn from($v: f64) -> Self { $from }
            }
        )*};
    }
    num! {
        usize: 1.0, |x| x as f64, |v| v as usize;
        u32: 1.0, |x| x as f64, |v| v as u32;
        f64: 1e-6, |x| x, |v| v;
        Duration: 1.0, |x| x.as_nanos() as f64,
            |v| if v < 1e19 { Duration::from_nanos(v as u64) } else { Duration::MAX };
    }

    /// A bounded key, its range and step, and a way to set (`Some`) and read it.
    struct Field(String, f64, f64, f64, At);
    type At = Box<dyn Fn(&mut Config, Option<f64>) -> f64>;

    fn field<T: Num>(key: String, get: fn(&mut Config) -> &mut T, lo: T, hi: T) -> Field {
        let at = move |c: &mut Config, v: Option<f64>| {
            let slot = get(c);
            *slot = v.map_or(*slot, T::from);
            slot.num()
        };
        Field(key, lo.num(), hi.num(), T::STEP, Box::new(at))
    }

    impl Field {
        /// Sets the field as near to `v` as its type goes; whether that is in range.
        fn set(&self, c: &mut Config, v: Option<f64>) -> bool {
            (self.1..=self.2).contains(&(self.4)(c, v))
        }
    }

    macro_rules! table {
        ($($check:ident $($part:ident).+ = $lo:expr, $hi:expr;)*) => {
            vec![$(field([$(stringify!($part)),+].join("."), |c| &mut c.$($part).+, $lo, $hi)),*]
        };
    }

    /// Every bounded key: those `validate` checks in a row, and `suspect_after` at its
    /// widest (it must also stay below `idle_timeout`).
    fn fields() -> Vec<Field> {
        let mut fields = with_bounded_keys!(table!());
        let max = 10 * MIN - Duration::from_nanos(1);
        fields.extend(table!(range_duration session.suspect_after = 500 * MS, max;));
        fields
    }

    /// The widest `idle_timeout`, so `suspect_after` can reach its bounds; a small
    /// `datagram_burst` and the largest `outbound_queue`, so both can reach theirs.
    fn base() -> Config {
        let mut c = Config::default();
        c.session.idle_timeout = 10 * MIN;
        c.session.suspect_after = 500 * MS;
        c.session.datagram_burst = 32;
        c.session.outbound_queue = 1 << 20;
        c
    }

    #[test]
    fn every_bounded_key_accepts_its_bounds_and_rejects_past_them() {
        for f @ Field(key, lo, hi, step, _) in &fields() {
            let past = [lo - step, hi + step, -1.0, f64::NAN, f64::MAX];
            for (i, v) in [*lo, *hi].into_iter().chain(past).enumerate() {
                let mut c = base();
                let inside = f.set(&mut c, Some(v));
                assert!(inside || i >= 2, "{key}: bound {v} is not in range");
                match (inside, c.validate()) {
                    (true, Err(e)) => panic!("{key}: {v} rejected: {e}"),
                    (false, Ok(())) => panic!("{key}: {v} accepted"),
                    (false, Err(e)) => assert!(e.to_string().contains(&format!("{key} = "))),
                    (true, Ok(())) => {}
                }
            }
        }
    }

    #[test]
    fn rules_across_fields_and_known_holes_are_rejected() {
        let rejects = |c: &Config, want: &str| {
            let e = c.validate().expect_err(want).to_string();
            assert!(e.starts_with(&format!("invalid config: {want}")), "{e}");
        };
        let mut c = base();
        c.session.suspect_after = c.session.idle_timeout;
        let want = "session.suspect_after = 10m is out of range (500ms to less than \
                    session.idle_timeout = 10m)";
        rejects(&c, want);
        c.session.suspect_after = SEC;
        (c.session.outbound_queue, c.session.datagram_burst) = (65, 33);
        let want = "session.outbound_queue = 65 is out of range (66 to 1048576; at least 2 × \
                    session.datagram_burst, so one sender's burst cannot by itself overflow a \
                    reader)";
        rejects(&c, want);
        for (line, range) in [
            ("outbound_queue = 9000000000000000000", "64 to 1048576"),
            ("idle_timeout = \"1000years\"", "2s to 10m"),
            ("token_expiry = \"100years\"", "10s to 30days"),
        ] {
            let c: Config = toml::from_str(&format!("[session]\n{line}\n")).expect(line);
            let value = line.replace('"', "");
            rejects(&c, &format!("session.{value} is out of range ({range})"));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// Values near and past the bounds, inside them, and anything at all (NaN,
        /// `usize::MAX`, `Duration::MAX`): `validate` passes exactly when all are in range.
        #[test]
        fn validate_never_panics_and_passes_exactly_the_ranges(
            picks in proptest::collection::vec((0u8..100, any::<u64>()), fields().len())
        ) {
            let (fields, mut c) = (fields(), Config::default());
            for (f @ Field(_, lo, hi, step, _), (choice, raw)) in fields.iter().zip(picks) {
                let unit = raw as f64 / u64::MAX as f64;
                f.set(&mut c, Some(match choice {
                    0..=1 => lo - step,
                    2..=3 => hi + step,
                    4 => f64::from_bits(raw),
                    5..=14 => [*lo, *hi][raw as usize % 2],
                    _ => lo + unit * (hi - lo),
                }));
            }
            let s = &c.session;
            let rules = s.suspect_after < s.idle_timeout
                && s.outbound_queue >= 2 * s.datagram_burst as usize;
            let in_range = rules && fields.iter().all(|f| f.set(&mut c.clone(), None));
            prop_assert_eq!(c.validate().is_ok(), in_range, "{:?}", c);
        }
    }
}
