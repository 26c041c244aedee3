//! An in-process UDP impairment proxy on loopback: loss, delay, jitter (which reorders),
//! duplication between clients and a server, and a switch that cuts the link. It is the
//! one forwarder of the project: `quicmatch-bench relay --loss/--delay/--jitter` routes
//! its clients through it, and the end-to-end tests include this file (from
//! `tests/common/proxy.rs`) for their lossy links, so the two cannot drift apart.
//!
//! Clients send to [`Proxy::addr`]. Each client address gets its own upstream socket, so
//! the server sees one distinct address per client, as it would without the proxy. One
//! task forwards every uplink packet; one task per client forwards its downlink. Each
//! keeps its delayed packets in a heap ordered by due time, so a delay costs a timer per
//! direction, not a task per packet.
//!
//! It depends only on tokio, socket2 and fastrand, which both the bench and the server's
//! test build have, and it never panics: what it cannot forward, it drops.

use std::{
    cmp::Ordering as CmpOrdering,
    collections::{hash_map::Entry, BinaryHeap, HashMap},
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    net::UdpSocket,
    task::{JoinHandle, JoinSet},
    time::{Instant, Sleep},
};

/// Kernel buffers of every proxy socket. A burst for a hundred clients must not overflow
/// them while the forwarding task waits for a core: the proxy should add only the loss
/// it is told to add.
const SOCKET_BUFFER: usize = 4 << 20;

/// The largest UDP payload.
const MAX_PACKET: usize = 65_536;

/// How packets are mistreated in one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Impairment {
    /// Chance (0..=1) a packet is dropped.
    pub(crate) loss: f64,
    /// Fixed one-way delay.
    pub(crate) delay: Duration,
    /// Extra random delay, uniform in 0..jitter (this reorders packets too).
    pub(crate) jitter: Duration,
    /// Chance (0..=1) a packet is sent twice (each copy with its own jitter).
    pub(crate) duplicate: f64,
}

impl Impairment {
    /// Nothing lost, delayed or duplicated: a link that can only be cut.
    pub(crate) const CLEAN: Self = Self {
        loss: 0.0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        duplicate: 0.0,
    };
}

/// Packets the proxy saw, both directions together.
#[derive(Default)]
struct Counters {
    passed: AtomicU64,
    dropped: AtomicU64,
}

/// The proxy: clients send to `addr`, which forwards to the server. Dropping it stops
/// every forwarding task.
pub(crate) struct Proxy {
    /// Where clients send.
    pub(crate) addr: SocketAddr,
    cut: Arc<AtomicBool>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The uplink task owns the downlink tasks (a JoinSet), so this aborts them too.
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy in front of `server` with the same impairment both ways, its randomness
    /// seeded by `seed` (same seed, same decisions for the same packet order).
    pub(crate) async fn start(server: SocketAddr, imp: Impairment, seed: u64) -> io::Result<Self> {
        Self::start_split(server, imp, imp, seed).await
    }

    /// A proxy with `up` on packets to the server and `down` on packets to clients.
    pub(crate) async fn start_split(
        server: SocketAddr,
        up: Impairment,
        down: Impairment,
        seed: u64,
    ) -> io::Result<Self> {
        let front = Arc::new(loopback_socket()?);
        let addr = front.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let uplink = Link::new(up, cut.clone(), counters.clone(), seed);
        let task = tokio::spawn(run_uplink(front, server, uplink, down));
        Ok(Self {
            addr,
            cut,
            counters,
            task,
        })
    }

    /// Drops every packet from now on, both ways, as if the network vanished (packets
    /// already delayed still arrive).
    #[allow(
        dead_code,
        reason = "the end-to-end tests cut links; the bench does not"
    )]
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Ends a [`cut`](Self::cut): packets flow again.
    #[allow(
        dead_code,
        reason = "the end-to-end tests cut links; the bench does not"
    )]
    pub(crate) fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Packets forwarded and packets dropped so far (by loss or a cut), both ways.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.counters.passed.load(Ordering::Relaxed),
            self.counters.dropped.load(Ordering::Relaxed),
        )
    }
}

/// A UDP socket on 127.0.0.1, any port, with big kernel buffers (as big as the kernel
/// grants: less only means drops under bursts).
fn loopback_socket() -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    UdpSocket::from_std(socket.into())
}

/// A packet waiting for its time.
struct Pending {
    due: Instant,
    /// Arrival order, so equal due times leave in the order they came.
    seq: u64,
    socket: Arc<UdpSocket>,
    /// `None`: the socket is connected to where the packet goes.
    to: Option<SocketAddr>,
    pkt: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    /// Reversed, so the max-heap pops the soonest packet first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// One direction of one forwarding task: what to do to packets, and those delayed.
struct Link {
    imp: Impairment,
    cut: Arc<AtomicBool>,
    counters: Arc<Counters>,
    rng: fastrand::Rng,
    /// Delayed packets, soonest first.
    line: BinaryHeap<Pending>,
    seq: u64,
}

impl Link {
    fn new(imp: Impairment, cut: Arc<AtomicBool>, counters: Arc<Counters>, seed: u64) -> Self {
        Self {
            imp,
            cut,
            counters,
            rng: fastrand::Rng::with_seed(seed),
            line: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Drops, sends now, or queues `pkt` (once or twice) for `to` through `socket`.
    async fn offer(&mut self, socket: &Arc<UdpSocket>, to: Option<SocketAddr>, pkt: &[u8]) {
        if self.cut.load(Ordering::SeqCst) || self.rng.f64() < self.imp.loss {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.counters.passed.fetch_add(1, Ordering::Relaxed);
        let copies = if self.rng.f64() < self.imp.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.imp.delay + self.imp.jitter.mul_f64(self.rng.f64());
            if delay.is_zero() && self.line.is_empty() {
                send(socket, to, pkt).await;
                continue;
            }
            self.seq += 1;
            self.line.push(Pending {
                due: Instant::now() + delay,
                seq: self.seq,
                socket: socket.clone(),
                to,
                pkt: pkt.to_vec(),
            });
        }
    }

    /// When the next delayed packet is due.
    fn next_due(&self) -> Option<Instant> {
        self.line.peek().map(|p| p.due)
    }

    /// Sends every packet due by now.
    async fn flush(&mut self) {
        let now = Instant::now();
        while self.line.peek().is_some_and(|p| p.due <= now) {
            if let Some(p) = self.line.pop() {
                send(&p.socket, p.to, &p.pkt).await;
            }
        }
    }
}

/// Sends one packet; a failed send is a lost packet, as on a real network.
async fn send(socket: &UdpSocket, to: Option<SocketAddr>, pkt: &[u8]) {
    let _ = match to {
        Some(addr) => socket.send_to(pkt, addr).await,
        None => socket.send(pkt).await,
    };
}

/// Whether a receive error is the echo of an ICMP error (the server's port was closed
/// for a moment) rather than a broken socket.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

/// The timer of a link's delay line, re-armed only when the soonest due time changes
/// (with a fixed delay that is once per flush, not once per packet).
struct Alarm {
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Alarm {
    fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
    }

    /// Rings at `due`, or never when nothing waits.
    fn arm(&mut self, due: Option<Instant>) {
        if due != self.armed {
            if let Some(due) = due {
                self.sleep.as_mut().reset(due);
            }
            self.armed = due;
        }
    }

    async fn ring(&mut self) {
        if self.armed.is_some() {
            self.sleep.as_mut().await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// Forwards clients' packets to the server, opening an upstream socket (and its
/// downlink task, impaired by `down`) for each new client address.
async fn run_uplink(front: Arc<UdpSocket>, server: SocketAddr, mut up: Link, down: Impairment) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // Dropped with this task, which aborts every downlink.
    let mut downlinks = JoinSet::new();
    let mut buf = vec![0u8; MAX_PACKET];
    let mut alarm = Alarm::new();
    loop {
        alarm.arm(up.next_due());
        tokio::select! {
            r = front.recv_from(&mut buf) => {
                let (n, client) = match r {
                    Ok(r) => r,
                    Err(e) if transient(&e) => continue,
                    Err(_) => return,
                };
                let upstream = match upstreams.entry(client) {
                    Entry::Occupied(e) => e.get().clone(),
                    Entry::Vacant(e) => {
                        let Ok(u) = connected(server).await else { continue };
                        let seed = up.rng.u64(..);
                        let link = Link::new(down, up.cut.clone(), up.counters.clone(), seed);
                        downlinks.spawn(run_downlink(u.clone(), front.clone(), client, link));
                        e.insert(u).clone()
                    }
                };
                up.offer(&upstream, None, &buf[..n]).await;
            }
            () = alarm.ring() => up.flush().await,
        }
    }
}

/// An upstream socket connected to the server.
async fn connected(server: SocketAddr) -> io::Result<Arc<UdpSocket>> {
    let socket = loopback_socket()?;
    socket.connect(server).await?;
    Ok(Arc::new(socket))
}

/// Forwards the server's packets for `client` back to it through `front`.
async fn run_downlink(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    mut link: Link,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut alarm = Alarm::new();
    loop {
        alarm.arm(link.next_due());
        tokio::select! {
            r = upstream.recv(&mut buf) => match r {
                Ok(n) => link.offer(&front, Some(client), &buf[..n]).await,
                Err(e) if transient(&e) => {}
                Err(_) => return,
            },
            () = alarm.ring() => link.flush().await,
        }
    }
}
