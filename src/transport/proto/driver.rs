//! The I/O loop of the quinn-proto transport: one future, polled on a current-thread
//! runtime of its own thread. Each turn it takes the commands other threads left
//! (accept, retry, refuse, close), reads a bounded number of packet batches and feeds
//! them to the endpoint and their connections, fires due timers, then services every
//! connection that changed: its events wake the tasks waiting on it, its datagrams go to
//! its session's sink (whose relay marks the recipients changed, on this thread, so they
//! are serviced in the same turn), and its packets are queued in the outbox, which
//! sends them together once every connection had its turn. A write the socket cannot
//! take waits for writability with the connections behind it; nothing is dropped on
//! this side.

use std::{
    cell::Cell,
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    future::Future,
    io::{self, IoSliceMut},
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use quinn::udp::Transmit as UdpTransmit;
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, EndpointConfig, Event, ServerConfig,
    StreamEvent, Transmit, VarInt,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use super::{
    cids::{self, SteeringCids},
    conn::{Conn, ConnShared},
    outbox::Outbox,
    socket::{self, LoopSocket, Received},
    Incoming,
};

/// Packet batches read per turn before the connections they touched are serviced.
const RECV_ROUNDS: usize = 8;
/// Packets one connection writes per round before the others get their turn.
const TRANSMIT_BOUND: usize = 64;
/// Packets one loop may have waiting from the others.
const MAX_FORWARDED: usize = 4096;
/// Timer-heap entries allowed per connection before the heap is rebuilt.
const TIMER_SLACK: usize = 4;
/// Most datagrams one GSO write carries.
const MAX_GSO_SEGMENTS: usize = 10;

thread_local! {
    /// The loop this thread runs (its `LoopShared` address), so a mark made here needs no
    /// wake-up.
    static ON_LOOP: Cell<usize> = const { Cell::new(0) };
}

/// What other threads give the loop.
pub(crate) enum Command {
    Accept(u64, oneshot::Sender<Result<Conn, ConnectionError>>),
    Retry(u64),
    Refuse(u64),
    Ignore(u64),
    CloseAll(VarInt, Bytes),
    Stop,
}

/// What the loop and everyone else share: connections to service, commands, the wake-up.
#[derive(Default)]
pub(crate) struct LoopShared {
    dirty: Mutex<Vec<ConnectionHandle>>,
    commands: Mutex<Vec<Command>>,
    waker: AtomicWaker,
    woken: AtomicBool,
    /// The loop ended: commands are no longer taken.
    stopped: AtomicBool,
    /// Packets other loops received for this loop's connections.
    inbound: Mutex<Vec<Forwarded>>,
}

impl LoopShared {
    fn on_loop(&self) -> bool {
        ON_LOOP.with(|c| c.get()) == self as *const Self as usize
    }

    /// Puts a connection on the list to service; wakes the loop unless this is its thread
    /// (it drains the list before it sleeps).
    pub(super) fn schedule(&self, ch: ConnectionHandle) {
        self.dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ch);
        if !self.on_loop() {
            self.wake();
        }
    }

    pub(super) fn command(&self, command: Command) {
        if self.stopped.load(Ordering::Acquire) {
            // Dropped: an accept's waiter gets an error.
            return;
        }
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(command);
        self.wake();
    }

    fn wake(&self) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Hands a packet to this loop from another loop's thread; past `MAX_FORWARDED`
    /// waiting it is dropped, as a full socket buffer would.
    fn forward(&self, packet: Forwarded) {
        {
            let mut inbound = self.inbound.lock().unwrap_or_else(PoisonError::into_inner);
            if inbound.len() >= MAX_FORWARDED {
                metrics::counter!("quicmatch_io_forward_drops_total").increment(1);
                return;
            }
            inbound.push(packet);
        }
        self.wake();
    }

    fn take_dirty(&self, into: &mut Vec<ConnectionHandle>) {
        let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
        into.append(&mut dirty);
    }
}

/// Runs the loop on this thread until the endpoint is dropped.
pub(super) fn run(
    socket: std::net::UdpSocket,
    endpoint_config: EndpointConfig,
    server_config: ServerConfig,
    looped: Looped,
    incoming: mpsc::Sender<Incoming>,
    live: watch::Sender<usize>,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let Some(io) = looped.peers.get(looped.index).cloned() else {
        let _ = ready.send(Err(io::Error::other("no such I/O loop")));
        return;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let socket = match LoopSocket::new(socket) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        debug!(
            arrival_times = socket.stamps_arrivals(),
            "I/O loop {} started", looped.index
        );
        ON_LOOP.with(|c| c.set(Arc::as_ptr(&io) as usize));
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(endpoint_config),
            Some(Arc::new(server_config)),
            !socket.may_fragment(),
            None,
        );
        let recv_len = endpoint.config().get_max_udp_payload_size().min(64 * 1024) as usize
            * socket.max_receive_segments()
            * quinn::udp::BATCH_SIZE;
        let driver = Driver {
            socket,
            received_meta: Vec::with_capacity(quinn::udp::BATCH_SIZE),
            io,
            looped,
            forwarded: Vec::new(),
            endpoint,
            conns: Conns::default(),
            timers: BinaryHeap::new(),
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            timer_at: None,
            pending: HashMap::new(),
            next_incoming: 0,
            incoming,
            recv_buf: vec![0; recv_len].into_boxed_slice(),
            outbox: Outbox::default(),
            resp_buf: Vec::new(),
            stalled: false,
            waiting_tx: Vec::new(),
            batch: Vec::new(),
            received: Vec::new(),
            closing: None,
            live,
            stop: false,
        };
        let _ = ready.send(Ok(()));
        driver.await;
    });
}

/// The loop's connections by handle. quinn-proto hands out handles as small reused
/// indices, so a vector indexed by them is the cheapest map (looked up per packet).
#[derive(Default)]
struct Conns {
    slots: Vec<Option<Entry>>,
    len: usize,
}

impl Conns {
    fn get(&self, ch: &ConnectionHandle) -> Option<&Entry> {
        self.slots.get(ch.0).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, ch: &ConnectionHandle) -> Option<&mut Entry> {
        self.slots.get_mut(ch.0).and_then(Option::as_mut)
    }

    fn insert(&mut self, ch: ConnectionHandle, entry: Entry) {
        if self.slots.len() <= ch.0 {
            self.slots.resize_with(ch.0 + 1, || None);
        }
        if let Some(slot) = self.slots.get_mut(ch.0) {
            if slot.replace(entry).is_none() {
                self.len += 1;
            }
        }
    }

    fn remove(&mut self, ch: &ConnectionHandle) {
        if let Some(slot) = self.slots.get_mut(ch.0) {
            if slot.take().is_some() {
                self.len -= 1;
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn values(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().flatten()
    }

    fn iter(&self) -> impl Iterator<Item = (ConnectionHandle, &Entry)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (ConnectionHandle(i), e)))
    }
}

/// A connection as the loop keeps it.
struct Entry {
    shared: Arc<ConnShared>,
    /// The deadline in the timer heap, to skip stale heap entries.
    armed: Option<Instant>,
    /// The connection's own next deadline, at or after `armed`.
    due: Option<Instant>,
}

/// Where a loop stands among the endpoint's loops.
pub(super) struct Looped {
    pub(super) index: usize,
    /// Every loop of the endpoint, this one included, by index.
    pub(super) peers: Arc<Vec<Arc<LoopShared>>>,
    /// Validates destination ids to find their owner.
    pub(super) cids: SteeringCids,
    /// Packets of established connections that waited longer in the socket are
    /// dropped unread (zero: never).
    pub(super) max_age: Duration,
}

/// A packet another loop's socket received for a connection of this loop.
pub(crate) struct Forwarded {
    addr: SocketAddr,
    dst_ip: Option<IpAddr>,
    ecn: Option<quinn_proto::EcnCodepoint>,
    arrived: Instant,
    data: BytesMut,
}

struct Driver {
    socket: LoopSocket,
    /// What the last receive batch described.
    received_meta: Vec<Received>,
    io: Arc<LoopShared>,
    looped: Looped,
    /// Scratch for packets handed over by other loops.
    forwarded: Vec<Forwarded>,
    endpoint: quinn_proto::Endpoint,
    conns: Conns,
    timers: BinaryHeap<Reverse<(Instant, ConnectionHandle)>>,
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_at: Option<Instant>,
    /// Attempts waiting for the accept loop.
    pending: HashMap<u64, quinn_proto::Incoming>,
    next_incoming: u64,
    incoming: mpsc::Sender<Incoming>,
    recv_buf: Box<[u8]>,
    /// The packets this turn wrote, sent together once every connection had its turn
    /// (or when it fills).
    outbox: Outbox,
    resp_buf: Vec<u8>,
    /// The socket would not take the outbox's packets: they wait for writability.
    stalled: bool,
    /// Connections with packets to write once the socket takes the outbox's.
    waiting_tx: Vec<ConnectionHandle>,
    /// Connections being serviced this round.
    batch: Vec<ConnectionHandle>,
    /// Datagrams taken from connections this round, for their sinks.
    received: Vec<(ConnectionHandle, Bytes, Instant)>,
    /// Set once every connection was told to close: new ones are refused.
    closing: Option<(VarInt, Bytes)>,
    live: watch::Sender<usize>,
    stop: bool,
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.io.waker.register(cx.waker());
        this.io.woken.store(false, Ordering::Release);
        this.run_commands(Instant::now());
        if this.stop {
            this.shut();
            return Poll::Ready(());
        }
        if this.stalled {
            this.unstall(cx);
        }
        this.take_forwarded();
        let more = this.recv(cx);
        let now = Instant::now();
        this.expire(now);
        this.service(now);
        // A send that stalled while servicing must ask to be woken when the socket
        // takes more.
        if this.stalled {
            this.unstall(cx);
            if !this.stalled {
                cx.waker().wake_by_ref();
            }
        }
        if more {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.arm(cx);
        Poll::Pending
    }
}

fn udp_transmit<'a>(t: &Transmit, contents: &'a [u8]) -> UdpTransmit<'a> {
    UdpTransmit {
        destination: t.destination,
        ecn: t.ecn.map(|e| match e {
            quinn_proto::EcnCodepoint::Ect0 => quinn::udp::EcnCodepoint::Ect0,
            quinn_proto::EcnCodepoint::Ect1 => quinn::udp::EcnCodepoint::Ect1,
            quinn_proto::EcnCodepoint::Ce => quinn::udp::EcnCodepoint::Ce,
        }),
        contents,
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    }
}

impl Driver {
    fn run_commands(&mut self, now: Instant) {
        let commands = std::mem::take(
            &mut *self
                .io
                .commands
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for command in commands {
            match command {
                Command::Accept(id, tx) => {
                    let Some(incoming) = self.pending.remove(&id) else {
                        let _ = tx.send(Err(ConnectionError::LocallyClosed));
                        continue;
                    };
                    self.resp_buf.clear();
                    match self
                        .endpoint
                        .accept(incoming, now, &mut self.resp_buf, None)
                    {
                        Ok((ch, conn)) => {
                            let shared = Arc::new(ConnShared::new(ch, conn, self.io.clone()));
                            self.conns.insert(
                                ch,
                                Entry {
                                    shared: shared.clone(),
                                    armed: None,
                                    due: None,
                                },
                            );
                            self.live.send_replace(self.conns.len());
                            {
                                let mut st = shared.lock();
                                shared.touch(&mut st);
                            }
                            if let Err(Ok(orphan)) = tx.send(Ok(Conn(shared))) {
                                // Nobody waits for it any more: close it, as dropping
                                // its last handle does with quinn.
                                orphan.close(VarInt::from_u32(0), b"");
                            }
                        }
                        Err(e) => {
                            if let Some(t) = e.response {
                                self.respond(&t);
                            }
                            let _ = tx.send(Err(e.cause));
                        }
                    }
                }
                Command::Retry(id) => {
                    if let Some(incoming) = self.pending.remove(&id) {
                        self.resp_buf.clear();
                        match self.endpoint.retry(incoming, &mut self.resp_buf) {
                            Ok(t) => self.respond(&t),
                            Err(e) => self.endpoint.ignore(e.into_incoming()),
                        }
                    }
                }
                Command::Refuse(id) => {
                    if let Some(incoming) = self.pending.remove(&id) {
                        self.refuse(incoming);
                    }
                }
                Command::Ignore(id) => {
                    if let Some(incoming) = self.pending.remove(&id) {
                        self.endpoint.ignore(incoming);
                    }
                }
                Command::CloseAll(code, reason) => {
                    for (_, incoming) in std::mem::take(&mut self.pending) {
                        self.refuse(incoming);
                    }
                    for entry in self.conns.values() {
                        let mut st = entry.shared.lock();
                        st.conn.close(now, code, reason.clone());
                        st.closed_locally();
                        entry.shared.touch(&mut st);
                    }
                    self.closing = Some((code, reason));
                }
                Command::Stop => self.stop = true,
            }
        }
    }

    /// The endpoint is stopping: every waiter learns the connection is gone, and later
    /// commands are dropped (an accept waiting on one gets an error).
    fn shut(&mut self) {
        self.io.stopped.store(true, Ordering::Release);
        drop(std::mem::take(
            &mut *self
                .io
                .commands
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        ));
        for entry in self.conns.values() {
            let mut st = entry.shared.lock();
            st.closed_locally();
        }
    }

    fn refuse(&mut self, incoming: quinn_proto::Incoming) {
        self.resp_buf.clear();
        let t = self.endpoint.refuse(incoming, &mut self.resp_buf);
        self.respond(&t);
    }

    /// Sends a stateless answer if the socket takes it now; a peer repeats its attempt,
    /// so dropping one under load costs nothing.
    fn respond(&self, t: &Transmit) {
        // A forged source with port 0 gets nothing: the kernel's EINVAL for it would make
        // quinn's layer give up GSO and its ECN messages for good.
        if t.destination.port() == 0 {
            return;
        }
        let _ = self
            .socket
            .try_send(&udp_transmit(t, &self.resp_buf[..t.size]));
    }

    /// Reads up to `RECV_ROUNDS` batches; `true` when there may be more.
    fn recv(&mut self, cx: &mut Context<'_>) -> bool {
        let mut buf = std::mem::take(&mut self.recv_buf);
        let mut metas = std::mem::take(&mut self.received_meta);
        let mut more = true;
        {
            let chunk = buf.len() / quinn::udp::BATCH_SIZE;
            for _ in 0..RECV_ROUNDS {
                let mut iovs: Vec<IoSliceMut<'_>> =
                    buf.chunks_mut(chunk).map(IoSliceMut::new).collect();
                match self.socket.poll_recv(cx, &mut iovs, &mut metas) {
                    Poll::Ready(Ok(_)) => {
                        let now = Instant::now();
                        for (meta, iov) in metas.iter().zip(iovs.iter()) {
                            let mut data = BytesMut::from(&iov[..meta.len.min(iov.len())]);
                            while !data.is_empty() {
                                let packet = data.split_to(meta.stride.min(data.len()));
                                self.on_packet(now, meta, packet);
                            }
                        }
                    }
                    Poll::Pending => {
                        more = false;
                        break;
                    }
                    // ICMP errors from gone peers surface here; QUIC ignores them.
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {}
                    // Another error (out of memory for a moment, and the like): the
                    // socket may still hold packets and its readiness was not cleared,
                    // so read again next turn rather than wait for a timer.
                    Poll::Ready(Err(e)) => {
                        warn!(error = %e, "UDP receive failed");
                        break;
                    }
                }
            }
        }
        self.recv_buf = buf;
        self.received_meta = metas;
        more
    }

    fn on_packet(&mut self, now: Instant, meta: &Received, packet: BytesMut) {
        if socket::is_stale(&packet, meta.arrived, now, self.looped.max_age) {
            metrics::counter!("quicmatch_io_stale_packets_total").increment(1);
            return;
        }
        if self.looped.peers.len() > 1 {
            if let Some(owner) = cids::owner(&packet, &self.looped.cids) {
                if owner != self.looped.index {
                    if let Some(peer) = self.looped.peers.get(owner) {
                        metrics::counter!("quicmatch_io_forwarded_total").increment(1);
                        peer.forward(Forwarded {
                            addr: meta.addr,
                            dst_ip: meta.dst_ip,
                            ecn: meta.ecn,
                            arrived: meta.arrived,
                            data: packet,
                        });
                        return;
                    }
                }
            }
        }
        self.handle_packet(now, meta.addr, meta.dst_ip, meta.ecn, meta.arrived, packet);
    }

    /// Packets other loops handed over since the last turn.
    fn take_forwarded(&mut self) {
        let mut forwarded = std::mem::take(&mut self.forwarded);
        std::mem::swap(
            &mut forwarded,
            &mut *self
                .io
                .inbound
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if forwarded.is_empty() {
            self.forwarded = forwarded;
            return;
        }
        let now = Instant::now();
        for p in forwarded.drain(..) {
            if socket::is_stale(&p.data, p.arrived, now, self.looped.max_age) {
                metrics::counter!("quicmatch_io_stale_packets_total").increment(1);
                continue;
            }
            self.handle_packet(now, p.addr, p.dst_ip, p.ecn, p.arrived, p.data);
        }
        self.forwarded = forwarded;
    }

    fn handle_packet(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        dst_ip: Option<IpAddr>,
        ecn: Option<quinn_proto::EcnCodepoint>,
        arrived: Instant,
        packet: BytesMut,
    ) {
        self.resp_buf.clear();
        match self
            .endpoint
            .handle(now, addr, dst_ip, ecn, packet, &mut self.resp_buf)
        {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(entry) = self.conns.get(&ch) {
                    let mut st = entry.shared.lock();
                    st.conn.handle_event(event);
                    // The packet is processed: its datagrams are taken now, dated by
                    // its arrival, so the sink knows how long each waited.
                    if entry.shared.has_sink.load(Ordering::Acquire) {
                        while let Some(d) = st.conn.datagrams().recv() {
                            self.received.push((ch, d, arrived));
                        }
                    } else {
                        st.arrived = st.arrived.max(Some(arrived));
                    }
                    if !st.dirty {
                        st.dirty = true;
                        self.batch.push(ch);
                    }
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.on_incoming(incoming),
            Some(DatagramEvent::Response(t)) => self.respond(&t),
            None => {}
        }
    }

    fn on_incoming(&mut self, incoming: quinn_proto::Incoming) {
        if self.closing.is_some() {
            self.refuse(incoming);
            return;
        }
        let id = self.next_incoming;
        self.next_incoming += 1;
        let handle = Incoming {
            id,
            remote: incoming.remote_address(),
            validated: incoming.remote_address_validated(),
            may_retry: incoming.may_retry(),
            io: self.io.clone(),
            answered: false,
        };
        match self.incoming.try_send(handle) {
            Ok(()) => {
                self.pending.insert(id, incoming);
            }
            Err(e) => {
                let mut handle = match e {
                    mpsc::error::TrySendError::Full(h) | mpsc::error::TrySendError::Closed(h) => h,
                };
                handle.answered = true;
                debug!("accept queue full; refusing");
                self.refuse(incoming);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((at, ch))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.conns.get_mut(&ch) else {
                continue;
            };
            if entry.armed != Some(at) {
                continue;
            }
            match entry.due {
                Some(due) if due > now => {
                    entry.armed = Some(due);
                    self.timers.push(Reverse((due, ch)));
                    continue;
                }
                None => {
                    entry.armed = None;
                    continue;
                }
                Some(_) => entry.armed = None,
            }
            let mut st = entry.shared.lock();
            st.conn.handle_timeout(now);
            if !st.dirty {
                st.dirty = true;
                self.batch.push(ch);
            }
        }
    }

    /// Services changed connections until none is left: events, datagrams to sinks,
    /// packets out.
    fn service(&mut self, now: Instant) {
        loop {
            self.io.take_dirty(&mut self.batch);
            if self.batch.is_empty() {
                if !self.stalled {
                    self.flush_outbox();
                }
                return;
            }
            let batch = std::mem::take(&mut self.batch);
            for &ch in &batch {
                self.drive(ch, now);
            }
            let mut batch = batch;
            batch.clear();
            if self.batch.is_empty() {
                self.batch = batch;
            }
            // Sinks run with no connection locked: their relay locks the recipients.
            let received = std::mem::take(&mut self.received);
            let mut received = received;
            for (ch, datagram, arrived) in received.drain(..) {
                let Some(entry) = self.conns.get(&ch) else {
                    continue;
                };
                let shared = entry.shared.clone();
                let mut sink = shared.sink.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(f) = sink.as_mut() {
                    // A panic in relay code costs that session, never the loop.
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        f(datagram, arrived)
                    }));
                    if run.is_err() {
                        warn!("a datagram sink panicked; closing its connection");
                        sink.take();
                        shared.has_sink.store(false, Ordering::Release);
                        drop(sink);
                        Conn(shared.clone()).close(VarInt::from_u32(0), b"internal error");
                    }
                }
            }
            self.received = received;
        }
    }

    /// One connection: endpoint events, application events, datagrams, packets, timer.
    fn drive(&mut self, ch: ConnectionHandle, now: Instant) {
        let Some(entry) = self.conns.get(&ch) else {
            return;
        };
        let shared = entry.shared.clone();
        let mut st = shared.lock();
        st.dirty = false;
        while let Some(event) = st.conn.poll_endpoint_events() {
            if let Some(reply) = self.endpoint.handle_event(ch, event) {
                st.conn.handle_event(reply);
            }
        }
        while let Some(event) = st.conn.poll() {
            match event {
                Event::Connected => {
                    st.connected = true;
                    st.wakers.connected();
                }
                Event::ConnectionLost { reason } => {
                    if st.error.is_none() {
                        st.error = Some(reason);
                    }
                    st.wakers.all();
                }
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => st.wakers.accept_bi(),
                Event::Stream(StreamEvent::Readable { id }) => st.wakers.reader(id),
                Event::Stream(
                    StreamEvent::Writable { id }
                    | StreamEvent::Finished { id }
                    | StreamEvent::Stopped { id, .. },
                ) => st.wakers.writer(id),
                Event::Stream(StreamEvent::Available { dir: Dir::Uni }) => st.wakers.open_uni(),
                Event::Stream(_)
                | Event::HandshakeDataReady
                | Event::DatagramReceived
                | Event::DatagramsUnblocked => {}
            }
        }
        if shared.has_sink.load(Ordering::Acquire) {
            // Datagrams that came before the sink: the newest packet then dates them,
            // so their age is never overstated.
            let arrived = st.arrived.take().unwrap_or(now);
            while let Some(d) = st.conn.datagrams().recv() {
                self.received.push((ch, d, arrived));
            }
        }
        if self.stalled {
            if !st.waiting_tx {
                st.waiting_tx = true;
                self.waiting_tx.push(ch);
            }
        } else {
            let max = self.socket.max_transmit_segments().min(MAX_GSO_SEGMENTS);
            let mut sent = 0;
            loop {
                if sent >= TRANSMIT_BOUND {
                    // More next round, after the others had theirs.
                    shared.touch(&mut st);
                    break;
                }
                if self.outbox.is_full() && !self.flush_outbox() {
                    st.waiting_tx = true;
                    self.waiting_tx.push(ch);
                    break;
                }
                let Some(t) = st.conn.poll_transmit(now, max, self.outbox.buffer()) else {
                    break;
                };
                sent += t.segment_size.map_or(1, |s| t.size.div_ceil(s));
                self.outbox.push(&t);
            }
            while let Some(event) = st.conn.poll_endpoint_events() {
                if let Some(reply) = self.endpoint.handle_event(ch, event) {
                    st.conn.handle_event(reply);
                }
            }
            // A requested close, now that what was written has gone out.
            if let Some((code, reason)) = st.closing.take() {
                st.conn.close(now, code, reason);
                shared.touch(&mut st);
            }
        }
        let drained = st.conn.is_drained();
        let next = st.conn.poll_timeout();
        if drained && st.error.is_none() {
            st.error = Some(ConnectionError::LocallyClosed);
            st.wakers.all();
        }
        drop(st);
        if drained {
            self.conns.remove(&ch);
            self.live.send_replace(self.conns.len());
            return;
        }
        if let Some(entry) = self.conns.get_mut(&ch) {
            entry.due = next;
            // Nearly every packet moves a connection's deadline later (idle, loss
            // detection): the earlier heap entry then stays, and when it surfaces
            // `expire` moves it to the deadline due then, without touching the
            // connection. Only an earlier deadline is pushed.
            if let Some(at) = next {
                if entry.armed.is_none_or(|armed| at < armed) {
                    entry.armed = Some(at);
                    self.timers.push(Reverse((at, ch)));
                }
            }
        }
        // Superseded entries stay in the heap until they surface (cheaper than removing
        // them); when they outnumber the connections the heap is rebuilt, so it stays
        // within a few entries per connection.
        if self.timers.len() > TIMER_SLACK * self.conns.len() + 64 {
            self.timers = self
                .conns
                .iter()
                .filter_map(|(ch, e)| e.armed.map(|at| Reverse((at, ch))))
                .collect();
        }
    }

    /// Sends the outbox; `false` when the socket would not take it all (the rest waits
    /// for writability; unreachable destinations and the like lose their packet, as on
    /// the network, and recovery handles it).
    fn flush_outbox(&mut self) -> bool {
        match self.outbox.flush(&self.socket) {
            Ok(()) => true,
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    metrics::counter!("quicmatch_io_send_stalls_total").increment(1);
                    self.stalled = true;
                    return false;
                }
                debug!(error = %e, "UDP send failed");
                true
            }
        }
    }

    /// Sends the outbox once the socket takes it, then lets the connections behind it
    /// write again.
    fn unstall(&mut self, cx: &mut Context<'_>) {
        if !self.stalled {
            return;
        }
        loop {
            match self.socket.poll_writable(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    debug!(error = %e, "UDP socket not writable");
                    break;
                }
                Poll::Pending => return,
            }
            match self.outbox.flush(&self.socket) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                _ => break,
            }
        }
        self.stalled = false;
        for ch in std::mem::take(&mut self.waiting_tx) {
            if let Some(entry) = self.conns.get(&ch) {
                let mut st = entry.shared.lock();
                st.waiting_tx = false;
                if !st.dirty {
                    st.dirty = true;
                    self.batch.push(ch);
                }
            }
        }
    }

    /// Sets the timer to the earliest connection deadline.
    fn arm(&mut self, cx: &mut Context<'_>) {
        while let Some(Reverse((at, ch))) = self.timers.peek().copied() {
            if self.conns.get(&ch).is_some_and(|e| e.armed == Some(at)) {
                break;
            }
            self.timers.pop();
        }
        let Some(Reverse((at, _))) = self.timers.peek().copied() else {
            self.timer_at = None;
            return;
        };
        if self.timer_at != Some(at) {
            self.timer_at = Some(at);
            self.timer.as_mut().reset(at.into());
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }
}
