//! The plain-quinn baseline relay: quinn with quicmatch's transport settings, a match
//! table and nothing else (no authentication, no control protocol, no rate limits, no
//! metrics). The same workload through it separates what QUIC and quinn cost from what
//! quicmatch adds on top.
//!
//! A client opens one bidirectional stream, writes its match number (u32 LE) and
//! finishes the stream; the relay answers with one byte once the client is in the
//! table. From then on every datagram the client sends is forwarded, unchanged, to the
//! other members of its match.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use quinn::{Connection, Endpoint};

/// Arguments of both QUIC baseline relays (`quinn-relay` and `proto-relay`).
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long)]
    pub(crate) listen: SocketAddr,
    /// Directory to write the self-signed certificate to (`server.der`).
    #[arg(long)]
    pub(crate) dir: PathBuf,
}

/// Where the relay writes its certificate inside `--dir`.
pub(crate) fn cert_path(dir: &Path) -> PathBuf {
    dir.join("server.der")
}

type Table = Arc<RwLock<HashMap<u32, Vec<Connection>>>>;

/// Entry point of `quicmatch-bench quinn-relay`: serves until killed. Uses the same
/// runtime shape as `quicmatch serve` (tokio's multi-threaded default).
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

/// A server config for a baseline relay: a fresh self-signed certificate, written to
/// `dir` for the clients to trust, and quicmatch's transport settings.
pub(crate) fn server_config(dir: &Path) -> anyhow::Result<quinn::ServerConfig> {
    let tls = quicmatch::tls::generate(vec!["localhost".to_owned()])?;
    let cert_der = tls
        .chain
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no certificate generated"))?;
    std::fs::write(cert_path(dir), cert_der.as_ref())?;
    let mut config = quinn::ServerConfig::with_single_cert(tls.chain, tls.key)?;
    config.transport_config(Arc::new(quicmatch::transport_config(
        &quicmatch::Config::default(),
    )));
    Ok(config)
}

/// A UDP socket bound to `addr` with quicmatch's default `socket_buffer`.
pub(crate) fn socket(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(quicmatch::config::DEFAULT_SOCKET_BUFFER)?;
    socket.set_send_buffer_size(quicmatch::config::DEFAULT_SOCKET_BUFFER)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

async fn serve(args: &Args) -> anyhow::Result<()> {
    let endpoint = Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config(&args.dir)?),
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
    if let Ok(mut t) = table.write() {
        t.entry(m).or_default().push(conn.clone());
    }
    if send.write_all(&[1]).await.is_err() {
        return;
    }
    let me = conn.stable_id();
    while let Ok(datagram) = conn.read_datagram().await {
        let Ok(t) = table.read() else { break };
        for peer in t.get(&m).into_iter().flatten() {
            if peer.stable_id() != me {
                // Dropped when a peer's queue is full or it is gone: datagram semantics.
                let _ = peer.send_datagram(datagram.clone());
            }
        }
    }
    if let Ok(mut t) = table.write() {
        if let Some(members) = t.get_mut(&m) {
            members.retain(|c| c.stable_id() != me);
            if members.is_empty() {
                t.remove(&m);
            }
        }
    }
}
