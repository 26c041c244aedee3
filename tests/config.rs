//! The configuration's ranges, end to end. Every numeric and duration field of
//! `src/config/mod.rs` documents its range ("Range: ..."); these tests read those lines and
//! check, through TOML as an operator writes it, that `validate` enforces exactly them;
//! that random configs inside them bind and serve; and that the binary refuses an
//! out-of-range value at start, naming the key.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use proptest::prelude::*;
use quicmatch::{Config, Server};
use quicmatch_client::{ClientConfig, Credentials, Socket, Trust};

/// Every await below is bounded by this, so a hang fails with a name.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How a key's value is written in TOML.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Int,
    Float,
    Time,
}

/// A field and its documented range, as numbers: bytes, counts, or nanoseconds.
#[derive(Debug)]
struct Bounded {
    section: String,
    name: String,
    kind: Kind,
    lo: f64,
    /// `Err(key)` for "less than `key`" (a key of the same section).
    hi: Result<f64, String>,
    /// A value allowed besides the range ("`0s`, or `100ms` to `1h`": off).
    also: Option<f64>,
}

impl Bounded {
    /// The dotted key, as error messages name it.
    fn key(&self) -> String {
        match self.section.as_str() {
            "" => self.name.clone(),
            section => format!("{section}.{}", self.name),
        }
    }

    /// `v` written as this field's TOML value.
    fn toml(&self, v: f64) -> String {
        match self.kind {
            Kind::Int => format!("{}", v as u64),
            Kind::Float => format!("{v:?}"),
            Kind::Time => format!("{:?}", humantime::format_duration(nanos(v)).to_string()),
        }
    }

    /// The smallest change of value this field can take.
    fn step(&self) -> f64 {
        match self.kind {
            Kind::Float => 1e-6,
            Kind::Int | Kind::Time => 1.0,
        }
    }
}

fn nanos(v: f64) -> Duration {
    Duration::from_nanos(v as u64)
}

/// A documented bound as a number: bytes (`64 KiB`), a plain number, or nanoseconds
/// (`` `2s` ``).
fn number(v: &str) -> Option<f64> {
    if let Some(d) = v.strip_prefix('`').and_then(|v| v.strip_suffix('`')) {
        return Some(humantime::parse_duration(d).ok()?.as_nanos() as f64);
    }
    let (n, unit) = v.split_once(' ').unwrap_or((v, "B"));
    let shift = ["B", "KiB", "MiB", "GiB"].iter().position(|u| *u == unit)?;
    Some(n.parse::<f64>().ok()? * (1u64 << (10 * shift)) as f64)
}

/// Every numeric and duration field in `src/config/mod.rs` with the range its documentation
/// gives; panics on such a field without one.
fn documented() -> Vec<Bounded> {
    let source = include_str!("../src/config/mod.rs").lines().map(str::trim);
    let (mut section, mut range, mut fields) = (String::new(), None, Vec::new());
    for line in source.take_while(|l| !l.starts_with("#[cfg(test)]")) {
        if let Some((s, _)) = line.strip_prefix("/// `[").and_then(|l| l.split_once("]`")) {
            section = s.to_owned();
        } else if let Some((_, r)) = line.split_once("Range: ") {
            // "64 to 1048576, and at least 2 × ...": the rule after the comma is another
            // key's, tested in the crate. "`0s`, or `100ms` to `1h`": one value besides
            // the range.
            let mut parts = r.trim_end_matches('.').split(", ");
            range = match (
                parts.next(),
                parts.next().and_then(|p| p.strip_prefix("or ")),
            ) {
                (Some(also), Some(range)) => Some((range.to_owned(), Some(also.to_owned()))),
                (range, _) => range.map(|r| (r.to_owned(), None)),
            };
        } else if let Some((name, ty)) = line.strip_prefix("pub ").and_then(|l| l.split_once(": "))
        {
            let kind = match ty.trim_end_matches(',') {
                "usize" | "u32" | "u64" => Kind::Int,
                "f64" => Kind::Float,
                "Duration" => Kind::Time,
                _ => {
                    range = None;
                    continue;
                }
            };
            let (range, also) = range
                .take()
                .unwrap_or_else(|| panic!("{name}: no documented range"));
            let (lo, hi) = range.split_once(" to ").expect(&range);
            let other = hi
                .strip_prefix("less than `")
                .and_then(|k| k.strip_suffix('`'));
            fields.push(Bounded {
                section: section.clone(),
                name: name.to_owned(),
                kind,
                lo: number(lo).unwrap_or_else(|| panic!("{name}: {lo}")),
                hi: number(hi)
                    .ok_or_else(|| other.unwrap_or_else(|| panic!("{name}: {hi}")).into()),
                also: also.map(|a| number(&a).unwrap_or_else(|| panic!("{name}: {a}"))),
            });
        }
    }
    fields
}

/// Values by `(section, key)`, written as a TOML file.
type Values = BTreeMap<(String, String), String>;

fn to_toml(values: &Values) -> String {
    let (mut text, mut current) = (String::new(), "");
    for ((section, name), value) in values {
        if section != current {
            current = section;
            let _ = writeln!(text, "[{section}]");
        }
        let _ = writeln!(text, "{name} = {value}");
    }
    text
}

/// Sets `f` to `v` in `values`.
fn set(values: &mut Values, f: &Bounded, v: f64) {
    values.insert((f.section.clone(), f.name.clone()), f.toml(v));
}

#[test]
fn documented_ranges_are_the_enforced_ones() {
    let fields = documented();
    assert!(fields.len() >= 30, "{fields:#?}");
    let check = |f: &Bounded, v: f64| {
        // The widest idle_timeout, so suspect_after can reach its bounds; a small
        // datagram_burst and the largest outbound_queue, so both can reach theirs; the
        // shortest heartbeat and the longest node_ttl and leader_lease, likewise.
        let mut values = Values::new();
        for (section, key, value) in [
            ("session", "idle_timeout", "\"10m\""),
            ("session", "suspect_after", "\"500ms\""),
            ("session", "datagram_burst", "32"),
            ("session", "outbound_queue", "1048576"),
            ("cluster", "heartbeat", "\"100ms\""),
            ("cluster", "node_ttl", "\"5m\""),
            ("cluster", "leader_lease", "\"5m\""),
        ] {
            values.insert((section.into(), key.into()), value.into());
        }
        set(&mut values, f, v);
        let text = to_toml(&values);
        let config: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        config.validate().map_err(|e| e.to_string())
    };
    for f in &fields {
        let key = f.key();
        // "less than `idle_timeout`": 10 minutes above.
        let hi = f.hi.clone().unwrap_or(600e9 - 1.0);
        for v in [f.lo, hi].into_iter().chain(f.also) {
            check(f, v).unwrap_or_else(|e| panic!("{key} = {}: {e}", f.toml(v)));
        }
        for v in [f.lo - f.step(), hi + f.step()] {
            if v >= 0.0 || f.kind == Kind::Float {
                let e = check(f, v).expect_err(&format!("{key} = {} accepted", f.toml(v)));
                assert!(e.contains(&format!("{key} = ")), "{key}: {e}");
            }
        }
    }
}

/// Binds `config`, connects one client, and shuts the server down.
fn serve_briefly(config: Config) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let server = Server::builder(config)
            .bind()
            .map_err(|e| format!("bind: {e}"))?;
        let (addr, cert) = (server.local_addr(), server.cert_der().clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        let client = ClientConfig::new(
            addr,
            Trust::Certificates(vec![cert]),
            Credentials::Device {
                id: "device-config-test".into(),
            },
        );
        let socket = tokio::time::timeout(TIMEOUT, Socket::connect(client))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {e}"))?;
        socket.close().await;
        let _ = stop.send(());
        tokio::time::timeout(TIMEOUT, serving)
            .await
            .map_err(|_| "shutdown timed out".to_owned())?
            .map_err(|e| format!("serve: {e}"))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// A config with every bounded field random inside its documented range (a bound an
    /// eighth of the time each, and a value allowed besides the range, such as `0s` for
    /// off, another eighth) is accepted, binds, serves a client and shuts down.
    #[test]
    fn random_documented_configs_bind_and_serve(
        raw in proptest::collection::vec(any::<u64>(), documented().len())
    ) {
        let (fields, mut values, mut picked) = (documented(), Values::new(), BTreeMap::new());
        prop_assert_eq!(fields.len(), raw.len(), "a random value for every documented key");
        for (f, raw) in fields.iter().zip(&raw) {
            let hi = match &f.hi {
                Ok(hi) => *hi,
                Err(other) => picked[&format!("{}.{other}", f.section)] - 1.0,
            };
            let v = match (raw % 8, f.also) {
                (0, _) => f.lo,
                (1, _) => hi,
                (2, Some(also)) => also,
                _ => (f.lo + *raw as f64 / u64::MAX as f64 * (hi - f.lo)).min(hi),
            };
            picked.insert(f.key(), v);
            set(&mut values, f, v);
        }
        // outbound_queue: "at least 2 × `datagram_burst`".
        let queue = picked["session.outbound_queue"].max(2.0 * picked["session.datagram_burst"]);
        let f = fields.iter().find(|f| f.key() == "session.outbound_queue").expect("queue");
        set(&mut values, f, queue);
        // node_ttl: "at least 3 × `heartbeat`".
        let ttl = picked["cluster.node_ttl"].max(3.0 * picked["cluster.heartbeat"]);
        let f = fields.iter().find(|f| f.key() == "cluster.node_ttl").expect("ttl");
        set(&mut values, f, ttl);
        // leader_lease: "at least 3 × `heartbeat`".
        let lease = picked["cluster.leader_lease"].max(3.0 * picked["cluster.heartbeat"]);
        let f = fields.iter().find(|f| f.key() == "cluster.leader_lease").expect("lease");
        set(&mut values, f, lease);
        let text = to_toml(&values);
        let mut config: Config = toml::from_str(&text).expect("parse");
        let certs = tempfile::tempdir().expect("tempdir");
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.certs_dir = certs.path().into();
        prop_assert!(config.validate().is_ok(), "{:?}\n{}", config.validate(), text);
        let served = serve_briefly(config);
        prop_assert!(served.is_ok(), "{:?}\n{}", served, text);
    }
}

#[test]
fn the_binary_refuses_an_out_of_range_value_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("quicmatch.toml");
    std::fs::write(&path, "[session]\noutbound_queue = 9000000000000000000\n").expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_quicmatch"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--certs-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn quicmatch");
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("quicmatch started with session.outbound_queue = 9000000000000000000");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let want = "session.outbound_queue = 9000000000000000000 is out of range (64 to 1048576)";
    assert!(stderr.contains(want), "{stderr}");
}
