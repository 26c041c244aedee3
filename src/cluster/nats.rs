//! The node's connection to NATS (with `tickets.rs` and `leader.rs`, which use its
//! key-value buckets directly, the only user of `async-nats`): connects (retrying in the background, so a NATS that
//! is down at start never stops the node), keeps the node's entry in the registry
//! bucket (created with `max_age = node_ttl`, so a crashed node's entry goes by
//! itself), renews it every `heartbeat` against its last revision, watches every
//! entry into the [`View`](super::registry::View), and deletes the entry on a polite
//! stop.

use std::{sync::Arc, time::Instant};

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
    serve,
    wire::{self, Sender},
    Inner, Local,
};
use crate::config::{
    nats_url::{self, CredentialsFile, NatsCredentials},
    ClusterStorage,
};

/// Gives `(sessions, load)`.
type Load = Box<dyn Fn() -> (u32, u32) + Send + Sync>;

/// How the rest of the cluster module publishes and asks: core NATS, no JetStream.
#[derive(Clone)]
pub(super) struct Bus(async_nats::Client);

impl Bus {
    /// Publishes; an error means the message is lost (the client is closed or its
    /// buffer full), which links notice as a gap.
    pub(super) async fn publish(&self, subject: String, payload: Bytes) -> Result<(), String> {
        self.0
            .publish(subject, payload)
            .await
            .map_err(|e| e.to_string())
    }

    /// Asks and waits at most `timeout` for the answer.
    pub(super) async fn request(
        &self,
        subject: String,
        payload: Bytes,
        timeout: std::time::Duration,
    ) -> Result<Bytes, String> {
        match tokio::time::timeout(timeout, self.0.request(subject, payload)).await {
            Ok(Ok(message)) => Ok(message.payload),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

/// How long a matched group's record is kept: far longer than any delivery takes.
const GROUPS_KEPT: std::time::Duration = std::time::Duration::from_secs(600);

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why registration did not succeed.
enum Refused {
    /// A live node holds the name: this one stays out of the cluster.
    NameInUse,
    /// NATS did not answer; try again.
    Unavailable(String),
}

pub(super) async fn run(
    inner: Arc<Inner>,
    address: String,
    load: Load,
    local: Arc<dyn Local>,
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
    // Checked at start; read again here, as the connection takes it.
    if let Some(path) = &inner.config.credentials {
        let with = match nats_url::read_credentials(path) {
            Ok(CredentialsFile::Creds(text)) => {
                options.credentials(&text).map_err(|e| e.to_string())
            }
            Ok(CredentialsFile::Seed(seed)) => Ok(options.nkey(seed)),
            Err(e) => Err(e),
        };
        options = match with {
            Ok(o) => o,
            Err(e) => {
                error!(error = %e, "cluster: cannot use cluster.credentials; this node runs alone");
                return;
            }
        };
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
    let writer = tokio::spawn(super::tickets::writer(
        inner.clone(),
        local.clone(),
        cancel.clone(),
    ));
    let _writer = AbortOnDrop(writer);
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
                    address: address.clone(),
                    load,
                    sessions,
                    build: env!("CARGO_PKG_VERSION").into(),
                }
            };
            let mut revision = register(&inner, &kv, &record(&load), &cancel).await?;
            info!(node = %inner.node, incarnation, "cluster: joined");
            let mut watch = Some(
                kv.watch_with_history(">")
                    .await
                    .map_err(|e| Refused::Unavailable(e.to_string()))?,
            );
            inner.view().rejoined(Instant::now());
            let owners = Owners(
                open(
                    &inner,
                    &client,
                    inner.owners_bucket(),
                    "quicmatch named matches",
                    std::time::Duration::ZERO,
                )
                .await?,
            );
            let (resets_tx, mut resets) = tokio::sync::mpsc::unbounded_channel();
            let me = Sender {
                node: inner.node.clone(),
                incarnation,
            };
            {
                let mut st = inner.state();
                st.bus = Some(Bus(client.clone()));
                st.me = Some(me.clone());
                st.resets = Some(resets_tx);
                st.owners = Some(owners.clone());
            }
            super::owners::reclaim(&inner, &owners, &me, local.as_ref()).await;
            let pool_buckets = super::leader::Buckets {
                leader: open(
                    &inner,
                    &client,
                    inner.leader_bucket(),
                    "quicmatch matchmaker lease",
                    inner.config.leader_lease,
                )
                .await?,
                tickets: open(
                    &inner,
                    &client,
                    inner.tickets_bucket(),
                    "quicmatch matchmaker tickets",
                    std::time::Duration::ZERO,
                )
                .await?,
                groups: open(
                    &inner,
                    &client,
                    inner.groups_bucket(),
                    "quicmatch matched groups",
                    GROUPS_KEPT,
                )
                .await?,
                owners: owners.clone(),
            };
            super::tickets::rejoined(&inner, &pool_buckets.tickets, local.as_ref())
                .await
                .map_err(Refused::Unavailable)?;
            inner
                .home
                .store
                .send_replace(Some(pool_buckets.tickets.clone()));
            // Competes for the matchmaker's lease for as long as this round lasts.
            let leading = CancellationToken::new();
            let _leading = leading.clone().drop_guard();
            tokio::spawn(super::leader::run(
                inner.clone(),
                me.clone(),
                pool_buckets,
                local.clone(),
                leading,
            ));
            // Dropped (so unsubscribed and stopped) when the round ends.
            let _listeners = listen(&inner, &client, &local).await?;
            // When the last renewal that succeeded was sent. Peers judge this node lost
            // `node_ttl` after its last renewal they saw; it fences itself a heartbeat
            // before that, so nobody believes in a membership the others have ended.
            let mut renewed = Instant::now();
            let fence_after = inner.config.node_ttl.saturating_sub(heartbeat);
            loop {
                tokio::select! {
                    Some(peer) = resets.recv() => {
                        serve::reset(&inner, local.as_ref(), &peer, "cluster link lost");
                    }
                    () = cancel.cancelled() => {
                        // A polite stop: the others see the delete at once.
                        let _ = tokio::time::timeout(heartbeat, kv.delete(&inner.node)).await;
                        return Ok(());
                    }
                    () = tokio::time::sleep_until((renewed + fence_after).into()) => {
                        metrics::counter!("quicmatch_cluster_fenced_total").increment(1);
                        warn!(node = %inner.node, "cluster: renewals failing for node_ttl less a heartbeat; leaving the cluster before the others judge this node lost");
                        return Err(Refused::Unavailable("fenced".into()));
                    }
                    _ = ticks.tick() => {
                        // Each wait here is bounded by half a heartbeat, so the fence
                        // above is never held up by more than a heartbeat.
                        let sent = Instant::now();
                        let value = encode(&record(&load))?;
                        match tokio::time::timeout(heartbeat / 2, kv.update(&inner.node, value, revision)).await {
                            Ok(Ok(r)) => {
                                revision = r;
                                renewed = sent;
                            }
                            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                                // A renewal that timed out here may have been applied
                                // there: the entry is still this incarnation's.
                                match ours(&kv, &inner.node, incarnation, heartbeat / 2).await {
                                    Some(r) => {
                                        revision = r;
                                        renewed = sent;
                                    }
                                    None => {
                                        warn!(node = %inner.node, "cluster: this node's entry was taken over; joining again");
                                        return Err(Refused::Unavailable("entry taken over".into()));
                                    }
                                }
                            }
                            Ok(Err(e)) => warn!(error = %e, "cluster: renewal failed"),
                            Err(_) => warn!("cluster: renewal unanswered"),
                        }
                        if watch.is_none() {
                            // The watch broke (NATS restarted, a reconnection): it is
                            // opened again, and silence until now proves nothing.
                            if let Ok(Ok(w)) = tokio::time::timeout(heartbeat / 2, kv.watch_with_history(">")).await {
                                watch = Some(w);
                                inner.view().rejoined(Instant::now());
                            }
                        }
                        let lost = inner.view().expire(Instant::now());
                        report(&inner, local.as_ref(), lost);
                        super::owners::release_ended(&inner, &owners, local.as_ref());
                    }
                    entry = next_entry(&mut watch) => match entry {
                        Some(Ok(entry)) => apply(&inner, local.as_ref(), entry),
                        Some(Err(e)) => {
                            warn!(error = %e, "cluster: the registry watch failed; opening it again");
                            watch = None;
                        }
                        None => {
                            warn!("cluster: the registry watch ended; opening it again");
                            watch = None;
                        }
                    },
                }
            }
        };
        let ended = round.await;
        // Whatever ended the round, this incarnation is over: what it shared with
        // other nodes ends here, as they end it there.
        {
            let mut st = inner.state();
            st.bus = None;
            st.me = None;
            st.resets = None;
            st.owners = None;
            st.links.clear();
            inner.home.store.send_replace(None);
            // Links into the next incarnation number from 1 again.
            st.inbound = super::link::Inbound::default();
        }
        serve::end_all(&inner, local.as_ref(), "cluster unavailable");
        match ended {
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
    open(
        inner,
        client,
        inner.bucket(),
        "quicmatch nodes",
        inner.config.node_ttl,
    )
    .await
}

/// A bucket of the cluster, created on first use with `max_age` (zero: none) and the
/// configured storage and replicas.
async fn open(
    inner: &Inner,
    client: &async_nats::Client,
    bucket: String,
    description: &str,
    max_age: std::time::Duration,
) -> Result<kv::Store, Refused> {
    let js = jetstream::new(client.clone());
    let config = kv::Config {
        bucket: bucket.clone(),
        description: description.into(),
        history: 1,
        max_age,
        storage: match inner.config.storage {
            ClusterStorage::Memory => StorageType::Memory,
            _ => StorageType::File,
        },
        num_replicas: usize::from(inner.config.replicas),
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(kv) => Ok(kv),
        Err(e) => match js.get_key_value(bucket).await {
            Ok(kv) => {
                warn!(error = %e, "cluster: a bucket exists with other settings (are node_ttl, replicas and storage the same on every node?)");
                Ok(kv)
            }
            Err(_) => Err(Refused::Unavailable(e.to_string())),
        },
    }
}

/// The claims on named matches (`qm_<c>_owners`, key `match.<id>`, value the claiming
/// node and incarnation): who hosts the match of a name.
#[derive(Clone)]
pub(super) struct Owners(kv::Store);

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Claimed {
    /// This node holds the claim, at this revision.
    Mine(u64),
    /// A live node holds it, at this revision.
    Theirs(Sender, u64),
}

fn owner_key(id: quicmatch_protocol::MatchId) -> String {
    format!("match.{id}")
}

impl Owners {
    /// Claims `id` for `me`, unless a live node (`live`) holds it already; a claim of a
    /// node that is gone is taken over at its revision.
    pub(super) async fn claim(
        &self,
        id: quicmatch_protocol::MatchId,
        me: &Sender,
        live: impl Fn(&Sender) -> bool,
    ) -> Result<Claimed, String> {
        let key = owner_key(id);
        let value = frame::encode_peer(me).map_err(|e| e.to_string())?;
        for _ in 0..4 {
            match self.0.create(&key, value.clone()).await {
                Ok(revision) => return Ok(Claimed::Mine(revision)),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.to_string()),
            }
            let Some(entry) = self.0.entry(key.clone()).await.map_err(|e| e.to_string())? else {
                continue;
            };
            if entry.operation != Operation::Put {
                continue;
            }
            let owner = frame::decode_peer::<Sender>(&entry.value).ok();
            match owner {
                Some(owner) if owner == *me => return Ok(Claimed::Mine(entry.revision)),
                Some(owner) if live(&owner) => return Ok(Claimed::Theirs(owner, entry.revision)),
                // A node that is gone (or an entry that does not decode): taken over.
                _ => {
                    if let Ok(revision) = self.0.update(&key, value.clone(), entry.revision).await {
                        return Ok(Claimed::Mine(revision));
                    }
                }
            }
        }
        Err("the claim kept changing".into())
    }

    /// Takes over the claim on `id` seen at `revision` (its holder does not host the
    /// match); `None` when it changed meanwhile.
    pub(super) async fn take_over(
        &self,
        id: quicmatch_protocol::MatchId,
        me: &Sender,
        revision: u64,
    ) -> Result<Option<u64>, String> {
        let value = frame::encode_peer(me).map_err(|e| e.to_string())?;
        match self.0.update(owner_key(id), value, revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Claims `id` for `owner` (the matchmaker's leader placing a group's match on
    /// that node): its revision, or `None` when another node holds it.
    pub(super) async fn claim_for(
        &self,
        id: quicmatch_protocol::MatchId,
        owner: &Sender,
    ) -> Result<Option<u64>, String> {
        let key = owner_key(id);
        let value = frame::encode_peer(owner).map_err(|e| e.to_string())?;
        match self.0.create(&key, value).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                let entry = self.0.entry(key).await.map_err(|e| e.to_string())?;
                Ok(entry.and_then(|e| {
                    let held = frame::decode_peer::<Sender>(&e.value).ok()?;
                    (e.operation == Operation::Put && held == *owner).then_some(e.revision)
                }))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Gives up the claim on `id` made at `revision` (its match ended).
    pub(super) async fn release(&self, id: quicmatch_protocol::MatchId, revision: u64) {
        let _ = self
            .0
            .delete_expect_revision(owner_key(id), Some(revision))
            .await;
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

/// The revision of this node's entry when it is still `incarnation`'s.
async fn ours(
    kv: &kv::Store,
    node: &str,
    incarnation: u64,
    wait: std::time::Duration,
) -> Option<u64> {
    let entry = tokio::time::timeout(wait, kv.entry(node))
        .await
        .ok()?
        .ok()??;
    let record = frame::decode_peer::<NodeRecord>(&entry.value).ok()?;
    (entry.operation == Operation::Put && record.incarnation == incarnation)
        .then_some(entry.revision)
}

/// The next entry of the registry watch; never, while there is none.
async fn next_entry(watch: &mut Option<kv::Watch>) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// Subscribes to this node's subjects; each is served by a task of its own until the
/// returned set is dropped.
async fn listen(
    inner: &Arc<Inner>,
    client: &async_nats::Client,
    local: &Arc<dyn Local>,
) -> Result<tokio::task::JoinSet<()>, Refused> {
    let cluster = &inner.config.name;
    let subscribe = |subject: String| async move {
        client
            .subscribe(subject)
            .await
            .map_err(|e| Refused::Unavailable(e.to_string()))
    };
    let mut requests = subscribe(wire::request_subject(cluster, &inner.node)).await?;
    let mut links = subscribe(wire::link_subject(cluster, &inner.node)).await?;
    let mut datagrams = subscribe(wire::datagram_subject(cluster, &inner.node)).await?;
    let mut set = tokio::task::JoinSet::new();
    let (i, l, c) = (inner.clone(), local.clone(), client.clone());
    set.spawn(async move {
        while let Some(message) = requests.next().await {
            let Some(to) = message.reply else { continue };
            match serve::on_request(&i, &l, &message.payload) {
                serve::Answer::Now(Some(reply)) => {
                    let _ = c.publish(to, reply).await;
                }
                serve::Answer::Now(None) => {}
                // A server-run match's handler decides: answered when it has, while the
                // next requests are served.
                serve::Answer::Later(decided) => {
                    let c = c.clone();
                    tokio::spawn(async move {
                        if let Some(reply) = decided.await {
                            let _ = c.publish(to, reply).await;
                        }
                    });
                }
            }
        }
    });
    let (i, l) = (inner.clone(), local.clone());
    set.spawn(async move {
        while let Some(message) = links.next().await {
            serve::on_link(&i, &l, &message.payload);
        }
    });
    let (i, l) = (inner.clone(), local.clone());
    set.spawn(async move {
        while let Some(message) = datagrams.next().await {
            serve::on_datagram(&i, l.as_ref(), &message.payload);
        }
    });
    Ok(set)
}

/// One watched entry into the view; entries that do not decode are another build's
/// or garbage, and ignored.
fn apply(inner: &Inner, local: &dyn Local, entry: kv::Entry) {
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
    report(inner, local, changes);
}

fn report(inner: &Inner, local: &dyn Local, changes: Vec<Change>) {
    for c in changes {
        match c {
            Change::Joined(n) if n == inner.node => {}
            Change::Joined(n) => info!(node = %n, "cluster: node joined"),
            Change::Stopped(n) => {
                info!(node = %n, "cluster: node stopped");
                serve::peer_gone(inner, local, &n, "node stopped");
            }
            Change::Lost(n) => {
                warn!(node = %n, "cluster: node lost");
                metrics::counter!("quicmatch_cluster_nodes_lost_total").increment(1);
                serve::peer_gone(inner, local, &n, "node lost");
            }
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
