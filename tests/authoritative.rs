//! Server-authoritative matches end to end: every callback and dispatcher action (a
//! broadcast on a member's behalf included), a repeated datagram handled once,
//! isolation of a panicking and a stuck handler among 100 ticking matches,
//! `max_empty`, `terminate` on shutdown, RPCs, bad input to the runtime (unknown
//! handler, oversized params or signal, a tick rate out of range, over-long join
//! metadata), and the matchmaker placing a group into a new match.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{next_event, TestServer, TEST_TIMEOUT};
use quicmatch::{
    runtime::{
        Dispatcher, Inbound, JoinDecision, MatchContext, MatchHandler, MatchInit, Params,
        RuntimeError,
    },
    Config,
};
use quicmatch_client::{ErrorCode, Event, MatchId, Presence, SendOptions, Socket};
use tokio::time::timeout;

/// What the probe handler saw, in order.
type Log = Arc<Mutex<Vec<String>>>;

/// A handler that records every callback and does what signals tell it:
/// `label:TEXT`, `kick:USERNAME`, `end:REASON`, `echo` (the reply is the data). Its tick
/// echoes each message to everyone with op code + 100, from the server, except op 5,
/// which it passes on as sent by the member (op 105). `init` takes its tick rate from
/// the params (`tick_rate`, default 20), whatever it is.
struct Probe {
    log: Log,
}

impl Probe {
    fn note(&self, line: String) {
        self.log.lock().expect("log").push(line);
    }
}

impl MatchHandler for Probe {
    fn init(&mut self, _ctx: &MatchContext, params: &Params) -> Result<MatchInit, String> {
        self.note(format!("init {params}"));
        let rate = params["tick_rate"].as_u64().unwrap_or(20) as u32;
        Ok(MatchInit::new(rate).label(r#"{"mode":"probe","skill":10}"#))
    }

    fn join_attempt(
        &mut self,
        _ctx: &MatchContext,
        _d: &mut Dispatcher<'_>,
        presence: &Presence,
        metadata: &BTreeMap<String, String>,
    ) -> JoinDecision {
        self.note(format!("join_attempt {} {metadata:?}", presence.username));
        match metadata.get("role").map(String::as_str) {
            Some("spy") => JoinDecision::Reject("no spies".into()),
            _ => JoinDecision::Accept,
        }
    }

    fn join(&mut self, _ctx: &MatchContext, d: &mut Dispatcher<'_>, presences: &[Presence]) {
        for p in presences {
            self.note(format!("join {}", p.username));
            // Welcomes the joiner: it must already know the match.
            d.broadcast(
                7,
                format!("welcome {}", p.username),
                Some(std::slice::from_ref(p)),
                None,
                true,
            );
        }
    }

    fn leave(&mut self, _ctx: &MatchContext, _d: &mut Dispatcher<'_>, presences: &[Presence]) {
        for p in presences {
            self.note(format!("leave {}", p.username));
        }
    }

    fn tick(&mut self, _ctx: &MatchContext, d: &mut Dispatcher<'_>, messages: Vec<Inbound>) {
        for m in messages {
            self.note(format!(
                "message {} op {} {} reliable={}",
                m.sender.username,
                m.op_code,
                String::from_utf8_lossy(&m.data),
                m.reliable
            ));
            // Echo to everyone on the same path: from the server, or for op 5 on behalf
            // of the member who sent it.
            let sender = (m.op_code == 5).then_some(&m.sender);
            d.broadcast(m.op_code + 100, m.data, None, sender, m.reliable);
        }
    }

    fn signal(&mut self, ctx: &MatchContext, d: &mut Dispatcher<'_>, data: &str) -> String {
        self.note(format!("signal {data}"));
        if let Some(label) = data.strip_prefix("label:") {
            d.set_label(Some(label.to_owned()));
        } else if let Some(name) = data.strip_prefix("kick:") {
            let who: Vec<Presence> = ctx
                .presences()
                .iter()
                .filter(|p| p.username == name)
                .cloned()
                .collect();
            d.kick(&who);
        } else if let Some(reason) = data.strip_prefix("end:") {
            d.end(reason);
        }
        format!("ok {data}")
    }

    fn terminate(&mut self, _ctx: &MatchContext, d: &mut Dispatcher<'_>, grace: Duration) {
        self.note(format!("terminate {}", grace.as_secs()));
        d.broadcast(9, "bye", None, None, true);
    }
}

async fn start(log: &Log, tune: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = common::test_config();
    tune(&mut config);
    let log = log.clone();
    TestServer::start_built(config, move |b| {
        let log = log.clone();
        b.match_handler("probe", move || Probe { log: log.clone() })
            .rpc("create_probe", |ctx, payload| {
                let params: Params = serde_json::from_str(payload).map_err(|e| e.to_string())?;
                let id = ctx
                    .runtime
                    .create_match("probe", params)
                    .map_err(|e| e.to_string())?;
                Ok(id.to_string())
            })
            .rpc("signal", |ctx, payload| {
                let (id, data) = payload.split_once(' ').ok_or("want: ID DATA")?;
                let id: MatchId = id
                    .parse()
                    .map_err(|e: quicmatch_protocol::ids::ParseIdError| e.to_string())?;
                ctx.runtime.signal(id, data).map_err(|e| e.to_string())
            })
            .rpc("create", |ctx, payload| {
                // {"handler": NAME, "params": P, "pad": N}: a match of any handler the
                // client names, its params padded with N bytes.
                let request: Params = serde_json::from_str(payload).map_err(|e| e.to_string())?;
                let handler = request["handler"].as_str().ok_or("want a handler")?;
                let params = match request["pad"].as_u64() {
                    Some(n) => serde_json::json!({
                        "params": request["params"],
                        "pad": "x".repeat(n as usize),
                    }),
                    None => request["params"].clone(),
                };
                let id = ctx
                    .runtime
                    .create_match(handler, params)
                    .map_err(|e| e.to_string())?;
                Ok(id.to_string())
            })
            .rpc("fail", |_, _| Err("the function said no".into()))
            .rpc("panic", |_, _| panic!("an rpc bug"))
    })
    .await
}

fn seen(log: &Log, line: &str) -> bool {
    log.lock().expect("log").iter().any(|l| l == line)
}

async fn data_event(socket: &Socket, what: &str) -> quicmatch_client::MatchData {
    loop {
        match next_event(socket, what).await {
            Event::MatchData(d) => return d,
            Event::MatchPresence(_) => {}
            other => panic!("waiting for {what}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn callbacks_and_dispatcher_actions_end_to_end() {
    let log = Log::default();
    let server = start(&log, |_| {}).await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let id: MatchId = alice
        .rpc("create_probe", r#"{"tick_rate":20}"#)
        .await
        .expect("rpc")
        .parse()
        .expect("an id");
    assert!(seen(&log, r#"init {"tick_rate":20}"#));
    let listed = alice
        .list_matches()
        .authoritative(true)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].match_id, id);
    assert_eq!(listed[0].handler, "probe");
    assert_eq!(listed[0].tick_rate, 20);
    assert_eq!(listed[0].size, 0);
    assert_eq!(
        listed[0].label.as_deref(),
        Some(r#"{"mode":"probe","skill":10}"#)
    );

    // join_attempt with metadata, then join; the joiner's welcome comes after its reply.
    let meta = BTreeMap::from([("role".to_owned(), "pilot".to_owned())]);
    let m = alice.join_match_with(id, meta).await.expect("join");
    assert_eq!(m.match_id, id);
    let welcome = data_event(&alice, "welcome").await;
    assert!(welcome.from_server() && welcome.reliable);
    assert_eq!(&welcome.data[..], b"welcome alice");
    assert!(seen(&log, r#"join_attempt alice {"role": "pilot"}"#));
    assert!(seen(&log, "join alice"));

    // A rejected join carries the handler's reason.
    let spy = BTreeMap::from([("role".to_owned(), "spy".to_owned())]);
    let err = bob.join_match_with(id, spy).await.expect_err("rejected");
    assert_eq!(err.code(), Some(ErrorCode::MATCH_JOIN_REJECTED));
    assert!(err.to_string().contains("no spies"), "{err}");
    bob.join_match(id).await.expect("bob joins without a role");
    data_event(&bob, "bob's welcome").await;

    // Messages reach tick in arrival order with sender and path; the echo comes back.
    alice
        .send_match_data(id, 1, b"first".to_vec(), true, None)
        .await
        .expect("send");
    alice
        .send_match_data(id, 2, b"second".to_vec(), true, None)
        .await
        .expect("send");
    for player in [&bob, &alice] {
        for (op, text) in [(101, "first"), (102, "second")] {
            let d = data_event(player, "echo").await;
            assert_eq!((d.op_code, &d.data[..]), (op, text.as_bytes()));
            assert!(d.from_server());
        }
    }
    let log_now = log.lock().expect("log").clone();
    let first = log_now
        .iter()
        .position(|l| l == "message alice op 1 first reliable=true");
    let second = log_now
        .iter()
        .position(|l| l == "message alice op 2 second reliable=true");
    assert!(first.is_some() && first < second, "{log_now:?}");
    bob.send_match_data(id, 3, b"fast".to_vec(), false, None)
        .await
        .expect("datagram");
    let d = data_event(&alice, "datagram echo").await;
    assert_eq!((d.op_code, d.reliable), (103, false));
    assert!(seen(&log, "message bob op 3 fast reliable=false"));
    // A repeated datagram reaches the handler once.
    bob.send_match_data_with(
        id,
        3,
        b"repeated".to_vec(),
        SendOptions::unreliable()
            .repeat_after(Duration::from_millis(5))
            .repeat_times(2),
    )
    .await
    .expect("repeated datagram");
    let d = data_event(&alice, "repeated echo").await;
    assert_eq!((d.op_code, &d.data[..]), (103, &b"repeated"[..]));
    // The repeats went out 5 and 10 ms after it: the handler had them by the tick
    // after the echo's, and the marker is handled in that tick or a later one.
    bob.send_match_data(id, 4, b"marker".to_vec(), true, None)
        .await
        .expect("marker");
    let d = data_event(&alice, "marker echo").await;
    assert_eq!((d.op_code, &d.data[..]), (104, &b"marker"[..]));
    let times = log
        .lock()
        .expect("log")
        .iter()
        .filter(|l| *l == "message bob op 3 repeated reliable=false")
        .count();
    assert_eq!(times, 1);

    // Signal: a label update is seen by the very next listing.
    let reply = alice
        .rpc(
            "signal",
            &format!("{id} label:{{\"mode\":\"probe\",\"skill\":70}}"),
        )
        .await
        .expect("signal");
    assert!(reply.starts_with("ok label:"));
    let found = alice
        .list_matches()
        .query("+label.skill:>=50")
        .await
        .expect("list");
    assert_eq!(found.iter().map(|m| m.match_id).collect::<Vec<_>>(), [id]);

    // Kick: bob gets MatchEnded, alice sees him leave, the handler's leave runs.
    alice
        .rpc("signal", &format!("{id} kick:bob"))
        .await
        .expect("kick");
    loop {
        if let Event::MatchEnded { match_id, reason } = next_event(&bob, "the kick").await {
            assert_eq!(match_id, id);
            assert!(reason.contains("kicked"), "{reason}");
            break;
        }
    }
    common::eventually("leave bob", || seen(&log, "leave bob")).await;

    // A leave is a leave callback too.
    alice.leave_match(id).await.expect("leave");
    common::eventually("leave alice", || seen(&log, "leave alice")).await;
    alice.join_match(id).await.expect("back in");

    // End: members get MatchEnded with the reason; the id no longer works.
    alice
        .rpc("signal", &format!("{id} end:game over"))
        .await
        .expect("end");
    loop {
        if let Event::MatchEnded { match_id, reason } = next_event(&alice, "the end").await {
            assert_eq!((match_id, reason.as_str()), (id, "game over"));
            break;
        }
    }
    let err = alice.join_match(id).await.expect_err("ended");
    assert_eq!(err.code(), Some(ErrorCode::MATCH_NOT_FOUND));
    assert!(alice.list_matches().await.expect("list").is_empty());
    assert_eq!(server.stats.authoritative_matches(), 0);
}

/// A match made by the probe handler through its RPC, with `players` in it (their
/// welcomes read).
async fn probe_match(players: &[&Socket]) -> MatchId {
    let id: MatchId = players[0]
        .rpc("create_probe", "{}")
        .await
        .expect("rpc")
        .parse()
        .expect("an id");
    for player in players {
        player.join_match(id).await.expect("join");
        data_event(player, "welcome").await;
    }
    id
}

#[tokio::test]
async fn a_handler_broadcasts_on_behalf_of_a_member() {
    let log = Log::default();
    let server = start(&log, |_| {}).await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let id = probe_match(&[&alice, &bob]).await;
    for reliable in [true, false] {
        bob.send_match_data(id, 5, b"from bob".to_vec(), reliable, None)
            .await
            .expect("send");
        // Everyone, bob included, receives it as bob's, not the server's.
        for player in [&alice, &bob] {
            let d = data_event(player, "the handler's relay").await;
            assert_eq!((d.op_code, &d.data[..]), (105, &b"from bob"[..]));
            assert_eq!(d.reliable, reliable);
            assert!(!d.from_server(), "attributed to a member");
            assert_eq!(d.sender, bob.presence(), "attributed to bob");
        }
    }
    // Other op codes still come from the server itself.
    alice
        .send_match_data(id, 1, b"plain".to_vec(), true, None)
        .await
        .expect("send");
    let d = data_event(&bob, "the server's echo").await;
    assert_eq!(d.op_code, 101);
    assert!(d.from_server());
}

/// Creates a probe match with `params` from server code; its id as text.
fn create_probe(
    runtime: &quicmatch::runtime::Runtime,
    params: Params,
) -> Result<String, RuntimeError> {
    runtime
        .create_match("probe", params)
        .map(|id| id.to_string())
}

/// Runs `f` on a blocking thread, as RPC functions and hooks run (a runtime call may
/// wait for a match).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    timeout(TEST_TIMEOUT, tokio::task::spawn_blocking(f))
        .await
        .expect("in time")
        .expect("ran")
}

/// `alice`, a member of probe match `id`, still gets the echo of a message, and the
/// server still runs exactly `matches` server-run matches.
async fn still_served(server: &TestServer, alice: &Socket, id: MatchId, n: u32, matches: usize) {
    let text = format!("still there {n}");
    alice
        .send_match_data(id, 1, text.clone().into_bytes(), true, None)
        .await
        .expect("send");
    let d = data_event(alice, "the echo after bad input").await;
    assert_eq!((d.op_code, &d.data[..]), (101, text.as_bytes()));
    assert_eq!(server.stats.authoritative_matches(), matches);
}

/// Bad input to the runtime, from server code (the `Runtime` API) and from a client
/// (through an RPC that names the handler, and join metadata): each gets its documented
/// error and message, no match is made or disturbed, and the sessions carry on.
#[tokio::test]
async fn bad_runtime_input_gets_clear_errors_and_disturbs_nothing() {
    use quicmatch_protocol::{
        Request, Response, ServerBody, MAX_HANDLER_PARAMS, MAX_PROPERTY_KEY_LEN,
        MAX_PROPERTY_VALUE_LEN,
    };
    let log = Log::default();
    let server = start(&log, |_| {}).await;
    let alice = server.client("alice").await;
    let id = probe_match(&[&alice]).await;
    still_served(&server, &alice, id, 0, 1).await;
    let runtime = server.runtime.clone();
    let call = |f: fn(&quicmatch::runtime::Runtime, MatchId) -> Result<String, RuntimeError>| {
        let runtime = runtime.clone();
        blocking(move || f(&runtime, id))
    };

    // An unknown handler: from server code, and named by a client through an RPC.
    let err = call(|r, _| {
        r.create_match("nope", Params::Null)
            .map(|id| id.to_string())
    })
    .await
    .expect_err("unknown handler");
    assert_eq!(err, RuntimeError::UnknownHandler("nope".into()));
    assert_eq!(err.to_string(), r#"no match handler named "nope""#);
    let err = alice
        .rpc("create", r#"{"handler":"nope","params":{}}"#)
        .await
        .expect_err("unknown handler");
    assert_eq!(err.code(), Some(ErrorCode::RUNTIME_FUNCTION_EXCEPTION));
    assert!(
        err.to_string().contains(r#"no match handler named "nope""#),
        "{err}"
    );
    still_served(&server, &alice, id, 1, 1).await;

    // Oversized params: one byte over the limit, serialized.
    let err = call(|r, _| {
        // `"` + N bytes + `"` serialized.
        create_probe(r, Params::String("x".repeat(MAX_HANDLER_PARAMS - 1)))
    })
    .await
    .expect_err("params too large");
    let want = format!(
        "match parameters of {} bytes exceed {MAX_HANDLER_PARAMS}",
        MAX_HANDLER_PARAMS + 1
    );
    assert_eq!(err, RuntimeError::TooLarge(want.clone()));
    let pad = MAX_HANDLER_PARAMS; // with the wrapping, well over the limit
    let err = alice
        .rpc(
            "create",
            &format!(r#"{{"handler":"probe","params":{{}},"pad":{pad}}}"#),
        )
        .await
        .expect_err("params too large");
    assert_eq!(err.code(), Some(ErrorCode::RUNTIME_FUNCTION_EXCEPTION));
    assert!(err.to_string().contains("match parameters of"), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("bytes exceed {MAX_HANDLER_PARAMS}")),
        "{err}"
    );
    // Just at the limit is fine (and makes a second match).
    let at_limit = call(|r, _| create_probe(r, Params::String("x".repeat(MAX_HANDLER_PARAMS - 2))))
        .await
        .expect("params at the limit");
    assert_eq!(at_limit.len(), 36);
    still_served(&server, &alice, id, 2, 2).await;

    // An oversized signal is refused before the match sees it; a normal one still works.
    let err = call(|r, id| r.signal(id, &"x".repeat(MAX_HANDLER_PARAMS + 1)))
        .await
        .expect_err("signal too large");
    assert_eq!(
        err,
        RuntimeError::TooLarge(format!(
            "signal of {} bytes exceeds {MAX_HANDLER_PARAMS}",
            MAX_HANDLER_PARAMS + 1
        ))
    );
    assert!(
        !log.lock()
            .expect("log")
            .iter()
            .any(|l| l.starts_with("signal x")),
        "the handler never saw it"
    );
    let reply = call(|r, id| r.signal(id, "echo")).await.expect("signal");
    assert_eq!(reply, "ok echo");
    still_served(&server, &alice, id, 3, 2).await;

    // init returning a tick rate outside 1..=60: no match is made.
    for rate in [0u32, 61] {
        let err = blocking({
            let runtime = runtime.clone();
            move || create_probe(&runtime, serde_json::json!({ "tick_rate": rate }))
        })
        .await
        .expect_err("tick rate out of range");
        let reason = format!("tick rate {rate} is outside 1 to 60");
        assert_eq!(err, RuntimeError::Init(reason.clone()));
        assert_eq!(err.to_string(), format!("match init failed: {reason}"));
        let err = alice
            .rpc("create_probe", &format!(r#"{{"tick_rate":{rate}}}"#))
            .await
            .expect_err("tick rate out of range");
        assert_eq!(err.code(), Some(ErrorCode::RUNTIME_FUNCTION_EXCEPTION));
        assert!(
            err.to_string()
                .contains(&format!("match init failed: {reason}")),
            "{err}"
        );
    }
    still_served(&server, &alice, id, 4, 2).await;

    // Join metadata with an over-long key or value: the SDK refuses it, and so does the
    // server (a raw client); the handler never sees the attempt.
    let want = format!(
        "metadata keys must be 1 to {MAX_PROPERTY_KEY_LEN} bytes, values at most \
         {MAX_PROPERTY_VALUE_LEN}"
    );
    let bob = server.client("bob").await;
    let long_key = BTreeMap::from([("k".repeat(MAX_PROPERTY_KEY_LEN + 1), "v".to_owned())]);
    let long_value = BTreeMap::from([("k".to_owned(), "v".repeat(MAX_PROPERTY_VALUE_LEN + 1))]);
    for metadata in [&long_key, &long_value] {
        let err = bob
            .join_match_with(id, metadata.clone())
            .await
            .expect_err("metadata too long");
        assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
        assert!(err.to_string().contains(&want), "{err}");
    }
    let mut raw = server.raw_session("raw").await;
    for (cid, metadata) in (1..).zip([&long_key, &long_value]) {
        let request = Request::MatchJoinWith {
            match_id: id,
            metadata: metadata.clone(),
        };
        match raw.request(Some(cid), request).await.body {
            ServerBody::Response(Response::Error { code, message }) => {
                assert_eq!(code, ErrorCode::BAD_INPUT);
                assert_eq!(message, want);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let attempts = |who: &str| {
        let prefix = format!("join_attempt {who} ");
        log.lock()
            .expect("log")
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .count()
    };
    assert_eq!((attempts("bob"), attempts("raw")), (0, 0));
    // Both can join with metadata in bounds, and the match carries on.
    let fine = BTreeMap::from([(
        "k".repeat(MAX_PROPERTY_KEY_LEN),
        "v".repeat(MAX_PROPERTY_VALUE_LEN),
    )]);
    bob.join_match_with(id, fine.clone())
        .await
        .expect("bob joins");
    match raw
        .request(
            Some(9),
            Request::MatchJoinWith {
                match_id: id,
                metadata: fine,
            },
        )
        .await
        .body
    {
        ServerBody::Response(Response::Match(m)) => assert_eq!(m.match_id, id),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!((attempts("bob"), attempts("raw")), (1, 1));
    still_served(&server, &alice, id, 5, 2).await;
    data_event(&bob, "bob's welcome").await;
}

#[tokio::test]
async fn an_empty_match_ends_after_max_empty() {
    let log = Log::default();
    let server = start(&log, |c| c.matches.max_empty = Duration::from_secs(1)).await;
    let alice = server.client("alice").await;
    alice.rpc("create_probe", "{}").await.expect("rpc");
    assert_eq!(server.stats.authoritative_matches(), 1);
    let stats = server.stats.clone();
    common::eventually("the empty match ends", || {
        stats.authoritative_matches() == 0
    })
    .await;
    assert!(alice.list_matches().await.expect("list").is_empty());
}

#[tokio::test]
async fn terminate_runs_on_shutdown_and_members_hear_the_end() {
    let log = Log::default();
    let server = start(&log, |_| {}).await;
    let alice = server.client("alice").await;
    let id: MatchId = alice
        .rpc("create_probe", "{}")
        .await
        .expect("rpc")
        .parse()
        .expect("id");
    alice.join_match(id).await.expect("join");
    data_event(&alice, "welcome").await;
    server.stop().await;
    let (mut got_bye, mut got_ended) = (false, false);
    loop {
        match next_event(&alice, "the shutdown").await {
            Event::MatchData(d) if &d.data[..] == b"bye" => got_bye = true,
            Event::MatchEnded { match_id, .. } => {
                assert_eq!(match_id, id);
                got_ended = true;
            }
            Event::Disconnected { .. } => break,
            _ => {}
        }
    }
    assert!(got_bye, "terminate's broadcast arrived");
    assert!(got_ended, "MatchEnded arrived before the disconnect");
    assert!(seen(&log, "terminate 3"), "{:?}", log.lock().expect("log"));
}

#[tokio::test]
async fn rpc_success_errors_and_limits() {
    let log = Log::default();
    let server = start(&log, |_| {}).await;
    let alice = server.client("alice").await;
    let err = alice.rpc("nothing", "").await.expect_err("unknown");
    assert_eq!(err.code(), Some(ErrorCode::RUNTIME_FUNCTION_NOT_FOUND));
    let err = alice.rpc("fail", "").await.expect_err("fails");
    assert_eq!(err.code(), Some(ErrorCode::RUNTIME_FUNCTION_EXCEPTION));
    assert!(err.to_string().contains("the function said no"));
    let err = alice.rpc("panic", "").await.expect_err("panics");
    assert_eq!(err.code(), Some(ErrorCode::RUNTIME_FUNCTION_EXCEPTION));
    // Unknown handler, and a bad listing query, are clear errors too.
    let err = alice
        .rpc("create_probe", "not json")
        .await
        .expect_err("bad params");
    assert_eq!(err.code(), Some(ErrorCode::RUNTIME_FUNCTION_EXCEPTION));
    let err = alice
        .list_matches()
        .query("+label.mode:")
        .await
        .expect_err("bad query");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    let err = alice.list_matches().limit(0).await.expect_err("bad limit");
    assert_eq!(err.code(), Some(ErrorCode::BAD_INPUT));
    // An oversized payload is refused by the server, whatever the client checked.
    let mut raw = server.raw_session("raw").await;
    let reply = raw
        .request(
            Some(5),
            quicmatch_protocol::Request::Rpc {
                id: "fail".into(),
                payload: "x".repeat(quicmatch_protocol::MAX_RPC_PAYLOAD + 1),
            },
        )
        .await;
    match reply.body {
        quicmatch_protocol::ServerBody::Response(quicmatch_protocol::Response::Error {
            code,
            ..
        }) => {
            assert_eq!(code, ErrorCode::PAYLOAD_TOO_LARGE)
        }
        other => panic!("unexpected {other:?}"),
    }
    // Everyone is still served.
    assert_eq!(
        alice.rpc("create_probe", "{}").await.expect("works").len(),
        36
    );
}

/// Counts ticks, and misbehaves on request: panics at tick 50, or blocks 3 s at tick 40
/// (2 s in, time for a player to join first), with `blocked` set meanwhile.
struct Ticker {
    ticks: Arc<AtomicU64>,
    fault: Fault,
    blocked: Arc<AtomicBool>,
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    Panic,
    Block,
}

impl MatchHandler for Ticker {
    fn init(&mut self, _ctx: &MatchContext, _params: &Params) -> Result<MatchInit, String> {
        Ok(MatchInit::new(20))
    }

    fn tick(&mut self, ctx: &MatchContext, _d: &mut Dispatcher<'_>, _m: Vec<Inbound>) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        match self.fault {
            Fault::Panic if ctx.tick() == 50 => panic!("a handler bug at tick 50"),
            Fault::Block if ctx.tick() == 40 => {
                self.blocked.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_secs(3));
                self.blocked.store(false, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_and_a_stuck_handler_end_only_their_own_matches() {
    let ticks: Arc<Vec<Arc<AtomicU64>>> = Arc::new((0..100).map(|_| Arc::default()).collect());
    let next = Arc::new(AtomicU64::new(0));
    let blocked = Arc::new(AtomicBool::new(false));
    let mut config = common::test_config();
    config.matches.overrun_limit = Duration::from_secs(1);
    config.matches.max_empty = Duration::from_secs(600);
    let (t, n, stuck) = (ticks.clone(), next.clone(), blocked.clone());
    let server = TestServer::start_built(config, move |b| {
        b.match_handler("ticker", move || {
            let i = n.fetch_add(1, Ordering::Relaxed) as usize;
            let fault = match i {
                0 => Fault::Panic,
                1 => Fault::Block,
                _ => Fault::None,
            };
            Ticker {
                ticks: t[i.min(99)].clone(),
                fault,
                blocked: stuck.clone(),
            }
        })
    })
    .await;
    let runtime = server.runtime.clone();
    let ids: Vec<MatchId> = tokio::task::spawn_blocking(move || {
        (0..100)
            .map(|_| {
                runtime
                    .create_match("ticker", Params::Null)
                    .expect("create")
            })
            .collect()
    })
    .await
    .expect("created");
    // One player in each faulty match, to hear how it ends.
    let alice = server.client("alice").await;
    alice
        .join_match(ids[0])
        .await
        .expect("join the panicking match");
    alice
        .join_match(ids[1])
        .await
        .expect("join the stuck match");
    // While the stuck handler sleeps in its callback, every other match keeps ticking:
    // counted over a window that starts once it is blocked and ends before it wakes.
    let b = blocked.clone();
    common::eventually("the stuck handler blocks", || b.load(Ordering::SeqCst)).await;
    let before: Vec<u64> = ticks.iter().map(|t| t.load(Ordering::Relaxed)).collect();
    let t = ticks.clone();
    common::eventually("the other 98 matches progress during the block", || {
        (2..100).all(|i| t[i].load(Ordering::Relaxed) >= before[i] + 5)
    })
    .await;
    assert!(
        blocked.load(Ordering::SeqCst),
        "the others progressed only after the stuck handler woke"
    );
    let mut ended = Vec::new();
    while ended.len() < 2 {
        match timeout(TEST_TIMEOUT, alice.next_event())
            .await
            .expect("MatchEnded in time")
        {
            Some(Event::MatchEnded { match_id, reason }) => ended.push((match_id, reason)),
            Some(_) => {}
            None => panic!("alice disconnected"),
        }
    }
    ended.sort_by_key(|(id, _)| ids.iter().position(|i| i == id));
    assert_eq!(ended[0].0, ids[0]);
    assert!(ended[0].1.contains("failed"), "{}", ended[0].1);
    assert_eq!(ended[1].0, ids[1]);
    assert!(ended[1].1.contains("overran"), "{}", ended[1].1);
    assert_eq!(server.stats.authoritative_matches(), 98);
    // Every other match keeps ticking after both ended, too.
    let before: Vec<u64> = ticks.iter().map(|t| t.load(Ordering::Relaxed)).collect();
    let t = ticks.clone();
    common::eventually("the other 98 matches progress", || {
        (2..100).all(|i| t[i].load(Ordering::Relaxed) >= before[i] + 5)
    })
    .await;
    assert_eq!(server.stats.authoritative_matches(), 98);
}

#[tokio::test]
async fn the_matched_hook_creates_an_authoritative_match_for_the_group() {
    let log = Log::default();
    let l = log.clone();
    let server = TestServer::start_built(common::test_config(), move |b| {
        let l = l.clone();
        b.match_handler("probe", move || Invited { log: l.clone() })
            .on_matchmaker_matched(|ctx, _entries| {
                ctx.create_authoritative("probe", Params::Null).ok()
            })
    })
    .await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let carol = server.client("carol").await;
    alice.add_matchmaker("*", 2, 2).await.expect("ticket");
    bob.add_matchmaker("*", 2, 2).await.expect("ticket");
    assert_eq!(server.matchmake(), 1);
    let mut ids = Vec::new();
    for player in [&alice, &bob] {
        match next_event(player, "matched").await {
            Event::MatchmakerMatched(m) => {
                assert!(m.token.is_none());
                ids.push(m.match_id.expect("a match id"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ids[0], ids[1]);
    alice.join_match(ids[0]).await.expect("alice joins");
    bob.join_match(ids[0]).await.expect("bob joins");
    let err = carol
        .join_match(ids[0])
        .await
        .expect_err("carol was not matched");
    assert_eq!(err.code(), Some(ErrorCode::MATCH_JOIN_REJECTED));
    assert!(
        seen(&log, "matched alice,bob"),
        "{:?}",
        log.lock().expect("log")
    );
}

/// Admits only the users the matchmaker placed in the match.
struct Invited {
    log: Log,
}

impl MatchHandler for Invited {
    fn init(&mut self, ctx: &MatchContext, _params: &Params) -> Result<MatchInit, String> {
        let mut names: Vec<&str> = ctx.matched().iter().map(|p| p.username.as_str()).collect();
        names.sort();
        self.log
            .lock()
            .expect("log")
            .push(format!("matched {}", names.join(",")));
        Ok(MatchInit::new(10))
    }

    fn join_attempt(
        &mut self,
        ctx: &MatchContext,
        _d: &mut Dispatcher<'_>,
        presence: &Presence,
        _metadata: &BTreeMap<String, String>,
    ) -> JoinDecision {
        if ctx.matched().iter().any(|p| p.user_id == presence.user_id) {
            JoinDecision::Accept
        } else {
            JoinDecision::Reject("not invited".into())
        }
    }

    fn tick(&mut self, _ctx: &MatchContext, _d: &mut Dispatcher<'_>, _m: Vec<Inbound>) {}
}

#[tokio::test]
async fn relayed_matches_take_labels_sizes_and_privacy() {
    let log = Log::default();
    let server = start(&log, |_| {}).await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let carol = server.client("carol").await;
    use quicmatch_client::MatchOptions;
    let open = alice
        .create_match_with(
            None,
            MatchOptions::default()
                .label(r#"{"mode":"casual"}"#)
                .max_size(2),
        )
        .await
        .expect("create");
    let hidden = bob
        .create_match_with(None, MatchOptions::default().label("secret").private(true))
        .await
        .expect("create private");
    let listed = carol
        .list_matches()
        .authoritative(false)
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|m| m.match_id).collect::<Vec<_>>(),
        [open.match_id]
    );
    assert_eq!(listed[0].max_size, 2);
    assert_eq!(listed[0].size, 1);
    // Private matches are joinable by id all the same; a full one refuses.
    carol.join_match(hidden.match_id).await.expect("join by id");
    bob.join_match(open.match_id).await.expect("second member");
    let err = carol.join_match(open.match_id).await.expect_err("full");
    assert_eq!(err.code(), Some(ErrorCode::MATCH_JOIN_REJECTED));
    let err = carol
        .create_match_with(None, MatchOptions::default().label("x".repeat(2049)))
        .await
        .expect_err("label too long");
    assert!(matches!(
        err.code(),
        Some(ErrorCode::BAD_INPUT | ErrorCode::PAYLOAD_TOO_LARGE)
    ));
    let _keep = (alice, bob);
    let _ = Socket::close;
}

/// What the SDK checks first, the server checks again: a raw client's oversized or
/// malformed requests get clear codes, and the session carries on.
#[tokio::test]
async fn the_server_refuses_bad_runtime_requests_from_raw_clients() {
    use quicmatch_protocol::{MatchListRequest, Request, Response, ServerBody};
    let log = Log::default();
    let server = start(&log, |_| {}).await;
    let mut raw = server.raw_session("raw").await;
    let code_of = |reply: quicmatch_protocol::ServerEnvelope| match reply.body {
        ServerBody::Response(Response::Error { code, .. }) => Some(code),
        _ => None,
    };
    let list = |f: fn(&mut MatchListRequest)| {
        let mut r = MatchListRequest {
            limit: 10,
            authoritative: None,
            label: None,
            min_size: None,
            max_size: None,
            query: None,
        };
        f(&mut r);
        Request::MatchList(r)
    };
    let cases: Vec<(Request, ErrorCode)> = vec![
        (list(|r| r.limit = 0), ErrorCode::BAD_INPUT),
        (list(|r| r.limit = 101), ErrorCode::BAD_INPUT),
        (
            list(|r| r.query = Some("+properties.mode:x".into())),
            ErrorCode::BAD_INPUT,
        ),
        (
            list(|r| r.query = Some("x".repeat(2000))),
            ErrorCode::BAD_INPUT,
        ),
        (
            list(|r| {
                r.min_size = Some(5);
                r.max_size = Some(2)
            }),
            ErrorCode::BAD_INPUT,
        ),
        (
            Request::MatchCreateWith {
                name: None,
                label: Some("x".repeat(quicmatch_protocol::MAX_LABEL_LEN + 1)),
                max_size: None,
                private: false,
            },
            ErrorCode::BAD_INPUT,
        ),
        (
            Request::MatchCreateWith {
                name: None,
                label: None,
                max_size: Some(1),
                private: false,
            },
            ErrorCode::BAD_INPUT,
        ),
        (
            Request::MatchJoinWith {
                match_id: MatchId::new_random(),
                metadata: (0..40).map(|i| (format!("k{i}"), "v".into())).collect(),
            },
            ErrorCode::BAD_INPUT,
        ),
        (
            Request::MatchJoinWith {
                match_id: MatchId::new_random(),
                metadata: BTreeMap::new(),
            },
            ErrorCode::MATCH_NOT_FOUND,
        ),
        (
            Request::Rpc {
                id: String::new(),
                payload: String::new(),
            },
            ErrorCode::BAD_INPUT,
        ),
        (
            Request::Rpc {
                id: "nothing".into(),
                payload: String::new(),
            },
            ErrorCode::RUNTIME_FUNCTION_NOT_FOUND,
        ),
    ];
    for (cid, (request, want)) in (10..).zip(cases) {
        let what = format!("{request:?}");
        let code = code_of(raw.request(Some(cid), request).await);
        assert_eq!(code, Some(want), "{}", &what[..what.len().min(120)]);
    }
    // A message with no match is refused as before, and the session still answers.
    let reply = raw.request(Some(99), Request::Ping).await;
    assert!(matches!(reply.body, ServerBody::Response(Response::Pong)));
}
