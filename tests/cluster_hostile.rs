//! What arrives on a node's NATS subjects is only trusted from live nodes of its
//! cluster: garbage, truncated or oversized messages, another wire version and requests
//! from nobody, published straight on a node's subjects, are dropped (no answer, no
//! effect), and the node's cross-node play goes on untouched.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{
    cluster::{node_config, sees},
    nats::Nats,
    next_event, TestServer,
};
use quicmatch_client::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_nodes_subjects_changes_nothing() {
    let Some(nats) = Nats::start() else { return };
    let a = TestServer::start_with(node_config(&nats.url(), "node-a")).await;
    let b = TestServer::start_with(node_config(&nats.url(), "node-b")).await;
    sees(&a.stats, &["node-a", "node-b"], "a sees b").await;
    sees(&b.stats, &["node-a", "node-b"], "b sees a").await;
    let alice = a.client("alice").await;
    let bob = b.client("bob").await;
    let m = alice.create_match(None).await.expect("create");
    bob.join_match(m.match_id).await.expect("join across nodes");
    next_event(&alice, "bob joins").await;

    let raw = async_nats::connect(nats.url())
        .await
        .expect("a raw NATS client");
    let garbage: Vec<Bytes> = vec![
        Bytes::new(),
        Bytes::from_static(&[0xff]),
        // The wire version, then what no message decodes from.
        Bytes::from_static(&[1, 0xde, 0xad, 0xbe, 0xef]),
        // Another wire version.
        Bytes::from_static(&[2, 0, 0, 0]),
        // Past the 64 KiB message limit.
        Bytes::from(vec![1u8; 70_000]),
    ];
    for node in ["node-a", "node-b"] {
        for kind in ["req", "l", "dg"] {
            let subject = format!("qm.quicmatch.n.{node}.{kind}");
            for payload in &garbage {
                if kind == "req" {
                    // A request nobody may make is not answered.
                    let answer = tokio::time::timeout(
                        Duration::from_millis(300),
                        raw.request(subject.clone(), payload.clone()),
                    )
                    .await;
                    assert!(!matches!(answer, Ok(Ok(_))), "{subject} answered garbage");
                } else {
                    raw.publish(subject.clone(), payload.clone())
                        .await
                        .expect("publish");
                }
            }
        }
    }
    raw.flush().await.expect("flush");

    // Both nodes and their shared match are as they were.
    assert_eq!(
        (a.stats.cluster_memberships(), b.stats.cluster_memberships()),
        ((0, 1), (1, 0))
    );
    bob.send_match_data(m.match_id, 1, b"still friends".to_vec(), true, None)
        .await
        .expect("send");
    match next_event(&alice, "bob's data after the garbage").await {
        Event::MatchData(d) => assert_eq!(&d.data[..], b"still friends"),
        other => panic!("unexpected {other:?}"),
    }
    alice
        .send_match_data(m.match_id, 2, b"indeed".to_vec(), false, None)
        .await
        .expect("send");
    match next_event(&bob, "alice's datagram after the garbage").await {
        Event::MatchData(d) => assert_eq!(&d.data[..], b"indeed"),
        other => panic!("unexpected {other:?}"),
    }
}
