//! `quicmatch-bench relay`: the same match-data workload through a real `quicmatch`
//! server process and through baseline relays (raw UDP; plain quinn, with quicmatch's
//! transport settings or with quinn's default acknowledgements; quinn-proto from one
//! thread), measured the same way.
//!
//! Players are put into matches through the real control plane (create, then join by
//! id), then every player sends `--payload`-byte match data at `--rate` Hz, unreliable
//! unless `--reliable`. Each payload carries its send time, so receivers (in this
//! process, on the same clock) record one-way latency, and a sampler records staleness
//! (the age of the newest message each receiver holds from each other player). Only
//! messages sent inside the measurement window (after `--warmup`, for `--duration`)
//! count.
//!
//! On a machine with at least two usable cores the server process runs on cores of its
//! own and this process (the load generator) on the others (`--no-pin` shares them);
//! each side's CPU is reported, and a run whose load generator saturated its cores
//! while the server did not is marked `client_bound`: it measured the clients.
//!
//! With `--loss`, `--delay` or `--jitter`, every client talks to the server through the
//! in-process impairment proxy (`crate::impair`), impaired the same way in each
//! direction, so a message crosses the impaired link twice (sender to server, server to
//! receiver). With `--loss-downlink-receivers N` the loss applies only to the server's
//! packets to the first N players of each match (the impaired receivers, behind a second
//! proxy); delay and jitter stay on both directions of every player, and latency is also
//! reported for the impaired receivers and the others apart.
//!
//! Every run also reports where datagrams were dropped during the window
//! (`drops.rs`): the kernel's UDP receive-buffer drops (machine-wide, and the server's
//! socket apart from the load generator's), the quicmatch server's own drops by reason
//! (scraped from its `--metrics`), and the loss neither accounts for.
//! `--server-socket-buffer` sets the quicmatch server's `socket_buffer` for the run.
//!
//! Layout: this file (arguments, one run, the entry point), `players.rs` (connecting
//! each relay's players), `traffic.rs` (senders, receivers, staleness), `summary.rs`
//! (printing, `--compare`, `--sweep`), `drops.rs` (where datagrams were dropped).

mod cluster;
mod drops;
mod players;
mod summary;
mod traffic;

use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{atomic::AtomicU64, Arc, OnceLock},
    time::{Duration, Instant},
};

pub(crate) use cluster::start_nats;
pub(crate) use drops::scrape;
pub(crate) use players::{client_endpoint, frame, frame_codec};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    impair::{Impairment, Proxy},
    measure::{self, Recorder},
    pin, quinn_relay,
    server_proc::{free_udp_port, ServerProc},
};

/// Where send times are measured from (one clock for senders and receivers).
static BASE: OnceLock<Instant> = OnceLock::new();

fn now_ns() -> u64 {
    u64::try_from(BASE.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Which relay carries the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Transport {
    /// A real quicmatch server (QUIC datagrams, or its reliable path), on the transport
    /// `--server-transport` names.
    Quicmatch,
    /// A real quicmatch server on its quinn-proto transport (`transport = "proto"`).
    QuicmatchProto,
    /// The raw-UDP baseline relay.
    UdpBaseline,
    /// The plain-quinn baseline relay: quinn with quicmatch's transport settings and
    /// nothing else.
    QuinnBaseline,
    /// The same relay driven by `quinn-proto` directly from one thread, without the
    /// `quinn` crate's tasks and channels.
    ProtoBaseline,
    /// The plain-quinn relay with quinn's default acknowledgements on both ends (no
    /// ACK-frequency extension).
    QuinnDefaultAcks,
}

impl Transport {
    /// Its name on the command line.
    fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_owned())
    }

    /// Whether its relay forwards data on streams too (`--reliable`).
    fn has_reliable_path(self) -> bool {
        matches!(
            self,
            Self::Quicmatch | Self::QuicmatchProto | Self::QuinnBaseline | Self::QuinnDefaultAcks
        )
    }

    /// Whether it is a quicmatch server (either transport).
    pub(crate) fn is_quicmatch(self) -> bool {
        matches!(self, Self::Quicmatch | Self::QuicmatchProto)
    }
}

/// The transport of the quicmatch server a run starts (`--server-transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ServerTransport {
    /// quinn's endpoint (`transport = "quinn"`).
    Quinn,
    /// The quinn-proto I/O loop (`transport = "proto"`).
    Proto,
    /// Both, one after the other, in --compare and --sweep (`quicmatch` and
    /// `quicmatch-proto`); a single run uses quinn.
    Both,
}

#[derive(clap::Args, Clone)]
pub(crate) struct Args {
    /// Matches.
    #[arg(long, default_value_t = 100)]
    matches: usize,
    /// Players per match.
    #[arg(long, default_value_t = 4)]
    players: usize,
    /// Payload bytes per message (at least 16).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Messages per second per player.
    #[arg(long, default_value_t = 30.0)]
    rate: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of traffic before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Which relay.
    #[arg(long, value_enum, default_value_t = Transport::Quicmatch)]
    transport: Transport,
    /// The transport of the quicmatch server the bench starts: `quinn`, `proto`, or
    /// `both` (--compare and --sweep run quicmatch on each and print both against the
    /// baselines).
    #[arg(long, value_enum, default_value_t = ServerTransport::Quinn)]
    pub(crate) server_transport: ServerTransport,
    /// I/O loops of the quicmatch server's `proto` transport (its `workers`).
    #[arg(long, default_value_t = 1)]
    server_workers: usize,
    /// Use a running quicmatch server instead of starting one (needs --ca).
    #[arg(long, requires = "ca")]
    server: Option<SocketAddr>,
    /// CA or self-signed certificate of --server.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The quicmatch binary (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Client endpoints (UDP sockets) the quicmatch players are spread over.
    #[arg(long, default_value_t = 4)]
    endpoints: usize,
    /// Sockets of the baseline relay (SO_REUSEPORT).
    #[arg(long, default_value_t = 2)]
    baseline_sockets: usize,
    /// Alternate quicmatch and the baseline `--rounds` times and print the ratios.
    #[arg(long)]
    compare: bool,
    /// Also run the plain-quinn baseline in --compare and --sweep, and print
    /// quicmatch's ratios against it.
    #[arg(long)]
    with_quinn: bool,
    /// Also run the quinn-proto baseline in --compare and --sweep.
    #[arg(long)]
    with_proto: bool,
    /// Also run the plain-quinn baseline with default acknowledgements in --compare and
    /// --sweep.
    #[arg(long)]
    with_quinn_default_acks: bool,
    /// Rounds for --compare.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Raise --matches until loss > 1% or p99 > 20 ms, for both transports.
    #[arg(long)]
    sweep: bool,
    /// Largest --matches a sweep tries.
    #[arg(long, default_value_t = 1000)]
    sweep_max: usize,
    /// Steps a sweep goes on past the first point that is not sustained (overload).
    #[arg(long, default_value_t = 0)]
    beyond: usize,
    /// Write an SVG chart of the sweep here.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// One JSON object per run (and per transport after a sweep).
    #[arg(long)]
    json: bool,
    /// Let the server and the load generator share every core (by default, with at
    /// least 2 usable cores, each gets its own).
    #[arg(long)]
    no_pin: bool,
    /// Cores given to the server when pinning (default: half the usable ones).
    #[arg(long)]
    server_cores: Option<usize>,
    /// Limit every server process this run starts (quicmatch and the baselines) to
    /// this percent of one core (10 to 6400), through a cgroup CPU quota (root): on a machine too
    /// small to give the load generator more cores than the server, this makes the
    /// server's knee the one a sweep finds (BENCHMARKS.md, "Shedding past the knee").
    #[arg(long)]
    server_cpu_quota: Option<f64>,
    /// Percent of packets the impairment proxy drops, in each direction.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// One-way delay the impairment proxy adds in each direction, in ms.
    #[arg(long, default_value_t = 0.0)]
    delay: f64,
    /// Extra random delay in each direction, uniform in 0..jitter ms (reorders).
    #[arg(long, default_value_t = 0.0)]
    jitter: f64,
    /// Send match data on the reliable path (quicmatch, plain-quinn relays) instead of
    /// datagrams.
    #[arg(long)]
    reliable: bool,
    /// quicmatch only: each datagram also carries up to K (at most 3) of the sender's
    /// previous messages (the SDK's `SendOptions::redundancy`); the baselines send
    /// plain datagrams, for a same-run comparison.
    #[arg(long, default_value_t = 0)]
    redundancy: usize,
    /// quicmatch only: send each datagram again MS milliseconds after the first (the
    /// SDK's `SendOptions::repeat_after`; at most 1000); the baselines send each once.
    #[arg(long, value_name = "MS")]
    repeat_after: Option<f64>,
    /// With --repeat-after: how many times each datagram is sent again (1 to 3; the
    /// SDK's `SendOptions::repeat_times`).
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Apply --loss only to the server-to-client direction of the first N players of
    /// each match (fewer than --players); --delay and --jitter stay on both directions
    /// of everyone. Latency is also reported for those receivers and the others apart.
    #[arg(long, default_value_t = 0)]
    loss_downlink_receivers: usize,
    /// The quicmatch server's kernel UDP socket buffer for this run, in bytes (its
    /// `socket_buffer`; default: the server's own, 4 MiB). The baselines keep theirs.
    #[arg(long)]
    server_socket_buffer: Option<usize>,
    /// The kernel UDP socket buffer of the SDK players' client endpoints (quicmatch
    /// only), in bytes (default 4 MiB).
    #[arg(long)]
    client_socket_buffer: Option<usize>,
    /// Don't start the quicmatch server with `--metrics` (then its own datagram drops
    /// are not reported).
    #[arg(long)]
    no_server_metrics: bool,
    /// Start the quicmatch server listening on every address (`0.0.0.0`) rather than
    /// on loopback's: its replies then name their source address, so the `proto`
    /// transport writes them one system call each instead of in one `sendmmsg`.
    #[arg(long)]
    server_listen_any: bool,
    /// The quicmatch server's `relay.max_datagram_age` for this run, in milliseconds
    /// (`0`: off; default: the server's own, 40 ms; applies with `proto`).
    #[arg(long)]
    server_max_datagram_age: Option<u64>,
    /// The quicmatch server's `relay.min_congestion_window` for this run, in bytes
    /// (`0`: quinn's own minimum; default: the server's own, 32 KiB).
    #[arg(long)]
    server_min_congestion_window: Option<u64>,
    /// The SDK players' `max_datagram_age`, in milliseconds. Default `0` (off): the
    /// players then read datagrams directly, the SDK's cheapest path, so the load
    /// generator spends its core on traffic (the bound's reader task costs a task hop
    /// per datagram; BENCHMARKS.md). `100` is the SDK's own default.
    #[arg(long, default_value_t = 0)]
    client_max_datagram_age: u64,
    /// quicmatch players (SDK sockets) write and read their datagrams on the QUIC
    /// connection directly, as the plain-quinn relay's bare clients do: the SDK only
    /// connects, authenticates and joins. Both QUIC relays are then measured through
    /// the same client path, and a difference between them is the server's.
    #[arg(long, conflicts_with_all = ["reliable", "redundancy", "repeat_after", "client_max_datagram_age"])]
    bare_clients: bool,
    /// Runs quicmatch as a cluster of two nodes on a nats-server the bench starts
    /// (`nats-server` 2.10 or later on PATH); `--cluster-layout` places the players.
    #[arg(long)]
    cluster: bool,
    /// With `--cluster`: `local` keeps each match and its players on one node (matches
    /// alternate between them), `spread` puts half of each match's players on the other
    /// node.
    #[arg(long, value_enum, default_value_t = cluster::Layout::Local, requires = "cluster")]
    cluster_layout: cluster::Layout,
    /// With `--cluster`: how many nodes (2 or 3); matches take turns at them.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=3), requires = "cluster")]
    cluster_nodes: u8,
}

/// (uplink, downlink) impairment of one proxy.
type Link = (Impairment, Impairment);

/// The impairment proxies of a run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Links {
    /// Every player's proxy, or with impaired receivers the other players'; `None`:
    /// they talk to the server directly.
    players: Option<Link>,
    /// The impaired receivers' proxy (`--loss-downlink-receivers`), if any.
    impaired: Option<Link>,
}

/// Where each player's packets go: the server or a proxy in front of it, the first
/// `receivers` players of each match of `per_match` to `impaired`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Route {
    players: SocketAddr,
    impaired: SocketAddr,
    receivers: usize,
    per_match: usize,
    /// With `--cluster`: the other nodes, and which players go there.
    cluster: Option<cluster::Nodes>,
}

impl Route {
    /// Whether player `player` (index over all matches, `per_match` to a match) is one
    /// of the impaired receivers.
    fn is_impaired(&self, player: usize) -> bool {
        player % self.per_match.max(1) < self.receivers
    }

    /// Where player `player` sends.
    pub(super) fn addr(&self, player: usize) -> SocketAddr {
        if let Some(other) = self.cluster.and_then(|c| c.other(player, self.per_match)) {
            return other;
        }
        if self.is_impaired(player) {
            self.impaired
        } else {
            self.players
        }
    }
}

/// Latency of the deliveries to one group of receivers (`--loss-downlink-receivers`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GroupLatency {
    /// Receivers of this group in each match.
    pub(crate) receivers: usize,
    pub(crate) delivered: u64,
    pub(crate) p50_us: u64,
    pub(crate) p90_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    /// Percent of these deliveries slower than the run's `late_us`.
    pub(crate) late_pct: f64,
}

impl GroupLatency {
    fn of(rec: &Recorder, receivers: usize, late_us: u64) -> Self {
        Self {
            receivers,
            delivered: rec.delivered,
            p50_us: rec.quantile_us(0.5),
            p90_us: rec.quantile_us(0.9),
            p99_us: rec.quantile_us(0.99),
            p999_us: rec.quantile_us(0.999),
            max_us: rec.max_us(),
            late_pct: rec.share_above_pct(late_us),
        }
    }
}

/// A proxy with `link` in front of `server`, or none.
async fn start_proxy(
    server: SocketAddr,
    link: Option<Link>,
    seed: u64,
) -> io::Result<Option<Proxy>> {
    match link {
        Some((up, down)) if up == down => Proxy::start(server, up, seed).await.map(Some),
        Some((up, down)) => Proxy::start_split(server, up, down, seed).await.map(Some),
        None => Ok(None),
    }
}

impl Args {
    /// The impairment each direction gets, when any is asked for.
    fn impairment(&self) -> anyhow::Result<Option<Impairment>> {
        anyhow::ensure!((0.0..=100.0).contains(&self.loss), "--loss is a percentage");
        let ms = |v: f64, name: &str| {
            anyhow::ensure!(v.is_finite() && v >= 0.0, "{name} must be >= 0 ms");
            Ok(Duration::from_secs_f64(v / 1000.0))
        };
        let (delay, jitter) = (ms(self.delay, "--delay")?, ms(self.jitter, "--jitter")?);
        Ok(
            (self.loss > 0.0 || !delay.is_zero() || !jitter.is_zero()).then_some(Impairment {
                loss: self.loss / 100.0,
                delay,
                jitter,
                ..Impairment::CLEAN
            }),
        )
    }

    /// The proxies to start: one for everyone, impaired the same both ways; or with
    /// `--loss-downlink-receivers`, the loss only on the impaired receivers' downlink.
    fn links(&self) -> anyhow::Result<Links> {
        let Some(imp) = self.impairment()? else {
            return Ok(Links {
                players: None,
                impaired: None,
            });
        };
        if self.loss_downlink_receivers == 0 {
            return Ok(Links {
                players: Some((imp, imp)),
                impaired: None,
            });
        }
        let base = Impairment { loss: 0.0, ..imp };
        Ok(Links {
            players: (base != Impairment::CLEAN).then_some((base, base)),
            impaired: Some((base, imp)),
        })
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunResult {
    pub(crate) transport: Transport,
    pub(crate) matches: usize,
    pub(crate) players: usize,
    pub(crate) payload: usize,
    pub(crate) rate: f64,
    pub(crate) duration_s: f64,
    pub(crate) sent_per_s: f64,
    pub(crate) offered_per_s: f64,
    pub(crate) delivered_per_s: f64,
    pub(crate) loss_pct: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    pub(crate) server_cpu_pct: f64,
    pub(crate) server_us_per_delivery: f64,
    pub(crate) client_cpu_pct: f64,
    pub(crate) busy_before_pct: f64,
    /// The machine's busy share (all cores) during the window: above what the server
    /// and the clients account for, something else ran.
    pub(crate) busy_during_pct: f64,
    /// Whether the server and the load generator ran on cores of their own.
    pub(crate) pinned: bool,
    pub(crate) server_cpus: Vec<usize>,
    pub(crate) client_cpus: Vec<usize>,
    /// Busy share of the server's and of the clients' cores during the window (100 =
    /// every core of that side busy), whatever ran there; 0 when not pinned.
    pub(crate) server_cores_busy_pct: f64,
    pub(crate) client_cores_busy_pct: f64,
    /// The load generator's side saturated (its process or its cores at >= 90 %) while
    /// the server's did not: the run measured the clients. `null` when not pinned.
    pub(crate) client_bound: Option<bool>,
    pub(crate) reliable: bool,
    /// Previous messages each datagram repeated (quicmatch's `--redundancy`; 0 for the
    /// baselines and for reliable data).
    pub(crate) redundancy: usize,
    /// Milliseconds after which each datagram was sent again (quicmatch's
    /// `--repeat-after`; `null` for the baselines, for reliable data, and without it).
    pub(crate) repeat_after_ms: Option<f64>,
    /// How many times each datagram was sent again with `repeat_after_ms`.
    pub(crate) repeats: usize,
    /// The impairment asked for (each direction).
    pub(crate) link_loss_pct: f64,
    pub(crate) link_delay_ms: f64,
    pub(crate) link_jitter_ms: f64,
    /// Packets the proxy actually dropped, both directions, in percent.
    pub(crate) link_dropped_pct: f64,
    /// Age of the newest message each receiver held from each other player of its
    /// match, sampled every 10 ms.
    pub(crate) staleness_p50_us: u64,
    pub(crate) staleness_p99_us: u64,
    pub(crate) staleness_p999_us: u64,
    pub(crate) staleness_max_us: u64,
    /// `--loss-downlink-receivers` (0: the loss, if any, is on every player's link,
    /// both ways, and the groups below are absent).
    pub(crate) loss_downlink_receivers: usize,
    /// 1.2 x the other receivers' p99: deliveries slower than this are "late".
    pub(crate) late_us: u64,
    /// Deliveries to the impaired receivers, and to the others.
    pub(crate) impaired_receivers: Option<GroupLatency>,
    pub(crate) other_receivers: Option<GroupLatency>,
    /// `--server-socket-buffer` (quicmatch only; `null`: the server's default).
    pub(crate) server_socket_buffer: Option<usize>,
    /// `--client-socket-buffer` (quicmatch only; `null`: 4 MiB).
    pub(crate) client_socket_buffer: Option<usize>,
    /// `--server-max-datagram-age` / `--client-max-datagram-age` in ms (quicmatch only;
    /// server `null`: its default, 40 ms; client `0`: off).
    pub(crate) server_max_datagram_age_ms: Option<u64>,
    /// `--server-min-congestion-window` in bytes (quicmatch only; `null`: its default).
    pub(crate) server_min_congestion_window: Option<u64>,
    /// `--server-cpu-quota`: the servers' CPU limit, percent of one core.
    pub(crate) server_cpu_quota_pct: Option<f64>,
    pub(crate) client_max_datagram_age_ms: Option<u64>,
    /// `--bare-clients`: the quicmatch players read and wrote datagrams on their QUIC
    /// connections directly (quicmatch only).
    pub(crate) bare_clients: bool,
    /// Where datagrams were dropped during the window.
    pub(crate) drops: drops::Drops,
    /// The quicmatch server's transport (`quinn` or `proto`); `null` for the
    /// baselines.
    pub(crate) server_transport: Option<&'static str>,
    /// `--server-workers` (quicmatch on `proto` only).
    pub(crate) server_workers: Option<usize>,
    /// `--cluster-layout` with `--cluster` (server CPU is every node's and the
    /// nats-server's); `null` without.
    pub(crate) cluster_layout: Option<cluster::Layout>,
    /// `--cluster-nodes` with `--cluster`; `null` without.
    pub(crate) cluster_nodes: Option<u8>,
}

/// A quicmatch server started by the bench: its metrics address (unless
/// `--no-server-metrics`) and config (`--server-socket-buffer`).
async fn start_quicmatch(
    args: &Args,
    transport: ServerTransport,
) -> anyhow::Result<(ServerProc, Option<SocketAddr>)> {
    start_node(args, transport, &[], None).await
}

/// A quicmatch server with `more` arguments, sharing `certs` when given.
async fn start_node(
    args: &Args,
    transport: ServerTransport,
    more: &[String],
    certs: Option<&std::path::Path>,
) -> anyhow::Result<(ServerProc, Option<SocketAddr>)> {
    let metrics = if args.no_server_metrics {
        None
    } else {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        Some(l.local_addr()?)
    };
    let mut extra: Vec<String> = metrics
        .iter()
        .flat_map(|m| ["--metrics".to_owned(), m.to_string()])
        .collect();
    extra.push("--workers".into());
    extra.push(args.server_workers.to_string());
    extra.push("--transport".into());
    extra.push(
        match transport {
            ServerTransport::Proto => "proto",
            ServerTransport::Quinn | ServerTransport::Both => "quinn",
        }
        .into(),
    );
    let mut toml = args
        .server_socket_buffer
        .map(|b| format!("socket_buffer = {b}\n"))
        .unwrap_or_default();
    if args.server_max_datagram_age.is_some() || args.server_min_congestion_window.is_some() {
        toml.push_str("[relay]\n");
    }
    if let Some(ms) = args.server_max_datagram_age {
        toml.push_str(&format!("max_datagram_age = \"{ms}ms\"\n"));
    }
    if let Some(bytes) = args.server_min_congestion_window {
        toml.push_str(&format!("min_congestion_window = {bytes}\n"));
    }
    let toml = (!toml.is_empty()).then_some(toml);
    extra.extend_from_slice(more);
    let server = ServerProc::quicmatch_on(
        args.server_bin.as_deref(),
        toml.as_deref(),
        &extra,
        certs,
        args.server_listen_any,
    )
    .await?;
    Ok((server, metrics))
}

/// The relay's server, and where it serves metrics (a quicmatch server the bench
/// started).
async fn start_server(
    args: &Args,
    transport: Transport,
) -> anyhow::Result<(ServerProc, Option<SocketAddr>)> {
    let server: anyhow::Result<ServerProc> = match (args.server, transport) {
        (Some(addr), Transport::Quicmatch | Transport::QuicmatchProto) => {
            Ok(ServerProc::existing(addr, args.ca.clone()))
        }
        (_, Transport::Quicmatch) => return start_quicmatch(args, args.server_transport).await,
        (_, Transport::QuicmatchProto) => {
            return start_quicmatch(args, ServerTransport::Proto).await
        }
        (_, Transport::UdpBaseline) => {
            let addr: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
            let child = spawn_ready(&[
                "udp-relay".into(),
                "--listen".into(),
                addr.to_string(),
                "--sockets".into(),
                args.baseline_sockets.to_string(),
            ])
            .await?;
            Ok(ServerProc::from_child(child, addr))
        }
        (_, Transport::QuinnBaseline | Transport::ProtoBaseline | Transport::QuinnDefaultAcks) => {
            let addr: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
            let dir = tempfile::tempdir()?;
            let mut cmd = vec![
                if transport == Transport::ProtoBaseline {
                    "proto-relay".into()
                } else {
                    "quinn-relay".into()
                },
                "--listen".into(),
                addr.to_string(),
                "--dir".into(),
                dir.path().display().to_string(),
            ];
            if transport == Transport::QuinnDefaultAcks {
                cmd.push("--default-acks".into());
            }
            let child = spawn_ready(&cmd).await?;
            Ok(ServerProc::from_child(child, addr)
                .with_cert(quinn_relay::cert_path(dir.path()), dir))
        }
    };
    Ok((server?, None))
}

/// Starts this binary with `args` (a baseline relay, on the server cores) and waits for
/// its `ready` line.
async fn spawn_ready(args: &[String]) -> anyhow::Result<std::process::Child> {
    let mut child = pin::spawn(
        Command::new(std::env::current_exe()?)
            .args(args)
            .stdout(Stdio::piped()),
    )?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout from the baseline relay"))?;
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .map_err(|_| anyhow::anyhow!("baseline relay did not start"))???;
    if line.trim() != "ready" {
        let status = child.wait()?;
        anyhow::bail!("baseline relay failed to start ({status})");
    }
    Ok(child)
}

/// Connects the players of `transport`'s relay, each through its `to` address.
async fn connect(
    server: &ServerProc,
    to: Route,
    args: &Args,
    transport: Transport,
) -> anyhow::Result<Vec<players::Player>> {
    let ca = || {
        server
            .ca
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no certificate for the server"))
    };
    match transport {
        Transport::Quicmatch | Transport::QuicmatchProto => {
            players::connect_quic(to, ca()?, args).await
        }
        Transport::UdpBaseline => players::connect_udp(to, args).await,
        Transport::QuinnBaseline | Transport::ProtoBaseline | Transport::QuinnDefaultAcks => {
            players::connect_quinn(to, ca()?, args, transport).await
        }
    }
}

/// Runs the workload once through `transport`.
pub(crate) async fn run_once(args: &Args, transport: Transport) -> anyhow::Result<RunResult> {
    anyhow::ensure!(args.players >= 2, "--players must be at least 2");
    anyhow::ensure!(args.redundancy <= 3, "--redundancy is at most 3");
    anyhow::ensure!(
        args.repeat_after
            .is_none_or(|ms| (0.0..=1000.0).contains(&ms)),
        "--repeat-after is 0 to 1000 ms"
    );
    anyhow::ensure!((1..=3).contains(&args.repeats), "--repeats is 1 to 3");
    anyhow::ensure!(
        !args.reliable || transport.has_reliable_path(),
        "--reliable: the {} relay has no reliable path",
        transport.name()
    );
    anyhow::ensure!(
        args.loss_downlink_receivers < args.players,
        "--loss-downlink-receivers must be below --players"
    );
    let impairment = args.impairment()?;
    let links = args.links()?;
    let busy0 = measure::machine_jiffies();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy_before = match (busy0, measure::machine_jiffies()) {
        (Some(a), Some(b)) => measure::busy_pct(a, b),
        _ => 0.0,
    };
    // The baselines of a --compare or --sweep run stay single servers.
    let clustered = args.cluster && transport.is_quicmatch();
    anyhow::ensure!(
        !clustered || links == Links::default(),
        "--cluster runs on a clean loopback (no --loss, --delay or --jitter)"
    );
    let (server, metrics, cluster) = if clustered {
        let (nats, store, url) = start_nats().await?;
        let transport = match transport {
            Transport::QuicmatchProto => ServerTransport::Proto,
            _ => args.server_transport,
        };
        let (first, metrics) =
            start_node(args, transport, &cluster::node_args(&url, "bench-a"), None).await?;
        let certs = cluster::certs_dir(&first)?;
        let mut others = Vec::new();
        for name in ["bench-b", "bench-c"]
            .into_iter()
            .take(usize::from(args.cluster_nodes).saturating_sub(1))
        {
            let (node, _) = start_node(
                args,
                transport,
                &cluster::node_args(&url, name),
                Some(&certs),
            )
            .await?;
            others.push(node);
        }
        let cluster = cluster::assemble(nats, store, others, args.cluster_layout);
        (first, metrics, Some(cluster))
    } else {
        let (server, metrics) = start_server(args, transport).await?;
        (server, metrics, None)
    };
    let proxy = start_proxy(server.addr, links.players, 1).await?;
    let impaired_proxy = start_proxy(server.addr, links.impaired, 2).await?;
    let plain = proxy.as_ref().map_or(server.addr, |p| p.addr);
    let to = Route {
        players: plain,
        impaired: impaired_proxy.as_ref().map_or(plain, |p| p.addr),
        receivers: args.loss_downlink_receivers,
        per_match: args.players,
        cluster: cluster.as_ref().map(|c| c.route(server.addr)),
    };
    let players = connect(&server, to, args, transport).await?;
    // The SDK's own drops (data that waited past `max_datagram_age` in a receiver).
    let sdk_sockets: Vec<Arc<quicmatch_client::Socket>> = players
        .iter()
        .filter_map(|p| match &p.rx {
            players::Rx::Quic { socket } => Some(socket.clone()),
            _ => None,
        })
        .collect();
    let sdk_dropped = || -> Option<u64> {
        (!sdk_sockets.is_empty()).then(|| sdk_sockets.iter().map(|s| s.datagrams_dropped()).sum())
    };

    let start = now_ns() + 200_000_000;
    let window = traffic::Window {
        start: start + (args.warmup * 1e9) as u64,
        end: start + ((args.warmup + args.duration) * 1e9) as u64,
    };
    let stop = CancellationToken::new();
    let sent = Arc::new(AtomicU64::new(0));
    let board = Arc::new(traffic::Staleness::new(players.len(), args.players));
    let sampler = tokio::spawn(traffic::sample_staleness(board.clone(), window));
    let period = 1.0 / args.rate.max(0.001);
    let n = players.len().max(1);
    let mut receivers = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    for (i, p) in players.into_iter().enumerate() {
        receivers.push(tokio::spawn(traffic::receive(
            p.rx,
            i,
            window,
            board.clone(),
            stop.clone(),
        )));
        let phase = Duration::from_secs_f64(0.2 + period * i as f64 / n as f64);
        senders.push(tokio::spawn(traffic::send(
            p.tx,
            i,
            args.rate,
            args.payload,
            window,
            phase,
            sent.clone(),
        )));
    }

    // CPU is sampled over the measurement window only.
    let ticks_per_s = measure::clock_ticks();
    let until = |t: u64| Duration::from_nanos(t.saturating_sub(now_ns()));
    tokio::time::sleep(until(window.start)).await;
    let drops0 = drops::Snapshot::take(server.addr.port(), metrics).await;
    let sdk_dropped0 = sdk_dropped();
    // The server's processes: with --cluster, both nodes and the nats-server.
    let server_pids: Vec<u32> = server
        .pid()
        .into_iter()
        .chain(cluster.iter().flat_map(cluster::Cluster::pids))
        .collect();
    let server_ticks_now = || -> Option<u64> {
        server_pids
            .iter()
            .map(|pid| measure::process_cpu_ticks(*pid))
            .sum::<Option<u64>>()
            .filter(|_| !server_pids.is_empty())
    };
    let server_ticks0 = server_ticks_now();
    let client_ticks0 = measure::process_cpu_ticks(std::process::id());
    let busy0 = measure::machine_jiffies();
    let layout = pin::layout();
    let side =
        |pick: fn(&pin::Layout) -> &[usize]| layout.and_then(|l| measure::cores_jiffies(pick(l)));
    let (server_cores0, client_cores0) = (side(|l| &l.server), side(|l| &l.client));
    let t0 = Instant::now();
    tokio::time::sleep(until(window.end)).await;
    let wall = t0.elapsed();
    let server_ticks = server_ticks_now()
        .zip(server_ticks0)
        .map(|(b, a)| b.saturating_sub(a));
    let client_ticks = measure::process_cpu_ticks(std::process::id())
        .zip(client_ticks0)
        .map(|(b, a)| b.saturating_sub(a))
        .unwrap_or(0);
    let busy_during = match (busy0, measure::machine_jiffies()) {
        (Some(a), Some(b)) => measure::busy_pct(a, b),
        _ => 0.0,
    };
    let busy = |a: Option<(u64, u64)>, b| a.zip(b).map_or(0.0, |(a, b)| measure::busy_pct(a, b));
    let server_cores_busy_pct = busy(server_cores0, side(|l| &l.server));
    let client_cores_busy_pct = busy(client_cores0, side(|l| &l.client));
    for s in senders {
        let _ = s.await;
    }
    // Let the last messages of the window arrive (retransmissions through a slow link
    // take a few round trips).
    let link = impairment.map_or(Duration::ZERO, |i| i.delay + i.jitter);
    tokio::time::sleep(Duration::from_millis(500) + link * 10).await;
    let drops1 = drops::Snapshot::take(server.addr.port(), metrics).await;
    let sdk_dropped1 = sdk_dropped();
    stop.cancel();
    let mut rec = Recorder::new();
    // Deliveries to the impaired receivers, and to the others.
    let (mut impaired, mut others) = (Recorder::new(), Recorder::new());
    for (i, r) in receivers.into_iter().enumerate() {
        if let Ok(part) = r.await {
            rec.merge(&part);
            if to.is_impaired(i) {
                impaired.merge(&part);
            } else {
                others.merge(&part);
            }
        }
    }
    let late_us = others.quantile_us(0.99) * 6 / 5;
    let groups = (args.loss_downlink_receivers > 0).then(|| {
        let n = args.loss_downlink_receivers;
        (
            GroupLatency::of(&impaired, n, late_us),
            GroupLatency::of(&others, args.players - n, late_us),
        )
    });
    let stale = sampler.await.unwrap_or_else(|_| Recorder::new());
    let (passed, dropped) = [&proxy, &impaired_proxy]
        .into_iter()
        .flatten()
        .map(Proxy::counts)
        .fold((0, 0), |(p, d), (p2, d2)| (p + p2, d + d2));
    let link_dropped_pct = measure::loss_pct(passed + dropped, passed);
    drop(proxy);
    drop(impaired_proxy);
    drop(server);
    drop(cluster);

    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    let expected = sent * (args.players as u64 - 1);
    let secs = args.duration.max(1e-9);
    let server_cpu_s = server_ticks.map_or(0.0, |t| t as f64 / ticks_per_s);
    let server_cpu_pct = server_ticks.map_or(0.0, |t| measure::cpu_pct(t, ticks_per_s, wall));
    let client_cpu_pct = measure::cpu_pct(client_ticks, ticks_per_s, wall);
    Ok(RunResult {
        transport,
        matches: args.matches,
        players: args.players,
        payload: args.payload.max(traffic::PAYLOAD_HEADER),
        rate: args.rate,
        duration_s: args.duration,
        sent_per_s: sent as f64 / secs,
        offered_per_s: expected as f64 / secs,
        delivered_per_s: rec.delivered as f64 / secs,
        loss_pct: measure::loss_pct(expected, rec.delivered),
        p50_us: rec.quantile_us(0.5),
        p99_us: rec.quantile_us(0.99),
        p999_us: rec.quantile_us(0.999),
        max_us: rec.max_us(),
        server_cpu_pct,
        server_us_per_delivery: if rec.delivered == 0 {
            0.0
        } else {
            server_cpu_s * 1e6 / rec.delivered as f64
        },
        client_cpu_pct,
        busy_before_pct: busy_before,
        busy_during_pct: busy_during,
        pinned: layout.is_some(),
        server_cpus: layout.map(|l| l.server.clone()).unwrap_or_default(),
        client_cpus: layout.map(|l| l.client.clone()).unwrap_or_default(),
        server_cores_busy_pct,
        client_cores_busy_pct,
        client_bound: layout.map(|l| {
            let client = pin::saturated(client_cpu_pct, l.client.len())
                || client_cores_busy_pct >= pin::SATURATED_PCT;
            let server = match crate::quota::get() {
                Some(q) => server_cpu_pct >= crate::quota::saturation_pct(q),
                None => {
                    pin::saturated(server_cpu_pct, l.server.len())
                        || server_cores_busy_pct >= pin::SATURATED_PCT
                }
            };
            client && !server
        }),
        reliable: args.reliable,
        redundancy: if transport.is_quicmatch() && !args.reliable {
            args.redundancy
        } else {
            0
        },
        repeat_after_ms: args
            .repeat_after
            .filter(|_| transport.is_quicmatch() && !args.reliable),
        repeats: if args.repeat_after.is_some() && transport.is_quicmatch() && !args.reliable {
            args.repeats
        } else {
            0
        },
        link_loss_pct: args.loss,
        link_delay_ms: args.delay,
        link_jitter_ms: args.jitter,
        link_dropped_pct,
        staleness_p50_us: stale.quantile_us(0.5),
        staleness_p99_us: stale.quantile_us(0.99),
        staleness_p999_us: stale.quantile_us(0.999),
        staleness_max_us: stale.max_us(),
        loss_downlink_receivers: args.loss_downlink_receivers,
        late_us,
        impaired_receivers: groups.as_ref().map(|g| g.0.clone()),
        other_receivers: groups.map(|g| g.1),
        server_socket_buffer: args
            .server_socket_buffer
            .filter(|_| transport.is_quicmatch()),
        client_socket_buffer: args
            .client_socket_buffer
            .filter(|_| transport.is_quicmatch()),
        server_cpu_quota_pct: crate::quota::get().map(|q| q.pct),
        server_max_datagram_age_ms: args
            .server_max_datagram_age
            .filter(|_| transport.is_quicmatch()),
        server_min_congestion_window: args
            .server_min_congestion_window
            .filter(|_| transport.is_quicmatch()),
        client_max_datagram_age_ms: Some(args.client_max_datagram_age)
            .filter(|_| transport.is_quicmatch()),
        bare_clients: args.bare_clients && transport.is_quicmatch(),
        drops: drops::Drops::between(
            &drops0,
            &drops1,
            expected,
            rec.delivered,
            args.players.saturating_sub(1) as u64,
        )
        .with_client(
            sdk_dropped0
                .zip(sdk_dropped1)
                .map(|(a, b)| b.saturating_sub(a)),
            expected,
        ),
        server_transport: match (transport, args.server_transport) {
            (Transport::Quicmatch, ServerTransport::Proto) | (Transport::QuicmatchProto, _) => {
                Some("proto")
            }
            (Transport::Quicmatch, _) => Some("quinn"),
            _ => None,
        },
        server_workers: match (transport, args.server_transport) {
            (Transport::Quicmatch, ServerTransport::Proto) | (Transport::QuicmatchProto, _) => {
                Some(args.server_workers)
            }
            _ => None,
        },
        cluster_layout: (args.cluster && transport.is_quicmatch()).then_some(args.cluster_layout),
        cluster_nodes: (args.cluster && transport.is_quicmatch()).then_some(args.cluster_nodes),
    })
}

/// Entry point of `quicmatch-bench relay`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    // Before the runtime starts its threads, so they all inherit the client cores. A
    // server someone else runs cannot be pinned, so nothing is.
    if !args.no_pin && args.server.is_none() {
        pin::isolate(args.server_cores)?;
    }
    if let Some(pct) = args.server_cpu_quota {
        crate::quota::set(pct)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        BASE.get_or_init(Instant::now);
        if args.sweep {
            summary::sweep(args).await
        } else if args.compare {
            summary::compare(args).await
        } else {
            let r = run_once(args, args.transport).await?;
            summary::print(&r, args.json);
            Ok(())
        }
    });
    drop(runtime);
    crate::quota::remove();
    result
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(line: &str) -> Args {
        Cli::parse_from(std::iter::once("relay").chain(line.split_whitespace())).args
    }

    #[test]
    fn loss_goes_both_ways_for_everyone_unless_only_some_downlinks_are_asked() {
        let ms = Duration::from_millis;
        assert_eq!(
            args("").links().ok(),
            Some(Links {
                players: None,
                impaired: None
            })
        );
        let imp = Impairment {
            loss: 0.05,
            delay: ms(20),
            ..Impairment::CLEAN
        };
        let both = args("--loss 5 --delay 20").links().ok();
        assert_eq!(
            both,
            Some(Links {
                players: Some((imp, imp)),
                impaired: None
            })
        );
        let delay = Impairment { loss: 0.0, ..imp };
        let split = args("--loss 5 --delay 20 --loss-downlink-receivers 1")
            .links()
            .ok();
        assert_eq!(
            split,
            Some(Links {
                players: Some((delay, delay)),
                impaired: Some((delay, imp)),
            })
        );
        // No delay: the other players need no proxy at all.
        let lossy = Impairment {
            loss: 0.05,
            ..Impairment::CLEAN
        };
        let bare = args("--loss 5 --loss-downlink-receivers 2").links().ok();
        assert_eq!(
            bare,
            Some(Links {
                players: None,
                impaired: Some((Impairment::CLEAN, lossy)),
            })
        );
    }

    #[test]
    fn the_first_receivers_of_each_match_go_through_the_impaired_proxy() {
        let (plain, lossy): (SocketAddr, SocketAddr) =
            (([127, 0, 0, 1], 1).into(), ([127, 0, 0, 1], 2).into());
        let route = Route {
            players: plain,
            impaired: lossy,
            receivers: 1,
            per_match: 4,
            cluster: None,
        };
        let impaired: Vec<usize> = (0..12).filter(|&i| route.is_impaired(i)).collect();
        assert_eq!(impaired, [0, 4, 8]);
        assert_eq!(route.addr(4), lossy);
        assert_eq!(route.addr(5), plain);
        let none = Route {
            receivers: 0,
            ..route
        };
        assert!((0..12).all(|i| none.addr(i) == plain));
        // With a second node of a cluster, the layout picks it for its players.
        let node_b: SocketAddr = ([127, 0, 0, 1], 3).into();
        let spread = Route {
            cluster: Some(cluster::Nodes {
                nodes: [plain, node_b, node_b],
                count: 2,
                layout: cluster::Layout::Spread,
            }),
            ..none
        };
        let to_b: Vec<usize> = (0..8).filter(|&i| spread.addr(i) == node_b).collect();
        assert_eq!(to_b, [2, 3, 4, 5]);
    }
}
