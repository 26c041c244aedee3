//! `quicmatch-bench list`: match listings over many server-run matches, timed one by
//! one through the in-process `Runtime::list_matches` call.
//!
//! An in-process server (as `authoritative` starts it) runs `--matches N` matches of a
//! handler that ticks once a second and labels itself with a random JSON label:
//! `{"map":..,"mode":..,"region":{"name":..,"ping":..},"skill":..}` with `mode` in
//! {ranked, casual}, `skill` 0..=100, `map` in {dust, harbor, summit}, `region.name`
//! in {eu, us, asia, sa} and `region.ping` 5..=200. Then `--queries Q` random listing
//! requests (a mix of label queries, exact labels, size filters and limits 1..=100) are
//! timed one at a time. This is the cost of the call inside the server (the index scan,
//! the filters, the ordering and the copy of the results), not of a client's round
//! trip. Nobody joins, so every match has size 0: the size filters pass all matches or
//! none.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use quicmatch::runtime::{Dispatcher, Inbound, MatchContext, MatchHandler, MatchInit, Params};
use quicmatch_protocol::MatchListRequest;
use serde::Serialize;

use crate::authoritative::InProcess;

const MODES: [&str; 2] = ["ranked", "casual"];
const MAPS: [&str; 3] = ["dust", "harbor", "summit"];
const REGIONS: [&str; 4] = ["eu", "us", "asia", "sa"];

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Server-run matches to list from.
    #[arg(long, default_value_t = 10_000)]
    matches: usize,
    /// Listing requests to time.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Seed for the labels and the requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// A match that only carries its label.
struct Listed;

impl MatchHandler for Listed {
    fn init(&mut self, _ctx: &MatchContext, params: &Params) -> Result<MatchInit, String> {
        let label = params["label"].as_str().ok_or("no label")?;
        let max_size = params["max_size"].as_u64().unwrap_or(8);
        Ok(MatchInit::new(1)
            .label(label)
            .max_size(u32::try_from(max_size).map_err(|e| e.to_string())?))
    }

    fn tick(&mut self, _ctx: &MatchContext, _d: &mut Dispatcher<'_>, _messages: Vec<Inbound>) {}
}

/// A random label, as the matches carry it (keys in sorted order).
fn label(rng: &mut fastrand::Rng) -> String {
    serde_json::json!({
        "mode": MODES[rng.usize(..MODES.len())],
        "skill": rng.u32(0..=100),
        "map": MAPS[rng.usize(..MAPS.len())],
        "region": {
            "name": REGIONS[rng.usize(..REGIONS.len())],
            "ping": rng.u32(5..=200),
        },
    })
    .to_string()
}

/// The kinds of request the mix draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `+label.mode:<m> +label.skill:>=<s>`
    ModeSkill,
    /// `-label.map:<m>` (excluding only)
    ExcludeMap,
    /// `+label.region.name:<r> +label.skill:>=<s> +label.skill:<=<s+20>` with an
    /// optional `label.map:<m>` that only boosts the score
    RegionRange,
    /// the `label` filter: one existing label, exactly
    ExactLabel,
    /// size filters (`min_size`/`max_size`) with `authoritative: true`, no query
    Size,
    /// `*`, any match
    Star,
}

const KINDS: [Kind; 6] = [
    Kind::ModeSkill,
    Kind::ExcludeMap,
    Kind::RegionRange,
    Kind::ExactLabel,
    Kind::Size,
    Kind::Star,
];

fn request(kind: Kind, labels: &[String], rng: &mut fastrand::Rng) -> MatchListRequest {
    let mut req = MatchListRequest {
        limit: rng.u32(1..=100),
        authoritative: None,
        label: None,
        min_size: None,
        max_size: None,
        query: None,
    };
    match kind {
        Kind::ModeSkill => {
            req.query = Some(format!(
                "+label.mode:{} +label.skill:>={}",
                MODES[rng.usize(..MODES.len())],
                rng.u32(0..=100)
            ));
        }
        Kind::ExcludeMap => {
            req.query = Some(format!("-label.map:{}", MAPS[rng.usize(..MAPS.len())]));
        }
        Kind::RegionRange => {
            let skill = rng.u32(0..=80);
            let mut q = format!(
                "+label.region.name:{} +label.skill:>={skill} +label.skill:<={}",
                REGIONS[rng.usize(..REGIONS.len())],
                skill + 20
            );
            if rng.bool() {
                q.push_str(&format!(" label.map:{}", MAPS[rng.usize(..MAPS.len())]));
            }
            req.query = Some(q);
        }
        Kind::ExactLabel => {
            req.label = labels.get(rng.usize(..labels.len().max(1))).cloned();
        }
        Kind::Size => {
            req.authoritative = Some(true);
            if rng.bool() {
                req.min_size = Some(0);
                req.max_size = Some(rng.u32(0..=4));
            } else {
                req.min_size = Some(rng.u32(0..=1));
            }
        }
        Kind::Star => req.query = Some("*".into()),
    }
    req
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("valid")))
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1e3
    }
}

#[derive(Debug, Serialize)]
struct KindReport {
    kind: String,
    queries: u64,
    mean_results: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    matches: usize,
    queries: usize,
    create_s: f64,
    mean_results: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    by_kind: Vec<KindReport>,
}

/// Entry point of `quicmatch-bench list`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.matches >= 1, "--matches must be at least 1");
    let n = args.matches;
    let server = InProcess::start(
        |c| c.matches.max_matches = c.matches.max_matches.max(n + 16),
        |b| b.match_handler("listed", || Listed),
    )?;
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let started = Instant::now();
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let label = label(&mut rng);
        let params = serde_json::json!({ "label": label, "max_size": rng.u32(2..=16) });
        server.runtime.create_match("listed", params)?;
        labels.push(label);
    }
    let create_s = started.elapsed().as_secs_f64();
    // Let the first ticks of the new matches pass.
    std::thread::sleep(Duration::from_millis(200));

    let mut all = histogram();
    let mut per_kind: Vec<(Histogram<u64>, u64)> = KINDS.iter().map(|_| (histogram(), 0)).collect();
    let mut results = 0u64;
    for _ in 0..args.queries {
        let k = rng.usize(..KINDS.len());
        let req = request(KINDS[k], &labels, &mut rng);
        let t = Instant::now();
        let listed = server.runtime.list_matches(&req);
        let ns = u64::try_from(t.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let listed = listed.map_err(|e| anyhow::anyhow!("listing {req:?}: {e}"))?;
        all.saturating_record(ns);
        per_kind[k].0.saturating_record(ns);
        per_kind[k].1 += listed.len() as u64;
        results += listed.len() as u64;
    }
    server.stop();

    let mean = |sum: u64, count: u64| {
        if count == 0 {
            0.0
        } else {
            sum as f64 / count as f64
        }
    };
    let report = Report {
        bench: "list",
        matches: n,
        queries: args.queries,
        create_s,
        mean_results: mean(results, all.len()),
        p50_us: us(&all, 0.5),
        p99_us: us(&all, 0.99),
        p999_us: us(&all, 0.999),
        max_us: all.max() as f64 / 1e3,
        by_kind: KINDS
            .iter()
            .zip(&per_kind)
            .map(|(kind, (h, sum))| KindReport {
                kind: format!("{kind:?}"),
                queries: h.len(),
                mean_results: mean(*sum, h.len()),
                p50_us: us(h, 0.5),
                p99_us: us(h, 0.99),
                max_us: h.max() as f64 / 1e3,
            })
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        println!(
            "list: {} matches (created in {:.2} s), {} listings, {:.1} results on average | p50 {:.1} us p99 {:.1} us p99.9 {:.1} us max {:.1} us (in-process call)",
            report.matches,
            report.create_s,
            report.queries,
            report.mean_results,
            report.p50_us,
            report.p99_us,
            report.p999_us,
            report.max_us
        );
        for k in &report.by_kind {
            println!(
                "  {:<12} {:>5} listings, {:>5.1} results | p50 {:>8.1} us p99 {:>8.1} us max {:>8.1} us",
                k.kind, k.queries, k.mean_results, k.p50_us, k.p99_us, k.max_us
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_json_objects_with_the_fields_queried() {
        let mut rng = fastrand::Rng::with_seed(3);
        let l: serde_json::Value = serde_json::from_str(&label(&mut rng)).expect("json");
        assert!(MODES.contains(&l["mode"].as_str().expect("mode")));
        assert!(l["skill"].as_u64().expect("skill") <= 100);
        assert!(MAPS.contains(&l["map"].as_str().expect("map")));
        assert!(REGIONS.contains(&l["region"]["name"].as_str().expect("region")));
    }

    #[test]
    fn every_kind_makes_a_request_within_limits() {
        let mut rng = fastrand::Rng::with_seed(5);
        let labels = vec![label(&mut rng)];
        for kind in KINDS {
            for _ in 0..50 {
                let r = request(kind, &labels, &mut rng);
                assert!((1..=100).contains(&r.limit));
                if kind == Kind::ExactLabel {
                    assert_eq!(r.label.as_ref(), labels.first());
                }
                if let (Some(a), Some(b)) = (r.min_size, r.max_size) {
                    assert!(a <= b);
                }
            }
        }
    }
}
