//! `quicmatch-bench snapshots`: what recording server-run matches for a restart costs.
//!
//! The server is the library in process ([`InProcess`]: 127.0.0.1 port 0, its own
//! one-worker runtime) with its store in a temporary directory (`--data-dir` names
//! another, to measure a particular disk) and `matches.snapshot_interval` set to
//! `--interval`. `--matches M` matches of the `snap` handler are created through
//! `Runtime::create_match`, their first ticks spread over one tick interval; nobody
//! joins them. A match's state is `--state-bytes` bytes of random data of which 8 bytes
//! change on every tick (`--tick` Hz), so every snapshot differs from the one before
//! and every round writes every match: the match's record and its state.
//!
//! The recording is two threads: `quicmatch-persist` takes every match's snapshot (the
//! handler's `snapshot`, a copy of the state here) and encodes and hashes the records,
//! and `quicmatch-store` commits the changed ones (one commit, one fsync a round).
//! Measured over `--duration` seconds after `--warmup` (which should hold the first
//! round, where every record is new), each thread's CPU from
//! `/proc/self/task/<tid>/schedstat`:
//! - the recording's CPU (persist + store) as a share of one core, against the target
//!   of 5% for 1 000 matches at 1 s, and per match snapshot;
//! - bytes the store thread wrote (`wchar`: handed to `pwrite`; `write_bytes`: sent to
//!   the disk), against the snapshot bytes themselves, and the store file's size;
//! - the rounds, from the server's `quicmatch_restart_record_seconds` (scraped from its
//!   metrics port at both ends of the window): how many, their mean wall time
//!   (snapshots, encoding and the commit) and the buckets that hold the median and the
//!   99th percentile; and the commits from `quicmatch_storage_commit_seconds`;
//! - the match engine's and the whole process's CPU.
//!
//! Then, unless `--no-baseline`, the same run again with `snapshot_interval` 0 (nothing
//! recorded), so that the process CPU the recording adds is visible. (The metrics
//! exporter can be installed once per process, so only the first run has it.)

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use quicmatch::runtime::{Dispatcher, Inbound, MatchContext, MatchHandler, MatchInit, Params};
use serde::Serialize;

use crate::{
    authoritative::InProcess,
    measure,
    proc_stats::{self, ThreadUse},
    storage::{counter, free_port, scrape, Histogram, COMMIT_METRIC},
};

/// The recording's threads.
const RECORDING_THREADS: [&str; 2] = ["quicmatch-persist", "quicmatch-store"];
/// The match engine's threads.
const ENGINE_THREADS: [&str; 2] = ["quicmatch-match", "quicmatch-ticks"];
/// The issue's target: 1 000 matches snapshotted every second within 5% of one core.
const TARGET_PCT: f64 = 5.0;
const ROUND_METRIC: &str = "quicmatch_restart_record_seconds";
const RECORDS_METRIC: &str = "quicmatch_restart_records_written_total";
/// Largest `--state-bytes` (the server refuses snapshots over 8 MiB).
const MAX_STATE: usize = 4 << 20;

#[derive(clap::Args, Clone)]
pub(crate) struct Args {
    /// Server-run matches, each snapshotted every interval.
    #[arg(long, default_value_t = 1000)]
    matches: usize,
    /// Bytes of each match's state (its snapshot), 8 changed every tick.
    #[arg(long, default_value_t = 1024)]
    state_bytes: usize,
    /// Ticks per second of every match (1 to 60).
    #[arg(long, default_value_t = 10)]
    tick: u32,
    /// Seconds between rounds of recording (`matches.snapshot_interval`).
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of running before measuring (holds the first round, which inserts).
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Skip the second run with recording off.
    #[arg(long)]
    no_baseline: bool,
    /// Directory of the store (default: a temporary one, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// What the matches count, ever (one set per run).
#[derive(Default)]
struct Probe {
    ticks: AtomicU64,
    snapshots: AtomicU64,
}

/// The benchmark's match: a block of state that changes on every tick.
struct SnapMatch {
    probe: Arc<Probe>,
    tick_rate: u32,
    state: Vec<u8>,
    rng: fastrand::Rng,
}

impl SnapMatch {
    fn new(probe: Arc<Probe>) -> Self {
        Self {
            probe,
            tick_rate: 10,
            state: Vec::new(),
            rng: fastrand::Rng::new(),
        }
    }
}

/// Writes `word` over 8 bytes of `state` at a place that moves with `tick` (wrapping).
fn stir(state: &mut [u8], tick: u64, word: u64) {
    let len = state.len();
    if len == 0 {
        return;
    }
    let at = (tick.wrapping_mul(8) % len as u64) as usize;
    for (i, b) in word.to_le_bytes().into_iter().enumerate() {
        state[(at + i) % len] = b;
    }
}

impl MatchHandler for SnapMatch {
    fn init(&mut self, _ctx: &MatchContext, params: &Params) -> Result<MatchInit, String> {
        let tick = params["tick"].as_u64().unwrap_or(10);
        self.tick_rate = u32::try_from(tick).map_err(|e| e.to_string())?;
        let bytes = params["state_bytes"].as_u64().unwrap_or(1024) as usize;
        self.state = std::iter::repeat_with(|| self.rng.u8(..))
            .take(bytes)
            .collect();
        Ok(MatchInit::new(self.tick_rate).label(r#"{"bench":"snapshots"}"#))
    }

    fn tick(&mut self, ctx: &MatchContext, _d: &mut Dispatcher<'_>, _messages: Vec<Inbound>) {
        stir(&mut self.state, ctx.tick(), self.rng.u64(..));
        self.probe.ticks.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&mut self, _ctx: &MatchContext) -> Option<Vec<u8>> {
        self.probe.snapshots.fetch_add(1, Ordering::Relaxed);
        Some(self.state.clone())
    }

    fn restore(&mut self, _ctx: &MatchContext, snapshot: &[u8]) -> Result<MatchInit, String> {
        self.state = snapshot.to_vec();
        Ok(MatchInit::new(self.tick_rate))
    }
}

/// What one run measured over its window.
#[derive(Debug, Default, Serialize)]
struct Phase {
    duration_s: f64,
    ticks_per_s: f64,
    snapshots: u64,
    snapshots_per_s: f64,
    persist_cpu_pct: f64,
    store_cpu_pct: f64,
    recording_cpu_pct: f64,
    us_per_snapshot: f64,
    engine_cpu_pct: f64,
    process_cpu_pct: f64,
    /// Bytes the store thread handed to write calls, per second.
    written_bytes_per_s: f64,
    /// Bytes the store thread sent to the disk, per second.
    disk_bytes_per_s: f64,
    store_file_bytes: u64,
    store_growth_bytes: i64,
    rounds: u64,
    round_mean_ms: f64,
    round_p50_le_ms: f64,
    round_p99_le_ms: f64,
    records_written_per_s: f64,
    commits: u64,
    commit_mean_ms: f64,
}

/// The figures of one invocation.
#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    matches: usize,
    state_bytes: usize,
    tick: u32,
    interval_s: f64,
    /// The snapshots' own bytes per second (matches × state / interval).
    payload_bytes_per_s: f64,
    target_pct: f64,
    /// The recording's CPU scaled to 1 000 snapshots a second (the target's rate).
    recording_pct_at_1000_per_s: f64,
    target_met: bool,
    busy_before_pct: f64,
    recording: Phase,
    baseline: Option<Phase>,
    /// Process CPU with recording on less the baseline's, in % of one core.
    added_process_cpu_pct: Option<f64>,
}

/// CPU nanoseconds as a percentage of one core over `secs`.
fn pct(ns: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    100.0 * ns as f64 / 1e9 / secs
}

/// Microseconds of CPU per snapshot (0 when none was taken).
fn us_per(ns: u64, snapshots: u64) -> f64 {
    if snapshots == 0 {
        0.0
    } else {
        ns as f64 / 1e3 / snapshots as f64
    }
}

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Starts a server, runs the matches, measures the window, stops.
fn run_once(args: &Args, record: bool, metrics: bool) -> anyhow::Result<Phase> {
    let temp = tempfile::tempdir()?;
    let data_dir = match (&args.data_dir, record) {
        // The baseline never writes; keep it off a store the user named.
        (Some(dir), true) => dir.clone(),
        _ => temp.path().into(),
    };
    let store_file = data_dir.join("quicmatch.redb");
    let metrics_addr = if metrics { Some(free_port()?) } else { None };
    let probe = Arc::new(Probe::default());
    let factory_probe = probe.clone();
    let interval = if record {
        Duration::from_secs_f64(args.interval)
    } else {
        Duration::ZERO
    };
    let server = InProcess::start(
        |c| {
            c.data_dir = data_dir.clone();
            c.metrics = metrics_addr;
            c.matches.snapshot_interval = interval;
            c.matches.max_matches = c.matches.max_matches.max(args.matches + 16);
        },
        |b| b.match_handler("snap", move || SnapMatch::new(factory_probe.clone())),
    )?;

    let params = serde_json::json!({ "tick": args.tick, "state_bytes": args.state_bytes });
    let spread = Duration::from_secs(1) / args.tick;
    let start = Instant::now();
    for i in 0..args.matches {
        let at = start + spread.mul_f64(i as f64 / args.matches as f64);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        server.runtime.create_match("snap", params.clone())?;
    }
    std::thread::sleep(Duration::from_secs_f64(args.warmup));

    let clk_tck = measure::clock_ticks();
    let scrape_now = || metrics_addr.map(scrape).transpose();
    let page0 = scrape_now()?;
    let threads0 = proc_stats::threads(clk_tck);
    let process0 = proc_stats::process_cpu_ns();
    let (ticks0, snaps0) = (
        probe.ticks.load(Ordering::Relaxed),
        probe.snapshots.load(Ordering::Relaxed),
    );
    let size0 = file_size(&store_file);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    let threads1 = proc_stats::threads(clk_tck);
    let process1 = proc_stats::process_cpu_ns();
    let secs = t0.elapsed().as_secs_f64();
    let ticks = probe.ticks.load(Ordering::Relaxed) - ticks0;
    let snapshots = probe.snapshots.load(Ordering::Relaxed) - snaps0;
    let page1 = scrape_now()?;
    let size1 = file_size(&store_file);
    server.stop();

    let used = |names: &[&str]| proc_stats::used_between(&threads0, &threads1, names);
    let persist = used(&RECORDING_THREADS[..1]);
    let store = used(&RECORDING_THREADS[1..]);
    let engine = used(&ENGINE_THREADS);
    let ThreadUse {
        cpu_ns: recording_ns,
        ..
    } = used(&RECORDING_THREADS);
    let process_ns = process1
        .zip(process0)
        .map_or(0, |(b, a)| b.saturating_sub(a));
    let mut phase = Phase {
        duration_s: secs,
        ticks_per_s: ticks as f64 / secs,
        snapshots,
        snapshots_per_s: snapshots as f64 / secs,
        persist_cpu_pct: pct(persist.cpu_ns, secs),
        store_cpu_pct: pct(store.cpu_ns, secs),
        recording_cpu_pct: pct(recording_ns, secs),
        us_per_snapshot: us_per(recording_ns, snapshots),
        engine_cpu_pct: pct(engine.cpu_ns, secs),
        process_cpu_pct: pct(process_ns, secs),
        written_bytes_per_s: store.wchar as f64 / secs,
        disk_bytes_per_s: store.write_bytes as f64 / secs,
        store_file_bytes: size1,
        store_growth_bytes: size1 as i64 - size0 as i64,
        ..Phase::default()
    };
    if let (Some(p0), Some(p1)) = (page0, page1) {
        let rounds =
            Histogram::parse(&p1, ROUND_METRIC).since(&Histogram::parse(&p0, ROUND_METRIC));
        let commits =
            Histogram::parse(&p1, COMMIT_METRIC).since(&Histogram::parse(&p0, COMMIT_METRIC));
        let records = counter(&p1, RECORDS_METRIC).unwrap_or(0.0)
            - counter(&p0, RECORDS_METRIC).unwrap_or(0.0);
        phase.rounds = rounds.count;
        phase.round_mean_ms = rounds.mean() * 1e3;
        phase.round_p50_le_ms = rounds.quantile_bound(0.5) * 1e3;
        phase.round_p99_le_ms = rounds.quantile_bound(0.99) * 1e3;
        phase.records_written_per_s = records / secs;
        phase.commits = commits.count;
        phase.commit_mean_ms = commits.mean() * 1e3;
    }
    Ok(phase)
}

fn print(r: &Report) {
    let p = &r.recording;
    println!(
        "snapshots: {} matches x {} B at {} Hz, recorded every {} s | {:.0} snapshots/s | recording {:.2}% of a core (persist {:.2}%, store {:.2}%), {:.1} us per snapshot | at 1000 snapshots/s {:.2}%, target < {}%: {} | engine {:.1}%, process {:.1}%",
        r.matches,
        r.state_bytes,
        r.tick,
        r.interval_s,
        p.snapshots_per_s,
        p.recording_cpu_pct,
        p.persist_cpu_pct,
        p.store_cpu_pct,
        p.us_per_snapshot,
        r.recording_pct_at_1000_per_s,
        r.target_pct,
        if r.target_met { "met" } else { "NOT met" },
        p.engine_cpu_pct,
        p.process_cpu_pct,
    );
    println!(
        "  written {:.2} MB/s (to disk {:.2} MB/s; snapshot bytes {:.2} MB/s) | store file {:.1} MB ({:+.1} MB in the window) | rounds {} (mean {:.2} ms, p50 <= {} ms, p99 <= {} ms), {:.0} records/s | commits {} (mean {:.2} ms)",
        p.written_bytes_per_s / 1e6,
        p.disk_bytes_per_s / 1e6,
        r.payload_bytes_per_s / 1e6,
        p.store_file_bytes as f64 / 1e6,
        p.store_growth_bytes as f64 / 1e6,
        p.rounds,
        p.round_mean_ms,
        p.round_p50_le_ms,
        p.round_p99_le_ms,
        p.records_written_per_s,
        p.commits,
        p.commit_mean_ms,
    );
    if let (Some(b), Some(added)) = (&r.baseline, r.added_process_cpu_pct) {
        println!(
            "  baseline (snapshot_interval 0): process {:.1}%, engine {:.1}% | recording adds {:+.1}% of a core to the process | machine busy before {:.0}%",
            b.process_cpu_pct, b.engine_cpu_pct, added, r.busy_before_pct
        );
    }
}

/// Entry point of `quicmatch-bench snapshots`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!((1..=60).contains(&args.tick), "--tick must be 1 to 60");
    anyhow::ensure!(args.matches >= 1, "--matches must be at least 1");
    anyhow::ensure!(
        (8..=MAX_STATE).contains(&args.state_bytes),
        "--state-bytes must be 8 to {MAX_STATE}"
    );
    anyhow::ensure!(
        args.interval >= 0.01 && args.interval <= 3600.0,
        "--interval must be 0.01 to 3600 seconds"
    );
    anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
    let busy0 = measure::machine_jiffies();
    std::thread::sleep(Duration::from_millis(500));
    let busy_before = match (busy0, measure::machine_jiffies()) {
        (Some(a), Some(b)) => measure::busy_pct(a, b),
        _ => 0.0,
    };

    let recording = run_once(args, true, true)?;
    anyhow::ensure!(
        recording.snapshots > 0,
        "no snapshot was taken in the window (is --duration shorter than --interval?)"
    );
    let baseline = if args.no_baseline {
        None
    } else {
        Some(run_once(args, false, false)?)
    };
    let added = baseline
        .as_ref()
        .map(|b| recording.process_cpu_pct - b.process_cpu_pct);
    // The target is for 1 000 matches at 1 s: scale what was measured to that rate.
    let per_1000_per_s =
        recording.recording_cpu_pct * 1000.0 / recording.snapshots_per_s.max(f64::MIN_POSITIVE);
    let report = Report {
        bench: "snapshots",
        matches: args.matches,
        state_bytes: args.state_bytes,
        tick: args.tick,
        interval_s: args.interval,
        payload_bytes_per_s: args.matches as f64 * args.state_bytes as f64 / args.interval,
        target_pct: TARGET_PCT,
        recording_pct_at_1000_per_s: per_1000_per_s,
        target_met: per_1000_per_s < TARGET_PCT,
        busy_before_pct: busy_before,
        recording,
        baseline,
        added_process_cpu_pct: added,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stirring_changes_eight_bytes_and_wraps() {
        let mut s = vec![0u8; 20];
        stir(&mut s, 1, u64::MAX);
        assert_eq!(s.iter().filter(|b| **b == 0xff).count(), 8);
        assert!(s[8..16].iter().all(|b| *b == 0xff));
        // Tick 2 starts at byte 16 and wraps to the front.
        let mut s = vec![0u8; 20];
        stir(&mut s, 2, u64::MAX);
        assert!(s[16..].iter().all(|b| *b == 0xff) && s[..4].iter().all(|b| *b == 0xff));
        assert!(s[4..16].iter().all(|b| *b == 0));
        let mut tiny = vec![0u8; 3];
        stir(&mut tiny, 5, 0x0102_0304_0506_0708);
        assert_ne!(tiny, vec![0u8; 3]);
        stir(&mut [], 1, 1);
    }

    #[test]
    fn cpu_is_a_share_of_one_core_and_per_snapshot() {
        assert!((pct(500_000_000, 10.0) - 5.0).abs() < 1e-9);
        assert_eq!(pct(1, 0.0), 0.0);
        assert!((us_per(50_000_000, 10_000) - 5.0).abs() < 1e-9);
        assert_eq!(us_per(5, 0), 0.0);
    }
}
