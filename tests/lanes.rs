//! Lanes (protocol 3): each member's reliable match data reaches a receiver on a stream
//! of its own. A raw protocol 3 client that stops reading one sender's lane still gets
//! every message of another sender at once, and the stalled sender's messages, complete
//! and in order, once it reads again; through a lossy link the SDK gets two senders'
//! data complete and in per-sender order; a protocol 2 client gets it all on the
//! control stream as before.

mod common;

use std::{sync::Arc, time::Duration};

use common::{
    proxy::{Impairment, Proxy},
    TestServer, TEST_TIMEOUT,
};
use futures_util::StreamExt as _;
use quicmatch_client::{Event, MatchId, Socket};
use quicmatch_protocol::{
    envelope::{Event as WireEvent, Response, ServerBody},
    frame::{self, FrameCodec},
    Credentials, Request, ALPN_V2, ALPN_V3, LANE_STREAM,
};
use tokio::{io::AsyncReadExt as _, time::timeout};
use tokio_util::codec::FramedRead;

/// A raw client speaking `alpn` with a small per-stream window (so an unread lane
/// fills quickly), authenticated and joined to `id`; returns it with its slot.
async fn raw_member(
    server: &TestServer,
    alpn: &[u8],
    id: MatchId,
) -> (
    quinn::Connection,
    FramedRead<quinn::RecvStream, FrameCodec>,
    quinn::SendStream,
) {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_uni_streams(quicmatch_protocol::MAX_LANES.into())
        .stream_receive_window(quinn::VarInt::from_u32(16 * 1024));
    let conn = server.raw_connection_alpn(transport, alpn).await;
    let (mut send, recv) = conn.open_bi().await.expect("control stream");
    let mut frames = FramedRead::new(recv, FrameCodec);
    for (cid, body) in [
        (
            1,
            Request::Authenticate {
                server_key: "defaultkey".into(),
                credentials: Credentials::Device {
                    id: "device-raw-lane-0000".into(),
                },
                username: Some("raw".into()),
            },
        ),
        (2, Request::MatchJoin { match_id: id }),
    ] {
        let bytes = frame::encode(&quicmatch_protocol::ClientEnvelope {
            cid: Some(cid),
            body,
        })
        .expect("encode");
        send.write_all(&bytes).await.expect("send");
        loop {
            let body = timeout(TEST_TIMEOUT, frames.next())
                .await
                .expect("reply in time")
                .expect("open")
                .expect("frame");
            let env = frame::decode_server(&body).expect("decode");
            if let ServerBody::Response(r) = env.body {
                assert!(
                    matches!(r, Response::Session(_) | Response::Match(_)),
                    "{r:?}"
                );
                break;
            }
        }
    }
    (conn, frames, send)
}

/// The next reliable match data frame on a lane: (sender slot, payload).
async fn next_data(lane: &mut FramedRead<quinn::RecvStream, FrameCodec>) -> (u32, Vec<u8>) {
    let body = timeout(TEST_TIMEOUT, lane.next())
        .await
        .expect("lane data in time")
        .expect("lane open")
        .expect("frame");
    match frame::decode_server(&body).expect("decode").body {
        ServerBody::Sequenced {
            event: WireEvent::MatchData {
                sender_slot, data, ..
            },
            ..
        } => (sender_slot, data.to_vec()),
        other => panic!("a lane carries only match data, got {other:?}"),
    }
}

async fn accept_lane(conn: &quinn::Connection) -> FramedRead<quinn::RecvStream, FrameCodec> {
    let mut stream = timeout(TEST_TIMEOUT, conn.accept_uni())
        .await
        .expect("a lane in time")
        .expect("lane");
    assert_eq!(stream.read_u8().await.expect("type"), LANE_STREAM);
    FramedRead::new(stream, FrameCodec)
}

async fn send_all(socket: &Socket, id: MatchId, tag: &str, n: usize, size: usize) {
    for i in 0..n {
        let mut data = format!("{tag}-{i:05}-").into_bytes();
        data.resize(size.max(data.len()), b'.');
        socket
            .send_match_data(id, 1, data, true, None)
            .await
            .expect("send");
    }
}

fn index(data: &[u8]) -> usize {
    std::str::from_utf8(&data[2..7])
        .expect("utf8")
        .parse()
        .expect("index")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_lane_does_not_hold_back_another_senders_data() {
    let server = TestServer::start().await;
    let a = server.client("alice").await;
    let b = server.client("bob").await;
    let m = a.create_match(None).await.expect("create");
    b.join_match(m.match_id).await.expect("bob joins");
    let (conn, _control, _send) = raw_member(&server, ALPN_V3, m.match_id).await;
    // Alice's 200 KiB fill her lane's 16 KiB window many times over; the raw client
    // reads none of it yet.
    send_all(&a, m.match_id, "a", 200, 1024).await;
    let mut alice_lane = accept_lane(&conn).await;
    let (alice_slot, first) = next_data(&mut alice_lane).await;
    assert_eq!(index(&first), 0);
    send_all(&b, m.match_id, "b", 50, 16).await;
    let mut bob_lane = accept_lane(&conn).await;
    for i in 0..50 {
        let (slot, data) = next_data(&mut bob_lane).await;
        assert_ne!(slot, alice_slot, "bob's lane carries only bob's data");
        assert_eq!((index(&data), &data[..2]), (i, &b"b-"[..]), "in order");
    }
    // Now alice's, complete and in order.
    for i in 1..200 {
        let (slot, data) = next_data(&mut alice_lane).await;
        assert_eq!(slot, alice_slot);
        assert_eq!((index(&data), &data[..2]), (i, &b"a-"[..]), "in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_2_clients_get_reliable_data_on_the_control_stream() {
    let server = TestServer::start().await;
    let a = server.client("alice").await;
    let m = a.create_match(None).await.expect("create");
    let (conn, mut control, _send) = raw_member(&server, ALPN_V2, m.match_id).await;
    send_all(&a, m.match_id, "a", 20, 16).await;
    let mut got = 0;
    while got < 20 {
        let body = timeout(TEST_TIMEOUT, control.next())
            .await
            .expect("data in time")
            .expect("open")
            .expect("frame");
        if let ServerBody::Sequenced {
            event: WireEvent::MatchData { data, .. },
            ..
        } = frame::decode_server(&body).expect("decode").body
        {
            assert_eq!(index(&data), got);
            got += 1;
        }
    }
    assert!(
        timeout(Duration::from_millis(200), conn.accept_uni())
            .await
            .is_err(),
        "no lane for protocol 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_through_a_lossy_link_arrive_complete_and_in_per_sender_order() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(
        server.addr,
        Impairment {
            loss: 0.10,
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(60),
            duplicate: 0.02,
        },
        7,
    )
    .await;
    let mut config = server.client_config("carol");
    config.server = proxy.addr;
    let carol = timeout(Duration::from_secs(30), Socket::connect(config))
        .await
        .expect("connect in time")
        .expect("connect");
    let a = Arc::new(server.client("alice").await);
    let b = Arc::new(server.client("bob").await);
    let m = a.create_match(None).await.expect("create");
    b.join_match(m.match_id).await.expect("bob joins");
    carol.join_match(m.match_id).await.expect("carol joins");
    let id = m.match_id;
    let (a2, b2) = (a.clone(), b.clone());
    let senders = tokio::spawn(async move {
        tokio::join!(
            send_all(&a2, id, "a", 200, 64),
            send_all(&b2, id, "b", 200, 64)
        )
    });
    let (mut next_a, mut next_b) = (0, 0);
    while next_a < 200 || next_b < 200 {
        let event = timeout(Duration::from_secs(30), carol.next_event())
            .await
            .expect("data in time")
            .expect("open");
        if let Event::MatchData(d) = event {
            let i = index(&d.data);
            match (&d.data[..2], d.sender.username.as_str()) {
                (b"a-", "alice") => {
                    assert_eq!(i, next_a, "alice's data in order, once");
                    next_a += 1;
                }
                (b"b-", "bob") => {
                    assert_eq!(i, next_b, "bob's data in order, once");
                    next_b += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    senders.await.expect("senders");
}
