//! Stale datagrams are shed, end to end: a `proto` server process is frozen with
//! SIGSTOP while a player keeps sending, so its datagrams wait in the server's socket
//! buffer; when the server runs again, those older than `relay.max_datagram_age` are
//! dropped (never relayed late) while what is sent afterwards arrives, and reliable data
//! sent during the freeze (shed with its packets) is sent again and arrives complete.
//! With the bound off, the same frozen datagrams are all relayed late, which shows the
//! freeze really queued them.
//!
//! The SDK's side of the same bound: a receiver whose application stops reading for a
//! while gets the players' current data when it reads again, not the backlog, and
//! counts what it dropped; with its bound off it gets the backlog.
//!
//! The server of the first two tests runs as this test binary started again with
//! [`CHILD`] set: only [`server_process`] then does anything, and it serves until it is
//! killed.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::TestServer;
use quicmatch_client::{ClientConfig, Credentials, Event, MatchId, Socket, Trust};
use tokio::time::{timeout, Instant};

/// Set (to `DIR|MAX_AGE_MS`) in the server process's environment.
const CHILD: &str = "QUICMATCH_STALE_TEST_SERVER";

const WAIT: Duration = Duration::from_secs(30);
/// How long the server is frozen: far past the 40 ms bound.
const FREEZE: Duration = Duration::from_millis(400);
/// Datagrams sent while it is frozen.
const FROZEN: usize = 20;

/// The server process (does nothing unless started by a test with [`CHILD`] set).
#[test]
fn server_process() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (dir, age) = spec.split_once('|').expect("spec");
    let mut config = common::test_config();
    config.transport = quicmatch::config::Transport::Proto;
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.data_dir = format!("{dir}/data").into();
    config.certs_dir = format!("{dir}/certs").into();
    config.relay.max_datagram_age = Duration::from_millis(age.parse().expect("age"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let server = quicmatch::Server::builder(config).bind().expect("bind");
        println!("READY {} {}", server.local_addr(), server.fingerprint());
        server.serve(std::future::pending::<()>()).await;
    });
}

/// A server process, killed when dropped.
struct Process {
    child: common::child::Child,
    addr: SocketAddr,
    fingerprint: String,
    _dir: tempfile::TempDir,
}

impl Process {
    fn start(max_age: Duration) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = format!("{}|{}", dir.path().display(), max_age.as_millis());
        let child = common::child::Child::spawn(CHILD, &spec);
        let (addr, fingerprint) = child.ready(WAIT);
        Self {
            child,
            addr,
            fingerprint,
            _dir: dir,
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> nix::Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.process.id() as i32);
        nix::sys::signal::kill(pid, signal)
    }

    /// Freezes the server and returns once every one of its threads is stopped (a
    /// signal is delivered asynchronously: threads run on for a moment after `kill`).
    async fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
            .expect("stop the server");
        let tasks = format!("/proc/{}/task", self.child.process.id());
        let deadline = Instant::now() + WAIT;
        loop {
            let stopped = std::fs::read_dir(&tasks)
                .expect("the server's threads")
                .filter_map(Result::ok)
                .all(|t| {
                    let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    // The state is the first field after the command name's ")".
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                });
            if stopped {
                return;
            }
            assert!(Instant::now() < deadline, "the server never stopped");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn player(&self, name: &str) -> Socket {
        let config = ClientConfig::new(
            self.addr,
            Trust::pin(&self.fingerprint).expect("pin"),
            Credentials::Device {
                id: format!("device-{name}-stale"),
            },
        )
        .username(name)
        // The freeze must not look like a dead server to the players.
        .idle_timeout(Duration::from_secs(60))
        // What the server relays late must reach the test: the SDK's own bound (tested
        // below) would drop it on the way.
        .max_datagram_age(None);
        timeout(WAIT, Socket::connect(config))
            .await
            .expect("connect in time")
            .expect("connect")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Continued first, so the kill finds a process that can die at once.
        let _ = self.signal(nix::sys::signal::Signal::SIGCONT);
        let _ = self.child.process.kill();
        let _ = self.child.process.wait();
    }
}

/// Collects the unreliable data bob receives into `got` until `until` arrives.
async fn receive_until(bob: &Socket, until: &[u8], got: &mut Vec<Vec<u8>>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let event = timeout(deadline - Instant::now(), bob.next_event())
            .await
            .unwrap_or_else(|_| panic!("waiting for {until:?}; got {got:?}"))
            .expect("bob's socket closed");
        if let Event::MatchData(d) = event {
            let data = d.data.to_vec();
            if data == until {
                return;
            }
            got.push(data);
        }
    }
}

/// Freezes the server while alice sends [`FROZEN`] datagrams, then sends one more and
/// returns which of the frozen ones bob received before it.
async fn frozen_datagrams_relayed(max_age: Duration) -> usize {
    common::init_tracing();
    let server = Process::start(max_age);
    let alice = server.player("alice").await;
    let bob = server.player("bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    let id: MatchId = m.match_id;
    // The path is warm: one datagram through before the freeze.
    send_until_received(&alice, &bob, id, b"warm").await;

    server.freeze().await;
    for i in 0..FROZEN {
        alice
            .send_match_data(id, 1, format!("frozen-{i}").into_bytes(), false, None)
            .await
            .expect("send while frozen");
        alice
            .send_match_data(id, 2, format!("reliable-{i}").into_bytes(), true, None)
            .await
            .expect("send reliable while frozen");
    }
    // The fault's duration, not a wait for an event (the client's endpoint runs on this
    // runtime and must go on sending): the datagrams sit in the server's
    // socket buffer meanwhile.
    tokio::time::sleep(FREEZE).await;
    server
        .signal(nix::sys::signal::Signal::SIGCONT)
        .expect("continue the server");

    let mut got = send_until_received(&alice, &bob, id, b"fresh").await;
    // Reliable data is never lost to the bound: what the server shed unread, alice's
    // connection sends again.
    let last = format!("reliable-{}", FROZEN - 1).into_bytes();
    if !got.contains(&last) {
        receive_until(&bob, &last, &mut got).await;
        got.push(last);
    }
    let reliable: Vec<Vec<u8>> = got
        .iter()
        .filter(|g| g.starts_with(b"reliable-"))
        .cloned()
        .collect();
    let expected: Vec<Vec<u8>> = (0..FROZEN)
        .map(|i| format!("reliable-{i}").into_bytes())
        .collect();
    assert_eq!(reliable, expected, "reliable data complete and in order");
    let frozen = got.iter().filter(|g| g.starts_with(b"frozen-")).count();
    // Anything else is a repeat of the warm-up or the fresh datagram still on its way.
    assert!(
        got.iter().all(|g| g.starts_with(b"frozen-")
            || g.starts_with(b"reliable-")
            || g == b"warm"
            || g == b"fresh"),
        "{got:?}"
    );
    frozen
}

/// Sends `what` until bob has it (a datagram may be lost); returns what bob received
/// before it.
async fn send_until_received(
    alice: &Socket,
    bob: &Socket,
    id: MatchId,
    what: &[u8],
) -> Vec<Vec<u8>> {
    let mut before = Vec::new();
    for _ in 0..50 {
        alice
            .send_match_data(id, 1, what.to_vec(), false, None)
            .await
            .expect("send");
        // What arrives while waiting is kept even when the wait times out.
        if timeout(
            Duration::from_millis(500),
            receive_until(bob, what, &mut before),
        )
        .await
        .is_ok()
        {
            return before;
        }
    }
    panic!("{what:?} never reached bob");
}

#[tokio::test]
async fn datagrams_that_waited_past_the_bound_are_dropped_not_relayed_late() {
    let relayed = frozen_datagrams_relayed(Duration::from_millis(50)).await;
    assert_eq!(relayed, 0, "frozen datagrams relayed late");
}

#[tokio::test]
async fn with_the_bound_off_the_same_datagrams_arrive_late() {
    let relayed = frozen_datagrams_relayed(Duration::ZERO).await;
    assert!(
        relayed >= FROZEN / 2,
        "only {relayed} of {FROZEN} frozen datagrams were relayed: the freeze did not queue them"
    );
}

/// Bob's application stops reading while alice sends [`FROZEN`] datagrams; returns how
/// many of them bob's socket still delivered once read again, and how many it dropped.
async fn stalled_reader(bob_config: impl FnOnce(ClientConfig) -> ClientConfig) -> (usize, u64) {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = timeout(
        WAIT,
        Socket::connect(bob_config(server.client_config("bob"))),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    send_until_received(&alice, &bob, m.match_id, b"warm").await;
    let dropped_before = bob.datagrams_dropped();
    for i in 0..FROZEN {
        alice
            .send_match_data(
                m.match_id,
                1,
                format!("frozen-{i}").into_bytes(),
                false,
                None,
            )
            .await
            .expect("send");
    }
    // The application's stall: nobody calls next_event meanwhile.
    tokio::time::sleep(FREEZE).await;
    let got = send_until_received(&alice, &bob, m.match_id, b"fresh").await;
    let frozen = got.iter().filter(|g| g.starts_with(b"frozen-")).count();
    assert!(
        got.iter()
            .all(|g| g.starts_with(b"frozen-") || g == b"warm"),
        "{got:?}"
    );
    (frozen, bob.datagrams_dropped() - dropped_before)
}

#[tokio::test]
async fn a_receiver_that_stalls_gets_current_data_not_the_backlog() {
    let (delivered, dropped) = stalled_reader(|c| c).await;
    assert_eq!(delivered, 0, "stale datagrams delivered after the stall");
    assert!(dropped >= FROZEN as u64, "dropped {dropped} of {FROZEN}");
}

#[tokio::test]
async fn with_the_sdk_bound_off_a_stalled_receiver_gets_the_backlog() {
    let (delivered, dropped) = stalled_reader(|c| c.max_datagram_age(None)).await;
    assert_eq!(
        delivered, FROZEN,
        "the backlog, all of it, in order of arrival"
    );
    assert_eq!(dropped, 0);
}
