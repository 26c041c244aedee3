//! The only user of `async-nats`: connects (retrying in the background, so a NATS that
//! is down at start never stops the node), keeps the node's entry in the registry
//! bucket (created with `max_age = node_ttl`, so a crashed node's entry goes by
//! itself), renews it every `heartbeat` against its last revision, watches every
//! entry into the [`View`](super::registry::View), and deletes the entry on a polite
//! stop.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use async_nats::{
    jetstream::{
        self,
        kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
        stream::StorageType,
    },
    ServerAddr,
};
use bytes::Bytes;
use futures_util::StreamExt as _;
use quicmatch_protocol::frame;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{
    registry::{Change, NodeRecord},
    Inner,
};
use crate::config::{
    nats_url::{self, NatsCredentials},
    ClusterStorage,
};

/// Gives `(sessions, load)`.
type Load = Box<dyn Fn() -> (u32, u32) + Send + Sync>;

/// Why registration did not succeed.
enum Refused {
    /// A live node holds the name: this one stays out of the cluster.
    NameInUse,
    /// NATS did not answer; try again.
    Unavailable(String),
}

pub(super) async fn run(
    inner: Arc<Inner>,
    address: SocketAddr,
    load: Load,
    cancel: CancellationToken,
) {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("quicmatch {}", inner.node))
        .retry_on_initial_connect();
    // Validated at start; the credentials leave the addresses, which async-nats logs.
    let servers = nats_url::parse(&inner.url).unwrap_or_default();
    match servers.iter().find_map(|s| s.credentials.clone()) {
        Some(NatsCredentials::UserPassword(user, password)) => {
            options = options.user_and_password(user, password);
        }
        Some(NatsCredentials::Token(token)) => options = options.token(token),
        _ => {}
    }
    if let Some(ca) = &inner.config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let addresses: Result<Vec<ServerAddr>, _> = servers
        .iter()
        .map(|s| s.address.parse::<ServerAddr>())
        .collect();
    let connected = match addresses {
        Ok(addresses) if !addresses.is_empty() => {
            options.connect(addresses).await.map_err(|e| e.to_string())
        }
        Ok(_) => Err("no server".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    let client = match connected {
        Ok(c) => c,
        Err(e) => {
            error!(url = %nats_url::redact(&inner.url), error = %e, "cluster: cannot use the NATS URL; this node runs alone");
            return;
        }
    };
    let heartbeat = inner.config.heartbeat;
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (Re)joins until stopped: each round opens the bucket, registers, then renews and
    // watches until something fails.
    loop {
        let round = async {
            let kv = open_bucket(&inner, &client).await?;
            let incarnation = incarnation();
            inner.view().reincarnate(incarnation);
            let record = |load: &Load| {
                let (sessions, load) = load();
                NodeRecord {
                    incarnation,
                    address: address.to_string(),
                    load,
                    sessions,
                    build: env!("CARGO_PKG_VERSION").into(),
                }
            };
            let mut revision = register(&inner, &kv, &record(&load), &cancel).await?;
            info!(node = %inner.node, incarnation, "cluster: joined");
            let mut watch = kv
                .watch_with_history(">")
                .await
                .map_err(|e| Refused::Unavailable(e.to_string()))?;
            inner.view().rejoined(Instant::now());
            loop {
                tokio::select! {
                    () = cancel.cancelled() => {
                        // A polite stop: the others see the delete at once.
                        let _ = tokio::time::timeout(heartbeat, kv.delete(&inner.node)).await;
                        return Ok(());
                    }
                    _ = ticks.tick() => {
                        let value = encode(&record(&load))?;
                        match kv.update(&inner.node, value, revision).await {
                            Ok(r) => revision = r,
                            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                                warn!(node = %inner.node, "cluster: this node's entry was taken over; joining again");
                                return Err(Refused::Unavailable("entry taken over".into()));
                            }
                            Err(e) => warn!(error = %e, "cluster: renewal failed"),
                        }
                        let lost = inner.view().expire(Instant::now());
                        report(&inner, lost);
                    }
                    entry = watch.next() => match entry {
                        Some(Ok(entry)) => apply(&inner, entry),
                        Some(Err(e)) => return Err(Refused::Unavailable(e.to_string())),
                        None => return Err(Refused::Unavailable("watch ended".into())),
                    },
                }
            }
        };
        match round.await {
            Ok(()) => return,
            Err(Refused::NameInUse) => {
                error!(node = %inner.node, "cluster: node name is in use by a live node; this node runs alone");
                inner.view().clear();
                return;
            }
            Err(Refused::Unavailable(why)) => {
                warn!(reason = %why, "cluster: NATS unavailable; serving locally and retrying");
                inner.view().clear();
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(heartbeat) => {}
                }
            }
        }
    }
}

/// The registry bucket, created on first use. Every node must give it the same
/// `node_ttl` (its expiry): one created with another is refused by NATS, and said.
async fn open_bucket(inner: &Inner, client: &async_nats::Client) -> Result<kv::Store, Refused> {
    let js = jetstream::new(client.clone());
    let config = kv::Config {
        bucket: inner.bucket(),
        description: "quicmatch nodes".into(),
        history: 1,
        max_age: inner.config.node_ttl,
        storage: match inner.config.storage {
            ClusterStorage::Memory => StorageType::Memory,
            _ => StorageType::File,
        },
        num_replicas: usize::from(inner.config.replicas),
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(kv) => Ok(kv),
        Err(e) => match js.get_key_value(inner.bucket()).await {
            Ok(kv) => {
                warn!(error = %e, "cluster: the registry bucket exists with other settings (are node_ttl, replicas and storage the same on every node?)");
                Ok(kv)
            }
            Err(_) => Err(Refused::Unavailable(e.to_string())),
        },
    }
}

/// Creates this node's entry. A name already there is either a live node's (its entry
/// keeps being renewed: refused) or a crashed predecessor's (it expires within
/// `node_ttl`, or is taken over at its revision once that long passed unrenewed).
async fn register(
    inner: &Inner,
    kv: &kv::Store,
    record: &NodeRecord,
    cancel: &CancellationToken,
) -> Result<u64, Refused> {
    let value = encode(record)?;
    let deadline = Instant::now() + inner.config.node_ttl + inner.config.heartbeat;
    let mut first: Option<u64> = None;
    loop {
        match kv.create(&inner.node, value.clone()).await {
            Ok(revision) => return Ok(revision),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(Refused::Unavailable(e.to_string())),
        }
        let entry = kv
            .entry(inner.node.clone())
            .await
            .map_err(|e| Refused::Unavailable(e.to_string()))?;
        let Some(entry) = entry else { continue };
        match first {
            None => first = Some(entry.revision),
            Some(r) if r != entry.revision => return Err(Refused::NameInUse),
            Some(r) if Instant::now() >= deadline => {
                return kv
                    .update(&inner.node, value.clone(), r)
                    .await
                    .map_err(|_| Refused::NameInUse);
            }
            Some(_) => {}
        }
        tokio::select! {
            () = cancel.cancelled() => return Err(Refused::Unavailable("stopping".into())),
            () = tokio::time::sleep(inner.config.heartbeat) => {}
        }
    }
}

fn encode(record: &NodeRecord) -> Result<Bytes, Refused> {
    frame::encode_peer(record).map_err(|e| Refused::Unavailable(e.to_string()))
}

/// One watched entry into the view; entries that do not decode are another build's
/// or garbage, and ignored.
fn apply(inner: &Inner, entry: kv::Entry) {
    let now = Instant::now();
    let changes = match entry.operation {
        Operation::Put => match frame::decode_peer::<NodeRecord>(&entry.value) {
            Ok(record) => {
                let changes = inner.view().put(&entry.key, record, now);
                changes
            }
            Err(e) => {
                warn!(key = %entry.key, error = %e, "cluster: an entry that does not decode; ignored");
                Vec::new()
            }
        },
        Operation::Delete | Operation::Purge => {
            let stopped = inner.view().delete(&entry.key);
            stopped.into_iter().collect()
        }
    };
    report(inner, changes);
}

fn report(inner: &Inner, changes: Vec<Change>) {
    for c in changes {
        match c {
            Change::Joined(n) if n == inner.node => {}
            Change::Joined(n) => info!(node = %n, "cluster: node joined"),
            Change::Stopped(n) => info!(node = %n, "cluster: node stopped"),
            Change::Lost(n) => warn!(node = %n, "cluster: node lost"),
        }
    }
    let nodes = inner.view().nodes().len();
    metrics::gauge!("quicmatch_cluster_nodes").set(nodes as f64);
}

/// A random incarnation, from ring.
fn incarnation() -> u64 {
    let mut bytes = [0u8; 8];
    // The system RNG failing is not something a node can carry on without noticing;
    // a zero incarnation still works (it only has to differ from the last one).
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u64::from_le_bytes(bytes)
}
