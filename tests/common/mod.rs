//! Shared harness for the end-to-end tests: a real server on 127.0.0.1 port 0 with a
//! per-test certificate, real SDK clients, raw quinn connections for wire-level tests,
//! and event helpers that always wait under a timeout.
#![allow(dead_code, unreachable_pub)]

pub mod child;
pub mod cluster;
pub mod nats;
pub mod party;
pub mod proxy;
pub mod storage;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt as _;
use quicmatch::{tls, Config, Server, Stats};
use quicmatch_client::{ClientConfig, Credentials, Event, Socket, Trust};
use quicmatch_protocol::{
    envelope::{ClientEnvelope, ServerEnvelope},
    frame, Request, ALPN,
};
use rustls::pki_types::CertificateDer;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Every await in a test is bounded by this, so a hang fails with a name.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn test_config() -> Config {
    // A store of its own per server, so tests never share one; its file appears only
    // if the test writes (tests that look at it set their own `data_dir`).
    static STORES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let store = STORES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        certs_dir: std::env::temp_dir().join("quicmatch-tests-unused"),
        data_dir: std::env::temp_dir().join(format!(
            "quicmatch-test-data-{}-{store}",
            std::process::id()
        )),
        ..Config::default()
    };
    // Tests run matchmaker passes by hand, so results do not depend on timing.
    config.matchmaker.interval = Duration::from_secs(3600);
    // Tests never advertise on the host's network, whatever they bind.
    config.advertise = false;
    // Restart survival records every session in the store; the restart tests turn it
    // on themselves, the others keep their store untouched unless they write.
    config.matches.snapshot_interval = Duration::ZERO;
    // The suite runs many servers at once on a small machine, in debug builds: an I/O
    // loop kept off its core for 40 ms would shed packets, and tests that count
    // datagrams would measure the machine. `tests/stale.rs` tests the bound itself.
    config.relay.max_datagram_age = Duration::from_secs(1);
    // The whole suite runs against either transport: CI runs it once with each
    // (`QUICMATCH_TRANSPORT=proto QUICMATCH_WORKERS=2`; server processes the tests
    // start read them too).
    if let Ok(t) = std::env::var("QUICMATCH_TRANSPORT") {
        config.transport = t.parse().expect("QUICMATCH_TRANSPORT is quinn or proto");
    }
    if let Ok(w) = std::env::var("QUICMATCH_WORKERS") {
        config.workers = w.parse().expect("QUICMATCH_WORKERS is a number");
    }
    config
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub cert: CertificateDer<'static>,
    pub stats: Stats,
    pub runtime: quicmatch::runtime::Runtime,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        Self::start_built(config, |b| b).await
    }

    /// Starts a server whose builder `build` adds to (handlers, RPCs, hooks).
    pub async fn start_built(
        config: Config,
        build: impl FnOnce(quicmatch::ServerBuilder) -> quicmatch::ServerBuilder,
    ) -> Self {
        init_tracing();
        let material =
            tls::generate(vec!["localhost".into(), "127.0.0.1".into()]).expect("certificate");
        let server = build(
            Server::builder(config)
                .certificate(material)
                .secret([7u8; 32]),
        )
        .bind()
        .expect("bind");
        let shutdown = CancellationToken::new();
        let addr = server.local_addr();
        let cert = server.cert_der().clone();
        let stats = server.stats();
        let runtime = server.runtime();
        let token = shutdown.clone();
        let task = tokio::spawn(server.serve(async move { token.cancelled().await }));
        Self {
            addr,
            cert,
            stats,
            runtime,
            shutdown,
            task: Some(task),
        }
    }

    pub fn client_config(&self, name: &str) -> ClientConfig {
        ClientConfig::new(
            self.addr,
            Trust::Certificates(vec![self.cert.clone()]),
            Credentials::Device {
                id: format!("device-{name}-0000"),
            },
        )
        .username(name)
    }

    /// Runs one matchmaker pass now; returns the number of groups formed.
    pub fn matchmake(&self) -> usize {
        self.stats
            .matchmaker_handle()
            .process(std::time::Instant::now())
    }

    pub async fn client(&self, name: &str) -> Socket {
        timeout(TEST_TIMEOUT, Socket::connect(self.client_config(name)))
            .await
            .expect("waiting for connect")
            .expect("connect")
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            timeout(TEST_TIMEOUT, task)
                .await
                .expect("waiting for shutdown")
                .expect("serve task");
        }
    }

    /// A raw quinn connection with the right ALPN and trust, and nothing else.
    pub async fn raw_connection(&self) -> quinn::Connection {
        self.raw_connection_with(quinn::TransportConfig::default())
            .await
    }

    /// Like [`raw_connection`](Self::raw_connection), with this transport config.
    pub async fn raw_connection_with(
        &self,
        transport: quinn::TransportConfig,
    ) -> quinn::Connection {
        self.raw_connection_alpn(transport, ALPN).await
    }

    /// A raw connection offering only this ALPN protocol name.
    pub async fn raw_connection_alpn(
        &self,
        transport: quinn::TransportConfig,
        alpn: &[u8],
    ) -> quinn::Connection {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).expect("root");
        let mut crypto = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
        crypto.alpn_protocols = vec![alpn.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).expect("quic");
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        let mut client_config = quinn::ClientConfig::new(Arc::new(quic));
        client_config.transport_config(Arc::new(transport));
        endpoint.set_default_client_config(client_config);
        timeout(
            TEST_TIMEOUT,
            endpoint.connect(self.addr, "127.0.0.1").expect("connect"),
        )
        .await
        .expect("waiting for handshake")
        .expect("handshake")
    }

    /// A raw connection that has authenticated: its control stream and frame reader.
    pub async fn raw_session(&self, name: &str) -> RawSession {
        self.raw_session_with(name, quinn::TransportConfig::default())
            .await
    }

    /// Like [`raw_session`](Self::raw_session), with this transport config.
    pub async fn raw_session_with(
        &self,
        name: &str,
        transport: quinn::TransportConfig,
    ) -> RawSession {
        let conn = self.raw_connection_with(transport).await;
        let (send, recv) = conn.open_bi().await.expect("open control stream");
        let mut raw = RawSession {
            conn,
            send,
            frames: tokio_util::codec::FramedRead::new(recv, frame::FrameCodec),
        };
        raw.request(
            Some(0),
            Request::Authenticate {
                server_key: "defaultkey".into(),
                credentials: Credentials::Device {
                    id: format!("device-{name}-0000"),
                },
                username: Some(name.into()),
            },
        )
        .await;
        raw
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct RawSession {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub frames: tokio_util::codec::FramedRead<quinn::RecvStream, frame::FrameCodec>,
}

impl RawSession {
    pub async fn write(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("write");
    }

    pub async fn send_request(&mut self, cid: Option<u32>, body: Request) {
        let bytes = frame::encode(&ClientEnvelope { cid, body }).expect("encode");
        self.write(&bytes).await;
    }

    /// Sends a request and returns the next frame from the server.
    pub async fn request(&mut self, cid: Option<u32>, body: Request) -> ServerEnvelope {
        self.send_request(cid, body).await;
        self.next().await
    }

    pub async fn next_body(&mut self) -> Bytes {
        timeout(TEST_TIMEOUT, self.frames.next())
            .await
            .expect("waiting for a frame")
            .expect("stream open")
            .expect("frame")
    }

    pub async fn next(&mut self) -> ServerEnvelope {
        let body = self.next_body().await;
        frame::decode_server(&body).expect("decode")
    }
}

/// Three clients in one match, with the join events already consumed.
pub async fn three(server: &TestServer) -> (Socket, Socket, Socket, quicmatch_client::Match) {
    let a = server.client("alice").await;
    let b = server.client("bob").await;
    let c = server.client("carol").await;
    let m = a.create_match(None).await.expect("create");
    b.join_match(m.match_id).await.expect("join");
    next_event(&a, "bob joins").await;
    c.join_match(m.match_id).await.expect("join");
    next_event(&a, "carol joins").await;
    next_event(&b, "carol joins").await;
    (a, b, c, m)
}

/// A client with frequent keep-alives (so a test server with a short `idle_timeout`
/// hears it), going through `proxy` (which the test can cut) when given.
pub async fn client_via(server: &TestServer, proxy: Option<&proxy::Proxy>, name: &str) -> Socket {
    let mut config = server.client_config(name);
    if let Some(proxy) = proxy {
        config.server = proxy.addr;
    }
    config.keep_alive = Duration::from_millis(200);
    timeout(TEST_TIMEOUT, Socket::connect(config))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// `name`'s session resumed on `server` with its token, keep-alives as [`client_via`].
pub async fn resume(server: &TestServer, name: &str, token: String) -> Socket {
    let mut config = server.client_config(name);
    config.credentials = Credentials::SessionToken { token };
    config.keep_alive = Duration::from_millis(200);
    timeout(TEST_TIMEOUT, Socket::connect(config))
        .await
        .expect("resume in time")
        .expect("resume")
}

/// The next event, failing the test if none comes in time.
pub async fn next_event(socket: &Socket, what: &str) -> Event {
    timeout(TEST_TIMEOUT, socket.next_event())
        .await
        .unwrap_or_else(|_| panic!("waiting for {what}"))
        .unwrap_or_else(|| panic!("socket closed while waiting for {what}"))
}

/// Skips events until the socket reports its disconnect; returns the close code.
pub async fn disconnect_code(socket: &Socket, what: &str) -> Option<quicmatch_client::CloseCode> {
    loop {
        if let Event::Disconnected { code, .. } = next_event(socket, what).await {
            return code;
        }
    }
}

/// Skips events until `who` leaves `match_id`, failing after `within`.
pub async fn await_match_leave(
    socket: &Socket,
    match_id: quicmatch_client::MatchId,
    who: &quicmatch_client::Presence,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next_event()).await {
            Ok(Some(Event::MatchPresence(p)))
                if p.match_id == match_id && p.leaves.contains(who) =>
            {
                return
            }
            Ok(Some(_)) => {}
            other => panic!(
                "{} did not leave within {within:?}: {other:?}",
                who.username
            ),
        }
    }
}

/// Fails if any event arrives within `wait`.
pub async fn assert_no_event(socket: &Socket, wait: Duration) {
    if let Ok(Some(event)) = timeout(wait, socket.next_event()).await {
        panic!("expected no event, got {event:?}");
    }
}

/// Waits for the server to close `conn` and checks it used `code`.
pub async fn assert_closed_with(conn: &quinn::Connection, code: quicmatch_protocol::CloseCode) {
    match timeout(TEST_TIMEOUT, conn.closed())
        .await
        .expect("waiting for the server to close the connection")
    {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), u64::from(code.0), "close code");
        }
        other => panic!("expected close code {code}, got {other:?}"),
    }
}

/// Polls `check` until it holds, failing with `what` after the test timeout.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
