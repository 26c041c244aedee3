//! The `quicmatch` binary: parse flags and config, set up logging, bind, serve until
//! Ctrl-C (a second Ctrl-C exits at once); `quicmatch storage export|import FILE` backs
//! up and restores storage objects.
//!
//! The config is the defaults, then the file (`--config`), then `QUICMATCH_*`
//! environment variables (see [`quicmatch::config::env`]), then flags; the result is
//! logged at startup with its secrets redacted.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use quicmatch::{Config, Server};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "quicmatch",
    version,
    about = "Realtime multiplayer and matchmaking server over QUIC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Back up or restore storage objects as JSON lines (with the server stopped:
    /// the store's file is opened by one process at a time).
    #[command(subcommand)]
    Storage(StorageCommand),
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Write every object to FILE (`-`: stdout), one JSON object a line after a
    /// header line.
    Export(StorageArgs),
    /// Put back the objects of an export read from FILE (`-`: stdin); objects that
    /// exist are replaced, versions and times are kept.
    Import(StorageArgs),
}

#[derive(clap::Args)]
struct StorageArgs {
    /// The export file.
    file: PathBuf,
    /// TOML config file naming `data_dir` (QUICMATCH_* variables and --data-dir
    /// override it).
    #[arg(long, env = "QUICMATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the store [default: data].
    #[arg(long, env = "QUICMATCH_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file; QUICMATCH_* variables and flags override it. Paths in it are
    /// relative to the file's directory.
    #[arg(long, env = "QUICMATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: `text` on stdout (beside the banner), or `json`: one JSON object a
    /// line on stderr, so stdout holds only the banner.
    #[arg(long, env = "QUICMATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// UDP address to listen on [default: [::]:7350, IPv6 and IPv4].
    #[arg(long, env = "QUICMATCH_LISTEN")]
    listen: Option<SocketAddr>,
    /// PEM certificate chain (with --key) instead of the generated development one.
    #[arg(long, env = "QUICMATCH_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, env = "QUICMATCH_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Directory for the generated certificate and secret [default: certs].
    #[arg(long, env = "QUICMATCH_CERTS_DIR")]
    certs_dir: Option<PathBuf>,
    /// Directory of the store of storage objects [default: data].
    #[arg(long, env = "QUICMATCH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The key clients must present [default: defaultkey].
    #[arg(long, env = "QUICMATCH_SERVER_KEY")]
    server_key: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics, with /healthz and /readyz
    /// (off by default).
    #[arg(long, env = "QUICMATCH_METRICS")]
    metrics: Option<SocketAddr>,
    /// Time between matchmaker passes, e.g. `1s`, `500ms` [default: 2s].
    #[arg(long, env = "QUICMATCH_MATCHMAKER_INTERVAL", value_parser = humantime::parse_duration)]
    matchmaker_interval: Option<std::time::Duration>,
    /// Don't advertise the server on the LAN (mDNS); it never advertises on loopback.
    #[arg(long)]
    no_advertise: bool,
    /// The name advertised on the LAN [default: the host's name].
    #[arg(long, env = "QUICMATCH_NAME")]
    name: Option<String>,
    /// The QUIC transport: `quinn` or `proto` (one quinn-proto I/O loop) [default:
    /// quinn].
    #[arg(long, env = "QUICMATCH_TRANSPORT")]
    transport: Option<quicmatch::config::Transport>,
    /// I/O loops of the `proto` transport, one thread and socket each [default: 1].
    #[arg(long, env = "QUICMATCH_WORKERS")]
    workers: Option<usize>,
    /// Join a cluster of nodes on this NATS server (`nats://HOST:4222`; several:
    /// comma-separated) [default: none, the node runs alone].
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// This node's name in the cluster [default: the host's name].
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
}

/// How log lines are written.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        // Every key from QUICMATCH_<KEY> / QUICMATCH_<SECTION>__<KEY>, then the flags.
        let mut config = config.with_env()?;
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config.cert = Some(cert.clone());
            config.key = Some(key.clone());
        }
        if let Some(v) = &self.certs_dir {
            config.certs_dir = v.clone();
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &self.server_key {
            config.server_key = v.clone();
        }
        if let Some(v) = self.metrics {
            config.metrics = Some(v);
        }
        if let Some(v) = self.transport {
            config.transport = v;
        }
        if let Some(v) = self.workers {
            config.workers = v;
        }
        if let Some(v) = &self.cluster {
            config.cluster.url = Some(v.clone());
        }
        if let Some(v) = &self.node_name {
            config.cluster.node_name = Some(v.clone());
        }
        if self.no_advertise {
            config.advertise = false;
        }
        if let Some(v) = &self.name {
            config.name = Some(v.clone());
        }
        if let Some(v) = self.matchmaker_interval {
            config.matchmaker.interval = v;
        }
        Ok(config)
    }
}

impl StorageArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let mut config = config.with_env()?;
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs `storage export` or `storage import`; the counts go to stderr, so an export to
/// stdout stays pure JSON lines.
fn storage(command: StorageCommand) -> anyhow::Result<()> {
    use std::io::{BufReader, BufWriter, Write as _};
    let (args, export) = match &command {
        StorageCommand::Export(args) => (args, true),
        StorageCommand::Import(args) => (args, false),
    };
    let config = args.config()?;
    let storage = quicmatch::storage::Storage::open(&config).context("opening the store")?;
    let stdio = args.file.as_os_str() == "-";
    let result = if export {
        let mut out: Box<dyn std::io::Write> = if stdio {
            Box::new(std::io::stdout().lock())
        } else {
            let file = std::fs::File::create(&args.file)
                .with_context(|| format!("creating {}", args.file.display()))?;
            Box::new(BufWriter::new(file))
        };
        let n = storage.export(&mut out);
        out.flush().context("writing the export")?;
        n.map(|n| format!("exported {n} objects from {}", storage.path().display()))
    } else {
        let mut input: Box<dyn std::io::BufRead> = if stdio {
            Box::new(std::io::stdin().lock())
        } else {
            let file = std::fs::File::open(&args.file)
                .with_context(|| format!("opening {}", args.file.display()))?;
            Box::new(BufReader::new(file))
        };
        storage
            .import(&mut input)
            .map(|n| format!("imported {n} objects into {}", storage.path().display()))
    };
    storage.close();
    eprintln!(
        "{}",
        result.context(if export { "export" } else { "import" })?
    );
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn shutdown_signal() {
    signal().await;
    tracing::info!("shutting down gracefully (signal again to exit at once)");
    tokio::spawn(async {
        signal().await;
        std::process::exit(130);
    });
}

/// How the banner tells another machine to connect: by discovery when the server
/// advertises itself on the LAN, and always by address.
struct Reach {
    /// Whether the server advertises itself (mDNS): `advertise` on, and not a loopback
    /// bind (the server never advertises there).
    advertised: bool,
    /// The configured name it advertises (else the host's name, which `--discover`
    /// without a name finds as well when it is the only server).
    name: Option<String>,
}

impl Reach {
    fn of(config: &Config) -> Self {
        Self {
            advertised: config.advertise && !config.listen.ip().is_loopback(),
            name: config.name.clone(),
        }
    }
}

/// The startup banner: where the server listens, its fingerprint, and commands that
/// connect from another machine (by discovery, no address or fingerprint to type, when
/// the server advertises itself; and by address, pinning the fingerprint).
fn banner(server: &Server, how: &Reach) -> String {
    let addr = server.local_addr();
    let fingerprint = server.fingerprint();
    let reach: Vec<String> = quicmatch::reachable_addresses(addr)
        .iter()
        .map(SocketAddr::to_string)
        .collect();
    let first = reach.first().cloned().unwrap_or_else(|| addr.to_string());
    let who = "--device-id my-device-0001 --username me";
    let by_address = format!("quicmatch-cli --server {first} {who} --pin {fingerprint}");
    let connect = if how.advertised {
        let discover = match &how.name {
            // Quoted for a shell when the name has spaces.
            Some(name) if name.contains(char::is_whitespace) => format!("--discover '{name}'"),
            Some(name) => format!("--discover {name}"),
            None => "--discover".to_owned(),
        };
        format!(
            "  from another machine on this LAN (it finds this server and pins its fingerprint):\n    quicmatch-cli {discover} {who}\n  or by address:\n    {by_address}"
        )
    } else {
        format!("  from another machine:\n    {by_address}")
    };
    format!(
        "quicmatch ready on {addr} (UDP)\n  certificate fingerprint (SHA-256): {fingerprint}\n  reachable at: {}\n{connect}",
        reach.join(", ")
    )
}

/// Logs as text on stdout (beside the banner), or as JSON lines on stderr (so stdout
/// holds only the banner, and a collector reading stderr gets only JSON).
fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,quinn=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        LogFormat::Json => logs
            .json()
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format);
            let config = args.config()?;
            tracing::info!(config = %config.to_redacted_json(), "effective config");
            let reach = Reach::of(&config);
            let server = Server::builder(config)
                .bind()
                .context("starting the server")?;
            tracing::info!(
                addr = %server.local_addr(),
                fingerprint = %server.fingerprint(),
                "quicmatch ready; LAN clients can pin this certificate with --pin <fingerprint>"
            );
            // Whatever the log level and format: what a person needs to connect, on
            // stdout (JSON logs are on stderr).
            println!("{}", banner(&server, &reach));
            server.serve(shutdown_signal()).await;
        }
        Command::Storage(command) => {
            // On stderr: an export to stdout is the data.
            let filter = EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,quinn=warn"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .init();
            tokio::task::spawn_blocking(move || storage(command)).await??;
        }
    }
    Ok(())
}
