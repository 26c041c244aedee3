//! The UDP socket of one I/O loop. Writing goes through quinn's UDP layer (GSO, ECN,
//! source addresses); so does configuring the socket. Reading, on Linux, is a
//! `recvmmsg` of this module's own that also asks the kernel when each packet arrived
//! (`SO_TIMESTAMPNS`): the wait a datagram spends in the socket's receive buffer is
//! where an overloaded server's latency builds up, and quinn's layer does not report
//! it. The relay drops datagrams that waited longer than `relay.max_datagram_age`.
//! Elsewhere quinn's reader is used and a packet's arrival is the time it was read.

use std::{
    io::{self, IoSliceMut},
    net::{IpAddr, SocketAddr},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;

/// One received buffer: a datagram, or several of one size coalesced by GRO.
#[derive(Clone, Copy)]
pub(super) struct Received {
    pub(super) addr: SocketAddr,
    pub(super) len: usize,
    /// The size of each datagram in the buffer (the last may be shorter).
    pub(super) stride: usize,
    pub(super) ecn: Option<quinn_proto::EcnCodepoint>,
    pub(super) dst_ip: Option<IpAddr>,
    /// When the kernel received it (or, where it cannot say, when it was read).
    pub(super) arrived: Instant,
}

/// The loop's socket.
pub(super) struct LoopSocket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    #[cfg(target_os = "linux")]
    stamped: Option<stamped::Reader>,
    metas: Box<[RecvMeta]>,
    /// The address the socket is bound to, unless it is bound to every address.
    bound_ip: Option<IpAddr>,
    /// The ECN bits packets sent without control messages carry (the socket's
    /// defaults), for IPv6 peers and for IPv4 ones.
    #[cfg(target_os = "linux")]
    default_ecn: [std::cell::Cell<Option<quinn::udp::EcnCodepoint>>; 2],
}

impl LoopSocket {
    /// Takes over a bound socket; must run inside the loop's runtime.
    pub(super) fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        let bound_ip = socket
            .local_addr()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        #[cfg(target_os = "linux")]
        let stamped = stamped::Reader::new(&socket);
        Ok(Self {
            io: tokio::net::UdpSocket::from_std(socket)?,
            state,
            #[cfg(target_os = "linux")]
            stamped,
            metas: vec![RecvMeta::default(); quinn::udp::BATCH_SIZE].into_boxed_slice(),
            bound_ip,
            #[cfg(target_os = "linux")]
            default_ecn: Default::default(),
        })
    }

    /// The address the socket is bound to; `None` when bound to every address.
    pub(super) fn bound_ip(&self) -> Option<IpAddr> {
        self.bound_ip
    }

    /// Makes `ecn` the ECN bits of packets sent without control messages (IPv4 ones, or
    /// IPv6 ones when `ipv4` is false); a system call only when they change.
    #[cfg(target_os = "linux")]
    pub(super) fn set_default_ecn(
        &self,
        ecn: Option<quinn::udp::EcnCodepoint>,
        ipv4: bool,
    ) -> io::Result<()> {
        use std::os::fd::AsFd as _;
        // An IPv6 socket keeps one default per family: IPv4-mapped peers take IP_TOS.
        let cell = &self.default_ecn[usize::from(ipv4)];
        if cell.get() == ecn {
            return Ok(());
        }
        let bits = ecn.map_or(0u8, |e| e as u8);
        if ipv4 {
            rustix::net::sockopt::set_ip_tos(self.io.as_fd(), bits)?;
        } else {
            rustix::net::sockopt::set_ipv6_tclass(self.io.as_fd(), u32::from(bits))?;
        }
        cell.set(ecn);
        Ok(())
    }

    /// Elsewhere packets are written one by one, with their own control messages.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn set_default_ecn(
        &self,
        _ecn: Option<quinn::udp::EcnCodepoint>,
        _ipv4: bool,
    ) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// Runs a write on the socket's descriptor; `WouldBlock` clears its writability, so
    /// the loop then waits for the socket.
    #[cfg(target_os = "linux")]
    pub(super) fn try_write<R>(
        &self,
        f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        use std::os::fd::AsFd as _;
        self.io.try_io(Interest::WRITABLE, || f(self.io.as_fd()))
    }

    /// Whether the kernel reports arrival times (the age of a datagram is known).
    pub(super) fn stamps_arrivals(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.stamped.is_some();
        #[cfg(not(target_os = "linux"))]
        return false;
    }

    pub(super) fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    pub(super) fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    pub(super) fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Sends one transmit now, or `WouldBlock`.
    pub(super) fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.io.try_io(Interest::WRITABLE, || {
            self.state.send((&self.io).into(), transmit)
        })
    }

    /// Ready once the socket may take more.
    pub(super) fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_send_ready(cx)
    }

    /// Reads one batch into `bufs` (one buffer each), describing each in `out`.
    pub(super) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        out: &mut Vec<Received>,
    ) -> Poll<io::Result<usize>> {
        out.clear();
        loop {
            std::task::ready!(self.io.poll_recv_ready(cx))?;
            #[cfg(target_os = "linux")]
            if let Some(reader) = self.stamped.as_mut() {
                match self
                    .io
                    .try_io(Interest::READABLE, || reader.recv(&self.io, bufs, out))
                {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            let metas = &mut self.metas[..bufs.len().min(quinn::udp::BATCH_SIZE)];
            let result = self.io.try_io(Interest::READABLE, || {
                self.state.recv((&self.io).into(), bufs, metas)
            });
            match result {
                Ok(n) => {
                    let now = Instant::now();
                    out.extend(metas.iter().take(n).map(|m| Received {
                        addr: m.addr,
                        len: m.len,
                        stride: m.stride,
                        ecn: m.ecn.map(ecn),
                        dst_ip: m.dst_ip,
                        arrived: now,
                    }));
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Whether a packet waited in the socket past `max_age` and may be shed unread: only
/// short-header packets (established connections) are, whose peers take the drop as
/// network loss (reliable data is sent again, congestion control slows the sender);
/// handshakes always go through. Shedding before decryption is what lets an overloaded
/// loop catch up: a packet dropped after decryption has already cost a third of its
/// relay.
pub(super) fn is_stale(packet: &[u8], arrived: Instant, now: Instant, max_age: Duration) -> bool {
    !max_age.is_zero()
        && packet.first().is_some_and(|b| b & 0x80 == 0)
        && now.saturating_duration_since(arrived) > max_age
}

fn ecn(e: quinn::udp::EcnCodepoint) -> quinn_proto::EcnCodepoint {
    match e {
        quinn::udp::EcnCodepoint::Ect0 => quinn_proto::EcnCodepoint::Ect0,
        quinn::udp::EcnCodepoint::Ect1 => quinn_proto::EcnCodepoint::Ect1,
        quinn::udp::EcnCodepoint::Ce => quinn_proto::EcnCodepoint::Ce,
    }
}

/// The ECN bits of a TOS or traffic-class byte.
fn ecn_bits(tos: u8) -> Option<quinn_proto::EcnCodepoint> {
    match tos & 0b11 {
        0b10 => Some(quinn_proto::EcnCodepoint::Ect0),
        0b01 => Some(quinn_proto::EcnCodepoint::Ect1),
        0b11 => Some(quinn_proto::EcnCodepoint::Ce),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_established_packets_that_waited_past_the_bound_are_shed() {
        let arrived = Instant::now();
        let bound = Duration::from_millis(40);
        let late = arrived + bound + Duration::from_millis(1);
        let short = [0x40u8, 1, 2, 3];
        let long = [0xc0u8, 0, 0, 0, 1];
        assert!(is_stale(&short, arrived, late, bound));
        assert!(
            !is_stale(&short, arrived, arrived + bound, bound),
            "at the bound"
        );
        assert!(
            !is_stale(&long, arrived, late, bound),
            "handshakes always pass"
        );
        assert!(!is_stale(&short, arrived, late, Duration::ZERO), "off");
        assert!(!is_stale(&[], arrived, late, bound));
    }
}

#[cfg(target_os = "linux")]
mod stamped {
    //! `recvmmsg` with the kernel's receive timestamps, reading the same control
    //! messages quinn's layer asks for (GRO segment size, ECN, destination address).

    use std::{
        io::{self, IoSliceMut},
        net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
        os::fd::AsRawFd as _,
        time::{Duration, Instant, SystemTime},
    };

    use nix::{
        cmsg_space,
        sys::{
            socket::{
                recvmmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders,
                SockaddrStorage,
            },
            time::TimeSpec,
        },
    };

    use super::{ecn_bits, Received};
    #[cfg(test)]
    use quinn::udp::UdpSocketState;

    pub(super) struct Reader {
        /// The control-message space each packet gets.
        space: usize,
    }

    impl Reader {
        /// `None` when the kernel will not stamp packets (then quinn's reader is used).
        pub(super) fn new(socket: &std::net::UdpSocket) -> Option<Self> {
            setsockopt(socket, sockopt::ReceiveTimestampns, &true).ok()?;
            let space = cmsg_space!(
                TimeSpec,
                i32,
                i32,
                nix::libc::in6_pktinfo,
                nix::libc::in_pktinfo
            );
            Some(Self {
                space: space.capacity(),
            })
        }

        pub(super) fn recv(
            &mut self,
            socket: &tokio::net::UdpSocket,
            bufs: &mut [IoSliceMut<'_>],
            out: &mut Vec<Received>,
        ) -> io::Result<usize> {
            out.clear();
            let now = Instant::now();
            let wall = SystemTime::now();
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .take(quinn::udp::BATCH_SIZE)
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            // Fresh headers each call: the kernel shrinks each header's control and
            // address lengths to what it used, and nix does not restore them, so reused
            // headers would truncate the next packet's control messages (a GRO segment
            // size among them).
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(
                slices.len(),
                Some(Vec::with_capacity(self.space)),
            );
            // EINTR comes back as `Interrupted`, which the caller retries.
            let results = recvmmsg(
                socket.as_raw_fd(),
                &mut headers,
                slices.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)?;
            for msg in results {
                let Some(addr) = msg.address.as_ref().and_then(address) else {
                    // Not an IP peer: nothing a connection could take. Keep the slot so
                    // buffers and descriptions stay paired.
                    out.push(Received {
                        addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                        len: 0,
                        stride: 1,
                        ecn: None,
                        dst_ip: None,
                        arrived: now,
                    });
                    continue;
                };
                let mut r = Received {
                    addr,
                    len: msg.bytes,
                    stride: msg.bytes.max(1),
                    ecn: None,
                    dst_ip: None,
                    arrived: now,
                };
                // A truncated control buffer (never seen: the space above holds every
                // message asked for with room to spare) loses all of them, the segment
                // size included: the buffer is then taken as one packet, which fails to
                // decrypt and is dropped like any damaged packet.
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        match c {
                            ControlMessageOwned::ScmTimestampns(ts) => {
                                r.arrived = arrival(now, wall, ts);
                            }
                            ControlMessageOwned::UdpGroSegments(s) if s > 0 => {
                                r.stride = s as usize;
                            }
                            ControlMessageOwned::Ipv4Tos(tos) => r.ecn = ecn_bits(tos),
                            ControlMessageOwned::Ipv6TClass(tc) => r.ecn = ecn_bits(tc as u8),
                            ControlMessageOwned::Ipv4PacketInfo(info) => {
                                r.dst_ip = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                                    info.ipi_addr.s_addr,
                                ))));
                            }
                            ControlMessageOwned::Ipv6PacketInfo(info) => {
                                r.dst_ip = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                            }
                            _ => {}
                        }
                    }
                }
                out.push(r);
            }
            Ok(out.len())
        }
    }

    fn address(s: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = s.as_sockaddr_in() {
            return Some(SocketAddr::from((v4.ip(), v4.port())));
        }
        let v6 = s.as_sockaddr_in6()?;
        Some(SocketAddr::V6(std::net::SocketAddrV6::new(
            v6.ip(),
            v6.port(),
            v6.flowinfo(),
            v6.scope_id(),
        )))
    }

    /// The kernel's wall-clock stamp as a point on the monotonic clock: `now` less how
    /// long before `wall` it was taken. A stamp from the future, or one that makes no
    /// sense (before 1970), counts as now. The stamp and `wall` read the same clock
    /// microseconds apart, so only a clock step between a packet's arrival and its
    /// reading (an NTP correction) skews an age, by the size of the step.
    fn arrival(now: Instant, wall: SystemTime, ts: TimeSpec) -> Instant {
        let (Ok(secs), Ok(nanos)) = (u64::try_from(ts.tv_sec()), u32::try_from(ts.tv_nsec()))
        else {
            return now;
        };
        let Some(stamp) =
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos.min(999_999_999)))
        else {
            return now;
        };
        let waited = wall.duration_since(stamp).unwrap_or_default();
        now.checked_sub(waited).unwrap_or(now)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_stamp_becomes_how_long_ago_it_was_taken() {
            let now = Instant::now();
            let wall = SystemTime::now();
            let ago = wall - Duration::from_millis(30);
            let since = ago
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970");
            let ts = TimeSpec::from_duration(since);
            let at = arrival(now, wall, ts);
            let waited = now - at;
            assert!(waited >= Duration::from_millis(29) && waited <= Duration::from_millis(31));
        }

        #[test]
        fn a_stamp_before_1970_is_now() {
            let now = Instant::now();
            let ts = TimeSpec::new(-5, 0);
            assert_eq!(arrival(now, SystemTime::now(), ts), now);
        }

        #[test]
        fn a_stamp_from_the_future_is_now() {
            let now = Instant::now();
            let wall = SystemTime::now();
            let later = (wall + Duration::from_secs(5))
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970");
            assert_eq!(arrival(now, wall, TimeSpec::from_duration(later)), now);
        }

        #[tokio::test]
        async fn packets_carry_their_arrival_time_and_sender() {
            let std = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            std.set_nonblocking(true).expect("nonblocking");
            let to = std.local_addr().expect("addr");
            // Configured by quinn's layer first, as the loop's socket is.
            let _state = UdpSocketState::new((&std).into()).expect("udp state");
            let mut reader = Reader::new(&std).expect("timestamps");
            let socket = tokio::net::UdpSocket::from_std(std).expect("tokio socket");
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            peer.send_to(b"first", to).expect("send");
            peer.send_to(b"second!", to).expect("send");
            // The packets wait in the receive buffer; their stamps say so.
            std::thread::sleep(Duration::from_millis(40));
            socket.readable().await.expect("readable");
            let mut storage = vec![0u8; 2 * 2048];
            let mut bufs: Vec<IoSliceMut<'_>> =
                storage.chunks_mut(2048).map(IoSliceMut::new).collect();
            let mut out = Vec::new();
            let n = reader.recv(&socket, &mut bufs, &mut out).expect("recv");
            assert_eq!(n, 2);
            assert_eq!(&bufs[0][..out[0].len], b"first");
            assert_eq!(&bufs[1][..out[1].len], b"second!");
            for r in &out {
                assert_eq!(r.addr, peer.local_addr().expect("addr"));
                assert_eq!(r.dst_ip, Some(to.ip()), "the address it was sent to");
                assert!(
                    r.arrived.elapsed() >= Duration::from_millis(35),
                    "{:?}",
                    r.arrived.elapsed()
                );
            }
        }

        #[tokio::test]
        async fn coalesced_packets_keep_their_segment_size_after_a_plain_one() {
            let std = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            std.set_nonblocking(true).expect("nonblocking");
            let to = std.local_addr().expect("addr");
            let state = UdpSocketState::new((&std).into()).expect("udp state");
            if state.gro_segments() < 2 {
                return; // no GRO here: nothing is coalesced
            }
            let mut reader = Reader::new(&std).expect("timestamps");
            let socket = tokio::net::UdpSocket::from_std(std).expect("tokio socket");
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            let peer_state = UdpSocketState::new((&peer).into()).expect("udp state");
            let mut storage = vec![0u8; 2 * 65536];
            let mut out = Vec::new();
            // A plain packet first: its header comes back with less control space used.
            peer.send_to(b"plain", to).expect("send");
            socket.readable().await.expect("readable");
            {
                let mut bufs: Vec<IoSliceMut<'_>> =
                    storage.chunks_mut(65536).map(IoSliceMut::new).collect();
                reader.recv(&socket, &mut bufs, &mut out).expect("recv");
            }
            assert_eq!(out[0].len, 5);
            // Then three segments in one GSO send, which GRO hands over as one buffer.
            let contents = vec![7u8; 3 * 1200];
            let transmit = quinn::udp::Transmit {
                destination: to,
                ecn: None,
                contents: &contents,
                segment_size: Some(1200),
                src_ip: None,
            };
            peer_state
                .send((&peer).into(), &transmit)
                .expect("gso send");
            let mut total = 0;
            while total < 3 * 1200 {
                socket.readable().await.expect("readable");
                let mut bufs: Vec<IoSliceMut<'_>> =
                    storage.chunks_mut(65536).map(IoSliceMut::new).collect();
                match reader.recv(&socket, &mut bufs, &mut out) {
                    Ok(_) => {
                        for r in &out {
                            assert_eq!(r.stride, 1200, "segment size of a {} byte buffer", r.len);
                            total += r.len;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(total, 3 * 1200);
        }
    }
}
