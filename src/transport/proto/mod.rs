//! The quinn-proto transport (`transport = "proto"`): one I/O loop on a thread of its
//! own owns the UDP socket, the `quinn_proto::Endpoint` and every connection's timers,
//! reads with `recvmmsg`/GRO and writes with `sendmmsg`/GSO (through quinn's UDP layer),
//! and hands each received datagram straight to its session's sink, so a relayed
//! datagram reaches every recipient's connection inside the loop. Sessions keep their
//! task for the control stream, lanes and liveness; they reach their connection through
//! [`Conn`]. New connections go to the server's accept loop as [`Incoming`], which
//! decides (accept, retry, refuse) exactly as with quinn.

mod conn;
mod driver;

use std::{net::SocketAddr, sync::Arc, thread};

use bytes::Bytes;
use quinn_proto::{ConnectionError, EndpointConfig, ServerConfig, VarInt};
use tokio::sync::{mpsc, oneshot, watch};

pub(crate) use self::conn::{Conn, RecvStream, SendStream, Sink};
use self::driver::{Command, LoopShared};

/// New connections waiting for the accept loop's decision; past this the loop refuses
/// them itself (the accept loop is behind, which only a flood explains).
const INCOMING_QUEUE: usize = 1024;

/// A bound quinn-proto endpoint and its I/O thread.
pub(crate) struct Endpoint {
    io: Arc<LoopShared>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
    local: SocketAddr,
    live: watch::Receiver<usize>,
    /// Becomes `true` once the I/O thread ended and its socket is closed.
    stopped: watch::Receiver<bool>,
}

impl Endpoint {
    /// Starts the I/O thread on `socket`.
    pub(crate) fn bind(
        socket: std::net::UdpSocket,
        endpoint_config: EndpointConfig,
        server_config: ServerConfig,
    ) -> std::io::Result<Self> {
        let local = socket.local_addr()?;
        let io = Arc::new(LoopShared::default());
        let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
        let (live_tx, live_rx) = watch::channel(0usize);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let loop_io = io.clone();
        thread::Builder::new()
            .name("quicmatch-io".into())
            .spawn(move || {
                driver::run(
                    socket,
                    endpoint_config,
                    server_config,
                    loop_io,
                    incoming_tx,
                    live_tx,
                    ready_tx,
                );
                stopped_tx.send_replace(true);
            })?;
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the I/O thread did not start"))??;
        Ok(Self {
            io,
            incoming: tokio::sync::Mutex::new(incoming_rx),
            local,
            live: live_rx,
            stopped: stopped_rx,
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next connection attempt; `None` once the endpoint stopped.
    pub(crate) async fn accept(&self) -> Option<Incoming> {
        self.incoming.lock().await.recv().await
    }

    /// Closes every connection with `code` and refuses new ones.
    pub(crate) fn close(&self, code: VarInt, reason: &[u8]) {
        self.io
            .command(Command::CloseAll(code, Bytes::copy_from_slice(reason)));
    }

    /// Waits until every connection has drained.
    pub(crate) async fn wait_idle(&self) {
        let mut live = self.live.clone();
        let _ = live.wait_for(|n| *n == 0).await;
    }
}

impl Endpoint {
    /// Stops the I/O thread and waits until its socket is closed, so the address can be
    /// bound again at once.
    pub(crate) async fn stop(self) {
        self.io.command(Command::Stop);
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.io.command(Command::Stop);
    }
}

/// A connection attempt the accept loop decides on.
pub(crate) struct Incoming {
    id: u64,
    remote: SocketAddr,
    validated: bool,
    may_retry: bool,
    io: Arc<LoopShared>,
    answered: bool,
}

impl Incoming {
    /// The peer's address.
    pub(crate) fn remote_address(&self) -> SocketAddr {
        self.remote
    }

    /// Whether the peer proved its address (a Retry token).
    pub(crate) fn remote_address_validated(&self) -> bool {
        self.validated
    }

    /// Whether a Retry may be sent.
    pub(crate) fn may_retry(&self) -> bool {
        self.may_retry
    }

    /// Refuses the attempt with `CONNECTION_REFUSED`.
    pub(crate) fn refuse(mut self) {
        self.answered = true;
        self.io.command(Command::Refuse(self.id));
    }

    /// Answers with a Retry packet (stateless address validation).
    pub(crate) fn retry(mut self) {
        self.answered = true;
        self.io.command(Command::Retry(self.id));
    }

    /// Accepts the attempt and waits for its handshake.
    pub(crate) async fn accept(mut self) -> Result<Conn, ConnectionError> {
        self.answered = true;
        let (tx, rx) = oneshot::channel();
        self.io.command(Command::Accept(self.id, tx));
        let conn = rx.await.map_err(|_| ConnectionError::LocallyClosed)??;
        conn.connected().await?;
        Ok(conn)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.answered {
            self.io.command(Command::Ignore(self.id));
        }
    }
}
