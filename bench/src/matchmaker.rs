//! `quicmatch-bench matchmaker`: fill a pool with one of the reference workloads and
//! time one `process()` pass.
//!
//! Workloads (the ones Nakama's matchmaker was measured on):
//! - `star`: query `*`, min 2, max 2, no properties.
//! - `region`: string `region` from 4 values, numeric `rank` uniform in 1..=100, query
//!   `+properties.region:<own> +properties.rank:>=<rank-10> +properties.rank:<=<rank+10>`,
//!   min 2, max 4.
//! - `roles` (not one of Nakama's: it has no roles or teams): the `region` split, parties
//!   of 1 to 3 (60% solo, 25% duo, 15% trio), each member a tank (20%), healer (20%) or
//!   dps (60%) with no more of a role than one team takes, composition
//!   `role: tank 1, healer 1, dps 3` per team, 2 teams balanced on `skill` (1..=100):
//!   groups of exactly 10. `matched_share` is the share of players grouped.

use std::time::{Duration, Instant};

use quicmatch::matchmaker::{
    pool::{CompositionRule, Counts, Pool, PoolConfig, TeamRule, TicketOptions, TicketSpec},
    query::{Properties, Query},
};
use quicmatch_protocol::{PartyId, Presence, SessionId, UserId};
use serde_json::json;

const REGIONS: [&str; 4] = ["eu", "us", "asia", "sa"];

/// Which pool to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Workload {
    /// Anyone with anyone, pairs.
    Star,
    /// Same region, rank within 10, groups of 2 to 4.
    Region,
    /// Same region, parties of 1 to 3, 1 tank / 1 healer / 3 dps per team, 2 teams.
    Roles,
}

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Tickets in the pool.
    #[arg(long, visible_alias = "tickets", default_value_t = 100_000)]
    pub(crate) pool: usize,
    /// Which workload.
    #[arg(long, value_enum, default_value_t = Workload::Region)]
    pub(crate) workload: Workload,
    /// Passes a ticket waits for its max count (1: the timed pass accepts any valid size).
    #[arg(long, default_value_t = 1)]
    pub(crate) max_intervals: u32,
    /// Candidates examined per ticket per pass.
    #[arg(long, default_value_t = PoolConfig::default().max_scan)]
    pub(crate) max_scan: usize,
    /// Seed for the properties.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Fill the pool through a cluster of two quicmatch nodes on a `nats-server` the
    /// bench starts (2.10 or later on PATH) and time a new leader's catch-up, pass and
    /// commit over it (`star` and `region` workloads).
    #[arg(long)]
    pub(crate) cluster: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

fn presence(n: usize) -> Presence {
    Presence {
        user_id: UserId(uuid::Uuid::from_u128(n as u128 + 1)),
        session_id: SessionId(uuid::Uuid::from_u128(n as u128 + 1)),
        username: format!("u{n}"),
    }
}

/// Ticket `i`; `next_user` numbers the users (a party takes several).
fn spec(
    i: usize,
    next_user: &mut usize,
    workload: Workload,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<TicketSpec> {
    let mut user = || {
        *next_user += 1;
        presence(*next_user)
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
        Workload::Roles => return roles_spec(i, &mut user, rng),
    };
    let query = Query::parse(&query)?;
    Ok(TicketSpec::new(
        query,
        counts,
        props,
        None,
        vec![user()],
        128,
    )?)
}

/// A `roles` ticket: a solo or a party with valid roles, its region and skill.
fn roles_spec(
    _i: usize,
    user: &mut impl FnMut() -> Presence,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<TicketSpec> {
    const PER_TEAM: [(&str, usize); 3] = [("tank", 1), ("healer", 1), ("dps", 3)];
    let size = match rng.u32(0..100) {
        0..60 => 1,
        60..85 => 2,
        _ => 3,
    };
    let mut held = [0usize; 3];
    let mut roles = Vec::with_capacity(size);
    while roles.len() < size {
        let r = match rng.u32(0..100) {
            0..20 => 0,
            20..40 => 1,
            _ => 2,
        };
        if held[r] < PER_TEAM[r].1 {
            held[r] += 1;
            roles.push(PER_TEAM[r].0);
        }
    }
    let region = REGIONS[rng.usize(..REGIONS.len())];
    let mut props = Properties::default();
    props.strings.insert("region".into(), region.into());
    props.strings.insert("role".into(), roles.join(","));
    props
        .numbers
        .insert("skill".into(), f64::from(rng.u32(1..=100)));
    let members: Vec<Presence> = (0..size).map(|_| user()).collect();
    let party = (size > 1).then(PartyId::new_random);
    let options = TicketOptions {
        composition: Some(CompositionRule {
            property: "role".into(),
            counts: PER_TEAM
                .iter()
                .map(|(k, n)| ((*k).to_owned(), *n))
                .collect(),
        }),
        teams: Some(TeamRule {
            count: 2,
            balance: Some("skill".into()),
        }),
        ..TicketOptions::default()
    };
    Ok(TicketSpec::new(
        Query::parse(&format!("+properties.region:{region}"))?,
        Counts {
            min_count: 10,
            max_count: 10,
            count_multiple: 1,
        },
        props,
        party,
        members,
        128,
    )?
    .with_options(options)?)
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if args.cluster {
        return crate::matchmaker_cluster::run(args);
    }
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut pool = Pool::new(PoolConfig {
        max_tickets: 3,
        max_intervals: args.max_intervals,
        mutual: true,
        max_scan: args.max_scan,
    });
    let t0 = Instant::now();
    let fill_start = Instant::now();
    let mut users = 0;
    for i in 0..args.pool {
        // One microsecond apart, so age order is the insertion order.
        let at = t0 + Duration::from_micros(i as u64);
        pool.add(spec(i, &mut users, args.workload, &mut rng)?, at)?;
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
    let players_matched: usize = groups.iter().map(|g| g.entries.len()).sum();
    let matched_share = players_matched as f64 / users.max(1) as f64;
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
                "players": users,
                "players_matched": players_matched,
                "matched_share": matched_share,
                "left_in_pool": pool.len(),
                "peak_rss_mib": peak,
            })
        );
    } else {
        println!(
            "matchmaker {workload}: pool {} | fill {:.1} ms | pass {:.1} ms | {} groups | {} tickets matched | {:.1}% of {} players matched | {} left | peak RSS {:.1} MiB",
            args.pool,
            fill.as_secs_f64() * 1000.0,
            pass.as_secs_f64() * 1000.0,
            groups.len(),
            tickets_matched,
            matched_share * 100.0,
            users,
            pool.len(),
            peak
        );
    }
    Ok(())
}
