//! How replies and events look: text lines, or one JSON object per line with `--json`.

use base64::Engine as _;
use quicmatch_client::{
    ErrorCode, Event, Match, MatchListing, MatchmakerMatched, MatchmakerUser, PartyInfo, Presence,
    RequestError,
};
use serde_json::{json, Value};

/// Renders responses and events in the chosen format, collecting the lines for
/// [`Output`](crate::output::Output).
pub(crate) struct Out {
    json: bool,
    lines: Vec<String>,
}

impl Out {
    pub(crate) fn new(json: bool) -> Self {
        Self {
            json,
            lines: Vec::new(),
        }
    }

    pub(crate) fn emit(&mut self, value: Value, text: String) {
        self.lines
            .push(if self.json { value.to_string() } else { text });
    }

    /// A line for the text output only.
    pub(crate) fn text(&mut self, text: &str) {
        if !self.json {
            self.lines.push(text.to_owned());
        }
    }

    pub(crate) fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }

    pub(crate) fn error(&mut self, code: ErrorCode, message: &str) {
        self.emit(
            json!({"type": "error", "code": code.to_string(), "code_number": code.0, "message": message}),
            format!("error {code}: {message}"),
        );
    }

    pub(crate) fn request_error(&mut self, e: &RequestError) {
        match e {
            RequestError::Server { code, message } => self.error(*code, message),
            other => self.error(ErrorCode::RUNTIME_EXCEPTION, &other.to_string()),
        }
    }
}

fn presence_json(p: &Presence) -> Value {
    json!({"user_id": p.user_id.to_string(), "session_id": p.session_id.to_string(), "username": p.username})
}

pub(crate) fn presences_json(ps: &[Presence]) -> Value {
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

pub(crate) fn party_json(p: &PartyInfo) -> Value {
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

pub(crate) fn party_text(p: &PartyInfo) -> String {
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

pub(crate) fn names(ps: &[Presence]) -> String {
    ps.iter().map(presence_text).collect::<Vec<_>>().join(", ")
}

fn presence_text(p: &Presence) -> String {
    format!("{} (session {})", p.username, p.session_id)
}

pub(crate) fn print_match(out: &mut Out, m: &Match) {
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

pub(crate) fn print_event(out: &mut Out, event: &Event) {
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
        Event::MatchmakerMatched(m) => matched(out, m, None),
        Event::MatchmakerMatchedTeams(t) => matched(out, &t.matched, Some(&t.teams)),
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

pub(crate) fn print_listing(out: &mut Out, matches: &[MatchListing]) {
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

/// A matchmaker result; with teams, each user's team in `users[].team` and `teams`.
fn matched(out: &mut Out, m: &MatchmakerMatched, teams: Option<&[u32]>) {
    let mut users: Vec<_> = m.users.iter().map(mm_user_json).collect();
    if let Some(teams) = teams {
        for (u, t) in users.iter_mut().zip(teams) {
            u["team"] = json!(t);
        }
    }
    let mut value = json!({
        "type": "matchmaker_matched",
        "ticket": m.ticket.to_string(),
        "users": users,
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
    let names: Vec<String> = match teams {
        None => m
            .users
            .iter()
            .map(|u| u.presence.username.clone())
            .collect(),
        Some(teams) => {
            value["teams"] = json!(teams);
            let mine = m
                .users
                .iter()
                .position(|u| u.presence.session_id == m.self_user.presence.session_id)
                .and_then(|i| teams.get(i));
            if let Some(t) = mine {
                value["self"]["team"] = json!(t);
            }
            m.users
                .iter()
                .zip(teams)
                .map(|(u, t)| format!("{} (team {t})", u.presence.username))
                .collect()
        }
    };
    out.emit(
        value,
        format!(
            "matched (ticket {}) with [{}]; to play: {target}",
            m.ticket,
            names.join(", ")
        ),
    );
}
