//! Finding servers on the LAN: browse mDNS/DNS-SD for `_quicmatch._udp` and read each
//! server's name, version, addresses and certificate fingerprint, so a play tester
//! connects without typing an address and pins the advertised certificate.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use mdns_sd::{ServiceDaemon, ServiceEvent};

use crate::{ClientConfig, ConnectError, Credentials, Trust};

/// The DNS-SD service type quicmatch servers advertise.
pub const SERVICE_TYPE: &str = "_quicmatch._udp.local.";

/// A server found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveredServer {
    /// The name it advertises (its host name unless configured).
    pub name: String,
    /// The server's version.
    pub version: String,
    /// SHA-256 of its certificate, lowercase hex: what a client pins.
    pub fingerprint: String,
    /// Where it listens, IPv4 first.
    pub addresses: Vec<SocketAddr>,
}

impl DiscoveredServer {
    /// A client configuration for this server: its first address, pinning the
    /// advertised fingerprint.
    pub fn client_config(&self, credentials: Credentials) -> Result<ClientConfig, ConnectError> {
        let addr =
            self.addresses.first().copied().ok_or_else(|| {
                ConnectError::Config(format!("{} advertised no address", self.name))
            })?;
        Ok(ClientConfig::new(
            addr,
            Trust::pin(&self.fingerprint)?,
            credentials,
        ))
    }
}

/// Browses the LAN for `wait` and returns every quicmatch server that answered, sorted
/// by name. Blocking work runs on a blocking thread.
pub async fn discover(wait: Duration) -> Result<Vec<DiscoveredServer>, ConnectError> {
    tokio::task::spawn_blocking(move || browse(wait))
        .await
        .map_err(|e| ConnectError::Config(format!("discovery failed: {e}")))?
}

fn browse(wait: Duration) -> Result<Vec<DiscoveredServer>, ConnectError> {
    let failed = |e: mdns_sd::Error| ConnectError::Config(format!("LAN discovery: {e}"));
    let daemon = ServiceDaemon::new().map_err(failed)?;
    let events = daemon.browse(SERVICE_TYPE).map_err(failed)?;
    let deadline = Instant::now() + wait;
    let mut found: Vec<DiscoveredServer> = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else {
            break;
        };
        if let ServiceEvent::ServiceResolved(service) = event {
            let text = |key: &str| {
                service
                    .get_property_val_str(key)
                    .unwrap_or_default()
                    .to_owned()
            };
            let mut addresses: Vec<SocketAddr> = service
                .get_addresses()
                .iter()
                .map(|ip| SocketAddr::new(ip.to_ip_addr(), service.get_port()))
                .collect();
            addresses.sort_by_key(|a| (matches!(a.ip(), IpAddr::V6(_)), *a));
            let server = DiscoveredServer {
                name: text("name"),
                version: text("version"),
                fingerprint: text("fingerprint"),
                addresses,
            };
            // A well-formed advertisement only; resolutions repeat as records arrive.
            if server.fingerprint.len() == 64 {
                match found
                    .iter_mut()
                    .find(|s| s.fingerprint == server.fingerprint)
                {
                    Some(known) => *known = server,
                    None => found.push(server),
                }
            }
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    let _ = daemon.shutdown();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}
