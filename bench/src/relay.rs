//! `quicmatch-bench relay`: the same match-data workload through a real `quicmatch`
//! server process and through baseline relays (raw UDP; plain quinn; quinn-proto from
//! one thread), measured the same way.
//!
//! Players are put into matches through the real control plane (create, then join by
//! id), then every player sends `--payload`-byte unreliable match data at `--rate` Hz.
//! Each payload carries its send time, so receivers (in this process, on the same clock)
//! record one-way latency. Only messages sent inside the measurement window (after
//! `--warmup`, for `--duration`) count.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use quicmatch_client::{ClientConfig, Credentials, Event, MatchId, Socket, Trust};
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::{
    measure::{self, Recorder},
    quinn_relay,
    server_proc::{free_udp_port, ServerProc},
    udp_relay,
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
    /// A real quicmatch server (QUIC datagrams).
    Quicmatch,
    /// The raw-UDP baseline relay.
    UdpBaseline,
    /// The plain-quinn baseline relay: quinn with quicmatch's transport settings and
    /// nothing else.
    QuinnBaseline,
    /// The same relay driven by `quinn-proto` directly from one thread, without the
    /// `quinn` crate's tasks and channels.
    ProtoBaseline,
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
    /// Rounds for --compare.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Raise --matches until loss > 1% or p99 > 20 ms, for both transports.
    #[arg(long)]
    sweep: bool,
    /// Largest --matches a sweep tries.
    #[arg(long, default_value_t = 1000)]
    sweep_max: usize,
    /// Write an SVG chart of the sweep here.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// One JSON object per run (and per transport after a sweep).
    #[arg(long)]
    json: bool,
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
}

async fn start_server(args: &Args, transport: Transport) -> anyhow::Result<ServerProc> {
    match (args.server, transport) {
        (Some(addr), Transport::Quicmatch) => Ok(ServerProc::existing(addr, args.ca.clone())),
        (_, Transport::Quicmatch) => {
            ServerProc::quicmatch(args.server_bin.as_deref(), None, &[]).await
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
        (_, Transport::QuinnBaseline | Transport::ProtoBaseline) => {
            let addr: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
            let dir = tempfile::tempdir()?;
            let child = spawn_ready(&[
                if transport == Transport::QuinnBaseline {
                    "quinn-relay".into()
                } else {
                    "proto-relay".into()
                },
                "--listen".into(),
                addr.to_string(),
                "--dir".into(),
                dir.path().display().to_string(),
            ])
            .await?;
            Ok(ServerProc::from_child(child, addr)
                .with_cert(quinn_relay::cert_path(dir.path()), dir))
        }
    }
}

/// Starts this binary with `args` (a baseline relay) and waits for its `ready` line.
async fn spawn_ready(args: &[String]) -> anyhow::Result<std::process::Child> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout from the baseline relay"))?;
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
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

/// One player's way to send and receive.
enum Player {
    Quic {
        socket: Arc<Socket>,
        match_id: MatchId,
    },
    Udp {
        socket: Arc<UdpSocket>,
        header: [u8; udp_relay::DATA_HEADER],
    },
    Quinn {
        conn: quinn::Connection,
    },
}

impl Player {
    async fn send(&self, payload: Vec<u8>) -> bool {
        match self {
            Self::Quic { socket, match_id } => socket
                .send_match_data(*match_id, 1, payload, false, None)
                .await
                .is_ok(),
            Self::Udp { socket, header } => {
                let mut pkt = Vec::with_capacity(header.len() + payload.len());
                pkt.extend_from_slice(header);
                pkt.extend_from_slice(&payload);
                socket.send(&pkt).await.is_ok()
            }
            Self::Quinn { conn } => conn.send_datagram(payload.into()).is_ok(),
        }
    }
}

/// A client endpoint on loopback for many connections: with the kernel's default
/// buffer (about 200 KiB) a burst for a hundred connections overflows while the
/// endpoint task waits for a core, so it gets the same 4 MiB the relays get.
pub(crate) fn client_endpoint() -> anyhow::Result<quinn::Endpoint> {
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        quinn_relay::socket(([127, 0, 0, 1], 0).into())?,
        Arc::new(quinn::TokioRuntime),
    )?)
}

async fn connect_quic(server: &ServerProc, args: &Args) -> anyhow::Result<Vec<Player>> {
    let ca = server
        .ca
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no certificate for the server"))?;
    let endpoints: Vec<quinn::Endpoint> = (0..args.endpoints.max(1))
        .map(|_| client_endpoint())
        .collect::<anyhow::Result<_>>()?;
    let total = args.matches * args.players;
    let mut sockets = Vec::with_capacity(total);
    let mut i = 0;
    while i < total {
        let batch: Vec<_> = (i..(i + 32).min(total))
            .map(|n| {
                let mut config = ClientConfig::new(
                    server.addr,
                    Trust::CaFile(ca.clone()),
                    Credentials::Device {
                        id: format!("bench-device-{n:08}"),
                    },
                );
                config.event_buffer = 16_384;
                let endpoint = endpoints[n % endpoints.len()].clone();
                async move {
                    // The server may still be starting: retry for a few seconds.
                    let mut last = None;
                    for _ in 0..50 {
                        match Socket::connect_with_endpoint(endpoint.clone(), config.clone()).await
                        {
                            Ok(s) => return Ok(s),
                            Err(e) => last = Some(e),
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(anyhow::anyhow!("connect: {last:?}"))
                }
            })
            .collect();
        for s in futures_util::future::join_all(batch).await {
            sockets.push(Arc::new(s?));
        }
        i += 32;
    }
    let mut players = Vec::with_capacity(total);
    for group in sockets.chunks(args.players) {
        let m = group[0].create_match(None).await?;
        for s in &group[1..] {
            s.join_match(m.match_id).await?;
        }
        for s in group {
            players.push(Player::Quic {
                socket: s.clone(),
                match_id: m.match_id,
            });
        }
    }
    Ok(players)
}

async fn connect_quinn(server: &ServerProc, args: &Args) -> anyhow::Result<Vec<Player>> {
    let ca = server
        .ca
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no certificate for the quinn relay"))?;
    let mut roots = quinn::rustls::RootCertStore::empty();
    roots.add(std::fs::read(&ca)?.into())?;
    let mut config = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
    // The SDK's transport settings, so both QUIC runs differ only above quinn.
    let sdk = ClientConfig::new(
        server.addr,
        Trust::CaFile(ca),
        Credentials::Device { id: String::new() },
    );
    config.transport_config(Arc::new(sdk.transport()?));
    let endpoints: Vec<quinn::Endpoint> = (0..args.endpoints.max(1))
        .map(|_| {
            let mut e = client_endpoint()?;
            e.set_default_client_config(config.clone());
            Ok(e)
        })
        .collect::<anyhow::Result<_>>()?;
    let total = args.matches * args.players;
    let mut players = Vec::with_capacity(total);
    for start in (0..total).step_by(32) {
        let batch = (start..(start + 32).min(total)).map(|n| {
            let endpoint = endpoints[n % endpoints.len()].clone();
            let addr = server.addr;
            let m = u32::try_from(n / args.players).unwrap_or(u32::MAX);
            async move {
                let mut last = None;
                // The relay may still be starting: retry for a few seconds.
                for _ in 0..50 {
                    match join_quinn(&endpoint, addr, m).await {
                        Ok(conn) => return Ok(Player::Quinn { conn }),
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(anyhow::anyhow!("quinn relay: {last:?}"))
            }
        });
        for p in futures_util::future::join_all(batch).await {
            players.push(p?);
        }
    }
    Ok(players)
}

/// Connects to the plain-quinn relay and joins match `m`.
async fn join_quinn(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    m: u32,
) -> anyhow::Result<quinn::Connection> {
    let conn = endpoint.connect(addr, "localhost")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&m.to_le_bytes()).await?;
    send.finish()?;
    let mut ok = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), recv.read_exact(&mut ok)).await??;
    Ok(conn)
}

async fn connect_udp(server: &ServerProc, args: &Args) -> anyhow::Result<Vec<Player>> {
    let mut players = Vec::new();
    for m in 0..args.matches {
        for p in 0..args.players {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(server.addr).await?;
            let mut header = [0u8; udp_relay::DATA_HEADER];
            header[0] = udp_relay::DATA;
            header[1..5].copy_from_slice(&(m as u32).to_le_bytes());
            header[5..9].copy_from_slice(&(p as u32).to_le_bytes());
            let mut join = header;
            join[0] = udp_relay::JOIN;
            let mut buf = [0u8; 16];
            let mut joined = false;
            let mut last = None;
            for _ in 0..50 {
                socket.send(&join).await?;
                match tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut buf)).await
                {
                    Ok(Ok(n)) if n >= 1 && buf[0] == udp_relay::JOINED => {
                        joined = true;
                        break;
                    }
                    other => last = Some(format!("{other:?}")),
                }
            }
            anyhow::ensure!(
                joined,
                "baseline relay did not answer player {p} of match {m}: {last:?}"
            );
            players.push(Player::Udp {
                socket: Arc::new(socket),
                header,
            });
        }
    }
    Ok(players)
}

/// The window in which sent messages count, in `now_ns` time.
#[derive(Clone, Copy)]
struct Window {
    start: u64,
    end: u64,
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        (self.start..self.end).contains(&t)
    }
}

fn on_payload(rec: &mut Recorder, window: Window, payload: &[u8]) {
    let Some(sent) = payload
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
    else {
        return;
    };
    if window.contains(sent) {
        rec.record(Duration::from_nanos(now_ns().saturating_sub(sent)));
    }
}

async fn receive(player: Arc<Player>, window: Window, stop: CancellationToken) -> Recorder {
    let mut rec = Recorder::new();
    match &*player {
        Player::Quic { socket, .. } => loop {
            tokio::select! {
                () = stop.cancelled() => break,
                event = socket.next_event() => match event {
                    Some(Event::MatchData(d)) => on_payload(&mut rec, window, &d.data),
                    Some(Event::Disconnected { .. }) | None => break,
                    Some(_) => {}
                },
            }
        },
        Player::Quinn { conn } => loop {
            tokio::select! {
                () = stop.cancelled() => break,
                d = conn.read_datagram() => match d {
                    Ok(d) => on_payload(&mut rec, window, &d),
                    Err(_) => break,
                },
            }
        },
        Player::Udp { socket, .. } => {
            let mut buf = [0u8; 2048];
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    n = socket.recv(&mut buf) => match n {
                        Ok(n) if n > udp_relay::RELAYED_HEADER && buf[0] == udp_relay::RELAYED => {
                            on_payload(&mut rec, window, &buf[udp_relay::RELAYED_HEADER..n]);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    },
                }
            }
        }
    }
    rec
}

async fn send(
    player: Arc<Player>,
    args: Args,
    window: Window,
    phase: Duration,
    sent: Arc<AtomicU64>,
) {
    tokio::time::sleep(phase).await;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        let t = now_ns();
        if t >= window.end {
            break;
        }
        let mut payload = vec![0u8; args.payload.max(16)];
        payload[..8].copy_from_slice(&t.to_le_bytes());
        payload[8..16].copy_from_slice(&seq.to_le_bytes());
        seq += 1;
        if player.send(payload).await && window.contains(t) {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs the workload once through `transport`.
pub(crate) async fn run_once(args: &Args, transport: Transport) -> anyhow::Result<RunResult> {
    anyhow::ensure!(args.players >= 2, "--players must be at least 2");
    let busy0 = measure::machine_jiffies();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy_before = match (busy0, measure::machine_jiffies()) {
        (Some(a), Some(b)) => measure::busy_pct(a, b),
        _ => 0.0,
    };
    let server = start_server(args, transport).await?;
    let players: Vec<Arc<Player>> = match transport {
        Transport::Quicmatch => connect_quic(&server, args).await?,
        Transport::UdpBaseline => connect_udp(&server, args).await?,
        Transport::QuinnBaseline | Transport::ProtoBaseline => connect_quinn(&server, args).await?,
    }
    .into_iter()
    .map(Arc::new)
    .collect();

    let start = now_ns() + 200_000_000;
    let window = Window {
        start: start + (args.warmup * 1e9) as u64,
        end: start + ((args.warmup + args.duration) * 1e9) as u64,
    };
    let stop = CancellationToken::new();
    let sent = Arc::new(AtomicU64::new(0));
    let receivers: Vec<_> = players
        .iter()
        .map(|p| tokio::spawn(receive(p.clone(), window, stop.clone())))
        .collect();
    let period = 1.0 / args.rate.max(0.001);
    let n = players.len().max(1);
    let senders: Vec<_> = players
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let phase = Duration::from_secs_f64(0.2 + period * i as f64 / n as f64);
            tokio::spawn(send(p.clone(), args.clone(), window, phase, sent.clone()))
        })
        .collect();

    // CPU is sampled over the measurement window only.
    let ticks_per_s = measure::clock_ticks();
    let until = |t: u64| Duration::from_nanos(t.saturating_sub(now_ns()));
    tokio::time::sleep(until(window.start)).await;
    let server_ticks0 = server.pid().and_then(measure::process_cpu_ticks);
    let client_ticks0 = measure::process_cpu_ticks(std::process::id());
    let t0 = Instant::now();
    tokio::time::sleep(until(window.end)).await;
    let wall = t0.elapsed();
    let server_ticks = server
        .pid()
        .and_then(measure::process_cpu_ticks)
        .zip(server_ticks0)
        .map(|(b, a)| b.saturating_sub(a));
    let client_ticks = measure::process_cpu_ticks(std::process::id())
        .zip(client_ticks0)
        .map(|(b, a)| b.saturating_sub(a))
        .unwrap_or(0);
    for s in senders {
        let _ = s.await;
    }
    // Let the last messages of the window arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let mut rec = Recorder::new();
    for r in receivers {
        if let Ok(part) = r.await {
            rec.merge(&part);
        }
    }
    drop(players);
    drop(server);

    let sent = sent.load(Ordering::Relaxed);
    let expected = sent * (args.players as u64 - 1);
    let secs = args.duration.max(1e-9);
    let server_cpu_s = server_ticks.map_or(0.0, |t| t as f64 / ticks_per_s);
    Ok(RunResult {
        transport,
        matches: args.matches,
        players: args.players,
        payload: args.payload.max(16),
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
        server_cpu_pct: server_ticks.map_or(0.0, |t| measure::cpu_pct(t, ticks_per_s, wall)),
        server_us_per_delivery: if rec.delivered == 0 {
            0.0
        } else {
            server_cpu_s * 1e6 / rec.delivered as f64
        },
        client_cpu_pct: measure::cpu_pct(client_ticks, ticks_per_s, wall),
        busy_before_pct: busy_before,
    })
}

fn print(result: &RunResult, json: bool) {
    if json {
        println!("{}", serde_json::to_string(result).unwrap_or_default());
        return;
    }
    println!(
        "{:<13} M={:<4} P={} B={} R={} | offered {:>8.0}/s delivered {:>8.0}/s loss {:>5.2}% | p50 {:>6} us p99 {:>7} us p99.9 {:>7} us max {:>7} us | server {:>5.1}% CPU {:>6.2} us/delivery | client {:>5.1}% | busy before {:>4.1}%",
        format!("{:?}", result.transport),
        result.matches,
        result.players,
        result.payload,
        result.rate,
        result.offered_per_s,
        result.delivered_per_s,
        result.loss_pct,
        result.p50_us,
        result.p99_us,
        result.p999_us,
        result.max_us,
        result.server_cpu_pct,
        result.server_us_per_delivery,
        result.client_cpu_pct,
        result.busy_before_pct,
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A sustained operating point: no more than 1% loss and p99 under 20 ms.
fn sustained(r: &RunResult) -> bool {
    r.loss_pct <= 1.0 && r.p99_us <= 20_000
}

/// The transports a comparison or sweep runs, quicmatch first.
fn transports(args: &Args) -> Vec<Transport> {
    let mut t = vec![Transport::Quicmatch, Transport::UdpBaseline];
    if args.with_quinn {
        t.push(Transport::QuinnBaseline);
    }
    if args.with_proto {
        t.push(Transport::ProtoBaseline);
    }
    t
}

/// The JSON key part and the printed name of an extra baseline.
fn extra_names(t: Transport) -> (&'static str, &'static str) {
    match t {
        Transport::ProtoBaseline => ("proto", "quinn-proto"),
        _ => ("quinn", "plain quinn"),
    }
}

/// Median ratios of `a`'s figures over `b`'s.
fn ratios(a: &[RunResult], b: &[RunResult]) -> serde_json::Value {
    let m = |v: &[RunResult], f: fn(&RunResult) -> f64| median(v.iter().map(f).collect());
    let ratio = |f: fn(&RunResult) -> f64| {
        let base = m(b, f);
        if base == 0.0 {
            0.0
        } else {
            m(a, f) / base
        }
    };
    serde_json::json!({
        "p50_ratio": ratio(|r| r.p50_us as f64),
        "p99_ratio": ratio(|r| r.p99_us as f64),
        "delivered_ratio": ratio(|r| r.delivered_per_s),
        "server_us_per_delivery_ratio": ratio(|r| r.server_us_per_delivery),
    })
}

fn print_ratios(label: &str, rounds: usize, r: &serde_json::Value) {
    println!(
        "ratios ({label}, medians of {rounds}): p50 {:.2}x, p99 {:.2}x, delivered {:.2}x, server CPU per delivery {:.2}x",
        r["p50_ratio"].as_f64().unwrap_or(0.0),
        r["p99_ratio"].as_f64().unwrap_or(0.0),
        r["delivered_ratio"].as_f64().unwrap_or(0.0),
        r["server_us_per_delivery_ratio"].as_f64().unwrap_or(0.0),
    );
}

async fn compare(args: &Args) -> anyhow::Result<()> {
    let kinds = transports(args);
    let mut results: Vec<Vec<RunResult>> = vec![Vec::new(); kinds.len()];
    for _ in 0..args.rounds.max(1) {
        for (i, t) in kinds.iter().enumerate() {
            let r = run_once(args, *t).await?;
            print(&r, args.json);
            results[i].push(r);
        }
    }
    let mut out = ratios(&results[0], &results[1]);
    out["compare"] = "quicmatch / udp-baseline (medians)".into();
    out["rounds"] = args.rounds.into();
    let extra: Vec<_> = kinds.iter().zip(&results).skip(2).collect();
    for (t, r) in &extra {
        let (short, _) = extra_names(**t);
        out[format!("quicmatch_vs_{short}")] = ratios(&results[0], r);
        out[format!("{short}_vs_udp")] = ratios(r, &results[1]);
    }
    if args.json {
        println!("{out}");
    } else {
        print_ratios("quicmatch / baseline", args.rounds, &out);
        for (t, _) in &extra {
            let (short, long) = extra_names(**t);
            print_ratios(
                &format!("quicmatch / {long}"),
                args.rounds,
                &out[format!("quicmatch_vs_{short}")],
            );
            print_ratios(
                &format!("{long} / baseline"),
                args.rounds,
                &out[format!("{short}_vs_udp")],
            );
        }
    }
    Ok(())
}

async fn sweep(args: &Args) -> anyhow::Result<()> {
    let mut best = Vec::new();
    let mut all: Vec<RunResult> = Vec::new();
    for t in transports(args) {
        let mut m = args.matches.max(1);
        let mut top: Option<RunResult> = None;
        while m <= args.sweep_max {
            let mut a = args.clone();
            a.matches = m;
            let r = run_once(&a, t).await?;
            print(&r, args.json);
            all.push(r.clone());
            if !sustained(&r) {
                break;
            }
            if top
                .as_ref()
                .is_none_or(|b| r.delivered_per_s > b.delivered_per_s)
            {
                top = Some(r);
            }
            m = (m * 3).div_ceil(2);
        }
        best.push((t, top));
    }
    let mut summary = Vec::new();
    for (t, top) in &best {
        let obj = serde_json::json!({
            "transport": t,
            "sustained_delivered_per_s": top.as_ref().map_or(0.0, |r| r.delivered_per_s),
            "at_matches": top.as_ref().map_or(0, |r| r.matches),
            "server_us_per_delivery": top.as_ref().map_or(0.0, |r| r.server_us_per_delivery),
        });
        if args.json {
            println!("{obj}");
        } else {
            println!(
                "{:?}: sustained {:.0} deliveries/s at M={} ({:.2} us server CPU per delivery)",
                t,
                obj["sustained_delivered_per_s"].as_f64().unwrap_or(0.0),
                obj["at_matches"],
                obj["server_us_per_delivery"].as_f64().unwrap_or(0.0)
            );
        }
        summary.push(obj);
    }
    let rate = |i: usize| {
        summary
            .get(i)
            .and_then(|o| o["sustained_delivered_per_s"].as_f64())
            .unwrap_or(0.0)
    };
    if !args.json {
        if rate(1) > 0.0 {
            println!(
                "sustained ratio quicmatch / baseline: {:.2}x",
                rate(0) / rate(1)
            );
        }
        for (i, (t, _)) in best.iter().enumerate().skip(2) {
            let (_, long) = extra_names(*t);
            if rate(i) > 0.0 {
                println!(
                    "sustained ratio quicmatch / {long}: {:.2}x",
                    rate(0) / rate(i)
                );
                if rate(1) > 0.0 {
                    println!(
                        "sustained ratio {long} / baseline: {:.2}x",
                        rate(i) / rate(1)
                    );
                }
            }
        }
    }
    if let Some(path) = &args.chart {
        crate::chart::draw(path, &all)?;
        if !args.json {
            println!("chart written to {}", path.display());
        }
    }
    Ok(())
}

/// Entry point of `quicmatch-bench relay`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        BASE.get_or_init(Instant::now);
        if args.sweep {
            sweep(args).await
        } else if args.compare {
            compare(args).await
        } else {
            let r = run_once(args, args.transport).await?;
            print(&r, args.json);
            Ok(())
        }
    })
}
