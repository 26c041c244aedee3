//! Shared harness for the tests that drive the C ABI: a real server on 127.0.0.1 port
//! 0 (with an `echo` RPC and a fast matchmaker), the Rust SDK player that answers the
//! C and C# programs, the built library's location, and external tools that must be
//! present on CI.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _};
use quicmatch::{tls, Config, Server};
use quicmatch_client::{ClientConfig, Credentials, Event, MatchId, PartyId, Socket, Trust};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Every await on the Rust side is bounded by this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a foreign program may run (under valgrind, a debug build is slow).
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(300);
/// The name the Rust player uses; the programs look for it.
pub const PEER: &str = "rust-peer";

/// A server for one test, stopped when dropped.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    /// How an SDK client trusts it.
    pub trust: Trust,
    /// Its certificate's SHA-256, hex.
    pub fingerprint: String,
    /// Its certificate, PEM.
    pub cert_pem: String,
    shutdown: CancellationToken,
}

impl TestServer {
    /// Binds and serves on the current tokio runtime.
    pub async fn start() -> Self {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            certs_dir: std::env::temp_dir().join("quicmatch-ffi-tests-unused"),
            ..Config::default()
        };
        config.advertise = false;
        // Nothing recorded for restarts: these servers share no store and keep none.
        config.matches.snapshot_interval = Duration::ZERO;
        // Tickets match within a tenth of a second of each other.
        config.matchmaker.interval = Duration::from_millis(100);
        let material = tls::generate(vec!["localhost".into(), "127.0.0.1".into()]).expect("cert");
        let server = Server::builder(config)
            .certificate(material)
            .secret([7u8; 32])
            .rpc("echo", |_, payload| Ok(payload.to_owned()))
            .bind()
            .expect("bind");
        let shutdown = CancellationToken::new();
        let cert = server.cert_der().clone();
        let cert_pem = pem(cert.as_ref());
        let (addr, fingerprint) = (server.local_addr(), server.fingerprint());
        let token = shutdown.clone();
        tokio::spawn(server.serve(async move { token.cancelled().await }));
        Self {
            addr,
            trust: Trust::Certificates(vec![cert]),
            fingerprint,
            cert_pem,
            shutdown,
        }
    }

    /// `pin:HEX` for the C API.
    pub fn pin(&self) -> String {
        format!("pin:{}", self.fingerprint)
    }

    /// Writes the certificate as PEM into `dir`; returns `ca:PATH` for the C API.
    pub fn ca(&self, dir: &Path) -> String {
        let path = dir.join("server.crt");
        std::fs::write(&path, &self.cert_pem).expect("write certificate");
        format!("ca:{}", path.display())
    }

    /// An SDK client.
    pub async fn client(&self, name: &str) -> Socket {
        let config = ClientConfig::new(
            self.addr,
            self.trust.clone(),
            Credentials::Device {
                id: format!("device-{name}-0000"),
            },
        )
        .username(name);
        timeout(TEST_TIMEOUT, Socket::connect(config))
            .await
            .expect("waiting for connect")
            .expect("connect")
    }
}

/// A DER certificate as PEM.
fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The Rust SDK player on the other side of the C and C# programs: already in the
/// named match and waiting in the matchmaker, it answers each message as
/// `ffi/examples/play.c` describes.
pub struct Peer {
    socket: Socket,
    match_id: MatchId,
}

impl Peer {
    /// Connects, creates the named match and adds the ticket the program will match.
    pub async fn start(server: &TestServer, match_name: &str) -> Self {
        let socket = server.client(PEER).await;
        let m = timeout(TEST_TIMEOUT, socket.create_match(Some(match_name)))
            .await
            .expect("waiting for create")
            .expect("create");
        timeout(
            TEST_TIMEOUT,
            socket
                .add_matchmaker("+properties.mode:play", 2, 2)
                .string_property("mode", "play")
                .numeric_property("skill", 5.0)
                .send(),
        )
        .await
        .expect("waiting for ticket")
        .expect("ticket");
        Self {
            socket,
            match_id: m.match_id,
        }
    }

    /// Answers `foreign` until `done` is cancelled; returns what it saw happen.
    pub async fn play(
        self,
        foreign: String,
        done: CancellationToken,
    ) -> anyhow::Result<BTreeSet<&'static str>> {
        let s = &self.socket;
        let mut seen = BTreeSet::new();
        let mut party: Option<PartyId> = None;
        let mut game: Option<MatchId> = None;
        loop {
            let event = tokio::select! {
                () = done.cancelled() => break,
                event = s.next_event() => event.context("the peer was disconnected")?,
            };
            match event {
                Event::MatchPresence(p) => {
                    let in_match = p.match_id == self.match_id;
                    if p.joins.iter().any(|j| j.username == foreign) {
                        seen.insert(if in_match {
                            "joined match"
                        } else {
                            "joined game"
                        });
                    }
                    if p.leaves.iter().any(|j| j.username == foreign) {
                        seen.insert(if in_match { "left match" } else { "left game" });
                    }
                }
                Event::MatchData(d) if d.sender.username != foreign => {
                    bail!("data from {}", d.sender.username)
                }
                Event::MatchData(d) if d.match_id == self.match_id => {
                    let m = d.match_id;
                    let to = [d.sender.clone()];
                    match (d.op_code, &d.data[..]) {
                        (1, b"ping-u") => {
                            seen.insert("ping-u");
                            s.send_match_data(m, 11, &b"pong-u"[..], false, None)
                                .await?;
                        }
                        (2, b"ping-r") => {
                            seen.insert("ping-r");
                            s.send_match_data(m, 12, &b"pong-r"[..], true, None).await?;
                        }
                        (6, b"only-you") => {
                            seen.insert("targeted");
                            s.send_match_data(m, 16, &b"got-targeted"[..], true, Some(&to))
                                .await?;
                        }
                        (4, id) => {
                            let id: PartyId = std::str::from_utf8(id)?.parse()?;
                            timeout(TEST_TIMEOUT, s.join_party(id)).await??;
                            party = Some(id);
                            seen.insert("party id");
                        }
                        (op, data) => bail!("unexpected op {op} {data:?}"),
                    }
                }
                Event::MatchData(d) if Some(d.match_id) == game => {
                    if (d.op_code, &d.data[..]) != (3, b"hello-token") {
                        bail!("unexpected data in the game: {d:?}");
                    }
                    seen.insert("game data");
                    s.send_match_data(d.match_id, 13, &b"token-pong"[..], true, None)
                        .await?;
                }
                Event::Party(info) if Some(info.party_id) == party => {
                    seen.insert("in party");
                }
                Event::PartyData {
                    party_id,
                    op_code: 5,
                    data,
                    ..
                } if Some(party_id) == party && &data[..] == b"party-hi" => {
                    seen.insert("party data");
                    timeout(
                        TEST_TIMEOUT,
                        s.send_party_data(party_id, 15, &b"party-pong"[..]),
                    )
                    .await??;
                }
                Event::PartyClose { party_id, .. } if Some(party_id) == party => {
                    seen.insert("party closed");
                }
                Event::MatchmakerMatched(m) => {
                    let token = m.token.context("a matchmaker token")?;
                    let joined = timeout(TEST_TIMEOUT, s.join_match_token(&token)).await??;
                    game = Some(joined.match_id);
                    seen.insert("matched");
                }
                Event::Disconnected { reason, .. } => bail!("peer disconnected: {reason}"),
                _ => {}
            }
        }
        s.close().await;
        Ok(seen)
    }
}

/// Everything the peer must have seen when a program has played the whole script.
pub const FULL_SCRIPT: &[&str] = &[
    "game data",
    "in party",
    "joined game",
    "joined match",
    "left game",
    "left match",
    "matched",
    "party closed",
    "party data",
    "party id",
    "ping-r",
    "ping-u",
    "targeted",
];

/// Runs `program` while the peer plays against it; returns the program's output and
/// what the peer saw. Fails the test when the program hangs.
pub async fn play_against_peer(
    server: &TestServer,
    match_name: &str,
    foreign: &str,
    mut program: tokio::process::Command,
) -> (Output, BTreeSet<&'static str>) {
    let peer = Peer::start(server, match_name).await;
    let done = CancellationToken::new();
    let peer_task = tokio::spawn(peer.play(foreign.to_owned(), done.clone()));
    program
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = timeout(PROGRAM_TIMEOUT, program.output())
        .await
        .expect("waiting for the program")
        .expect("run the program");
    print_output(&output);
    done.cancel();
    let seen = timeout(TEST_TIMEOUT, peer_task)
        .await
        .expect("waiting for the peer")
        .expect("peer task")
        .expect("the peer played");
    (output, seen)
}

/// Shows a program's output in the test log.
pub fn print_output(output: &Output) {
    println!("status: {}", output.status);
    println!("--- stdout\n{}", String::from_utf8_lossy(&output.stdout));
    println!("--- stderr\n{}", String::from_utf8_lossy(&output.stderr));
}

/// Whether this run is CI's, where every tool must be present.
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether `tool` can be run. Missing on CI fails the test; missing elsewhere says so
/// plainly, so a skip is never silent.
pub fn require(tool: &str, install: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(!on_ci(), "{tool} is required on CI ({install})");
        eprintln!("SKIPPED: {tool} is not installed ({install}); CI runs this test");
    }
    found
}

/// The directory holding the built `libquicmatch_ffi` (`.so` and `.a`): the test
/// binary's own, where cargo puts every artifact of this crate.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let deps = exe.parent().expect("deps directory").to_owned();
    for dir in [
        deps.clone(),
        deps.parent().map(Path::to_owned).unwrap_or_default(),
    ] {
        if dir.join("libquicmatch_ffi.so").exists() && dir.join("libquicmatch_ffi.a").exists() {
            return dir;
        }
    }
    panic!("libquicmatch_ffi.so/.a not found next to {}", exe.display());
}

/// The repository's `ffi/` directory.
pub fn ffi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A match name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), fastish_nonce())
}

fn fastish_nonce() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
