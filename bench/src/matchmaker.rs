//! `quicmatch-bench matchmaker`: fill a pool with one of the reference workloads and
//! time one `process()` pass.
//!
//! Workloads (the ones Nakama's matchmaker was measured on):
//! - `star`: query `*`, min 2, max 2, no properties.
//! - `region`: string `region` from 4 values, numeric `rank` uniform in 1..=100, query
//!   `+properties.region:<own> +properties.rank:>=<rank-10> +properties.rank:<=<rank+10>`,
//!   min 2, max 4.

use std::time::{Duration, Instant};

use quicmatch::matchmaker::{
    pool::{Counts, Pool, PoolConfig, TicketSpec},
    query::{Properties, Query},
};
use quicmatch_protocol::{Presence, SessionId, UserId};
use serde_json::json;

const REGIONS: [&str; 4] = ["eu", "us", "asia", "sa"];

/// Which pool to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Workload {
    /// Anyone with anyone, pairs.
    Star,
    /// Same region, rank within 10, groups of 2 to 4.
    Region,
}

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Tickets in the pool.
    #[arg(long, default_value_t = 100_000)]
    pool: usize,
    /// Which workload.
    #[arg(long, value_enum, default_value_t = Workload::Region)]
    workload: Workload,
    /// Passes a ticket waits for its max count (1: the timed pass accepts any valid size).
    #[arg(long, default_value_t = 1)]
    max_intervals: u32,
    /// Candidates examined per ticket per pass.
    #[arg(long, default_value_t = PoolConfig::default().max_scan)]
    max_scan: usize,
    /// Seed for the properties.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn spec(i: usize, workload: Workload, rng: &mut fastrand::Rng) -> anyhow::Result<TicketSpec> {
    let presence = Presence {
        user_id: UserId(uuid::Uuid::from_u128(i as u128 + 1)),
        session_id: SessionId(uuid::Uuid::from_u128(i as u128 + 1)),
        username: format!("u{i}"),
    };
    let (query, counts, props) = match workload {
        Workload::Star => (
            "*".to_owned(),
            Counts {
                min_count: 2,
                max_count: 2,
                count_multiple: 1,
            },
            Properties::default(),
        ),
        Workload::Region => {
            let region = REGIONS[rng.usize(..REGIONS.len())];
            let rank = rng.u32(1..=100);
            let mut props = Properties::default();
            props.strings.insert("region".into(), region.into());
            props.numbers.insert("rank".into(), f64::from(rank));
            (
                format!(
                    "+properties.region:{region} +properties.rank:>={} +properties.rank:<={}",
                    i64::from(rank) - 10,
                    rank + 10
                ),
                Counts {
                    min_count: 2,
                    max_count: 4,
                    count_multiple: 1,
                },
                props,
            )
        }
    };
    let query = Query::parse(&query)?;
    Ok(TicketSpec::new(
        query,
        counts,
        props,
        None,
        vec![presence],
        128,
    )?)
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut pool = Pool::new(PoolConfig {
        max_tickets: 3,
        max_intervals: args.max_intervals,
        mutual: true,
        max_scan: args.max_scan,
    });
    let t0 = Instant::now();
    let fill_start = Instant::now();
    for i in 0..args.pool {
        // One microsecond apart, so age order is the insertion order.
        let at = t0 + Duration::from_micros(i as u64);
        pool.add(spec(i, args.workload, &mut rng)?, at)?;
    }
    let fill = fill_start.elapsed();
    let now = t0 + Duration::from_micros(args.pool as u64) + Duration::from_secs(1);
    let pass_start = Instant::now();
    let groups = pool.process(now);
    let pass = pass_start.elapsed();
    let tickets_matched: usize = groups
        .iter()
        .map(|g| {
            let mut t: Vec<_> = g.entries.iter().map(|e| e.ticket).collect();
            t.dedup();
            t.len()
        })
        .sum();
    let peak = crate::proc_stats::status_kib("self", "VmHWM").unwrap_or(0) as f64 / 1024.0;
    let workload = format!("{:?}", args.workload).to_lowercase();
    if args.json {
        println!(
            "{}",
            json!({
                "bench": "matchmaker",
                "workload": workload,
                "pool": args.pool,
                "fill_ms": fill.as_secs_f64() * 1000.0,
                "pass_ms": pass.as_secs_f64() * 1000.0,
                "groups": groups.len(),
                "tickets_matched": tickets_matched,
                "left_in_pool": pool.len(),
                "peak_rss_mib": peak,
            })
        );
    } else {
        println!(
            "matchmaker {workload}: pool {} | fill {:.1} ms | pass {:.1} ms | {} groups | {} tickets matched | {} left | peak RSS {:.1} MiB",
            args.pool,
            fill.as_secs_f64() * 1000.0,
            pass.as_secs_f64() * 1000.0,
            groups.len(),
            tickets_matched,
            pool.len(),
            peak
        );
    }
    Ok(())
}
