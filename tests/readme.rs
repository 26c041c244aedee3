//! The README's Rust snippets, compiled and run against a real server.
//!
//! Every ```rust block in README.md is copied, byte for byte, into a function below
//! between `// README:<name>-start` and `// README:<name>-end` comments; the names it
//! leaves free (`addr`, `trust`, `socket`, ...) are that function's parameters.
//! `readme_snippets_match` fails when a README block and the copies here differ, so the
//! README cannot change without this file; the other tests run each function and check
//! what it did.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{assert_no_event, next_event, TestServer, TEST_TIMEOUT};
use quicmatch_client::{
    ClientConfig, CloseCode, Credentials, Event, Match, MatchmakerMatched, PartyInfo, Presence,
    Socket, TicketId, Trust,
};
use rustls::pki_types::CertificateDer;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const README: &str = include_str!("../README.md");
const THIS_FILE: &str = include_str!("readme.rs");

// ---------------------------------------------------------------------------------------
// The snippets, exactly as in README.md (hence `rustfmt::skip`).

/// README, "The Rust SDK".
#[rustfmt::skip]
async fn sdk(addr: SocketAddr, trust: Trust) -> anyhow::Result<()> {
    // README:sdk-start
    use quicmatch_client::{ClientConfig, Credentials, Event, SendOptions, Socket};

    let config = ClientConfig::new(
        addr,  // the server's UDP address: "127.0.0.1:7350".parse()?, or a DiscoveredServer's
        trust, // Trust::CaFile("certs/server.crt".into()), Trust::pin("2aa6bf69...")?, Trust::PlatformRoots
        Credentials::Device { id: "alice-device-01".into() },
    )
    .username("alice");
    let socket = Socket::connect(config).await?;

    let game = socket.create_match(Some("lobby")).await?;     // join-or-create by name; None, or join_match(id)
    println!("in match {} (others join it with this id)", game.match_id);
    socket.send_match_data(game.match_id, 1, b"pos 1 2".to_vec(), SendOptions::unreliable(), None).await?; // a datagram
    socket.send_match_data(game.match_id, 2, b"score".to_vec(), SendOptions::reliable(), None).await?;     // ordered stream

    while let Some(event) = socket.next_event().await {
        match event {
            Event::MatchPresence(p) => println!("joined {:?} left {:?}", p.joins, p.leaves),
            Event::MatchData(d) if d.op_code == 99 => break,  // your game's "game over"
            Event::MatchData(d) => println!("{} op {} seq {}: {:?}", d.sender.username, d.op_code, d.seq, d.data),
            Event::Error { code, message } => eprintln!("{code}: {message}"),
            Event::Reconnecting { reason, .. } => eprintln!("connection lost ({reason}); resuming"),
            Event::Reconnected { .. } => eprintln!("resumed: nothing was lost"),
            Event::Disconnected { reason, .. } => {
                println!("the session ended: {reason}");          // e.g. the server shut down
                return Ok(());                                     // nothing left to leave or close
            }
            _ => {}
        }
    }
    socket.leave_match(game.match_id).await?;
    socket.close().await;
    // README:sdk-end
    Ok(())
}

/// README, "Reconnects": resuming by hand.
#[rustfmt::skip]
async fn resume_by_hand(
    addr: SocketAddr,
    trust: Trust,
    saved_token: String,
    saved_last_seq: u64,
) -> anyhow::Result<Socket> {
    // README:resume-start
    let config = ClientConfig::new(addr, trust, Credentials::Resume {
        token: saved_token,          // socket.session().token
        last_seq: saved_last_seq,    // socket.last_event_seq()
    });
    let socket = Socket::connect(config).await?; // socket.session().resumed; missed events follow
    // README:resume-end
    Ok(socket)
}

/// README, "Matchmaker".
#[rustfmt::skip]
async fn matchmaker(socket: &Socket) -> anyhow::Result<(TicketId, Match)> {
    // README:matchmaker-start
    let ticket = socket
        .add_matchmaker("+properties.region:eu +properties.rank:>=3 +properties.rank:<=7", 2, 4)
        .string_property("region", "eu")
        .numeric_property("rank", 5.0)
        .await?;
    let game = loop {
        match socket.next_event().await {
            // A token, or a match id when an `on_matchmaker_matched` hook made the match.
            Some(Event::MatchmakerMatched(m)) => match (m.token, m.match_id) {
                (Some(token), _) => break socket.join_match_token(&token).await?,
                (None, Some(id)) => break socket.join_match(id).await?,
                (None, None) => anyhow::bail!("a result names a token or a match"),
            },
            Some(_) => {} // other events, as in your event loop
            None => anyhow::bail!("disconnected before a match formed"),
        }
    };
    // README:matchmaker-end
    Ok((ticket, game))
}

/// README, "Matchmaker": roles, teams, widening and expiry.
#[rustfmt::skip]
async fn roles(socket: &Socket) -> anyhow::Result<(TicketId, MatchmakerMatched, Option<u32>)> {
    // README:roles-start
    let ticket = socket
        .add_matchmaker("+properties.region:eu", 4, 4)
        .string_property("region", "eu")
        .string_property("role", "tank")                    // a party lists one per member: "tank,healer"
        .numeric_property("skill", 1200.0)
        .composition("role", [("tank", 1), ("healer", 1)])  // per team
        .teams(2)
        .balance_teams_on("skill")
        .fallback_query("*", 5)                             // after 5 passes, any region
        .expires_after(30)                                  // after 30 passes, give up
        .await?;
    let (matched, my_team) = loop {
        match socket.next_event().await {
            Some(Event::MatchmakerMatchedTeams(m)) => {
                let me = m.matched.users.iter().position(|u| u.presence == m.matched.self_user.presence);
                let team = me.and_then(|i| m.teams.get(i).copied());
                break (m.matched, team); // join with m.matched.token, as above
            }
            Some(Event::MatchmakerTicketCancelled { reason, .. }) => anyhow::bail!("no match: {reason}"), // "expired"
            Some(_) => {}
            None => anyhow::bail!("disconnected before a match formed"),
        }
    };
    // README:roles-end
    Ok((ticket, matched, my_team))
}

/// README, "Parties".
#[rustfmt::skip]
async fn parties(
    leader: &Socket,
    friend: &Socket,
    friend_presence: Presence,
) -> anyhow::Result<(PartyInfo, TicketId)> {
    // README:parties-start
    let party = leader.create_party(false, 4).await?;          // closed: joins need approval
    friend.join_party(party.party_id).await?;                  // leader gets Event::PartyJoinRequest
    leader.accept_party_member(party.party_id, &friend_presence).await?; // friend gets Event::Party
    let ticket = leader.add_matchmaker_party(party.party_id, "*", 3, 4).await?;
    // friend gets Event::PartyMatchmakerTicket; when matched, both get Event::MatchmakerMatched with party_id
    // README:parties-end
    Ok((party, ticket))
}

// ---------------------------------------------------------------------------------------
// README blocks and the copies above are the same.

/// A ```rust block of README.md: its first line's number (1-based) and its text.
struct Block {
    line: usize,
    text: String,
}

/// Lines without trailing whitespace, without leading or trailing blank lines, and
/// without the indentation they all share.
fn normalize<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let lines: Vec<&str> = lines.into_iter().map(str::trim_end).collect();
    let first = lines.iter().position(|l| !l.is_empty());
    let last = lines.iter().rposition(|l| !l.is_empty());
    let (Some(first), Some(last)) = (first, last) else {
        return String::new();
    };
    let lines = &lines[first..=last];
    let indent = lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn readme_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if line.trim() != "```rust" {
            continue;
        }
        let body: Vec<&str> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| !l.trim_start().starts_with("```"))
            .collect();
        blocks.push(Block {
            line: i + 2,
            text: normalize(body),
        });
    }
    blocks
}

/// The `// README:<name>-start` ... `// README:<name>-end` regions of `source`.
fn marked_regions(source: &str) -> Vec<(String, String)> {
    let mut regions = Vec::new();
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("// README:")
            .and_then(|rest| rest.strip_suffix("-start"))
        else {
            continue;
        };
        let end = format!("// README:{name}-end");
        let mut body = Vec::new();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("README region `{name}` has no `{end}`"));
            if line.trim() == end {
                break;
            }
            assert!(
                !line.trim().starts_with("// README:"),
                "README region `{name}` contains another marker: {line}"
            );
            body.push(line);
        }
        regions.push((name.to_owned(), normalize(body)));
    }
    regions
}

/// How a README block differs from the region most like it.
fn closest(block: &Block, regions: &[(String, String)]) -> String {
    let common = |a: &str, b: &str| a.lines().zip(b.lines()).take_while(|(x, y)| x == y).count();
    let Some((name, text)) = regions
        .iter()
        .max_by_key(|(_, text)| common(&block.text, text))
    else {
        return "there are no marked regions".into();
    };
    let n = common(&block.text, text);
    format!(
        "the closest is `{name}`, which first differs at snippet line {}:\n  README: {:?}\n  test:   {:?}",
        n + 1,
        block.text.lines().nth(n).unwrap_or("<end of snippet>"),
        text.lines().nth(n).unwrap_or("<end of region>"),
    )
}

#[test]
fn readme_snippets_match() {
    let blocks = readme_blocks(README);
    let regions = marked_regions(THIS_FILE);
    assert!(!blocks.is_empty(), "README.md has no ```rust blocks");
    for (i, (name, _)) in regions.iter().enumerate() {
        assert!(
            regions[..i].iter().all(|(other, _)| other != name),
            "two regions are named `{name}`"
        );
    }
    let mut problems = Vec::new();
    for block in &blocks {
        if !regions.iter().any(|(_, text)| *text == block.text) {
            problems.push(format!(
                "README.md line {} (```rust block starting {:?}) is in no `// README:` region \
                 of tests/readme.rs; {}",
                block.line,
                block.text.lines().next().unwrap_or(""),
                closest(block, &regions),
            ));
        }
    }
    for (name, text) in &regions {
        if !blocks.iter().any(|b| b.text == *text) {
            problems.push(format!(
                "region `{name}` of tests/readme.rs is no ```rust block of README.md"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "README.md and tests/readme.rs disagree (copy each README snippet into its \
         region, and run it below):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_every_block_and_region() {
    let readme = "text\n```rust\n  let a = 1;  \n\n```\n```sh\nls\n```\n```rust\nlet b = 2;\n```\n";
    let blocks = readme_blocks(readme);
    assert_eq!(blocks.len(), 2);
    assert_eq!((blocks[0].line, blocks[0].text.as_str()), (3, "let a = 1;"));
    assert_eq!(
        (blocks[1].line, blocks[1].text.as_str()),
        (10, "let b = 2;")
    );
    let source =
        "fn f() {\n    // README:x-start\n    if a {\n        b\n    }\n    // README:x-end\n}\n";
    assert_eq!(
        marked_regions(source),
        vec![("x".to_owned(), "if a {\n    b\n}".to_owned())]
    );
    let names: Vec<String> = marked_regions(THIS_FILE)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names,
        [
            "sdk",
            "resume",
            "matchmaker",
            "roles",
            "parties",
            "authoritative",
            "restart",
            "storage",
            "storage-server"
        ]
    );
    assert_eq!(readme_blocks(README).len(), names.len());
}

/// README, "Server-authoritative matches".
#[rustfmt::skip]
fn authoritative(config: quicmatch::Config) -> anyhow::Result<quicmatch::Server> {
    // README:authoritative-start
    use quicmatch::runtime::{Dispatcher, Inbound, MatchContext, MatchHandler, MatchInit, Params};

    struct Echo;

    impl MatchHandler for Echo {
        fn init(&mut self, _ctx: &MatchContext, _params: &Params) -> Result<MatchInit, String> {
            Ok(MatchInit::new(20).label(r#"{"mode":"echo"}"#))   // 20 ticks a second, listed
        }
        fn tick(&mut self, _ctx: &MatchContext, d: &mut Dispatcher<'_>, inputs: Vec<Inbound>) {
            for input in inputs {                                 // everything since the last tick
                d.broadcast(2, input.data, None, None, false);    // op 2 to everyone, as a datagram
            }
        }
    }

    let server = quicmatch::Server::builder(config)
        .match_handler("echo", || Echo)
        .rpc("create_echo", |ctx, _payload| {
            ctx.runtime.create_match("echo", Params::Null).map(|id| id.to_string()).map_err(|e| e.to_string())
        })
        .bind()?;
    // README:authoritative-end
    Ok(server)
}

#[tokio::test]
async fn authoritative_snippet_echoes_inputs_to_everyone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::test_config();
    config.certs_dir = dir.path().to_path_buf();
    let server = authoritative(config).expect("bind");
    let addr = server.local_addr();
    let cert = server.cert_der().clone();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let serving = tokio::spawn(server.serve(async move { token.cancelled().await }));
    let alice = connect(addr, &cert, "alice").await;
    let bob = connect(addr, &cert, "bob").await;
    let id: quicmatch_client::MatchId = alice
        .rpc("create_echo", "{}")
        .await
        .expect("rpc")
        .parse()
        .expect("a match id");
    let listed = bob
        .list_matches()
        .query("+label.mode:echo")
        .await
        .expect("list");
    assert_eq!(listed.iter().map(|m| m.match_id).collect::<Vec<_>>(), [id]);
    alice.join_match(id).await.expect("alice joins");
    bob.join_match(id).await.expect("bob joins");
    alice
        .send_match_data(id, 1, b"jump".to_vec(), false, None)
        .await
        .expect("input");
    for player in [&alice, &bob] {
        loop {
            match next_event(player, "the echo").await {
                Event::MatchData(d) => {
                    assert!(d.from_server() && !d.reliable);
                    assert_eq!((d.op_code, &d.data[..]), (2, &b"jump"[..]));
                    break;
                }
                Event::MatchPresence(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    stop.cancel();
    timeout(TEST_TIMEOUT, serving)
        .await
        .expect("stops")
        .expect("serve");
}

/// README, "Restarts".
#[rustfmt::skip]
fn restart(config: quicmatch::Config) -> anyhow::Result<quicmatch::Server> {
    // README:restart-start
    use quicmatch::runtime::{Dispatcher, Inbound, MatchContext, MatchHandler, MatchInit, Params};

    #[derive(Default, serde::Serialize, serde::Deserialize)]
    struct Counter {
        inputs: u64,
    }

    impl MatchHandler for Counter {
        fn init(&mut self, _ctx: &MatchContext, _params: &Params) -> Result<MatchInit, String> {
            Ok(MatchInit::new(10).label("counter"))
        }
        fn tick(&mut self, _ctx: &MatchContext, d: &mut Dispatcher<'_>, inputs: Vec<Inbound>) {
            if !inputs.is_empty() {
                self.inputs += inputs.len() as u64;
                d.broadcast(2, self.inputs.to_string(), None, None, true);
            }
        }
        fn snapshot(&mut self, _ctx: &MatchContext) -> Option<Vec<u8>> {
            serde_json::to_vec(self).ok()                  // the whole game state
        }
        fn restore(&mut self, _ctx: &MatchContext, snapshot: &[u8]) -> Result<MatchInit, String> {
            *self = serde_json::from_slice(snapshot).map_err(|e| e.to_string())?;
            Ok(MatchInit::new(10).label("counter"))        // as init would
        }
    }
    // README:restart-end
    Ok(quicmatch::Server::builder(config)
        .match_handler("counter", Counter::default)
        .bind()?)
}

/// The snippet's counter keeps counting across a restart: inputs before the stop and
/// after it add up.
#[tokio::test]
async fn restart_snippet_keeps_counting_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::test_config();
    config.certs_dir = dir.path().join("certs");
    config.data_dir = dir.path().join("data");
    config.matches.snapshot_interval = Duration::from_millis(100);
    let run = |config: quicmatch::Config| {
        let server = restart(config).expect("bind");
        let (addr, cert) = (server.local_addr(), server.cert_der().clone());
        let runtime = server.runtime();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let serving = tokio::spawn(server.serve(async move { token.cancelled().await }));
        (addr, cert, runtime, stop, serving)
    };
    /// Sends `n` inputs, then waits until the match counts to `total`.
    async fn count_to(player: &Socket, id: quicmatch_client::MatchId, n: usize, total: &str) {
        for _ in 0..n {
            player
                .send_match_data(id, 1, b"x".to_vec(), true, None)
                .await
                .expect("input");
        }
        loop {
            if let Event::MatchData(d) = next_event(player, "the count").await {
                if d.data[..] == *total.as_bytes() {
                    return;
                }
            }
        }
    }
    async fn stop_serving(stop: CancellationToken, serving: tokio::task::JoinHandle<()>) {
        stop.cancel();
        timeout(TEST_TIMEOUT, serving)
            .await
            .expect("stops")
            .expect("serve");
    }
    let (addr, cert, runtime, stop, serving) = run(config.clone());
    let id = runtime
        .create_match("counter", serde_json::Value::Null)
        .expect("create");
    let alice = connect(addr, &cert, "alice").await;
    alice.join_match(id).await.expect("join");
    count_to(&alice, id, 3, "3").await;
    stop_serving(stop, serving).await;
    // The same data_dir and certs_dir: the match is restored, alice resumes.
    config.listen = addr;
    let (_, _, _, stop, serving) = run(config);
    loop {
        if let Event::Reconnected { .. } = next_event(&alice, "the resume").await {
            break;
        }
    }
    count_to(&alice, id, 1, "4").await;
    stop_serving(stop, serving).await;
}

// ---------------------------------------------------------------------------------------
// Running them.

fn trust(cert: &CertificateDer<'static>) -> Trust {
    Trust::Certificates(vec![cert.clone()])
}

async fn connect(addr: SocketAddr, cert: &CertificateDer<'static>, name: &str) -> Socket {
    let config = ClientConfig::new(
        addr,
        trust(cert),
        Credentials::Device {
            id: format!("device-{name}-0000"),
        },
    )
    .username(name);
    timeout(TEST_TIMEOUT, Socket::connect(config))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Runs matchmaker passes by hand until one forms a group (tickets wait a pass or two
/// for their largest size first).
fn matchmake_one_group(stats: &quicmatch::Stats) {
    let handle = stats.matchmaker_handle();
    let mut groups = 0;
    for _ in 0..5 {
        groups += handle.process(std::time::Instant::now());
        if groups > 0 {
            break;
        }
    }
    assert_eq!(groups, 1, "one group forms");
}

async fn matched(socket: &Socket, what: &str) -> MatchmakerMatched {
    match next_event(socket, what).await {
        Event::MatchmakerMatched(m) => m,
        other => panic!("expected a matchmaker result ({what}), got {other:?}"),
    }
}

#[tokio::test]
async fn sdk_snippet_plays_until_game_over() {
    let server = TestServer::start().await;
    let bob = server.client("bob").await;
    let lobby = bob
        .create_match(Some("lobby"))
        .await
        .expect("bob creates the lobby");

    let bob_plays = async {
        // Alice joins bob's lobby by name and sends a datagram and a reliable message
        // (the datagram may overtake the join's presence event).
        let (mut alice, mut datagram, mut reliable) = (None, None, None);
        while alice.is_none() || datagram.is_none() || reliable.is_none() {
            match next_event(&bob, "alice joining and sending").await {
                Event::MatchPresence(p) if p.leaves.is_empty() && p.joins.len() == 1 => {
                    alice = p.joins.into_iter().next();
                }
                Event::MatchData(d) if d.op_code == 1 => datagram = Some(d),
                Event::MatchData(d) if d.op_code == 2 => reliable = Some(d),
                other => panic!("unexpected {other:?}"),
            }
        }
        let (alice, datagram, reliable) = (
            alice.expect("alice"),
            datagram.expect("datagram"),
            reliable.expect("reliable"),
        );
        assert_eq!(alice.username, "alice");
        for d in [&datagram, &reliable] {
            assert_eq!(d.match_id, lobby.match_id);
            assert_eq!(d.sender, alice);
        }
        assert_eq!(
            (&datagram.data[..], datagram.reliable),
            (&b"pos 1 2"[..], false)
        );
        assert_eq!(
            (&reliable.data[..], reliable.reliable),
            (&b"score"[..], true)
        );

        // Bob sends something, then "game over": alice's loop ends and she leaves.
        bob.send_match_data(lobby.match_id, 1, b"hi alice".to_vec(), true, None)
            .await
            .expect("send");
        bob.send_match_data(lobby.match_id, 99, Vec::new(), true, None)
            .await
            .expect("game over");
        match next_event(&bob, "alice leaving after game over").await {
            Event::MatchPresence(p) => {
                assert!(p.joins.is_empty());
                assert_eq!(p.leaves, vec![alice.clone()]);
            }
            other => panic!("unexpected {other:?}"),
        }
        alice
    };
    let (result, alice) = tokio::join!(
        timeout(TEST_TIMEOUT, sdk(server.addr, trust(&server.cert))),
        bob_plays
    );
    result
        .expect("the snippet finishes in time")
        .expect("the snippet succeeds");
    assert_eq!(alice.username, "alice");
    assert_eq!(
        bob.match_presences(lobby.match_id),
        Some(vec![bob.presence()])
    );
}

#[tokio::test]
async fn sdk_snippet_ends_cleanly_when_the_server_goes_away() {
    let server = TestServer::start().await;
    let (addr, cert) = (server.addr, server.cert.clone());
    let bob = server.client("bob").await;
    bob.create_match(Some("lobby"))
        .await
        .expect("bob creates the lobby");

    let stop = async {
        // Alice has sent everything and is in her event loop.
        loop {
            match next_event(&bob, "alice's reliable message").await {
                Event::MatchData(d) if d.reliable => {
                    assert_eq!(&d.data[..], b"score");
                    break;
                }
                Event::MatchPresence(_) | Event::MatchData(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        server.stop().await;
    };
    let (result, ()) = tokio::join!(timeout(TEST_TIMEOUT, sdk(addr, trust(&cert))), stop);
    // The session's end is the snippet's end, not an error.
    result
        .expect("the snippet finishes in time")
        .expect("a server that goes away ends the snippet cleanly");
}

#[tokio::test]
async fn resume_snippet_takes_the_session_over_and_replays_what_was_missed() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join");
    assert!(matches!(
        next_event(&alice, "bob joins").await,
        Event::MatchPresence(_)
    ));
    // What a process would save before it dies: it has processed bob's join...
    let saved_token = alice.session().token.clone();
    let saved_last_seq = alice.last_event_seq();
    assert!(saved_last_seq > 0, "events are numbered");
    // ... but not this, which its old connection receives after the save.
    bob.send_match_data(m.match_id, 7, b"while you restarted".to_vec(), true, None)
        .await
        .expect("send");
    assert!(matches!(
        next_event(&alice, "the message, on the old connection").await,
        Event::MatchData(_)
    ));

    let socket = timeout(
        TEST_TIMEOUT,
        resume_by_hand(
            server.addr,
            trust(&server.cert),
            saved_token,
            saved_last_seq,
        ),
    )
    .await
    .expect("resume in time")
    .expect("resume");
    assert!(socket.session().resumed);
    assert_eq!(socket.presence(), alice.presence(), "the same session");
    assert!(socket
        .session()
        .matches
        .iter()
        .any(|info| info.match_id == m.match_id));
    match next_event(&socket, "the replayed message").await {
        Event::MatchData(d) => {
            assert_eq!((d.op_code, &d.data[..]), (7, &b"while you restarted"[..]));
            assert_eq!(d.sender, bob.presence());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(socket.last_event_seq() > saved_last_seq);
    // The old connection was taken over, and nobody saw alice leave.
    match next_event(&alice, "the old connection's end").await {
        Event::Disconnected { code, .. } => assert_eq!(code, Some(CloseCode::SESSION_REPLACED)),
        other => panic!("unexpected {other:?}"),
    }
    assert_no_event(&bob, Duration::from_millis(200)).await;
    socket
        .send_match_data(m.match_id, 8, b"back".to_vec(), true, None)
        .await
        .expect("send");
    match next_event(&bob, "alice's message after the resume").await {
        Event::MatchData(d) => assert_eq!(d.sender, alice.presence()),
        other => panic!("unexpected {other:?}"),
    }
}

/// Alice runs the matchmaker snippet; bob fits her query, carol (rank 9) does not.
/// Returns bob's result, alice's match and bob's.
async fn matchmaker_scenario(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    stats: &quicmatch::Stats,
) -> (MatchmakerMatched, Match, Match) {
    let alice = connect(addr, cert, "alice").await;
    let bob = connect(addr, cert, "bob").await;
    let carol = connect(addr, cert, "carol").await;
    bob.add_matchmaker("+properties.region:eu +properties.rank:<=7", 2, 4)
        .string_property("region", "eu")
        .numeric_property("rank", 4.0)
        .await
        .expect("bob's ticket");
    carol
        .add_matchmaker("*", 2, 4)
        .string_property("region", "eu")
        .numeric_property("rank", 9.0)
        .await
        .expect("carol's ticket");

    let bob_plays = async {
        common::eventually("alice's ticket", || stats.matchmaker().tickets == 3).await;
        matchmake_one_group(stats);
        let m = matched(&bob, "bob's result").await;
        let game = match (&m.token, m.match_id) {
            (Some(token), _) => bob.join_match_token(token).await,
            (None, Some(id)) => bob.join_match(id).await,
            (None, None) => panic!("a result without a token or match: {m:?}"),
        }
        .expect("bob joins");
        (m, game)
    };
    let (result, (m, bob_game)) =
        tokio::join!(timeout(TEST_TIMEOUT, matchmaker(&alice)), bob_plays);
    let (ticket, alice_game) = result
        .expect("the snippet finishes in time")
        .expect("the snippet succeeds");

    let users: Vec<&Presence> = m.users.iter().map(|u| &u.presence).collect();
    assert_eq!(users.len(), 2);
    assert!(users.contains(&&alice.presence()) && users.contains(&&bob.presence()));
    let alice_user = m
        .users
        .iter()
        .find(|u| u.presence == alice.presence())
        .expect("alice in bob's result");
    assert_eq!(alice_user.string_properties["region"], "eu");
    assert_eq!(alice_user.numeric_properties["rank"], 5.0);
    assert_eq!(alice_game.match_id, bob_game.match_id);
    assert_eq!(alice_game.self_presence, alice.presence());
    // The ticket is spent, and carol, whom alice's query excludes, still waits.
    let err = alice.remove_matchmaker(ticket).await.expect_err("matched");
    assert_eq!(
        err.code(),
        Some(quicmatch_client::ErrorCode::TICKET_NOT_FOUND)
    );
    assert_eq!(stats.matchmaker().tickets, 1);
    assert_no_event(&carol, Duration::from_millis(100)).await;
    (m, alice_game, bob_game)
}

#[tokio::test]
async fn matchmaker_snippet_joins_with_the_token() {
    let server = TestServer::start().await;
    let (m, alice_game, _) = matchmaker_scenario(server.addr, &server.cert, &server.stats).await;
    assert!(m.token.is_some() && m.match_id.is_none());
    assert!(alice_game.size >= 1);
}

/// A server whose `on_matchmaker_matched` hook creates every group's match.
struct HookedServer {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    stats: quicmatch::Stats,
    stop: CancellationToken,
}

impl HookedServer {
    fn start() -> Self {
        common::init_tracing();
        let material = quicmatch::tls::generate(vec!["127.0.0.1".into()]).expect("certificate");
        let server = quicmatch::Server::builder(common::test_config())
            .certificate(material)
            .secret([7u8; 32])
            .on_matchmaker_matched(|ctx, _entries| Some(ctx.create_match()))
            .bind()
            .expect("bind");
        let stop = CancellationToken::new();
        let token = stop.clone();
        let this = Self {
            addr: server.local_addr(),
            cert: server.cert_der().clone(),
            stats: server.stats(),
            stop,
        };
        tokio::spawn(server.serve(async move { token.cancelled().await }));
        this
    }
}

impl Drop for HookedServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn matchmaker_snippet_joins_the_match_a_hook_made() {
    let server = HookedServer::start();
    let (m, alice_game, bob_game) =
        matchmaker_scenario(server.addr, &server.cert, &server.stats).await;
    assert!(m.token.is_none());
    assert_eq!(m.match_id, Some(alice_game.match_id));
    assert_eq!(bob_game.match_id, alice_game.match_id);
}

#[tokio::test]
async fn roles_snippet_gets_a_team_in_a_full_composition() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let mut others = Vec::new();
    for (name, role, skill) in [
        ("bob", "tank", 1000.0),
        ("carol", "healer", 1500.0),
        ("dave", "healer", 1100.0),
    ] {
        let s = server.client(name).await;
        s.add_matchmaker("*", 4, 4)
            .string_property("region", "eu")
            .string_property("role", role)
            .numeric_property("skill", skill)
            .composition("role", [("tank", 1), ("healer", 1)])
            .teams(2)
            .balance_teams_on("skill")
            .await
            .expect("ticket");
        others.push(s);
    }
    let stats = server.stats.clone();
    let pass = async {
        common::eventually("alice's ticket", || stats.matchmaker().tickets == 4).await;
        assert_eq!(server.matchmake(), 1);
    };
    let (result, ()) = tokio::join!(timeout(TEST_TIMEOUT, roles(&alice)), pass);
    let (_ticket, matched, team) = result
        .expect("the snippet finishes in time")
        .expect("the snippet succeeds");
    assert_eq!(matched.users.len(), 4);
    assert!(matched.token.is_some());
    let team = team.expect("alice has a team");
    // The tanks play apart; so do the healers; skills 1200+1100 vs 1000+1500 balance
    // better than 1200+1500 vs 1000+1100.
    for s in &others {
        match next_event(s, "teams").await {
            Event::MatchmakerMatchedTeams(m) => {
                let of = |name: &str| {
                    let i = m
                        .matched
                        .users
                        .iter()
                        .position(|u| u.presence.username == name);
                    m.teams[i.expect("user")]
                };
                assert_eq!(of("alice"), team);
                assert_ne!(of("alice"), of("bob"));
                assert_ne!(of("carol"), of("dave"));
                assert_eq!(of("alice"), of("dave"));
            }
            other => panic!("expected teams, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn parties_snippet_matches_the_party_together() {
    let server = TestServer::start().await;
    let leader = server.client("leader").await;
    let friend = server.client("friend").await;
    let solo = server.client("solo").await;
    let friend_presence = friend.presence();

    let (party, ticket) = timeout(
        TEST_TIMEOUT,
        parties(&leader, &friend, friend_presence.clone()),
    )
    .await
    .expect("the snippet finishes in time")
    .expect("the snippet succeeds");
    assert!(!party.open);
    assert_eq!(party.max_size, 4);

    match next_event(&leader, "the join request").await {
        Event::PartyJoinRequest {
            party_id,
            presences,
        } => {
            assert_eq!(party_id, party.party_id);
            assert_eq!(presences, vec![friend_presence.clone()]);
        }
        other => panic!("unexpected {other:?}"),
    }
    match next_event(&leader, "the friend joining").await {
        Event::PartyPresence { joins, leaves, .. } => {
            assert_eq!(joins, vec![friend_presence.clone()]);
            assert!(leaves.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    match next_event(&friend, "the party snapshot").await {
        Event::Party(info) => {
            assert_eq!(info.party_id, party.party_id);
            assert_eq!(
                info.presences,
                vec![leader.presence(), friend_presence.clone()]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    match next_event(&friend, "the party's ticket").await {
        Event::PartyMatchmakerTicket {
            party_id,
            ticket: t,
        } => {
            assert_eq!((party_id, t), (party.party_id, ticket));
        }
        other => panic!("unexpected {other:?}"),
    }

    solo.add_matchmaker("*", 3, 4).await.expect("solo ticket");
    matchmake_one_group(&server.stats);
    // The leader's next event is the result: it got the ticket as the reply instead.
    for who in [&leader, &friend, &solo] {
        let m = matched(who, "the result").await;
        assert_eq!(m.users.len(), 3);
        let expected = (!std::ptr::eq(who, &solo)).then_some(party.party_id);
        assert_eq!(m.self_user.party_id, expected);
    }
}

/// README, "Storage": a client's own objects.
#[rustfmt::skip]
async fn storage(socket: &Socket) -> anyhow::Result<()> {
    // README:storage-start
    use quicmatch_client::{ReadPermission, WritePermission};

    // Save into an empty slot: anyone may read it, only its owner may change it.
    let saved = socket
        .write_storage_object("saves", "slot1", r#"{"level":3,"gold":120}"#)
        .if_absent()                                     // else STORAGE_VERSION_CONFLICT
        .permissions(ReadPermission::PublicRead, WritePermission::OwnerWrite)
        .await?;
    // Update it only if nobody wrote it since (another device of the same player).
    socket
        .write_storage_object("saves", "slot1", r#"{"level":4,"gold":80}"#)
        .version(saved.version)
        .await?;
    if let Some(save) = socket.read_storage_object("saves", "slot1").await? {
        println!("{} at version {}", save.value, save.version);
    }
    // Everyone's saves you may read, a page at a time.
    let mut page = socket.list_storage_objects("saves").limit(50).await?;
    while let Some(cursor) = page.cursor.take() {
        page = socket.list_storage_objects("saves").limit(50).cursor(cursor).await?;
    }
    socket.delete_storage_object("saves", "slot1", None).await?;
    // README:storage-end
    Ok(())
}

/// README, "Storage": server code with full access.
#[rustfmt::skip]
fn grant(config: quicmatch::Config) -> anyhow::Result<quicmatch::Server> {
    // README:storage-server-start
    use quicmatch::storage::{ObjectWrite, ReadPermission, WritePermission};

    let server = quicmatch::Server::builder(config)
        .rpc("claim_reward", |ctx, _payload| {
            // The player may read it but never change it; only server code can.
            let reward = ObjectWrite::new("inventory", "daily_reward", r#"{"gold":50}"#)
                .owner(ctx.caller.user_id)
                .if_absent()                                 // once
                .permissions(ReadPermission::OwnerRead, WritePermission::NoWrite);
            let acks = ctx.runtime.storage().write(vec![reward]).map_err(|e| e.to_string())?;
            Ok(acks[0].version.clone())
        })
        .bind()?;
    // README:storage-server-end
    Ok(server)
}

#[tokio::test]
async fn the_storage_snippets_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::test_config();
    config.data_dir = dir.path().into();
    let server = TestServer::start_with(config).await;
    let socket = server.client("alice").await;
    timeout(TEST_TIMEOUT, storage(&socket))
        .await
        .expect("in time")
        .expect("the client snippet");
    assert!(socket
        .read_storage_object("saves", "slot1")
        .await
        .expect("read")
        .is_none());

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::test_config();
    config.data_dir = dir.path().into();
    let server = grant(config).expect("bind");
    let (addr, cert) = (server.local_addr(), server.cert_der().clone());
    let stop = CancellationToken::new();
    let token = stop.clone();
    let serving = tokio::spawn(server.serve(async move { token.cancelled().await }));
    let config = ClientConfig::new(
        addr,
        Trust::Certificates(vec![cert]),
        Credentials::Device {
            id: "device-reward-0000".into(),
        },
    );
    let socket = timeout(TEST_TIMEOUT, Socket::connect(config))
        .await
        .expect("in time")
        .expect("connect");
    socket
        .rpc("claim_reward", "")
        .await
        .expect("the first claim");
    let again = socket.rpc("claim_reward", "").await.expect_err("once");
    assert_eq!(
        again.code(),
        Some(quicmatch_client::ErrorCode::RUNTIME_FUNCTION_EXCEPTION)
    );
    let reward = socket
        .read_storage_object("inventory", "daily_reward")
        .await
        .expect("read")
        .expect("granted");
    assert_eq!(reward.value, r#"{"gold":50}"#);
    socket.close().await;
    stop.cancel();
    timeout(TEST_TIMEOUT, serving)
        .await
        .expect("stops")
        .expect("serve");
}
