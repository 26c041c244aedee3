//! `quicmatch-bench`: measures quicmatch in a release build.
//!
//! - `matchmaker`: fills a ticket pool in process and times one grouping pass.
//!
//! Every run prints what it measured and, with `--json`, one JSON object per line.

mod matchmaker;
mod proc_stats;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Matchmaker(args) => matchmaker::run(&args),
    }
}
