//! LAN discovery: the server advertises itself with mDNS/DNS-SD as `_quicmatch._udp`
//! with TXT records `name`, `version` and `fingerprint` (SHA-256 of its certificate), so
//! a play tester's client finds it without typing an address and pins its certificate.
//!
//! It advertises only on the interfaces the server listens on (every non-loopback one
//! for an unspecified address, that one interface for a specific address), and never
//! for a loopback bind, so tests on loopback never reach the network.

use std::net::{IpAddr, SocketAddr};

use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};
use tracing::{info, warn};

/// The DNS-SD service type.
pub const SERVICE_TYPE: &str = "_quicmatch._udp.local.";

/// A running advertisement; dropping it withdraws the service.
pub(crate) struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
}

/// Whether a server listening on `listen` should advertise at all.
pub(crate) fn should_advertise(listen: SocketAddr) -> bool {
    !listen.ip().is_loopback()
}

/// The name to advertise: the configured one, else the host's.
pub(crate) fn server_name(configured: Option<&str>) -> String {
    configured.map(str::to_owned).unwrap_or_else(|| {
        gethostname::gethostname()
            .to_str()
            .filter(|h| !h.is_empty())
            .unwrap_or("quicmatch")
            .chars()
            .take(63)
            .collect()
    })
}

impl Advertiser {
    /// Starts advertising `addr` (the bound address) under `name`. Failures are logged,
    /// not fatal: a server without multicast still serves.
    pub(crate) fn start(addr: SocketAddr, name: &str, fingerprint: &str) -> Option<Self> {
        match Self::try_start(addr, name, fingerprint) {
            Ok(a) => Some(a),
            Err(e) => {
                warn!(error = %e, "LAN discovery not advertised");
                None
            }
        }
    }

    fn try_start(addr: SocketAddr, name: &str, fingerprint: &str) -> Result<Self, mdns_sd::Error> {
        let daemon = ServiceDaemon::new()?;
        // Loopback never: a loopback bind does not advertise at all, and an unspecified
        // one is for the LAN.
        daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
        if !addr.ip().is_unspecified() {
            daemon.disable_interface(IfKind::All)?;
            daemon.enable_interface(IfKind::Addr(addr.ip()))?;
        } else if addr.is_ipv4() {
            daemon.disable_interface(IfKind::IPv6)?;
        }
        let host = format!("{}.local.", sanitize(name));
        let version = env!("CARGO_PKG_VERSION");
        let properties = [
            ("name", name),
            ("version", version),
            ("fingerprint", fingerprint),
        ];
        let ips: Vec<IpAddr> = if addr.ip().is_unspecified() {
            Vec::new()
        } else {
            vec![addr.ip()]
        };
        let mut service = ServiceInfo::new(
            SERVICE_TYPE,
            name,
            &host,
            ips.as_slice(),
            addr.port(),
            &properties[..],
        )?;
        if addr.ip().is_unspecified() {
            service = service.enable_addr_auto();
        }
        let fullname = service.get_fullname().to_owned();
        daemon.register(service)?;
        info!(%name, service = SERVICE_TYPE, "advertising on the LAN (advertise = false turns it off)");
        Ok(Self { daemon, fullname })
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

/// A DNS label from a free-form name: letters, digits and hyphens.
fn sanitize(name: &str) -> String {
    let label: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    if label.trim_matches('-').is_empty() {
        "quicmatch".into()
    } else {
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_binds_never_advertise() {
        assert!(!should_advertise("127.0.0.1:7350".parse().expect("addr")));
        assert!(!should_advertise("[::1]:7350".parse().expect("addr")));
        assert!(should_advertise("0.0.0.0:7350".parse().expect("addr")));
        assert!(should_advertise("[::]:7350".parse().expect("addr")));
        assert!(should_advertise("192.168.1.20:7350".parse().expect("addr")));
    }

    #[test]
    fn host_labels_are_sanitized() {
        assert_eq!(sanitize("Alice's PC"), "Alice-s-PC");
        assert_eq!(sanitize("..."), "quicmatch");
        assert_eq!(sanitize(&"x".repeat(100)).len(), 63);
    }
}
