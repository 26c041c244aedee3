//! Storage under pressure and bad input, end to end: every refusal has its own code and
//! writes nothing; ten clients racing on one object (exactly one wins each version);
//! a cursor walking over more than a thousand objects; the per-session write limit.

mod common;

use common::{
    storage::{code, config_in, within},
    TestServer, TEST_TIMEOUT,
};
use quicmatch_client::{
    ErrorCode, ReadPermission, Socket, StorageObjectId, StorageWriteObject, WritePermission,
};
use quicmatch_protocol::{
    envelope::{Response, ServerBody},
    Request, StorageDeleteObject, StorageListRequest, MAX_STORAGE_VALUE_LEN,
};
use tokio::time::timeout;

fn object(key: &str, value: &str) -> StorageWriteObject {
    StorageWriteObject::new("c", key, value)
}

/// The code of the error a raw request is answered with.
async fn raw_code(raw: &mut common::RawSession, body: Request) -> ErrorCode {
    match raw.request(Some(9), body).await.body {
        ServerBody::Response(Response::Error { code, .. }) => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_input_gets_its_own_code_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_in(&dir);
    config.storage.max_objects_per_user = 3;
    let server = TestServer::start_with(config).await;
    let alice = server.client("alice").await;
    // What the server refuses, sent raw so the SDK's own checks do not stop it first.
    let mut raw = server.raw_session("alice").await;
    let huge = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_STORAGE_VALUE_LEN));
    let cases = [
        (vec![object("k", &huge)], ErrorCode::STORAGE_VALUE_TOO_LARGE),
        (
            vec![object("k", "not json")],
            ErrorCode::STORAGE_INVALID_JSON,
        ),
        (vec![object("k", "[1,2]")], ErrorCode::STORAGE_INVALID_JSON),
        (vec![object("", "{}")], ErrorCode::BAD_INPUT),
        (vec![object(&"k".repeat(129), "{}")], ErrorCode::BAD_INPUT),
        (vec![object("a\u{7}", "{}")], ErrorCode::BAD_INPUT),
        (
            vec![object("k", "{}"), object("k", "{}")],
            ErrorCode::BAD_INPUT,
        ),
        (vec![], ErrorCode::BAD_INPUT),
        (
            (0..33).map(|i| object(&format!("k{i}"), "{}")).collect(),
            ErrorCode::BAD_INPUT,
        ),
        // One bad object in a batch: nothing of it is written.
        (
            vec![object("fine", "{}"), object("bad", "{")],
            ErrorCode::STORAGE_INVALID_JSON,
        ),
    ];
    for (objects, want) in cases {
        let what = format!("{:?}", objects.iter().map(|o| &o.key).collect::<Vec<_>>());
        let got = raw_code(&mut raw, Request::StorageWrite { objects }).await;
        assert_eq!(got, want, "{what}");
    }
    let mut version = object("k", "{}");
    version.version = Some(String::new());
    assert_eq!(
        raw_code(
            &mut raw,
            Request::StorageWrite {
                objects: vec![version]
            }
        )
        .await,
        ErrorCode::BAD_INPUT
    );
    let list = |limit, cursor: Option<&str>| {
        Request::StorageList(StorageListRequest {
            collection: "c".into(),
            user_id: None,
            limit,
            cursor: cursor.map(str::to_owned),
        })
    };
    assert_eq!(
        raw_code(&mut raw, list(0, None)).await,
        ErrorCode::BAD_INPUT
    );
    assert_eq!(
        raw_code(&mut raw, list(101, None)).await,
        ErrorCode::BAD_INPUT
    );
    assert_eq!(
        raw_code(&mut raw, list(10, Some("garbage!"))).await,
        ErrorCode::BAD_INPUT
    );
    let read = Request::StorageRead {
        ids: vec![StorageObjectId::new("", "k", None)],
    };
    assert_eq!(raw_code(&mut raw, read).await, ErrorCode::BAD_INPUT);
    let delete = Request::StorageDelete {
        objects: vec![StorageDeleteObject::new("c", "")],
    };
    assert_eq!(raw_code(&mut raw, delete).await, ErrorCode::BAD_INPUT);
    let page = within("a listing", alice.list_storage_objects("c"))
        .await
        .expect("list");
    assert!(
        page.objects.is_empty(),
        "nothing was written: {:?}",
        page.objects
    );
    // The SDK refuses the same without asking.
    let big = within(
        "a write",
        alice.write_storage_object("c", "k", huge.as_str()),
    )
    .await;
    assert_eq!(code(big), ErrorCode::STORAGE_VALUE_TOO_LARGE);
    assert_eq!(
        code(within("a listing", alice.list_storage_objects("c").limit(0)).await),
        ErrorCode::BAD_INPUT
    );
    // The largest value fits, and reads back whole.
    let largest = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_STORAGE_VALUE_LEN - 8));
    within(
        "a write",
        alice.write_storage_object("c", "large", largest.as_str()),
    )
    .await
    .expect("largest");
    let back = within("a read", alice.read_storage_object("c", "large"))
        .await
        .expect("read")
        .expect("there");
    assert_eq!(back.value, largest);
    let page = within("a listing", alice.list_storage_objects("c"))
        .await
        .expect("list");
    assert_eq!(page.objects.len(), 1);
    // Quota: three objects per user; the fourth is refused, a rewrite is not.
    within(
        "a write",
        alice.write_storage_objects(vec![object("q1", "{}"), object("q2", "{}")]),
    )
    .await
    .expect("two more");
    let over = within("a write", alice.write_storage_object("c", "q3", "{}")).await;
    assert_eq!(code(over), ErrorCode::STORAGE_QUOTA_EXCEEDED);
    within(
        "a write",
        alice.write_storage_object("c", "q1", r#"{"again":1}"#),
    )
    .await
    .expect("rewrite");
    within("a delete", alice.delete_storage_object("c", "large", None))
        .await
        .expect("delete");
    within("a write", alice.write_storage_object("c", "q3", "{}"))
        .await
        .expect("room again");
    // Two reads that together pass a frame: refused, read them one at a time.
    let bob = server.client("bob").await;
    let half = format!("{{\"a\":\"{}\"}}", "y".repeat(40_000));
    for key in ["h1", "h2"] {
        within("a write", bob.write_storage_object("c", key, half.as_str()))
            .await
            .expect("write");
    }
    let me = bob.session().user_id;
    let ids = vec![
        StorageObjectId::new("c", "h1", Some(me)),
        StorageObjectId::new("c", "h2", Some(me)),
    ];
    assert_eq!(
        code(within("a read", bob.read_storage_objects(ids)).await),
        ErrorCode::PAYLOAD_TOO_LARGE
    );
    // A listing splits them over pages instead.
    let first = within("a listing", bob.list_storage_objects("c").user(me))
        .await
        .expect("list");
    assert_eq!(first.objects.len(), 1);
    let second = within(
        "a listing",
        bob.list_storage_objects("c")
            .user(me)
            .cursor(first.cursor.expect("more")),
    )
    .await
    .expect("list");
    assert_eq!((second.objects.len(), second.cursor), (1, None));
}

#[tokio::test]
async fn the_write_limit_refuses_excess_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_in(&dir);
    config.storage.writes_per_second = 0.1;
    config.storage.write_burst = 3;
    let server = TestServer::start_with(config).await;
    let alice = server.client("alice").await;
    for i in 0..3 {
        within(
            "a write",
            alice.write_storage_object("c", format!("k{i}"), "{}"),
        )
        .await
        .expect("within the burst");
    }
    let over = within("a write", alice.write_storage_object("c", "k3", "{}")).await;
    assert_eq!(code(over), ErrorCode::RATE_LIMITED);
    let over = within("a delete", alice.delete_storage_object("c", "k0", None)).await;
    assert_eq!(code(over), ErrorCode::RATE_LIMITED);
    // Reads are not storage writes; another session has its own budget.
    assert!(within("a read", alice.read_storage_object("c", "k0"))
        .await
        .expect("read")
        .is_some());
    let bob = server.client("bob").await;
    within("a write", bob.write_storage_object("c", "k", "{}"))
        .await
        .expect("his own budget");
}

#[tokio::test]
async fn ten_clients_racing_on_one_object_exactly_one_wins_each_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(config_in(&dir)).await;
    // Ten sessions of one user: the same object.
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(server.client("racer").await);
    }
    let clients: Vec<&Socket> = clients.iter().collect();
    let race = |version: Option<String>, round: usize| {
        let clients = clients.clone();
        async move {
            let writes = clients.iter().enumerate().map(|(i, c)| {
                let value = format!("{{\"round\":{round},\"writer\":{i}}}");
                let write = c.write_storage_object("race", "flag", value);
                let write = match &version {
                    Some(v) => write.version(v.as_str()),
                    None => write.if_absent(),
                };
                async move {
                    (
                        i,
                        timeout(TEST_TIMEOUT, write)
                            .await
                            .expect("waiting for a write"),
                    )
                }
            });
            futures_util::future::join_all(writes).await
        }
    };
    let mut version = None;
    for round in 0..10 {
        let results = race(version.clone(), round).await;
        let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for (i, r) in &results {
            if let Err(e) = r {
                assert_eq!(
                    e.code(),
                    Some(ErrorCode::STORAGE_VERSION_CONFLICT),
                    "round {round}, writer {i}: {e}"
                );
            }
        }
        let (writer, ack) = (winners[0].0, winners[0].1.as_ref().expect("the winner"));
        let now = within("a read", clients[0].read_storage_object("race", "flag"))
            .await
            .expect("read")
            .expect("there");
        assert_eq!(now.version, ack.version);
        assert_eq!(
            now.value,
            format!("{{\"round\":{round},\"writer\":{writer}}}")
        );
        version = Some(ack.version.clone());
    }
}

/// Every key of `user`'s in "bag" that `socket` may read, page by page; and the pages.
async fn walk(socket: &Socket, user: quicmatch_client::UserId, limit: u32) -> (Vec<String>, usize) {
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let mut list = socket.list_storage_objects("bag").user(user).limit(limit);
        if let Some(c) = cursor.take() {
            list = list.cursor(c);
        }
        let page = within("a listing", list).await.expect("list");
        pages += 1;
        assert!(page.objects.len() <= limit as usize);
        seen.extend(page.objects.into_iter().map(|o| o.key));
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return (seen, pages),
        }
    }
}

#[tokio::test]
async fn a_cursor_walks_over_more_than_a_thousand_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_in(&dir);
    config.storage.max_objects_per_user = 2000;
    // Some 200 listing requests from one session.
    config.session.request_burst = 10_000;
    let server = TestServer::start_with(config).await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    const N: usize = 1050;
    let keys: Vec<String> = (0..N).map(|i| format!("item-{i:05}")).collect();
    for chunk in keys.chunks(30) {
        let objects = chunk
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut o = StorageWriteObject::new("bag", k, format!("{{\"i\":{i}}}"));
                // Keys ending in 0, 3, 6 or 9 are public.
                if k.ends_with(['0', '3', '6', '9']) {
                    o.permission_read = ReadPermission::PublicRead;
                }
                o.permission_write = WritePermission::OwnerWrite;
                o
            })
            .collect();
        within("a write", alice.write_storage_objects(objects))
            .await
            .expect("write");
    }
    let me = alice.session().user_id;
    let (seen, pages) = walk(&alice, me, 100).await;
    assert_eq!(seen, keys, "every key once, in order");
    assert_eq!(pages, N.div_ceil(100));
    let (seen, _) = walk(&alice, me, 7).await;
    assert_eq!(seen.len(), N);
    // Bob sees only the public ones, still in order, however the pages fall.
    let (public, _) = walk(&bob, me, 100).await;
    let want: Vec<_> = keys
        .iter()
        .filter(|k| k.ends_with(['0', '3', '6', '9']))
        .cloned()
        .collect();
    assert_eq!(public, want);
}
