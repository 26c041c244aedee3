//! The packets one turn of an I/O loop writes, queued and then sent together. A relay
//! fans each datagram out to other peers, so GSO (one destination per call) cannot
//! batch a turn's packets; on Linux one `sendmmsg` sends a run of them whatever their
//! destinations. Those packets carry no control messages: the socket's default ECN bits
//! are set to theirs first (a run shares them; they change only when quinn-proto's ECN
//! validation does), and their source is the address the socket is bound to. A GSO
//! batch, a reply that must name its source (a socket bound to every address), every
//! packet once the kernel refused the ECN default, and every packet on other systems go
//! through quinn's UDP layer one by one, which also keeps its handling of send errors.

use std::{
    io,
    net::{IpAddr, SocketAddr},
};

use quinn::udp::{EcnCodepoint, Transmit as UdpTransmit};
use quinn_proto::Transmit;
use tracing::debug;

use super::socket::LoopSocket;

/// What the outbox writes through: the loop's socket ([`LoopSocket`]), or a stand-in in
/// tests that plays the kernel's partial sends, stalls and refusals.
pub(super) trait Wire {
    /// The address the socket is bound to; `None` when bound to every address.
    fn bound_ip(&self) -> Option<IpAddr>;
    /// Makes `ecn` the ECN bits of packets sent without control messages (IPv4 ones,
    /// or IPv6 ones when `ipv4` is false).
    fn set_default_ecn(&self, ecn: Option<EcnCodepoint>, ipv4: bool) -> io::Result<()>;
    /// Sends one packet with its own control messages, through quinn's UDP layer: only
    /// `WouldBlock` comes back as an error.
    fn send_one(&self, transmit: &UdpTransmit<'_>) -> io::Result<()>;
    /// Sends `contents[i]` to `destinations[i]` in one system call, without control
    /// messages; how many went (at least one).
    fn send_many(&self, contents: &[&[u8]], destinations: &[SocketAddr]) -> io::Result<usize>;
}

impl Wire for LoopSocket {
    fn bound_ip(&self) -> Option<IpAddr> {
        Self::bound_ip(self)
    }

    fn set_default_ecn(&self, ecn: Option<EcnCodepoint>, ipv4: bool) -> io::Result<()> {
        Self::set_default_ecn(self, ecn, ipv4)
    }

    fn send_one(&self, transmit: &UdpTransmit<'_>) -> io::Result<()> {
        self.try_send(transmit)
    }

    #[cfg(target_os = "linux")]
    fn send_many(&self, contents: &[&[u8]], destinations: &[SocketAddr]) -> io::Result<usize> {
        self.try_write(|fd| mmsg::send(fd, contents, destinations))
    }

    #[cfg(not(target_os = "linux"))]
    fn send_many(&self, _contents: &[&[u8]], _destinations: &[SocketAddr]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// Packets queued before the loop sends them, even mid-turn.
pub(super) const OUTBOX_PACKETS: usize = 64;

/// A queued packet's description; its bytes are in the slot of the same index.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Queued {
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    segment_size: Option<usize>,
    src_ip: Option<IpAddr>,
    size: usize,
}

impl Queued {
    /// One datagram (not a GSO batch): what `sendmmsg` takes.
    fn single(&self) -> bool {
        self.segment_size.is_none_or(|s| s >= self.size)
    }

    /// Whether two packets can share the socket's defaults in one run.
    fn same_controls(&self, other: &Self) -> bool {
        self.ecn == other.ecn
            && self.src_ip == other.src_ip
            && ipv4_controls(self.destination) == ipv4_controls(other.destination)
    }
}

/// IPv4 control messages for this destination (IPv4, or IPv4-mapped on a dual-stack
/// socket), as quinn's UDP layer decides.
fn ipv4_controls(destination: SocketAddr) -> bool {
    match destination.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    }
}

/// The turn's packets, in the order the connections wrote them.
#[derive(Default)]
pub(super) struct Outbox {
    /// One buffer per queued packet, kept for the next turns.
    slots: Vec<Vec<u8>>,
    queued: Vec<Queued>,
    /// The first packet not yet sent.
    next: usize,
    /// The kernel refused the socket's default ECN bits for IPv6 peers (0) or IPv4 ones
    /// (1): send those one by one from now on, through quinn's layer, which knows what
    /// to leave out.
    singles_only: [bool; 2],
}

impl Outbox {
    /// No room for another packet until a send.
    pub(super) fn is_full(&self) -> bool {
        self.queued.len() >= OUTBOX_PACKETS
    }

    /// A cleared buffer to write the next packet into; [`Outbox::push`] queues it.
    pub(super) fn buffer(&mut self) -> &mut Vec<u8> {
        let i = self.queued.len();
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, Vec::new);
        }
        let buf = &mut self.slots[i];
        buf.clear();
        buf
    }

    /// Queues the packet just written into [`Outbox::buffer`].
    pub(super) fn push(&mut self, t: &Transmit) {
        self.queued.push(Queued {
            destination: t.destination,
            ecn: t.ecn.map(|e| match e {
                quinn_proto::EcnCodepoint::Ect0 => EcnCodepoint::Ect0,
                quinn_proto::EcnCodepoint::Ect1 => EcnCodepoint::Ect1,
                quinn_proto::EcnCodepoint::Ce => EcnCodepoint::Ce,
            }),
            segment_size: t.segment_size,
            src_ip: t.src_ip,
            size: t.size,
        });
    }

    fn transmit(&self, i: usize) -> UdpTransmit<'_> {
        let q = &self.queued[i];
        UdpTransmit {
            destination: q.destination,
            ecn: q.ecn,
            contents: &self.slots[i][..q.size.min(self.slots[i].len())],
            segment_size: q.segment_size,
            src_ip: q.src_ip,
        }
    }

    /// Sends what is queued. `WouldBlock` leaves the rest queued, in order, for when the
    /// socket takes more; any other failure loses only its packet, as the network would.
    pub(super) fn flush(&mut self, socket: &impl Wire) -> io::Result<()> {
        while self.next < self.queued.len() {
            let i = self.next;
            let first = self.queued[i];
            let family = usize::from(ipv4_controls(first.destination));
            if first.destination.port() == 0 {
                // No UDP peer has port 0, and the kernel's EINVAL for it would make
                // quinn's layer give up GSO and its ECN messages for good.
                self.next += 1;
                continue;
            }
            let run = if self.singles_only[family] || !batchable(&first, socket) {
                1
            } else {
                self.queued[i..]
                    .iter()
                    .take(MAX_RUN)
                    .take_while(|q| {
                        q.single() && q.same_controls(&first) && q.destination.port() != 0
                    })
                    .count()
            };
            // The socket's default ECN bits follow every packet's, batched or not: a
            // packet quinn's layer writes without its ECN message (after the kernel
            // refused one) then still carries its own bits.
            if !self.singles_only[family] && socket.set_default_ecn(first.ecn, family == 1).is_err()
            {
                self.singles_only[family] = true;
            }
            if run > 1 && !self.singles_only[family] {
                match self.send_run(socket, i, run) {
                    Ok(sent) if sent > 0 => {
                        self.next += sent.min(run);
                        continue;
                    }
                    // None went and nothing was said: the first goes alone.
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // The kernel sent none and said nothing: the first goes alone.
                    Err(e) if e.kind() == io::ErrorKind::WriteZero => {}
                    // The first packet's own failure (an unreachable destination): it
                    // is lost, as on the network. Packets in a run carry no control
                    // messages, so the error says nothing about what the socket can
                    // take, and quinn's layer is not asked again.
                    Err(e) => {
                        debug!(error = %e, to = %first.destination, "UDP send failed");
                        self.next += 1;
                        continue;
                    }
                }
            }
            match socket.send_one(&self.transmit(i)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                // quinn's layer reports nothing else (it logs and drops); whatever it
                // would, the packet is not written twice.
                _ => self.next += 1,
            }
        }
        self.queued.clear();
        self.next = 0;
        Ok(())
    }

    fn send_run(&self, socket: &impl Wire, from: usize, len: usize) -> io::Result<usize> {
        let contents: Vec<&[u8]> = (from..from + len)
            .map(|i| &self.slots[i][..self.queued[i].size.min(self.slots[i].len())])
            .collect();
        let destinations: Vec<SocketAddr> = self.queued[from..from + len]
            .iter()
            .map(|q| q.destination)
            .collect();
        socket.send_many(&contents, &destinations)
    }
}

/// Most packets in one `sendmmsg`.
const MAX_RUN: usize = OUTBOX_PACKETS;

/// Whether a packet may go in a `sendmmsg`, whose packets carry no control messages:
/// one datagram whose source address is the one the socket is bound to (a socket bound
/// to every address must name the source of each reply, so it writes one by one).
fn batchable(q: &Queued, socket: &impl Wire) -> bool {
    cfg!(target_os = "linux")
        && q.single()
        && q.src_ip.is_none_or(|ip| Some(ip) == socket.bound_ip())
}

#[cfg(target_os = "linux")]
mod mmsg {
    //! One `sendmmsg` for packets to any destinations. They carry no control messages:
    //! the socket's default ECN bits, set to the packets' own just before, mark them.

    use std::{io, io::IoSlice, net::SocketAddr, os::fd::BorrowedFd};

    use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};

    /// Sends `contents[i]` to `destinations[i]`; the count sent, at least one.
    pub(super) fn send(
        fd: BorrowedFd<'_>,
        contents: &[&[u8]],
        destinations: &[SocketAddr],
    ) -> io::Result<usize> {
        let iovs: Vec<[IoSlice<'_>; 1]> = contents.iter().map(|c| [IoSlice::new(c)]).collect();
        let addrs: Vec<SocketAddrAny> = destinations
            .iter()
            .map(|d| SocketAddrAny::from(*d))
            .collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = destinations
            .iter()
            .map(|_| SendAncillaryBuffer::default())
            .collect();
        let mut msgs: Vec<MMsgHdr<'_>> = addrs
            .iter()
            .zip(&iovs)
            .zip(controls.iter_mut())
            .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
            .collect();
        let sent = sendmmsg(fd, &mut msgs, SendFlags::DONTWAIT).map_err(io::Error::from)?;
        if sent == 0 {
            // Not seen from a datagram socket with packets to send.
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests;
