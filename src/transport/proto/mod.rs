//! The quinn-proto transport (`transport = "proto"`): one I/O loop on a thread of its
//! own owns the UDP socket, the `quinn_proto::Endpoint` and every connection's timers,
//! reads with `recvmmsg`/GRO, writes each turn's packets together with `sendmmsg` (GSO
//! batches through quinn's UDP layer), and hands each received datagram straight to its
//! session's sink, so a relayed datagram reaches every recipient's connection inside
//! the loop. Sessions keep their task for the control stream, lanes and liveness; they
//! reach their connection through [`Conn`]. New connections go to the server's accept
//! loop as [`Incoming`], which decides (accept, retry, refuse) exactly as with quinn.

mod cids;
mod conn;
mod driver;
mod outbox;
mod socket;

use std::{net::SocketAddr, sync::Arc, thread};

use bytes::Bytes;
use quinn_proto::{ConnectionError, EndpointConfig, ServerConfig, VarInt};
use tokio::sync::{mpsc, oneshot, watch};

pub(crate) use self::conn::{Conn, RecvStream, SendStream, Sink};
use self::driver::{Command, LoopShared};

/// New connections waiting for the accept loop's decision; past this the loop refuses
/// them itself (the accept loop is behind, which only a flood explains).
const INCOMING_QUEUE: usize = 1024;

/// A bound quinn-proto endpoint: its I/O loops, one thread and socket each.
pub(crate) struct Endpoint {
    loops: Vec<Arc<LoopShared>>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
    local: SocketAddr,
    live: Vec<watch::Receiver<usize>>,
    /// Each becomes `true` once its I/O thread ended and its socket is closed.
    stopped: Vec<watch::Receiver<bool>>,
}

impl Endpoint {
    /// Starts one I/O loop per socket (all bound to the same address with
    /// `SO_REUSEPORT` when there are several); `cid_key` keys the connection ids.
    /// A packet of an established connection that waited longer than `max_age` in a
    /// socket's receive buffer is dropped unread (zero: never).
    pub(crate) fn bind(
        sockets: Vec<std::net::UdpSocket>,
        endpoint_config: EndpointConfig,
        server_config: ServerConfig,
        cid_key: u64,
        max_age: std::time::Duration,
    ) -> std::io::Result<Self> {
        let local = sockets
            .first()
            .ok_or_else(|| std::io::Error::other("no socket"))?
            .local_addr()?;
        let n = sockets.len();
        let loops: Vec<Arc<LoopShared>> = (0..n).map(|_| Arc::new(LoopShared::default())).collect();
        let peers = Arc::new(loops.clone());
        let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
        let mut live = Vec::with_capacity(n);
        let mut stopped = Vec::with_capacity(n);
        for (index, socket) in sockets.into_iter().enumerate() {
            let (live_tx, live_rx) = watch::channel(0usize);
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (stopped_tx, stopped_rx) = watch::channel(false);
            let mut endpoint_config = endpoint_config.clone();
            endpoint_config
                .cid_generator(move || Box::new(cids::SteeringCids::new(cid_key, index, n)));
            let looped = driver::Looped {
                index,
                peers: peers.clone(),
                cids: cids::SteeringCids::new(cid_key, index, n),
                max_age,
            };
            let server_config = server_config.clone();
            let incoming_tx = incoming_tx.clone();
            let name = if n == 1 {
                "quicmatch-io".to_owned()
            } else {
                format!("quicmatch-io-{index}")
            };
            thread::Builder::new().name(name).spawn(move || {
                driver::run(
                    socket,
                    endpoint_config,
                    server_config,
                    looped,
                    incoming_tx,
                    live_tx,
                    ready_tx,
                );
                stopped_tx.send_replace(true);
            })?;
            ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("the I/O thread did not start"))??;
            live.push(live_rx);
            stopped.push(stopped_rx);
        }
        Ok(Self {
            loops,
            incoming: tokio::sync::Mutex::new(incoming_rx),
            local,
            live,
            stopped,
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
        for io in &self.loops {
            io.command(Command::CloseAll(code, Bytes::copy_from_slice(reason)));
        }
    }

    /// Waits until every connection has drained.
    pub(crate) async fn wait_idle(&self) {
        for live in &self.live {
            let mut live = live.clone();
            let _ = live.wait_for(|n| *n == 0).await;
        }
    }

    /// Stops the I/O threads and waits until their sockets are closed, so the address
    /// can be bound again at once.
    pub(crate) async fn stop(self) {
        for io in &self.loops {
            io.command(Command::Stop);
        }
        for stopped in &self.stopped {
            let mut stopped = stopped.clone();
            let _ = stopped.wait_for(|s| *s).await;
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for io in &self.loops {
            io.command(Command::Stop);
        }
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
