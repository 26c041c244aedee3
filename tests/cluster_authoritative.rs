//! Server-run matches across the nodes of a cluster, on a real `nats-server -js`: a
//! player on another node joins a match whose handler runs on its host (the handler
//! decides the join, metadata included, before the `Match` reply), its input reaches
//! the handler by both paths, the handler's broadcasts reach it, and a kick or the end
//! of the match tells it with `MatchEnded` and leaves no membership behind on either
//! node.

mod common;

use std::collections::BTreeMap;

use common::{
    cluster::{node_config, sees},
    eventually,
    nats::Nats,
    next_event, TestServer,
};
use quicmatch::runtime::{
    Dispatcher, Inbound, JoinDecision, MatchContext, MatchHandler, MatchInit, Params,
};
use quicmatch_client::{ErrorCode, Event, MatchData, MatchId, Presence, Socket};

/// Echoes every message to everyone, op code + 100, from the server; welcomes each
/// joiner (kicks those named `unwelcome…` at once); refuses spies, takes 3 s over a
/// join with `slow` metadata; kicks or ends on a signal (`kick:NAME`, `end:REASON`).
struct Echo;

impl MatchHandler for Echo {
    fn init(&mut self, _ctx: &MatchContext, _params: &Params) -> Result<MatchInit, String> {
        Ok(MatchInit::new(20))
    }

    fn join_attempt(
        &mut self,
        _ctx: &MatchContext,
        _d: &mut Dispatcher<'_>,
        _presence: &Presence,
        metadata: &BTreeMap<String, String>,
    ) -> JoinDecision {
        if metadata.contains_key("slow") {
            // A handler that takes its time (within `matches.answer_timeout`).
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
        match metadata.get("role").map(String::as_str) {
            Some("spy") => JoinDecision::Reject("no spies".into()),
            _ => JoinDecision::Accept,
        }
    }

    fn join(&mut self, _ctx: &MatchContext, d: &mut Dispatcher<'_>, presences: &[Presence]) {
        let (unwelcome, welcome): (Vec<Presence>, Vec<Presence>) = presences
            .iter()
            .cloned()
            .partition(|p| p.username.starts_with("unwelcome"));
        // Kicked as soon as it is in.
        d.kick(&unwelcome);
        for p in &welcome {
            d.broadcast(
                7,
                format!("welcome {}", p.username),
                Some(std::slice::from_ref(p)),
                None,
                true,
            );
        }
    }

    fn tick(&mut self, _ctx: &MatchContext, d: &mut Dispatcher<'_>, messages: Vec<Inbound>) {
        for m in messages {
            d.broadcast(m.op_code + 100, m.data, None, None, m.reliable);
        }
    }

    fn signal(&mut self, ctx: &MatchContext, d: &mut Dispatcher<'_>, data: &str) -> String {
        if let Some(name) = data.strip_prefix("kick:") {
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
        "ok".into()
    }
}

async fn node(nats: &Nats, name: &str) -> TestServer {
    TestServer::start_built(node_config(&nats.url(), name), |b| {
        b.match_handler("echo", || Echo)
            .rpc("create_echo", |ctx, _| {
                let id = ctx
                    .runtime
                    .create_match("echo", serde_json::json!({}))
                    .map_err(|e| e.to_string())?;
                Ok(id.to_string())
            })
            .rpc("signal", |ctx, payload| {
                let (id, data) = payload.split_once(' ').ok_or("want: ID DATA")?;
                let id: MatchId = id.parse().map_err(|_| "bad id".to_owned())?;
                ctx.runtime.signal(id, data).map_err(|e| e.to_string())
            })
    })
    .await
}

/// Nodes `node-a` and `node-b`, once they see each other, and an echo match Alice
/// (on a) created.
async fn two_nodes_and_a_match(nats: &Nats) -> (TestServer, TestServer, Socket, MatchId) {
    let a = node(nats, "node-a").await;
    let b = node(nats, "node-b").await;
    sees(&a.stats, &["node-a", "node-b"], "a sees b").await;
    sees(&b.stats, &["node-a", "node-b"], "b sees a").await;
    let alice = a.client("alice").await;
    let id: MatchId = alice
        .rpc("create_echo", "{}")
        .await
        .expect("rpc")
        .parse()
        .expect("id");
    (a, b, alice, id)
}

/// The next match data with op code `op`, skipping presence and other data.
async fn data(who: &Socket, op: i64, what: &str) -> MatchData {
    loop {
        match next_event(who, what).await {
            Event::MatchData(d) if d.op_code == op => return d,
            Event::MatchData(_) | Event::MatchPresence(_) => {}
            other => panic!("{what}: unexpected {other:?}"),
        }
    }
}

/// The next `MatchEnded`, skipping presence events.
async fn ended(who: &Socket, what: &str) -> (MatchId, String) {
    loop {
        match next_event(who, what).await {
            Event::MatchEnded { match_id, reason } => return (match_id, reason),
            Event::MatchPresence(_) | Event::MatchData(_) => {}
            other => panic!("{what}: unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_run_match_has_members_on_other_nodes() {
    let Some(nats) = Nats::start() else { return };
    let (a, b, alice, id) = two_nodes_and_a_match(&nats).await;
    let bob = b.client("bob").await;
    alice.join_match(id).await.expect("alice joins");
    assert_eq!(
        &data(&alice, 7, "alice's welcome").await.data[..],
        b"welcome alice"
    );

    // The handler decides a join from another node, with its metadata.
    let spy = BTreeMap::from([("role".to_owned(), "spy".to_owned())]);
    let err = bob.join_match_with(id, spy).await.expect_err("refused");
    assert_eq!(err.code(), Some(ErrorCode::MATCH_JOIN_REJECTED));
    assert!(err.to_string().contains("no spies"), "{err}");
    let m = bob.join_match(id).await.expect("bob joins");
    assert_eq!(m.size, 2);
    // The welcome comes after the reply (the SDK would hold it otherwise).
    let welcome = data(&bob, 7, "bob's welcome").await;
    assert_eq!(&welcome.data[..], b"welcome bob");
    assert!(welcome.from_server());

    // Input by both paths reaches the handler, whose echoes reach both nodes.
    bob.send_match_data(id, 1, b"hello".to_vec(), true, None)
        .await
        .expect("send");
    for who in [&alice, &bob] {
        let d = data(who, 101, "the reliable echo").await;
        assert_eq!(&d.data[..], b"hello");
        assert!(d.reliable && d.from_server());
    }
    bob.send_match_data(id, 2, b"fast".to_vec(), false, None)
        .await
        .expect("send");
    let d = data(&alice, 102, "the datagram's echo").await;
    assert_eq!(&d.data[..], b"fast");
    assert_eq!(
        (a.stats.cluster_memberships(), b.stats.cluster_memberships()),
        ((0, 1), (1, 0))
    );

    // A kick tells bob, and both nodes forget him.
    alice
        .rpc("signal", &format!("{id} kick:bob"))
        .await
        .expect("kick");
    assert_eq!(ended(&bob, "bob kicked").await.0, id);
    let (sa, sb) = (a.stats.clone(), b.stats.clone());
    eventually("neither node keeps bob in it", || {
        sa.cluster_memberships() == (0, 0) && sb.cluster_memberships() == (0, 0)
    })
    .await;

    // Back in; the match ends: told with its reason.
    bob.join_match(id).await.expect("bob joins again");
    alice
        .rpc("signal", &format!("{id} end:over"))
        .await
        .expect("end");
    assert_eq!(ended(&bob, "the match ends").await, (id, "over".to_owned()));
    eventually("no membership left", || {
        sa.cluster_memberships() == (0, 0) && sb.cluster_memberships() == (0, 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_and_a_kick_on_arrival_leave_both_nodes_agreeing() {
    let Some(nats) = Nats::start() else { return };
    let (a, b, _alice, id) = two_nodes_and_a_match(&nats).await;
    // Kicked in the handler's join, before the home has the answer: the client sees
    // the Match reply, then MatchEnded, and neither node keeps a membership.
    let unwelcome = b.client("unwelcome").await;
    let m = unwelcome
        .join_match(id)
        .await
        .expect("the join itself succeeds");
    assert_eq!(m.match_id, id);
    assert_eq!(ended(&unwelcome, "kicked on arrival").await.0, id);
    let (sa, sb) = (a.stats.clone(), b.stats.clone());
    eventually("nothing kept of the kicked member", || {
        sa.cluster_memberships() == (0, 0) && sb.cluster_memberships() == (0, 0)
    })
    .await;
    // A handler that takes 3 s to decide (more than a request's 2 s): the home waits
    // for it, and the member is a member on both nodes.
    let bob = b.client("bob").await;
    let slow = BTreeMap::from([("slow".to_owned(), "yes".to_owned())]);
    bob.join_match_with(id, slow).await.expect("a slow yes");
    assert_eq!(
        &data(&bob, 7, "bob's welcome").await.data[..],
        b"welcome bob"
    );
    bob.send_match_data(id, 1, b"made it".to_vec(), true, None)
        .await
        .expect("send");
    assert_eq!(&data(&bob, 101, "the echo").await.data[..], b"made it");
    assert_eq!(
        (a.stats.cluster_memberships(), b.stats.cluster_memberships()),
        ((0, 1), (1, 0))
    );
}
