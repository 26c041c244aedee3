//! The raw-UDP baseline relay: plain sockets, a match table, no crypto, no auth. The
//! same workload through it measures the floor of what this machine can do.
//!
//! Packets: `JOIN [0x01][match u32 LE][player u32 LE]` (answered by `[0x02]`);
//! `DATA [0x03][match u32][player u32][payload]`, relayed to the match's other members
//! as `[0x04][player u32][payload]`.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    sync::{Arc, RwLock},
};

use socket2::{Domain, Protocol, Socket, Type};

/// Packet kinds.
pub(crate) const JOIN: u8 = 0x01;
pub(crate) const JOINED: u8 = 0x02;
pub(crate) const DATA: u8 = 0x03;
pub(crate) const RELAYED: u8 = 0x04;
/// Bytes before the payload in a DATA packet.
pub(crate) const DATA_HEADER: usize = 9;
/// Bytes before the payload in a RELAYED packet.
pub(crate) const RELAYED_HEADER: usize = 5;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Sockets (threads) sharing the port with SO_REUSEPORT.
    #[arg(long, default_value_t = 2)]
    sockets: usize,
}

type Table = Arc<RwLock<HashMap<u32, Vec<SocketAddr>>>>;

fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_recv_buffer_size(quicmatch::config::DEFAULT_SOCKET_BUFFER)?;
    socket.set_send_buffer_size(quicmatch::config::DEFAULT_SOCKET_BUFFER)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn serve(socket: UdpSocket, table: Table) {
    let mut buf = [0u8; 2048];
    let mut out = Vec::with_capacity(2048);
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let pkt = &buf[..n];
        let Some((&kind, rest)) = pkt.split_first() else {
            continue;
        };
        let Some(m) = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
        else {
            continue;
        };
        match kind {
            JOIN => {
                if let Ok(mut t) = table.write() {
                    let members = t.entry(m).or_default();
                    if !members.contains(&from) {
                        members.push(from);
                    }
                }
                let _ = socket.send_to(&[JOINED], from);
            }
            DATA if n >= DATA_HEADER => {
                out.clear();
                out.push(RELAYED);
                out.extend_from_slice(&pkt[5..]);
                let Ok(t) = table.read() else { continue };
                for to in t.get(&m).into_iter().flatten() {
                    if *to != from {
                        let _ = socket.send_to(&out, to);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Runs the baseline relay until the process is killed.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let table: Table = Arc::default();
    let mut threads = Vec::new();
    for _ in 0..args.sockets.max(1) {
        let socket = bind(args.listen)?;
        let table = table.clone();
        threads.push(std::thread::spawn(move || serve(socket, table)));
    }
    // The parent waits for this line before it sends anything.
    println!("ready");
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
