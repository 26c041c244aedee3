//! What an operator touches, through the real `quicmatch` binary: the HTTP endpoints
//! beside the metrics (`/metrics`, `/healthz`, `/readyz`), JSON logs, the effective config
//! logged without its secrets, `QUICMATCH_*` variables for every key, and paths in a
//! config file relative to the file.

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// Every wait in these tests is bounded by this (the binary is a debug build).
const TIMEOUT: Duration = Duration::from_secs(30);
/// Between two polls of a condition.
const POLL: Duration = Duration::from_millis(50);

/// Reads a child's lines on a thread, so the test waits on them with a timeout.
fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running `quicmatch`, killed when dropped (a failing test included).
struct Quicmatch {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every stdout line read so far.
    out: Vec<String>,
    /// Every stderr line read so far by [`Quicmatch::err_line`].
    err: Vec<String>,
    _data: tempfile::TempDir,
}

impl Quicmatch {
    fn start<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)], cwd: Option<&Path>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quicmatch"));
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Only what the test sets.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("QUICMATCH_") {
                command.env_remove(name);
            }
        }
        // A store of its own unless the test names one (restart records would
        // otherwise land in the working directory's `data/`).
        let data = tempfile::tempdir().expect("data dir");
        if !env.iter().any(|(k, _)| *k == "QUICMATCH_DATA_DIR") {
            command.env("QUICMATCH_DATA_DIR", data.path());
        }
        command.envs(env.iter().copied());
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        let mut child = command.spawn().expect("spawn quicmatch");
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        Self {
            _data: data,
            child,
            stdout,
            stderr,
            out: Vec::new(),
            err: Vec::new(),
        }
    }

    /// Reads stdout until a line satisfies `want`, and returns it.
    fn line(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        read_until(&self.stdout, &mut self.out, "stdout", what, want)
    }

    /// Reads stderr until a line satisfies `want`, and returns it.
    fn err_line(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        read_until(&self.stderr, &mut self.err, "stderr", what, want)
    }

    /// Waits for the process to exit on its own, and returns how, with its stderr.
    fn exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "quicmatch did not exit");
            std::thread::sleep(POLL);
        };
        // The pipe closes with the process: read it to its end.
        let mut stderr = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(TIMEOUT) {
            stderr.push(line);
        }
        (status, stderr.join("\n"))
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

/// Reads `lines` (keeping each in `seen`) until one satisfies `want`, and returns it.
fn read_until(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    stream: &str,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if want(&line) {
                    return line;
                }
            }
            Err(e) => panic!("no {what} on {stream} ({e}); got:\n{}", seen.join("\n")),
        }
    }
}

impl Drop for Quicmatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Sends `request` as is and reads the whole answer: its status and body.
fn http(addr: SocketAddr, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {answer:?}")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Polls `path` until it answers `status`, and returns the body.
fn wait_for(addr: SocketAddr, path: &str, status: u16) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = get(addr, path);
        match &got {
            Ok((s, body)) if *s == status => return body.clone(),
            _ if Instant::now() > deadline => panic!("{path} never answered {status}: {got:?}"),
            _ => std::thread::sleep(POLL),
        }
    }
}

#[test]
fn the_http_endpoints_answer_and_outlive_hostile_clients() {
    let certs = tempfile::tempdir().expect("tempdir");
    let metrics = free_port();
    let mut server = Quicmatch::start(
        &[
            OsStr::new("serve"),
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--metrics"),
            OsStr::new(&metrics.to_string()),
            OsStr::new("--server-key"),
            OsStr::new("sekrit-key-123"),
            OsStr::new("--certs-dir"),
            certs.path().as_os_str(),
        ],
        &[],
        None,
    );

    assert_eq!(wait_for(metrics, "/healthz", 200), "ok\n");
    wait_for(metrics, "/readyz", 200);

    let (status, body) = get(metrics, "/metrics").expect("/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# HELP quicmatch_sessions "), "{body}");
    assert!(
        body.contains("# TYPE quicmatch_slow_consumer_closes_total counter"),
        "{body}"
    );
    assert!(
        body.lines()
            .any(|l| l == "quicmatch_slow_consumer_closes_total 0"),
        "{body}"
    );
    assert_eq!(get(metrics, "/metrics?name=x").expect("query").0, 200);
    assert_eq!(get(metrics, "/nope").expect("/nope").0, 404);
    assert_eq!(get(metrics, "/").expect("/").0, 404);
    let post = http(
        metrics,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.expect("POST").0, 405);

    // Hostile clients: garbage, a head that never ends, an endless line, silence. Each
    // gets an error or a close (the server may reset what it did not read: ignore how
    // the write or read ends), and none stops the listener.
    let garbage = http(metrics, b"\x16\x03\x01\x02\x00\xff\xfe garbage\r\n\r\n");
    assert_eq!(garbage.expect("garbage").0, 400);
    let _ = http(metrics, &vec![b'A'; 64 * 1024]);
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b"X-Pad: yyyyyyyyyyyyyyyy\r\n".as_slice(), 1000).flatten());
    huge.extend_from_slice(b"\r\n");
    if let Ok((status, _)) = http(metrics, &huge) {
        assert_eq!(status, 431);
    }
    let silent = TcpStream::connect(metrics).expect("connect");
    let mut partial = TcpStream::connect(metrics).expect("connect");
    partial.write_all(b"GET /heal").expect("partial");
    let closed = TcpStream::connect(metrics).expect("connect");
    drop(closed);

    assert_eq!(get(metrics, "/healthz").expect("/healthz").0, 200);
    assert_eq!(get(metrics, "/readyz").expect("/readyz").0, 200);
    drop((silent, partial));
    assert_eq!(wait_for(metrics, "/healthz", 200), "ok\n");
    assert!(server.running(), "quicmatch exited");

    // The effective config is logged, with the key it was given redacted.
    let config = server.line("the effective config", |l| l.contains("effective config"));
    assert!(config.contains("<redacted>"), "{config}");
    server.line("the banner", |l| l.contains("quicmatch ready on"));
    for line in &server.out {
        assert!(
            !line.contains("sekrit-key-123"),
            "the key is logged: {line}"
        );
    }
}

#[test]
fn json_logs_carry_the_effective_config_without_secrets() {
    let certs = tempfile::tempdir().expect("tempdir");
    let secret = "ab".repeat(32);
    let mut server = Quicmatch::start(
        &[
            OsStr::new("serve"),
            OsStr::new("--log-format"),
            OsStr::new("json"),
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--server-key"),
            OsStr::new("sekrit-key-123"),
            OsStr::new("--certs-dir"),
            certs.path().as_os_str(),
        ],
        &[
            ("QUICMATCH_SESSION__IDLE_TIMEOUT", "3s"),
            ("QUICMATCH_SESSION__ENCRYPTION_KEY", &secret),
            ("QUICMATCH_MATCHES__MAX_SIZE", "8"),
            // Nothing listens there: the node keeps trying in the background.
            (
                "QUICMATCH_CLUSTER__URL",
                "nats://qm:natspass-456@127.0.0.1:1",
            ),
        ],
        None,
    );
    // The logs are JSON lines on stderr; stdout is left to the banner.
    server.err_line("the ready event", |l| l.contains("quicmatch ready"));
    let events: Vec<serde_json::Value> = server
        .err
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for (event, line) in events.iter().zip(&server.err) {
        assert!(event.get("level").is_some_and(|l| l.is_string()), "{line}");
        assert!(
            !line.contains("sekrit-key-123"),
            "the key is logged: {line}"
        );
        assert!(!line.contains(&secret), "the secret is logged: {line}");
        assert!(
            !line.contains("natspass-456"),
            "the NATS password is logged: {line}"
        );
    }
    let logged = events
        .iter()
        .find(|e| e["fields"]["message"] == "effective config")
        .unwrap_or_else(|| panic!("no effective config in {:?}", server.err));
    let config: serde_json::Value = serde_json::from_str(
        logged["fields"]["config"]
            .as_str()
            .expect("the config as a string"),
    )
    .expect("the config is JSON");
    assert_eq!(config["server_key"], "<redacted>", "{config}");
    assert_eq!(
        config["session"]["encryption_key"], "<redacted>",
        "{config}"
    );
    assert_eq!(
        config["cluster"]["url"], "nats://qm:***@127.0.0.1:1",
        "{config}"
    );
    // The variables were applied.
    assert_eq!(config["session"]["idle_timeout"], "3s", "{config}");
    assert_eq!(config["matches"]["max_size"], 8, "{config}");

    // The banner is for people: on stdout, whatever the log format, and nothing else is.
    server.line("the banner", |l| l.contains("quicmatch ready on"));
    server.line("the banner's command", |l| {
        l.trim_start().starts_with("quicmatch-cli --server")
    });
    for line in &server.out {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_err(),
            "a log line on stdout: {line}"
        );
    }
}

#[test]
fn environment_variables_are_validated_and_named() {
    let certs = tempfile::tempdir().expect("tempdir");
    let args = [
        OsStr::new("serve"),
        OsStr::new("--listen"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--certs-dir"),
        certs.path().as_os_str(),
    ];

    let (status, stderr) =
        Quicmatch::start(&args, &[("QUICMATCH_MATCHES__MAX_SIZE", "1")], None).exit();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("matches.max_size"), "{stderr}");

    let (status, stderr) =
        Quicmatch::start(&args, &[("QUICMATCH_SESSION__NOPE", "1")], None).exit();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("QUICMATCH_SESSION__NOPE"), "{stderr}");

    let (status, stderr) =
        Quicmatch::start(&args, &[("QUICMATCH_SOCKET_BUFFER", "lots")], None).exit();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("QUICMATCH_SOCKET_BUFFER"), "{stderr}");
}

#[test]
fn paths_in_a_config_file_are_relative_to_the_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let conf = root.path().join("conf");
    let work = root.path().join("work");
    std::fs::create_dir_all(&conf).expect("conf dir");
    std::fs::create_dir_all(&work).expect("work dir");
    std::fs::write(
        conf.join("quicmatch.toml"),
        "listen = \"127.0.0.1:0\"\ncerts_dir = \"mycerts\"\n",
    )
    .expect("write config");
    // A relative --config is relative to the working directory; what is in it, to it.
    let mut server = Quicmatch::start(
        &["serve", "--config", "../conf/quicmatch.toml"],
        &[],
        Some(&work),
    );
    server.line("the banner", |l| l.contains("quicmatch ready on"));
    assert!(
        conf.join("mycerts").is_dir(),
        "no {}",
        conf.join("mycerts").display()
    );
    assert!(
        std::fs::read_dir(conf.join("mycerts"))
            .expect("read mycerts")
            .next()
            .is_some(),
        "nothing generated in mycerts"
    );
    assert!(
        !work.join("mycerts").exists(),
        "certs_dir resolved against the working directory"
    );
}

/// `/readyz` says whether sessions are accepted: 503 once the server is bound but not
/// yet serving, 200 while it serves, 503 again once it has shut down (while `/healthz`
/// stays 200: the process is alive). In process, so each state is held as long as the
/// test looks at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_unless_the_server_is_accepting_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = free_port();
    let config = quicmatch::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        certs_dir: dir.path().join("certs"),
        data_dir: dir.path().join("data"),
        metrics: Some(metrics),
        advertise: false,
        ..quicmatch::Config::default()
    };
    // The HTTP calls block: off the runtime, which serves the listener.
    let ask = |path: &'static str| async move {
        tokio::task::spawn_blocking(move || get(metrics, path))
            .await
            .expect("the request's thread")
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };

    let server = quicmatch::Server::builder(config).bind().expect("bind");
    assert_eq!(ask("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(ask("/readyz").await, (503, "not ready\n".to_owned()));

    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    let serving = tokio::spawn(server.serve(async move { token.cancelled().await }));
    let ready = tokio::task::spawn_blocking(move || wait_for(metrics, "/readyz", 200))
        .await
        .expect("the polling thread");
    assert_eq!(ready, "ready\n");

    stop.cancel();
    tokio::time::timeout(TIMEOUT, serving)
        .await
        .expect("the server stops in time")
        .expect("serve");
    assert_eq!(ask("/readyz").await, (503, "not ready\n".to_owned()));
    assert_eq!(ask("/healthz").await, (200, "ok\n".to_owned()));
}

/// A client with the wrong server key is refused, and the refusal is logged at `info`
/// with its reason, and with neither the server's key nor the one the client tried.
#[test]
fn a_failed_authentication_is_logged_at_info_with_its_reason_and_no_key() {
    use quicmatch_client::{ClientConfig, CloseCode, Credentials, Socket, Trust};
    let certs = tempfile::tempdir().expect("tempdir");
    let mut server = Quicmatch::start(
        &[
            OsStr::new("serve"),
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--server-key"),
            OsStr::new("sekrit-key-123"),
            OsStr::new("--certs-dir"),
            certs.path().as_os_str(),
        ],
        &[],
        None,
    );
    let ready = server.line("the banner", |l| l.starts_with("quicmatch ready on "));
    let addr: SocketAddr = ready
        .strip_prefix("quicmatch ready on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {ready:?}"));
    let fingerprint = server.line("the fingerprint", |l| {
        l.trim().starts_with("certificate fingerprint (SHA-256): ")
    });
    let fingerprint = fingerprint
        .trim()
        .trim_start_matches("certificate fingerprint (SHA-256): ")
        .to_owned();

    let config = ClientConfig::new(
        addr,
        Trust::pin(&fingerprint).expect("a pin"),
        Credentials::Device {
            id: "device-wrong-key-1".into(),
        },
    )
    .server_key("wrong-key-456");
    let err = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async { tokio::time::timeout(TIMEOUT, Socket::connect(config)).await })
        .expect("refused in time")
        .err()
        .expect("the wrong key is refused");
    assert_eq!(
        err.close_code().map(|(code, _)| code),
        Some(CloseCode::AUTH_FAILED),
        "{err}"
    );

    let logged = server.line("the failed authentication", |l| {
        l.contains("authentication failed")
    });
    assert!(logged.contains(" INFO "), "not at info: {logged}");
    assert!(logged.contains("invalid server key"), "no reason: {logged}");
    for line in server.out.iter().chain([&logged]) {
        for key in ["sekrit-key-123", "wrong-key-456"] {
            assert!(!line.contains(key), "a key is logged: {line}");
        }
    }
}
