//! The impairment proxy the end-to-end tests put between SDK clients and the server:
//! loss, delay, jitter, reordering and duplication, and a switch that cuts the network.
//! The forwarder itself is the bench's (`bench/src/impair.rs`, included here), so the
//! tests and `quicmatch-bench relay --loss` run one implementation; this file only
//! gives it the tests' manners (a proxy that cannot start fails the test by name).

use std::net::SocketAddr;

#[path = "../../bench/src/impair.rs"]
mod impair;

pub(crate) use impair::Impairment;

/// The proxy: clients connect to `addr`, which forwards to the server.
pub struct Proxy {
    pub addr: SocketAddr,
    inner: impair::Proxy,
}

impl Proxy {
    /// A proxy in front of `server`, impaired by `imp` in each direction, its random
    /// choices seeded by `seed`.
    pub async fn start(server: SocketAddr, imp: Impairment, seed: u64) -> Self {
        let inner = impair::Proxy::start(server, imp, seed)
            .await
            .expect("starting the impairment proxy");
        Self {
            addr: inner.addr,
            inner,
        }
    }

    /// Drops every packet from now on, both ways, as if the network vanished.
    pub fn cut(&self) {
        self.inner.cut();
    }

    /// Ends a `cut`: packets flow again.
    pub fn restore(&self) {
        self.inner.restore();
    }
}
