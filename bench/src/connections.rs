//! `quicmatch-bench connections`: how many idle authenticated connections a server
//! holds, how fast it takes handshakes, what each costs in memory, and the CPU it
//! spends keeping them alive.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use quicmatch_client::{ClientConfig, Credentials, Socket, Trust};
use serde_json::json;

use crate::{measure, proc_stats};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Client endpoints the connections are spread over.
    #[arg(long, default_value_t = 8)]
    endpoints: usize,
    /// Seconds to hold the connections idle while measuring CPU.
    #[arg(long, default_value_t = 5.0)]
    idle: f64,
    /// The quicmatch binary (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(measure_connections(args))
}

async fn measure_connections(args: &Args) -> anyhow::Result<()> {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let dir = tempfile::tempdir()?;
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow::anyhow!("no directory for this binary"))?
            .join("quicmatch"),
    };
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!("[session]\nmax_connections = {}\n", args.n.max(1) + 16),
    )?;
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", &addr.to_string(), "--config"])
        .arg(&config)
        .arg("--certs-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id().to_string();
    let result = async {
        let ca = dir.path().join("server.crt");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ca.exists() {
            anyhow::ensure!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_before = proc_stats::status_kib(&pid, "VmRSS").unwrap_or(0);
        let endpoints: Vec<quinn::Endpoint> = (0..args.endpoints.max(1))
            .map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().map_err(anyhow::Error::from)?).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<_>>()?;
        let started = Instant::now();
        let mut sockets = Vec::with_capacity(args.n);
        let mut i = 0;
        while i < args.n {
            let batch: Vec<_> = (i..(i + 64).min(args.n))
                .map(|n| {
                    let mut c = ClientConfig::new(
                        addr,
                        Trust::CaFile(ca.clone()),
                        Credentials::Device {
                            id: format!("idle-device-{n:08}"),
                        },
                    );
                    // Keep-alives well inside the server's idle timeout, as real clients do.
                    c.keep_alive = Duration::from_secs(5);
                    Socket::connect_with_endpoint(endpoints[n % endpoints.len()].clone(), c)
                })
                .collect();
            for s in futures_util::future::join_all(batch).await {
                sockets.push(s?);
            }
            i += 64;
        }
        let connect_time = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after = proc_stats::status_kib(&pid, "VmRSS").unwrap_or(0);
        let ticks_per_s = measure::clock_ticks();
        let t0 = measure::process_cpu_ticks(child.id());
        let w0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(args.idle)).await;
        let idle_ticks = measure::process_cpu_ticks(child.id())
            .zip(t0)
            .map_or(0, |(b, a)| b.saturating_sub(a));
        let idle_cpu = measure::cpu_pct(idle_ticks, ticks_per_s, w0.elapsed());
        let n = sockets.len().max(1);
        let out = json!({
            "bench": "connections",
            "connected": sockets.len(),
            "handshakes_per_s": sockets.len() as f64 / connect_time.as_secs_f64(),
            "rss_kib_per_conn": rss_after.saturating_sub(rss_before) as f64 / n as f64,
            "server_rss_mib": rss_after as f64 / 1024.0,
            "idle_cpu_pct": idle_cpu,
        });
        if args.json {
            println!("{out}");
        } else {
            println!(
                "connections: {} held | {:.0} handshakes/s | {:.1} KiB server RSS per connection ({:.1} MiB total) | idle server CPU {:.1}%",
                sockets.len(),
                out["handshakes_per_s"].as_f64().unwrap_or(0.0),
                out["rss_kib_per_conn"].as_f64().unwrap_or(0.0),
                out["server_rss_mib"].as_f64().unwrap_or(0.0),
                idle_cpu
            );
        }
        for s in &sockets {
            s.connection().close(0u32.into(), b"done");
        }
        Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}
