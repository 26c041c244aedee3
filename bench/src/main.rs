//! `quicmatch-bench`: measures quicmatch in a release build.
//!
//! - `matchmaker`: fills a ticket pool in process and times one grouping pass.
//! - `relay`: match data through a real quicmatch server and through a raw-UDP
//!   baseline relay (and, with `--with-quinn`, a plain-quinn relay), same workload,
//!   same measurements (`--compare`, `--sweep`); server and load generator on separate
//!   cores; optionally through an impairment proxy (`--loss`, `--delay`, `--jitter`),
//!   unreliable or `--reliable`.
//! - `connections`: holds many idle authenticated connections; handshakes/s and
//!   server memory per connection.
//! - `soak`: churn (connect, play, matchmake, party, leave, disconnect) against a
//!   server, then checks that every count returned to zero and memory to its band.
//! - `authoritative`: server-run matches ticking in an in-process server, with or
//!   without SDK clients; tick lateness and engine CPU per match-tick.
//! - `list`: match listings over many server-run matches, timed in process.
//! - `storage`: SDK clients writing storage objects into an in-process server; writes/s,
//!   latency to a durable acknowledgement, commits from the server's histogram.
//! - `snapshots`: server-run matches recorded for a restart every snapshot interval;
//!   CPU of the recording threads per snapshot and as a share of a core, bytes written.
//! - `udp-relay`, `quinn-relay`, `proto-relay`: the baseline relays themselves
//!   (started by `relay`).
//!
//! Every run prints what it measured and, with `--json`, one JSON object per line.

mod authoritative;
mod chart;
mod connections;
mod impair;
#[cfg(test)]
mod impair_tests;
mod listing;
mod matchmaker;
mod matchmaker_cluster;
mod measure;
mod pin;
mod proc_stats;
mod proto_relay;
mod quinn_relay;
mod quota;
mod relay;
mod server_proc;
mod snapshots;
mod soak;
mod storage;
mod udp_relay;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "quicmatch-bench", version, about = "quicmatch benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time one matchmaker pass over a pool filled in process.
    Matchmaker(matchmaker::Args),
    /// Relay load: quicmatch against the raw-UDP baseline.
    Relay(Box<relay::Args>),
    /// Idle connection capacity of a quicmatch server.
    Connections(connections::Args),
    /// Churn against a server, then check every count returned to zero.
    Soak(soak::Args),
    /// Storage writes from many clients: writes/s and latency to a durable ack.
    Storage(storage::Args),
    /// Restart snapshots of server-run matches: recording CPU per snapshot, bytes written.
    Snapshots(snapshots::Args),
    /// Server-run matches ticking in process: tick lateness and engine CPU.
    Authoritative(authoritative::Args),
    /// Time match listings over many server-run matches (in-process call).
    List(listing::Args),
    /// Run the raw-UDP baseline relay (used by `relay`).
    UdpRelay(udp_relay::Args),
    /// Run the plain-quinn baseline relay (used by `relay --with-quinn`).
    QuinnRelay(quinn_relay::Args),
    /// Run the quinn-proto baseline relay (used by `relay --with-proto`).
    ProtoRelay(quinn_relay::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Matchmaker(args) => matchmaker::run(&args),
        Command::Relay(args) => relay::run(&args),
        Command::Connections(args) => connections::run(&args),
        Command::Soak(args) => soak::run(&args),
        Command::Storage(args) => storage::run(&args),
        Command::Snapshots(args) => snapshots::run(&args),
        Command::Authoritative(args) => authoritative::run(&args),
        Command::List(args) => listing::run(&args),
        Command::UdpRelay(args) => udp_relay::run(&args),
        Command::QuinnRelay(args) => quinn_relay::run(&args),
        Command::ProtoRelay(args) => proto_relay::run(&args),
    }
}
