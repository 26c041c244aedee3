//! Prometheus metrics: what an operator watches. Off unless `metrics` (or `--metrics
//! ADDR`) names an address, where a small HTTP/1.1 listener then serves:
//!
//! - `/metrics`: the Prometheus text format, with `# HELP` for every metric below;
//!   unlabelled counters and gauges are there (at zero) from the start;
//! - `/healthz`: `200 ok` while the process runs;
//! - `/readyz`: `200 ready` while the server accepts sessions, `503 not ready` while it
//!   is starting or shutting down;
//! - anything else: `404`. Only `GET` and `HEAD` are answered.
//!
//! Each connection gets one answer and is closed; a request head is read for at most
//! 5 s and 8 KiB.
//!
//! Counters are bumped where things happen (through the `metrics` facade, which costs
//! nothing when no exporter is installed); gauges are refreshed from live counts once a
//! second.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `quicmatch_connections` | gauge | |
//! | `quicmatch_sessions` | gauge | |
//! | `quicmatch_matches` | gauge | |
//! | `quicmatch_match_presences` | gauge | |
//! | `quicmatch_parties` | gauge | |
//! | `quicmatch_matchmaker_pool` | gauge | |
//! | `quicmatch_datagrams_in_total` | counter | |
//! | `quicmatch_datagrams_out_total` | counter | |
//! | `quicmatch_datagrams_dropped_total` | counter | `reason` (`stale`: waited past `relay.max_datagram_age` before it could be relayed; `reader_behind`: an older datagram dropped for a reader that fell behind; `too_large`; `connection_lost`; or an error code) |
//! | `quicmatch_datagram_bytes_in_total` / `quicmatch_datagram_bytes_out_total` | counter | |
//! | `quicmatch_io_forwarded_total` | counter | (`proto` transport, `workers` > 1: packets one I/O loop handed to the loop owning their connection) |
//! | `quicmatch_io_forward_drops_total` | counter | (handed-over packets dropped: the owning loop had too many waiting) |
//! | `quicmatch_cluster_nodes` | gauge | (nodes in this node's cluster, itself included) |
//! | `quicmatch_cluster_remote_memberships` | gauge | (this node's sessions in matches other nodes host) |
//! | `quicmatch_cluster_remote_members` | gauge | (members homed on other nodes in matches this node hosts) |
//! | `quicmatch_cluster_remote_party_memberships` | gauge | (this node's sessions in, or asking to join, parties other nodes host) |
//! | `quicmatch_cluster_party_guests` | gauge | (sessions homed on other nodes in, or asking to join, parties this node hosts) |
//! | `quicmatch_cluster_messages_total` | counter | `dir` (`in`, `out`), `kind` (`request`, `link`, `datagram`) |
//! | `quicmatch_cluster_messages_dropped_total` | counter | `reason` (`undecodable`, `unknown_sender`, `stale`: for an earlier incarnation, `repeated`, `out_of_scope`) |
//! | `quicmatch_cluster_datagrams_dropped_total` | counter | `reason` (`queue_full`, `unpublished`, `too_large`, `refused`: the host refused it) |
//! | `quicmatch_cluster_link_gaps_total` / `quicmatch_cluster_link_replays_total` / `quicmatch_cluster_link_resets_total` | counter | (gaps found in links; replays published for a peer; links reset, ending what two nodes shared) |
//! | `quicmatch_cluster_fenced_total` | counter | (times this node left its cluster because its renewals failed for `node_ttl` less a heartbeat) |
//! | `quicmatch_cluster_nodes_lost_total` | counter | (nodes declared lost) |
//! | `quicmatch_cluster_request_failures_total` | counter | (requests to other nodes unanswered) |
//! | `quicmatch_cluster_list_partial_total` | counter | (listings that left out a node that did not answer) |
//! | `quicmatch_cluster_matchmaker_leader` | gauge | (1 while this node holds the matchmaker's lease and runs the cluster's passes) |
//! | `quicmatch_cluster_ticket_markers_purged_total` | counter | (delete markers of matched, cancelled or expired tickets the leader purged from the tickets bucket) |
//! | `quicmatch_cluster_matchmaker_suspects` | gauge | (suspect sessions, homed on any node, whose tickets the leader's passes skip; 0 unless leading) |
//! | `quicmatch_cluster_matchmaker_catchup_seconds` | histogram | (a new leader's read of the tickets bucket's history) |
//! | `quicmatch_cluster_matchmaker_commit_seconds` | histogram | (committing each leader pass's groups) |
//! | `quicmatch_cluster_ticket_writes_pending` | gauge | (this node's ticket adds and removals not yet acknowledged by the tickets bucket) |
//! | `quicmatch_cluster_matchmaker_groups_total` | counter | `outcome` (`committed`; `aborted`: a ticket was cancelled or changed before its group committed, or a leader's half-done group was swept) |
//! | `quicmatch_io_stale_packets_total` | counter | (`proto` transport: packets of established connections that waited past `relay.max_datagram_age` in the socket and were dropped unread; their senders see loss) |
//! | `quicmatch_io_send_stalls_total` | counter | (`proto` transport: times a loop's socket refused a packet and the loop waited for it to drain) |
//! | `quicmatch_reliable_messages_total` | counter | (relayed reliable match data, per recipient) |
//! | `quicmatch_requests_rejected_total` | counter | `code` |
//! | `quicmatch_rate_limited_total` | counter | (requests and match data refused by a session's rate limits) |
//! | `quicmatch_handshake_failures_total` | counter | |
//! | `quicmatch_auth_failures_total` | counter | `reason` |
//! | `quicmatch_slow_consumer_closes_total` | counter | |
//! | `quicmatch_suspect_sessions` | gauge | (not heard from for `session.suspect_after`) |
//! | `quicmatch_held_sessions` | gauge | (waiting for a resume) |
//! | `quicmatch_sessions_suspected_total` | counter | |
//! | `quicmatch_sessions_timed_out_total` | counter | (nothing heard for `session.idle_timeout`) |
//! | `quicmatch_resume_gaps_total` | counter | (resumes refused with `RESUME_GAP`) |
//! | `quicmatch_held_events_dropped_total` | counter | (events dropped while a session was held, over its limits) |
//! | `quicmatch_authoritative_matches` | gauge | (live server-run matches) |
//! | `quicmatch_matches_created_total` | counter | `handler` |
//! | `quicmatch_matches_ended_total` | counter | (server-run matches ended, any reason) |
//! | `quicmatch_match_panics_total` | counter | (handler callbacks that panicked) |
//! | `quicmatch_match_overruns_total` | counter | (ticks over budget, and callbacks stuck past `matches.overrun_limit`) |
//! | `quicmatch_match_tick_lateness_seconds` | histogram | (how late each tick started) |
//! | `quicmatch_match_input_dropped_total` | counter | (member messages refused by a full input queue) |
//! | `quicmatch_match_broadcast_errors_total` | counter | (handler sends dropped: oversized, match gone) |
//! | `quicmatch_rpc_calls_total` / `quicmatch_rpc_failures_total` | counter | |
//! | `quicmatch_matchmaker_pass_seconds` | histogram | |
//! | `quicmatch_matchmaker_matched_total` | counter | (tickets matched) |
//! | `quicmatch_matchmaker_expired_total` | counter | (tickets cancelled by `expires_after`) |
//! | `quicmatch_matchmaker_processor_rejected_total` | counter | (custom processor groups refused) |
//! | `quicmatch_matchmaker_processor_timeouts_total` / `quicmatch_matchmaker_processor_failures_total` | counter | |
//! | `quicmatch_storage_objects` | gauge | (storage objects in the store) |
//! | `quicmatch_storage_bytes` | gauge | (bytes of their values) |
//! | `quicmatch_storage_commit_seconds` | histogram | (each storage commit, fsync included) |
//! | `quicmatch_storage_writes_total` | counter | (objects written or deleted by committed requests) |
//! | `quicmatch_restart_records_written_total` | counter | (restart records written or deleted) |
//! | `quicmatch_restart_record_seconds` | histogram | (each recording round that wrote) |
//! | `quicmatch_restart_record_failures_total` | counter | (recording rounds whose commit failed) |

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

use crate::Stats;

/// How often gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the recorder's histograms are drained (`install_recorder` leaves it to us).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Most bytes of request head read from one connection.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After answering, how long (and how many bytes) unread input is discarded so that
/// closing does not reset the connection before the client has read the answer.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 64;

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Whether a metric has labels: a labelled one cannot be registered before its first
/// label value is known.
const LABELLED: bool = true;
const PLAIN: bool = false;

/// Every metric the server reports, with its `# HELP` text (the table above, in words).
const METRICS: &[(&str, Kind, bool, &str)] = &[
    ("quicmatch_connections", Kind::Gauge, PLAIN, "Open QUIC connections."),
    ("quicmatch_sessions", Kind::Gauge, PLAIN, "Authenticated sessions."),
    ("quicmatch_matches", Kind::Gauge, PLAIN, "Live matches."),
    ("quicmatch_match_presences", Kind::Gauge, PLAIN, "Members of live matches."),
    ("quicmatch_parties", Kind::Gauge, PLAIN, "Live parties."),
    ("quicmatch_matchmaker_pool", Kind::Gauge, PLAIN, "Matchmaker tickets waiting."),
    ("quicmatch_datagrams_in_total", Kind::Counter, PLAIN, "Datagrams received from clients."),
    ("quicmatch_datagrams_out_total", Kind::Counter, PLAIN, "Datagrams sent to clients."),
    (
        "quicmatch_datagrams_dropped_total",
        Kind::Counter,
        LABELLED,
        "Datagrams dropped, by reason: reader_behind (an older datagram dropped for a reader that fell behind), too_large, connection_lost, unsupported_by_peer, or an error code.",
    ),
    ("quicmatch_datagram_bytes_in_total", Kind::Counter, PLAIN, "Datagram bytes received."),
    ("quicmatch_datagram_bytes_out_total", Kind::Counter, PLAIN, "Datagram bytes sent."),
    (
        "quicmatch_io_forwarded_total",
        Kind::Counter,
        PLAIN,
        "Packets an I/O loop of the proto transport handed to the loop owning their connection.",
    ),
    (
        "quicmatch_io_forward_drops_total",
        Kind::Counter,
        PLAIN,
        "Handed-over packets dropped because the owning I/O loop had too many waiting.",
    ),
    (
        "quicmatch_cluster_nodes",
        Kind::Gauge,
        PLAIN,
        "Nodes in this node's cluster as it sees them, itself included.",
    ),
    (
        "quicmatch_cluster_remote_memberships",
        Kind::Gauge,
        PLAIN,
        "This node's sessions in matches other nodes of the cluster host.",
    ),
    (
        "quicmatch_cluster_remote_members",
        Kind::Gauge,
        PLAIN,
        "Members homed on other nodes in matches this node hosts.",
    ),
    (
        "quicmatch_cluster_remote_party_memberships",
        Kind::Gauge,
        PLAIN,
        "This node's sessions in, or asking to join, parties other nodes host.",
    ),
    (
        "quicmatch_cluster_party_guests",
        Kind::Gauge,
        PLAIN,
        "Sessions homed on other nodes in, or asking to join, parties this node hosts.",
    ),
    (
        "quicmatch_cluster_messages_total",
        Kind::Counter,
        LABELLED,
        "Messages between cluster nodes, by direction (in, out) and kind (request, link, datagram).",
    ),
    (
        "quicmatch_cluster_messages_dropped_total",
        Kind::Counter,
        LABELLED,
        "Messages from other nodes dropped, by reason: undecodable, unknown_sender, stale, repeated, out_of_scope.",
    ),
    (
        "quicmatch_cluster_datagrams_dropped_total",
        Kind::Counter,
        LABELLED,
        "Datagrams between nodes dropped, by reason: queue_full, unpublished, too_large, refused.",
    ),
    (
        "quicmatch_cluster_link_gaps_total",
        Kind::Counter,
        PLAIN,
        "Gaps found in links from other nodes (each asks for a replay).",
    ),
    (
        "quicmatch_cluster_link_replays_total",
        Kind::Counter,
        PLAIN,
        "Link batches published again for a peer that found a gap.",
    ),
    (
        "quicmatch_cluster_matchmaker_leader",
        Kind::Gauge,
        PLAIN,
        "1 while this node holds the matchmaker's lease and runs the cluster's passes.",
    ),
    (
        "quicmatch_cluster_ticket_markers_purged_total",
        Kind::Counter,
        PLAIN,
        "Delete markers of finished tickets the matchmaker's leader purged from the tickets bucket.",
    ),
    (
        "quicmatch_cluster_matchmaker_groups_total",
        Kind::Counter,
        LABELLED,
        "Groups the cluster's matchmaker leader formed, by outcome: committed, aborted.",
    ),
    (
        "quicmatch_cluster_matchmaker_suspects",
        Kind::Gauge,
        PLAIN,
        "Suspect sessions, homed on any node, whose tickets the leader's passes skip (0 unless leading).",
    ),
    (
        "quicmatch_cluster_matchmaker_catchup_seconds",
        Kind::Histogram,
        PLAIN,
        "From taking the matchmaker's lease to having read the tickets bucket's history.",
    ),
    (
        "quicmatch_cluster_matchmaker_commit_seconds",
        Kind::Histogram,
        PLAIN,
        "Committing a leader pass's groups: claims, group records, deliveries, deletes.",
    ),
    (
        "quicmatch_cluster_ticket_writes_pending",
        Kind::Gauge,
        PLAIN,
        "This node's ticket writes (adds, removals) not yet acknowledged by the tickets bucket.",
    ),
    (
        "quicmatch_cluster_fenced_total",
        Kind::Counter,
        PLAIN,
        "Times this node left its cluster because its renewals failed for node_ttl less a heartbeat.",
    ),
    (
        "quicmatch_cluster_link_resets_total",
        Kind::Counter,
        PLAIN,
        "Links reset, ending the memberships two nodes shared.",
    ),
    (
        "quicmatch_cluster_nodes_lost_total",
        Kind::Counter,
        PLAIN,
        "Nodes of the cluster declared lost.",
    ),
    (
        "quicmatch_cluster_list_partial_total",
        Kind::Counter,
        PLAIN,
        "Listings that left out a node of the cluster that did not answer in time.",
    ),
    (
        "quicmatch_cluster_request_failures_total",
        Kind::Counter,
        PLAIN,
        "Requests to other nodes that went unanswered.",
    ),
    (
        "quicmatch_io_stale_packets_total",
        Kind::Counter,
        PLAIN,
        "Packets that waited past relay.max_datagram_age in an I/O loop's socket, dropped unread.",
    ),
    (
        "quicmatch_io_send_stalls_total",
        Kind::Counter,
        PLAIN,
        "Times an I/O loop's socket refused a packet and the loop waited for it to drain.",
    ),
    (
        "quicmatch_reliable_messages_total",
        Kind::Counter,
        PLAIN,
        "Relayed reliable match data messages, per recipient.",
    ),
    (
        "quicmatch_requests_rejected_total",
        Kind::Counter,
        LABELLED,
        "Requests answered with an error, by error code.",
    ),
    (
        "quicmatch_rate_limited_total",
        Kind::Counter,
        PLAIN,
        "Requests and match data refused by a session's rate limits.",
    ),
    ("quicmatch_handshake_failures_total", Kind::Counter, PLAIN, "QUIC handshakes that failed."),
    (
        "quicmatch_auth_failures_total",
        Kind::Counter,
        LABELLED,
        "Failed authentications, by reason.",
    ),
    (
        "quicmatch_slow_consumer_closes_total",
        Kind::Counter,
        PLAIN,
        "Sessions closed with SLOW_CONSUMER for not reading their traffic.",
    ),
    (
        "quicmatch_suspect_sessions",
        Kind::Gauge,
        PLAIN,
        "Sessions not heard from for session.suspect_after.",
    ),
    ("quicmatch_held_sessions", Kind::Gauge, PLAIN, "Sessions held waiting for a resume."),
    (
        "quicmatch_sessions_suspected_total",
        Kind::Counter,
        PLAIN,
        "Sessions that became suspect.",
    ),
    (
        "quicmatch_sessions_timed_out_total",
        Kind::Counter,
        PLAIN,
        "Sessions closed after nothing was heard for session.idle_timeout.",
    ),
    (
        "quicmatch_resume_gaps_total",
        Kind::Counter,
        PLAIN,
        "Resumes refused with RESUME_GAP.",
    ),
    (
        "quicmatch_held_events_dropped_total",
        Kind::Counter,
        PLAIN,
        "Events dropped while a session was held, over its limits.",
    ),
    (
        "quicmatch_authoritative_matches",
        Kind::Gauge,
        PLAIN,
        "Live server-run matches.",
    ),
    (
        "quicmatch_matches_created_total",
        Kind::Counter,
        LABELLED,
        "Server-run matches created, by handler.",
    ),
    (
        "quicmatch_matches_ended_total",
        Kind::Counter,
        PLAIN,
        "Server-run matches ended, any reason.",
    ),
    (
        "quicmatch_match_panics_total",
        Kind::Counter,
        PLAIN,
        "Match handler callbacks that panicked.",
    ),
    (
        "quicmatch_match_overruns_total",
        Kind::Counter,
        PLAIN,
        "Match ticks over budget, and callbacks stuck past matches.overrun_limit.",
    ),
    (
        "quicmatch_match_tick_lateness_seconds",
        Kind::Histogram,
        PLAIN,
        "How late each server-run match tick started, in seconds.",
    ),
    (
        "quicmatch_match_input_dropped_total",
        Kind::Counter,
        PLAIN,
        "Member messages refused by a server-run match's full input queue.",
    ),
    (
        "quicmatch_match_broadcast_errors_total",
        Kind::Counter,
        PLAIN,
        "Match handler sends dropped (oversized, match gone).",
    ),
    ("quicmatch_rpc_calls_total", Kind::Counter, PLAIN, "RPC calls to server functions."),
    ("quicmatch_rpc_failures_total", Kind::Counter, PLAIN, "RPC calls that failed."),
    (
        "quicmatch_matchmaker_pass_seconds",
        Kind::Histogram,
        PLAIN,
        "Duration of each matchmaker pass, in seconds.",
    ),
    (
        "quicmatch_matchmaker_matched_total",
        Kind::Counter,
        PLAIN,
        "Matchmaker tickets matched.",
    ),
    (
        "quicmatch_matchmaker_expired_total",
        Kind::Counter,
        PLAIN,
        "Matchmaker tickets cancelled because their expires_after passes were over.",
    ),
    (
        "quicmatch_matchmaker_processor_rejected_total",
        Kind::Counter,
        PLAIN,
        "Groups a custom matchmaker processor returned that the server refused (invalid).",
    ),
    (
        "quicmatch_matchmaker_processor_timeouts_total",
        Kind::Counter,
        PLAIN,
        "Matchmaker passes whose custom processor did not answer within processor_timeout.",
    ),
    (
        "quicmatch_matchmaker_processor_failures_total",
        Kind::Counter,
        PLAIN,
        "Matchmaker passes whose custom processor panicked.",
    ),
    ("quicmatch_storage_objects", Kind::Gauge, PLAIN, "Storage objects in the store."),
    (
        "quicmatch_storage_bytes",
        Kind::Gauge,
        PLAIN,
        "Bytes of the storage objects' values.",
    ),
    (
        "quicmatch_storage_commit_seconds",
        Kind::Histogram,
        PLAIN,
        "Duration of each storage commit (one fsync, shared by the writes waiting), in seconds.",
    ),
    (
        "quicmatch_storage_writes_total",
        Kind::Counter,
        PLAIN,
        "Storage objects written or deleted by committed requests.",
    ),
    (
        "quicmatch_restart_records_written_total",
        Kind::Counter,
        PLAIN,
        "Restart records (sessions, parties, server-run matches and their snapshots) written or deleted.",
    ),
    (
        "quicmatch_restart_record_seconds",
        Kind::Histogram,
        PLAIN,
        "Duration of each round of recording for restarts that wrote something (snapshots, encoding and the commit), in seconds.",
    ),
    (
        "quicmatch_restart_record_failures_total",
        Kind::Counter,
        PLAIN,
        "Rounds of recording for restarts whose commit failed (tried again next round).",
    ),
];

/// Whether the server is accepting sessions (`/readyz`).
static READY: AtomicBool = AtomicBool::new(false);

/// Marks the server ready (serving) or not (starting, shutting down), for `/readyz`.
// Called by the server's accept loop.
pub(crate) fn set_ready(ready: bool) {
    READY.store(ready, Ordering::Relaxed);
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("metrics exporter on {addr}: {reason}")]
pub struct MetricsError {
    addr: SocketAddr,
    reason: String,
}

/// Installs the process-wide Prometheus recorder and serves `/metrics`, `/healthz` and
/// `/readyz` on `addr`: on the current Tokio runtime when there is one, else on a
/// thread of its own.
pub(crate) fn install(addr: SocketAddr) -> Result<(), MetricsError> {
    let fail = |reason: String| MetricsError { addr, reason };
    // Bound first, so a taken address fails here and leaves no recorder installed.
    let listener = std::net::TcpListener::bind(addr).map_err(|e| fail(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
        )
        // Commits take a fraction of a millisecond on a local disk.
        .and_then(|b| {
            b.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "quicmatch_storage_commit_seconds".into(),
                ),
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 1.0,
                ],
            )
        })
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| fail(e.to_string()))?;
    describe();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let listener = {
                let _entered = runtime.enter();
                TcpListener::from_std(listener).map_err(|e| fail(e.to_string()))?
            };
            runtime.spawn(listen(listener, handle));
        }
        Err(_) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| fail(e.to_string()))?;
            let listener = {
                let _entered = runtime.enter();
                TcpListener::from_std(listener).map_err(|e| fail(e.to_string()))?
            };
            std::thread::Builder::new()
                .name("quicmatch-metrics".into())
                .spawn(move || runtime.block_on(listen(listener, handle)))
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    Ok(())
}

/// Gives every metric its `# HELP` text, and registers the unlabelled counters and
/// gauges at zero so they are scraped before anything happens. Labelled counters appear
/// with their first label value; histograms with their first observation.
fn describe() {
    for &(name, kind, labelled, help) in METRICS {
        match kind {
            Kind::Counter => {
                metrics::describe_counter!(name, help);
                if !labelled {
                    metrics::counter!(name).absolute(0);
                }
            }
            Kind::Gauge => {
                metrics::describe_gauge!(name, help);
                if !labelled {
                    metrics::gauge!(name).set(0.0);
                }
            }
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// Accepts connections until the runtime stops, serving each on a task of its own.
async fn listen(listener: TcpListener, handle: PrometheusHandle) {
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    serve_connection(stream, &handle).await;
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::debug!(error = %e, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head, answers it and closes. Every failure just closes.
async fn serve_connection(mut stream: TcpStream, handle: &PrometheusHandle) {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Head::Complete(head))) => {
            route(&head, READY.load(Ordering::Relaxed), || handle.render())
        }
        Ok(Ok(Head::TooLarge)) => Response::text(431, "request head too large\n"),
        Ok(Ok(Head::Truncated)) => Response::text(400, "bad request\n"),
        Ok(Ok(Head::Empty)) | Ok(Err(_)) => return,
        Err(_) => Response::text(408, "request timeout\n"),
    };
    let bytes = response.into_bytes();
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        let _ = tokio::time::timeout(LINGER, drain(&mut stream)).await;
    }
}

/// Discards what the client still sends, up to [`LINGER_BYTES`], until it closes.
async fn drain(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < LINGER_BYTES {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

/// What the client sent before the blank line that ends a request head.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The head, up to and including its blank line.
    Complete(Vec<u8>),
    /// More than [`MAX_HEAD`] bytes without an end.
    TooLarge,
    /// The client closed part way through a head.
    Truncated,
    /// The client closed without sending anything.
    Empty,
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let room = MAX_HEAD + 1 - head.len();
        let n = stream.read(&mut chunk[..room.min(1024)]).await?;
        if n == 0 {
            return Ok(if head.is_empty() {
                Head::Empty
            } else {
                Head::Truncated
            });
        }
        let searched = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head[searched..]) {
            head.truncate(searched + end);
            return Ok(Head::Complete(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

/// Where the blank line ending a head ends in `bytes` (`\r\n\r\n`, or bare `\n\n`).
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).enumerate().find_map(|(i, w)| match w {
        [b'\n', b'\n'] => Some(i + 2),
        [b'\n', b'\r'] if bytes.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    })
}

/// One answer; every answer closes the connection.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    /// A `HEAD` request: the headers without the body.
    head_only: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            head_only: false,
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "",
        };
        let allow = if self.status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Answers a complete request head; `render` gives the metrics text.
fn route(head: &[u8], ready: bool, render: impl FnOnce() -> String) -> Response {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Response::text(400, "bad request\n");
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "bad request\n");
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return Response::text(400, "bad request\n");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Response::text(405, "method not allowed\n"),
    };
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let response = match path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: render(),
            head_only: false,
        },
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" if ready => Response::text(200, "ready\n"),
        "/readyz" => Response::text(503, "not ready\n"),
        _ => Response::text(404, "not found\n"),
    };
    Response {
        head_only,
        ..response
    }
}

/// Refreshes the gauges until shutdown.
pub(crate) async fn gauges(stats: Stats, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(GAUGE_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let m = stats.matches();
                metrics::gauge!("quicmatch_connections").set(stats.connections() as f64);
                metrics::gauge!("quicmatch_sessions").set(stats.sessions() as f64);
                metrics::gauge!("quicmatch_matches").set(m.matches as f64);
                metrics::gauge!("quicmatch_match_presences").set(m.presences as f64);
                metrics::gauge!("quicmatch_parties").set(stats.parties() as f64);
                metrics::gauge!("quicmatch_suspect_sessions").set(stats.suspect_sessions() as f64);
                metrics::gauge!("quicmatch_held_sessions").set(stats.held_sessions() as f64);
                metrics::gauge!("quicmatch_authoritative_matches").set(stats.authoritative_matches() as f64);
                metrics::gauge!("quicmatch_matchmaker_pool").set(stats.matchmaker().tickets as f64);
                let (memberships, members) = stats.cluster_memberships();
                metrics::gauge!("quicmatch_cluster_remote_memberships").set(memberships as f64);
                metrics::gauge!("quicmatch_cluster_remote_members").set(members as f64);
                let (memberships, guests) = stats.cluster_party_memberships();
                metrics::gauge!("quicmatch_cluster_remote_party_memberships").set(memberships as f64);
                metrics::gauge!("quicmatch_cluster_party_guests").set(guests as f64);
                metrics::gauge!("quicmatch_cluster_matchmaker_suspects")
                    .set(stats.cluster_matchmaker_suspects() as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(head: &str, ready: bool) -> Response {
        route(head.as_bytes(), ready, || "quicmatch_sessions 0\n".into())
    }

    #[test]
    fn routes_by_path() {
        let metrics = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", false);
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.body, "quicmatch_sessions 0\n");
        assert_eq!(get("GET /metrics?x=1 HTTP/1.0\r\n\r\n", false).status, 200);
        assert_eq!(get("GET /healthz HTTP/1.1\r\n\r\n", false).status, 200);
        assert_eq!(get("GET /healthz HTTP/1.1\r\n\r\n", false).body, "ok\n");
        assert_eq!(get("GET /readyz HTTP/1.1\r\n\r\n", true).status, 200);
        assert_eq!(get("GET /readyz HTTP/1.1\r\n\r\n", false).status, 503);
        assert_eq!(get("GET / HTTP/1.1\r\n\r\n", true).status, 404);
        assert_eq!(get("GET /metrics/ HTTP/1.1\r\n\r\n", true).status, 404);
        assert_eq!(get("GET /nope HTTP/1.1\r\n\r\n", true).status, 404);
        assert_eq!(get("POST /metrics HTTP/1.1\r\n\r\n", true).status, 405);
        let head = get("HEAD /healthz HTTP/1.1\r\n\r\n", true);
        assert_eq!(head.status, 200);
        let bytes = String::from_utf8(head.into_bytes()).expect("utf-8");
        assert!(bytes.ends_with("\r\n\r\n"), "{bytes}");
        assert!(bytes.contains("Content-Length: 3\r\n"), "{bytes}");
    }

    #[test]
    fn garbage_is_a_bad_request() {
        for head in [
            "\r\n\r\n",
            "GET\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1 extra\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(get(head, true).status, 400, "{head:?}");
        }
        assert_eq!(
            route(b"GET /\xff HTTP/1.1\r\n\r\n", true, String::new).status,
            400
        );
    }

    #[test]
    fn a_head_ends_at_its_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_end(b""), None);
        assert_eq!(head_end(b"\n"), None);
    }

    #[test]
    fn responses_are_well_formed() {
        let bytes = Response::text(404, "not found\n").into_bytes();
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Length: 10\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nnot found\n"), "{text}");
        let text = String::from_utf8(Response::text(405, "").into_bytes()).expect("utf-8");
        assert!(text.contains("Allow: GET, HEAD\r\n"), "{text}");
    }

    /// Every metric the source reports is in [`METRICS`] (so it has `# HELP`) with the
    /// kind it is used as, and in the table in this module's documentation.
    #[test]
    fn every_reported_metric_is_described() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let used = regex::Regex::new(r#"(counter|gauge|histogram)!\(\s*"(quicmatch_[a-z_]+)""#)
            .expect("regex");
        let doc = include_str!("metrics.rs");
        let doc: String = doc
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut stack = vec![src];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("read");
                for c in used.captures_iter(&text) {
                    let kind = match &c[1] {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        _ => Kind::Histogram,
                    };
                    let name = &c[2];
                    seen += 1;
                    let described = METRICS.iter().find(|m| m.0 == name);
                    assert_eq!(
                        described.map(|m| m.1),
                        Some(kind),
                        "{name} ({}) is not in METRICS as a {kind:?}",
                        path.display()
                    );
                    assert!(
                        doc.contains(&format!("`{name}`")),
                        "{name} is not in the table in the module documentation"
                    );
                }
            }
        }
        assert!(seen > 20, "found only {seen} uses of metrics");
        for (name, ..) in METRICS {
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} is described but not in the table"
            );
        }
    }
}
