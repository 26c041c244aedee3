//! Opening an authenticated connection: the QUIC handshake, the control stream, the
//! `Authenticate` frame and the `Session` reply. The first connect and every automatic
//! resume go through [`establish`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use quicmatch_protocol::{
    envelope::ClientEnvelope,
    frame::{self, FrameCodec},
    Credentials, Request, Response, ServerBody, ServerEnvelope, SessionInfo, ALPN_V2, ALPN_V3,
};
use tokio_util::codec::FramedRead;

use crate::{family, ClientConfig, ConnectError};

/// The control stream's incoming half, framed.
pub(crate) type Frames = FramedRead<quinn::RecvStream, FrameCodec>;

/// A connection that authenticated.
pub(crate) struct Established {
    pub(crate) conn: quinn::Connection,
    pub(crate) send: quinn::SendStream,
    pub(crate) frames: Frames,
    pub(crate) session: SessionInfo,
}

/// Turns a handshake failure into an error that says what to do, where one can.
fn explain(server: SocketAddr, e: quinn::ConnectionError) -> ConnectError {
    let text = e.to_string();
    if text.contains("UnknownIssuer") || text.contains("NotValidForName") {
        return ConnectError::Untrusted {
            server,
            detail: text,
        };
    }
    ConnectError::Connection(e)
}

/// Why `endpoint` cannot reach `server` at all, when its address family is the cause:
/// an IPv4 socket cannot send to an IPv6 address, nor a socket bound to one IPv6
/// address to an IPv4 one (an unspecified `[::]` socket is dual-stack and can).
fn family_mismatch(endpoint: &quinn::Endpoint, server: SocketAddr) -> Option<ConnectError> {
    let local = endpoint.local_addr().ok()?;
    let blocked = match (local, family(&server)) {
        (SocketAddr::V4(_), "IPv6") => "IPv4-only",
        (SocketAddr::V6(l), "IPv4")
            if !l.ip().is_unspecified() && l.ip().to_ipv4_mapped().is_none() =>
        {
            "IPv6-only"
        }
        _ => return None,
    };
    Some(ConnectError::AddressFamily {
        server,
        local: Some(local),
        reason: format!("this client's socket ({local}) is {blocked}"),
    })
}

/// After a handshake that got no answer: whether this machine can send to `server`'s
/// address family at all. Connecting a UDP socket sends nothing; it only asks the OS
/// for a route, which it refuses (for example with "network unreachable") for a family
/// the machine has no address or route for.
fn family_unroutable(server: SocketAddr) -> Option<ConnectError> {
    let unspecified: SocketAddr = if server.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let refused = match std::net::UdpSocket::bind(unspecified) {
        Err(e) => format!(
            "this machine cannot open an {} socket ({e})",
            family(&server)
        ),
        Ok(probe) => match probe.connect(server) {
            Err(e) => format!("this machine has no {} route to it ({e})", family(&server)),
            Ok(()) => return None,
        },
    };
    Some(ConnectError::AddressFamily {
        server,
        local: None,
        reason: refused,
    })
}

/// Connects over `endpoint` and authenticates with `credentials`; the handshake and the
/// reply each get `timeout`.
pub(crate) async fn establish(
    endpoint: &quinn::Endpoint,
    config: &ClientConfig,
    credentials: Credentials,
    timeout: Duration,
) -> Result<Established, ConnectError> {
    let mut crypto = config.trust.client_config()?;
    // Protocol 3 (lanes) first; a server that only knows 2 still serves this client.
    crypto.alpn_protocols = vec![ALPN_V3.to_vec(), ALPN_V2.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| ConnectError::Config(e.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(quic));
    client_config.transport_config(Arc::new(config.transport()?));
    let server_name = config
        .server_name
        .clone()
        .unwrap_or_else(|| config.server.ip().to_string());
    let server = config.server;
    if let Some(mismatch) = family_mismatch(endpoint, server) {
        return Err(mismatch);
    }
    let connecting = endpoint
        .connect_with(client_config, server, &server_name)
        .map_err(|e| match e {
            // The endpoint's family cannot reach that address (caught above for the
            // cases we know; this is quinn's own check).
            quinn::ConnectError::InvalidRemoteAddress(_) if !server.ip().is_unspecified() => {
                family_mismatch(endpoint, server).unwrap_or(ConnectError::Connect(e))
            }
            e => ConnectError::Connect(e),
        })?;
    let conn = match tokio::time::timeout(timeout, connecting).await {
        Ok(conn) => conn.map_err(|e| explain(server, e))?,
        // Nothing answered: the family may be why (the OS drops what it cannot route,
        // and quinn only logs that), else the server is not there.
        Err(_) => {
            return Err(
                family_unroutable(server).unwrap_or(ConnectError::Unreachable {
                    server,
                    waited: timeout,
                }),
            )
        }
    };
    let (mut send, recv) = conn.open_bi().await?;
    let hello = frame::encode(&ClientEnvelope {
        cid: Some(0),
        body: Request::Authenticate {
            server_key: config.server_key.clone(),
            credentials,
            username: config.username.clone(),
        },
    })
    .map_err(|e| ConnectError::Config(e.to_string()))?;
    send.write_all(&hello)
        .await
        .map_err(|e| ConnectError::Protocol(e.to_string()))?;
    let mut frames = FramedRead::new(recv, FrameCodec);
    let first = tokio::time::timeout(timeout, frames.next()).await;
    let first = match first {
        Ok(first) => first,
        Err(_) => {
            conn.close(0u32.into(), b"no session reply in time");
            return Err(ConnectError::Timeout);
        }
    };
    let session = match first {
        Some(Ok(body)) => match frame::decode_server(&body) {
            Ok(ServerEnvelope {
                body: ServerBody::Response(Response::Session(session)),
                ..
            }) => session,
            Ok(other) => {
                return Err(ConnectError::Protocol(format!(
                    "expected a session, got {other:?}"
                )))
            }
            Err(e) => return Err(ConnectError::Protocol(e.to_string())),
        },
        _ => {
            // The server closes the connection with a reason when it refuses us.
            return Err(match conn.closed().await {
                quinn::ConnectionError::LocallyClosed => {
                    ConnectError::Protocol("control stream ended".into())
                }
                e => ConnectError::Connection(e),
            });
        }
    };
    Ok(Established {
        conn,
        send,
        frames,
        session,
    })
}
