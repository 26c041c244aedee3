//! Server-run matches, listings, labelled and private matches, join metadata and RPCs,
//! end to end: through the CLI (`--json`, and the text output) and through the SDK,
//! against an in-process server with a small `echo` match handler and a few RPCs.

use std::{collections::BTreeMap, process::Stdio, time::Duration};

use quicmatch::{
    runtime::{Dispatcher, Inbound, JoinDecision, MatchContext, MatchHandler, MatchInit, Params},
    tls, Config, Server,
};
use quicmatch_client::{
    ClientConfig, Credentials, ErrorCode, Event, MatchData, MatchId, MatchOptions, Presence,
    RequestError, Socket, Trust,
};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
    time::timeout,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(20);
const ECHO_LABEL: &str = r#"{"mode":"echo"}"#;

/// Echoes every message members send, on its next tick, to every member from the
/// server itself; refuses spies; ends when signalled `end`.
struct Echo;

impl MatchHandler for Echo {
    fn init(&mut self, _ctx: &MatchContext, _params: &Params) -> Result<MatchInit, String> {
        Ok(MatchInit::new(10).label(ECHO_LABEL))
    }

    fn join_attempt(
        &mut self,
        _ctx: &MatchContext,
        _dispatcher: &mut Dispatcher<'_>,
        _presence: &Presence,
        metadata: &BTreeMap<String, String>,
    ) -> JoinDecision {
        if metadata.get("role").is_some_and(|r| r == "spy") {
            JoinDecision::Reject("no spies".into())
        } else {
            JoinDecision::Accept
        }
    }

    fn tick(&mut self, _ctx: &MatchContext, d: &mut Dispatcher<'_>, messages: Vec<Inbound>) {
        for m in messages {
            d.broadcast(m.op_code, m.data, None, None, true);
        }
    }

    fn signal(&mut self, _ctx: &MatchContext, d: &mut Dispatcher<'_>, data: &str) -> String {
        if data == "end" {
            d.end("finished");
            return "ending".into();
        }
        format!("unknown signal {data:?}")
    }
}

/// Starts a server on port 0 with the `echo` handler and the RPCs `create_echo` (returns
/// the new match's id), `fail` (always fails with "nope") and `end_echo` (payload: a
/// match id to signal `end`), and writes its certificate where `--ca` can read it.
fn start_server(
    dir: &std::path::Path,
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
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        // A store of its own, beside the test's certificate.
        data_dir: dir.join("data"),
        ..Config::default()
    };
    let server = Server::builder(config)
        .certificate(material)
        .secret([1u8; 32])
        .match_handler("echo", || Echo)
        .rpc("create_echo", |ctx, _payload| {
            ctx.runtime
                .create_match("echo", Value::Null)
                .map(|id| id.to_string())
                .map_err(|e| e.to_string())
        })
        .rpc("fail", |_ctx, _payload| Err("nope".into()))
        .rpc("end_echo", |ctx, payload| {
            let id: MatchId = payload.parse().map_err(|e| format!("{e}"))?;
            ctx.runtime.signal(id, "end").map_err(|e| e.to_string())
        })
        .bind()
        .expect("bind");
    let addr = server.local_addr();
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(server.serve(async move { token.cancelled().await }));
    (addr, ca, stop)
}

/// Whether `end_echo`'s answer is the handler's: its `signal` returns "ending" after
/// calling `end("finished")`, and a signal that ends its match still gets its reply.
fn end_reply_ok(ok: Option<&str>, error: Option<(&str, &str)>) -> bool {
    ok == Some("ending") && error.is_none()
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

// ---------------------------------------------------------------------------------
// The CLI

struct Cli {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    backlog: Vec<Value>,
}

impl Cli {
    fn spawn(addr: std::net::SocketAddr, ca: &std::path::Path, device: &str, json: bool) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quicmatch-cli"));
        command
            .args(["--server", &addr.to_string(), "--device-id", device])
            .arg("--ca")
            .arg(ca);
        if json {
            command.arg("--json");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn quicmatch-cli");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            lines,
            backlog: Vec::new(),
        }
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write command");
    }

    async fn line(&mut self, what: &str) -> String {
        timeout(TEST_TIMEOUT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("waiting for {what}"))
            .expect("read")
            .unwrap_or_else(|| panic!("cli exited while waiting for {what}"))
    }

    /// The next JSON line of type `ty`; lines of other types seen on the way are kept
    /// for later calls (events and replies can interleave).
    async fn expect(&mut self, ty: &str) -> Value {
        if let Some(i) = self.backlog.iter().position(|v| v["type"] == ty) {
            return self.backlog.remove(i);
        }
        loop {
            let line = self.line(ty).await;
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
            if v["type"] == ty {
                return v;
            }
            self.backlog.push(v);
        }
    }

    /// The next JSON line whose type is one of `types` (others are kept for later).
    async fn expect_any(&mut self, types: &[&str]) -> Value {
        let wanted = |v: &Value| types.iter().any(|t| v["type"] == *t);
        if let Some(i) = self.backlog.iter().position(wanted) {
            return self.backlog.remove(i);
        }
        loop {
            let line = self.line(&types.join(" or ")).await;
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
            if wanted(&v) {
                return v;
            }
            self.backlog.push(v);
        }
    }

    /// Runs a command and returns its error line.
    async fn error(&mut self, command: &str) -> Value {
        self.send(command).await;
        self.expect("error").await
    }

    /// Runs `list ...` and returns the listed matches.
    async fn list(&mut self, flags: &str) -> Vec<Value> {
        self.send(&format!("list {flags}")).await;
        let reply = self.expect("match_list").await;
        reply["matches"]
            .as_array()
            .unwrap_or_else(|| panic!("no matches array in {reply}"))
            .clone()
    }

    async fn quit(mut self) {
        self.send("quit").await;
        let status = timeout(TEST_TIMEOUT, self.child.wait())
            .await
            .expect("waiting for exit")
            .expect("exit");
        assert!(status.success(), "{status}");
    }
}

fn listed<'a>(matches: &'a [Value], id: &str) -> Option<&'a Value> {
    matches.iter().find(|m| m["match_id"] == id)
}

#[tokio::test]
async fn cli_plays_a_server_run_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path());
    let mut cli = Cli::spawn(addr, &ca, "device-cli-runtime", true);
    cli.expect("session").await;

    cli.send("rpc create_echo").await;
    let reply = cli.expect("rpc").await;
    assert_eq!(reply["id"], "create_echo");
    let id = reply["payload"].as_str().expect("payload").to_owned();
    assert!(id.parse::<MatchId>().is_ok(), "{id}");

    let all = cli.list("--authoritative").await;
    let m = listed(&all, &id).unwrap_or_else(|| panic!("{id} not in {all:?}"));
    assert_eq!(m["authoritative"], true);
    assert_eq!(m["label"], ECHO_LABEL);
    assert_eq!(m["handler"], "echo");
    assert_eq!(m["tick_rate"], 10);
    assert_eq!(m["size"], 0);
    assert!(m["max_size"].as_u64().is_some_and(|n| n >= 2), "{m}");
    let found = cli.list("--query '+label.mode:echo'").await;
    assert!(listed(&found, &id).is_some(), "{found:?}");
    assert!(cli.list("--query '+label.mode:duel'").await.is_empty());
    assert!(cli.list("--relayed").await.is_empty());
    assert!(cli.list("--min 1").await.is_empty(), "the match is empty");

    let err = cli.error(&format!("join {id} --metadata role=spy")).await;
    assert_eq!(err["code"], "MATCH_JOIN_REJECTED");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("no spies")),
        "{err}"
    );
    cli.send(&format!(
        "join {id} --metadata role=pilot --metadata team=blue"
    ))
    .await;
    let joined = cli.expect("match").await;
    assert_eq!(joined["match_id"], id.as_str());
    assert_eq!(joined["size"], 1);
    let full = cli.list("--authoritative --min 1").await;
    assert_eq!(
        listed(&full, &id).map(|m| m["size"].clone()),
        Some(1.into())
    );

    cli.send(&format!("send {id} 1 hi --reliable")).await;
    let data = cli.expect("match_data").await;
    assert_eq!(data["match_id"], id.as_str());
    assert_eq!(data["from_server"], true);
    assert_eq!(data["data"], "hi");
    assert_eq!(data["op_code"], 1);
    assert_eq!(data["reliable"], true);
    cli.send(&format!("send {id} 2 datagram")).await;
    let data = cli.expect("match_data").await;
    assert_eq!(data["from_server"], true);
    assert_eq!(data["data"], "datagram");

    let err = cli.error("rpc fail").await;
    assert_eq!(err["code"], "RUNTIME_FUNCTION_EXCEPTION");
    assert_eq!(err["message"], "nope");
    let err = cli.error("rpc nothing '{}'").await;
    assert_eq!(err["code"], "RUNTIME_FUNCTION_NOT_FOUND");
    let err = cli.error("rpc create_echo one two").await;
    assert_eq!(err["code"], "BAD_INPUT");

    cli.send(&format!("rpc end_echo {id}")).await;
    let ended = cli.expect("match_ended").await;
    assert_eq!(ended["match_id"], id.as_str());
    assert_eq!(ended["reason"], "finished");
    let reply = cli.expect_any(&["rpc", "error"]).await;
    assert!(
        end_reply_ok(
            reply["payload"].as_str(),
            reply["code"].as_str().zip(reply["message"].as_str())
        ),
        "{reply}"
    );
    assert!(cli.list("").await.is_empty());
    let err = cli.error(&format!("send {id} 1 late")).await;
    assert_eq!(err["code"], "NOT_MATCH_MEMBER", "the CLI forgot the match");

    cli.quit().await;
    stop.cancel();
}

#[tokio::test]
async fn cli_creates_labelled_and_private_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path());
    let mut alice = Cli::spawn(addr, &ca, "device-cli-create-a", true);
    let mut bob = Cli::spawn(addr, &ca, "device-cli-create-b", true);
    alice.expect("session").await;
    bob.expect("session").await;

    alice
        .send(r#"create lobby --label '{"mode":"casual"}' --max-size 2 --private"#)
        .await;
    let lobby = alice.expect("match").await;
    assert_eq!(lobby["size"], 1);
    let lobby_id = lobby["match_id"].as_str().expect("id").to_owned();
    alice.send("create open --label x --max-size 3").await;
    let open = alice.expect("match").await;
    let open_id = open["match_id"].as_str().expect("id").to_owned();
    assert_ne!(lobby_id, open_id);
    alice.send("create").await;
    let plain_id = alice.expect("match").await["match_id"]
        .as_str()
        .expect("id")
        .to_owned();

    let relayed = bob.list("--relayed").await;
    assert!(listed(&relayed, &lobby_id).is_none(), "private is listed");
    let m = listed(&relayed, &open_id).unwrap_or_else(|| panic!("{relayed:?}"));
    assert_eq!(m["max_size"], 3);
    assert_eq!(m["label"], "x");
    assert_eq!(m["size"], 1);
    assert_eq!(m["authoritative"], false);
    assert_eq!(m["tick_rate"], 0);
    assert_eq!(m["handler"], "");
    assert!(listed(&relayed, &plain_id).is_some(), "{relayed:?}");
    let by_label = bob.list("--label x").await;
    assert_eq!(by_label.len(), 1, "{by_label:?}");
    assert!(bob.list("--query '+label.mode:casual'").await.is_empty());
    assert!(bob.list("--authoritative").await.is_empty());
    assert_eq!(bob.list("--limit 1").await.len(), 1);
    assert_eq!(bob.list("--max 0").await.len(), 0);

    // Private: never listed, but joinable by id, up to its size.
    bob.send(&format!("join {lobby_id}")).await;
    assert_eq!(bob.expect("match").await["size"], 2);
    let mut carol = Cli::spawn(addr, &ca, "device-cli-create-c", true);
    carol.expect("session").await;
    let err = carol.error(&format!("join {lobby_id}")).await;
    assert_eq!(err["code"], "MATCH_JOIN_REJECTED");
    // A relayed match takes (and ignores) metadata.
    carol
        .send(&format!("join {open_id} --metadata role=spy"))
        .await;
    assert_eq!(carol.expect("match").await["size"], 2);

    for (command, code) in [
        ("list --limit 0", "BAD_INPUT"),
        ("list --min 3 --max 1", "BAD_INPUT"),
        ("list --bogus", "BAD_INPUT"),
        ("list --query '+label.mode:\"open'", "BAD_INPUT"),
        ("create --max-size 1", "BAD_INPUT"),
        ("create --label", "BAD_INPUT"),
        ("create one two", "BAD_INPUT"),
        ("create --sideways", "BAD_INPUT"),
        (
            "join 00000000-0000-0000-0000-000000000000 --metadata novalue",
            "BAD_INPUT",
        ),
    ] {
        let err = carol.error(command).await;
        assert_eq!(err["code"], code, "{command}: {err}");
    }
    let long = "l".repeat(quicmatch_protocol::MAX_LABEL_LEN + 1);
    assert_eq!(
        carol.error(&format!("create --label {long}")).await["code"],
        "BAD_INPUT"
    );

    for cli in [alice, bob, carol] {
        cli.quit().await;
    }
    stop.cancel();
}

/// The text output of the new commands and events.
#[tokio::test]
async fn cli_text_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path());
    let mut cli = Cli::spawn(addr, &ca, "device-cli-text", false);
    assert!(cli.line("session").await.starts_with("connected as "));

    cli.send("list").await;
    assert_eq!(cli.line("empty listing").await, "no matches");
    cli.send("rpc create_echo").await;
    let line = cli.line("rpc reply").await;
    let id = line
        .strip_prefix("rpc create_echo: ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    cli.send("list --authoritative").await;
    assert_eq!(
        cli.line("listing").await,
        format!("match {id} server-run (echo at 10 Hz) size 0/64 label {ECHO_LABEL}")
    );
    cli.send(&format!("join {id} --metadata role=pilot")).await;
    assert!(cli
        .line("join")
        .await
        .starts_with(&format!("match {id} size 1")));
    cli.send(&format!("send {id} 3 hello --reliable")).await;
    let line = cli.line("echo").await;
    assert!(
        line.starts_with(&format!("data {id} from server op 3 ")) && line.ends_with(": hello"),
        "{line:?}"
    );
    cli.send(&format!("rpc end_echo {id}")).await;
    // Two lines, in either order: the event and the RPC's answer.
    let lines = [cli.line("match end").await, cli.line("rpc answer").await];
    assert!(
        lines.contains(&format!("match {id} ended: finished")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "rpc end_echo: ending"),
        "{lines:?}"
    );
    cli.send("help").await;
    let help = cli.line("help").await;
    assert_eq!(help, "commands:");
    let mut help_lines = Vec::new();
    while !help_lines.iter().any(|l: &String| l.contains("quit")) {
        help_lines.push(cli.line("help text").await);
    }
    let help = help_lines.join("\n");
    for usage in [
        "create [NAME] [--label L] [--max-size N] [--private]",
        "join MATCH_ID [--metadata K=V]...",
        "list [--authoritative|--relayed] [--query Q] [--label L] [--min N] [--max N] [--limit N]",
        "rpc NAME [PAYLOAD]",
    ] {
        assert!(help.contains(usage), "{usage} missing from\n{help}");
    }
    cli.quit().await;
    stop.cancel();
}

// ---------------------------------------------------------------------------------
// The SDK

async fn connect(addr: std::net::SocketAddr, ca: &std::path::Path, tag: &str) -> Socket {
    let config = ClientConfig::new(
        addr,
        Trust::CaFile(ca.to_owned()),
        Credentials::Device {
            id: format!("device-sdk-{tag}"),
        },
    )
    .username(tag);
    Socket::connect(config).await.expect("connect")
}

/// The first event `pick` accepts, within [`TEST_TIMEOUT`].
async fn wait_for<T>(socket: &Socket, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, socket.next_event()).await {
            Err(_) => panic!("timed out waiting for {what}"),
            Ok(None) => panic!("disconnected waiting for {what}"),
            Ok(Some(Event::Disconnected { reason, .. })) => {
                panic!("disconnected waiting for {what}: {reason}")
            }
            Ok(Some(event)) => {
                if let Some(found) = pick(event) {
                    return found;
                }
            }
        }
    }
}

async fn echo_data(socket: &Socket, match_id: MatchId) -> MatchData {
    wait_for(socket, "echoed data", |e| match e {
        Event::MatchData(d) if d.match_id == match_id => Some(d),
        _ => None,
    })
    .await
}

fn server_code(result: Result<impl std::fmt::Debug, RequestError>) -> (ErrorCode, String) {
    match result {
        Err(RequestError::Server { code, message }) => (code, message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn sdk_rpc_and_list_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path());
    let socket = connect(addr, &ca, "lister").await;

    let id: MatchId = socket
        .rpc("create_echo", "")
        .await
        .expect("rpc")
        .parse()
        .expect("a match id");
    let all = socket.list_matches().await.expect("list");
    assert_eq!(all.len(), 1, "{all:?}");
    let m = &all[0];
    assert_eq!(m.match_id, id);
    assert!(m.authoritative);
    assert_eq!(m.label.as_deref(), Some(ECHO_LABEL));
    assert_eq!((m.size, m.tick_rate, m.handler.as_str()), (0, 10, "echo"));

    let listing = socket.list_matches();
    assert_eq!(listing.request().limit, 10, "default limit");
    let found = socket
        .list_matches()
        .limit(5)
        .authoritative(true)
        .label(ECHO_LABEL)
        .max_size(4)
        .query("+label.mode:echo")
        .await
        .expect("list");
    assert_eq!(found.len(), 1);
    for empty in [
        socket.list_matches().authoritative(false).send().await,
        socket.list_matches().min_size(1).send().await,
        socket.list_matches().label("echo").send().await,
        socket
            .list_matches()
            .query("+label.mode:other")
            .send()
            .await,
    ] {
        assert_eq!(empty.expect("list"), Vec::new());
    }
    // A second one; `limit` bounds the listing.
    socket.rpc("create_echo", "{}").await.expect("rpc");
    assert_eq!(socket.list_matches().await.expect("list").len(), 2);
    assert_eq!(socket.list_matches().limit(1).await.expect("list").len(), 1);

    // Checked before sending.
    for bad in [
        socket.list_matches().limit(0).send().await,
        socket.list_matches().limit(101).send().await,
        socket.list_matches().min_size(2).max_size(1).send().await,
        socket.list_matches().label("l".repeat(2049)).send().await,
    ] {
        assert_eq!(server_code(bad).0, ErrorCode::BAD_INPUT);
    }
    // Checked by the server.
    let (code, message) = server_code(socket.list_matches().query("+label.mode:\"open").await);
    assert_eq!(code, ErrorCode::BAD_INPUT);
    assert!(message.contains("query"), "{message}");

    let (code, message) = server_code(socket.rpc("fail", "x").await);
    assert_eq!(
        (code, message.as_str()),
        (ErrorCode::RUNTIME_FUNCTION_EXCEPTION, "nope")
    );
    let (code, _) = server_code(socket.rpc("nothing", "").await);
    assert_eq!(code, ErrorCode::RUNTIME_FUNCTION_NOT_FOUND);
    let big = "x".repeat(quicmatch_protocol::MAX_RPC_PAYLOAD + 1);
    let (code, _) = server_code(socket.rpc("create_echo", &big).await);
    assert_eq!(code, ErrorCode::PAYLOAD_TOO_LARGE);
    let (code, _) = server_code(socket.rpc("", "").await);
    assert_eq!(code, ErrorCode::BAD_INPUT);
    let (code, _) = server_code(
        socket
            .rpc(&"r".repeat(quicmatch_protocol::MAX_RPC_ID_LEN + 1), "")
            .await,
    );
    assert_eq!(code, ErrorCode::BAD_INPUT);
    // Still connected after all that.
    socket.ping().await.expect("ping");
    stop.cancel();
}

#[tokio::test]
async fn sdk_join_match_with_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path());
    let socket = connect(addr, &ca, "joiner").await;
    let other = connect(addr, &ca, "watcher").await;
    let id: MatchId = socket
        .rpc("create_echo", "")
        .await
        .expect("rpc")
        .parse()
        .expect("id");

    let spy = BTreeMap::from([("role".to_owned(), "spy".to_owned())]);
    let (code, message) = server_code(socket.join_match_with(id, spy).await);
    assert_eq!(code, ErrorCode::MATCH_JOIN_REJECTED);
    assert_eq!(message, "no spies");
    assert!(socket.match_presences(id).is_none());

    let pilot = BTreeMap::from([("role".to_owned(), "pilot".to_owned())]);
    let m = socket
        .join_match_with(id, pilot.clone())
        .await
        .expect("join");
    assert_eq!((m.match_id, m.size), (id, 1));
    assert_eq!(m.self_presence, socket.presence());
    // Joining again changes nothing.
    assert_eq!(
        socket.join_match_with(id, pilot).await.expect("again").size,
        1
    );
    // Plain join_match goes through join_attempt with no metadata.
    assert_eq!(other.join_match(id).await.expect("join").size, 2);
    let listed = socket.list_matches().min_size(2).await.expect("list");
    assert_eq!(listed.iter().map(|m| m.size).collect::<Vec<_>>(), [2]);

    socket
        .send_match_data(id, 4, b"hi".to_vec(), true, None)
        .await
        .expect("send");
    for s in [&socket, &other] {
        let data = echo_data(s, id).await;
        assert!(data.from_server(), "{data:?}");
        assert_eq!(
            (data.op_code, &data.data[..], data.reliable),
            (4, &b"hi"[..], true)
        );
        assert!(data.sender.username.is_empty());
    }
    socket
        .send_match_data(id, 5, b"dgram".to_vec(), false, None)
        .await
        .expect("send");
    let data = echo_data(&socket, id).await;
    assert!(data.from_server());
    assert_eq!(&data.data[..], b"dgram");

    // Checked before sending.
    let too_many: BTreeMap<String, String> = (0..=quicmatch_protocol::MAX_METADATA_ENTRIES)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let empty_key = BTreeMap::from([(String::new(), "v".to_owned())]);
    let long_value = BTreeMap::from([(
        "k".to_owned(),
        "v".repeat(quicmatch_protocol::MAX_PROPERTY_VALUE_LEN + 1),
    )]);
    for metadata in [too_many, empty_key, long_value] {
        let (code, _) = server_code(other.join_match_with(id, metadata).await);
        assert_eq!(code, ErrorCode::BAD_INPUT);
    }
    let (code, _) = server_code(
        other
            .join_match_with(MatchId(uuid_nil()), BTreeMap::new())
            .await,
    );
    assert_eq!(code, ErrorCode::MATCH_NOT_FOUND);
    stop.cancel();
}

fn uuid_nil() -> uuid::Uuid {
    uuid::Uuid::nil()
}

#[tokio::test]
async fn sdk_create_match_with_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path());
    let alice = connect(addr, &ca, "creator").await;
    let bob = connect(addr, &ca, "second").await;
    let carol = connect(addr, &ca, "third").await;

    let options = MatchOptions::default()
        .label(r#"{"mode":"casual"}"#)
        .max_size(2)
        .private(true);
    assert_eq!(
        (options.label.as_deref(), options.max_size, options.private),
        (Some(r#"{"mode":"casual"}"#), Some(2), true)
    );
    let lobby = alice
        .create_match_with(Some("lobby"), options.clone())
        .await
        .expect("create");
    assert_eq!(lobby.size, 1);
    // Same name: joined as it is.
    let again = bob
        .create_match_with(Some("lobby"), options)
        .await
        .expect("join-or-create");
    assert_eq!((again.match_id, again.size), (lobby.match_id, 2));
    let (code, _) = server_code(carol.join_match(lobby.match_id).await);
    assert_eq!(code, ErrorCode::MATCH_JOIN_REJECTED, "full at 2");

    let open = alice
        .create_match_with(None, MatchOptions::default().label("x").max_size(3))
        .await
        .expect("create");
    let listed = carol
        .list_matches()
        .authoritative(false)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "private lobby listed: {listed:?}");
    assert_eq!(listed[0].match_id, open.match_id);
    assert_eq!(
        (
            listed[0].label.as_deref(),
            listed[0].size,
            listed[0].max_size
        ),
        (Some("x"), 1, 3)
    );
    assert!(carol
        .list_matches()
        .query("+label.mode:casual")
        .await
        .expect("list")
        .is_empty());
    // Plain create_match still works, with the server's size.
    let plain = carol.create_match(None).await.expect("create");
    let listed = alice.list_matches().label("x").await.expect("list");
    assert_eq!(listed.len(), 1);
    let all = alice.list_matches().await.expect("list");
    assert!(all
        .iter()
        .any(|m| m.match_id == plain.match_id && m.max_size == 64));

    // Checked before sending.
    let (code, _) = server_code(
        alice
            .create_match_with(
                None,
                MatchOptions::default().label("l".repeat(quicmatch_protocol::MAX_LABEL_LEN + 1)),
            )
            .await,
    );
    assert_eq!(code, ErrorCode::BAD_INPUT);
    let (code, _) = server_code(
        alice
            .create_match_with(None, MatchOptions::default().max_size(1))
            .await,
    );
    assert_eq!(code, ErrorCode::BAD_INPUT);
    // Checked by the server (its matches.max_size is 64).
    let (code, _) = server_code(
        alice
            .create_match_with(None, MatchOptions::default().max_size(65))
            .await,
    );
    assert_eq!(code, ErrorCode::BAD_INPUT);
    stop.cancel();
}

#[tokio::test]
async fn sdk_match_ended_by_its_handler() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path());
    let socket = connect(addr, &ca, "ender").await;
    let id: MatchId = socket
        .rpc("create_echo", "")
        .await
        .expect("rpc")
        .parse()
        .expect("id");
    socket.join_match(id).await.expect("join");
    assert!(socket.match_presences(id).is_some());

    let reply = socket.rpc("end_echo", &id.to_string()).await;
    assert!(
        match &reply {
            Ok(payload) => end_reply_ok(Some(payload), None),
            Err(RequestError::Server { code, message }) =>
                end_reply_ok(None, Some((&code.to_string(), message))),
            Err(_) => false,
        },
        "{reply:?}"
    );
    let (match_id, reason) = wait_for(&socket, "MatchEnded", |e| match e {
        Event::MatchEnded { match_id, reason } => Some((match_id, reason)),
        _ => None,
    })
    .await;
    assert_eq!((match_id, reason.as_str()), (id, "finished"));
    assert!(socket.match_presences(id).is_none(), "the SDK forgot it");
    assert!(socket.list_matches().await.expect("list").is_empty());
    let (code, _) = server_code(socket.join_match(id).await);
    assert_eq!(code, ErrorCode::MATCH_NOT_FOUND);
    let (code, _) = server_code(
        socket
            .send_match_data(id, 1, b"late".to_vec(), false, None)
            .await,
    );
    assert_eq!(code, ErrorCode::NOT_MATCH_MEMBER);
    stop.cancel();
}
