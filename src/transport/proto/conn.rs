//! One connection of the quinn-proto transport, as sessions see it: the
//! `quinn_proto::Connection` under one lock shared with the I/O loop, the wakers of the
//! tasks waiting on it, its control and lane streams, and the datagram sink through
//! which the loop hands received datagrams to the session without waking its task.
//!
//! Whoever changes the connection (a write, a datagram to send, a close) marks it dirty;
//! the loop then runs its events, writes its packets and re-arms its timer. A mark made
//! on the loop's own thread (the relay fan-out) costs a push onto a list the loop drains
//! before it sleeps: no wake-up, no channel, no allocation per recipient.

use std::{
    collections::HashMap,
    future::poll_fn,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    task::{Context, Poll, Waker},
    time::Instant,
};

use bytes::Bytes;
use quinn_proto::{
    ConnectionError, ConnectionHandle, Dir, FinishError, ReadError, ReadableError,
    SendDatagramError, StreamId, VarInt, Written,
};
use tokio::io::{AsyncRead, ReadBuf};

use super::driver::LoopShared;
use crate::transport::WriteError;

/// Takes each datagram the connection receives, on the I/O loop's thread, with when the
/// packet that brought it reached the server (the kernel's receive time where known).
pub(crate) type Sink = Box<dyn FnMut(Bytes, Instant) + Send>;

/// What a connection's handles and the I/O loop share.
pub(crate) struct ConnShared {
    pub(super) handle: ConnectionHandle,
    pub(super) io: Arc<LoopShared>,
    pub(super) state: Mutex<State>,
    pub(super) sink: Mutex<Option<Sink>>,
    /// Set once a sink is installed, so the loop checks it without taking its lock.
    pub(super) has_sink: AtomicBool,
}

/// The connection and who waits on it.
pub(super) struct State {
    pub(super) conn: quinn_proto::Connection,
    /// Why the connection ended, once it has.
    pub(super) error: Option<ConnectionError>,
    pub(super) connected: bool,
    /// Already on the loop's list of connections to service.
    pub(super) dirty: bool,
    /// Already waiting for the socket to take a stalled send.
    pub(super) waiting_tx: bool,
    /// A close asked for and not yet carried out by the loop.
    pub(super) closing: Option<(VarInt, Bytes)>,
    /// When the newest packet handled since datagrams were last taken arrived.
    pub(super) arrived: Option<Instant>,
    pub(super) wakers: Wakers,
}

/// Tasks waiting for something of one connection.
#[derive(Default)]
pub(super) struct Wakers {
    connected: Option<Waker>,
    accept_bi: Option<Waker>,
    open_uni: Vec<Waker>,
    readers: HashMap<StreamId, Waker>,
    writers: HashMap<StreamId, Waker>,
}

impl Wakers {
    pub(super) fn connected(&mut self) {
        if let Some(w) = self.connected.take() {
            w.wake();
        }
    }
    pub(super) fn accept_bi(&mut self) {
        if let Some(w) = self.accept_bi.take() {
            w.wake();
        }
    }
    pub(super) fn open_uni(&mut self) {
        for w in self.open_uni.drain(..) {
            w.wake();
        }
    }
    pub(super) fn reader(&mut self, id: StreamId) {
        if let Some(w) = self.readers.remove(&id) {
            w.wake();
        }
    }
    pub(super) fn writer(&mut self, id: StreamId) {
        if let Some(w) = self.writers.remove(&id) {
            w.wake();
        }
    }
    /// The connection ended: everyone waiting learns it.
    pub(super) fn all(&mut self) {
        self.connected();
        self.accept_bi();
        self.open_uni();
        for (_, w) in self.readers.drain() {
            w.wake();
        }
        for (_, w) in self.writers.drain() {
            w.wake();
        }
    }
}

impl State {
    /// This side closed the connection: it is over for everyone waiting on it (the loop
    /// still sends the close and drains it), as quinn does.
    pub(super) fn closed_locally(&mut self) {
        if self.error.is_none() {
            self.error = Some(ConnectionError::LocallyClosed);
        }
        self.wakers.all();
    }
}

impl ConnShared {
    pub(super) fn new(
        handle: ConnectionHandle,
        conn: quinn_proto::Connection,
        io: Arc<LoopShared>,
    ) -> Self {
        Self {
            handle,
            io,
            state: Mutex::new(State {
                conn,
                error: None,
                connected: false,
                dirty: false,
                waiting_tx: false,
                closing: None,
                arrived: None,
                wakers: Wakers::default(),
            }),
            sink: Mutex::new(None),
            has_sink: AtomicBool::new(false),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the connection half-changed in a
        // way later users could not cope with: quinn-proto's own state stays consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts the connection on the loop's list, once.
    pub(super) fn touch(&self, state: &mut State) {
        if !state.dirty {
            state.dirty = true;
            self.io.schedule(self.handle);
        }
    }
}

/// A connection of the quinn-proto transport; cheap to clone.
#[derive(Clone)]
pub(crate) struct Conn(pub(super) Arc<ConnShared>);

impl Conn {
    /// The peer's current address (it changes when the peer migrates).
    pub(crate) fn remote_address(&self) -> SocketAddr {
        self.0.lock().conn.remote_address()
    }

    /// The application protocol the handshake agreed on.
    pub(crate) fn alpn(&self) -> Option<Vec<u8>> {
        let st = self.0.lock();
        st.conn
            .crypto_session()
            .handshake_data()
            .and_then(|d| {
                d.downcast::<quinn_proto::crypto::rustls::HandshakeData>()
                    .ok()
            })
            .and_then(|d| d.protocol)
    }

    /// Waits for the handshake to complete.
    pub(crate) async fn connected(&self) -> Result<(), ConnectionError> {
        poll_fn(|cx| {
            let mut st = self.0.lock();
            if st.connected {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &st.error {
                return Poll::Ready(Err(e.clone()));
            }
            st.wakers.connected = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Waits for the peer to open a bidirectional stream.
    pub(crate) async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        poll_fn(|cx| {
            let mut st = self.0.lock();
            if let Some(e) = &st.error {
                return Poll::Ready(Err(e.clone()));
            }
            match st.conn.streams().accept(Dir::Bi) {
                Some(id) => {
                    // Accepting may give the peer new stream credit.
                    self.0.touch(&mut st);
                    Poll::Ready(Ok((
                        SendStream::new(self.0.clone(), id),
                        RecvStream::new(self.0.clone(), id),
                    )))
                }
                None => {
                    st.wakers.accept_bi = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Opens a unidirectional stream, or registers to be woken when the peer allows one.
    pub(crate) fn poll_open_uni(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SendStream, ConnectionError>> {
        let mut st = self.0.lock();
        if let Some(e) = &st.error {
            return Poll::Ready(Err(e.clone()));
        }
        match st.conn.streams().open(Dir::Uni) {
            Some(id) => Poll::Ready(Ok(SendStream::new(self.0.clone(), id))),
            None => {
                if !st.wakers.open_uni.iter().any(|w| w.will_wake(cx.waker())) {
                    st.wakers.open_uni.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// Opens a unidirectional stream if the peer allows one now, registering nothing.
    pub(crate) fn try_open_uni(&self) -> Option<Result<SendStream, ConnectionError>> {
        let mut st = self.0.lock();
        if let Some(e) = &st.error {
            return Some(Err(e.clone()));
        }
        st.conn
            .streams()
            .open(Dir::Uni)
            .map(|id| Ok(SendStream::new(self.0.clone(), id)))
    }

    /// Opens a unidirectional stream once the peer allows one.
    pub(crate) async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        poll_fn(|cx| self.poll_open_uni(cx)).await
    }

    /// Queues a datagram, dropping the oldest queued ones when the queue is full;
    /// `Ok(true)` when one had to go.
    pub(crate) fn send_datagram(&self, datagram: Bytes) -> Result<bool, SendDatagramError> {
        let mut st = self.0.lock();
        if st.error.is_some() {
            return Err(SendDatagramError::Disabled);
        }
        let mut datagrams = st.conn.datagrams();
        let behind =
            datagrams.max_size().is_some() && datagrams.send_buffer_space() < datagram.len();
        datagrams.send(datagram, true)?;
        self.0.touch(&mut st);
        Ok(behind)
    }

    /// Closes the connection with an application code and reason.
    pub(crate) fn close(&self, code: VarInt, reason: &[u8]) {
        let mut st = self.0.lock();
        // The loop closes it after writing what the streams already hold, so a last
        // event written just before the close still goes out.
        if st.error.is_none() && st.closing.is_none() {
            st.closing = Some((code, Bytes::copy_from_slice(reason)));
        }
        st.closed_locally();
        self.0.touch(&mut st);
    }

    /// Why the connection ended; `None` while it is open.
    pub(crate) fn close_reason(&self) -> Option<ConnectionError> {
        self.0.lock().error.clone()
    }

    /// UDP datagrams received on this connection so far.
    pub(crate) fn udp_rx_datagrams(&self) -> u64 {
        self.0.lock().conn.stats().udp_rx.datagrams
    }

    /// Installs the sink that takes every datagram from now on (and the ones that
    /// arrived before), on the loop's thread.
    pub(crate) fn set_sink(&self, sink: Sink) {
        *self.0.sink.lock().unwrap_or_else(PoisonError::into_inner) = Some(sink);
        self.0.has_sink.store(true, Ordering::Release);
        let mut st = self.0.lock();
        self.0.touch(&mut st);
    }

    /// Removes the sink (and what it holds: the session's state) when the session ends.
    pub(crate) fn clear_sink(&self) {
        self.0.has_sink.store(false, Ordering::Release);
        self.0
            .sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// The sending half of a stream.
pub(crate) struct SendStream {
    conn: Arc<ConnShared>,
    id: StreamId,
}

impl SendStream {
    fn new(conn: Arc<ConnShared>, id: StreamId) -> Self {
        Self { conn, id }
    }

    /// Writes what the stream takes now of `chunks`, or registers to be woken when it
    /// takes more.
    pub(crate) fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut [Bytes],
    ) -> Poll<Result<Written, WriteError>> {
        let mut st = self.conn.lock();
        if let Some(e) = &st.error {
            return Poll::Ready(Err(WriteError::ConnectionLost(e.clone())));
        }
        match st.conn.send_stream(self.id).write_chunks(chunks) {
            Ok(written) => {
                self.conn.touch(&mut st);
                Poll::Ready(Ok(written))
            }
            Err(quinn_proto::WriteError::Blocked) => {
                st.wakers.writers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Err(quinn_proto::WriteError::Stopped(code)) => {
                Poll::Ready(Err(WriteError::Stopped(code)))
            }
            Err(quinn_proto::WriteError::ClosedStream) => {
                Poll::Ready(Err(WriteError::ClosedStream))
            }
        }
    }

    /// Writes all of `chunks`, waiting for flow control as needed.
    pub(crate) async fn write_all_chunks(
        &mut self,
        chunks: &mut [Bytes],
    ) -> Result<(), WriteError> {
        let mut from = 0;
        while from < chunks.len() {
            if chunks[from].is_empty() {
                from += 1;
                continue;
            }
            let written = poll_fn(|cx| self.poll_write_chunks(cx, &mut chunks[from..])).await?;
            from += written.chunks;
        }
        Ok(())
    }

    /// Resolves once the peer has acknowledged all of a finished stream, stopped it, or
    /// the connection ended.
    pub(crate) async fn acknowledged(&mut self) {
        poll_fn(|cx| {
            let mut st = self.conn.lock();
            match st.conn.send_stream(self.id).stopped() {
                // Gone: finished and acknowledged (or reset) and forgotten.
                Err(_) | Ok(Some(_)) => Poll::Ready(()),
                Ok(None) if st.error.is_some() => Poll::Ready(()),
                Ok(None) => {
                    st.wakers.writers.insert(self.id, cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
    }

    /// Ends the stream after what was written.
    pub(crate) fn finish(&mut self) -> Result<(), WriteError> {
        let mut st = self.conn.lock();
        let result = st.conn.send_stream(self.id).finish();
        self.conn.touch(&mut st);
        match result {
            Ok(()) => Ok(()),
            Err(FinishError::Stopped(code)) => Err(WriteError::Stopped(code)),
            Err(FinishError::ClosedStream) => Err(WriteError::ClosedStream),
        }
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        let mut st = self.conn.lock();
        st.wakers.writers.remove(&self.id);
        if st.error.is_some() {
            return;
        }
        // A dropped stream ends after what was written, as with quinn.
        match st.conn.send_stream(self.id).finish() {
            Ok(()) => self.conn.touch(&mut st),
            Err(FinishError::Stopped(code)) => {
                if st.conn.send_stream(self.id).reset(code).is_ok() {
                    self.conn.touch(&mut st);
                }
            }
            Err(FinishError::ClosedStream) => {}
        }
    }
}

/// The receiving half of a stream: an `AsyncRead`.
pub(crate) struct RecvStream {
    conn: Arc<ConnShared>,
    id: StreamId,
    /// The peer finished the stream and everything was read.
    done: bool,
}

impl RecvStream {
    fn new(conn: Arc<ConnShared>, id: StreamId) -> Self {
        Self {
            conn,
            id,
            done: false,
        }
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.done || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let this = &mut *self;
        let mut st = this.conn.lock();
        if let Some(e) = &st.error {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                e.clone(),
            )));
        }
        let mut read = false;
        let mut result = Ok(());
        let should_transmit = {
            let mut stream = st.conn.recv_stream(this.id);
            let mut chunks = match stream.read(true) {
                Ok(chunks) => chunks,
                Err(ReadableError::ClosedStream) => {
                    this.done = true;
                    return Poll::Ready(Ok(()));
                }
                Err(ReadableError::IllegalOrderedRead) => {
                    return Poll::Ready(Err(io::Error::other(
                        "unordered read on an ordered stream",
                    )));
                }
            };
            loop {
                match chunks.next(buf.remaining()) {
                    Ok(Some(chunk)) => {
                        buf.put_slice(&chunk.bytes);
                        read = true;
                        if buf.remaining() == 0 {
                            break;
                        }
                    }
                    Ok(None) => {
                        this.done = true;
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Reset(code)) => {
                        result = Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            format!("stream reset by peer: code {code}"),
                        ));
                        break;
                    }
                }
            }
            chunks.finalize().should_transmit()
        };
        // Reading frees flow-control credit the peer may need to hear of.
        if should_transmit {
            this.conn.touch(&mut st);
        }
        if read || this.done || result.is_err() {
            Poll::Ready(result)
        } else {
            st.wakers.readers.insert(this.id, cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        let mut st = self.conn.lock();
        st.wakers.readers.remove(&self.id);
        if st.error.is_some() || self.done {
            return;
        }
        if st
            .conn
            .recv_stream(self.id)
            .stop(VarInt::from_u32(0))
            .is_ok()
        {
            self.conn.touch(&mut st);
        }
    }
}
