//! Opening an authenticated connection: the QUIC handshake, the control stream, the
//! `Authenticate` frame and the `Session` reply. The first connect and every automatic
//! resume go through [`establish`].

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use quicmatch_protocol::{
    envelope::ClientEnvelope,
    frame::{self, FrameCodec},
    Credentials, Request, Response, ServerBody, ServerEnvelope, SessionInfo, ALPN_V2,
};
use tokio_util::codec::FramedRead;

use crate::{ClientConfig, ConnectError};

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
fn explain(server: std::net::SocketAddr, e: quinn::ConnectionError) -> ConnectError {
    let text = e.to_string();
    if text.contains("UnknownIssuer") || text.contains("NotValidForName") {
        return ConnectError::Untrusted {
            server,
            detail: text,
        };
    }
    ConnectError::Connection(e)
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
    crypto.alpn_protocols = vec![ALPN_V2.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| ConnectError::Config(e.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(quic));
    client_config.transport_config(Arc::new(config.transport()?));
    let server_name = config
        .server_name
        .clone()
        .unwrap_or_else(|| config.server.ip().to_string());
    let connecting = endpoint.connect_with(client_config, config.server, &server_name)?;
    let server = config.server;
    let conn = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ConnectError::Unreachable {
            server,
            waited: timeout,
        })?
        .map_err(|e| explain(server, e))?;
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
