//! `quicmatch-bench storage`: storage writes from many SDK clients into an in-process
//! server, measured as the clients see them.
//!
//! The server is the library on 127.0.0.1 port 0 ([`InProcess`]: its own one-worker
//! runtime), with its store in a temporary directory (`--data-dir` names another, to
//! measure a particular disk) and every rate limit out of the way. `--clients` SDK
//! clients, each its own user, connect over `--endpoints` shared client endpoints on a
//! second runtime (`--client-threads` workers) and write in a closed loop: one request
//! of `--batch` objects of `--value-bytes` bytes (a JSON object), to their own
//! `--keys` keys in turn, the next request as soon as the last is acknowledged. An
//! acknowledgement comes after the commit that holds the write is on disk (fsync), and
//! writes waiting together share one commit, so the writes per second measure the
//! store's group commit under this much concurrency.
//!
//! Measured over `--duration` seconds after `--warmup`:
//! - objects written per second (acknowledged), and requests per second;
//! - write latency, request sent to durable acknowledgement, p50 / p99 / p99.9 / max:
//!   the commit latency as a client sees it (queueing and the network included);
//! - the commits themselves, from the server's `quicmatch_storage_commit_seconds`
//!   histogram (the in-process server exports its metrics on a loopback port, scraped
//!   at both ends of the window): commits per second, writes per commit, mean, and the
//!   bucket bounds that hold the median and the 99th percentile (buckets at 0.1, 0.25,
//!   0.5, 1, 2.5, 5, 10, 50, 100 ms);
//! - refused or failed writes (expected: none).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use quicmatch_client::{ClientConfig, Credentials, Socket, StorageWriteObject, Trust};
use serde::Serialize;

use crate::{authoritative::InProcess, measure::Recorder};

/// Name of the clients' runtime threads.
const CLIENT_THREADS: &str = "qm-bench-client";
/// The collection every object goes to.
const COLLECTION: &str = "bench";

#[derive(clap::Args, Clone)]
pub(crate) struct Args {
    /// SDK clients writing at once, each its own user.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Bytes of each object's value (a JSON object; at least 16).
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// Objects per write request (1 to 32).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Keys each client writes in turn (it overwrites them).
    #[arg(long, default_value_t = 16)]
    keys: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of writing before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Worker threads of the clients' runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Client endpoints (UDP sockets) the clients are spread over.
    #[arg(long, default_value_t = 4)]
    endpoints: usize,
    /// Directory of the store (default: a temporary one, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    clients: usize,
    value_bytes: usize,
    batch: usize,
    duration_s: f64,
    objects: u64,
    writes_per_s: f64,
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    commits: u64,
    commits_per_s: f64,
    writes_per_commit: f64,
    commit_mean_ms: f64,
    commit_p50_le_ms: f64,
    commit_p99_le_ms: f64,
    failures: u64,
}

/// A histogram as scraped (the commit histogram here): cumulative counts per upper
/// bound (seconds), and the sum and count.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Histogram {
    buckets: Vec<(f64, u64)>,
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

pub(crate) const COMMIT_METRIC: &str = "quicmatch_storage_commit_seconds";

impl Histogram {
    /// Reads the histogram `metric` (unlabelled) out of a Prometheus text page.
    pub(crate) fn parse(page: &str, metric: &str) -> Self {
        let mut commits = Self::default();
        for line in page.lines() {
            let Some(rest) = line.strip_prefix(metric) else {
                continue;
            };
            let value = rest.rsplit(' ').next().unwrap_or("");
            if let Some(le) = rest
                .strip_prefix("_bucket{le=\"")
                .and_then(|r| r.split('"').next())
            {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                commits.buckets.push((bound, value.parse().unwrap_or(0)));
            } else if rest.starts_with("_sum") {
                commits.sum = value.parse().unwrap_or(0.0);
            } else if rest.starts_with("_count") {
                commits.count = value.parse().unwrap_or(0);
            }
        }
        commits
    }

    /// What happened between `earlier` and `self`.
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        let before = |bound: f64| {
            earlier
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0, |(_, n)| *n)
        };
        Self {
            buckets: self
                .buckets
                .iter()
                .map(|(b, n)| (*b, n.saturating_sub(before(*b))))
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The mean observation (seconds; 0 when there is none).
    pub(crate) fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }

    /// The upper bound (seconds) of the bucket that holds quantile `q`.
    pub(crate) fn quantile_bound(&self, q: f64) -> f64 {
        let want = (q * self.count as f64).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= want.max(1))
            .map_or(f64::NAN, |(b, _)| *b)
    }
}

/// The value of the unlabelled counter or gauge `metric` in a Prometheus text page.
pub(crate) fn counter(page: &str, metric: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// One page of `/metrics` from `addr`.
pub(crate) fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut page = String::new();
    stream.read_to_string(&mut page)?;
    Ok(page)
}

/// A loopback port free right now, for the metrics listener.
pub(crate) fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A JSON object of exactly `bytes` bytes (at least its 8 bytes of syntax).
fn value(bytes: usize) -> String {
    format!("{{\"d\":\"{}\"}}", "x".repeat(bytes.saturating_sub(8)))
}

/// What one client measured.
#[derive(Default)]
struct Counts {
    latency: Option<Recorder>,
    objects: u64,
    requests: u64,
    failures: u64,
}

/// Writes until `stop`, recording while `measuring`.
async fn client(
    socket: Socket,
    args: Args,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Counts>>>,
) {
    let value = value(args.value_bytes);
    let mut counts = Counts {
        latency: Some(Recorder::new()),
        ..Counts::default()
    };
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let objects = (0..args.batch)
            .map(|j| {
                let key = format!("k{}", (n * args.batch + j) % args.keys.max(1));
                StorageWriteObject::new(COLLECTION, key, value.as_str())
            })
            .collect();
        n += 1;
        let sent = Instant::now();
        let result = socket.write_storage_objects(objects).await;
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        match result {
            Ok(acks) => {
                if let Some(latency) = &mut counts.latency {
                    latency.record(sent.elapsed());
                }
                counts.objects += acks.len() as u64;
                counts.requests += 1;
            }
            Err(e) => {
                if counts.failures == 0 {
                    eprintln!("storage bench: a write failed: {e}");
                }
                counts.failures += 1;
            }
        }
    }
    socket.close().await;
    out.lock().unwrap_or_else(|p| p.into_inner()).push(counts);
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=quicmatch_protocol::MAX_STORAGE_BATCH).contains(&args.batch),
        "--batch must be 1 to {}",
        quicmatch_protocol::MAX_STORAGE_BATCH
    );
    anyhow::ensure!(
        (16..=quicmatch_protocol::MAX_STORAGE_VALUE_LEN).contains(&args.value_bytes),
        "--value-bytes must be 16 to {}",
        quicmatch_protocol::MAX_STORAGE_VALUE_LEN
    );
    let temp = tempfile::tempdir()?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| temp.path().into());
    let clients = args.clients;
    let keys = args.keys.max(args.batch);
    let metrics = free_port()?;
    let server = InProcess::start(
        |c| {
            c.data_dir = data_dir;
            c.metrics = Some(metrics);
            c.session.requests_per_second = 100_000.0;
            c.session.request_burst = 100_000;
            c.storage.writes_per_second = 100_000.0;
            c.storage.write_burst = 100_000;
            c.storage.max_objects_per_user = keys.max(1000);
            c.storage.write_queue = (4 * clients * args.batch).clamp(4096, 1_000_000);
        },
        |b| b,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Mutex::new(Vec::new()));
    let (addr, cert) = (server.addr, server.cert.clone());
    let tasks = rt.block_on(async {
        let endpoints: Vec<quinn::Endpoint> = (0..args.endpoints.max(1))
            .map(|_| crate::relay::client_endpoint())
            .collect::<anyhow::Result<_>>()?;
        let mut tasks = Vec::with_capacity(clients);
        for i in 0..clients {
            let config = ClientConfig::new(
                addr,
                Trust::Certificates(vec![cert.clone()]),
                Credentials::Device {
                    id: format!("bench-storage-{i:06}"),
                },
            );
            let endpoint = endpoints[i % endpoints.len()].clone();
            let socket = tokio::time::timeout(
                Duration::from_secs(30),
                Socket::connect_with_endpoint(endpoint, config),
            )
            .await
            .map_err(|_| anyhow::anyhow!("client {i} did not connect in time"))??;
            tasks.push(tokio::spawn(client(
                socket,
                args.clone(),
                measuring.clone(),
                stop.clone(),
                out.clone(),
            )));
        }
        anyhow::Ok(tasks)
    })?;
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    let first = Histogram::parse(&scrape(metrics)?, COMMIT_METRIC);
    measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    measuring.store(false, Ordering::Relaxed);
    let window = window.elapsed().as_secs_f64();
    let commits = Histogram::parse(&scrape(metrics)?, COMMIT_METRIC).since(&first);
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    });
    server.stop();
    let counts = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
    let mut latency = Recorder::new();
    let (mut objects, mut requests, mut failures) = (0, 0, 0);
    for c in &counts {
        if let Some(l) = &c.latency {
            latency.merge(l);
        }
        objects += c.objects;
        requests += c.requests;
        failures += c.failures;
    }
    let ms = |us: u64| us as f64 / 1e3;
    let report = Report {
        bench: "storage",
        clients,
        value_bytes: args.value_bytes,
        batch: args.batch,
        duration_s: window,
        objects,
        writes_per_s: objects as f64 / window,
        requests_per_s: requests as f64 / window,
        p50_ms: ms(latency.quantile_us(0.5)),
        p99_ms: ms(latency.quantile_us(0.99)),
        p999_ms: ms(latency.quantile_us(0.999)),
        max_ms: ms(latency.max_us()),
        commits: commits.count,
        commits_per_s: commits.count as f64 / window,
        writes_per_commit: objects as f64 / commits.count.max(1) as f64,
        commit_mean_ms: commits.mean() * 1e3,
        commit_p50_le_ms: commits.quantile_bound(0.5) * 1e3,
        commit_p99_le_ms: commits.quantile_bound(0.99) * 1e3,
        failures,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "storage: {} clients, {} B objects, {} per request | {:.0} writes/s ({:.0} requests/s) | write to durable ack p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms | {} failures",
            report.clients,
            report.value_bytes,
            report.batch,
            report.writes_per_s,
            report.requests_per_s,
            report.p50_ms,
            report.p99_ms,
            report.p999_ms,
            report.max_ms,
            report.failures
        );
        println!(
            "  commits: {:.0}/s, {:.1} writes each | mean {:.3} ms, p50 <= {} ms, p99 <= {} ms",
            report.commits_per_s,
            report.writes_per_commit,
            report.commit_mean_ms,
            report.commit_p50_le_ms,
            report.commit_p99_le_ms
        );
    }
    anyhow::ensure!(failures == 0, "{failures} writes failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_histogram_is_read_and_differenced() {
        let page = |n: u64| {
            format!(
                "# HELP {COMMIT_METRIC} x\n{COMMIT_METRIC}_bucket{{le=\"0.0005\"}} {}\n\
                 {COMMIT_METRIC}_bucket{{le=\"0.001\"}} {}\n{COMMIT_METRIC}_bucket{{le=\"+Inf\"}} {}\n\
                 {COMMIT_METRIC}_sum {}\n{COMMIT_METRIC}_count {}\nother_metric 5\n",
                90 * n,
                99 * n,
                100 * n,
                0.05 * n as f64,
                100 * n
            )
        };
        let (a, b) = (
            Histogram::parse(&page(1), COMMIT_METRIC),
            Histogram::parse(&page(3), COMMIT_METRIC),
        );
        assert_eq!(a.count, 100);
        assert_eq!(a.buckets.len(), 3);
        let d = b.since(&a);
        assert_eq!(d.count, 200);
        assert_eq!(d.quantile_bound(0.5), 0.0005);
        assert_eq!(d.quantile_bound(0.99), 0.001);
        assert_eq!(d.quantile_bound(1.0), f64::INFINITY);
        assert!((d.sum - 0.1).abs() < 1e-9);
        assert!((d.mean() - 0.0005).abs() < 1e-12);
        assert_eq!(Histogram::default().mean(), 0.0);
        assert_eq!(
            Histogram::parse(&page(1), "nothing_here"),
            Histogram::default()
        );
    }

    #[test]
    fn counters_are_read_by_exact_name() {
        let page = "# TYPE a_total counter\na_total 12\na_total_other 3\nb 1.5\n";
        assert_eq!(counter(page, "a_total"), Some(12.0));
        assert_eq!(counter(page, "b"), Some(1.5));
        assert_eq!(counter(page, "a"), None);
    }

    #[test]
    fn values_are_json_objects_of_the_asked_size() {
        for bytes in [16, 1024, 4000] {
            let v = value(bytes);
            assert_eq!(v.len(), bytes);
            assert!(serde_json::from_str::<serde_json::Value>(&v).is_ok_and(|v| v.is_object()));
        }
    }
}
