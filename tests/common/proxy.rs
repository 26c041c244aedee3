//! An in-process UDP impairment proxy for loopback tests: loss, delay, jitter,
//! reordering and duplication between SDK clients and the server, and a switch that
//! cuts the network entirely.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{net::UdpSocket, sync::Mutex, task::JoinHandle};

/// How packets are mistreated, independently in each direction.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Chance a packet is dropped.
    pub loss: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra random delay, uniform in 0..jitter (this reorders packets too).
    pub jitter: Duration,
    /// Chance a packet is sent twice.
    pub duplicate: f64,
}

impl Impairment {
    /// Nothing lost, delayed or duplicated: a link the test can only cut.
    pub const CLEAN: Self = Self {
        loss: 0.0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        duplicate: 0.0,
    };
}

/// The proxy: clients connect to `addr`, which forwards to the server.
pub struct Proxy {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    cut: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Link {
    imp: Impairment,
    cut: Arc<AtomicBool>,
}

impl Link {
    fn forward(
        &self,
        rng: &mut fastrand::Rng,
        socket: &Arc<UdpSocket>,
        to: Option<SocketAddr>,
        pkt: &[u8],
    ) {
        if self.cut.load(Ordering::SeqCst) || rng.f64() < self.imp.loss {
            return;
        }
        let copies = if rng.f64() < self.imp.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self.imp.delay + self.imp.jitter.mul_f64(rng.f64());
            let socket = socket.clone();
            let pkt = pkt.to_vec();
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let _ = match to {
                    Some(addr) => socket.send_to(&pkt, addr).await,
                    None => socket.send(&pkt).await,
                };
            });
        }
    }
}

impl Proxy {
    pub async fn start(server: SocketAddr, imp: Impairment, seed: u64) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("proxy socket"));
        let addr = front.local_addr().expect("proxy addr");
        let cut = Arc::new(AtomicBool::new(false));
        let link = Arc::new(Link {
            imp,
            cut: cut.clone(),
        });
        let task = tokio::spawn(async move {
            let upstreams: Mutex<HashMap<SocketAddr, Arc<UdpSocket>>> = Mutex::default();
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    continue;
                };
                let mut map = upstreams.lock().await;
                let upstream = match map.get(&client) {
                    Some(u) => u.clone(),
                    None => {
                        let u = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("upstream"));
                        u.connect(server).await.expect("connect upstream");
                        map.insert(client, u.clone());
                        // The server-to-client direction for this client.
                        let (u2, front2, link2) = (u.clone(), front.clone(), link.clone());
                        let mut rng2 = fastrand::Rng::with_seed(rng.u64(..));
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            while let Ok(n) = u2.recv(&mut buf).await {
                                link2.forward(&mut rng2, &front2, Some(client), &buf[..n]);
                            }
                        });
                        u
                    }
                };
                drop(map);
                link.forward(&mut rng, &upstream, None, &buf[..n]);
            }
        });
        Self { addr, task, cut }
    }

    /// Drops every packet from now on, both ways, as if the network vanished.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Ends a `cut`: packets flow again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
