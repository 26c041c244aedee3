//! The QUIC endpoint: transport tuning for small game traffic, the accept loop with its
//! connection limit, and graceful shutdown.

use std::{
    future::Future,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use quicmatch_protocol::CloseCode;
use quinn::{crypto::rustls::QuicServerConfig, IdleTimeout, TransportConfig, VarInt};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn};

use crate::{
    auth,
    config::Config,
    hooks::Hooks,
    matches::MatchTable,
    matchmaker::Matchmaker,
    party::PartyTable,
    session::{self, SessionRegistry},
    tls, transport, Server, Shared,
};

/// ACK-frequency extension: ask peers to acknowledge every this-many ack-eliciting
/// packets (or after 25 ms). Datagrams are never retransmitted, so ACK timing only
/// affects loss recovery; fewer ACK-only packets measurably cut CPU per delivery.
pub(crate) const ACK_ELICITING_THRESHOLD: u32 = 10;
/// The delay peers may hold an ACK for, with the extension.
pub(crate) const MAX_ACK_DELAY: Duration = Duration::from_millis(25);
/// Peers acknowledge at once any packet that arrives out of order, i.e. as soon as a
/// gap shows a packet may be lost: on a clean path nothing arrives out of order, so the
/// ACK saving above stays, and on a lossy one the sender learns of the loss without
/// waiting for 10 packets or 25 ms, which is what reliable data's tail latency needs.
pub(crate) const REORDERING_THRESHOLD: u32 = 1;

/// Datagrams quinn may queue for one peer; old ones are dropped first, so this bounds
/// how stale relayed state can get (a few ticks of a busy match).
const DATAGRAM_SEND_BUFFER: usize = 32 * 1024;
/// Datagrams received but not yet read by the session task.
const DATAGRAM_RECEIVE_BUFFER: usize = 128 * 1024;
/// Per-stream and per-connection flow-control windows: control frames are small, but one
/// full frame must always fit.
const STREAM_WINDOW: u32 = 2 * quicmatch_protocol::MAX_FRAME_LEN as u32;
const CONNECTION_WINDOW: u32 = 4 * quicmatch_protocol::MAX_FRAME_LEN as u32;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The certificate or secret could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The metrics exporter could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The store could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// The socket could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
}

/// The transport settings for game sessions (see `quic-notes` in the design docs).
pub(crate) fn transport(config: &Config) -> TransportConfig {
    let mut t = TransportConfig::default();
    // The idle timeout is at most 2^62 ms; a config value beyond that is clamped.
    let idle = IdleTimeout::try_from(config.session.idle_timeout)
        .unwrap_or_else(|_| IdleTimeout::from(VarInt::MAX));
    t.max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW))
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(VarInt::from_u32(ACK_ELICITING_THRESHOLD))
        .max_ack_delay(Some(MAX_ACK_DELAY))
        .reordering_threshold(VarInt::from_u32(REORDERING_THRESHOLD));
    t.ack_frequency_config(Some(ack));
    if config.relay.min_congestion_window > 0 {
        t.congestion_controller_factory(Arc::new(transport::congestion::FlooredCubic::new(
            config.relay.min_congestion_window,
        )));
    }
    t
}

/// Binds the UDP socket with `buffer` bytes of kernel receive and send buffer (as much
/// of it as the kernel allows).
fn udp_socket(
    addr: std::net::SocketAddr,
    buffer: usize,
    reuse_port: bool,
) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    if reuse_port {
        return Err(std::io::Error::other(
            "workers > 1 needs SO_REUSEPORT (Unix)",
        ));
    }
    // Best effort: the kernel clamps both to its maximum, and less only means drops
    // under bursts, so report it rather than refuse to start.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    // Linux reports twice what it grants (the other half is its bookkeeping).
    let granted = socket.recv_buffer_size().unwrap_or(0) / 2;
    if granted < buffer {
        warn!(
            asked = buffer,
            granted, "UDP receive buffer smaller than socket_buffer; raise net.core.rmem_max"
        );
    }
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // `[::]` serves IPv4 clients too (as v4-mapped addresses), so one default
        // listens on both families.
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds `addr`; when it is the dual-stack `[::]` and this host has no IPv6, falls back to
/// `0.0.0.0` on the same port with a warning.
/// With `sockets` > 1 (the `proto` transport's workers) every socket is bound to the
/// same address with `SO_REUSEPORT` (the first one's port, when `addr` asks for any).
fn bind_socket(
    addr: std::net::SocketAddr,
    buffer: usize,
    sockets: usize,
) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let reuse = sockets > 1;
    let first = match udp_socket(addr, buffer, reuse) {
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
            let v4 = std::net::SocketAddr::from(([0, 0, 0, 0], addr.port()));
            warn!(error = %e, %v4, "no IPv6 on this host; listening on IPv4 only");
            udp_socket(v4, buffer, reuse)
        }
        other => other,
    }?;
    let mut bound = first.local_addr()?;
    if addr.is_ipv6() && bound.is_ipv6() {
        // Keep the dual-stack wildcard the first socket was bound to.
        bound.set_ip(addr.ip());
    }
    let mut all = vec![first];
    for _ in 1..sockets {
        all.push(udp_socket(bound, buffer, true)?);
    }
    Ok(all)
}

pub(crate) fn bind(
    config: Config,
    tls_override: Option<tls::TlsMaterial>,
    secret_override: Option<Vec<u8>>,
    hooks: Hooks,
    mut registry: crate::runtime::Registry,
) -> Result<Server, ServerError> {
    config.validate()?;
    if config.server_key == Config::default().server_key && !config.listen.ip().is_loopback() {
        warn!(
            listen = %config.listen,
            "server_key is the default `defaultkey` on an address other machines can reach; set server_key (or --server-key) for anything but a LAN play test"
        );
    }
    let material = match (tls_override, &config.cert, &config.key) {
        (Some(m), _, _) => m,
        (None, Some(cert), Some(key)) => tls::load_pem(cert, key)?,
        _ => {
            let (m, generated) = tls::load_or_generate(&config.certs_dir)?;
            if generated {
                info!(dir = %config.certs_dir.display(), names = ?tls::dev_names(), "generated a development certificate");
            }
            m
        }
    };
    let secret = match (secret_override, &config.session.encryption_key) {
        (Some(s), _) => s,
        (None, Some(hex)) => auth::decode_hex(hex).unwrap_or_default(),
        (None, None) => tls::load_or_create_secret(&config.certs_dir)?,
    };
    if secret.len() < 32 {
        return Err(ServerError::Config(crate::config::ConfigError::Invalid(
            "the token-signing secret must be at least 32 bytes".into(),
        )));
    }
    if let Some(addr) = config.metrics {
        crate::metrics::install(addr)?;
        info!(%addr, "metrics at /metrics");
    }
    let crypto = tls::server_crypto(&material)?;
    let quic = QuicServerConfig::try_from(crypto)
        .map_err(|e| ServerError::Tls(tls::TlsError::Setup(e.to_string())))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server_config.transport_config(Arc::new(transport(&config)));
    let secret = auth::Secret::from_bytes(&secret);
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(secret.reset_key()));
    let cid_key = secret.connection_id_key();
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    let endpoint = match config.transport {
        crate::config::Transport::Proto => {
            bind_socket(config.listen, config.socket_buffer, config.workers).and_then(|sockets| {
                transport::proto::Endpoint::bind(
                    sockets,
                    endpoint_config,
                    server_config,
                    cid_key,
                    config.relay.max_datagram_age,
                )
                .map(transport::Endpoint::Proto)
            })
        }
        _ => bind_socket(config.listen, config.socket_buffer, 1).and_then(|mut sockets| {
            let socket = sockets
                .pop()
                .ok_or_else(|| std::io::Error::other("no socket"))?;
            quinn::Endpoint::new(
                endpoint_config,
                Some(server_config),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map(transport::Endpoint::Quinn)
        }),
    }
    .map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let cert = material.chain[0].clone();
    let matches = MatchTable::new(config.matches.clone());
    let storage = match registry.storage.take() {
        Some(storage) => storage,
        None => crate::storage::Storage::open(&config)?,
    };
    let runtime = crate::runtime::Runtime::new(registry, matches.clone(), &config.matches, storage);
    let sessions = SessionRegistry::default();
    let matchmaker = Matchmaker::new(
        config.matchmaker.clone(),
        sessions.clone(),
        matches.clone(),
        runtime.clone(),
        secret.clone(),
        hooks,
    );
    runtime.set_backfills(matchmaker.backfills());
    let cluster = crate::cluster::Cluster::new(&config.cluster);
    cluster.share_pool(&matchmaker);
    let parties = PartyTable::new(config.party.clone(), sessions.clone(), matchmaker.clone());
    let shared = Arc::new(Shared {
        handshakes: Default::default(),
        runtime,
        matches,
        parties,
        matchmaker,
        sessions,
        secret,
        fingerprint: tls::fingerprint(&cert),
        connections: Default::default(),
        storage_limits: crate::storage::WriteLimits::new(&config.storage),
        restarting: Default::default(),
        cluster,
        config,
    });
    Ok(Server {
        endpoint,
        shared,
        cert,
    })
}

/// Decrements the live-connection count however a connection task ends.
struct ConnectionGuard(Arc<Shared>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn serve(
    endpoint: transport::Endpoint,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    let cancel = CancellationToken::new();
    let config = &shared.config;
    let _advertiser = if config.advertise && crate::discovery::should_advertise(config.listen) {
        let addr = endpoint.local_addr().unwrap_or(config.listen);
        let name = crate::discovery::server_name(config.name.as_deref());
        let fingerprint = shared.fingerprint.clone();
        tokio::task::spawn_blocking(move || {
            crate::discovery::Advertiser::start(addr, &name, &fingerprint)
        })
        .await
        .ok()
        .flatten()
    } else {
        None
    };
    let tracker = TaskTracker::new();
    shared.runtime.storage().attach();
    info!(addr = ?endpoint.local_addr().ok(), "serving");
    tracker.spawn(shared.matchmaker.clone().run(cancel.clone()));
    if shared.config.metrics.is_some() {
        tracker.spawn(crate::metrics::gauges(
            crate::Stats {
                shared: shared.clone(),
            },
            cancel.clone(),
        ));
    }
    {
        let address = config.cluster.public_address.clone().unwrap_or_else(|| {
            let listening = endpoint.local_addr().unwrap_or(config.listen);
            crate::reachable_addresses(listening)
                .first()
                .unwrap_or(&listening)
                .to_string()
        });
        let stats = shared.clone();
        let max = shared.config.session.max_connections.max(1);
        let load = move || {
            let sessions = stats.connections.load(Ordering::Relaxed);
            let per_mille = (sessions.saturating_mul(1000) / max).min(u32::MAX as usize);
            (sessions.min(u32::MAX as usize) as u32, per_mille as u32)
        };
        let local = Arc::new(crate::handlers::Peers(shared.clone()));
        tracker.spawn(
            shared
                .cluster
                .clone()
                .run(address, load, local, cancel.clone()),
        );
    }
    let persister = restore(&shared).await;
    tokio::pin!(shutdown);
    crate::metrics::set_ready(true);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let live = shared.connections.load(Ordering::Relaxed);
                if live >= shared.config.session.max_connections {
                    warn!(live, remote = %incoming.remote_address(), "connection limit reached; refusing");
                    incoming.refuse();
                    continue;
                }
                let handshaking = shared.handshakes.load(Ordering::Relaxed);
                if handshaking >= shared.config.session.retry_threshold
                    && !incoming.remote_address_validated()
                    && incoming.may_retry()
                {
                    // Stateless: costs us nothing until the client proves its address.
                    if !incoming.retry() {
                        debug!("retry not possible");
                    }
                    continue;
                }
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let guard = ConnectionGuard(shared.clone());
                let shared = shared.clone();
                let cancel = cancel.clone();
                shared.handshakes.fetch_add(1, Ordering::Relaxed);
                tracker.spawn(async move {
                    let _guard = guard;
                    let handshake = incoming.accept().await;
                    shared.handshakes.fetch_sub(1, Ordering::Relaxed);
                    match handshake {
                        // Boxed: inlined, the session would sit beside the handshake state
                        // for the connection's whole life.
                        Ok(conn) => Box::pin(session::run(shared, conn, cancel)).await,
                        Err(e) => {
                            metrics::counter!("quicmatch_handshake_failures_total").increment(1);
                            debug!(error = %e, "handshake failed");
                        }
                    }
                });
            }
        }
    }
    crate::metrics::set_ready(false);
    info!("shutting down");
    // Server-run matches end first, so their members hear MatchEnded before the close;
    // when recording for restarts, those that keep snapshots are kept instead, and
    // everything is recorded once more before any session goes.
    let engine = shared.runtime.engine().clone();
    let grace = shared.config.session.shutdown_grace;
    let final_shared = shared.clone();
    let _ = tokio::task::spawn_blocking(move || match persister {
        Some(persister) => {
            let recorder = persister.stop();
            let kept = engine.shutdown(grace, true);
            crate::persist::record_final(&final_shared, recorder, kept);
            final_shared.restarting.store(true, Ordering::Release);
        }
        None => {
            engine.shutdown(grace, false);
        }
    })
    .await;
    shared.sessions.mark_shutdown();
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(shared.config.session.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!("sessions still running after the grace period");
    }
    for held in shared.sessions.take_all_held() {
        held.expire(&shared);
    }
    // Writes still waiting are committed before the store closes.
    let storage = shared.runtime.storage().clone();
    let _ = tokio::task::spawn_blocking(move || storage.detach()).await;
    if shared.restarting.load(Ordering::Acquire) {
        endpoint.close(
            VarInt::from_u32(CloseCode::SERVER_RESTARTING.0),
            b"server restarting; resume when it is back",
        );
    } else {
        endpoint.close(
            VarInt::from_u32(CloseCode::SERVER_SHUTDOWN.0),
            b"server shutting down",
        );
    }
    let _ = tokio::time::timeout(shared.config.session.shutdown_grace, endpoint.wait_idle()).await;
    endpoint.stop().await;
}

/// Puts back what the last run recorded (sessions held for a resume, matches, parties)
/// and starts recording; `None` when restart survival is off.
async fn restore(shared: &Arc<Shared>) -> Option<crate::persist::Persister> {
    if shared.config.matches.snapshot_interval.is_zero() {
        return None;
    }
    let from = shared.clone();
    let (sessions, recorder) = tokio::task::spawn_blocking(move || crate::persist::restore(&from))
        .await
        .unwrap_or_default();
    let grace = crate::persist::restore_grace(shared);
    for state in sessions {
        shared.sessions.hold_restored(shared, state, grace);
    }
    crate::persist::Persister::start(shared.clone(), recorder)
}
