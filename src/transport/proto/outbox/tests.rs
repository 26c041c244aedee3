//! The outbox's tests: first against real sockets on loopback (destinations, order, ECN
//! bits, sources, GSO batches, refused destinations), then against a stand-in [`Wire`]
//! that plays the kernel's partial sends, stalls and refusals.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    io::IoSliceMut,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use quinn::udp::{RecvMeta, UdpSocketState};
use quinn_proto::EcnCodepoint as ProtoEcn;

use super::*;

/// A peer that reads what the loop's socket sends it, with the ECN bits.
struct Peer {
    socket: UdpSocket,
    state: UdpSocketState,
}

impl Peer {
    fn new() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let state = UdpSocketState::new((&socket).into()).expect("udp state");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Self { socket, state }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("addr")
    }

    /// The next packet: its bytes, sender and ECN bits.
    fn next(&self) -> (Vec<u8>, SocketAddr, Option<EcnCodepoint>) {
        let mut buf = vec![0u8; 65536];
        let mut meta = [RecvMeta::default()];
        let n = self
            .state
            .recv(
                (&self.socket).into(),
                &mut [IoSliceMut::new(&mut buf)],
                &mut meta,
            )
            .expect("a packet within 5 s");
        assert_eq!(n, 1);
        (buf[..meta[0].len].to_vec(), meta[0].addr, meta[0].ecn)
    }
}

fn loop_socket(bind: &str) -> (LoopSocket, u16) {
    let std = UdpSocket::bind(bind).expect("bind");
    std.set_nonblocking(true).expect("nonblocking");
    let port = std.local_addr().expect("addr").port();
    (LoopSocket::new(std).expect("loop socket"), port)
}

/// Flushes as the loop does: a socket not yet known writable is waited for.
async fn flush(outbox: &mut Outbox, socket: &LoopSocket) {
    loop {
        match outbox.flush(socket) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::future::poll_fn(|cx| socket.poll_writable(cx))
                    .await
                    .expect("writable");
            }
            Err(e) => panic!("flush: {e}"),
        }
    }
}

fn queue(
    outbox: &mut Outbox,
    to: SocketAddr,
    bytes: &[u8],
    ecn: Option<ProtoEcn>,
    src_ip: Option<IpAddr>,
) {
    let buf = outbox.buffer();
    buf.extend_from_slice(bytes);
    outbox.push(&Transmit {
        destination: to,
        ecn,
        size: bytes.len(),
        segment_size: None,
        src_ip,
    });
}

#[tokio::test]
async fn a_turns_packets_reach_each_destination_in_order_with_their_ecn_bits() {
    let (socket, port) = loop_socket("127.0.0.1:0");
    let peers: Vec<Peer> = (0..3).map(|_| Peer::new()).collect();
    let mut outbox = Outbox::default();
    // Two runs with different ECN bits, then a packet that names its (bound) source.
    for (i, peer) in peers.iter().enumerate() {
        queue(
            &mut outbox,
            peer.addr(),
            &[1, i as u8],
            Some(ProtoEcn::Ect0),
            None,
        );
    }
    for (i, peer) in peers.iter().enumerate() {
        queue(&mut outbox, peer.addr(), &[2, i as u8], None, None);
    }
    let local = Some(Ipv4Addr::LOCALHOST.into());
    queue(
        &mut outbox,
        peers[0].addr(),
        &[3, 0],
        Some(ProtoEcn::Ect1),
        local,
    );
    flush(&mut outbox, &socket).await;
    assert!(outbox.queued.is_empty(), "nothing left queued");
    let from = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for (i, peer) in peers.iter().enumerate() {
        assert_eq!(
            peer.next(),
            (vec![1, i as u8], from, Some(EcnCodepoint::Ect0))
        );
        assert_eq!(peer.next(), (vec![2, i as u8], from, None));
    }
    assert_eq!(
        peers[0].next(),
        (vec![3, 0], from, Some(EcnCodepoint::Ect1))
    );
}

#[tokio::test]
async fn a_socket_bound_to_every_address_writes_replies_one_by_one_from_their_source() {
    let (socket, port) = loop_socket("0.0.0.0:0");
    let peers: Vec<Peer> = (0..2).map(|_| Peer::new()).collect();
    let mut outbox = Outbox::default();
    let local = Some(Ipv4Addr::LOCALHOST.into());
    for (i, peer) in peers.iter().enumerate() {
        queue(
            &mut outbox,
            peer.addr(),
            &[i as u8],
            Some(ProtoEcn::Ect0),
            local,
        );
    }
    let first = outbox.queued[0];
    assert!(!batchable(&first, &socket), "the source must be named");
    flush(&mut outbox, &socket).await;
    let from = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for (i, peer) in peers.iter().enumerate() {
        assert_eq!(peer.next(), (vec![i as u8], from, Some(EcnCodepoint::Ect0)));
    }
}

#[tokio::test]
async fn a_gso_batch_between_single_packets_keeps_the_order() {
    let (socket, _) = loop_socket("127.0.0.1:0");
    let peer = Peer::new();
    let mut outbox = Outbox::default();
    queue(&mut outbox, peer.addr(), b"a", Some(ProtoEcn::Ect0), None);
    let buf = outbox.buffer();
    buf.extend_from_slice(&[b'b'; 20]);
    outbox.push(&Transmit {
        destination: peer.addr(),
        ecn: Some(ProtoEcn::Ect0),
        size: 20,
        segment_size: Some(10),
        src_ip: None,
    });
    queue(&mut outbox, peer.addr(), b"c", Some(ProtoEcn::Ect0), None);
    queue(&mut outbox, peer.addr(), b"d", Some(ProtoEcn::Ect0), None);
    flush(&mut outbox, &socket).await;
    let mut got = Vec::new();
    while got.len() < 5 {
        let (bytes, _, _) = peer.next();
        // Without GSO on the path the kernel still splits the batch into its segments;
        // with GRO on the peer they may come back coalesced.
        got.push(bytes);
        if got.concat().len() >= 1 + 20 + 2 {
            break;
        }
    }
    assert_eq!(
        got.concat(),
        [b"a".as_slice(), &[b'b'; 20], b"c", b"d"].concat()
    );
}

#[tokio::test]
async fn a_full_outbox_says_so_and_empties_on_flush() {
    let (socket, _) = loop_socket("127.0.0.1:0");
    let peer = Peer::new();
    let mut outbox = Outbox::default();
    for i in 0..OUTBOX_PACKETS {
        assert!(!outbox.is_full());
        queue(&mut outbox, peer.addr(), &[i as u8], None, None);
    }
    assert!(outbox.is_full());
    flush(&mut outbox, &socket).await;
    assert!(!outbox.is_full());
    for i in 0..OUTBOX_PACKETS {
        assert_eq!(peer.next().0, vec![i as u8]);
    }
}

#[tokio::test]
async fn a_destination_the_kernel_refuses_loses_only_its_own_packet() {
    let (socket, _) = loop_socket("127.0.0.1:0");
    let peer = Peer::new();
    let mut outbox = Outbox::default();
    queue(&mut outbox, peer.addr(), b"before", None, None);
    // Port 0 is dropped before the kernel sees it; a broadcast address without
    // SO_BROADCAST is refused by the kernel (EACCES) for that one packet, so nothing
    // leaves the machine.
    queue(
        &mut outbox,
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        b"x",
        None,
        None,
    );
    queue(
        &mut outbox,
        SocketAddr::from((Ipv4Addr::BROADCAST, 9)),
        b"y",
        None,
        None,
    );
    queue(&mut outbox, peer.addr(), b"after", None, None);
    queue(&mut outbox, peer.addr(), b"last", None, None);
    flush(&mut outbox, &socket).await;
    assert!(outbox.queued.is_empty(), "nothing left queued");
    assert_eq!(
        outbox.singles_only,
        [false, false],
        "a refused destination keeps batching on"
    );
    assert_eq!(peer.next().0, b"before");
    assert_eq!(peer.next().0, b"after");
    assert_eq!(peer.next().0, b"last");
}

/// How a packet left through a [`Fake`] wire.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    /// In a `sendmmsg`.
    Many,
    /// Alone, through quinn's layer.
    One,
}

/// A wire that plays the kernel: scripted answers to `send_many` (all sent once the
/// script is used up), stalls for the next single sends, a refused IPv6 ECN default, and
/// a record of what went out with the ECN bits it carried.
#[derive(Default)]
struct Fake {
    bound: Option<IpAddr>,
    many: RefCell<VecDeque<io::Result<usize>>>,
    one_stalls: Cell<usize>,
    refuse_ipv6_ecn: bool,
    defaults: RefCell<[Option<EcnCodepoint>; 2]>,
    sent: RefCell<Vec<Sent>>,
}

/// A packet a [`Fake`] wire let out: where, what, how, the ECN bits it asked for, and
/// the socket's default for its family when it went (what a packet without control
/// messages carries).
type Sent = (
    SocketAddr,
    Vec<u8>,
    Via,
    Option<EcnCodepoint>,
    Option<EcnCodepoint>,
);

impl Wire for Fake {
    fn bound_ip(&self) -> Option<IpAddr> {
        self.bound
    }

    fn set_default_ecn(&self, ecn: Option<EcnCodepoint>, ipv4: bool) -> io::Result<()> {
        if !ipv4 && self.refuse_ipv6_ecn {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        self.defaults.borrow_mut()[usize::from(ipv4)] = ecn;
        Ok(())
    }

    fn send_one(&self, t: &UdpTransmit<'_>) -> io::Result<()> {
        if self.one_stalls.get() > 0 {
            self.one_stalls.set(self.one_stalls.get() - 1);
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        let default = self.defaults.borrow()[usize::from(ipv4_controls(t.destination))];
        self.sent
            .borrow_mut()
            .push((t.destination, t.contents.to_vec(), Via::One, t.ecn, default));
        Ok(())
    }

    fn send_many(&self, contents: &[&[u8]], destinations: &[SocketAddr]) -> io::Result<usize> {
        let n = match self.many.borrow_mut().pop_front() {
            Some(Ok(n)) => n.min(contents.len()),
            Some(Err(e)) => return Err(e),
            None => contents.len(),
        };
        for (c, d) in contents.iter().zip(destinations).take(n) {
            let ecn = self.defaults.borrow()[usize::from(ipv4_controls(*d))];
            self.sent
                .borrow_mut()
                .push((*d, c.to_vec(), Via::Many, ecn, ecn));
        }
        Ok(n)
    }
}

impl Fake {
    fn on_loopback() -> Self {
        Self {
            bound: Some(Ipv4Addr::LOCALHOST.into()),
            ..Self::default()
        }
    }

    fn script(&self, answers: impl IntoIterator<Item = io::Result<usize>>) {
        self.many.borrow_mut().extend(answers);
    }

    /// What went out: each packet's first byte and how.
    fn went(&self) -> Vec<(u8, Via)> {
        self.sent
            .borrow()
            .iter()
            .map(|(_, b, v, _, _)| (b[0], *v))
            .collect()
    }
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// An outbox holding `n` one-byte packets, `i` to port `1000 + i`, no ECN bits.
fn to_peers(n: u8) -> Outbox {
    let mut outbox = Outbox::default();
    for i in 0..n {
        queue(&mut outbox, peer(1000 + u16::from(i)), &[i], None, None);
    }
    outbox
}

#[test]
fn a_partial_send_then_a_stall_resumes_where_it_stopped() {
    let wire = Fake::on_loopback();
    wire.script([Ok(2), Err(io::Error::from(io::ErrorKind::WouldBlock))]);
    let mut outbox = to_peers(5);
    let stalled = outbox.flush(&wire).expect_err("the socket stalls");
    assert_eq!(stalled.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(wire.went(), [(0, Via::Many), (1, Via::Many)]);
    assert_eq!(
        outbox.queued.len() - outbox.next,
        3,
        "the rest waits, in order"
    );
    outbox.flush(&wire).expect("the socket takes the rest");
    let all: Vec<(u8, Via)> = (0..5).map(|i| (i, Via::Many)).collect();
    assert_eq!(wire.went(), all, "each once, in order");
    assert!(outbox.queued.is_empty());
}

#[test]
fn an_interrupted_send_is_tried_again() {
    let wire = Fake::on_loopback();
    wire.script([Err(io::Error::from(io::ErrorKind::Interrupted))]);
    let mut outbox = to_peers(3);
    outbox.flush(&wire).expect("flushed");
    let all: Vec<(u8, Via)> = (0..3).map(|i| (i, Via::Many)).collect();
    assert_eq!(wire.went(), all);
}

#[test]
fn a_packet_refused_inside_a_run_is_lost_alone_and_never_resent() {
    let wire = Fake::on_loopback();
    wire.script([Ok(1), Err(io::Error::from(io::ErrorKind::PermissionDenied))]);
    let mut outbox = to_peers(5);
    outbox.flush(&wire).expect("flushed");
    assert_eq!(
        wire.went(),
        [
            (0, Via::Many),
            (2, Via::Many),
            (3, Via::Many),
            (4, Via::Many)
        ],
        "packet 1 is lost, not handed to quinn's layer"
    );
    assert_eq!(outbox.singles_only, [false, false]);
}

#[test]
fn a_send_of_none_sends_the_first_alone() {
    let wire = Fake::on_loopback();
    wire.script([Err(io::Error::from(io::ErrorKind::WriteZero))]);
    let mut outbox = to_peers(3);
    outbox.flush(&wire).expect("flushed");
    assert_eq!(wire.went(), [(0, Via::One), (1, Via::Many), (2, Via::Many)]);
}

#[test]
fn a_refused_ipv6_default_leaves_ipv4_batched_and_every_packet_its_ecn() {
    let wire = Fake {
        refuse_ipv6_ecn: true,
        ..Fake::default()
    };
    let v6 = |port| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let mut outbox = Outbox::default();
    queue(&mut outbox, v6(1000), &[0], Some(ProtoEcn::Ect0), None);
    queue(&mut outbox, v6(1001), &[1], Some(ProtoEcn::Ect0), None);
    queue(&mut outbox, peer(1002), &[2], Some(ProtoEcn::Ect0), None);
    queue(&mut outbox, peer(1003), &[3], Some(ProtoEcn::Ect0), None);
    // A lone packet with other bits between two runs: quinn's layer writes it, and
    // the socket's default follows it too.
    queue(&mut outbox, peer(1004), &[4], None, None);
    queue(&mut outbox, peer(1005), &[5], Some(ProtoEcn::Ect0), None);
    queue(&mut outbox, peer(1006), &[6], Some(ProtoEcn::Ect0), None);
    outbox.flush(&wire).expect("flushed");
    assert_eq!(
        wire.went(),
        [
            (0, Via::One),
            (1, Via::One),
            (2, Via::Many),
            (3, Via::Many),
            (4, Via::One),
            (5, Via::Many),
            (6, Via::Many)
        ]
    );
    assert_eq!(
        outbox.singles_only,
        [true, false],
        "only IPv6 goes one by one"
    );
    for (to, bytes, via, own, default) in wire.sent.borrow().iter() {
        let wanted = if bytes[0] == 4 {
            None
        } else {
            Some(EcnCodepoint::Ect0)
        };
        assert_eq!(*own, wanted, "packet {} to {to} ({via:?})", bytes[0]);
        if to.is_ipv4() {
            // Without its own ECN message (the kernel refused one once) a packet
            // carries the socket's default, which followed it, batched or alone.
            assert_eq!(
                *default, wanted,
                "default for packet {} ({via:?})",
                bytes[0]
            );
        }
    }
    assert_eq!(wire.defaults.borrow()[1], Some(EcnCodepoint::Ect0));
}

#[test]
fn a_single_send_that_stalls_is_sent_once_when_the_socket_takes_it() {
    let wire = Fake::on_loopback();
    wire.one_stalls.set(1);
    let mut outbox = Outbox::default();
    // GSO batches: quinn's layer writes them one by one.
    for i in 0..2u8 {
        outbox.buffer().extend_from_slice(&[i; 20]);
        outbox.push(&Transmit {
            destination: peer(1000),
            ecn: None,
            size: 20,
            segment_size: Some(10),
            src_ip: None,
        });
    }
    let stalled = outbox.flush(&wire).expect_err("the socket stalls");
    assert_eq!(stalled.kind(), io::ErrorKind::WouldBlock);
    assert!(wire.went().is_empty());
    outbox.flush(&wire).expect("flushed");
    assert_eq!(wire.went(), [(0, Via::One), (1, Via::One)]);
}

#[test]
fn a_send_that_reports_none_sent_sends_the_first_alone() {
    let wire = Fake::on_loopback();
    wire.script([Ok(0)]);
    let mut outbox = to_peers(3);
    outbox.flush(&wire).expect("flushed, not spinning");
    assert_eq!(wire.went(), [(0, Via::One), (1, Via::Many), (2, Via::Many)]);
}
