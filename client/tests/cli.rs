//! The CLI end to end: two `quicmatch-cli` processes play a match through a real server,
//! and the JSON lines follow the documented schema; its session survives an unread
//! stdout, a resume the server can no longer serve (`RESUME_GAP`) gives it a new session
//! by itself, and Ctrl-C, SIGTERM and end of input close it politely.

use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    net::SocketAddr,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use quicmatch::{tls, Config, Server, Stats};
use quicmatch_client::{ClientConfig, Credentials, Event, MatchId, Socket, Trust};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines},
    net::UdpSocket,
    process::{Child, ChildStdin, ChildStdout, Command},
    sync::watch,
    task::{JoinHandle, JoinSet},
    time::timeout,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(20);

struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    backlog: Vec<Value>,
    /// Everything the CLI wrote to stderr so far (also echoed to the test's stderr).
    stderr: watch::Receiver<String>,
}

impl Cli {
    fn spawn(addr: SocketAddr, ca: &std::path::Path, device: &str, name: &str) -> Self {
        Self::spawn_with(addr, ca, device, name, &[])
    }

    /// [`Cli::spawn`] with more flags.
    fn spawn_with(
        addr: SocketAddr,
        ca: &std::path::Path,
        device: &str,
        name: &str,
        flags: &[&str],
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quicmatch-cli"))
            .args([
                "--server",
                &addr.to_string(),
                "--device-id",
                device,
                "--username",
                name,
            ])
            .arg("--ca")
            .arg(ca)
            .arg("--json")
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn quicmatch-cli");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut errors = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (tx, stderr) = watch::channel(String::new());
        let name = name.to_owned();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                eprintln!("[{name} stderr] {line}");
                tx.send_modify(|all| {
                    all.push_str(&line);
                    all.push('\n');
                });
            }
        });
        Self {
            child,
            stdin,
            lines,
            backlog: Vec::new(),
            stderr,
        }
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .as_mut()
            .expect("stdin still open")
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write command");
    }

    async fn next(&mut self, what: &str) -> Value {
        let line = timeout(TEST_TIMEOUT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("waiting for {what}"))
            .expect("read")
            .unwrap_or_else(|| panic!("cli exited while waiting for {what}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    }

    /// The next line of type `ty`; lines of other types seen on the way are kept for
    /// later calls (events and replies can interleave).
    async fn expect(&mut self, ty: &str) -> Value {
        if let Some(i) = self.backlog.iter().position(|v| v["type"] == ty) {
            return self.backlog.remove(i);
        }
        loop {
            let v = self.next(ty).await;
            if v["type"] == ty {
                return v;
            }
            self.backlog.push(v);
        }
    }
}

/// Starts a server on port 0 and writes its certificate where `--ca` can read it.
fn start_server(
    dir: &std::path::Path,
    interval: Duration,
) -> (
    SocketAddr,
    std::path::PathBuf,
    tokio_util::sync::CancellationToken,
) {
    let (addr, ca, stop, _) = start_server_with_stats(dir, interval);
    (addr, ca, stop)
}

fn start_server_with_stats(
    dir: &std::path::Path,
    interval: Duration,
) -> (
    SocketAddr,
    std::path::PathBuf,
    tokio_util::sync::CancellationToken,
    Stats,
) {
    let mut config = server_config();
    config.matchmaker.interval = interval;
    start_server_with(dir, config)
}

/// The tests' server config: on 127.0.0.1 port 0, otherwise the defaults.
fn server_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..Config::default()
    }
}

/// [`start_server`] with `config`, and the server's stats.
fn start_server_with(
    dir: &std::path::Path,
    config: Config,
) -> (
    SocketAddr,
    std::path::PathBuf,
    tokio_util::sync::CancellationToken,
    Stats,
) {
    let material = tls::generate(vec!["127.0.0.1".into()]).expect("cert");
    let ca = dir.join("server.crt");
    std::fs::write(
        &ca,
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64_lines(&material.chain[0])
        ),
    )
    .expect("write ca");
    let mut config = config;
    // A store of its own, beside the test's certificate (restart records would
    // otherwise land in the working directory).
    config.data_dir = dir.join("data");
    let server = Server::builder(config)
        .certificate(material)
        .secret([1u8; 32])
        .bind()
        .expect("bind");
    let addr = server.local_addr();
    let stats = server.stats();
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(server.serve(async move { token.cancelled().await }));
    (addr, ca, stop, stats)
}

#[tokio::test]
async fn two_clis_play_a_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path(), Duration::from_secs(3600));

    let mut alice = Cli::spawn(addr, &ca, "device-alice-cli", "alice");
    let session = alice.next("alice's session").await;
    assert_eq!(session["type"], "session");
    assert_eq!(session["username"], "alice");
    for key in ["user_id", "session_id"] {
        assert!(session[key].is_string(), "{key}");
    }
    alice.send("create").await;
    let created = alice.next("match").await;
    assert_eq!(created["type"], "match");
    assert_eq!(created["size"], 1);
    assert_eq!(created["self"]["username"], "alice");
    let match_id = created["match_id"].as_str().expect("match_id").to_owned();

    let mut bob = Cli::spawn(addr, &ca, "device-bob-cli", "bob");
    let bob_session = bob.next("bob's session").await;
    bob.send(&format!("join {match_id}")).await;
    let joined = bob.next("join reply").await;
    assert_eq!(joined["size"], 2);
    assert_eq!(joined["presences"].as_array().map(Vec::len), Some(2));
    let presence = alice.next("bob's join").await;
    assert_eq!(presence["type"], "match_presence");
    assert_eq!(
        presence["joins"][0]["session_id"],
        bob_session["session_id"]
    );
    assert_eq!(presence["leaves"].as_array().map(Vec::len), Some(0));

    alice
        .send(&format!("send {match_id} 7 \"hello there\" --reliable"))
        .await;
    let data = bob.next("reliable data").await;
    assert_eq!(data["type"], "match_data");
    assert_eq!(data["data"], "hello there");
    assert_eq!(data["op_code"], 7);
    assert_eq!(data["reliable"], true);
    assert_eq!(data["sender"]["username"], "alice");
    assert!(data["seq"].is_u64());

    bob.send(&format!(
        "send {match_id} 8 pong --to {}",
        session["session_id"].as_str().expect("sid")
    ))
    .await;
    let data = alice.next("targeted datagram").await;
    assert_eq!(data["data"], "pong");
    assert_eq!(data["reliable"], false);

    bob.send("join 12345").await;
    let err = bob.next("error").await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "BAD_INPUT");
    assert!(err["message"].is_string());

    bob.send("ping").await;
    assert_eq!(bob.next("pong").await["type"], "pong");
    bob.send(&format!("leave {match_id}")).await;
    assert_eq!(bob.next("ack").await["type"], "ack");
    let left = alice.next("bob's leave").await;
    assert_eq!(left["leaves"][0]["username"], "bob");

    alice.send("quit").await;
    bob.send("quit").await;
    for cli in [&mut alice, &mut bob] {
        let status = timeout(TEST_TIMEOUT, cli.child.wait())
            .await
            .expect("waiting for exit")
            .expect("exit");
        assert!(status.success());
    }
    stop.cancel();
}

#[tokio::test]
async fn two_clis_matchmake_and_meet_by_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path(), Duration::from_millis(100));
    let mut clis = [
        Cli::spawn(addr, &ca, "device-mm-cli-1", "one"),
        Cli::spawn(addr, &ca, "device-mm-cli-2", "two"),
    ];
    for cli in &mut clis {
        cli.next("session").await;
        cli.send("mm-add 2 2 --query \"+properties.mode:duel properties.rank:>3\" --string mode=duel --numeric rank=5")
            .await;
        let ticket = cli.next("ticket").await;
        assert_eq!(ticket["type"], "matchmaker_ticket");
        assert!(ticket["ticket"].is_string());
    }
    let mut token = String::new();
    for cli in &mut clis {
        let m = cli.next("matchmaker result").await;
        assert_eq!(m["type"], "matchmaker_matched");
        assert_eq!(m["users"].as_array().map(Vec::len), Some(2));
        assert_eq!(m["self"]["string_properties"]["mode"], "duel");
        assert_eq!(m["self"]["numeric_properties"]["rank"], 5.0);
        token = m["token"].as_str().expect("token").to_owned();
    }
    let mut ids = Vec::new();
    for cli in &mut clis {
        cli.send(&format!("join-token {token}")).await;
        let joined = cli.next("match").await;
        assert_eq!(joined["type"], "match");
        ids.push(joined["match_id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
    clis[1]
        .send("mm-remove 00000000-0000-0000-0000-000000000000")
        .await;
    let err = clis[1].next("error").await;
    assert_eq!(err["code"], "TICKET_NOT_FOUND");
    stop.cancel();
}

#[tokio::test]
async fn party_commands_and_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path(), Duration::from_millis(100));
    let mut leader = Cli::spawn(addr, &ca, "device-party-leader", "leader");
    let mut member = Cli::spawn(addr, &ca, "device-party-member", "member");
    let mut solo = Cli::spawn(addr, &ca, "device-party-solo", "solo");
    leader.expect("session").await;
    let member_session = member.expect("session").await;
    solo.expect("session").await;

    leader.send("party-create --closed --max-size 3").await;
    let party = leader.expect("party").await;
    assert_eq!(party["open"], false);
    assert_eq!(party["max_size"], 3);
    assert_eq!(party["leader"]["username"], "leader");
    let pid = party["party_id"].as_str().expect("party_id").to_owned();
    let msid = member_session["session_id"]
        .as_str()
        .expect("sid")
        .to_owned();

    member.send(&format!("party-join {pid}")).await;
    assert_eq!(member.expect("ack").await["command"], "party-join");
    let request = leader.expect("party_join_request").await;
    assert_eq!(request["presences"][0]["session_id"], msid.as_str());
    leader.send(&format!("party-requests {pid}")).await;
    let listed = leader.expect("party_join_requests").await;
    assert_eq!(listed["presences"].as_array().map(Vec::len), Some(1));
    leader.send(&format!("party-accept {pid} {msid}")).await;
    assert_eq!(leader.expect("ack").await["command"], "party-accept");
    let snapshot = member.expect("party").await;
    assert_eq!(snapshot["presences"].as_array().map(Vec::len), Some(2));
    assert_eq!(snapshot["self"]["username"], "member");
    let joined = leader.expect("party_presence").await;
    assert_eq!(joined["joins"][0]["session_id"], msid.as_str());

    member
        .send(&format!("party-send {pid} 7 \"hi team\""))
        .await;
    let data = leader.expect("party_data").await;
    assert_eq!(data["data"], "hi team");
    assert_eq!(data["op_code"], 7);
    assert_eq!(data["sender"]["username"], "member");
    leader.send(&format!("party-update {pid} --open")).await;
    assert_eq!(member.expect("party_update").await["open"], true);

    leader
        .send(&format!("party-mm-add {pid} 3 3 --string mode=coop"))
        .await;
    let ticket = leader.expect("party_matchmaker_ticket").await;
    let pushed = member.expect("party_matchmaker_ticket").await;
    assert_eq!(ticket["ticket"], pushed["ticket"]);
    solo.send("mm-add 3 3").await;
    solo.expect("matchmaker_ticket").await;
    let token = solo.expect("matchmaker_matched").await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let m = member.expect("matchmaker_matched").await;
    assert_eq!(m["self"]["party_id"], pid.as_str());
    leader.expect("matchmaker_matched").await;
    for cli in [&mut leader, &mut member, &mut solo] {
        cli.send(&format!("join-token {token}")).await;
        cli.expect("match").await;
    }

    leader.send(&format!("party-promote {pid} {msid}")).await;
    assert_eq!(
        member.expect("party_leader").await["presence"]["session_id"],
        msid.as_str()
    );
    leader.send(&format!("party-close {pid}")).await;
    assert_eq!(leader.expect("error").await["code"], "PARTY_NOT_LEADER");
    member.send(&format!("party-close {pid}")).await;
    let closed = leader.expect("party_close").await;
    assert!(closed["reason"]
        .as_str()
        .is_some_and(|r| r.contains("closed")));
    for cli in [&mut leader, &mut member, &mut solo] {
        cli.send("quit").await;
    }
    stop.cancel();
}

#[tokio::test]
async fn party_labels_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path(), Duration::from_secs(3600));
    let mut leader = Cli::spawn(addr, &ca, "device-label-leader", "leader");
    let mut member = Cli::spawn(addr, &ca, "device-label-member", "member");
    leader.expect("session").await;
    member.expect("session").await;

    leader
        .send("party-create --max-size 3 --label \"game night\"")
        .await;
    let party = leader.expect("party").await;
    assert_eq!(party["label"], "game night");
    assert_eq!(party["open"], true);
    assert_eq!(party["max_size"], 3);
    let pid = party["party_id"].as_str().expect("party_id").to_owned();
    member.send(&format!("party-join {pid}")).await;
    assert_eq!(member.expect("ack").await["command"], "party-join");
    assert_eq!(member.expect("party").await["label"], "game night");

    // The label alone: the open flag stays.
    leader
        .send(&format!("party-update {pid} --label ranked"))
        .await;
    assert_eq!(leader.expect("ack").await["command"], "party-update");
    for cli in [&mut leader, &mut member] {
        let update = cli.expect("party_update").await;
        assert_eq!(update["party_id"], pid.as_str());
        assert_eq!(update["open"], true);
        assert_eq!(update["label"], "ranked");
    }
    // Both at once: the flag, then the label.
    leader
        .send(&format!(
            "party-update {pid} --closed --label \"late shift\""
        ))
        .await;
    assert_eq!(leader.expect("ack").await["command"], "party-update");
    let first = member.expect("party_update").await;
    assert_eq!(first["open"], false);
    assert_eq!(first["label"], "ranked");
    let second = member.expect("party_update").await;
    assert_eq!(second["open"], false);
    assert_eq!(second["label"], "late shift");
    // An empty label removes it.
    leader
        .send(&format!("party-update {pid} --label \"\""))
        .await;
    assert_eq!(leader.expect("ack").await["command"], "party-update");
    let cleared = member.expect("party_update").await;
    assert!(cleared["label"].is_null(), "{cleared}");
    assert_eq!(cleared["open"], false);

    for bad in [
        format!("party-update {pid}"),
        format!("party-update {pid} --label"),
        format!("party-update {pid} --bogus"),
        "party-create --label".to_owned(),
        format!(
            "party-create --label {}",
            "x".repeat(quicmatch_protocol::MAX_PARTY_LABEL_LEN + 1)
        ),
    ] {
        leader.send(&bad).await;
        let err = leader.expect("error").await;
        assert_eq!(err["code"], "BAD_INPUT", "{bad}: {err}");
    }
    member
        .send(&format!("party-update {pid} --label mine"))
        .await;
    assert_eq!(member.expect("error").await["code"], "PARTY_NOT_LEADER");
    for cli in [&mut leader, &mut member] {
        cli.send("quit").await;
    }
    stop.cancel();
}

/// An SDK client creates a match and a CLI (JSON mode), connecting to `cli_addr` (the
/// server's `addr`, or a [`Forwarder`] in front of it), joins it; returns both, the match
/// and the CLI's session id once the SDK client has seen the CLI join.
async fn cli_in_match(
    addr: SocketAddr,
    cli_addr: SocketAddr,
    ca: &std::path::Path,
    tag: &str,
) -> (Socket, Cli, MatchId, String) {
    let config = ClientConfig::new(
        addr,
        Trust::CaFile(ca.to_owned()),
        Credentials::Device {
            id: format!("device-{tag}-peer"),
        },
    )
    .username(format!("{tag}-peer"));
    let peer = Socket::connect(config).await.expect("peer connects");
    let m = peer.create_match(None).await.expect("create");
    let mut cli = Cli::spawn(
        cli_addr,
        ca,
        &format!("device-{tag}-cli"),
        &format!("{tag}-cli"),
    );
    let session = cli.expect("session").await;
    let sid = session["session_id"].as_str().expect("sid").to_owned();
    cli.send(&format!("join {}", m.match_id)).await;
    assert_eq!(cli.expect("match").await["size"], 2);
    assert!(
        presence_change(&peer, &sid, true, TEST_TIMEOUT).await,
        "the peer sees the CLI join"
    );
    (peer, cli, m.match_id, sid)
}

/// Whether, within `within`, `peer` sees session `sid` join (`join`) or leave its match.
async fn presence_change(peer: &Socket, sid: &str, join: bool, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, peer.next_event()).await {
            Err(_) => return false,
            Ok(Some(Event::MatchPresence(p))) => {
                let list = if join { &p.joins } else { &p.leaves };
                if list.iter().any(|p| p.session_id.to_string() == sid) {
                    return true;
                }
            }
            Ok(Some(Event::Disconnected { reason, .. })) => panic!("peer disconnected: {reason}"),
            Ok(None) => panic!("peer disconnected"),
            Ok(Some(_)) => {}
        }
    }
}

/// A UDP forwarder between clients and the server: a test can cut the network under a
/// client (no close, as when Wi-Fi drops) and count the QUIC connections clients open
/// through it. Each client address gets its own upstream socket, so the server sees one
/// address per client, as without it. Stops when dropped.
struct Forwarder {
    addr: SocketAddr,
    state: Arc<ForwarderState>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct ForwarderState {
    cut: AtomicBool,
    /// The source connection ids of the clients' long-header (handshake) packets: one
    /// per connection a client opened, a resume included.
    connections: Mutex<HashSet<Vec<u8>>>,
}

impl ForwarderState {
    /// Notes the connection a client's packet opens, if it is a long-header one: first
    /// byte with the high bit set, 4 bytes of version, then each connection id after its
    /// length byte (destination, then source).
    fn note(&self, packet: &[u8]) {
        let Some(&first) = packet.first() else {
            return;
        };
        if first & 0x80 == 0 {
            return;
        }
        let dcid_len = usize::from(packet.get(5).copied().unwrap_or(0));
        let at = 6 + dcid_len;
        let Some(&scid_len) = packet.get(at) else {
            return;
        };
        if let Some(scid) = packet.get(at + 1..at + 1 + usize::from(scid_len)) {
            self.connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(scid.to_vec());
        }
    }
}

impl Forwarder {
    async fn start(server: SocketAddr) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind forwarder");
        let addr = front.local_addr().expect("forwarder address");
        let state = Arc::new(ForwarderState::default());
        let task = tokio::spawn(forward(Arc::new(front), server, state.clone()));
        Self { addr, state, task }
    }

    /// Drops every packet from now on, both ways.
    fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
    }

    /// Ends a `cut`.
    fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// The connections clients have opened through the forwarder so far (their source
    /// connection ids).
    fn connections(&self) -> HashSet<Vec<u8>> {
        self.state
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The forwarder's uplink: every client packet to the server through that client's own
/// upstream socket, whose downlink task it starts on the client's first packet.
async fn forward(front: Arc<UdpSocket>, server: SocketAddr, state: Arc<ForwarderState>) {
    let mut uplinks: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut downlinks = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else {
            continue;
        };
        state.note(&buf[..n]);
        if state.cut.load(Ordering::SeqCst) {
            continue;
        }
        let up = match uplinks.entry(client) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => {
                let up = UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream");
                up.connect(server).await.expect("connect upstream");
                let up = Arc::new(up);
                downlinks.spawn(downlink(up.clone(), front.clone(), client, state.clone()));
                e.insert(up).clone()
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

/// Server packets for `client`, unless cut.
async fn downlink(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    state: Arc<ForwarderState>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = up.recv(&mut buf).await {
        if !state.cut.load(Ordering::SeqCst) {
            let _ = front.send_to(&buf[..n], client).await;
        }
    }
}

/// Far more reliable data than the pipe (64 KiB), the CLI's 1024-line queue and the
/// SDK's 4096-event buffer hold arrives while nobody reads the CLI's stdout for 25 s.
/// A CLI whose event loop stalled on stdout would leave the server's reliable traffic
/// unread and be closed as a slow consumer; this one keeps its session, drops the lines
/// it cannot print (one warning on stderr, then the count), and answers afterwards. Its
/// traffic goes through a [`Forwarder`], which shows it never opened a second
/// connection: the session was never dropped and resumed (which the server and the
/// peer would not notice), nor closed with `TIMED_OUT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stdout_not_read_keeps_the_session() {
    const TOTAL: usize = 6000;
    // Ten every 25 ms, 400 a second: under the server's 500/s data rate limit.
    const PER_TICK: usize = 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop, stats) = start_server_with_stats(dir.path(), Duration::from_secs(3600));
    let link = Forwarder::start(addr).await;
    let (peer, mut cli, match_id, sid) = cli_in_match(addr, link.addr, &ca, "unread").await;
    let opened = link.connections();
    assert_eq!(opened.len(), 1, "the CLI's one connection");
    assert!(
        opened.iter().all(|cid| !cid.is_empty()),
        "connections told apart"
    );
    let payload = "x".repeat(2000);
    let mut ticker = tokio::time::interval(Duration::from_millis(25));
    // The period of not reading stdout, watching the peer's events all along.
    let not_reading = tokio::time::sleep(Duration::from_secs(25));
    tokio::pin!(not_reading);
    let mut sent = 0;
    loop {
        tokio::select! {
            () = &mut not_reading => break,
            _ = ticker.tick(), if sent < TOTAL => {
                for _ in 0..PER_TICK {
                    let data = format!("{sent} {payload}").into_bytes();
                    peer.send_match_data(match_id, 1, data, true, None).await.expect("send");
                    sent += 1;
                }
            }
            event = peer.next_event() => match event {
                Some(Event::MatchPresence(p)) => panic!("presence changed while stdout was unread: {p:?}"),
                Some(Event::Error { code, message }) => panic!("peer got error {code}: {message}"),
                Some(Event::Disconnected { reason, .. }) => panic!("peer disconnected: {reason}"),
                None => panic!("peer disconnected"),
                Some(_) => {}
            },
        }
    }
    assert_eq!(sent, TOTAL);
    assert_eq!(stats.sessions(), 2, "both sessions live");
    assert_eq!(stats.held_sessions(), 0, "no session lost its connection");
    assert_eq!(
        stats.matches().presences,
        2,
        "the CLI is still in the match"
    );
    let members = peer.match_presences(match_id).expect("peer in the match");
    assert!(members.iter().any(|p| p.session_id.to_string() == sid));

    cli.send("ping").await;
    cli.expect("pong").await;
    assert_eq!(
        link.connections(),
        opened,
        "no resume, reconnect or new session: the CLI kept its one connection"
    );
    for ty in ["reconnecting", "reconnected", "disconnected", "new_session"] {
        assert!(
            cli.backlog.iter().all(|v| v["type"] != ty),
            "a {ty} line was printed"
        );
    }
    let seqs: Vec<usize> = cli
        .backlog
        .iter()
        .filter(|v| v["type"] == "match_data")
        .map(|v| {
            let data = v["data"].as_str().expect("text data");
            data.split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("index")
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "printed in order");
    let stderr = timeout(
        TEST_TIMEOUT,
        cli.stderr
            .wait_for(|s| s.contains("while output was blocked")),
    )
    .await
    .expect("waiting for the dropped-events count")
    .expect("stderr")
    .clone();
    assert_eq!(
        stderr.matches("output is not being read").count(),
        1,
        "{stderr}"
    );
    let dropped: usize = stderr
        .split("dropped ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {stderr:?}"));
    assert!(dropped > 0);
    assert_eq!(
        seqs.len() + dropped,
        TOTAL,
        "every event printed or counted"
    );

    cli.send("quit").await;
    let status = timeout(TEST_TIMEOUT, cli.child.wait())
        .await
        .expect("waiting for exit")
        .expect("exit");
    assert!(status.success(), "{status}");
    stop.cancel();
}

/// The CLI's network vanishes (no close) while more reliable data arrives for it than
/// the server's resume buffer (4 KiB here) keeps. The SDK notices (`reconnecting`), the
/// network comes back, and the resume is refused with `RESUME_GAP`: the server ended the
/// old session (the peer sees it leave at once). The CLI starts a new session with its
/// own credentials by itself, says so (`new_session`, never `disconnected`), and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_gap_starts_a_new_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = server_config();
    config.session.resume_buffer = 4 << 10;
    // The connection is found dead within about 2 s, and held long enough that the
    // resume reaches the held session (and is refused for the gap, not the grace).
    config.session.idle_timeout = Duration::from_secs(2);
    config.session.suspect_after = Duration::from_secs(1);
    config.session.reconnect_grace = Duration::from_secs(30);
    let (addr, ca, stop, _) = start_server_with(dir.path(), config);
    let link = Forwarder::start(addr).await;
    let (peer, mut cli, match_id, sid) = cli_in_match(addr, link.addr, &ca, "gap").await;
    peer.send_match_data(match_id, 1, b"before".to_vec(), true, None)
        .await
        .expect("send");
    assert_eq!(cli.expect("match_data").await["data"], "before");

    link.cut();
    // 20 KiB the CLI never gets: the server keeps only the newest 4 KiB of it.
    for i in 0..40u8 {
        peer.send_match_data(match_id, 1, vec![b'a' + i % 26; 512], true, None)
            .await
            .expect("send");
    }
    let lost = cli.expect("reconnecting").await;
    assert!(lost["reason"].is_string(), "{lost}");
    link.restore();

    let fresh = cli.expect("new_session").await;
    assert_eq!(fresh["code"], "RESUME_GAP", "{fresh}");
    assert_eq!(fresh["previous_session_id"], sid.as_str(), "{fresh}");
    let new_sid = text(&fresh["session_id"]);
    assert_ne!(new_sid, sid, "a new session");
    assert_eq!(fresh["username"], "gap-cli");
    assert!(fresh["user_id"].is_string(), "{fresh}");
    assert!(
        text(&fresh["reason"]).contains("no longer buffered"),
        "{fresh}"
    );
    assert!(
        presence_change(&peer, &sid, false, TEST_TIMEOUT).await,
        "the old session left the match"
    );
    // The forwarder saw it all: the first connection, at least one resume attempt, and
    // the new session's (what `stdout_not_read_keeps_the_session` counts on).
    let opened = link.connections().len();
    assert!(opened >= 3, "{opened} connections");

    // The new session answers, and can join the match again.
    cli.send("ping").await;
    cli.expect("pong").await;
    cli.send(&format!("join {match_id}")).await;
    let joined = cli.expect("match").await;
    assert_eq!(joined["size"], 2);
    assert_eq!(joined["self"]["session_id"], new_sid.as_str());
    assert!(
        presence_change(&peer, &new_sid, true, TEST_TIMEOUT).await,
        "the peer sees the new session join"
    );
    assert!(
        cli.backlog.iter().all(|v| v["type"] != "disconnected"),
        "{:?}",
        cli.backlog
    );
    cli.send("quit").await;
    let status = timeout(TEST_TIMEOUT, cli.child.wait())
        .await
        .expect("waiting for exit")
        .expect("exit");
    assert!(status.success(), "{status}");
    stop.cancel();
}

/// A CLI in a match with an SDK client is ended by `end`; the SDK client sees it leave
/// within 2 s (a dropped connection would take `idle_timeout + reconnect_grace`, 10 s)
/// and the CLI exits with status 0.
async fn assert_polite_close(tag: &str, end: impl FnOnce(&mut Cli)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path(), Duration::from_secs(3600));
    let (peer, mut cli, _, sid) = cli_in_match(addr, addr, &ca, tag).await;
    let started = Instant::now();
    end(&mut cli);
    assert!(
        presence_change(&peer, &sid, false, Duration::from_secs(2)).await,
        "{tag}: no leave within 2 s"
    );
    eprintln!("{tag}: left after {:?}", started.elapsed());
    let status = timeout(TEST_TIMEOUT, cli.child.wait())
        .await
        .expect("waiting for exit")
        .expect("exit");
    assert!(status.success(), "{tag}: {status}");
    stop.cancel();
}

fn kill(cli: &Cli, signal: &str) {
    let pid = cli.child.id().expect("cli running");
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

#[tokio::test]
async fn sigint_closes_politely() {
    assert_polite_close("sigint", |cli| kill(cli, "-INT")).await;
}

#[tokio::test]
async fn sigterm_closes_politely() {
    assert_polite_close("sigterm", |cli| kill(cli, "-TERM")).await;
}

#[tokio::test]
async fn eof_closes_politely() {
    assert_polite_close("eof", |cli| drop(cli.stdin.take())).await;
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a string"))
        .to_owned()
}

/// Two match names whose ids (`create NAME` is join-or-create by name) start with the
/// same 4 hex digits, and those digits.
fn names_sharing_a_prefix() -> (String, String, String) {
    let mut by_prefix = HashMap::new();
    let mut i = 0u32;
    loop {
        let name = format!("prefix-{i}");
        let prefix = quicmatch::matches::named_match_id(&name).to_string()[..4].to_owned();
        if let Some(other) = by_prefix.insert(prefix.clone(), name.clone()) {
            return (prefix, other, name);
        }
        i += 1;
    }
}

/// Commands take a unique prefix of an id seen in this run (in a reply or an event):
/// matches, sessions, tickets and parties; an unseen one is a malformed id, and an
/// ambiguous one lists the candidates.
#[tokio::test]
async fn ids_by_unique_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path(), Duration::from_secs(3600));
    let mut alice = Cli::spawn(addr, &ca, "device-prefix-alice", "alice");
    let mut bob = Cli::spawn(addr, &ca, "device-prefix-bob", "bob");
    alice.expect("session").await;
    let bob_sid = text(&bob.expect("session").await["session_id"]);

    alice.send("create").await;
    let match_id = text(&alice.expect("match").await["match_id"]);
    // Bob has not seen it: a prefix is only a malformed id.
    bob.send(&format!("join {}", &match_id[..8])).await;
    let err = bob.expect("error").await;
    assert_eq!(err["code"], "BAD_INPUT");
    assert!(
        text(&err["message"]).starts_with("invalid match id"),
        "{err}"
    );
    bob.send("list").await;
    bob.expect("match_list").await;
    // Hyphens are optional: 10 hex digits run past the first one.
    let short = match_id.replace('-', "")[..10].to_owned();
    bob.send(&format!("join {short}")).await;
    let joined = bob.expect("match").await;
    assert_eq!(joined["match_id"], match_id.as_str());
    assert_eq!(joined["size"], 2);
    // Alice sees Bob's session in the presence event, and then takes a prefix of it.
    alice.expect("match_presence").await;
    alice
        .send(&format!(
            "send {} 7 hi --reliable --to {}",
            &match_id[..6],
            &bob_sid[..6]
        ))
        .await;
    assert_eq!(bob.expect("match_data").await["data"], "hi");

    alice.send("mm-add 2 2").await;
    let ticket = text(&alice.expect("matchmaker_ticket").await["ticket"]);
    alice.send(&format!("mm-remove {}", &ticket[..8])).await;
    assert_eq!(alice.expect("ack").await["command"], "mm-remove");

    alice.send("party-create --closed").await;
    let party_id = text(&alice.expect("party").await["party_id"]);
    bob.send(&format!("party-join {party_id}")).await;
    assert_eq!(bob.expect("ack").await["command"], "party-join");
    alice.expect("party_join_request").await;
    alice
        .send(&format!(
            "party-accept {} {}",
            &party_id[..4],
            &bob_sid[..6]
        ))
        .await;
    assert_eq!(alice.expect("ack").await["command"], "party-accept");
    // The snapshot Bob gets on admission is where he sees the party id.
    bob.expect("party").await;
    bob.send(&format!("party-send {} 3 yo", &party_id[..5]))
        .await;
    assert_eq!(bob.expect("ack").await["command"], "party-send");
    assert_eq!(alice.expect("party_data").await["data"], "yo");

    let (prefix, one, two) = names_sharing_a_prefix();
    for name in [&one, &two] {
        alice.send(&format!("create {name}")).await;
        alice.expect("match").await;
    }
    alice.send(&format!("leave {prefix}")).await;
    let err = alice.expect("error").await;
    assert_eq!(err["code"], "BAD_INPUT");
    let message = text(&err["message"]);
    assert!(
        message.starts_with(&format!("ambiguous match id prefix \"{prefix}\"")),
        "{message}"
    );
    for name in [&one, &two] {
        let id = quicmatch::matches::named_match_id(name).to_string();
        assert!(message.contains(&id), "{id} in {message}");
    }
    // A longer prefix tells them apart.
    let one_id = quicmatch::matches::named_match_id(&one).to_string();
    alice.send(&format!("leave {}", &one_id[..13])).await;
    assert_eq!(alice.expect("ack").await["command"], "leave");

    for cli in [&mut alice, &mut bob] {
        cli.send("quit").await;
        let status = timeout(TEST_TIMEOUT, cli.child.wait())
            .await
            .expect("waiting for exit")
            .expect("exit");
        assert!(status.success(), "{status}");
    }
    stop.cancel();
}

/// With `--auto-join`, a CLI joins what the matchmaker found by itself and prints the
/// `match` reply after the `matchmaker_matched` event.
#[tokio::test]
async fn auto_join_follows_the_matchmaker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path(), Duration::from_millis(100));
    let mut clis = [
        Cli::spawn_with(addr, &ca, "device-auto-join-1", "one", &["--auto-join"]),
        Cli::spawn_with(addr, &ca, "device-auto-join-2", "two", &["--auto-join"]),
    ];
    for cli in &mut clis {
        cli.expect("session").await;
        cli.send("mm-add 2 2 --string mode=auto").await;
        cli.expect("matchmaker_ticket").await;
    }
    let mut ids = Vec::new();
    for cli in &mut clis {
        let mut matched = None;
        let joined = loop {
            let v = cli.next("matched, then the auto-join's match").await;
            match v["type"].as_str() {
                Some("matchmaker_matched") => matched = Some(v),
                Some("match") => break v,
                _ => {}
            }
        };
        let matched = matched.expect("the matchmaker_matched event came first");
        assert!(matched["token"].is_string(), "{matched}");
        assert_eq!(
            joined["self"]["username"],
            matched["self"]["presence"]["username"]
        );
        ids.push(text(&joined["match_id"]));
    }
    assert_eq!(ids[0], ids[1], "both joined the same match");
    // Both are in it: a message from one reaches the other.
    clis[0]
        .send(&format!("send {} 1 hello --reliable", &ids[0][..8]))
        .await;
    assert_eq!(clis[1].expect("match_data").await["data"], "hello");
    for cli in &mut clis {
        cli.send("quit").await;
        let status = timeout(TEST_TIMEOUT, cli.child.wait())
            .await
            .expect("waiting for exit")
            .expect("exit");
        assert!(status.success(), "{status}");
    }
    stop.cancel();
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    b64.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The matchmaker options from the CLI: `--composition`, `--teams` with
/// `--balance-on`, `--fallback-query`/`--fallback-after` and `--expires-after`, and the
/// errors a mistyped flag gets.
#[tokio::test]
async fn matchmaker_option_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path(), Duration::from_millis(100));
    let mut tank = Cli::spawn(addr, &ca, "device-opt-tank", "tank");
    let mut healer = Cli::spawn(addr, &ca, "device-opt-healer", "healer");
    let mut loner = Cli::spawn(addr, &ca, "device-opt-loner", "loner");
    for cli in [&mut tank, &mut healer, &mut loner] {
        cli.expect("session").await;
    }
    // Mistakes are reported and the CLI carries on.
    tank.send("mm-add 2 2 --composition role").await;
    let err = tank.expect("error").await;
    assert!(
        text(&err["message"]).contains("PROPERTY=VALUE:COUNT"),
        "{err}"
    );
    tank.send("mm-add 2 2 --fallback-query *").await;
    let err = tank.expect("error").await;
    assert!(text(&err["message"]).contains("go together"), "{err}");

    // Roles: one tank and one healer, with a fallback and an expiry that do not bite.
    for (cli, role) in [(&mut tank, "tank"), (&mut healer, "healer")] {
        cli.send(&format!(
            "mm-add 2 2 --composition role=tank:1,healer:1 --string role={role} \
             --fallback-query * --fallback-after 3 --expires-after 100"
        ))
        .await;
        cli.expect("matchmaker_ticket").await;
    }
    for cli in [&mut tank, &mut healer] {
        let m = cli.expect("matchmaker_matched").await;
        assert_eq!(m["users"].as_array().map(Vec::len), Some(2));
        assert!(m.get("teams").is_none());
    }

    // Teams: each gets its team, and the two play apart.
    for (cli, skill) in [(&mut tank, 5), (&mut healer, 7)] {
        cli.send(&format!(
            "mm-add 2 2 --teams 2 --balance-on skill --numeric skill={skill}"
        ))
        .await;
        cli.expect("matchmaker_ticket").await;
    }
    let mut mine = Vec::new();
    for cli in [&mut tank, &mut healer] {
        let m = cli.expect("matchmaker_matched").await;
        let teams = m["teams"].as_array().cloned().expect("teams");
        assert_eq!(teams.len(), 2);
        assert_ne!(teams[0], teams[1]);
        mine.push(m["self"]["team"].clone());
    }
    assert_ne!(mine[0], mine[1]);

    // Expiry: a ticket nobody matches is cancelled after one pass.
    loner
        .send("mm-add 2 2 --query +properties.nobody:1 --expires-after 1")
        .await;
    let ticket = loner.expect("matchmaker_ticket").await;
    let cancelled = loner.expect("matchmaker_ticket_cancelled").await;
    assert_eq!(cancelled["ticket"], ticket["ticket"]);
    assert_eq!(cancelled["reason"], "expired");
    stop.cancel();
}
