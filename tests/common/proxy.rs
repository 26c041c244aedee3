//! An in-process UDP impairment proxy for loopback tests: loss, delay, jitter,
//! reordering and duplication between SDK clients and the server.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

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

/// The proxy: clients connect to `addr`, which forwards to the server.
pub struct Proxy {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn schedule(
    rng: &mut fastrand::Rng,
    imp: Impairment,
    socket: Arc<UdpSocket>,
    to: Option<SocketAddr>,
    pkt: Vec<u8>,
) {
    if rng.f64() < imp.loss {
        return;
    }
    let copies = if rng.f64() < imp.duplicate { 2 } else { 1 };
    for _ in 0..copies {
        let jitter = imp.jitter.mul_f64(rng.f64());
        let delay = imp.delay + jitter;
        let socket = socket.clone();
        let pkt = pkt.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = match to {
                Some(addr) => socket.send_to(&pkt, addr).await,
                None => socket.send(&pkt).await,
            };
        });
    }
}

impl Proxy {
    pub async fn start(server: SocketAddr, imp: Impairment, seed: u64) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("proxy socket"));
        let addr = front.local_addr().expect("proxy addr");
        let task = tokio::spawn(async move {
            let upstreams: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    continue;
                };
                let upstream = {
                    let mut map = upstreams.lock().await;
                    match map.get(&client) {
                        Some(u) => u.clone(),
                        None => {
                            let u =
                                Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("upstream"));
                            u.connect(server).await.expect("connect upstream");
                            map.insert(client, u.clone());
                            // Server -> client direction for this client.
                            let (u2, front2) = (u.clone(), front.clone());
                            let mut rng2 = fastrand::Rng::with_seed(rng.u64(..));
                            tokio::spawn(async move {
                                let mut buf = vec![0u8; 65536];
                                while let Ok(n) = u2.recv(&mut buf).await {
                                    schedule(
                                        &mut rng2,
                                        imp,
                                        front2.clone(),
                                        Some(client),
                                        buf[..n].to_vec(),
                                    );
                                }
                            });
                            u
                        }
                    }
                };
                schedule(&mut rng, imp, upstream, None, buf[..n].to_vec());
            }
        });
        Self { addr, task }
    }
}
