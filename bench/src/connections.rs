//! `quicmatch-bench connections`: how many idle authenticated connections a server
//! holds, how fast it takes handshakes, what each costs in memory, and the CPU it
//! spends keeping them alive.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use quicmatch_client::{ClientConfig, Credentials, Socket, Trust};
use serde_json::json;

use crate::{measure, proc_stats, server_proc::ServerProc};

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

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(measure_connections(args))
}

async fn measure_connections(args: &Args) -> anyhow::Result<()> {
    let server = ServerProc::quicmatch(
        args.server_bin.as_deref(),
        Some(&format!(
            "[session]\nmax_connections = {}\n",
            args.n.max(1) + 16
        )),
        &["--transport".into(), args.server_transport.clone()],
    )
    .await?;
    let pid = server
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no server process"))?;
    let (addr, ca) = (
        server.addr,
        server
            .ca
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no certificate"))?,
    );
    let result = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pid_s = pid.to_string();
        let rss_before = proc_stats::status_kib(&pid_s, "VmRSS").unwrap_or(0);
        let endpoints: Vec<quinn::Endpoint> = (0..args.endpoints.max(1))
            .map(|_| crate::relay::client_endpoint())
            .collect::<anyhow::Result<_>>()?;
        let started = Instant::now();
        let mut sockets = Vec::with_capacity(args.n);
        let mut i = 0;
        while i < args.n {
            let batch: Vec<_> = (i..(i + 64).min(args.n))
                .map(|n| {
                    let c = ClientConfig::new(
                        addr,
                        Trust::CaFile(ca.clone()),
                        Credentials::Device {
                            id: format!("idle-device-{n:08}"),
                        },
                    );
                    // The SDK's default keep-alive (1 s), as real clients have: the server
                    // counts a session silent for 2 s as suspect and 5 s as dead.
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
        let rss_after = proc_stats::status_kib(&pid_s, "VmRSS").unwrap_or(0);
        let ticks_per_s = measure::clock_ticks();
        let t0 = measure::process_cpu_ticks(pid);
        let w0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(args.idle)).await;
        let idle_ticks = measure::process_cpu_ticks(pid)
            .zip(t0)
            .map_or(0, |(b, a)| b.saturating_sub(a));
        let idle_cpu = measure::cpu_pct(idle_ticks, ticks_per_s, w0.elapsed());
        let n = sockets.len().max(1);
        let out = json!({
            "server_transport": args.server_transport,
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
    drop(server);
    result
}
