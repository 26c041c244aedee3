//! `quicmatch-bench matchmaker --cluster`: the matchmaker through a cluster's one pool.
//! Two nodes on a `nats-server` the bench starts (2.10 or later, from `PATH`), all on
//! loopback: node `mm-a` leads the matchmaker, node `mm-b` homes every player. Players
//! (64 tickets a session) fill the shared pool through `mm-b` while `mm-a` leads with
//! a one-hour interval, so no pass runs; then `mm-a` is killed with SIGKILL, `mm-b`
//! takes the lease over, reads the bucket's history (the new leader's catch-up) and
//! passes over the whole pool at once, committing every group (claims, group records,
//! deliveries, deletes) through JetStream. The times come from `mm-b`'s metrics and
//! from the players' own `MatchmakerMatched` events.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use quicmatch_client::{ClientConfig, Credentials, Event, Socket, Trust};
use serde_json::json;

use crate::{
    matchmaker::{Args, Workload},
    proc_stats,
    relay::{scrape, start_nats},
    server_proc::ServerProc,
};

/// Tickets one session holds at most (`matchmaker.max_tickets`' top).
const PER_SESSION: usize = 64;
/// Sessions adding at once.
const ADDING_AT_ONCE: usize = 128;

/// The bench's `nats-server`, killed when the run ends.
struct Nats(std::process::Child);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One node's metrics of interest.
#[derive(Default, Debug, Clone, Copy)]
struct NodeMetrics {
    leader: bool,
    nodes: f64,
    pending_writes: f64,
    pass_s: f64,
    catchup_s: f64,
    catchups: f64,
    commit_s: f64,
    commits: f64,
    matched: f64,
    committed_groups: f64,
}

/// Scrapes a node's metrics.
async fn node_metrics(addr: SocketAddr) -> Option<NodeMetrics> {
    let text = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .ok()??;
    let value = |name: &str| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .filter(|(n, _)| *n == name || n.starts_with(&format!("{name}{{")))
            .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
            .sum()
    };
    Some(NodeMetrics {
        leader: value("quicmatch_cluster_matchmaker_leader") >= 1.0,
        nodes: value("quicmatch_cluster_nodes"),
        pending_writes: value("quicmatch_cluster_ticket_writes_pending"),
        pass_s: value("quicmatch_matchmaker_pass_seconds_sum"),
        catchup_s: value("quicmatch_cluster_matchmaker_catchup_seconds_sum"),
        catchups: value("quicmatch_cluster_matchmaker_catchup_seconds_count"),
        commit_s: value("quicmatch_cluster_matchmaker_commit_seconds_sum"),
        commits: value("quicmatch_cluster_matchmaker_commit_seconds_count"),
        matched: value("quicmatch_matchmaker_matched_total"),
        committed_groups: text
            .lines()
            .filter(|l| {
                l.starts_with("quicmatch_cluster_matchmaker_groups_total{")
                    && l.contains("outcome=\"committed\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
            .sum(),
    })
}

/// Polls a node's metrics until `done` holds, or fails after `within`.
async fn wait_metrics(
    addr: SocketAddr,
    within: Duration,
    what: &str,
    done: impl Fn(&NodeMetrics) -> bool,
) -> anyhow::Result<NodeMetrics> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(m) = node_metrics(addr).await {
            if done(&m) {
                return Ok(m);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts one node of the bench's cluster, with its metrics on a free port.
async fn node(
    url: &str,
    name: &str,
    toml: &str,
    certs: Option<&std::path::Path>,
) -> anyhow::Result<(ServerProc, SocketAddr)> {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let extra: Vec<String> = [
        "--cluster",
        url,
        "--node-name",
        name,
        "--metrics",
        &metrics.to_string(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let server = ServerProc::quicmatch_in(None, Some(toml), &extra, certs).await?;
    Ok((server, metrics))
}

/// Adds `count` tickets of `workload` from one session.
async fn add_tickets(
    socket: &Socket,
    count: usize,
    workload: Workload,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<()> {
    for _ in 0..count {
        match workload {
            Workload::Star => {
                socket.add_matchmaker("*", 2, 2).send().await?;
            }
            Workload::Region => {
                let region = ["eu", "us", "asia", "sa"][rng.usize(..4)];
                let rank = rng.u32(1..=100);
                let query = format!(
                    "+properties.region:{region} +properties.rank:>={} +properties.rank:<={}",
                    i64::from(rank) - 10,
                    rank + 10
                );
                socket
                    .add_matchmaker(&query, 2, 4)
                    .string_property("region", region)
                    .numeric_property("rank", f64::from(rank))
                    .send()
                    .await?;
            }
            Workload::Roles => anyhow::bail!("--cluster runs the star and region workloads"),
        }
    }
    Ok(())
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.workload != Workload::Roles,
        "--cluster runs the star and region workloads (roles needs parties)"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(measure(args))
}

async fn measure(args: &Args) -> anyhow::Result<()> {
    let tickets = args.pool.max(2);
    let sessions = tickets.div_ceil(PER_SESSION);
    let (nats, _store, url) = start_nats().await?;
    let nats = Nats(nats);
    // A one-hour interval: the first leader never passes, so the second one's first
    // pass is over the whole pool. A lease of 2 s bounds the takeover's wait.
    let toml = format!(
        "[session]\nmax_connections = {}\n\
         [matchmaker]\nmax_tickets = {PER_SESSION}\ninterval = \"1h\"\nmax_intervals = {}\nmax_scan = {}\n\
         [cluster]\nheartbeat = \"500ms\"\nnode_ttl = \"5s\"\nleader_lease = \"2s\"\nrequest_timeout = \"10s\"\n",
        sessions + 16,
        args.max_intervals,
        args.max_scan,
    );
    let (mut first, first_metrics) = node(&url, "mm-a", &toml, None).await?;
    let certs = first
        .ca
        .as_ref()
        .and_then(|ca| ca.parent())
        .map(std::path::PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("the first node has no certificate directory"))?;
    wait_metrics(
        first_metrics,
        Duration::from_secs(30),
        "mm-a to lead",
        |m| m.leader,
    )
    .await?;
    let (second, second_metrics) = node(&url, "mm-b", &toml, Some(&certs)).await?;
    wait_metrics(
        second_metrics,
        Duration::from_secs(30),
        "mm-b to see mm-a",
        |m| m.nodes >= 2.0,
    )
    .await?;
    let second_pid = second
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no mm-b process"))?;
    let ca = second
        .ca
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no certificate"))?;

    // Players, all homed on mm-b.
    let endpoints: Vec<quinn::Endpoint> = (0..8)
        .map(|_| crate::relay::client_endpoint())
        .collect::<anyhow::Result<_>>()?;
    let connecting = Instant::now();
    let mut sockets: Vec<Arc<Socket>> = Vec::with_capacity(sessions);
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(64) {
        let batch = chunk.iter().map(|&n| {
            let c = ClientConfig::new(
                second.addr,
                Trust::CaFile(ca.clone()),
                Credentials::Device {
                    id: format!("mm-bench-{n:08}"),
                },
            );
            Socket::connect_with_endpoint(endpoints[n % endpoints.len()].clone(), c)
        });
        for s in futures_util::future::join_all(batch).await {
            sockets.push(Arc::new(s?));
        }
    }
    let connect_s = connecting.elapsed().as_secs_f64();

    // Every result a player hears, and when the last one came.
    let results = Arc::new(AtomicU64::new(0));
    let last_result = Arc::new(Mutex::new(None::<Instant>));
    let mut readers = Vec::with_capacity(sessions);
    for s in &sockets {
        let (s, results, last) = (s.clone(), results.clone(), last_result.clone());
        readers.push(tokio::spawn(async move {
            while let Some(event) = s.next_event().await {
                if matches!(
                    event,
                    Event::MatchmakerMatched(_) | Event::MatchmakerMatchedTeams(_)
                ) {
                    results.fetch_add(1, Ordering::Relaxed);
                    *last
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                }
            }
        }));
    }

    // mm-a's mirror catches up with the (empty) bucket at its first ticket, and passes
    // then: one ticket, added and removed before the fill, so no pass of mm-a's ever
    // sees the pool.
    let primer = sockets
        .first()
        .ok_or_else(|| anyhow::anyhow!("no players"))?
        .add_matchmaker("+properties.never:primer", 2, 2)
        .send()
        .await?;
    wait_metrics(
        first_metrics,
        Duration::from_secs(30),
        "mm-a's mirror to catch up",
        |m| m.catchups >= 1.0,
    )
    .await?;
    if let Some(s) = sockets.first() {
        s.remove_matchmaker(primer).await?;
    }

    // Fill the pool.
    let filling = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(ADDING_AT_ONCE));
    let mut adders = Vec::with_capacity(sessions);
    for (i, s) in sockets.iter().enumerate() {
        let count = PER_SESSION.min(tickets - i * PER_SESSION);
        let (s, gate, workload) = (s.clone(), gate.clone(), args.workload);
        let mut rng = fastrand::Rng::with_seed(args.seed.wrapping_add(i as u64));
        adders.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            add_tickets(&s, count, workload, &mut rng).await
        }));
    }
    for a in adders {
        a.await??;
    }
    let answered_s = filling.elapsed().as_secs_f64();
    wait_metrics(
        second_metrics,
        Duration::from_secs(600),
        "mm-b's ticket writes",
        |m| m.pending_writes == 0.0,
    )
    .await?;
    let shared_s = filling.elapsed().as_secs_f64();
    let before = node_metrics(second_metrics).await.unwrap_or_default();
    anyhow::ensure!(
        !before.leader && before.commits == 0.0,
        "mm-b passed before the takeover"
    );

    // The takeover, and mm-b's one pass over the whole pool.
    let killed = Instant::now();
    first.kill();
    wait_metrics(
        second_metrics,
        Duration::from_secs(60),
        "mm-b to lead",
        |m| m.leader,
    )
    .await?;
    let took_over = Instant::now();
    let done = wait_metrics(
        second_metrics,
        Duration::from_secs(1800),
        "mm-b's first pass to commit",
        |m| m.commits >= 1.0,
    )
    .await?;
    let matched = done.matched as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while results.load(Ordering::Relaxed) < matched && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let heard = results.load(Ordering::Relaxed);
    let last = *last_result
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let to_last_result_s = last.map_or(f64::NAN, |t| {
        t.saturating_duration_since(took_over).as_secs_f64()
    });
    let peak_mib =
        proc_stats::status_kib(&second_pid.to_string(), "VmHWM").unwrap_or(0) as f64 / 1024.0;
    let nats_mib =
        proc_stats::status_kib(&nats.0.id().to_string(), "VmHWM").unwrap_or(0) as f64 / 1024.0;
    for s in &sockets {
        s.connection().close(0u32.into(), b"done");
    }
    for r in readers {
        r.abort();
    }
    let workload = format!("{:?}", args.workload).to_lowercase();
    let out = json!({
        "bench": "matchmaker-cluster",
        "workload": workload,
        "tickets": tickets,
        "sessions": sessions,
        "connect_s": connect_s,
        "adds_answered_s": answered_s,
        "tickets_shared_s": shared_s,
        "tickets_shared_per_s": tickets as f64 / shared_s,
        "takeover_s": took_over.duration_since(killed).as_secs_f64(),
        "catchup_s": done.catchup_s,
        "pass_s": done.pass_s,
        "commit_s": done.commit_s,
        "groups_committed": done.committed_groups,
        "tickets_matched": matched,
        "results_heard": heard,
        "lead_to_last_result_s": to_last_result_s,
        "leader_peak_rss_mib": peak_mib,
        "nats_peak_rss_mib": nats_mib,
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "matchmaker --cluster ({workload}): {tickets} tickets from {sessions} sessions shared in {shared_s:.1} s ({:.0}/s) | takeover {:.2} s | catch-up {:.2} s | pass {:.3} s | commit {:.1} s ({} groups) | last result {:.1} s after the takeover ({heard} of {matched} heard) | leader peak RSS {peak_mib:.0} MiB, nats-server {nats_mib:.0} MiB",
            tickets as f64 / shared_s,
            took_over.duration_since(killed).as_secs_f64(),
            done.catchup_s,
            done.pass_s,
            done.commit_s,
            done.committed_groups,
            to_last_result_s,
        );
    }
    drop(second);
    Ok(())
}
