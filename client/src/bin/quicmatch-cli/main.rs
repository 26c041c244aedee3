//! `quicmatch-cli`: a line-oriented client for LAN play tests and scripting.
//!
//! It connects and authenticates, then reads one command per line from stdin (arguments
//! split like a shell, so quotes group words) while printing every response and event,
//! as text or, with `--json`, as one JSON object per line with a `"type"` field. When
//! stdin and stdout are a terminal, commands are read at a prompt with line editing and
//! history, and output appears above it. Ids may be shortened to a unique prefix of one
//! seen in this run.
//!
//! Output never holds up the connection: lines go through a bounded queue to a thread
//! that writes stdout, and when stdout is not being read, events that do not fit are
//! dropped (and counted on stderr) while the session carries on. Ctrl-C, SIGTERM, end
//! of input (Ctrl-D at the prompt) and `quit` close the session politely (the others
//! see it leave at once) and exit 0. A lost connection is resumed by the SDK
//! (`reconnecting`, then `reconnected`); when the server no longer has the events the
//! resume needed (`RESUME_GAP`), the CLI starts a new session with the same credentials
//! by itself and says so (`new_session`: the old session's matches, parties and tickets
//! are gone). A lost connection that could be neither resumed nor replaced exits 1.

mod commands;
mod ids;
mod output;
mod prompt;
mod render;
mod storage;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use anyhow::{bail, Context as _};
use clap::Parser;
use quicmatch_client::{
    ClientConfig, CloseCode, Credentials, ErrorCode, Event, MatchId, SessionInfo, Socket, Trust,
};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    commands::{reply_match, run_command},
    ids::{Kind, Seen},
    output::{Output, Sink},
    prompt::{Commands, Restore, Terminal},
    render::{print_event, Out},
};

#[derive(Parser)]
#[command(
    name = "quicmatch-cli",
    version,
    about = "Line-oriented quicmatch client",
    subcommand_negates_reqs = true
)]
struct Args {
    /// Find servers on the LAN instead of connecting (`discover --json`).
    #[command(subcommand)]
    command: Option<Sub>,
    /// Server address, HOST:PORT.
    #[arg(
        long,
        required_unless_present = "discover",
        conflicts_with = "discover"
    )]
    server: Option<String>,
    /// Connect to a server found on the LAN (the one named NAME, or the only one),
    /// pinning the certificate fingerprint it advertises.
    #[arg(long, num_args = 0..=1, value_name = "NAME")]
    discover: Option<Option<String>>,
    /// Device id (10 to 128 bytes); the same id is the same user.
    #[arg(
        long,
        conflicts_with = "custom_id",
        required_unless_present = "custom_id"
    )]
    device_id: Option<String>,
    /// Custom id (6 to 128 bytes) instead of a device id.
    #[arg(long)]
    custom_id: Option<String>,
    /// Display name.
    #[arg(long)]
    username: Option<String>,
    /// The server key.
    #[arg(long, default_value = "defaultkey")]
    server_key: String,
    /// Trust the CA or self-signed certificate in this PEM file (e.g. certs/server.crt).
    #[arg(long, conflicts_with = "pin")]
    ca: Option<PathBuf>,
    /// Trust the certificate with this SHA-256 fingerprint (printed by `quicmatch serve`).
    #[arg(long)]
    pin: Option<String>,
    /// Name to check in the certificate (default: HOST from --server).
    #[arg(long)]
    server_name: Option<String>,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Join by itself the match that a `matchmaker_matched` event names, printing the
    /// `match` reply as `join-token`/`join` would.
    #[arg(long)]
    auto_join: bool,
}

/// What the CLI can do besides connecting.
#[derive(clap::Subcommand)]
enum Sub {
    /// List the quicmatch servers that advertise themselves on the LAN.
    Discover {
        /// Print one JSON object per server.
        #[arg(long)]
        json: bool,
        /// Seconds to listen for answers.
        #[arg(long, default_value_t = 3.0)]
        wait: f64,
    },
}

fn discovered_json(s: &quicmatch_client::DiscoveredServer) -> serde_json::Value {
    json!({
        "type": "server",
        "name": s.name,
        "version": s.version,
        "fingerprint": s.fingerprint,
        "addresses": s.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

fn discovered_text(s: &quicmatch_client::DiscoveredServer) -> String {
    let addrs: Vec<String> = s.addresses.iter().map(ToString::to_string).collect();
    format!(
        "{} at {} (version {}), certificate fingerprint {}",
        s.name,
        addrs.join(", "),
        s.version,
        s.fingerprint
    )
}

/// `quicmatch-cli discover`: every server that answers within `wait`.
async fn discover_command(json_out: bool, wait: f64) -> anyhow::Result<()> {
    let wait = Duration::try_from_secs_f64(wait.clamp(0.1, 60.0)).unwrap_or(Duration::from_secs(3));
    let found = quicmatch_client::discover(wait).await?;
    for s in &found {
        if json_out {
            println!("{}", discovered_json(s));
        } else {
            println!("{}", discovered_text(s));
        }
    }
    if found.is_empty() && !json_out {
        println!("no quicmatch server answered on the LAN within {wait:?}");
    }
    Ok(())
}

/// `--discover [NAME]`: the server to connect to, with its pinned fingerprint.
async fn discovered_server(
    name: Option<&str>,
) -> anyhow::Result<quicmatch_client::DiscoveredServer> {
    let found = quicmatch_client::discover(Duration::from_secs(3)).await?;
    let mut matching: Vec<_> = found
        .into_iter()
        .filter(|s| name.is_none_or(|n| s.name == n))
        .collect();
    match (matching.len(), name) {
        (1, _) => Ok(matching.remove(0)),
        (0, Some(n)) => {
            bail!("no server named {n:?} answered on the LAN (try `quicmatch-cli discover`)")
        }
        (0, None) => {
            bail!("no quicmatch server answered on the LAN; is one running with advertising on?")
        }
        (_, _) => bail!(
            "several servers answered; name one with --discover NAME: {}",
            matching
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

async fn resolve(server: &str) -> anyhow::Result<(SocketAddr, String)> {
    let (host, _) = server
        .rsplit_once(':')
        .with_context(|| format!("--server {server}: expected HOST:PORT"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addr = tokio::net::lookup_host(server)
        .await
        .with_context(|| format!("resolving {server}"))?
        .next()
        .with_context(|| format!("{server} resolved to no address"))?;
    Ok((addr, host))
}

/// Set once the CLI is closing, so the disconnect that follows is not reported.
static QUITTING: AtomicBool = AtomicBool::new(false);

/// The session the CLI speaks through. Replaced when a resume fails with `RESUME_GAP`
/// and the CLI starts a new session; commands and the final close use the newest.
#[derive(Clone)]
struct Current(Arc<Mutex<Arc<Socket>>>);

impl Current {
    fn new(socket: Arc<Socket>) -> Self {
        Self(Arc::new(Mutex::new(socket)))
    }

    fn get(&self) -> Arc<Socket> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, socket: Arc<Socket>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = socket;
    }
}

/// What the event loop needs.
#[derive(Clone)]
struct Events {
    socket: Current,
    /// How the first session was made, for a new one after `RESUME_GAP`.
    config: ClientConfig,
    output: Output,
    seen: Seen,
    json: bool,
    auto_join: bool,
}

/// The `session` line printed once connected.
fn session_json(s: &SessionInfo) -> serde_json::Value {
    json!({
        "type": "session",
        "user_id": s.user_id.to_string(),
        "session_id": s.session_id.to_string(),
        "username": s.username,
        "token_expires_at": s.token_expires_at,
    })
}

/// After `RESUME_GAP` (the server no longer has the events the resume needed, and has
/// ended the old session): connects afresh with the original credentials and prints a
/// `new_session` line. On failure, returns why, for the `disconnected` line.
async fn new_session(
    p: &Events,
    out: &mut Out,
    old: &Socket,
    reason: &str,
) -> Result<Arc<Socket>, String> {
    let fresh = match Socket::connect(p.config.clone()).await {
        Ok(socket) => Arc::new(socket),
        Err(e) => return Err(format!("{reason}; starting a new session failed: {e}")),
    };
    let (was, s) = (old.session(), fresh.session());
    p.seen.add(Kind::Session, s.session_id.0);
    let mut value = session_json(s);
    value["type"] = json!("new_session");
    value["code"] = json!(CloseCode::RESUME_GAP.to_string());
    value["reason"] = json!(reason);
    value["previous_session_id"] = json!(was.session_id.to_string());
    out.emit(
        value,
        format!(
            "session {} could not be resumed ({}: {reason}); started a new session as {} \
             (session {}): the old one's matches, parties and tickets are gone",
            was.session_id,
            CloseCode::RESUME_GAP,
            s.username,
            s.session_id
        ),
    );
    p.socket.set(fresh.clone());
    Ok(fresh)
}

/// Prints events as they come, never waiting for stdout, so the socket is always read.
/// After `RESUME_GAP` it carries on with a new session; returns after any other
/// [`Event::Disconnected`].
async fn print_events(p: Events) {
    let mut out = Out::new(p.json);
    let mut socket = p.socket.get();
    while let Some(mut event) = socket.next_event().await {
        let last = matches!(event, Event::Disconnected { .. });
        if last && QUITTING.load(Ordering::SeqCst) {
            return;
        }
        if let Event::Disconnected {
            code: Some(CloseCode::RESUME_GAP),
            reason,
        } = &mut event
        {
            match new_session(&p, &mut out, &socket, reason).await {
                Ok(fresh) => {
                    socket = fresh;
                    for line in out.take() {
                        p.output.send_patiently(line).await;
                    }
                    continue;
                }
                Err(why) => *reason = why,
            }
        }
        p.seen.event(&event);
        print_event(&mut out, &event);
        for line in out.take() {
            if last {
                p.output.send_patiently(line).await;
            } else {
                p.output.offer(line);
            }
        }
        if last {
            return;
        }
        let matched = match event {
            Event::MatchmakerMatched(m) => Some(m),
            Event::MatchmakerMatchedTeams(t) => Some(t.matched),
            _ => None,
        };
        if let Some(m) = matched {
            if p.auto_join {
                // On a task of its own: events keep flowing while it waits for the reply.
                tokio::spawn(auto_join(p.clone(), m.match_id, m.token));
            }
        }
    }
}

/// `--auto-join`: joins what the matchmaker found and prints the reply like a command's.
async fn auto_join(p: Events, match_id: Option<MatchId>, token: Option<String>) {
    let socket = p.socket.get();
    let joined = match (match_id, token) {
        (Some(id), _) => socket.join_match(id).await,
        (None, Some(token)) => socket.join_match_token(&token).await,
        (None, None) => return,
    };
    if QUITTING.load(Ordering::SeqCst) {
        return;
    }
    let mut out = Out::new(p.json);
    match joined {
        Ok(m) => reply_match(&p.seen, &mut out, &m),
        Err(e) => out.request_error(&e),
    }
    p.output.send(&mut out).await;
}

/// Runs commands until the input ends or `quit`.
async fn read_commands(
    socket: &Current,
    seen: &Seen,
    output: &Output,
    out: &mut Out,
    mut commands: Commands,
) -> std::io::Result<()> {
    while let Some(line) = commands.next_line().await? {
        let more = match shlex::split(&line) {
            None => {
                out.error(ErrorCode::BAD_INPUT, "unbalanced quotes");
                true
            }
            Some(words) => run_command(&socket.get(), seen, out, &words)
                .await
                .unwrap_or_else(|e| {
                    out.request_error(&e);
                    true
                }),
        };
        output.send(out).await;
        commands.done(more, output).await;
        if !more {
            break;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Parsed (and `--help` printed) before the runtime starts: from here on, stdout is
    // only ever written by the output thread (and, at a terminal, the prompt).
    let args = Args::parse();
    tokio::runtime::Runtime::new()
        .context("starting the runtime")?
        .block_on(run(args))
}

/// Exits with `code`, first putting the terminal back if the prompt changed it.
fn exit(code: i32, terminal: Option<&Restore>) -> ! {
    if let Some(terminal) = terminal {
        terminal.restore();
    }
    std::process::exit(code);
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Sub::Discover { json, wait }) = args.command {
        return discover_command(json, wait).await;
    }
    let (terminal, sink) = match Terminal::open() {
        Some((terminal, printer)) => (Some(terminal), Sink::Printer(printer)),
        None => (None, Sink::Stdout),
    };
    let output = Output::start(sink).context("starting the output threads")?;
    let mut out = Out::new(args.json);
    let (addr, host, trust) = match (&args.discover, &args.server) {
        (Some(name), _) => {
            let server = discovered_server(name.as_deref()).await?;
            let addr = *server
                .addresses
                .first()
                .with_context(|| format!("{} advertised no address", server.name))?;
            // Shown so the user can compare it with the server's banner.
            out.emit(
                discovered_json(&server),
                format!(
                    "found {}; pinning its certificate",
                    discovered_text(&server)
                ),
            );
            (
                addr,
                addr.ip().to_string(),
                Trust::pin(&server.fingerprint)?,
            )
        }
        (None, Some(server)) => {
            let (addr, host) = resolve(server).await?;
            let trust = match (&args.ca, &args.pin) {
                (Some(ca), _) => Trust::CaFile(ca.clone()),
                (None, Some(pin)) => Trust::pin(pin)?,
                (None, None) => Trust::PlatformRoots,
            };
            (addr, host, trust)
        }
        (None, None) => bail!("--server HOST:PORT or --discover [NAME] is required"),
    };
    let credentials = match (&args.device_id, &args.custom_id) {
        (Some(id), _) => Credentials::Device { id: id.clone() },
        (None, Some(id)) => Credentials::Custom { id: id.clone() },
        (None, None) => bail!("--device-id or --custom-id is required"),
    };
    let mut config = ClientConfig::new(addr, trust, credentials).server_key(args.server_key);
    config.username = args.username;
    config.server_name = Some(args.server_name.unwrap_or(host));
    let socket = match Socket::connect(config.clone()).await {
        Ok(socket) => Arc::new(socket),
        Err(e) => {
            let (code, reason) = e
                .close_code()
                .map(|(c, r)| (Some(c.to_string()), r))
                .unwrap_or((None, e.to_string()));
            out.emit(
                json!({"type": "disconnected", "code": code, "reason": reason}),
                format!("could not connect: {e}"),
            );
            output.send(&mut out).await;
            output.flush().await;
            exit(1, None);
        }
    };
    let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let seen = Seen::default();
    let s = socket.session();
    seen.add(Kind::Session, s.session_id.0);
    out.emit(
        session_json(s),
        format!(
            "connected as {} (user {}, session {})",
            s.username, s.user_id, s.session_id
        ),
    );
    output.send(&mut out).await;
    let (commands, restore) = match terminal {
        Some(terminal) => {
            // The session line shows before the first prompt.
            output.flush().await;
            let (commands, restore) = terminal.start().context("starting the prompt")?;
            (commands, Some(restore))
        }
        None => (Commands::stdin(), None),
    };
    let restore = restore.as_ref();
    let socket = Current::new(socket);
    let mut events = tokio::spawn(print_events(Events {
        socket: socket.clone(),
        config,
        output: output.clone(),
        seen: seen.clone(),
        json: args.json,
        auto_join: args.auto_join,
    }));
    let code = tokio::select! {
        read = read_commands(&socket, &seen, &output, &mut out, commands) => match read {
            Ok(()) => 0,
            Err(e) => {
                output.shared.note(format!("quicmatch-cli: reading stdin: {e}"));
                1
            }
        },
        _ = sigint.recv() => 0,
        _ = sigterm.recv() => 0,
        _ = &mut events => {
            // Disconnected, and printed: nothing to close.
            output.flush().await;
            exit(1, restore);
        }
    };
    // A polite close: the server ends the session at once, so the others see it leave.
    // A second Ctrl-C or SIGTERM stops waiting for it.
    QUITTING.store(true, Ordering::SeqCst);
    tokio::select! {
        () = async {
            socket.get().close().await;
            events.abort();
            output.flush().await;
        } => {}
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    // Exit here rather than return: the runtime would wait for the blocked stdin read.
    exit(code, restore);
}
