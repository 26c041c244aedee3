//! `quicmatch-bench authoritative`: server-run matches ticking inside an in-process
//! server, measured from inside the match engine.
//!
//! The server is the library (`Server::builder(..).match_handler("bench", ..)`) on
//! 127.0.0.1 port 0, with a certificate generated into a temporary directory, serving
//! on its own tokio runtime with one worker thread (`qm-bench-server`). `--matches M`
//! matches of the `bench` handler are created through `Runtime::create_match` from
//! the main thread (a blocking thread), paced over one tick interval so that their
//! ticks are spread evenly over it (`--aligned` creates them back to back instead).
//! Every tick a match applies its members' inputs to its state and broadcasts one
//! `--state-bytes` state datagram from the server to its members (to nobody with
//! `--players 0`).
//!
//! `--players P` SDK clients per match connect over `--endpoints` shared client
//! endpoints on a second runtime (`qm-bench-client`, `--client-threads` workers), join
//! their match, send a 16-byte input datagram at `--input-rate` Hz each and drain their
//! events. The engine's own threads (`quicmatch-match` workers and the
//! `quicmatch-ticks` timer) are std threads, so the three groups are told apart by
//! thread name in `/proc/self/task/*/stat`.
//!
//! Measured over the `--duration` window after `--warmup`:
//! - tick lateness, by the handler itself: at each tick,
//!   `now - (previous tick's start + 1/T)`, clamped at 0 (the first tick of a match is
//!   skipped), into per-thread HdrHistograms merged at the end. It is tick-to-tick
//!   jitter: a match running a constant offset behind its schedule reads 0;
//! - ticks run (an atomic counter), against `M × T` per second;
//! - engine CPU (utime + stime of the engine's threads) as a share of one core and per
//!   match-tick; the server runtime's, the clients' and the whole process's CPU for
//!   context;
//! - the time the engine's threads spent runnable but waiting for a core (the second
//!   field of `/proc/self/task/*/schedstat`), as a share of the window: every
//!   wake-up's latency, and more when the cores are busy elsewhere;
//! - state datagrams the clients received against `M × P × T` per second, and inputs
//!   the matches processed against what the clients sent.

use std::{
    cell::RefCell,
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use quicmatch::{
    runtime::{Dispatcher, Inbound, MatchContext, MatchHandler, MatchInit, Params},
    Config, Server, ServerBuilder,
};
use quicmatch_client::{ClientConfig, Credentials, Event, MatchId, SessionId, Socket, Trust};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::measure::{self, Recorder};

/// Name of the server runtime's threads (at most 15 bytes: the kernel's `comm`).
const SERVER_THREADS: &str = "qm-bench-server";
/// Name of the clients' runtime threads.
const CLIENT_THREADS: &str = "qm-bench-client";
/// Names of the match engine's threads.
const ENGINE_THREADS: [&str; 2] = ["quicmatch-match", "quicmatch-ticks"];
/// Bytes of one input datagram.
const INPUT_BYTES: usize = 16;
/// Op code of inputs (client to match) and of state (match to clients).
const OP_INPUT: i64 = 1;
const OP_STATE: i64 = 2;

#[derive(clap::Args, Clone)]
pub(crate) struct Args {
    /// Server-run matches.
    #[arg(long, default_value_t = 100)]
    matches: usize,
    /// SDK clients per match (0: matches tick and broadcast to nobody).
    #[arg(long, default_value_t = 4)]
    players: usize,
    /// Ticks per second of every match (1 to 60).
    #[arg(long, default_value_t = 30)]
    tick: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of ticking (and traffic) before measuring.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Input datagrams per second per client.
    #[arg(long, default_value_t = 2.0)]
    input_rate: f64,
    /// Bytes of the state datagram a match broadcasts each tick (24 to 1024).
    #[arg(long, default_value_t = 48)]
    state_bytes: usize,
    /// Match engine worker threads (`matches.workers`; 0: one per core, at least 2).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Worker threads of the clients' runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Client endpoints (UDP sockets) the clients are spread over.
    #[arg(long, default_value_t = 4)]
    endpoints: usize,
    /// Create the matches back to back, so their ticks fall due together, instead of
    /// spreading their first ticks over one tick interval.
    #[arg(long)]
    aligned: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the match handlers report, process-wide (one run per process).
struct Probe {
    /// Lateness is recorded only while this is set (the measured window).
    measuring: AtomicBool,
    /// Ticks run, ever.
    ticks: AtomicU64,
    /// Inputs the matches processed, ever.
    inputs: AtomicU64,
    /// Every thread's lateness histogram.
    lateness: Mutex<Vec<Arc<Mutex<Recorder>>>>,
}

static PROBE: Probe = Probe {
    measuring: AtomicBool::new(false),
    ticks: AtomicU64::new(0),
    inputs: AtomicU64::new(0),
    lateness: Mutex::new(Vec::new()),
};

thread_local! {
    /// This worker thread's histogram: uncontended until it is read at the end.
    static LATENESS: RefCell<Option<Arc<Mutex<Recorder>>>> = const { RefCell::new(None) };
}

fn record_lateness(late: Duration) {
    LATENESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let rec = cell.get_or_insert_with(|| {
            let rec = Arc::new(Mutex::new(Recorder::new()));
            lock(&PROBE.lateness).push(rec.clone());
            rec
        });
        lock(rec).record(late);
    });
}

fn merged_lateness() -> Recorder {
    let mut all = Recorder::new();
    for rec in lock(&PROBE.lateness).iter() {
        all.merge(&lock(rec));
    }
    all
}

/// How late a tick started: `now - (previous start + interval)`, clamped at zero; `None`
/// for a match's first tick.
fn lateness(prev_start: Option<Instant>, interval: Duration, now: Instant) -> Option<Duration> {
    prev_start.map(|prev| now.saturating_duration_since(prev + interval))
}

/// The benchmark's match: a position per member, moved by inputs, broadcast each tick.
struct BenchMatch {
    interval: Duration,
    state_bytes: usize,
    prev_start: Option<Instant>,
    players: Vec<(SessionId, i64, i64)>,
}

impl BenchMatch {
    fn new() -> Self {
        Self {
            interval: Duration::from_secs(1),
            state_bytes: 48,
            prev_start: None,
            players: Vec::new(),
        }
    }

    fn apply(&mut self, input: &Inbound) {
        let d = &input.data;
        if d.len() < 8 {
            return;
        }
        let dx = i64::from(i16::from_le_bytes([d[4], d[5]]));
        let dy = i64::from(i16::from_le_bytes([d[6], d[7]]));
        let id = input.sender.session_id;
        match self.players.iter_mut().find(|p| p.0 == id) {
            Some(p) => {
                p.1 += dx;
                p.2 += dy;
            }
            None => self.players.push((id, dx, dy)),
        }
    }

    fn state(&self, tick: u64, inputs: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.state_bytes);
        out.extend_from_slice(&tick.to_le_bytes());
        out.extend_from_slice(&u32::try_from(inputs).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(self.players.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        let sum = self.players.iter().fold(0i64, |acc, p| {
            acc.wrapping_mul(31).wrapping_add(p.1 ^ (p.2 << 1))
        });
        out.extend_from_slice(&sum.to_le_bytes());
        out.resize(self.state_bytes.max(out.len()), 0);
        out
    }
}

impl MatchHandler for BenchMatch {
    fn init(&mut self, _ctx: &MatchContext, params: &Params) -> Result<MatchInit, String> {
        let tick = params["tick"].as_u64().unwrap_or(30);
        let tick = u32::try_from(tick).map_err(|e| e.to_string())?;
        self.interval = Duration::from_secs(1) / tick.max(1);
        self.state_bytes = params["state_bytes"].as_u64().unwrap_or(48) as usize;
        Ok(MatchInit::new(tick).label(r#"{"bench":"authoritative"}"#))
    }

    fn tick(&mut self, ctx: &MatchContext, d: &mut Dispatcher<'_>, messages: Vec<Inbound>) {
        let now = Instant::now();
        if let Some(late) = lateness(self.prev_start, self.interval, now) {
            if PROBE.measuring.load(Ordering::Relaxed) {
                record_lateness(late);
            }
        }
        self.prev_start = Some(now);
        PROBE.ticks.fetch_add(1, Ordering::Relaxed);
        let inputs = messages.len();
        for m in &messages {
            if m.op_code == OP_INPUT {
                self.apply(m);
            }
        }
        if inputs > 0 {
            PROBE.inputs.fetch_add(inputs as u64, Ordering::Relaxed);
        }
        let state = self.state(ctx.tick(), inputs);
        d.broadcast(OP_STATE, state, None, None, false);
    }
}

/// CPU clock ticks (utime + stime) of this process's threads, by thread name.
fn thread_ticks() -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path().join("stat");
        if let Some((name, ticks)) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| parse_task_stat(&s))
        {
            *out.entry(name).or_insert(0) += ticks;
        }
    }
    out
}

/// The thread name and utime + stime from a `/proc/<pid>/task/<tid>/stat` line.
fn parse_task_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// Ticks of the threads named one of `names` between two readings.
fn group_delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| {
            after
                .get(*n)
                .copied()
                .unwrap_or(0)
                .saturating_sub(before.get(*n).copied().unwrap_or(0))
        })
        .sum()
}

/// Nanoseconds the threads named one of `names` have spent runnable but waiting for a
/// core (the second field of `/proc/self/task/<tid>/schedstat`), summed.
fn runqueue_wait_ns(names: &[&str]) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| names.contains(&c.trim_end()))
        })
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
            text.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

fn engine_workers() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == ENGINE_THREADS[0])
        })
        .count()
}

/// A bound in-process server on its own one-worker runtime, serving until dropped.
pub(crate) struct InProcess {
    pub(crate) runtime: quicmatch::runtime::Runtime,
    pub(crate) addr: SocketAddr,
    pub(crate) cert: quinn::rustls::pki_types::CertificateDer<'static>,
    rt: Option<tokio::runtime::Runtime>,
    stop: CancellationToken,
    serve: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Binds `127.0.0.1:0` with a certificate generated into a temporary directory;
    /// `tune` adjusts the configuration, `build` registers handlers.
    pub(crate) fn start(
        tune: impl FnOnce(&mut Config),
        build: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = Config {
            listen: ([127, 0, 0, 1], 0).into(),
            certs_dir: dir.path().to_path_buf(),
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        // Matches nobody joins (`--players 0`, listings) must live through the run.
        config.matches.max_empty = Duration::from_secs(24 * 3600);
        tune(&mut config);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(SERVER_THREADS)
            .enable_all()
            .build()?;
        let server = {
            let _guard = rt.enter();
            build(Server::builder(config)).bind()?
        };
        let stop = CancellationToken::new();
        let runtime = server.runtime();
        let addr = server.local_addr();
        let cert = server.cert_der().clone();
        let token = stop.clone();
        let serve = rt.spawn(server.serve(async move { token.cancelled().await }));
        Ok(Self {
            runtime,
            addr,
            cert,
            rt: Some(rt),
            stop,
            serve: Some(serve),
            _dir: dir,
        })
    }

    /// Stops serving (bounded) and drops the runtime.
    pub(crate) fn stop(mut self) {
        self.stop.cancel();
        if let (Some(rt), Some(serve)) = (self.rt.take(), self.serve.take()) {
            let _ =
                rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), serve).await });
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// One connected client and its match.
struct Player {
    socket: Arc<Socket>,
    match_id: MatchId,
}

/// Connects every client, then joins each to its match; a client starts draining its
/// events as soon as it has joined. Connecting first, while no match sends anything,
/// keeps the handshakes off a loaded machine: joining while the already-joined clients
/// receive their state made the 4 000th handshake wait minutes behind dropped packets.
async fn connect_players(
    server: &InProcess,
    matches: &[MatchId],
    args: &Args,
    counts: &Arc<ClientCounts>,
    stop: &CancellationToken,
) -> anyhow::Result<(Vec<Player>, Duration, Duration)> {
    let endpoints: Vec<quinn::Endpoint> = (0..args.endpoints.max(1))
        .map(|_| crate::relay::client_endpoint())
        .collect::<anyhow::Result<_>>()?;
    let total = matches.len() * args.players;
    let mut sockets = Vec::with_capacity(total);
    let started = Instant::now();
    let mut told = started;
    for start in (0..total).step_by(32) {
        if told.elapsed() >= Duration::from_secs(10) {
            told = Instant::now();
            eprintln!(
                "connected {start} of {total} clients in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
        let batch = (start..(start + 32).min(total)).map(|n| {
            let config = ClientConfig::new(
                server.addr,
                Trust::Certificates(vec![server.cert.clone()]),
                Credentials::Device {
                    id: format!("auth-bench-device-{n:08}"),
                },
            );
            // The SDK's default keep-alive (1 s), as real clients have.
            let endpoint = endpoints[n % endpoints.len()].clone();
            async move {
                let mut last = None;
                for _ in 0..5 {
                    match Socket::connect_with_endpoint(endpoint.clone(), config.clone()).await {
                        Ok(socket) => return Ok(Arc::new(socket)),
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(anyhow::anyhow!("connect client {n}: {last:?}"))
            }
        });
        for s in futures_util::future::join_all(batch).await {
            sockets.push(s?);
        }
    }
    let connected = started.elapsed();
    let mut players = Vec::with_capacity(total);
    for (start, chunk) in (0..total).step_by(64).zip(sockets.chunks(64)) {
        let batch = chunk.iter().enumerate().map(|(i, socket)| {
            let match_id = matches[(start + i) / args.players];
            let (socket, counts, stop) = (socket.clone(), counts.clone(), stop.clone());
            async move {
                socket.join_match(match_id).await?;
                tokio::spawn(receive(socket.clone(), counts, stop));
                anyhow::Ok(Player { socket, match_id })
            }
        });
        for p in futures_util::future::join_all(batch).await {
            players.push(p?);
        }
    }
    Ok((players, connected, started.elapsed() - connected))
}

/// What the clients count, ever.
#[derive(Default)]
struct ClientCounts {
    states: AtomicU64,
    inputs_sent: AtomicU64,
    errors: AtomicU64,
    disconnected: AtomicU64,
}

async fn receive(socket: Arc<Socket>, counts: Arc<ClientCounts>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            event = socket.next_event() => match event {
                Some(Event::MatchData(d)) if d.op_code == OP_STATE => {
                    counts.states.fetch_add(1, Ordering::Relaxed);
                }
                Some(Event::Error { .. }) => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                }
                Some(Event::Disconnected { .. }) | None => {
                    counts.disconnected.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(_) => {}
            },
        }
    }
}

async fn send_inputs(
    player: Arc<Player>,
    rate: f64,
    phase: Duration,
    counts: Arc<ClientCounts>,
    stop: CancellationToken,
) {
    tokio::time::sleep(phase).await;
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rng = fastrand::Rng::new();
    let mut seq = 0u32;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = every.tick() => {}
        }
        let mut input = [0u8; INPUT_BYTES];
        input[..4].copy_from_slice(&seq.to_le_bytes());
        input[4..6].copy_from_slice(&rng.i16(-8..=8).to_le_bytes());
        input[6..8].copy_from_slice(&rng.i16(-8..=8).to_le_bytes());
        seq = seq.wrapping_add(1);
        let sent = player
            .socket
            .send_match_data(
                player.match_id,
                OP_INPUT,
                Bytes::copy_from_slice(&input),
                false,
                None,
            )
            .await;
        if sent.is_ok() {
            counts.inputs_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The figures of one run.
#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    matches: usize,
    players: usize,
    tick: u32,
    input_rate: f64,
    aligned: bool,
    engine_workers: usize,
    duration_s: f64,
    create_s: f64,
    connect_s: f64,
    join_s: f64,
    clients: usize,
    ticks_per_s: f64,
    expected_ticks_per_s: f64,
    lateness_samples: u64,
    lateness_p50_us: u64,
    lateness_p99_us: u64,
    lateness_p999_us: u64,
    lateness_max_us: u64,
    engine_cpu_pct: f64,
    engine_us_per_match_tick: f64,
    engine_runqueue_wait_pct: f64,
    server_runtime_cpu_pct: f64,
    client_cpu_pct: f64,
    process_cpu_pct: f64,
    states_received_per_s: f64,
    expected_states_per_s: f64,
    inputs_sent_per_s: f64,
    inputs_processed_per_s: f64,
    client_errors: u64,
    client_disconnects: u64,
    busy_before_pct: f64,
}

fn print(r: &Report, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    println!(
        "authoritative M={} P={} T={} Hz ({} engine workers{}) | ticks {:.0}/s of {:.0}/s | lateness p50 {} us p99 {} us p99.9 {} us max {} us | engine {:.1}% CPU, {:.2} us per match-tick, waited for a core {:.1}% | server runtime {:.1}% | clients {:.1}% | process {:.1}% | states {:.0}/s of {:.0}/s | inputs {:.0}/s sent, {:.0}/s processed | {} clients connected in {:.1} s, joined in {:.1} s | busy before {:.1}%",
        r.matches,
        r.players,
        r.tick,
        r.engine_workers,
        if r.aligned { ", aligned" } else { "" },
        r.ticks_per_s,
        r.expected_ticks_per_s,
        r.lateness_p50_us,
        r.lateness_p99_us,
        r.lateness_p999_us,
        r.lateness_max_us,
        r.engine_cpu_pct,
        r.engine_us_per_match_tick,
        r.engine_runqueue_wait_pct,
        r.server_runtime_cpu_pct,
        r.client_cpu_pct,
        r.process_cpu_pct,
        r.states_received_per_s,
        r.expected_states_per_s,
        r.inputs_sent_per_s,
        r.inputs_processed_per_s,
        r.clients,
        r.connect_s,
        r.join_s,
        r.busy_before_pct,
    );
    if r.client_errors > 0 || r.client_disconnects > 0 {
        println!(
            "  clients saw {} error events and {} disconnects",
            r.client_errors, r.client_disconnects
        );
    }
}

/// Creates the matches from this (blocking) thread, spreading their first ticks over
/// one interval unless `aligned`.
fn create_matches(server: &InProcess, args: &Args) -> anyhow::Result<Vec<MatchId>> {
    let params = serde_json::json!({ "tick": args.tick, "state_bytes": args.state_bytes });
    let interval = Duration::from_secs(1) / args.tick;
    let start = Instant::now();
    let mut ids = Vec::with_capacity(args.matches);
    for i in 0..args.matches {
        if !args.aligned {
            let at = start + interval.mul_f64(i as f64 / args.matches as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        }
        ids.push(server.runtime.create_match("bench", params.clone())?);
    }
    Ok(ids)
}

/// Entry point of `quicmatch-bench authoritative`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!((1..=60).contains(&args.tick), "--tick must be 1 to 60");
    anyhow::ensure!(
        (24..=quicmatch_protocol::MAX_DATAGRAM_PAYLOAD).contains(&args.state_bytes),
        "--state-bytes must be 24 to {}",
        quicmatch_protocol::MAX_DATAGRAM_PAYLOAD
    );
    anyhow::ensure!(args.matches >= 1, "--matches must be at least 1");
    anyhow::ensure!(args.players <= 64, "--players must be at most 64");
    anyhow::ensure!(
        args.players == 0 || args.input_rate > 0.0,
        "--input-rate must be positive"
    );
    let busy0 = measure::machine_jiffies();
    std::thread::sleep(Duration::from_millis(500));
    let busy_before = match (busy0, measure::machine_jiffies()) {
        (Some(a), Some(b)) => measure::busy_pct(a, b),
        _ => 0.0,
    };

    let clients = args.matches * args.players;
    let workers = args.workers;
    let server = InProcess::start(
        |c| {
            c.matches.workers = workers;
            c.matches.max_matches = c.matches.max_matches.max(args.matches + 16);
            c.session.max_connections = c.session.max_connections.max(clients + 64);
        },
        |b| b.match_handler("bench", BenchMatch::new),
    )?;

    let t = Instant::now();
    let ids = create_matches(&server, args)?;
    let create_s = t.elapsed().as_secs_f64();

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;
    let counts = Arc::new(ClientCounts::default());
    let stop = CancellationToken::new();
    let (players, connect, join) = if args.players == 0 {
        (Vec::new(), Duration::ZERO, Duration::ZERO)
    } else {
        client_rt.block_on(connect_players(&server, &ids, args, &counts, &stop))?
    };
    let players: Vec<Arc<Player>> = players.into_iter().map(Arc::new).collect();
    let period = if args.input_rate > 0.0 {
        1.0 / args.input_rate
    } else {
        1.0
    };
    for (i, p) in players.iter().enumerate() {
        let phase = Duration::from_secs_f64(period * i as f64 / players.len() as f64);
        client_rt.spawn(send_inputs(
            p.clone(),
            args.input_rate,
            phase,
            counts.clone(),
            stop.clone(),
        ));
    }

    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    let ticks_per_s = measure::clock_ticks();
    let threads0 = thread_ticks();
    let wait0 = runqueue_wait_ns(&ENGINE_THREADS);
    let process0 = measure::process_cpu_ticks(std::process::id());
    let ticks0 = PROBE.ticks.load(Ordering::Relaxed);
    let inputs0 = PROBE.inputs.load(Ordering::Relaxed);
    let states0 = counts.states.load(Ordering::Relaxed);
    let sent0 = counts.inputs_sent.load(Ordering::Relaxed);
    let t0 = Instant::now();
    PROBE.measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    PROBE.measuring.store(false, Ordering::Relaxed);
    let wall = t0.elapsed();
    let ticks = PROBE.ticks.load(Ordering::Relaxed) - ticks0;
    let inputs = PROBE.inputs.load(Ordering::Relaxed) - inputs0;
    let states = counts.states.load(Ordering::Relaxed) - states0;
    let sent = counts.inputs_sent.load(Ordering::Relaxed) - sent0;
    let threads1 = thread_ticks();
    let wait = runqueue_wait_ns(&ENGINE_THREADS).saturating_sub(wait0);
    let process = measure::process_cpu_ticks(std::process::id())
        .zip(process0)
        .map_or(0, |(b, a)| b.saturating_sub(a));
    let engine_workers = engine_workers();

    stop.cancel();
    for p in &players {
        p.socket.connection().close(0u32.into(), b"done");
    }
    drop(players);
    client_rt.shutdown_timeout(Duration::from_secs(1));
    server.stop();

    let lateness = merged_lateness();
    let engine = group_delta(&threads0, &threads1, &ENGINE_THREADS);
    let secs = wall.as_secs_f64();
    let report = Report {
        bench: "authoritative",
        matches: args.matches,
        players: args.players,
        tick: args.tick,
        input_rate: args.input_rate,
        aligned: args.aligned,
        engine_workers,
        duration_s: secs,
        create_s,
        connect_s: connect.as_secs_f64(),
        join_s: join.as_secs_f64(),
        clients,
        ticks_per_s: ticks as f64 / secs,
        expected_ticks_per_s: (args.matches as u64 * u64::from(args.tick)) as f64,
        lateness_samples: lateness.delivered,
        lateness_p50_us: lateness.quantile_us(0.5),
        lateness_p99_us: lateness.quantile_us(0.99),
        lateness_p999_us: lateness.quantile_us(0.999),
        lateness_max_us: lateness.max_us(),
        engine_cpu_pct: measure::cpu_pct(engine, ticks_per_s, wall),
        engine_us_per_match_tick: if ticks == 0 {
            0.0
        } else {
            engine as f64 / ticks_per_s * 1e6 / ticks as f64
        },
        engine_runqueue_wait_pct: 100.0 * wait as f64 / 1e9 / secs,
        server_runtime_cpu_pct: measure::cpu_pct(
            group_delta(&threads0, &threads1, &[SERVER_THREADS]),
            ticks_per_s,
            wall,
        ),
        client_cpu_pct: measure::cpu_pct(
            group_delta(&threads0, &threads1, &[CLIENT_THREADS]),
            ticks_per_s,
            wall,
        ),
        process_cpu_pct: measure::cpu_pct(process, ticks_per_s, wall),
        states_received_per_s: states as f64 / secs,
        expected_states_per_s: (clients as u64 * u64::from(args.tick)) as f64,
        inputs_sent_per_s: sent as f64 / secs,
        inputs_processed_per_s: inputs as f64 / secs,
        client_errors: counts.errors.load(Ordering::Relaxed),
        client_disconnects: counts.disconnected.load(Ordering::Relaxed),
        busy_before_pct: busy_before,
    };
    print(&report, args.json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_clamped_and_skips_the_first_tick() {
        let t0 = Instant::now();
        let interval = Duration::from_millis(33);
        assert_eq!(lateness(None, interval, t0), None);
        let on_time = t0 + Duration::from_millis(20);
        assert_eq!(lateness(Some(t0), interval, on_time), Some(Duration::ZERO));
        let late = t0 + Duration::from_millis(35);
        assert_eq!(
            lateness(Some(t0), interval, late),
            Some(Duration::from_millis(2))
        );
    }

    #[test]
    fn task_stat_parses_name_and_cpu() {
        let stat = "4242 (quicmatch-match) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1";
        assert_eq!(
            parse_task_stat(stat),
            Some(("quicmatch-match".to_owned(), 300))
        );
        let odd = "7 (a) b (c)) R 1 2 3 4 5 6 7 8 9 10 3 4 0";
        assert_eq!(parse_task_stat(odd), Some(("a) b (c)".to_owned(), 7)));
        assert!(!thread_ticks().is_empty());
        let before = HashMap::from([("x".to_owned(), 5), ("y".to_owned(), 1)]);
        let after = HashMap::from([
            ("x".to_owned(), 9),
            ("y".to_owned(), 4),
            ("z".to_owned(), 2),
        ]);
        assert_eq!(group_delta(&before, &after, &["x", "z"]), 6);
    }

    #[test]
    fn state_has_the_asked_size_and_follows_inputs() {
        let mut m = BenchMatch::new();
        m.state_bytes = 40;
        let s0 = m.state(1, 0);
        assert_eq!(s0.len(), 40);
        let input = Inbound {
            sender: quicmatch_client::Presence {
                user_id: quicmatch_client::UserId(uuid::Uuid::from_u128(1)),
                session_id: SessionId(uuid::Uuid::from_u128(1)),
                username: "a".into(),
            },
            op_code: OP_INPUT,
            data: Bytes::from_static(&[0, 0, 0, 0, 3, 0, 0xfe, 0xff]),
            reliable: false,
        };
        m.apply(&input);
        m.apply(&input);
        assert_eq!(m.players.len(), 1);
        assert_eq!((m.players[0].1, m.players[0].2), (6, -4));
        assert_ne!(m.state(1, 2), s0);
    }
}
