//! Cluster membership end to end, on a real `nats-server -js`: nodes register in the
//! registry and see each other; a polite stop is seen at once; a node killed with
//! SIGKILL is lost once its entry goes unrenewed for `node_ttl`; a name a live node
//! holds is refused to a second process; a node whose NATS is down at start serves
//! its players alone and joins once NATS is there; and after NATS is killed and started
//! again, the nodes find each other and a newcomer again.
//!
//! The killed node runs as this test binary started again with [`CHILD`] set: only
//! [`server_process`] then does anything, and it serves until it is killed.

mod common;

use std::time::Duration;

use common::{
    child::Child,
    cluster::{node_config, sees, HEARTBEAT, NODE_TTL},
    nats::Nats,
    TestServer,
};

/// Set (to `URL|NAME|DIR`) in the killed node's environment.
const CHILD: &str = "QUICMATCH_CLUSTER_TEST_NODE";

const WAIT: Duration = Duration::from_secs(30);

/// The killed node (does nothing unless started by a test with [`CHILD`] set).
#[test]
fn server_process() {
    common::cluster::serve_child(CHILD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_see_each_other_and_a_polite_stop_at_once() {
    let Some(nats) = Nats::start() else { return };
    let a = TestServer::start_with(node_config(&nats.url(), "node-a")).await;
    let b = TestServer::start_with(node_config(&nats.url(), "node-b")).await;
    let c = TestServer::start_with(node_config(&nats.url(), "node-c")).await;
    let all = ["node-a", "node-b", "node-c"];
    for (s, name) in [(&a, "node-a"), (&b, "node-b"), (&c, "node-c")] {
        sees(&s.stats, &all, &format!("{name} sees all three")).await;
        let nodes = s.stats.cluster_nodes();
        let local: Vec<_> = nodes.iter().filter(|n| n.local).collect();
        assert_eq!(local.len(), 1, "{name}: {nodes:?}");
        assert_eq!(local[0].name, name);
        assert_eq!(
            local[0].address,
            s.addr.to_string(),
            "where its clients connect"
        );
    }
    // Each node's view of the others agrees on who is who.
    let incarnations = |s: &TestServer| {
        let mut v: Vec<_> = s
            .stats
            .cluster_nodes()
            .into_iter()
            .map(|n| (n.name, n.incarnation))
            .collect();
        v.sort();
        v
    };
    assert_eq!(incarnations(&a), incarnations(&b));
    assert_eq!(incarnations(&b), incarnations(&c));
    // Players are served as ever.
    let player = a.client("alice").await;
    player.create_match(None).await.expect("create");

    c.stop().await;
    sees(&a.stats, &["node-a", "node-b"], "a sees c stop").await;
    sees(&b.stats, &["node-a", "node-b"], "b sees c stop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_lost_once_its_entry_goes_unrenewed() {
    let Some(nats) = Nats::start() else { return };
    let a = TestServer::start_with(node_config(&nats.url(), "node-a")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = Child::spawn(
        CHILD,
        &format!("{}|node-d|{}", nats.url(), dir.path().display()),
    );
    d.ready(WAIT);
    sees(&a.stats, &["node-a", "node-d"], "a sees d join").await;
    // No goodbye: d's entry stays until nobody renews it.
    d.process.kill().expect("kill");
    let _ = d.process.wait();
    let killed = tokio::time::Instant::now();
    sees(&a.stats, &["node-a"], "a sees d lost").await;
    assert!(
        killed.elapsed() >= NODE_TTL - HEARTBEAT,
        "lost after {:?}: before its entry could have gone unrenewed",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_held_by_a_live_node_is_refused_to_another() {
    let Some(nats) = Nats::start() else { return };
    let first = TestServer::start_with(node_config(&nats.url(), "node-a")).await;
    sees(&first.stats, &["node-a"], "the first registers").await;
    let before = first.stats.cluster_nodes();
    let second = TestServer::start_with(node_config(&nats.url(), "node-a")).await;
    // Longer than a takeover of an unrenewed entry would wait (node_ttl + heartbeat):
    // the second must have given up, never taken the name.
    tokio::time::sleep(NODE_TTL + 4 * HEARTBEAT).await;
    assert!(
        second.stats.cluster_nodes().iter().all(|n| !n.local),
        "the second process registered under a live node's name"
    );
    assert_eq!(
        first.stats.cluster_nodes(),
        before,
        "the first keeps its name"
    );
    // The second still serves its own players.
    let player = second.client("bob").await;
    player.create_match(None).await.expect("create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_a_node_serves_alone_and_joins_when_nats_is_back() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    nats.stop();
    let a = TestServer::start_with(node_config(&nats.url(), "node-a")).await;
    let player = a.client("alice").await;
    player
        .create_match(None)
        .await
        .expect("served while NATS is down");
    assert!(a.stats.cluster_nodes().is_empty());
    nats.restart();
    sees(&a.stats, &["node-a"], "a joins once NATS is there").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_comes_back_after_a_nats_restart() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let a = TestServer::start_with(node_config(&nats.url(), "node-a")).await;
    let b = TestServer::start_with(node_config(&nats.url(), "node-b")).await;
    sees(&a.stats, &["node-a", "node-b"], "a sees b").await;
    // NATS killed and started again on the same port and store.
    nats.restart();
    // A node that joins afterwards is seen: the watch follows the new server.
    let c = TestServer::start_with(node_config(&nats.url(), "node-c")).await;
    let all = ["node-a", "node-b", "node-c"];
    for (s, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        sees(
            &s.stats,
            &all,
            &format!("{name} sees all three after the restart"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shows_its_public_address_in_the_registry() {
    let Some(nats) = Nats::start() else { return };
    let mut config = node_config(&nats.url(), "node-a");
    config.cluster.public_address = Some("game-1.example.com:7350".into());
    let a = TestServer::start_with(config).await;
    let b = TestServer::start_with(node_config(&nats.url(), "node-b")).await;
    sees(&b.stats, &["node-a", "node-b"], "b sees a").await;
    let address = |s: &TestServer, name: &str| {
        s.stats
            .cluster_nodes()
            .into_iter()
            .find(|n| n.name == name)
            .map(|n| n.address)
    };
    assert_eq!(
        address(&b, "node-a").as_deref(),
        Some("game-1.example.com:7350")
    );
    assert_eq!(
        address(&b, "node-b"),
        Some(b.addr.to_string()),
        "the default"
    );
    sees(&a.stats, &["node-a", "node-b"], "a sees b").await;
    assert_eq!(
        address(&a, "node-a").as_deref(),
        Some("game-1.example.com:7350")
    );
}
