//! The commands: parsing a line's words and making the requests.

use std::{collections::BTreeMap, time::Duration};

use quicmatch_client::{
    AddMatchmaker, ErrorCode, ListMatches, Match, MatchId, MatchOptions, PartyId, Presence,
    RequestError, SessionId, Socket, TicketId,
};
use serde_json::json;

use crate::{
    ids::{Kind, Seen},
    render::{names, party_json, party_text, presences_json, print_listing, print_match, Out},
};

pub(crate) const HELP: &str = "commands:
  create [NAME] [--label L] [--max-size N] [--private] [--latest OP,...]
                                              create a match (with NAME: join-or-create;
                                              --private: joinable by id, never listed;
                                              --latest: late joiners get each member's
                                              newest message of these op codes)
  join MATCH_ID [--metadata K=V]...           join a match (metadata for server-run ones)
  list [--authoritative|--relayed] [--query Q] [--label L] [--min N] [--max N] [--limit N]
                                              list joinable matches (10 by default;
                                              Q like +label.mode:ranked)
  rpc NAME [PAYLOAD]                          call a server function
  leave MATCH_ID                              leave a match
  send MATCH_ID OP TEXT [--reliable] [--to SESSION_ID,...]
                                              send match data (unreliable unless --reliable)
  mm-add MIN MAX [--query Q] [--multiple N] [--string K=V]... [--numeric K=V]...
         [--composition P=V:N,V:N...] [--teams N] [--balance-on K]
         [--fallback-query Q --fallback-after PASSES] [--expires-after PASSES]
                                              add a matchmaker ticket (roles like
                                              --composition role=tank:1,healer:1,dps:3
                                              with --string role=tank)
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
         [mm-add's other flags; --string role=tank,dps lists one value per member]
  party-mm-remove ID TICKET
  store-write COLLECTION KEY JSON [--version V] [--read public|owner|none] [--write owner|none]
                                              write one of your storage objects (--version
                                              *: only if absent; V: only if unchanged)
  store-read COLLECTION KEY [--user ID]       read an object (yours unless --user; ID
                                              `system`: an object no user owns)
  store-list COLLECTION [--user ID] [--limit N] [--cursor C]
                                              list the objects you may read (10 a page)
  store-delete COLLECTION KEY [--version V]   delete one of your storage objects
  ping                                        round trip to the server
  sleep MS                                    wait (for scripts)
  help                                        this text
  quit                                        close and exit

MATCH_ID, ID (a party), SESSION_ID and TICKET also take a unique prefix (4 hex digits
or more, hyphens optional) of an id seen in this run.";

/// A match id, or a unique prefix of one seen in this run.
fn parse_match_id(seen: &Seen, s: &str) -> Result<MatchId, RequestError> {
    seen.resolve(Kind::Match, s).map_err(bad_input)
}

/// A party id, or a unique prefix of one seen in this run.
fn parse_party(seen: &Seen, s: &str) -> Result<PartyId, RequestError> {
    seen.resolve(Kind::Party, s).map_err(bad_input)
}

/// Prints a `match` reply and remembers its ids.
pub(crate) fn reply_match(seen: &Seen, out: &mut Out, m: &Match) {
    seen.match_reply(m);
    print_match(out, m);
}

fn ack(out: &mut Out, command: &str) {
    out.emit(
        json!({"type": "ack", "command": command}),
        format!("{command}: ok"),
    );
}

/// Applies `[--query Q] [--multiple N] [--string K=V]... [--numeric K=V]...` and the
/// options (`--composition`, `--teams`, `--balance-on`, `--fallback-query`,
/// `--fallback-after`, `--expires-after`).
fn matchmaker_flags<'a>(
    mut add: AddMatchmaker<'a>,
    flags: &[String],
) -> Result<AddMatchmaker<'a>, RequestError> {
    let mut rest = flags.iter();
    let (mut fallback, mut fallback_after) = (None, None);
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
            "--composition" => {
                let (property, counts) = parse_composition(value("--composition")?)?;
                add.composition(property, counts)
            }
            "--teams" => add.teams(parse_u32(value("--teams")?, "--teams")?),
            "--balance-on" => add.balance_teams_on(value("--balance-on")?),
            "--fallback-query" => {
                fallback = Some(value("--fallback-query")?.to_owned());
                add
            }
            "--fallback-after" => {
                fallback_after = Some(parse_u32(value("--fallback-after")?, "--fallback-after")?);
                add
            }
            "--expires-after" => {
                add.expires_after(parse_u32(value("--expires-after")?, "--expires-after")?)
            }
            other => return Err(bad_input(format!("unknown flag {other}"))),
        };
    }
    match (fallback, fallback_after) {
        (Some(q), Some(after)) => add = add.fallback_query(q, after),
        (None, None) => {}
        _ => {
            return Err(bad_input(
                "--fallback-query and --fallback-after go together",
            ))
        }
    }
    Ok(add)
}

/// Parses `PROPERTY=VALUE:COUNT,VALUE:COUNT...`, e.g. `role=tank:1,healer:1,dps:3`.
fn parse_composition(s: &str) -> Result<(String, Vec<(String, u32)>), RequestError> {
    let usage = || {
        bad_input(format!(
            "--composition wants PROPERTY=VALUE:COUNT,... (like role=tank:1,healer:1,dps:3), got {s:?}"
        ))
    };
    let (property, list) = s.split_once('=').ok_or_else(usage)?;
    if property.is_empty() || list.is_empty() {
        return Err(usage());
    }
    let mut counts = Vec::new();
    for part in list.split(',') {
        let (value, n) = part.split_once(':').ok_or_else(usage)?;
        let n: u32 = n.trim().parse().map_err(|_| usage())?;
        if value.trim().is_empty() {
            return Err(usage());
        }
        counts.push((value.trim().to_owned(), n));
    }
    Ok((property.to_owned(), counts))
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
            "--latest" => {
                let list = value("--latest")?;
                let codes = list
                    .split(',')
                    .map(|c| {
                        c.trim()
                            .parse::<i64>()
                            .map_err(|_| bad_input(format!("--latest: {c:?} is not an op code")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                options.latest_state(codes)
            }
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
pub(crate) async fn run_command(
    socket: &Socket,
    seen: &Seen,
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
            reply_match(seen, out, &m);
        }
        "join" => {
            let match_id = parse_match_id(seen, arg(0, "MATCH_ID")?)?;
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
            reply_match(seen, out, &m);
        }
        "list" => {
            let matches = list_flags(socket.list_matches(), args)?.await?;
            seen.listing(&matches);
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
                .leave_match(parse_match_id(seen, arg(0, "MATCH_ID")?)?)
                .await?;
            out.emit(json!({"type": "ack", "command": "leave"}), "left".into());
        }
        "send" => {
            let match_id = parse_match_id(seen, arg(0, "MATCH_ID")?)?;
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
                            let sid: SessionId = seen
                                .resolve(Kind::Session, id)
                                .map_err(|e| bad_input(format!("send: {e}")))?;
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
            seen.add(Kind::Ticket, ticket.0);
            out.emit(
                json!({"type": "matchmaker_ticket", "ticket": ticket.to_string()}),
                format!("ticket {ticket}"),
            );
        }
        "mm-remove" => {
            let ticket: TicketId = seen
                .resolve(Kind::Ticket, arg(0, "TICKET")?)
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
            seen.party(&p);
            out.emit(party_json(&p), party_text(&p));
        }
        "party-join" => {
            socket
                .join_party(parse_party(seen, arg(0, "PARTY_ID")?)?)
                .await?;
            ack(out, "party-join");
        }
        "party-leave" => {
            socket
                .leave_party(parse_party(seen, arg(0, "PARTY_ID")?)?)
                .await?;
            ack(out, "party-leave");
        }
        "party-close" => {
            socket
                .close_party(parse_party(seen, arg(0, "PARTY_ID")?)?)
                .await?;
            ack(out, "party-close");
        }
        "party-requests" => {
            let party_id = parse_party(seen, arg(0, "PARTY_ID")?)?;
            let presences = socket.list_party_join_requests(party_id).await?;
            seen.presences(&presences);
            out.emit(
                json!({"type": "party_join_requests", "party_id": party_id.to_string(), "presences": presences_json(&presences)}),
                format!("party {party_id} requests: [{}]", names(&presences)),
            );
        }
        "party-accept" | "party-remove" | "party-promote" => {
            let party_id = parse_party(seen, arg(0, "PARTY_ID")?)?;
            let target: SessionId = seen
                .resolve(Kind::Session, arg(1, "SESSION_ID")?)
                .map_err(|e| bad_input(format!("{cmd}: {e}")))?;
            match cmd.as_str() {
                "party-accept" => socket.accept_party_member(party_id, target).await?,
                "party-remove" => socket.remove_party_member(party_id, target).await?,
                _ => socket.promote_party_member(party_id, target).await?,
            }
            ack(out, cmd);
        }
        "party-update" => {
            let party_id = parse_party(seen, arg(0, "PARTY_ID")?)?;
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
            let party_id = parse_party(seen, arg(0, "PARTY_ID")?)?;
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
            let party_id = parse_party(seen, arg(0, "PARTY_ID")?)?;
            let min = parse_u32(arg(1, "MIN")?, "MIN")?;
            let max = parse_u32(arg(2, "MAX")?, "MAX")?;
            let add = matchmaker_flags(
                socket.add_matchmaker_party(party_id, "*", min, max),
                &args[3..],
            )?;
            let ticket = add.await?;
            seen.add(Kind::Ticket, ticket.0);
            out.emit(
                json!({"type": "party_matchmaker_ticket", "party_id": party_id.to_string(), "ticket": ticket.to_string()}),
                format!("party {party_id} ticket {ticket}"),
            );
        }
        "party-mm-remove" => {
            let party_id = parse_party(seen, arg(0, "PARTY_ID")?)?;
            let ticket: TicketId = seen
                .resolve(Kind::Ticket, arg(1, "TICKET")?)
                .map_err(|e| bad_input(format!("party-mm-remove: {e}")))?;
            socket.remove_matchmaker_party(party_id, ticket).await?;
            ack(out, "party-mm-remove");
        }
        "join-token" => {
            let m = socket.join_match_token(arg(0, "TOKEN")?).await?;
            reply_match(seen, out, &m);
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
        cmd if crate::storage::handles(cmd) => crate::storage::run(socket, out, cmd, args).await?,
        "help" => out.text(HELP),
        "quit" | "exit" => return Ok(false),
        other => return Err(bad_input(format!("unknown command {other:?}; try help"))),
    }
    Ok(true)
}
