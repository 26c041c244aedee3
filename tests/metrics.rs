//! The Prometheus endpoint: scraped while clients play, its counters move as expected.

mod common;

use std::time::Duration;

use common::{next_event, TestServer, TEST_TIMEOUT};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::timeout,
};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = timeout(TEST_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut body = String::new();
    timeout(TEST_TIMEOUT, stream.read_to_string(&mut body))
        .await
        .expect("response in time")
        .expect("read");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// The value of a metric line (exact name and labels), 0 when absent.
fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_with_traffic() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let metrics_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut config = common::test_config();
    config.metrics = Some(metrics_addr);
    let server = TestServer::start_with(config).await;

    let a = server.client("alice").await;
    let b = server.client("bob").await;
    let m = a.create_match(None).await.expect("create");
    b.join_match(m.match_id).await.expect("join");
    next_event(&a, "join").await;
    for _ in 0..3 {
        a.send_match_data(m.match_id, 1, b"x".to_vec(), false, None)
            .await
            .expect("send");
        next_event(&b, "datagram").await;
    }
    a.send_match_data(m.match_id, 1, b"r".to_vec(), true, None)
        .await
        .expect("send");
    next_event(&b, "reliable").await;
    let err = a
        .join_match(quicmatch_client::MatchId::new_random())
        .await
        .expect_err("unknown");
    assert_eq!(
        err.code(),
        Some(quicmatch_client::ErrorCode::MATCH_NOT_FOUND)
    );
    a.add_matchmaker("*", 2, 2).await.expect("ticket");
    let _bad = timeout(
        Duration::from_secs(5),
        quicmatch_client::Socket::connect(server.client_config("mallory").server_key("wrong")),
    )
    .await;

    // Gauges refresh every second; poll the endpoint until they show the live state.
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    let body = loop {
        let body = scrape(metrics_addr).await;
        if value(&body, "quicmatch_sessions") >= 2.0
            && value(&body, "quicmatch_matchmaker_pool") >= 1.0
        {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gauges never updated:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(value(&body, "quicmatch_matches"), 1.0);
    assert_eq!(value(&body, "quicmatch_match_presences"), 2.0);
    assert_eq!(value(&body, "quicmatch_datagrams_in_total"), 3.0);
    assert_eq!(value(&body, "quicmatch_datagrams_out_total"), 3.0);
    assert_eq!(value(&body, "quicmatch_reliable_messages_total"), 1.0);
    assert_eq!(
        value(
            &body,
            "quicmatch_requests_rejected_total{code=\"MATCH_NOT_FOUND\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &body,
            "quicmatch_auth_failures_total{reason=\"AUTH_FAILED\"}"
        ),
        1.0
    );
    assert!(value(&body, "quicmatch_datagram_bytes_out_total") > 0.0);

    // More traffic moves the counters on.
    a.send_match_data(m.match_id, 1, b"y".to_vec(), false, None)
        .await
        .expect("send");
    next_event(&b, "datagram").await;
    // The relaying thread counts right after it hands the datagram over, so with several
    // I/O loops the receiver may have it a moment before the count moves.
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let body = scrape(metrics_addr).await;
        let out = value(&body, "quicmatch_datagrams_out_total");
        if out == 4.0 {
            break;
        }
        assert!(out < 4.0, "one datagram counted twice: {out}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the counter never moved:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
