//! Restart survival end to end: a server process with a server-run match that keeps
//! snapshots is killed with SIGKILL (and, in the second test, stopped politely) while
//! two SDK clients play; a new process on the same address and data directory puts the
//! match back from its last snapshot, both clients resume by themselves, the game goes
//! on from where the snapshot left it, and neither player ever sees the other leave.
//!
//! The server runs as this test binary started again with [`CHILD`] set: only
//! [`server_process`] then does anything, and it serves until it is killed.

mod common;

use std::{collections::BTreeMap, net::SocketAddr, path::Path, process::Command, time::Duration};

use common::init_tracing;
use quicmatch::runtime::{Dispatcher, Inbound, MatchContext, MatchHandler, MatchInit};
use quicmatch_client::{ClientConfig, Credentials, Event, MatchId, Socket, Trust};
use serde::{Deserialize, Serialize};
use tokio::time::{timeout, Instant};

/// Set (to `ADDR|DATA_DIR|CERTS_DIR`) in the server process's environment.
const CHILD: &str = "QUICMATCH_RESTART_TEST_SERVER";

const WAIT: Duration = Duration::from_secs(30);

/// The game: counts each player's inputs (op 1) and sends the tally to everyone
/// (op 2, reliable) on every tick that changed it.
#[derive(Default, Serialize, Deserialize)]
struct Tally {
    counts: BTreeMap<String, u64>,
    /// Snapshots taken (so a test knows one was recorded after a change).
    snapshots: u64,
    /// Restores this match has been through.
    restored: u64,
    #[serde(skip)]
    dirty: bool,
}

impl MatchHandler for Tally {
    fn init(
        &mut self,
        _ctx: &MatchContext,
        _params: &serde_json::Value,
    ) -> Result<MatchInit, String> {
        Ok(MatchInit::new(10).label("tally"))
    }

    fn tick(&mut self, _ctx: &MatchContext, d: &mut Dispatcher<'_>, messages: Vec<Inbound>) {
        for m in messages {
            if m.op_code == 1 {
                *self.counts.entry(m.sender.user_id.to_string()).or_default() += 1;
                self.dirty = true;
            }
        }
        if std::mem::take(&mut self.dirty) {
            if let Ok(state) = serde_json::to_vec(self) {
                d.broadcast(2, state, None, None, true);
            }
        }
    }

    fn signal(&mut self, _ctx: &MatchContext, d: &mut Dispatcher<'_>, _data: &str) -> String {
        // "Say where you are": send the tally now, changed or not.
        if let Ok(state) = serde_json::to_vec(self) {
            d.broadcast(2, state, None, None, true);
        }
        String::new()
    }

    fn snapshot(&mut self, _ctx: &MatchContext) -> Option<Vec<u8>> {
        self.snapshots += 1;
        serde_json::to_vec(self).ok()
    }

    fn restore(&mut self, _ctx: &MatchContext, snapshot: &[u8]) -> Result<MatchInit, String> {
        *self = serde_json::from_slice(snapshot).map_err(|e| e.to_string())?;
        self.restored += 1;
        self.dirty = true;
        Ok(MatchInit::new(10).label("tally"))
    }
}

/// The server process (does nothing unless started by a test with [`CHILD`] set).
#[test]
fn server_process() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let mut parts = spec.split('|');
    let (Some(addr), Some(data), Some(certs)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("bad {CHILD}: {spec}");
    };
    let mut config = common::test_config();
    config.listen = addr.parse().expect("addr");
    config.data_dir = data.into();
    config.certs_dir = certs.into();
    config.matches.snapshot_interval = Duration::from_millis(200);
    config.session.shutdown_grace = Duration::from_secs(2);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let server = quicmatch::Server::builder(config)
            .match_handler("tally", Tally::default)
            .rpc("create_tally", |ctx, _| {
                ctx.runtime
                    .create_match("tally", serde_json::Value::Null)
                    .map(|id| id.to_string())
                    .map_err(|e| e.to_string())
            })
            .rpc("show", |ctx, payload| {
                let id: MatchId = payload.parse().map_err(|_| "bad id".to_owned())?;
                ctx.runtime.signal(id, "").map_err(|e| e.to_string())
            })
            .bind()
            .expect("bind");
        println!("READY {} {}", server.local_addr(), server.fingerprint());
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("signal");
            term.recv().await;
        };
        server.serve(stop).await;
        println!("STOPPED");
    });
}

/// A server process and the lines it prints.
struct Process(common::child::Child);

impl Process {
    /// Starts the server; returns it with its address and fingerprint once it is ready.
    fn start(addr: &str, dir: &Path) -> (Self, SocketAddr, String) {
        let spec = format!(
            "{addr}|{}|{}",
            dir.join("data").display(),
            dir.join("certs").display()
        );
        let child = common::child::Child::spawn(CHILD, &spec);
        let (addr, fingerprint) = child.ready(WAIT);
        (Self(child), addr, fingerprint)
    }

    fn wait_for(&self, prefix: &str) -> String {
        self.0.wait_for(prefix, WAIT)
    }

    /// SIGKILL: no goodbye, nothing flushed.
    fn kill(mut self) {
        self.0.process.kill().expect("kill");
        let _ = self.0.process.wait();
    }

    /// SIGTERM, then wait for it to finish.
    fn terminate(mut self) {
        let pid = self.0.process.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        self.wait_for("STOPPED");
        let _ = self.0.process.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.process.kill();
        let _ = self.0.process.wait();
    }
}

async fn player(addr: SocketAddr, fingerprint: &str, name: &str) -> Socket {
    let config = ClientConfig::new(
        addr,
        Trust::pin(fingerprint).expect("pin"),
        Credentials::Device {
            id: format!("device-{name}-restart"),
        },
    )
    .username(name)
    // Longer than any wait here: the players must learn of the restart from the server
    // (a stateless reset after a crash, SERVER_RESTARTING after a planned stop), never
    // from their own idle timeout.
    .idle_timeout(Duration::from_secs(120));
    timeout(WAIT, Socket::connect(config))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// What one player has seen: the newest tally, whether it reconnected, any leave, and
/// party data.
#[derive(Default)]
struct Seen {
    tally: Option<Tally>,
    reconnected: u32,
    /// Why each connection was lost: the close code, or the transport's reason.
    lost: Vec<(Option<quicmatch_client::CloseCode>, String)>,
    leaves: Vec<String>,
    party_data: Vec<String>,
}

/// Takes events until `done` holds, failing after [`WAIT`].
async fn watch(socket: &Socket, seen: &mut Seen, what: &str, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(seen) {
        let event = match tokio::time::timeout_at(deadline, socket.next_event()).await {
            Ok(Some(event)) => event,
            other => panic!("waiting for {what}: {other:?}"),
        };
        match event {
            Event::MatchData(d) if d.op_code == 2 => {
                seen.tally = Some(serde_json::from_slice(&d.data).expect("tally"));
            }
            Event::MatchPresence(p) => {
                seen.leaves
                    .extend(p.leaves.iter().map(|l| l.username.clone()));
            }
            Event::Reconnected { .. } => seen.reconnected += 1,
            Event::Reconnecting { code, reason } => seen.lost.push((code, reason)),
            Event::PartyData { data, .. } => {
                seen.party_data
                    .push(String::from_utf8_lossy(&data).into_owned());
            }
            Event::PartyPresence { leaves, .. } => {
                seen.leaves
                    .extend(leaves.iter().map(|l| l.username.clone()));
            }
            Event::PartyClose { reason, .. } => panic!("{what}: the party closed: {reason}"),
            Event::Disconnected { code, reason } => {
                panic!("{what}: disconnected ({code:?}): {reason}")
            }
            Event::MatchEnded { reason, .. } => panic!("{what}: the match ended: {reason}"),
            _ => {}
        }
    }
}

fn count(seen: &Seen, user: &str) -> u64 {
    seen.tally
        .as_ref()
        .and_then(|t| t.counts.get(user).copied())
        .unwrap_or(0)
}

async fn send_inputs(socket: &Socket, id: MatchId, n: usize) {
    for i in 0..n {
        socket
            .send_match_data(id, 1, format!("input {i}"), true, None)
            .await
            .expect("send input");
    }
}

/// How the players should learn that the server went away.
type Told = fn(&(Option<quicmatch_client::CloseCode>, String)) -> bool;

/// Plays, stops the server with `stop`, starts a new one on the same address and data,
/// and checks the game goes on from its last snapshot with both players resumed, having
/// learned of the restart as `told` says.
async fn survives(stop: fn(Process), told: Told) {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, addr, fingerprint) = Process::start("127.0.0.1:0", dir.path());
    let alice = player(addr, &fingerprint, "alice").await;
    let bob = player(addr, &fingerprint, "bob").await;
    let (a_user, b_user) = (
        alice.session().user_id.to_string(),
        bob.session().user_id.to_string(),
    );
    let (a_session, b_session) = (alice.session().session_id, bob.session().session_id);
    let id: MatchId = alice
        .rpc("create_tally", "")
        .await
        .expect("create")
        .parse()
        .expect("id");
    alice.join_match(id).await.expect("alice joins");
    bob.join_match(id).await.expect("bob joins");
    let party = alice.create_party(true, 4).await.expect("party").party_id;
    bob.join_party(party).await.expect("bob joins the party");
    send_inputs(&alice, id, 30).await;
    send_inputs(&bob, id, 20).await;
    let (mut a_seen, mut b_seen) = (Seen::default(), Seen::default());
    watch(&alice, &mut a_seen, "the tally of the inputs", |s| {
        count(s, &a_user) == 30 && count(s, &b_user) == 20
    })
    .await;
    // A snapshot taken after that tally, and the round after it (so the first one's
    // commit is done): the tally broadcasts only on change, so ask for it.
    let taken = a_seen.tally.as_ref().map_or(0, |t| t.snapshots);
    let deadline = Instant::now() + WAIT;
    loop {
        bob.rpc("show", &id.to_string()).await.expect("show");
        watch(&bob, &mut b_seen, "the tally", |s| s.tally.is_some()).await;
        let now = b_seen.tally.take().map_or(0, |t| t.snapshots);
        if now >= taken + 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no snapshot recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(server);
    let (_server, again, _) = Process::start(&addr.to_string(), dir.path());
    assert_eq!(again, addr);
    // Both resume by themselves; the restored match sends its tally, which continues
    // from the snapshot.
    watch(&alice, &mut a_seen, "alice's resume", |s| {
        s.reconnected == 1
    })
    .await;
    watch(&bob, &mut b_seen, "bob's resume", |s| s.reconnected == 1).await;
    for seen in [&a_seen, &b_seen] {
        assert!(
            seen.lost.len() == 1 && told(&seen.lost[0]),
            "lost the connection as expected: {:?}",
            seen.lost
        );
    }
    assert_eq!(alice.session().session_id, a_session);
    assert_eq!(bob.session().session_id, b_session);
    send_inputs(&alice, id, 5).await;
    send_inputs(&bob, id, 7).await;
    for (socket, seen, who) in [(&alice, &mut a_seen, "alice"), (&bob, &mut b_seen, "bob")] {
        watch(
            socket,
            seen,
            &format!("{who}'s tally after the restart"),
            |s| count(s, &a_user) == 35 && count(s, &b_user) == 27,
        )
        .await;
        let tally = seen.tally.as_ref().expect("tally");
        assert_eq!(tally.restored, 1, "{who}: restored once");
        assert!(
            seen.leaves.is_empty(),
            "{who} saw leaves: {:?}",
            seen.leaves
        );
    }
    // The party came back too, with both members.
    alice
        .send_party_data(party, 9, "still together")
        .await
        .expect("party data after the restart");
    watch(&bob, &mut b_seen, "party data after the restart", |s| {
        s.party_data.iter().any(|d| d == "still together")
    })
    .await;
    assert!(
        b_seen.leaves.is_empty(),
        "bob saw leaves: {:?}",
        b_seen.leaves
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_survives_sigkill_and_both_players_resume() {
    // The restarted server answers the old connections with stateless resets it signs
    // with the same secret, for connection ids it recognizes as its own.
    survives(Process::kill, |(code, reason)| {
        code.is_none() && reason.contains("reset")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_survives_a_planned_restart_and_both_players_resume() {
    survives(Process::terminate, |(code, _)| {
        *code == Some(quicmatch_client::CloseCode::SERVER_RESTARTING)
    })
    .await;
}
