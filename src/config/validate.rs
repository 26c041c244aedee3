//! `Config::validate`: every numeric and duration key against the range its
//! documentation gives, and the rules that tie keys together.

use std::{fmt::Display, time::Duration};

use humantime::format_duration as human;

use super::{Config, ConfigError};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// Passes every numeric and duration key with its range to `$m` (`validate` checks them;
/// the tests probe them), as `check section.field = lo, hi;` where `check` is `range`,
/// `range_duration`, or `range_duration_or_off` (`0s` is also allowed). Each field's documentation says the same ("Range: ..."; the tests in
/// `tests/config.rs` hold the two together). `session.suspect_after`, bounded by another
/// key, and `outbound_queue`'s `2 × datagram_burst` are checked after these.
macro_rules! with_bounded_keys {
    ($m:ident!($($arg:tt)*)) => {
        $m! { $($arg)*
            range socket_buffer = 64 << 10, 1 << 30;
            range workers = 1, 64;
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
            range_duration matches.overrun_limit = 100 * MS, 10 * MIN;
            range_duration matches.max_empty = SEC, 24 * 60 * MIN;
            range matches.input_queue = 16, 1_000_000;
            range matches.join_queue = 1, 10_000;
            range matches.signal_queue = 1, 10_000;
            range_duration matches.answer_timeout = 100 * MS, 60 * SEC;
            range matches.workers = 0, 1024;
            range_duration_or_off matches.snapshot_interval = 100 * MS, 60 * MIN;
            range matchmaker.max_tickets = 1, 64;
            range_duration matchmaker.interval = 10 * MS, 24 * 60 * MIN;
            range matchmaker.max_intervals = 1, 1000;
            range_duration matchmaker.token_lifetime = SEC, 60 * MIN;
            range matchmaker.max_count = 2, 128;
            range matchmaker.max_scan = 1, 1_000_000;
            range_duration matchmaker.processor_timeout = MS, 60 * MIN;
            range party.max_size = 1, 256;
            range party.max_requests = 1, 1024;
            range party.max_per_session = 1, 64;
            range storage.max_objects_per_user = 1, 10_000_000;
            range storage.writes_per_second = 0.1, 100_000.0;
            range storage.write_burst = 1, 100_000;
            range storage.write_queue = 16, 1_000_000;
            range storage.cache_size = 1 << 20, 16 << 30;
            range_duration_or_off relay.max_datagram_age = MS, 10 * SEC;
            range relay.min_congestion_window = 0, 16 << 20;
            range_duration cluster.heartbeat = 100 * MS, 10 * SEC;
            range_duration cluster.node_ttl = 300 * MS, 5 * MIN;
            range_duration cluster.leader_lease = 300 * MS, 5 * MIN;
            range_duration cluster.request_timeout = 100 * MS, 60 * SEC;
            range cluster.link_buffer = 1 << 20, 1 << 30;
            range cluster.datagram_queue = 64, 1 << 20;
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
        if self
            .name
            .as_ref()
            .is_some_and(|n| n.is_empty() || n.len() > 63 || n.chars().any(char::is_control))
        {
            return bad("name must be 1 to 63 bytes without control characters");
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir must not be empty");
        }
        let c = self;
        with_bounded_keys!(check_bounds!(c;));
        let s = &self.session;
        if !(500 * MS..s.idle_timeout).contains(&s.suspect_after) {
            let below = format!("less than session.idle_timeout = {}", human(s.idle_timeout));
            let (key, v) = ("session.suspect_after", human(s.suspect_after));
            return out_of_range(key, v, "500ms", below);
        }
        let c = &self.cluster;
        // Both are in range here, so the product cannot overflow; saturating all the same.
        let floor = c.heartbeat.saturating_mul(3);
        if c.node_ttl < floor {
            let lo = format!("3 × cluster.heartbeat = {}", human(floor));
            return out_of_range("cluster.node_ttl", human(c.node_ttl), lo, "5m");
        }
        if c.leader_lease < floor {
            let lo = format!("3 × cluster.heartbeat = {}", human(floor));
            return out_of_range("cluster.leader_lease", human(c.leader_lease), lo, "5m");
        }
        let cluster_name = |n: &str| {
            (1..=32).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !cluster_name(&c.name) {
            return bad("cluster.name must be 1 to 32 of A-Z a-z 0-9 _ -");
        }
        if c.public_address
            .as_deref()
            .is_some_and(|a| !public_address(a))
        {
            return bad("cluster.public_address must be HOST:PORT (a name or an address, port 1 to 65535, at most 255 bytes)");
        }
        if c.node_name.as_deref().is_some_and(|n| !cluster_name(n)) {
            return bad("cluster.node_name must be 1 to 32 of A-Z a-z 0-9 _ -");
        }
        if c.url.as_deref().is_some_and(|u| u.trim().is_empty()) {
            return bad("cluster.url must not be empty (leave it out to run alone)");
        }
        if let Some(url) = c.url.as_deref() {
            let servers = super::nats_url::parse(url)
                .map_err(|e| ConfigError::Invalid(format!("cluster.url: {e}")))?;
            if let Some(path) = &c.credentials {
                if servers.iter().any(|s| s.credentials.is_some()) {
                    return bad("cluster.credentials and credentials in cluster.url: give one");
                }
                super::nats_url::read_credentials(path)
                    .map_err(|e| ConfigError::Invalid(format!("cluster.credentials: {e}")))?;
            }
            if let Some(s) = servers
                .iter()
                .find(|s| !s.local && s.credentials.is_none() && c.credentials.is_none())
            {
                return bad(&format!(
                    "cluster.url: {} is not on this machine and names no credentials: put \
                     user:password@ (or token@) in the URL, or set cluster.credentials, since \
                     a node acts on what arrives on its subjects",
                    s.address
                ));
            }
            let named: Vec<_> = servers
                .iter()
                .filter_map(|s| s.credentials.as_ref())
                .collect();
            if named.windows(2).any(|w| w[0] != w[1]) {
                return bad(
                    "cluster.url: its servers name different credentials; give them all the same",
                );
            }
        }
        if ![1, 3, 5].contains(&c.replicas) {
            return bad("cluster.replicas must be 1, 3 or 5");
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

/// [`range_duration`], where `0s` (off) is allowed too.
fn range_duration_or_off(key: &str, v: Duration, lo: Duration, hi: Duration) -> Checked {
    match v.is_zero() || (lo..=hi).contains(&v) {
        true => Ok(()),
        false => out_of_range(key, human(v), format!("0s, or {}", human(lo)), human(hi)),
    }
}

fn public_address(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        // IPv6 only in brackets.
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        // A name or an IPv4 address: dot-separated labels of letters, digits, `-`.
        None => {
            !host.is_empty()
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        }
    };
    a.len() <= 255 && host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
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
    fn a_public_address_is_host_and_port() {
        for good in [
            "game.example.com:7350",
            "203.0.113.7:7350",
            "[2001:db8::1]:7350",
        ] {
            assert!(public_address(good), "{good}");
        }
        for bad in [
            "",
            "game.example.com",
            ":7350",
            "host:0",
            "host:70000",
            "a b:1",
            "h:x",
        ] {
            assert!(!public_address(bad), "{bad}");
        }
        assert!(!public_address(&format!("{}:1", "a".repeat(255))));
    }

    #[test]
    fn a_tls_ca_in_a_config_file_is_relative_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("quicmatch.toml");
        std::fs::write(&path, "[cluster]\ntls_ca = \"nats-ca.pem\"\n").expect("write");
        let config = Config::from_file(&path).expect("config");
        assert_eq!(config.cluster.tls_ca, Some(dir.path().join("nats-ca.pem")));
    }

    #[test]
    fn a_credentials_file_is_checked_and_counts_as_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("quicmatch.toml");
        std::fs::write(&path, "[cluster]\ncredentials = \"node.nk\"\n").expect("write");
        let config = Config::from_file(&path).expect("config");
        assert_eq!(config.cluster.credentials, Some(dir.path().join("node.nk")));

        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().expect("seed");
        let seed_file = dir.path().join("node.nk");
        std::fs::write(&seed_file, format!("{seed}\n")).expect("write");
        let mut c = Config::default();
        c.cluster.url = Some("nats://10.0.0.5:4222".into());
        assert!(c.validate().is_err(), "a remote NATS without credentials");
        c.cluster.credentials = Some(seed_file.clone());
        c.validate().expect("a remote NATS with a seed file");
        std::fs::write(
            &seed_file,
            format!(
                "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.c2ln\n------END NATS USER JWT------\n\n\
                 -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
            ),
        )
        .expect("write");
        c.validate().expect("a remote NATS with a credentials file");
        std::fs::write(&seed_file, format!("{seed}\n")).expect("write");

        c.cluster.url = Some("nats://qm:secret@10.0.0.5:4222".into());
        let e = c
            .validate()
            .expect_err("two kinds of credentials")
            .to_string();
        assert!(
            e.contains("cluster.credentials and credentials in cluster.url: give one"),
            "{e}"
        );
        c.cluster.url = Some("nats://10.0.0.5:4222".into());
        // Not a seed, a server's seed, a missing file, a huge one: refused, never shown.
        let account = nkeys::KeyPair::new_account().seed().expect("seed");
        for (text, why) in [
            ("hello".to_owned(), "neither a NATS credentials file"),
            (account.clone(), "neither a NATS credentials file"),
            ("x".repeat(70_000), "bytes; a credentials file is at most"),
        ] {
            std::fs::write(&seed_file, &text).expect("write");
            let e = c.validate().expect_err(why).to_string();
            assert!(e.contains("cluster.credentials") && e.contains(why), "{e}");
            assert!(!e.contains(&account), "{e}");
        }
        c.cluster.credentials = Some(dir.path().join("missing.creds"));
        let e = c.validate().expect_err("missing").to_string();
        assert!(e.contains("missing.creds"), "{e}");
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
        u64: 1.0, |x| x as f64, |v| v as u64;
        f64: 1e-6, |x| x, |v| v;
        Duration: 1.0, |x| x.as_nanos() as f64,
            |v| if v < 1e19 { Duration::from_nanos(v as u64) } else { Duration::MAX };
    }

    /// A bounded key, its range and step, a way to set (`Some`) and read it, and whether
    /// zero (off) is allowed besides the range.
    struct Field(String, f64, f64, f64, At, bool);
    type At = Box<dyn Fn(&mut Config, Option<f64>) -> f64>;

    fn field<T: Num>(
        key: String,
        get: fn(&mut Config) -> &mut T,
        lo: T,
        hi: T,
        off: bool,
    ) -> Field {
        let at = move |c: &mut Config, v: Option<f64>| {
            let slot = get(c);
            *slot = v.map_or(*slot, T::from);
            slot.num()
        };
        Field(key, lo.num(), hi.num(), T::STEP, Box::new(at), off)
    }

    impl Field {
        /// Sets the field as near to `v` as its type goes; whether that is in range.
        fn set(&self, c: &mut Config, v: Option<f64>) -> bool {
            let now = (self.4)(c, v);
            (self.1..=self.2).contains(&now) || (self.5 && now == 0.0)
        }
    }

    macro_rules! table {
        ($($check:ident $($part:ident).+ = $lo:expr, $hi:expr;)*) => {
            vec![$(field(
                [$(stringify!($part)),+].join("."),
                |c| &mut c.$($part).+,
                $lo,
                $hi,
                stringify!($check).ends_with("_or_off"),
            )),*]
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
    /// `datagram_burst` and the largest `outbound_queue`, so both can reach theirs; the
    /// shortest `heartbeat` and the longest `node_ttl`, likewise.
    fn base() -> Config {
        let mut c = Config::default();
        c.session.idle_timeout = 10 * MIN;
        c.session.suspect_after = 500 * MS;
        c.session.datagram_burst = 32;
        c.session.outbound_queue = 1 << 20;
        c.cluster.heartbeat = 100 * MS;
        c.cluster.node_ttl = 5 * MIN;
        c.cluster.leader_lease = 5 * MIN;
        c
    }

    #[test]
    fn every_bounded_key_accepts_its_bounds_and_rejects_past_them() {
        for f @ Field(key, lo, hi, step, ..) in &fields() {
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
        let mut c = base();
        c.matches.snapshot_interval = 99 * MS;
        rejects(
            &c,
            "matches.snapshot_interval = 99ms is out of range (0s, or 100ms to 1h)",
        );
        c.matches.snapshot_interval = Duration::ZERO;
        c.validate().expect("0s turns snapshots off");
        c.cluster.heartbeat = 200 * MS;
        c.cluster.node_ttl = 599 * MS;
        rejects(
            &c,
            "cluster.node_ttl = 599ms is out of range (3 × cluster.heartbeat = 600ms to 5m)",
        );
        c.cluster.node_ttl = 600 * MS;
        c.validate().expect("3 × heartbeat");
        c.cluster.name = "a.b".into();
        rejects(&c, "cluster.name must be 1 to 32 of A-Z a-z 0-9 _ -");
        c.cluster.name = "prod".into();
        c.cluster.replicas = 2;
        rejects(&c, "cluster.replicas must be 1, 3 or 5");
        c.cluster.replicas = 3;
        c.cluster.url = Some("nats://10.0.0.5:4222".into());
        assert!(c
            .validate()
            .is_err_and(|e| e.to_string().contains("10.0.0.5:4222")));
        c.cluster.url = Some("nats://:@10.0.0.5:4222".into());
        assert!(c.validate().is_err(), "an empty user names nothing");
        c.cluster.url = Some("nats://qm:secret@10.0.0.5:4222, nats://127.0.0.1:4222".into());
        c.validate().expect("a remote NATS with credentials");
        c.cluster.url = Some("nats://qm:a@10.0.0.5:4222, nats://qm:b@10.0.0.6:4222".into());
        rejects(
            &c,
            "cluster.url: its servers name different credentials; give them all the same",
        );
        c.cluster.url = Some("nats://qm:secret@bad host".into());
        let e = c.validate().expect_err("not a URL").to_string();
        assert!(e.contains("cluster.url") && !e.contains("secret"), "{e}");
        c.cluster.url = None;
        c.cluster.name = "prod".into();
        c.cluster.node_name = Some(String::new());
        rejects(&c, "cluster.node_name must be 1 to 32 of A-Z a-z 0-9 _ -");
        c.cluster.node_name = Some("x".repeat(33));
        rejects(&c, "cluster.node_name must be 1 to 32 of A-Z a-z 0-9 _ -");
        c.cluster.node_name = Some("node-1".into());
        c.validate().expect("a good name");
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
            for (f @ Field(_, lo, hi, step, ..), (choice, raw)) in fields.iter().zip(picks) {
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
                && s.outbound_queue >= 2 * s.datagram_burst as usize
                && c.cluster.heartbeat.checked_mul(3).is_some_and(|m| {
                    c.cluster.node_ttl >= m && c.cluster.leader_lease >= m
                });
            let in_range = rules && fields.iter().all(|f| f.set(&mut c.clone(), None));
            prop_assert_eq!(c.validate().is_ok(), in_range, "{:?}", c);
        }
    }
}
