//! The `quinn-proto` relay: the same relay as `quinn-relay` (same transport settings,
//! same join protocol, same clients), driven without the `quinn` crate's runtime layer.
//! One thread owns the socket, the endpoint and every connection: it reads a batch of
//! packets, feeds them to their connections, relays each received datagram straight
//! into the recipients' connections, then writes every connection's packets. No
//! channels, no per-connection tasks, no wake-ups between them. It measures what a
//! transport built that way could reach on this machine.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    io::ErrorKind,
    net::SocketAddr,
    sync::Arc,
    time::Instant,
};

use bytes::{Bytes, BytesMut};
use mio::{net::UdpSocket, Events, Interest, Poll, Token};
use quinn_proto::{
    Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig, Event, StreamEvent,
    StreamId,
};

/// Packets read before the connections they touched are serviced.
const READ_BATCH: usize = 64;

struct Conn {
    conn: Connection,
    /// The match, once the join stream said which.
    joined: Option<u32>,
    /// The join stream and the bytes of the match number read so far.
    join: Option<(StreamId, Vec<u8>)>,
    /// The deadline in the timer heap, to skip stale heap entries.
    armed: Option<Instant>,
}

/// Everything the relay thread owns.
struct Relay {
    socket: UdpSocket,
    endpoint: Endpoint,
    conns: HashMap<ConnectionHandle, Conn>,
    table: HashMap<u32, Vec<ConnectionHandle>>,
    timers: BinaryHeap<Reverse<(Instant, ConnectionHandle)>>,
    /// Connections to service after the current batch.
    touched: HashSet<ConnectionHandle>,
    out: Vec<u8>,
}

/// Entry point of `quicmatch-bench proto-relay`: serves until killed.
pub(crate) fn run(args: &crate::quinn_relay::Args) -> anyhow::Result<()> {
    let config = crate::quinn_relay::server_config(&args.dir, args.default_acks)?;
    let socket = crate::quinn_relay::socket(args.listen)?;
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket);
    let mut relay = Relay {
        socket,
        endpoint: Endpoint::new(
            Arc::new(EndpointConfig::default()),
            Some(Arc::new(config)),
            true,
            None,
        ),
        conns: HashMap::new(),
        table: HashMap::new(),
        timers: BinaryHeap::new(),
        touched: HashSet::new(),
        out: Vec::with_capacity(2048),
    };
    println!("ready");
    relay.serve()
}

impl Relay {
    fn serve(&mut self) -> anyhow::Result<()> {
        let mut poll = Poll::new()?;
        poll.registry()
            .register(&mut self.socket, Token(0), Interest::READABLE)?;
        let mut events = Events::with_capacity(8);
        let mut buf = vec![0u8; 65_536];
        loop {
            let timeout = self
                .timers
                .peek()
                .map(|Reverse((t, _))| t.saturating_duration_since(Instant::now()));
            poll.poll(&mut events, timeout)?;
            // Edge-triggered: read until the socket is empty, servicing every batch.
            loop {
                let mut read = 0;
                let now = Instant::now();
                while read < READ_BATCH {
                    match self.socket.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            read += 1;
                            self.on_packet(now, from, BytesMut::from(&buf[..n]));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        // ICMP errors from gone clients surface here; keep serving.
                        Err(_) => {}
                    }
                }
                self.expire_timers(Instant::now());
                self.service(Instant::now());
                if read < READ_BATCH {
                    break;
                }
            }
        }
    }

    fn send(&self, to: SocketAddr, data: &[u8]) {
        // A full socket buffer drops the packet, as the network would.
        let _ = self.socket.send_to(data, to);
    }

    fn on_packet(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        self.out.clear();
        match self
            .endpoint
            .handle(now, from, None, None, data, &mut self.out)
        {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.conn.handle_event(event);
                    self.touched.insert(ch);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.out.clear();
                match self.endpoint.accept(incoming, now, &mut self.out, None) {
                    Ok((ch, conn)) => {
                        self.conns.insert(
                            ch,
                            Conn {
                                conn,
                                joined: None,
                                join: None,
                                armed: None,
                            },
                        );
                        self.touched.insert(ch);
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            self.send(t.destination, &self.out[..t.size]);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => self.send(t.destination, &self.out[..t.size]),
            None => {}
        }
    }

    fn expire_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, ch))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(c) = self.conns.get_mut(&ch) {
                if c.armed == Some(t) {
                    c.armed = None;
                    c.conn.handle_timeout(now);
                    self.touched.insert(ch);
                }
            }
        }
    }

    /// Runs every touched connection's events, relays the datagrams they received,
    /// then writes their packets and re-arms their timers.
    fn service(&mut self, now: Instant) {
        let mut relayed: Vec<(ConnectionHandle, Bytes)> = Vec::new();
        let mut gone = Vec::new();
        let touched: Vec<ConnectionHandle> = self.touched.iter().copied().collect();
        for ch in touched {
            let Some(c) = self.conns.get_mut(&ch) else {
                continue;
            };
            while let Some(ev) = c.conn.poll_endpoint_events() {
                if let Some(reply) = self.endpoint.handle_event(ch, ev) {
                    c.conn.handle_event(reply);
                }
            }
            while let Some(ev) = c.conn.poll() {
                match ev {
                    Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                        if let Some(id) = c.conn.streams().accept(Dir::Bi) {
                            c.join = Some((id, Vec::new()));
                        }
                    }
                    Event::DatagramReceived => {
                        while let Some(d) = c.conn.datagrams().recv() {
                            relayed.push((ch, d));
                        }
                    }
                    Event::ConnectionLost { .. } => gone.push(ch),
                    _ => {}
                }
            }
            if c.joined.is_none() {
                if let Some(m) = read_join(c) {
                    c.joined = Some(m);
                    self.table.entry(m).or_default().push(ch);
                }
            }
            if c.conn.is_drained() {
                gone.push(ch);
            }
        }
        for (from, d) in relayed {
            let Some(m) = self.conns.get(&from).and_then(|c| c.joined) else {
                continue;
            };
            for &peer in self.table.get(&m).into_iter().flatten() {
                if peer == from {
                    continue;
                }
                if let Some(p) = self.conns.get_mut(&peer) {
                    // Oldest dropped first when the queue is full: datagram semantics.
                    let _ = p.conn.datagrams().send(d.clone(), true);
                    self.touched.insert(peer);
                }
            }
        }
        for ch in gone {
            if let Some(c) = self.conns.remove(&ch) {
                if let Some(m) = c.joined {
                    if let Some(members) = self.table.get_mut(&m) {
                        members.retain(|h| *h != ch);
                        if members.is_empty() {
                            self.table.remove(&m);
                        }
                    }
                }
            }
            self.touched.remove(&ch);
        }
        let touched: Vec<ConnectionHandle> = self.touched.drain().collect();
        for ch in touched {
            let Some(c) = self.conns.get_mut(&ch) else {
                continue;
            };
            loop {
                self.out.clear();
                let Some(t) = c.conn.poll_transmit(now, 1, &mut self.out) else {
                    break;
                };
                let _ = self.socket.send_to(&self.out[..t.size], t.destination);
            }
            // Transmitting can queue endpoint events (new connection ids).
            while let Some(ev) = c.conn.poll_endpoint_events() {
                if let Some(reply) = self.endpoint.handle_event(ch, ev) {
                    c.conn.handle_event(reply);
                }
            }
            let next = c.conn.poll_timeout();
            if next != c.armed {
                c.armed = next;
                if let Some(t) = next {
                    self.timers.push(Reverse((t, ch)));
                }
            }
        }
    }
}

/// Reads the join stream's match number once all four bytes are in, and answers it.
fn read_join(c: &mut Conn) -> Option<u32> {
    let (id, got) = c.join.as_mut()?;
    let id = *id;
    if let Ok(mut chunks) = c.conn.recv_stream(id).read(true) {
        while got.len() < 4 {
            match chunks.next(4 - got.len()) {
                Ok(Some(chunk)) => got.extend_from_slice(&chunk.bytes),
                _ => break,
            }
        }
        let _ = chunks.finalize();
    }
    let m = u32::from_le_bytes(got.get(..4)?.try_into().ok()?);
    let mut send = c.conn.send_stream(id);
    let _ = send.write(&[1]);
    let _ = send.finish();
    c.join = None;
    Some(m)
}
