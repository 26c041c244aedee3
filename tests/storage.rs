//! Storage objects end to end, through the SDK against a real server: every operation
//! under every combination of read and write permission, objects no user owns,
//! conditional writes and deletes, server code's full access (an RPC and a match
//! handler), and objects surviving a restart.

mod common;

use common::{
    storage::{code, config_in, within},
    TestServer,
};
use quicmatch::{
    runtime::{Dispatcher, Inbound, MatchContext, MatchHandler, MatchInit, Params},
    storage::{ObjectWrite, Owners},
};
use quicmatch_client::{
    ErrorCode, ReadPermission, Socket, StorageObjectId, UserId, WritePermission,
};

/// Every key `socket` sees listing `collection` (of `user`, or of everyone), all pages.
async fn listed(
    socket: &Socket,
    collection: &str,
    user: Option<UserId>,
) -> Vec<(Option<UserId>, String)> {
    let (mut keys, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let mut list = socket.list_storage_objects(collection).limit(100);
        if let Some(user) = user {
            list = list.user(user);
        }
        if let Some(c) = cursor.take() {
            list = list.cursor(c);
        }
        let page = within("a listing", list).await.expect("list");
        keys.extend(page.objects.into_iter().map(|o| (o.user_id, o.key)));
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return keys,
        }
    }
}

const READS: [(ReadPermission, &str); 3] = [
    (ReadPermission::NoRead, "none"),
    (ReadPermission::OwnerRead, "owner"),
    (ReadPermission::PublicRead, "public"),
];
const WRITES: [(WritePermission, &str); 2] = [
    (WritePermission::NoWrite, "none"),
    (WritePermission::OwnerWrite, "owner"),
];

#[tokio::test]
async fn every_operation_under_every_permission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(config_in(&dir)).await;
    let (alice, bob) = (server.client("alice").await, server.client("bob").await);
    let (a, b) = (alice.session().user_id, bob.session().user_id);
    let storage = server.runtime.storage().clone();
    for (read, rname) in READS {
        for (write, wname) in WRITES {
            let key = format!("r-{rname}-w-{wname}");
            let what = format!("read {rname}, write {wname}");
            // Creating is always allowed; the permissions govern what comes after.
            let ack = within(
                "a write",
                alice
                    .write_storage_object("items", &key, r#"{"n":1}"#)
                    .permissions(read, write),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: create: {e}"));
            assert_eq!(ack.user_id, Some(a));
            let own = within("a read", alice.read_storage_object("items", &key))
                .await
                .expect("read");
            assert_eq!(
                own.is_some(),
                read != ReadPermission::NoRead,
                "{what}: owner reads"
            );
            if let Some(own) = &own {
                assert_eq!(
                    (own.version.as_str(), own.value.as_str()),
                    (ack.version.as_str(), r#"{"n":1}"#)
                );
                assert_eq!((own.permission_read, own.permission_write), (read, write));
            }
            let id = StorageObjectId::new("items", &key, Some(a));
            let theirs = within("a read", bob.read_storage_objects(vec![id.clone()]))
                .await
                .expect("read");
            assert_eq!(
                theirs.len(),
                usize::from(read == ReadPermission::PublicRead),
                "{what}: others read"
            );
            let everyone = listed(&bob, "items", None).await;
            assert_eq!(
                everyone.contains(&(Some(a), key.clone())),
                read == ReadPermission::PublicRead,
                "{what}: others list"
            );
            let of_alice = listed(&bob, "items", Some(a)).await;
            assert_eq!(
                of_alice.contains(&(Some(a), key.clone())),
                read == ReadPermission::PublicRead,
                "{what}: others list hers"
            );
            let mine = listed(&alice, "items", Some(a)).await;
            assert_eq!(
                mine.contains(&(Some(a), key.clone())),
                read != ReadPermission::NoRead,
                "{what}: owner lists"
            );
            // Server code reads anything.
            let reader = storage.clone();
            let ids = [id.clone()];
            let found = tokio::task::spawn_blocking(move || reader.read(&ids))
                .await
                .expect("join")
                .expect("server read");
            assert_eq!(found.len(), 1, "{what}: server code reads");
            // Bob's write and delete name his own object: hers is untouched.
            within(
                "a write",
                bob.write_storage_object("items", &key, r#"{"bob":1}"#),
            )
            .await
            .expect("his own");
            within("a delete", bob.delete_storage_object("items", &key, None))
                .await
                .expect("his own");
            // The owner changes and deletes only with the write permission.
            let update = within(
                "a write",
                alice
                    .write_storage_object("items", &key, r#"{"n":2}"#)
                    .permissions(read, write),
            )
            .await;
            let delete = within("a delete", alice.delete_storage_object("items", &key, None)).await;
            if write == WritePermission::OwnerWrite {
                update.unwrap_or_else(|e| panic!("{what}: update: {e}"));
                delete.unwrap_or_else(|e| panic!("{what}: delete: {e}"));
            } else {
                assert_eq!(code(update), ErrorCode::STORAGE_PERMISSION_DENIED, "{what}");
                assert_eq!(code(delete), ErrorCode::STORAGE_PERMISSION_DENIED, "{what}");
            }
            let ids = [id];
            let reader = storage.clone();
            let left = tokio::task::spawn_blocking(move || reader.read(&ids))
                .await
                .expect("join")
                .expect("server read");
            assert_eq!(
                left.len(),
                usize::from(write == WritePermission::NoWrite),
                "{what}: deleted"
            );
            if let Some(left) = left.first() {
                assert_eq!(left.value, r#"{"n":1}"#, "{what}: unchanged");
            }
        }
    }
    assert!(listed(&bob, "items", Some(b)).await.is_empty());
}

#[tokio::test]
async fn objects_no_user_owns_are_server_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(config_in(&dir)).await;
    let alice = server.client("alice").await;
    let storage = server.runtime.storage().clone();
    tokio::task::spawn_blocking(move || {
        storage.write(vec![
            ObjectWrite::new("config", "motd", r#"{"text":"hi"}"#)
                .permissions(ReadPermission::PublicRead, WritePermission::NoWrite),
            ObjectWrite::new("config", "secret", r#"{"key":1}"#)
                .permissions(ReadPermission::NoRead, WritePermission::NoWrite),
        ])
    })
    .await
    .expect("join")
    .expect("server write");
    let ids = vec![
        StorageObjectId::new("config", "motd", None),
        StorageObjectId::new("config", "secret", None),
    ];
    let read = within("a read", alice.read_storage_objects(ids))
        .await
        .expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!((read[0].key.as_str(), read[0].user_id), ("motd", None));
    let page = within("a listing", alice.list_storage_objects("config").system())
        .await
        .expect("list");
    assert_eq!(page.objects.len(), 1);
    // A client's write of the same name makes its own object; the system's stays.
    within(
        "a write",
        alice.write_storage_object("config", "motd", r#"{"text":"mine"}"#),
    )
    .await
    .expect("own");
    let ids = vec![StorageObjectId::new("config", "motd", None)];
    let read = within("a read", alice.read_storage_objects(ids))
        .await
        .expect("read");
    assert_eq!(read[0].value, r#"{"text":"hi"}"#);
}

#[tokio::test]
async fn conditional_writes_and_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(config_in(&dir)).await;
    let alice = server.client("alice").await;
    let first = within(
        "a write",
        alice
            .write_storage_object("saves", "slot", r#"{"v":1}"#)
            .if_absent(),
    )
    .await
    .expect("create");
    let again = within(
        "a write",
        alice
            .write_storage_object("saves", "slot", r#"{"v":2}"#)
            .if_absent(),
    )
    .await;
    assert_eq!(code(again), ErrorCode::STORAGE_VERSION_CONFLICT);
    let second = within(
        "a write",
        alice
            .write_storage_object("saves", "slot", r#"{"v":2}"#)
            .version(&first.version),
    )
    .await
    .expect("update");
    assert_ne!(second.version, first.version);
    let stale = within(
        "a write",
        alice
            .write_storage_object("saves", "slot", r#"{"v":3}"#)
            .version(&first.version),
    )
    .await;
    assert_eq!(code(stale), ErrorCode::STORAGE_VERSION_CONFLICT);
    let absent = within(
        "a write",
        alice
            .write_storage_object("saves", "other", "{}")
            .version(&first.version),
    )
    .await;
    assert_eq!(
        code(absent),
        ErrorCode::STORAGE_VERSION_CONFLICT,
        "a version names an existing object"
    );
    let stale = within(
        "a delete",
        alice.delete_storage_object("saves", "slot", Some(&first.version)),
    )
    .await;
    assert_eq!(code(stale), ErrorCode::STORAGE_VERSION_CONFLICT);
    let object = within("a read", alice.read_storage_object("saves", "slot"))
        .await
        .expect("read")
        .expect("there");
    assert_eq!(
        (object.value.as_str(), object.version.as_str()),
        (r#"{"v":2}"#, second.version.as_str())
    );
    assert!(object.update_time >= object.create_time);
    within(
        "a delete",
        alice.delete_storage_object("saves", "slot", Some(&second.version)),
    )
    .await
    .expect("delete");
    assert!(within("a read", alice.read_storage_object("saves", "slot"))
        .await
        .expect("read")
        .is_none());
    within(
        "a delete",
        alice.delete_storage_object("saves", "slot", None),
    )
    .await
    .expect("absent is fine");
    let gone = within(
        "a delete",
        alice.delete_storage_object("saves", "slot", Some(&second.version)),
    )
    .await;
    assert_eq!(code(gone), ErrorCode::STORAGE_VERSION_CONFLICT);
    // A recreated object gets a new version, never an old one.
    let third = within(
        "a write",
        alice
            .write_storage_object("saves", "slot", "{}")
            .if_absent(),
    )
    .await
    .expect("recreate");
    assert!(third.version > second.version);
}

/// A match whose `init` keeps a record through the runtime's storage.
struct Recorder;

impl MatchHandler for Recorder {
    fn init(&mut self, ctx: &MatchContext, _params: &Params) -> Result<MatchInit, String> {
        let object = ObjectWrite::new("matches", ctx.match_id().to_string(), r#"{"started":true}"#);
        ctx.runtime()
            .storage()
            .write(vec![object])
            .map_err(|e| e.to_string())?;
        Ok(MatchInit::new(1))
    }

    fn tick(&mut self, _ctx: &MatchContext, _d: &mut Dispatcher<'_>, _inputs: Vec<Inbound>) {}
}

#[tokio::test]
async fn server_code_uses_storage_from_rpcs_and_match_handlers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_built(config_in(&dir), |b| {
        b.match_handler("recorder", || Recorder)
            .rpc("grant", |ctx, payload| {
                // Gives the caller an item it may read but never change.
                let object = ObjectWrite::new("inventory", "sword", payload)
                    .owner(ctx.caller.user_id)
                    .permissions(ReadPermission::OwnerRead, WritePermission::NoWrite);
                let acks = ctx
                    .runtime
                    .storage()
                    .write(vec![object])
                    .map_err(|e| e.to_string())?;
                Ok(acks[0].version.clone())
            })
            .rpc("start", |ctx, _| {
                let id = ctx
                    .runtime
                    .create_match("recorder", serde_json::Value::Null)
                    .map_err(|e| e.to_string())?;
                let page = ctx
                    .runtime
                    .storage()
                    .list("matches", Owners::System, 10, None)
                    .map_err(|e| e.to_string())?;
                Ok(format!("{id} {}", page.objects.len()))
            })
    })
    .await;
    let alice = server.client("alice").await;
    let version = within("an rpc", alice.rpc("grant", r#"{"damage":7}"#))
        .await
        .expect("grant");
    let sword = within("a read", alice.read_storage_object("inventory", "sword"))
        .await
        .expect("read")
        .expect("granted");
    assert_eq!(
        (sword.version, sword.permission_write),
        (version, WritePermission::NoWrite)
    );
    let change = within(
        "a write",
        alice.write_storage_object("inventory", "sword", r#"{"damage":99}"#),
    )
    .await;
    assert_eq!(code(change), ErrorCode::STORAGE_PERMISSION_DENIED);
    let bad = within("an rpc", alice.rpc("grant", "not json")).await;
    assert_eq!(code(bad), ErrorCode::RUNTIME_FUNCTION_EXCEPTION);
    let started = within("an rpc", alice.rpc("start", ""))
        .await
        .expect("start");
    assert!(started.ends_with(" 1"), "{started}");
}

#[tokio::test]
async fn objects_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(config_in(&dir)).await;
    let alice = server.client("alice").await;
    let ack = within(
        "a write",
        alice.write_storage_object("saves", "slot", r#"{"level":9}"#),
    )
    .await
    .expect("write");
    alice.close().await;
    server.stop().await;
    let server = TestServer::start_with(config_in(&dir)).await;
    let alice = server.client("alice").await;
    let object = within("a read", alice.read_storage_object("saves", "slot"))
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(
        (object.value.as_str(), object.version),
        (r#"{"level":9}"#, ack.version)
    );
}
