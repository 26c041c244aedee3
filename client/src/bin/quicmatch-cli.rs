//! `quicmatch-cli`: a line-oriented client for LAN play tests and scripting.
//!
//! It connects and authenticates, then reads one command per line from stdin (arguments
//! split like a shell, so quotes group words) while printing every response and event,
//! as text or, with `--json`, as one JSON object per line with a `"type"` field.
//!
//! Output never holds up the connection: lines go through a bounded queue to a thread
//! that writes stdout, and when stdout is not being read, events that do not fit are
//! dropped (and counted on stderr) while the session carries on. Ctrl-C, SIGTERM, end
//! of input and `quit` close the session politely (the others see it leave at once)
//! and exit 0; a lost connection that could not be resumed exits 1.

use std::{
    collections::BTreeMap,
    future::Future,
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::Parser;
use quicmatch_client::{
    AddMatchmaker, ClientConfig, Credentials, ErrorCode, Event, ListMatches, Match, MatchId,
    MatchListing, MatchOptions, MatchmakerUser, PartyId, PartyInfo, Presence, RequestError,
    SessionId, Socket, TicketId, Trust,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    signal::unix::{signal, SignalKind},
    sync::{
        mpsc::{self, error::TrySendError},
        oneshot,
    },
    time::timeout,
};

#[derive(Parser)]
#[command(
    name = "quicmatch-cli",
    version,
    about = "Line-oriented quicmatch client"
)]
struct Args {
    /// Server address, HOST:PORT.
    #[arg(long)]
    server: String,
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
}

/// Renders responses and events in the chosen format, collecting the lines for
/// [`Output`].
struct Out {
    json: bool,
    lines: Vec<String>,
}

impl Out {
    fn new(json: bool) -> Self {
        Self {
            json,
            lines: Vec::new(),
        }
    }

    fn emit(&mut self, value: Value, text: String) {
        self.lines
            .push(if self.json { value.to_string() } else { text });
    }

    /// A line for the text output only.
    fn text(&mut self, text: &str) {
        if !self.json {
            self.lines.push(text.to_owned());
        }
    }

    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }

    fn error(&mut self, code: ErrorCode, message: &str) {
        self.emit(
            json!({"type": "error", "code": code.to_string(), "code_number": code.0, "message": message}),
            format!("error {code}: {message}"),
        );
    }

    fn request_error(&mut self, e: &RequestError) {
        match e {
            RequestError::Server { code, message } => self.error(*code, message),
            other => self.error(ErrorCode::RUNTIME_EXCEPTION, &other.to_string()),
        }
    }
}

fn presence_json(p: &Presence) -> Value {
    json!({"user_id": p.user_id.to_string(), "session_id": p.session_id.to_string(), "username": p.username})
}

fn presences_json(ps: &[Presence]) -> Value {
    Value::Array(ps.iter().map(presence_json).collect())
}

fn mm_user_json(u: &MatchmakerUser) -> Value {
    json!({
        "presence": presence_json(&u.presence),
        "party_id": u.party_id.map(|p| p.to_string()),
        "string_properties": u.string_properties,
        "numeric_properties": u.numeric_properties,
    })
}

/// Puts a payload into `value` as `data` (UTF-8 text) or `data_base64`, and returns it
/// as text for the plain output.
fn put_data(value: &mut Value, data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) => {
            value["data"] = json!(text);
            text.to_owned()
        }
        Err(_) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(data);
            value["data_base64"] = json!(b64);
            format!("base64:{b64}")
        }
    }
}

fn party_json(p: &PartyInfo) -> Value {
    json!({
        "type": "party",
        "party_id": p.party_id.to_string(),
        "open": p.open,
        "max_size": p.max_size,
        "label": p.label,
        "leader": presence_json(&p.leader),
        "presences": presences_json(&p.presences),
        "self": presence_json(&p.self_presence),
    })
}

fn party_text(p: &PartyInfo) -> String {
    format!(
        "party {} ({}, max {}{}) led by {}: {}",
        p.party_id,
        if p.open { "open" } else { "closed" },
        p.max_size,
        label_text(p.label.as_deref()),
        p.leader.username,
        p.presences
            .iter()
            .map(presence_text)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `, label L` when there is one (for the text form of party output).
fn label_text(label: Option<&str>) -> String {
    label.map(|l| format!(", label {l:?}")).unwrap_or_default()
}

fn names(ps: &[Presence]) -> String {
    ps.iter().map(presence_text).collect::<Vec<_>>().join(", ")
}

fn presence_text(p: &Presence) -> String {
    format!("{} (session {})", p.username, p.session_id)
}

fn print_match(out: &mut Out, m: &Match) {
    let names: Vec<_> = m.presences.iter().map(presence_text).collect();
    out.emit(
        json!({
            "type": "match",
            "match_id": m.match_id.to_string(),
            "size": m.size,
            "presences": presences_json(&m.presences),
            "self": presence_json(&m.self_presence),
        }),
        format!("match {} size {}: {}", m.match_id, m.size, names.join(", ")),
    );
}

fn print_event(out: &mut Out, event: &Event) {
    match event {
        Event::MatchPresence(p) => out.emit(
            json!({
                "type": "match_presence",
                "match_id": p.match_id.to_string(),
                "joins": presences_json(&p.joins),
                "leaves": presences_json(&p.leaves),
            }),
            format!(
                "presence {}: joined [{}] left [{}]",
                p.match_id,
                p.joins
                    .iter()
                    .map(presence_text)
                    .collect::<Vec<_>>()
                    .join(", "),
                p.leaves
                    .iter()
                    .map(presence_text)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Event::MatchData(d) => {
            let from_server = d.from_server();
            let mut value = json!({
                "type": "match_data",
                "match_id": d.match_id.to_string(),
                "sender": presence_json(&d.sender),
                "from_server": from_server,
                "op_code": d.op_code,
                "reliable": d.reliable,
                "seq": d.seq,
            });
            let shown = put_data(&mut value, &d.data);
            out.emit(
                value,
                format!(
                    "data {} from {} op {} seq {}{}: {shown}",
                    d.match_id,
                    if from_server {
                        "server"
                    } else {
                        d.sender.username.as_str()
                    },
                    d.op_code,
                    d.seq,
                    if d.reliable { " (reliable)" } else { "" }
                ),
            );
        }
        Event::MatchmakerMatched(m) => {
            let mut value = json!({
                "type": "matchmaker_matched",
                "ticket": m.ticket.to_string(),
                "users": m.users.iter().map(mm_user_json).collect::<Vec<_>>(),
                "self": mm_user_json(&m.self_user),
            });
            let target = match (&m.token, m.match_id) {
                (_, Some(id)) => {
                    value["match_id"] = json!(id.to_string());
                    format!("join {id}")
                }
                (Some(token), None) => {
                    value["token"] = json!(token);
                    format!("join-token {token}")
                }
                (None, None) => String::new(),
            };
            let names: Vec<_> = m.users.iter().map(|u| u.presence.username.as_str()).collect();
            out.emit(
                value,
                format!(
                    "matched (ticket {}) with [{}]; to play: {target}",
                    m.ticket,
                    names.join(", ")
                ),
            );
        }
        Event::MatchmakerTicketCancelled { ticket, reason } => out.emit(
            json!({"type": "matchmaker_ticket_cancelled", "ticket": ticket.to_string(), "reason": reason}),
            format!("ticket {ticket} cancelled: {reason}"),
        ),
        Event::Party(p) => out.emit(party_json(p), party_text(p)),
        Event::PartyPresence {
            party_id,
            joins,
            leaves,
        } => out.emit(
            json!({"type": "party_presence", "party_id": party_id.to_string(), "joins": presences_json(joins), "leaves": presences_json(leaves)}),
            format!("party {party_id}: joined [{}] left [{}]", names(joins), names(leaves)),
        ),
        Event::PartyLeader { party_id, presence } => out.emit(
            json!({"type": "party_leader", "party_id": party_id.to_string(), "presence": presence_json(presence)}),
            format!("party {party_id}: {} leads", presence_text(presence)),
        ),
        Event::PartyJoinRequest {
            party_id,
            presences,
        } => out.emit(
            json!({"type": "party_join_request", "party_id": party_id.to_string(), "presences": presences_json(presences)}),
            format!("party {party_id}: join request from {}", names(presences)),
        ),
        Event::PartyClose { party_id, reason } => out.emit(
            json!({"type": "party_close", "party_id": party_id.to_string(), "reason": reason}),
            format!("party {party_id} closed for you: {reason}"),
        ),
        Event::PartyData {
            party_id,
            sender,
            op_code,
            data,
        } => {
            let mut value = json!({"type": "party_data", "party_id": party_id.to_string(), "sender": presence_json(sender), "op_code": op_code});
            let shown = put_data(&mut value, data);
            out.emit(
                value,
                format!("party {party_id} data from {} op {op_code}: {shown}", sender.username),
            );
        }
        Event::PartyMatchmakerTicket { party_id, ticket } => out.emit(
            json!({"type": "party_matchmaker_ticket", "party_id": party_id.to_string(), "ticket": ticket.to_string()}),
            format!("party {party_id} matchmaking with ticket {ticket}"),
        ),
        Event::PartyUpdate {
            party_id,
            open,
            label,
        } => out.emit(
            json!({"type": "party_update", "party_id": party_id.to_string(), "open": open, "label": label}),
            format!(
                "party {party_id} is now {}{}",
                if *open { "open" } else { "closed" },
                label_text(label.as_deref())
            ),
        ),
        Event::MatchEnded { match_id, reason } => out.emit(
            json!({"type": "match_ended", "match_id": match_id.to_string(), "reason": reason}),
            format!("match {match_id} ended: {reason}"),
        ),
        Event::Error { code, message } => out.error(*code, message),
        Event::Disconnected { code, reason } => out.emit(
            json!({"type": "disconnected", "code": code.map(|c| c.to_string()), "reason": reason}),
            format!(
                "disconnected{}: {reason}",
                code.map(|c| format!(" ({c})")).unwrap_or_default()
            ),
        ),
        Event::Reconnecting { code, reason } => out.emit(
            json!({"type": "reconnecting", "code": code.map(|c| c.to_string()), "reason": reason}),
            format!(
                "connection lost{}: {reason}; resuming the session",
                code.map(|c| format!(" ({c})")).unwrap_or_default()
            ),
        ),
        Event::Reconnected { attempts } => out.emit(
            json!({"type": "reconnected", "attempts": attempts}),
            format!("session resumed after {attempts} attempt(s)"),
        ),
        other => out.emit(
            json!({"type": "unknown_event", "debug": format!("{other:?}")}),
            format!("event: {other:?}"),
        ),
    }
}

const HELP: &str = "commands:
  create [NAME] [--label L] [--max-size N] [--private]
                                              create a match (with NAME: join-or-create;
                                              --private: joinable by id, never listed)
  join MATCH_ID [--metadata K=V]...           join a match (metadata for server-run ones)
  list [--authoritative|--relayed] [--query Q] [--label L] [--min N] [--max N] [--limit N]
                                              list joinable matches (10 by default;
                                              Q like +label.mode:ranked)
  rpc NAME [PAYLOAD]                          call a server function
  leave MATCH_ID                              leave a match
  send MATCH_ID OP TEXT [--reliable] [--to SESSION_ID,...]
                                              send match data (unreliable unless --reliable)
  mm-add MIN MAX [--query Q] [--multiple N] [--string K=V]... [--numeric K=V]...
                                              add a matchmaker ticket
  mm-remove TICKET                            cancel a matchmaker ticket
  join-token TOKEN                            join the match a matchmaker token names
  party-create [--closed] [--max-size N] [--label L]
                                              create a party (open, 8 by default)
  party-join ID | party-leave ID | party-close ID
  party-requests ID                           list pending join requests (leader)
  party-accept ID SESSION_ID | party-remove ID SESSION_ID | party-promote ID SESSION_ID
  party-update ID [--open|--closed] [--label L]
                                              change the open flag or the label (leader;
                                              --label \"\" removes it)
  party-send ID OP TEXT                       data to the other members
  party-mm-add ID MIN MAX [--query Q] [--multiple N] [--string K=V]... [--numeric K=V]...
  party-mm-remove ID TICKET
  ping                                        round trip to the server
  sleep MS                                    wait (for scripts)
  help                                        this text
  quit                                        close and exit";

fn parse_match_id(s: &str) -> Result<MatchId, RequestError> {
    s.parse::<MatchId>().map_err(|e| bad_input(e.to_string()))
}

/// Set once the CLI is closing, so the disconnect that follows is not reported.
static QUITTING: AtomicBool = AtomicBool::new(false);

fn parse_party(s: &str) -> Result<PartyId, RequestError> {
    s.parse::<PartyId>().map_err(|e| bad_input(e.to_string()))
}

fn ack(out: &mut Out, command: &str) {
    out.emit(
        json!({"type": "ack", "command": command}),
        format!("{command}: ok"),
    );
}

/// Applies `[--query Q] [--multiple N] [--string K=V]... [--numeric K=V]...`.
fn matchmaker_flags<'a>(
    mut add: AddMatchmaker<'a>,
    flags: &[String],
) -> Result<AddMatchmaker<'a>, RequestError> {
    let mut rest = flags.iter();
    while let Some(flag) = rest.next() {
        let mut value = |name: &str| {
            rest.next()
                .map(String::as_str)
                .ok_or_else(|| bad_input(format!("{name} needs a value")))
        };
        add = match flag.as_str() {
            "--query" => add.query(value("--query")?),
            "--multiple" => add.count_multiple(parse_u32(value("--multiple")?, "--multiple")?),
            "--string" => {
                let (k, v) = key_value(value("--string")?)?;
                add.string_property(k, v)
            }
            "--numeric" => {
                let (k, v) = key_value(value("--numeric")?)?;
                let n: f64 = v
                    .parse()
                    .map_err(|_| bad_input(format!("{v:?} is not a number")))?;
                add.numeric_property(k, n)
            }
            other => return Err(bad_input(format!("unknown flag {other}"))),
        };
    }
    Ok(add)
}

/// Parses `create`'s `[NAME] [--label L] [--max-size N] [--private]`; options only when a
/// flag was given (then the request is `create_match_with`).
fn create_flags(args: &[String]) -> Result<(Option<&str>, Option<MatchOptions>), RequestError> {
    let mut name = None;
    let mut options = MatchOptions::default();
    let mut with_options = false;
    let mut rest = args.iter();
    while let Some(word) = rest.next() {
        let mut value = |flag: &str| {
            rest.next()
                .map(String::as_str)
                .ok_or_else(|| bad_input(format!("create: {flag} needs a value")))
        };
        options = match word.as_str() {
            "--label" => options.label(value("--label")?),
            "--max-size" => options.max_size(parse_u32(value("--max-size")?, "--max-size")?),
            "--private" => options.private(true),
            flag if flag.starts_with("--") => {
                return Err(bad_input(format!("create: unknown flag {flag}")))
            }
            word => {
                if name.replace(word).is_some() {
                    return Err(bad_input(
                        "create: one NAME only; quote it to include spaces",
                    ));
                }
                continue;
            }
        };
        with_options = true;
    }
    Ok((name, with_options.then_some(options)))
}

/// Applies `list`'s `[--authoritative|--relayed] [--query Q] [--label L] [--min N]
/// [--max N] [--limit N]`.
fn list_flags<'a>(
    mut list: ListMatches<'a>,
    flags: &[String],
) -> Result<ListMatches<'a>, RequestError> {
    let mut rest = flags.iter();
    while let Some(flag) = rest.next() {
        let mut value = |name: &str| {
            rest.next()
                .map(String::as_str)
                .ok_or_else(|| bad_input(format!("list: {name} needs a value")))
        };
        list = match flag.as_str() {
            "--authoritative" => list.authoritative(true),
            "--relayed" => list.authoritative(false),
            "--query" => list.query(value("--query")?),
            "--label" => list.label(value("--label")?),
            "--min" => list.min_size(parse_u32(value("--min")?, "--min")?),
            "--max" => list.max_size(parse_u32(value("--max")?, "--max")?),
            "--limit" => list.limit(parse_u32(value("--limit")?, "--limit")?),
            other => return Err(bad_input(format!("list: unknown flag {other}"))),
        };
    }
    Ok(list)
}

fn listing_json(m: &MatchListing) -> Value {
    json!({
        "match_id": m.match_id.to_string(),
        "authoritative": m.authoritative,
        "label": m.label,
        "size": m.size,
        "max_size": m.max_size,
        "tick_rate": m.tick_rate,
        "handler": m.handler,
    })
}

fn print_listing(out: &mut Out, matches: &[MatchListing]) {
    let value = json!({
        "type": "match_list",
        "matches": matches.iter().map(listing_json).collect::<Vec<_>>(),
    });
    let mut lines: Vec<String> = matches
        .iter()
        .map(|m| {
            let kind = if m.authoritative {
                format!("server-run ({} at {} Hz)", m.handler, m.tick_rate)
            } else {
                "relayed".to_owned()
            };
            format!(
                "match {} {kind} size {}/{}{}",
                m.match_id,
                m.size,
                m.max_size,
                m.label
                    .as_deref()
                    .map(|l| format!(" label {l}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if lines.is_empty() {
        lines.push("no matches".to_owned());
    }
    out.emit(value, lines.join("\n"));
}

fn parse_u32(s: &str, what: &str) -> Result<u32, RequestError> {
    s.parse()
        .map_err(|_| bad_input(format!("{what} must be a non-negative integer, got {s:?}")))
}

fn key_value(s: &str) -> Result<(String, String), RequestError> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| bad_input(format!("expected KEY=VALUE, got {s:?}")))
}

fn bad_input(message: impl Into<String>) -> RequestError {
    RequestError::Server {
        code: ErrorCode::BAD_INPUT,
        message: message.into(),
    }
}

/// Runs one command line. `Ok(false)` means quit.
async fn run_command(
    socket: &Socket,
    out: &mut Out,
    words: &[String],
) -> Result<bool, RequestError> {
    let Some((cmd, args)) = words.split_first() else {
        return Ok(true);
    };
    let arg = |i: usize, what: &str| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| bad_input(format!("{cmd}: missing {what}")))
    };
    match cmd.as_str() {
        "create" => {
            let (name, options) = create_flags(args)?;
            let m = match options {
                None => socket.create_match(name).await?,
                Some(options) => socket.create_match_with(name, options).await?,
            };
            print_match(out, &m);
        }
        "join" => {
            let match_id = parse_match_id(arg(0, "MATCH_ID")?)?;
            let mut metadata = BTreeMap::new();
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                match flag.as_str() {
                    "--metadata" => {
                        let kv = rest
                            .next()
                            .ok_or_else(|| bad_input("join: --metadata needs KEY=VALUE"))?;
                        let (k, v) = key_value(kv)?;
                        metadata.insert(k, v);
                    }
                    other => return Err(bad_input(format!("join: unknown flag {other}"))),
                }
            }
            let m = if metadata.is_empty() {
                socket.join_match(match_id).await?
            } else {
                socket.join_match_with(match_id, metadata).await?
            };
            print_match(out, &m);
        }
        "list" => {
            let matches = list_flags(socket.list_matches(), args)?.await?;
            print_listing(out, &matches);
        }
        "rpc" => {
            let id = arg(0, "NAME")?;
            let payload = args.get(1).map_or("", String::as_str);
            if args.len() > 2 {
                return Err(bad_input(
                    "rpc: one PAYLOAD only; quote it to include spaces",
                ));
            }
            let reply = socket.rpc(id, payload).await?;
            out.emit(
                json!({"type": "rpc", "id": id, "payload": reply}),
                format!("rpc {id}: {reply}"),
            );
        }
        "leave" => {
            socket
                .leave_match(parse_match_id(arg(0, "MATCH_ID")?)?)
                .await?;
            out.emit(json!({"type": "ack", "command": "leave"}), "left".into());
        }
        "send" => {
            let match_id = parse_match_id(arg(0, "MATCH_ID")?)?;
            let op: i64 = arg(1, "OP")?
                .parse()
                .map_err(|_| bad_input("send: OP must be an integer"))?;
            let text = arg(2, "TEXT")?;
            let mut reliable = false;
            let mut to: Option<Vec<Presence>> = None;
            let mut rest = args[3..].iter();
            while let Some(flag) = rest.next() {
                match flag.as_str() {
                    "--reliable" => reliable = true,
                    "--to" => {
                        let list = rest
                            .next()
                            .ok_or_else(|| bad_input("send: --to needs SESSION_ID,..."))?;
                        let members = socket.match_presences(match_id).unwrap_or_default();
                        let mut targets = Vec::new();
                        for id in list.split(',').filter(|s| !s.is_empty()) {
                            let sid: SessionId =
                                id.parse().map_err(|e| bad_input(format!("send: {e}")))?;
                            let p =
                                members
                                    .iter()
                                    .find(|p| p.session_id == sid)
                                    .ok_or_else(|| {
                                        bad_input(format!("send: {sid} is not in that match"))
                                    })?;
                            targets.push(p.clone());
                        }
                        to = Some(targets);
                    }
                    other => return Err(bad_input(format!("send: unknown flag {other}"))),
                }
            }
            socket
                .send_match_data(
                    match_id,
                    op,
                    text.as_bytes().to_vec(),
                    reliable,
                    to.as_deref(),
                )
                .await?;
        }
        "mm-add" => {
            let min = parse_u32(arg(0, "MIN")?, "MIN")?;
            let max = parse_u32(arg(1, "MAX")?, "MAX")?;
            let add = matchmaker_flags(socket.add_matchmaker("*", min, max), &args[2..])?;
            let ticket = add.await?;
            out.emit(
                json!({"type": "matchmaker_ticket", "ticket": ticket.to_string()}),
                format!("ticket {ticket}"),
            );
        }
        "mm-remove" => {
            let ticket: TicketId = arg(0, "TICKET")?
                .parse()
                .map_err(|e| bad_input(format!("mm-remove: {e}")))?;
            socket.remove_matchmaker(ticket).await?;
            out.emit(
                json!({"type": "ack", "command": "mm-remove"}),
                "ticket removed".into(),
            );
        }
        "party-create" => {
            let mut open = true;
            let mut max_size = 8;
            let mut label = None;
            let mut rest = args.iter();
            while let Some(flag) = rest.next() {
                match flag.as_str() {
                    "--closed" => open = false,
                    "--open" => open = true,
                    "--max-size" => {
                        let v = rest
                            .next()
                            .ok_or_else(|| bad_input("party-create: --max-size needs N"))?;
                        max_size = parse_u32(v, "--max-size")?;
                    }
                    "--label" => {
                        let v = rest
                            .next()
                            .ok_or_else(|| bad_input("party-create: --label needs L"))?;
                        label = Some(v.as_str());
                    }
                    other => return Err(bad_input(format!("party-create: unknown flag {other}"))),
                }
            }
            let p = socket.create_party_with(open, max_size, label).await?;
            out.emit(party_json(&p), party_text(&p));
        }
        "party-join" => {
            socket.join_party(parse_party(arg(0, "PARTY_ID")?)?).await?;
            ack(out, "party-join");
        }
        "party-leave" => {
            socket
                .leave_party(parse_party(arg(0, "PARTY_ID")?)?)
                .await?;
            ack(out, "party-leave");
        }
        "party-close" => {
            socket
                .close_party(parse_party(arg(0, "PARTY_ID")?)?)
                .await?;
            ack(out, "party-close");
        }
        "party-requests" => {
            let party_id = parse_party(arg(0, "PARTY_ID")?)?;
            let presences = socket.list_party_join_requests(party_id).await?;
            out.emit(
                json!({"type": "party_join_requests", "party_id": party_id.to_string(), "presences": presences_json(&presences)}),
                format!("party {party_id} requests: [{}]", names(&presences)),
            );
        }
        "party-accept" | "party-remove" | "party-promote" => {
            let party_id = parse_party(arg(0, "PARTY_ID")?)?;
            let target: SessionId = arg(1, "SESSION_ID")?
                .parse()
                .map_err(|e| bad_input(format!("{cmd}: {e}")))?;
            match cmd.as_str() {
                "party-accept" => socket.accept_party_member(party_id, target).await?,
                "party-remove" => socket.remove_party_member(party_id, target).await?,
                _ => socket.promote_party_member(party_id, target).await?,
            }
            ack(out, cmd);
        }
        "party-update" => {
            let party_id = parse_party(arg(0, "PARTY_ID")?)?;
            let mut open = None;
            let mut label = None;
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                match flag.as_str() {
                    "--open" => open = Some(true),
                    "--closed" => open = Some(false),
                    "--label" => {
                        let v = rest
                            .next()
                            .ok_or_else(|| bad_input("party-update: --label needs L"))?;
                        label = Some(v.as_str());
                    }
                    other => {
                        return Err(bad_input(format!(
                            "party-update: expected --open, --closed or --label L, got {other}"
                        )))
                    }
                }
            }
            if open.is_none() && label.is_none() {
                return Err(bad_input(
                    "party-update: missing --open, --closed or --label L",
                ));
            }
            // Two requests when both change; each sends the members a party_update.
            if let Some(open) = open {
                socket.update_party(party_id, open).await?;
            }
            if let Some(label) = label {
                let label = Some(label).filter(|l| !l.is_empty());
                socket.update_party_label(party_id, label).await?;
            }
            ack(out, "party-update");
        }
        "party-send" => {
            let party_id = parse_party(arg(0, "PARTY_ID")?)?;
            let op: i64 = arg(1, "OP")?
                .parse()
                .map_err(|_| bad_input("party-send: OP must be an integer"))?;
            let text = arg(2, "TEXT")?;
            socket
                .send_party_data(party_id, op, text.as_bytes().to_vec())
                .await?;
            ack(out, "party-send");
        }
        "party-mm-add" => {
            let party_id = parse_party(arg(0, "PARTY_ID")?)?;
            let min = parse_u32(arg(1, "MIN")?, "MIN")?;
            let max = parse_u32(arg(2, "MAX")?, "MAX")?;
            let add = matchmaker_flags(
                socket.add_matchmaker_party(party_id, "*", min, max),
                &args[3..],
            )?;
            let ticket = add.await?;
            out.emit(
                json!({"type": "party_matchmaker_ticket", "party_id": party_id.to_string(), "ticket": ticket.to_string()}),
                format!("party {party_id} ticket {ticket}"),
            );
        }
        "party-mm-remove" => {
            let party_id = parse_party(arg(0, "PARTY_ID")?)?;
            let ticket: TicketId = arg(1, "TICKET")?
                .parse()
                .map_err(|e| bad_input(format!("party-mm-remove: {e}")))?;
            socket.remove_matchmaker_party(party_id, ticket).await?;
            ack(out, "party-mm-remove");
        }
        "join-token" => {
            let m = socket.join_match_token(arg(0, "TOKEN")?).await?;
            print_match(out, &m);
        }
        "ping" => {
            let rtt = socket.ping().await?;
            out.emit(
                json!({"type": "pong", "rtt_us": rtt.as_micros() as u64}),
                format!("pong in {:.2} ms", rtt.as_secs_f64() * 1000.0),
            );
        }
        "sleep" => {
            let ms: u64 = arg(0, "MS")?
                .parse()
                .map_err(|_| bad_input("sleep: MS must be an integer"))?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        "help" => out.text(HELP),
        "quit" | "exit" => return Ok(false),
        other => return Err(bad_input(format!("unknown command {other:?}; try help"))),
    }
    Ok(true)
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

/// Lines waiting for the stdout thread. An event that finds the queue full is dropped
/// rather than ever making the event loop wait; replies to commands wait for room.
const OUTPUT_QUEUE: usize = 1024;
/// How long exiting waits for stdout while it makes no progress at all.
const OUTPUT_STALL: Duration = Duration::from_secs(5);

enum Msg {
    Line(String),
    /// Answered once everything before it is written.
    Flush(oneshot::Sender<()>),
}

/// Where lines go: a bounded queue drained by a thread that does the blocking writes to
/// stdout, and an unbounded one for the few notes on stderr.
#[derive(Clone)]
struct Output {
    stdout: mpsc::Sender<Msg>,
    shared: Arc<OutputShared>,
}

struct OutputShared {
    /// Event lines dropped since stdout last caught up; a warning went out with the first.
    dropped: Mutex<u64>,
    /// Lines the stdout thread has written: its progress, for the waits at exit.
    written: AtomicU64,
    stderr: std::sync::mpsc::Sender<Msg>,
}

impl OutputShared {
    fn note(&self, text: String) {
        let _ = self.stderr.send(Msg::Line(text));
    }

    /// Stdout has taken every queued line: reports what was dropped meanwhile.
    fn caught_up(&self) {
        let mut dropped = self.dropped.lock().unwrap_or_else(PoisonError::into_inner);
        if *dropped > 0 {
            self.note(format!(
                "quicmatch-cli: dropped {} events while output was blocked",
                std::mem::take(&mut *dropped)
            ));
        }
    }
}

impl Output {
    fn start() -> std::io::Result<Self> {
        let (stdout, lines) = mpsc::channel(OUTPUT_QUEUE);
        let (stderr, notes) = std::sync::mpsc::channel();
        let shared = Arc::new(OutputShared {
            dropped: Mutex::new(0),
            written: AtomicU64::new(0),
            stderr,
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || write_stdout(lines, &writer))?;
        std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || write_stderr(notes))?;
        Ok(Self { stdout, shared })
    }

    /// Queues an event's line without waiting: if stdout is behind by a full queue,
    /// the line is dropped and counted, with one warning per stretch of dropping.
    fn offer(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.stdout.try_send(Msg::Line(line)) {
            let mut dropped = self
                .shared
                .dropped
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *dropped == 0 {
                self.shared
                    .note("quicmatch-cli: output is not being read; dropping events".into());
            }
            *dropped += 1;
        }
    }

    /// Queues replies, waiting for room: a command's output is never dropped.
    async fn send(&self, out: &mut Out) {
        for line in out.take() {
            let _ = self.stdout.send(Msg::Line(line)).await;
        }
    }

    /// Runs `wait` as long as stdout keeps making progress; `None` once it has made
    /// none for [`OUTPUT_STALL`].
    async fn while_progressing<T>(&self, wait: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(wait);
        let mut seen = self.shared.written.load(Ordering::Relaxed);
        loop {
            if let Ok(done) = timeout(OUTPUT_STALL, &mut wait).await {
                return Some(done);
            }
            let now = self.shared.written.load(Ordering::Relaxed);
            if now == seen {
                return None;
            }
            seen = now;
        }
    }

    /// Queues a line that must not be dropped, giving up only if stdout is stuck.
    async fn send_patiently(&self, line: String) {
        self.while_progressing(self.stdout.send(Msg::Line(line)))
            .await;
    }

    /// Writes out everything queued (unless stdout is stuck) and the notes on stderr.
    async fn flush(&self) {
        let (done, written) = oneshot::channel();
        self.while_progressing(async {
            if self.stdout.send(Msg::Flush(done)).await.is_ok() {
                let _ = written.await;
            }
        })
        .await;
        let (done, written) = oneshot::channel();
        if self.shared.stderr.send(Msg::Flush(done)).is_ok() {
            let _ = timeout(OUTPUT_STALL, written).await;
        }
    }
}

/// The stdout thread: blocking writes, flushed whenever the queue runs empty. Once
/// stdout is closed, lines are discarded.
fn write_stdout(mut lines: mpsc::Receiver<Msg>, shared: &OutputShared) {
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut open = true;
    while let Some(msg) = lines.blocking_recv() {
        let done = match msg {
            Msg::Line(line) => {
                open = open && writeln!(stdout, "{line}").is_ok();
                shared.written.fetch_add(1, Ordering::Relaxed);
                if !lines.is_empty() {
                    continue;
                }
                None
            }
            Msg::Flush(done) => Some(done),
        };
        open = open && stdout.flush().is_ok();
        shared.caught_up();
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

fn write_stderr(notes: std::sync::mpsc::Receiver<Msg>) {
    for msg in notes {
        match msg {
            Msg::Line(line) => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            Msg::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Prints events as they come, never waiting for stdout, so the socket is always read.
/// Returns after [`Event::Disconnected`].
async fn print_events(socket: Arc<Socket>, output: Output, json: bool) {
    let mut out = Out::new(json);
    while let Some(event) = socket.next_event().await {
        let last = matches!(event, Event::Disconnected { .. });
        if last && QUITTING.load(Ordering::SeqCst) {
            return;
        }
        print_event(&mut out, &event);
        for line in out.take() {
            if last {
                output.send_patiently(line).await;
            } else {
                output.offer(line);
            }
        }
        if last {
            return;
        }
    }
}

/// Runs commands from stdin until it ends or `quit`.
async fn read_commands(socket: &Socket, output: &Output, out: &mut Out) -> std::io::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let more = match shlex::split(&line) {
            None => {
                out.error(ErrorCode::BAD_INPUT, "unbalanced quotes");
                true
            }
            Some(words) => run_command(socket, out, &words).await.unwrap_or_else(|e| {
                out.request_error(&e);
                true
            }),
        };
        output.send(out).await;
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
    // only ever written by the output thread.
    let args = Args::parse();
    tokio::runtime::Runtime::new()
        .context("starting the runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let output = Output::start().context("starting the output threads")?;
    let mut out = Out::new(args.json);
    let (addr, host) = resolve(&args.server).await?;
    let trust = match (&args.ca, &args.pin) {
        (Some(ca), _) => Trust::CaFile(ca.clone()),
        (None, Some(pin)) => Trust::pin(pin)?,
        (None, None) => Trust::PlatformRoots,
    };
    let credentials = match (&args.device_id, &args.custom_id) {
        (Some(id), _) => Credentials::Device { id: id.clone() },
        (None, Some(id)) => Credentials::Custom { id: id.clone() },
        (None, None) => bail!("--device-id or --custom-id is required"),
    };
    let mut config = ClientConfig::new(addr, trust, credentials).server_key(args.server_key);
    config.username = args.username;
    config.server_name = Some(args.server_name.unwrap_or(host));
    let socket = match Socket::connect(config).await {
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
            std::process::exit(1);
        }
    };
    let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let s = socket.session();
    out.emit(
        json!({
            "type": "session",
            "user_id": s.user_id.to_string(),
            "session_id": s.session_id.to_string(),
            "username": s.username,
            "token_expires_at": s.token_expires_at,
        }),
        format!(
            "connected as {} (user {}, session {})",
            s.username, s.user_id, s.session_id
        ),
    );
    output.send(&mut out).await;
    let mut events = tokio::spawn(print_events(socket.clone(), output.clone(), args.json));
    let code = tokio::select! {
        read = read_commands(&socket, &output, &mut out) => match read {
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
            std::process::exit(1);
        }
    };
    // A polite close: the server ends the session at once, so the others see it leave.
    // A second Ctrl-C or SIGTERM stops waiting for it.
    QUITTING.store(true, Ordering::SeqCst);
    tokio::select! {
        () = async {
            socket.close().await;
            events.abort();
            output.flush().await;
        } => {}
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    // Exit here rather than return: the runtime would wait for the blocked stdin read.
    std::process::exit(code);
}
