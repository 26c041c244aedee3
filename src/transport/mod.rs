//! The two QUIC transports behind one small interface: `quinn` (quinn's endpoint and a
//! driver task per connection) and `proto` (one quinn-proto I/O loop that relays
//! datagrams without waking session tasks; see [`proto`]). Sessions, the relay and the
//! accept loop use [`Conn`], [`SendStream`], [`RecvStream`], [`Incoming`] and
//! [`Endpoint`] and never learn which one runs (`transport` in the configuration).

pub(crate) mod congestion;
pub(crate) mod proto;

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::FutureExt as _;
use quinn_proto::{ConnectionError, SendDatagramError, VarInt};
use tokio::io::{AsyncRead, ReadBuf};

/// Why a stream write failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// The peer stopped the stream.
    #[error("stopped by peer: code {0}")]
    Stopped(VarInt),
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
    /// The stream was already finished or reset.
    #[error("closed stream")]
    ClosedStream,
}

impl From<quinn::WriteError> for WriteError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(code) => Self::Stopped(code),
            quinn::WriteError::ConnectionLost(e) => Self::ConnectionLost(e),
            _ => Self::ClosedStream,
        }
    }
}

/// One client connection, whichever transport carries it; cheap to clone.
#[derive(Clone)]
pub(crate) enum Conn {
    Quinn(quinn::Connection),
    Proto(proto::Conn),
}

impl Conn {
    /// The peer's current address.
    pub(crate) fn remote_address(&self) -> SocketAddr {
        match self {
            Self::Quinn(c) => c.remote_address(),
            Self::Proto(c) => c.remote_address(),
        }
    }

    /// The application protocol (ALPN) the handshake agreed on.
    pub(crate) fn alpn(&self) -> Option<Vec<u8>> {
        match self {
            Self::Quinn(c) => c
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol),
            Self::Proto(c) => c.alpn(),
        }
    }

    /// Waits for the client's control stream.
    pub(crate) async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        match self {
            Self::Quinn(c) => c
                .accept_bi()
                .await
                .map(|(s, r)| (SendStream::Quinn(s), RecvStream::Quinn(r))),
            Self::Proto(c) => c
                .accept_bi()
                .await
                .map(|(s, r)| (SendStream::Proto(s), RecvStream::Proto(r))),
        }
    }

    /// Opens a unidirectional stream (a lane) when the peer allows one.
    pub(crate) async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        match self {
            Self::Quinn(c) => c.open_uni().await.map(SendStream::Quinn),
            Self::Proto(c) => c.open_uni().await.map(SendStream::Proto),
        }
    }

    /// Opens a unidirectional stream if the peer allows one now; `None` when it would
    /// wait.
    pub(crate) fn try_open_uni(&self) -> Option<Result<SendStream, ConnectionError>> {
        match self {
            Self::Quinn(c) => c
                .open_uni()
                .now_or_never()
                .map(|r| r.map(SendStream::Quinn)),
            Self::Proto(c) => c.try_open_uni().map(|r| r.map(SendStream::Proto)),
        }
    }

    /// The next datagram, for a session that reads them itself (quinn); with `proto`
    /// datagrams reach the session's sink instead and this never completes.
    pub(crate) async fn read_datagram(&self) -> Result<Bytes, ConnectionError> {
        match self {
            Self::Quinn(c) => c.read_datagram().await,
            Self::Proto(_) => std::future::pending().await,
        }
    }

    /// Queues a datagram, dropping the oldest queued ones when the queue is full;
    /// `Ok(true)` when one had to go (the reader is behind).
    pub(crate) fn send_datagram(&self, datagram: Bytes) -> Result<bool, SendDatagramError> {
        match self {
            Self::Quinn(c) => {
                let behind = c.max_datagram_size().is_some()
                    && c.datagram_send_buffer_space() < datagram.len();
                c.send_datagram(datagram)
                    .map(|()| behind)
                    .map_err(|e| match e {
                        quinn::SendDatagramError::UnsupportedByPeer => {
                            SendDatagramError::UnsupportedByPeer
                        }
                        quinn::SendDatagramError::TooLarge => SendDatagramError::TooLarge,
                        _ => SendDatagramError::Disabled,
                    })
            }
            Self::Proto(c) => c.send_datagram(datagram),
        }
    }

    /// Closes the connection with an application code and reason.
    pub(crate) fn close(&self, code: VarInt, reason: &[u8]) {
        match self {
            Self::Quinn(c) => c.close(code, reason),
            Self::Proto(c) => c.close(code, reason),
        }
    }

    /// Why the connection ended; `None` while it is open.
    pub(crate) fn close_reason(&self) -> Option<ConnectionError> {
        match self {
            Self::Quinn(c) => c.close_reason(),
            Self::Proto(c) => c.close_reason(),
        }
    }

    /// UDP datagrams received on the connection so far (liveness).
    pub(crate) fn udp_rx_datagrams(&self) -> u64 {
        match self {
            Self::Quinn(c) => c.stats().udp_rx.datagrams,
            Self::Proto(c) => c.udp_rx_datagrams(),
        }
    }
}

/// The sending half of a stream.
pub(crate) enum SendStream {
    Quinn(quinn::SendStream),
    Proto(proto::SendStream),
}

impl SendStream {
    /// Writes all of `chunks` (the written ones are left empty).
    pub(crate) async fn write_all_chunks(
        &mut self,
        chunks: &mut [Bytes],
    ) -> Result<(), WriteError> {
        match self {
            Self::Quinn(s) => s.write_all_chunks(chunks).await.map_err(Into::into),
            Self::Proto(s) => s.write_all_chunks(chunks).await,
        }
    }

    /// Writes what the stream takes now: `Ok(true)` when all of `chunks` was written (the
    /// chunks written are left empty, a partly written one holds its rest), `Ok(false)`
    /// when it would wait.
    pub(crate) fn write_now(&mut self, chunks: &mut [Bytes]) -> Result<bool, WriteError> {
        let mut from = 0;
        while from < chunks.len() {
            if chunks[from].is_empty() {
                from += 1;
                continue;
            }
            let written = match self {
                Self::Quinn(s) => match s.write_chunks(&mut chunks[from..]).now_or_never() {
                    None => return Ok(false),
                    Some(w) => w.map_err(WriteError::from)?,
                },
                Self::Proto(s) => {
                    let waker = futures_util::task::noop_waker();
                    let mut cx = Context::from_waker(&waker);
                    match s.poll_write_chunks(&mut cx, &mut chunks[from..]) {
                        Poll::Pending => return Ok(false),
                        Poll::Ready(w) => w?,
                    }
                }
            };
            from += written.chunks;
        }
        Ok(true)
    }

    /// Resolves once the peer has acknowledged everything written to this finished
    /// stream (or stopped it, or the connection ended). A close discards what the peer
    /// has not acknowledged, so whatever must arrive before one waits for this.
    pub(crate) async fn acknowledged(&mut self) {
        match self {
            Self::Quinn(s) => {
                let _ = s.stopped().await;
            }
            Self::Proto(s) => s.acknowledged().await,
        }
    }

    /// Ends the stream after what was written.
    pub(crate) fn finish(&mut self) -> Result<(), WriteError> {
        match self {
            Self::Quinn(s) => s.finish().map_err(|_| WriteError::ClosedStream),
            Self::Proto(s) => s.finish(),
        }
    }
}

/// The receiving half of a stream.
pub(crate) enum RecvStream {
    Quinn(quinn::RecvStream),
    Proto(proto::RecvStream),
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Quinn(s) => Pin::new(s).poll_read(cx, buf),
            Self::Proto(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

/// A connection attempt for the accept loop to decide on.
pub(crate) enum Incoming {
    // Boxed: quinn's holds the first packet; the attempt lives only until it is decided.
    Quinn(Box<quinn::Incoming>),
    Proto(proto::Incoming),
}

impl Incoming {
    /// Whether the peer proved its address (a Retry token).
    pub(crate) fn remote_address_validated(&self) -> bool {
        match self {
            Self::Quinn(i) => i.remote_address_validated(),
            Self::Proto(i) => i.remote_address_validated(),
        }
    }

    /// Whether a Retry may be sent.
    pub(crate) fn may_retry(&self) -> bool {
        match self {
            Self::Quinn(i) => i.may_retry(),
            Self::Proto(i) => i.may_retry(),
        }
    }

    /// The peer's address.
    pub(crate) fn remote_address(&self) -> SocketAddr {
        match self {
            Self::Quinn(i) => i.remote_address(),
            Self::Proto(i) => i.remote_address(),
        }
    }

    /// Refuses the attempt.
    pub(crate) fn refuse(self) {
        match self {
            Self::Quinn(i) => i.refuse(),
            Self::Proto(i) => i.refuse(),
        }
    }

    /// Answers with a Retry; `false` when one cannot be sent.
    pub(crate) fn retry(self) -> bool {
        match self {
            Self::Quinn(i) => i.retry().is_ok(),
            Self::Proto(i) => {
                i.retry();
                true
            }
        }
    }

    /// Accepts the attempt and waits for the handshake.
    pub(crate) async fn accept(self) -> Result<Conn, ConnectionError> {
        match self {
            Self::Quinn(i) => (*i).await.map(Conn::Quinn),
            Self::Proto(i) => i.accept().await.map(Conn::Proto),
        }
    }
}

/// The bound endpoint of either transport.
pub(crate) enum Endpoint {
    Quinn(quinn::Endpoint),
    Proto(proto::Endpoint),
}

impl Endpoint {
    /// The bound address.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Quinn(e) => e.local_addr(),
            Self::Proto(e) => Ok(e.local_addr()),
        }
    }

    /// The next connection attempt; `None` once the endpoint is closed.
    pub(crate) async fn accept(&self) -> Option<Incoming> {
        match self {
            Self::Quinn(e) => e.accept().await.map(|i| Incoming::Quinn(Box::new(i))),
            Self::Proto(e) => e.accept().await.map(Incoming::Proto),
        }
    }

    /// Closes every connection with `code`.
    pub(crate) fn close(&self, code: VarInt, reason: &[u8]) {
        match self {
            Self::Quinn(e) => e.close(code, reason),
            Self::Proto(e) => e.close(code, reason),
        }
    }

    /// Waits until every connection has drained.
    pub(crate) async fn wait_idle(&self) {
        match self {
            Self::Quinn(e) => e.wait_idle().await,
            Self::Proto(e) => e.wait_idle().await,
        }
    }

    /// Releases the socket (the I/O thread of `proto` ends first).
    pub(crate) async fn stop(self) {
        match self {
            Self::Quinn(e) => drop(e),
            Self::Proto(e) => e.stop().await,
        }
    }
}
