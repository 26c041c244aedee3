use std::{
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
