//! The load generator's players for each relay: connecting them (SDK sockets through
//! the real control plane, bare quinn connections, plain UDP sockets) and their send and
//! receive halves, which the sender and receiver tasks own.
//!
//! Match data is unreliable unless `--reliable`: then quicmatch players send it on the
//! reliable path and plain-quinn players on their join stream, length-prefixed (`[len
//! u16 LE][payload]`), which the quinn relay forwards on each receiver's one stream, as
//! quicmatch did on its control stream before protocol 3 (now each sender's data reaches
//! a receiver on a lane of its own).

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt as _;
use quicmatch_client::{
    ClientConfig, Credentials, ErrorCode, Event, MatchId, SendOptions, Socket, Trust,
};
use tokio::net::UdpSocket;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use quicmatch_protocol::datagram;

use super::{Args, Route, Transport};
use crate::{quinn_relay, udp_relay};

/// One player: `tx` for its sender task, `rx` for its receiver task.
pub(super) struct Player {
    pub(super) tx: Tx,
    pub(super) rx: Rx,
}

/// How a player sends.
pub(super) enum Tx {
    Quic {
        socket: Arc<Socket>,
        match_id: MatchId,
        options: SendOptions,
    },
    /// `--bare-clients`: datagrams written on the SDK socket's QUIC connection
    /// directly, as a plain-quinn player writes them.
    QuicBare {
        conn: quinn::Connection,
        handle: u32,
    },
    Udp {
        socket: Arc<UdpSocket>,
        header: [u8; udp_relay::DATA_HEADER],
    },
    Quinn {
        conn: quinn::Connection,
    },
    QuinnStream {
        send: quinn::SendStream,
    },
}

/// How a player receives.
pub(super) enum Rx {
    Quic {
        socket: Arc<Socket>,
    },
    /// `--bare-clients`: datagrams read from the SDK socket's QUIC connection directly.
    QuicBare {
        conn: quinn::Connection,
        /// Kept so the session (and its match membership) lives as long as the reader.
        _socket: Arc<Socket>,
    },
    Udp {
        socket: Arc<UdpSocket>,
    },
    Quinn {
        conn: quinn::Connection,
    },
    QuinnStream {
        frames: FramedRead<quinn::RecvStream, LengthDelimitedCodec>,
        /// Kept so the connection lives as long as its reader.
        _conn: quinn::Connection,
    },
}

impl Tx {
    /// Sends one message; false when it could not be handed to the transport.
    pub(super) async fn send(&mut self, payload: Vec<u8>) -> bool {
        match self {
            Self::Quic {
                socket,
                match_id,
                options,
            } => socket
                .send_match_data_with(*match_id, 1, payload, options.clone())
                .await
                .is_ok(),
            Self::QuicBare { conn, handle } => conn
                .send_datagram(datagram::encode_client(*handle, 1, None, &payload))
                .is_ok(),
            Self::Udp { socket, header } => {
                let mut pkt = Vec::with_capacity(header.len() + payload.len());
                pkt.extend_from_slice(header);
                pkt.extend_from_slice(&payload);
                socket.send(&pkt).await.is_ok()
            }
            Self::Quinn { conn } => conn.send_datagram(payload.into()).is_ok(),
            Self::QuinnStream { send } => {
                let Ok(frame) = frame(&payload) else {
                    return false;
                };
                send.write_all(&frame).await.is_ok()
            }
        }
    }
}

impl Rx {
    /// Waits for the next message and hands its payload to `on` (anything else that
    /// arrives is skipped). False once the connection or socket is gone.
    pub(super) async fn next(&mut self, buf: &mut [u8], on: impl FnOnce(&[u8])) -> bool {
        match self {
            Self::Quic { socket } => match socket.next_event().await {
                Some(Event::MatchData(d)) => on(&d.data),
                Some(Event::Disconnected { .. }) | None => return false,
                Some(_) => {}
            },
            Self::QuicBare { conn, .. } => match conn.read_datagram().await {
                Ok(d) => {
                    if let Ok((_, payload)) = datagram::RelayHeader::decode(d) {
                        on(&payload);
                    }
                }
                Err(_) => return false,
            },
            Self::Quinn { conn } => match conn.read_datagram().await {
                Ok(d) => on(&d),
                Err(_) => return false,
            },
            Self::QuinnStream { frames, .. } => match frames.next().await {
                Some(Ok(f)) => on(&f),
                _ => return false,
            },
            Self::Udp { socket } => match socket.recv(buf).await {
                Ok(n) if n > udp_relay::RELAYED_HEADER && buf[0] == udp_relay::RELAYED => {
                    on(&buf[udp_relay::RELAYED_HEADER..n]);
                }
                Ok(_) => {}
                Err(_) => return false,
            },
        }
        true
    }
}

/// A length-prefixed frame of the plain-quinn stream path.
pub(crate) fn frame(payload: &[u8]) -> anyhow::Result<Bytes> {
    let len = u16::try_from(payload.len())?;
    let mut frame = BytesMut::with_capacity(2 + payload.len());
    frame.put_u16_le(len);
    frame.put_slice(payload);
    Ok(frame.freeze())
}

/// The codec that reads those frames (payload only).
pub(crate) fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u16>()
        .little_endian()
        .new_codec()
}

/// Socket buffer of the load generator's client endpoints (`--client-socket-buffer`
/// changes it): with the kernel's default (about 200 KiB) a burst for a hundred
/// connections overflows while the endpoint task waits for a core. 4 MiB, as in every
/// figure of BENCHMARKS.md so far (the server's own default is smaller since).
pub(crate) const CLIENT_SOCKET_BUFFER: usize = 4 << 20;

/// A client endpoint on loopback for many connections, with [`CLIENT_SOCKET_BUFFER`].
pub(crate) fn client_endpoint() -> anyhow::Result<quinn::Endpoint> {
    client_endpoint_sized(CLIENT_SOCKET_BUFFER)
}

/// The same with `buffer` bytes of socket buffer (`--client-socket-buffer`).
fn client_endpoint_sized(buffer: usize) -> anyhow::Result<quinn::Endpoint> {
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        quinn_relay::socket_sized(([127, 0, 0, 1], 0).into(), buffer)?,
        Arc::new(quinn::TokioRuntime),
    )?)
}

/// SDK players of a quicmatch server, each at its `to` address (the server, or an
/// impairment proxy in front of it), `--players` to a match, created and joined through
/// the control plane.
pub(super) async fn connect_quic(
    to: Route,
    ca: PathBuf,
    args: &Args,
) -> anyhow::Result<Vec<Player>> {
    let endpoints: Vec<quinn::Endpoint> = (0..args.endpoints.max(1))
        .map(|_| client_endpoint_sized(args.client_socket_buffer.unwrap_or(CLIENT_SOCKET_BUFFER)))
        .collect::<anyhow::Result<_>>()?;
    let total = args.matches * args.players;
    let mut sockets = Vec::with_capacity(total);
    let mut i = 0;
    while i < total {
        let batch: Vec<_> = (i..(i + 32).min(total))
            .map(|n| {
                let mut config = ClientConfig::new(
                    to.addr(n),
                    Trust::CaFile(ca.clone()),
                    Credentials::Device {
                        id: format!("bench-device-{n:08}"),
                    },
                );
                config.event_buffer = 16_384;
                let ms = args.client_max_datagram_age;
                config.max_datagram_age = (ms > 0).then(|| Duration::from_millis(ms));
                let endpoint = endpoints[n % endpoints.len()].clone();
                async move {
                    // The server may still be starting: retry for a few seconds.
                    let mut last = None;
                    for _ in 0..50 {
                        match Socket::connect_with_endpoint(endpoint.clone(), config.clone()).await
                        {
                            Ok(s) => return Ok(s),
                            Err(e) => last = Some(e),
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(anyhow::anyhow!("connect: {last:?}"))
                }
            })
            .collect();
        for s in futures_util::future::join_all(batch).await {
            sockets.push(Arc::new(s?));
        }
        i += 32;
    }
    let options = if args.reliable {
        SendOptions::reliable()
    } else {
        let options = SendOptions::unreliable().redundancy(args.redundancy);
        match args.repeat_after {
            Some(ms) => options
                .repeat_after(Duration::from_secs_f64(ms / 1000.0))
                .repeat_times(args.repeats),
            None => options,
        }
    };
    let mut players = Vec::with_capacity(total);
    for group in sockets.chunks(args.players) {
        let m = group[0].create_match(None).await?;
        for s in &group[1..] {
            join(s, m.match_id).await?;
        }
        for s in group {
            players.push(if args.bare_clients {
                let handle = s
                    .match_handle(m.match_id)
                    .ok_or_else(|| anyhow::anyhow!("no handle for a match just joined"))?;
                let conn = s.connection();
                Player {
                    tx: Tx::QuicBare {
                        conn: conn.clone(),
                        handle,
                    },
                    rx: Rx::QuicBare {
                        conn,
                        _socket: s.clone(),
                    },
                }
            } else {
                Player {
                    tx: Tx::Quic {
                        socket: s.clone(),
                        match_id: m.match_id,
                        options: options.clone(),
                    },
                    rx: Rx::Quic { socket: s.clone() },
                }
            });
        }
    }
    Ok(players)
}

/// Bare quinn players of a plain-quinn relay, each at its `to` address, with the SDK's
/// transport settings (less the ACK-frequency extension for `quinn-default-acks`).
pub(super) async fn connect_quinn(
    to: Route,
    ca: PathBuf,
    args: &Args,
    transport: Transport,
) -> anyhow::Result<Vec<Player>> {
    let mut roots = quinn::rustls::RootCertStore::empty();
    roots.add(std::fs::read(&ca)?.into())?;
    let mut config = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
    // The SDK's transport settings, so both QUIC runs differ only above quinn.
    let sdk = ClientConfig::new(
        to.addr(0),
        Trust::CaFile(ca),
        Credentials::Device { id: String::new() },
    );
    let mut transport_config = sdk.transport()?;
    if transport == Transport::QuinnDefaultAcks {
        transport_config.ack_frequency_config(None);
    }
    config.transport_config(Arc::new(transport_config));
    let endpoints: Vec<quinn::Endpoint> = (0..args.endpoints.max(1))
        .map(|_| {
            let mut e = client_endpoint()?;
            e.set_default_client_config(config.clone());
            Ok(e)
        })
        .collect::<anyhow::Result<_>>()?;
    let total = args.matches * args.players;
    let mut players = Vec::with_capacity(total);
    for start in (0..total).step_by(32) {
        let batch = (start..(start + 32).min(total)).map(|n| {
            let endpoint = endpoints[n % endpoints.len()].clone();
            let m = u32::try_from(n / args.players).unwrap_or(u32::MAX);
            let reliable = args.reliable;
            let to = to.addr(n);
            async move {
                let mut last = None;
                // The relay may still be starting: retry for a few seconds.
                for _ in 0..50 {
                    match join_quinn(&endpoint, to, m, reliable).await {
                        Ok(p) => return Ok(p),
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(anyhow::anyhow!("quinn relay: {last:?}"))
            }
        });
        for p in futures_util::future::join_all(batch).await {
            players.push(p?);
        }
    }
    Ok(players)
}

/// Connects to the plain-quinn relay and joins match `m`. Unreliable players finish
/// their join stream; reliable ones keep it for their data.
async fn join_quinn(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    m: u32,
    reliable: bool,
) -> anyhow::Result<Player> {
    let conn = endpoint.connect(addr, "localhost")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&m.to_le_bytes()).await?;
    if !reliable {
        send.finish()?;
    }
    let mut ok = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), recv.read_exact(&mut ok)).await??;
    Ok(if reliable {
        Player {
            tx: Tx::QuinnStream { send },
            rx: Rx::QuinnStream {
                frames: FramedRead::new(recv, frame_codec()),
                _conn: conn,
            },
        }
    } else {
        Player {
            tx: Tx::Quinn { conn: conn.clone() },
            rx: Rx::Quinn { conn },
        }
    })
}

/// Plain UDP players of the raw-UDP relay, each at its `to` address, one socket each.
pub(super) async fn connect_udp(to: Route, args: &Args) -> anyhow::Result<Vec<Player>> {
    let mut players = Vec::new();
    for m in 0..args.matches {
        for p in 0..args.players {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(to.addr(m * args.players + p)).await?;
            let mut header = [0u8; udp_relay::DATA_HEADER];
            header[0] = udp_relay::DATA;
            header[1..5].copy_from_slice(&(m as u32).to_le_bytes());
            header[5..9].copy_from_slice(&(p as u32).to_le_bytes());
            let mut join = header;
            join[0] = udp_relay::JOIN;
            let mut buf = [0u8; 16];
            let mut joined = false;
            let mut last = None;
            for _ in 0..50 {
                socket.send(&join).await?;
                match tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut buf)).await
                {
                    Ok(Ok(n)) if n >= 1 && buf[0] == udp_relay::JOINED => {
                        joined = true;
                        break;
                    }
                    other => last = Some(format!("{other:?}")),
                }
            }
            anyhow::ensure!(
                joined,
                "baseline relay did not answer player {p} of match {m}: {last:?}"
            );
            let socket = Arc::new(socket);
            players.push(Player {
                tx: Tx::Udp {
                    socket: socket.clone(),
                    header,
                },
                rx: Rx::Udp { socket },
            });
        }
    }
    Ok(players)
}

/// Joins `id`, retrying for a few seconds: in a cluster (`--cluster`) a node finds a
/// match on another only once the two see each other.
async fn join(socket: &Socket, id: MatchId) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match socket.join_match(id).await {
            Ok(_) => return Ok(()),
            Err(e)
                if tokio::time::Instant::now() < deadline
                    && matches!(
                        e.code(),
                        Some(ErrorCode::MATCH_NOT_FOUND | ErrorCode::CLUSTER_UNAVAILABLE)
                    ) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("join: {e}")),
        }
    }
}
