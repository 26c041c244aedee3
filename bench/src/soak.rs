//! `quicmatch-bench soak`: churn against a real server process, then check that it
//! returned to rest.
//!
//! Each simulated client loops until the deadline: connect, then a random run of
//! create / join / send (reliable and not) / matchmake / party / leave, then leave
//! abruptly or politely, and start again. At the end every count the server reports on
//! its metrics endpoint (sessions, matches, presences, tickets, parties) must be back
//! at zero and its resident memory back in its starting band; otherwise the command
//! fails.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use quicmatch_client::{ClientConfig, Credentials, Event, MatchId, PartyId, Socket, Trust};
use serde_json::json;

use crate::{proc_stats, server_proc::ServerProc};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Seconds of churn.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Concurrent simulated clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Allowed growth of the server's resident memory from the first sample taken under
    /// load to the end, in MiB.
    #[arg(long, default_value_t = 32.0)]
    rss_band_mib: f64,
    /// The quicmatch server's transport: `quinn` or `proto`.
    #[arg(long, default_value = "quinn", value_parser = ["quinn", "proto"])]
    server_transport: String,
    /// The quicmatch binary (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Live ids clients can join, shared by the simulated clients.
#[derive(Default)]
struct Lobby {
    matches: Vec<MatchId>,
    parties: Vec<PartyId>,
}

#[derive(Default)]
struct Counters {
    cycles: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    matched: AtomicU64,
}

fn lock(lobby: &Mutex<Lobby>) -> std::sync::MutexGuard<'_, Lobby> {
    lobby.lock().unwrap_or_else(|p| p.into_inner())
}

async fn client_loop(
    id: usize,
    addr: SocketAddr,
    ca: PathBuf,
    deadline: Instant,
    lobby: Arc<Mutex<Lobby>>,
    counters: Arc<Counters>,
) {
    let mut rng = fastrand::Rng::with_seed(id as u64);
    while Instant::now() < deadline {
        let config = ClientConfig::new(
            addr,
            Trust::CaFile(ca.clone()),
            Credentials::Device {
                id: format!("soak-device-{id:06}"),
            },
        );
        let Ok(socket) = Socket::connect(config).await else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let socket = Arc::new(socket);
        // Drain events so the session never looks like a slow consumer; redeem
        // matchmaker tokens as real clients would.
        let drain = {
            let socket = socket.clone();
            let counters = counters.clone();
            tokio::spawn(async move {
                while let Some(event) = socket.next_event().await {
                    match event {
                        Event::MatchmakerMatched(m) => {
                            counters.matched.fetch_add(1, Ordering::Relaxed);
                            if let Some(token) = m.token {
                                let _ = socket.join_match_token(&token).await;
                            }
                        }
                        Event::Disconnected { .. } => break,
                        _ => {}
                    }
                }
            })
        };
        for _ in 0..rng.usize(3..15) {
            counters.requests.fetch_add(1, Ordering::Relaxed);
            let ok = match rng.u8(0..8) {
                0 => match socket.create_match(None).await {
                    Ok(m) => {
                        lock(&lobby).matches.push(m.match_id);
                        true
                    }
                    Err(_) => false,
                },
                1 => {
                    let pick = {
                        let l = lock(&lobby);
                        (!l.matches.is_empty()).then(|| l.matches[rng.usize(..l.matches.len())])
                    };
                    if let Some(m) = pick {
                        // Joining an ended match is expected churn, not a failure.
                        let _ = socket.join_match(m).await;
                    }
                    true
                }
                2 | 3 => {
                    let pick = {
                        let l = lock(&lobby);
                        (!l.matches.is_empty()).then(|| l.matches[rng.usize(..l.matches.len())])
                    };
                    if let Some(m) = pick {
                        let reliable = rng.bool();
                        let _ = socket
                            .send_match_data(m, 1, vec![0u8; rng.usize(1..200)], reliable, None)
                            .await;
                    }
                    true
                }
                4 => socket
                    .add_matchmaker("*", 2, 4)
                    .string_property("mode", "soak")
                    .await
                    .is_ok(),
                5 => match socket.create_party(true, 4).await {
                    Ok(p) => {
                        lock(&lobby).parties.push(p.party_id);
                        true
                    }
                    Err(_) => false,
                },
                6 => {
                    let pick = {
                        let l = lock(&lobby);
                        (!l.parties.is_empty()).then(|| l.parties[rng.usize(..l.parties.len())])
                    };
                    if let Some(p) = pick {
                        let _ = socket.join_party(p).await;
                        let _ = socket.send_party_data(p, 1, b"hi".to_vec()).await;
                        if rng.bool() {
                            let _ = socket.leave_party(p).await;
                        }
                    }
                    true
                }
                _ => socket.ping().await.is_ok(),
            };
            if !ok {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(5..50))).await;
        }
        if rng.bool() {
            socket.close().await;
        } else {
            // Close without leaving anything first: the server cleans up on its own.
            socket
                .connection()
                .close(quinn::VarInt::from_u32(0), b"gone");
        }
        drain.abort();
        counters.cycles.fetch_add(1, Ordering::Relaxed);
        let mut l = lock(&lobby);
        if l.matches.len() > 256 {
            l.matches.drain(..128);
        }
        if l.parties.len() > 256 {
            l.parties.drain(..128);
        }
    }
}

async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

fn gauge(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

const GAUGES: [&str; 6] = [
    "quicmatch_connections",
    "quicmatch_sessions",
    "quicmatch_matches",
    "quicmatch_match_presences",
    "quicmatch_parties",
    "quicmatch_matchmaker_pool",
];

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(soak(args))
}

async fn soak(args: &Args) -> anyhow::Result<()> {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let metrics: SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    let server = ServerProc::quicmatch(
        args.server_bin.as_deref(),
        None,
        &[
            "--metrics".into(),
            metrics.to_string(),
            "--matchmaker-interval".into(),
            "200ms".into(),
            "--transport".into(),
            args.server_transport.clone(),
        ],
    )
    .await?;
    let pid = server
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no server process"))?
        .to_string();
    let addr = server.addr;
    let ca = server
        .ca
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no certificate"))?;
    let outcome = async {
        let lobby = Arc::new(Mutex::new(Lobby::default()));
        let counters = Arc::new(Counters::default());
        let started = Instant::now();
        let end = started + Duration::from_secs_f64(args.duration);
        let tasks: Vec<_> = (0..args.clients)
            .map(|i| {
                tokio::spawn(client_loop(
                    i,
                    addr,
                    ca.clone(),
                    end,
                    lobby.clone(),
                    counters.clone(),
                ))
            })
            .collect();
        // The memory band starts once the server is under load.
        tokio::time::sleep(Duration::from_secs_f64((args.duration / 4.0).min(10.0))).await;
        let rss_start = proc_stats::status_kib(&pid, "VmRSS").unwrap_or(0);
        for t in tasks {
            let _ = t.await;
        }
        // Gauges refresh every second.
        let settle_deadline = Instant::now() + Duration::from_secs(30);
        let mut body;
        loop {
            body = scrape(metrics).await?;
            if GAUGES.iter().all(|g| gauge(&body, g) == 0.0) || Instant::now() > settle_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let rss_end = proc_stats::status_kib(&pid, "VmRSS").unwrap_or(0);
        let counts: serde_json::Map<String, serde_json::Value> = GAUGES
            .iter()
            .map(|g| ((*g).to_owned(), json!(gauge(&body, g))))
            .collect();
        let at_rest = GAUGES.iter().all(|g| gauge(&body, g) == 0.0);
        let growth_mib = (rss_end as f64 - rss_start as f64) / 1024.0;
        let in_band = growth_mib <= args.rss_band_mib;
        let out = json!({
            "bench": "soak",
            "duration_s": args.duration,
            "clients": args.clients,
            "server_transport": args.server_transport,
            "cycles": counters.cycles.load(Ordering::Relaxed),
            "requests": counters.requests.load(Ordering::Relaxed),
            "request_errors": counters.errors.load(Ordering::Relaxed),
            "matchmaker_results": counters.matched.load(Ordering::Relaxed),
            "final_counts": counts,
            "all_counts_zero": at_rest,
            "rss_start_mib": rss_start as f64 / 1024.0,
            "rss_end_mib": rss_end as f64 / 1024.0,
            "rss_growth_mib": growth_mib,
            "rss_in_band": in_band,
        });
        if args.json {
            println!("{out}");
        } else {
            println!(
                "soak {:.0} s, {} clients: {} connect cycles, {} requests ({} refused) | counts at rest: {} | RSS {:.1} -> {:.1} MiB ({})",
                args.duration,
                args.clients,
                out["cycles"],
                out["requests"],
                out["request_errors"],
                if at_rest { "yes" } else { "NO" },
                rss_start as f64 / 1024.0,
                rss_end as f64 / 1024.0,
                if in_band { "in band" } else { "OUT OF BAND" },
            );
        }
        anyhow::ensure!(at_rest, "counts did not return to zero: {}", out["final_counts"]);
        anyhow::ensure!(in_band, "server memory grew by {growth_mib:.1} MiB");
        Ok(())
    }
    .await;
    drop(server);
    outcome
}
