//! The CLI end to end: two `quicmatch-cli` processes play a match through a real server,
//! and the JSON lines follow the documented schema.

use std::{process::Stdio, time::Duration};

use quicmatch::{tls, Config, Server};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
    time::timeout,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(20);

struct Cli {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Cli {
    fn spawn(addr: std::net::SocketAddr, ca: &std::path::Path, device: &str, name: &str) -> Self {
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
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn quicmatch-cli");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            lines,
        }
    }

    async fn send(&mut self, line: &str) {
        self.stdin
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
}

/// Starts a server on port 0 and writes its certificate where `--ca` can read it.
fn start_server(
    dir: &std::path::Path,
    interval: Duration,
) -> (
    std::net::SocketAddr,
    std::path::PathBuf,
    tokio_util::sync::CancellationToken,
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
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..Config::default()
    };
    config.matchmaker.interval = interval;
    let server = Server::builder(config)
        .certificate(material)
        .secret([1u8; 32])
        .bind()
        .expect("bind");
    let addr = server.local_addr();
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(server.serve(async move { token.cancelled().await }));
    (addr, ca, stop)
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

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    b64.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}
