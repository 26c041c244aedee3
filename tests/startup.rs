//! The first minute: the binary's banner on stdout whatever the log level, the default
//! key warning, and dual-stack listening (one `[::]` socket serves IPv4 and IPv6 clients).

mod common;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::TEST_TIMEOUT;
use quicmatch::{tls, Server};
use quicmatch_client::{quinn, ClientConfig, ConnectError, Credentials, Socket, Trust};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Reads the child's lines on a thread, so the test waits on them with a timeout.
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

/// The binary serving on every IPv4 interface (not advertised), with this log filter;
/// its stdout (banner and logs) as lines. Keep the tempdir alive while it runs.
fn serve_reachable(
    log: &str,
) -> (
    std::process::Child,
    mpsc::Receiver<String>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_quicmatch"))
        .args([
            "serve",
            "--no-advertise",
            "--listen",
            "0.0.0.0:0",
            "--certs-dir",
        ])
        .arg(dir.path())
        .env("QUICMATCH_DATA_DIR", dir.path().join("data"))
        .env("RUST_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn quicmatch");
    let stdout = lines(child.stdout.take().expect("stdout"));
    (child, stdout, dir)
}

#[test]
fn the_banner_says_where_and_how_to_connect_even_when_logs_are_off() {
    let (mut child, stdout, _dir) = serve_reachable("off");
    let mut banner = Vec::new();
    while !banner
        .iter()
        .any(|l: &String| l.contains("quicmatch-cli --server"))
    {
        match stdout.recv_timeout(TEST_TIMEOUT) {
            Ok(line) => banner.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("no banner ({e}); got {banner:?}");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = banner.join("\n");
    assert!(text.contains("quicmatch ready on 0.0.0.0:"), "{text}");
    let fingerprint = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate fingerprint (SHA-256): "))
        .expect("a fingerprint line");
    assert_eq!(fingerprint.len(), 64, "{text}");
    assert!(text.contains(&format!("--pin {fingerprint}")), "{text}");
    assert!(text.contains("127.0.0.1:"), "{text}");
}

#[test]
fn the_default_key_on_a_reachable_address_is_warned_about() {
    // Logs go to stdout, beside the banner.
    let (mut child, stderr, _dir) = serve_reachable("warn");
    let found = loop {
        match stderr.recv_timeout(TEST_TIMEOUT) {
            Ok(line) if line.contains("defaultkey") => break Some(line),
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = found.expect("a warning about the default key");
    assert!(line.contains("server_key"), "{line}");
}

#[tokio::test]
async fn one_dual_stack_socket_serves_ipv4_and_ipv6_clients() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this host; nothing to check");
        return;
    }
    common::init_tracing();
    let material = tls::generate(vec!["127.0.0.1".into(), "::1".into()]).expect("cert");
    let mut config = common::test_config();
    config.listen = "[::]:0".parse().expect("addr");
    let server = Server::builder(config)
        .certificate(material)
        .secret([7u8; 32])
        .bind()
        .expect("bind");
    let port = server.local_addr().port();
    let cert = server.cert_der().clone();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let serving = tokio::spawn(server.serve(async move { token.cancelled().await }));
    for (addr, name) in [
        (format!("127.0.0.1:{port}"), "four"),
        (format!("[::1]:{port}"), "six"),
    ] {
        let config = ClientConfig::new(
            addr.parse().expect("addr"),
            Trust::Certificates(vec![cert.clone()]),
            Credentials::Device {
                id: format!("device-{name}-0000"),
            },
        );
        let socket = timeout(TEST_TIMEOUT, Socket::connect(config))
            .await
            .unwrap_or_else(|_| panic!("{addr}: connect in time"))
            .unwrap_or_else(|e| panic!("{addr}: {e}"));
        socket.ping().await.expect("served");
        socket.close().await;
    }
    stop.cancel();
    timeout(Duration::from_secs(10), serving)
        .await
        .expect("stops")
        .expect("serve");
}

/// Connection failures say what to do.
#[tokio::test]
async fn connection_errors_say_what_to_do() {
    let server = common::TestServer::start().await;
    let wrong = "ab".repeat(32);
    let mut config = server.client_config("pinned");
    config.trust = Trust::pin(&wrong).expect("a pin");
    let err = Socket::connect(config).await.err().expect("wrong pin");
    let text = err.to_string();
    let presented = tls::fingerprint(&server.cert);
    assert!(text.contains(&presented) && text.contains(&wrong), "{text}");

    let mut config = server.client_config("untrusting");
    config.trust = Trust::PlatformRoots;
    let err = Socket::connect(config).await.err().expect("untrusted");
    let text = err.to_string();
    assert!(
        text.contains("--ca") && text.contains("--pin") && text.contains("--discover"),
        "{text}"
    );

    // Nothing listens there.
    let free = std::net::UdpSocket::bind("127.0.0.1:0").expect("port");
    let addr = free.local_addr().expect("addr");
    drop(free);
    let mut config = server.client_config("nobody");
    config.server = addr;
    config.request_timeout = Duration::from_millis(500);
    let err = Socket::connect(config).await.err().expect("unreachable");
    let text = err.to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("running"),
        "{text}"
    );
    // The right family, so no word of families.
    assert!(
        matches!(err, ConnectError::Unreachable { .. })
            && !text.contains("IPv6")
            && !text.contains("IPv4"),
        "{text}"
    );
}

/// A client that cannot reach the server's address family is told so, with both
/// families named and what to do: a client socket of the other family, or (on a
/// machine without IPv6) the OS refusing the family.
#[tokio::test]
async fn an_address_family_mismatch_says_so() {
    let server = common::TestServer::start().await;
    let port = server.addr.port();
    let six: std::net::SocketAddr = format!("[::1]:{port}").parse().expect("addr");

    // An IPv4-only socket and an IPv6 server address (needs no IPv6 on the machine).
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("socket");
    let mut config = server.client_config("four");
    config.server = six;
    let err = timeout(
        TEST_TIMEOUT,
        Socket::connect_with_endpoint(endpoint, config),
    )
    .await
    .expect("answered at once")
    .err()
    .expect("an IPv4 socket cannot reach an IPv6 address");
    let text = err.to_string();
    assert!(
        matches!(err, ConnectError::AddressFamily { local: Some(_), .. })
            && text.contains("[::1]")
            && text.contains("is an IPv6 address")
            && text.contains("IPv4-only")
            && text.contains("IPv4 address instead"),
        "{text}"
    );

    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        // No IPv6 here: the OS refuses the family itself, and that is what is said.
        eprintln!("no IPv6 loopback on this host: checking the OS's refusal of IPv6 instead");
        let mut config = server.client_config("six");
        config.server = six;
        config.request_timeout = Duration::from_millis(500);
        let err = timeout(TEST_TIMEOUT, Socket::connect(config))
            .await
            .expect("answered in time")
            .err()
            .expect("no IPv6 on this machine");
        let text = err.to_string();
        assert!(
            matches!(err, ConnectError::AddressFamily { .. })
                && text.contains("IPv6")
                && text.contains("IPv4 address instead"),
            "{text}"
        );
        return;
    }

    // The reverse: a socket bound to one IPv6 address and an IPv4 server address.
    let endpoint = quinn::Endpoint::client("[::1]:0".parse().expect("addr")).expect("socket");
    let config = server.client_config("six");
    let err = timeout(
        TEST_TIMEOUT,
        Socket::connect_with_endpoint(endpoint, config),
    )
    .await
    .expect("answered at once")
    .err()
    .expect("an IPv6-only socket cannot reach an IPv4 address");
    let text = err.to_string();
    assert!(
        matches!(err, ConnectError::AddressFamily { local: Some(_), .. })
            && text.contains(&server.addr.to_string())
            && text.contains("is an IPv4 address")
            && text.contains("IPv6-only")
            && text.contains("IPv6 address instead"),
        "{text}"
    );
}

/// The server killed with SIGKILL: a connected SDK client notices, tries to resume
/// within its window, and then reports `Disconnected`; nothing hangs.
#[tokio::test]
async fn a_killed_server_is_noticed_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_quicmatch"))
        .args(["serve", "--listen", "127.0.0.1:0", "--certs-dir"])
        .arg(dir.path())
        .env("QUICMATCH_DATA_DIR", dir.path().join("data"))
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn quicmatch");
    let stdout = lines(child.stdout.take().expect("stdout"));
    let (mut addr, mut fingerprint) = (None, None);
    while addr.is_none() || fingerprint.is_none() {
        let line = stdout.recv_timeout(TEST_TIMEOUT).expect("the banner");
        if let Some(a) = line.strip_prefix("quicmatch ready on ") {
            addr = a.split_whitespace().next().map(str::to_owned);
        }
        if let Some(f) = line
            .trim()
            .strip_prefix("certificate fingerprint (SHA-256): ")
        {
            fingerprint = Some(f.to_owned());
        }
    }
    let mut config = ClientConfig::new(
        addr.expect("addr").parse().expect("an address"),
        Trust::pin(&fingerprint.expect("fingerprint")).expect("pin"),
        Credentials::Device {
            id: "device-victim-0000".into(),
        },
    );
    config.reconnect_for = Duration::from_secs(2);
    let socket = timeout(TEST_TIMEOUT, Socket::connect(config))
        .await
        .expect("connect in time")
        .expect("connect");
    socket.ping().await.expect("served");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let mut reconnecting = false;
    loop {
        match timeout(Duration::from_secs(30), socket.next_event())
            .await
            .expect("the loss is reported in time")
        {
            Some(quicmatch_client::Event::Reconnecting { .. }) => reconnecting = true,
            Some(quicmatch_client::Event::Disconnected { .. }) | None => break,
            Some(_) => {}
        }
    }
    assert!(reconnecting, "it tried to resume first");
    assert!(socket.ping().await.is_err());
}
