//! The plain-quinn baseline relay: quinn with quicmatch's transport settings, a match
//! table and nothing else (no authentication, no control protocol, no rate limits, no
//! metrics). The same workload through it separates what QUIC and quinn cost from what
//! quicmatch adds on top.
//!
//! A client opens one bidirectional stream, writes its match number (u32 LE); the relay
//! answers with one byte once the client is in the table. From then on every datagram
//! the client sends is forwarded, unchanged, to the other members of its match. A client
//! that keeps the stream open (`relay --reliable`) sends length-prefixed messages on it
//! (`[len u16 LE][payload]`), which the relay forwards on each other member's stream:
//! one stream per receiver for every sender's data, as quicmatch's control stream
//! carried it before protocol 3 (since then quicmatch relays it on a stream per
//! (match, sender), its lanes).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use futures_util::StreamExt as _;
use quinn::{Connection, Endpoint};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use crate::relay::{frame, frame_codec};

/// Reliable messages queued for one receiver's stream. Full (a receiver that stopped
/// reading): the message is dropped and shows as loss; quicmatch closes such a session
/// instead, which the bench's loads never cause.
const RELIABLE_QUEUE: usize = 4096;

/// Arguments of both QUIC baseline relays (`quinn-relay` and `proto-relay`).
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long)]
    pub(crate) listen: SocketAddr,
    /// Directory to write the self-signed certificate to (`server.der`).
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// quinn's default acknowledgements (no ACK-frequency extension) instead of
    /// quicmatch's settings.
    #[arg(long)]
    pub(crate) default_acks: bool,
}

/// Where the relay writes its certificate inside `--dir`.
pub(crate) fn cert_path(dir: &Path) -> PathBuf {
    dir.join("server.der")
}

/// A match member: its connection (datagrams) and its stream's queue (reliable data).
struct Member {
    conn: Connection,
    reliable: mpsc::Sender<Bytes>,
}

type Table = Arc<RwLock<HashMap<u32, Vec<Member>>>>;

/// Entry point of `quicmatch-bench quinn-relay`: serves until killed. Uses the same
/// runtime shape as `quicmatch serve` (tokio's multi-threaded default).
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

/// A server config for a baseline relay: a fresh self-signed certificate, written to
/// `dir` for the clients to trust, and quicmatch's transport settings (less the
/// ACK-frequency extension with `default_acks`).
pub(crate) fn server_config(dir: &Path, default_acks: bool) -> anyhow::Result<quinn::ServerConfig> {
    let tls = quicmatch::tls::generate(vec!["localhost".to_owned()])?;
    let cert_der = tls
        .chain
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no certificate generated"))?;
    std::fs::write(cert_path(dir), cert_der.as_ref())?;
    let mut config = quinn::ServerConfig::with_single_cert(tls.chain, tls.key)?;
    let mut transport = quicmatch::transport_config(&quicmatch::Config::default());
    if default_acks {
        transport.ack_frequency_config(None);
    }
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A UDP socket bound to `addr` with quicmatch's default `socket_buffer`.
pub(crate) fn socket(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    socket_sized(addr, quicmatch::config::DEFAULT_SOCKET_BUFFER)
}

/// The same with `buffer` bytes of receive and send buffer.
pub(crate) fn socket_sized(addr: SocketAddr, buffer: usize) -> anyhow::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(buffer)?;
    socket.set_send_buffer_size(buffer)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

async fn serve(args: &Args) -> anyhow::Result<()> {
    let endpoint = Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config(&args.dir, args.default_acks)?),
        socket(args.listen)?,
        Arc::new(quinn::TokioRuntime),
    )?;
    println!("ready");
    let table: Table = Arc::default();
    while let Some(incoming) = endpoint.accept().await {
        let table = table.clone();
        tokio::spawn(async move {
            if let Ok(conn) = incoming.await {
                relay(conn, table).await;
            }
        });
    }
    Ok(())
}

async fn relay(conn: Connection, table: Table) {
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let mut id = [0u8; 4];
    if recv.read_exact(&mut id).await.is_err() {
        return;
    }
    let m = u32::from_le_bytes(id);
    let (tx, mut rx) = mpsc::channel::<Bytes>(RELIABLE_QUEUE);
    if let Ok(mut t) = table.write() {
        t.entry(m).or_default().push(Member {
            conn: conn.clone(),
            reliable: tx,
        });
    }
    if send.write_all(&[1]).await.is_err() {
        return;
    }
    let me = conn.stable_id();
    // The receiver's stream writer: ends when the member leaves the table (its queue's
    // only long-lived sender is there).
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if send.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    // The sender's stream reader: ends at once for a client that finished its stream.
    let reader = tokio::spawn(forward_frames(recv, table.clone(), m, me));
    while let Ok(datagram) = conn.read_datagram().await {
        let Ok(t) = table.read() else { break };
        for peer in t.get(&m).into_iter().flatten() {
            if peer.conn.stable_id() != me {
                // Dropped when a peer's queue is full or it is gone: datagram semantics.
                let _ = peer.conn.send_datagram(datagram.clone());
            }
        }
    }
    reader.abort();
    if let Ok(mut t) = table.write() {
        if let Some(members) = t.get_mut(&m) {
            members.retain(|c| c.conn.stable_id() != me);
            if members.is_empty() {
                t.remove(&m);
            }
        }
    }
}

/// Forwards each length-prefixed message from `recv` to the other members of match `m`.
async fn forward_frames(recv: quinn::RecvStream, table: Table, m: u32, me: usize) {
    let mut frames = FramedRead::new(recv, frame_codec());
    while let Some(Ok(payload)) = frames.next().await {
        let Ok(frame) = frame(&payload) else { continue };
        let Ok(t) = table.read() else { break };
        for peer in t.get(&m).into_iter().flatten() {
            if peer.conn.stable_id() != me {
                let _ = peer.reliable.try_send(frame.clone());
            }
        }
    }
}
