//! The store through its server-code API and the client paths, without a network.

use std::sync::Arc;

use quicmatch_protocol::{
    ReadPermission::*, StorageObjectId, StorageWriteObject, UserId, WritePermission::*,
};

use super::*;

fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_owned(),
        ..Config::default()
    }
}

fn user(n: u128) -> UserId {
    UserId(uuid::Uuid::from_u128(n))
}

fn id(collection: &str, key: &str, owner: Option<UserId>) -> StorageObjectId {
    StorageObjectId {
        collection: collection.into(),
        key: key.into(),
        user_id: owner,
    }
}

fn client_object(key: &str, version: Option<&str>) -> StorageWriteObject {
    StorageWriteObject {
        collection: "c".into(),
        key: key.into(),
        value: r#"{"n":1}"#.into(),
        version: version.map(str::to_owned),
        permission_read: OwnerRead,
        permission_write: OwnerWrite,
    }
}

fn client_write(
    storage: &Storage,
    who: UserId,
    objects: Vec<StorageWriteObject>,
    quota: usize,
) -> Result<Vec<StorageObjectAck>, StorageError> {
    let pending = storage.check_client_write(who, objects, quota)?;
    block_on(storage.submit_write(pending)?)
}

/// Waits for a future on a small runtime (the writer answers from its own thread).
fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn no_file_until_the_first_write_then_everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(&config(dir.path())).expect("open");
    assert!(!storage.path().exists());
    assert_eq!(storage.read(&[id("c", "k", None)]).expect("read"), vec![]);
    let page = storage.list("c", Owners::Any, 10, None).expect("list");
    assert!(page.objects.is_empty() && page.cursor.is_none());
    let acks = storage
        .write(vec![
            ObjectWrite::new("c", "k", r#"{"a":1}"#),
            ObjectWrite::new("c", "k", r#"{"a":2}"#).owner(user(1)),
        ])
        .expect("write");
    assert_eq!(acks.len(), 2);
    assert_ne!(acks[0].version, acks[1].version);
    assert!(storage.path().exists());
    storage.close();
    assert_eq!(
        storage.read(&[id("c", "k", None)]),
        Err(StorageError::Closed)
    );
    let again = Storage::open(&config(dir.path())).expect("reopen");
    let objects = again
        .read(&[id("c", "k", None), id("c", "k", Some(user(1)))])
        .expect("read");
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0].value, r#"{"a":1}"#);
    assert_eq!(objects[0].version, acks[0].version);
    assert_eq!(objects[1].user_id, Some(user(1)));
    // Versions keep growing across a reopen.
    let next = again
        .write(vec![ObjectWrite::new("c", "k2", "{}")])
        .expect("write");
    assert!(next[0].version > acks[1].version);
}

#[test]
fn servers_in_one_process_share_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Storage::open(&config(dir.path())).expect("open");
    let b = Storage::open(&config(dir.path())).expect("open");
    assert!(Arc::ptr_eq(&a.handle, &b.handle));
    a.write(vec![ObjectWrite::new("c", "k", "{}")])
        .expect("write");
    assert_eq!(b.read(&[id("c", "k", None)]).expect("read").len(), 1);
}

#[test]
fn conditions_permissions_and_quota() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(&config(dir.path())).expect("open");
    let me = user(5);
    let first = client_write(&storage, me, vec![client_object("a", Some("*"))], 2).expect("create");
    let again = client_write(&storage, me, vec![client_object("a", Some("*"))], 2);
    assert!(
        matches!(again, Err(StorageError::VersionConflict(_))),
        "{again:?}"
    );
    let stale = client_write(
        &storage,
        me,
        vec![client_object("a", Some("0000000000000000"))],
        2,
    );
    assert!(
        matches!(stale, Err(StorageError::VersionConflict(_))),
        "{stale:?}"
    );
    let ok = client_write(
        &storage,
        me,
        vec![client_object("a", Some(&first[0].version))],
        2,
    )
    .expect("update at the right version");
    assert!(ok[0].version > first[0].version);
    // A batch with one conflict writes nothing.
    let batch = client_write(
        &storage,
        me,
        vec![
            client_object("b", None),
            client_object("a", Some(&first[0].version)),
        ],
        2,
    );
    assert!(matches!(batch, Err(StorageError::VersionConflict(_))));
    assert!(storage
        .read(&[id("c", "b", Some(me))])
        .expect("read")
        .is_empty());
    // Quota: a and b make two; c is one too many.
    client_write(&storage, me, vec![client_object("b", None)], 2).expect("second");
    let over = client_write(&storage, me, vec![client_object("c", None)], 2);
    assert!(
        matches!(over, Err(StorageError::QuotaExceeded(_))),
        "{over:?}"
    );
    // Rewriting an existing object needs no room.
    client_write(&storage, me, vec![client_object("b", None)], 2).expect("rewrite");
    // Server code locks an object; the owner can no longer change or delete it.
    storage
        .write(vec![ObjectWrite::new("c", "a", "{}")
            .owner(me)
            .permissions(PublicRead, NoWrite)])
        .expect("server write");
    let locked = client_write(&storage, me, vec![client_object("a", None)], 2);
    assert!(
        matches!(locked, Err(StorageError::PermissionDenied(_))),
        "{locked:?}"
    );
    let pending = storage
        .check_client_delete(
            me,
            vec![quicmatch_protocol::StorageDeleteObject {
                collection: "c".into(),
                key: "a".into(),
                version: None,
            }],
        )
        .expect("check");
    let deleted = block_on(storage.submit_delete(pending).expect("queue"));
    assert!(matches!(deleted, Err(StorageError::PermissionDenied(_))));
    // Reads follow the read permission.
    let other = Caller::User(user(6));
    assert_eq!(
        storage
            .read_as(other, &[id("c", "a", Some(me))])
            .expect("read")
            .len(),
        1
    );
    assert!(storage
        .read_as(other, &[id("c", "b", Some(me))])
        .expect("read")
        .is_empty());
    // Deleting: with a stale version refused, then done; counts follow.
    let a = storage
        .read(&[id("c", "a", Some(me))])
        .expect("read")
        .remove(0);
    let stale = storage.delete(vec![ObjectDelete::new("c", "a")
        .owner(me)
        .version("0000000000000001")]);
    assert!(matches!(stale, Err(StorageError::VersionConflict(_))));
    storage
        .delete(vec![ObjectDelete::new("c", "a")
            .owner(me)
            .version(a.version)])
        .expect("delete");
    storage
        .delete(vec![ObjectDelete::new("c", "gone").owner(me)])
        .expect("absent without a version is fine");
    client_write(&storage, me, vec![client_object("c", None)], 2).expect("room again");
    assert_eq!(storage.handle.inner.counters().objects, 2);
}

#[test]
fn bad_input_is_refused_before_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(&config(dir.path())).expect("open");
    type Expected = fn(&StorageError) -> bool;
    let cases: Vec<(ObjectWrite, Expected)> = vec![
        (ObjectWrite::new("", "k", "{}"), |e| {
            matches!(e, StorageError::BadInput(_))
        }),
        (ObjectWrite::new("c", "k", "[1]"), |e| {
            matches!(e, StorageError::InvalidJson(_))
        }),
        (
            ObjectWrite::new("c", "k", format!("{{\"a\":\"{}\"}}", "x".repeat(70_000))),
            |e| matches!(e, StorageError::ValueTooLarge(_)),
        ),
        (ObjectWrite::new("c", "k", "{}").version(""), |e| {
            matches!(e, StorageError::BadInput(_))
        }),
    ];
    for (write, expected) in cases {
        let e = storage.write(vec![write.clone()]).expect_err("refused");
        assert!(expected(&e), "{write:?}: {e:?}");
    }
    let twice = storage.write(vec![
        ObjectWrite::new("c", "k", "{}"),
        ObjectWrite::new("c", "k", "{}"),
    ]);
    assert!(matches!(twice, Err(StorageError::BadInput(_))));
    assert!(matches!(
        storage.write(vec![]),
        Err(StorageError::BadInput(_))
    ));
    assert!(!storage.path().exists(), "nothing reached the file");
}

#[test]
fn listings_page_by_owner_then_key_and_skip_what_the_caller_may_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(&config(dir.path())).expect("open");
    for owner in [None, Some(user(1)), Some(user(2))] {
        let writes = (0..30)
            .map(|i| {
                let read = if i % 3 == 0 { PublicRead } else { OwnerRead };
                let mut w =
                    ObjectWrite::new("c", format!("k{i:02}"), "{}").permissions(read, OwnerWrite);
                w.owner = owner;
                w
            })
            .collect();
        storage.write(writes).expect("write");
    }
    storage
        .write(vec![ObjectWrite::new("other", "k", "{}")])
        .expect("write");
    let collect = |caller: Caller, owners: Owners, limit: u32| {
        let (mut all, mut cursor, mut pages) = (Vec::new(), None, 0);
        loop {
            let page = storage
                .list_as(caller, "c", owners, limit, cursor.as_deref(), usize::MAX)
                .expect("list");
            pages += 1;
            all.extend(page.objects.into_iter().map(|o| (o.user_id, o.key)));
            cursor = page.cursor;
            if cursor.is_none() {
                return (all, pages);
            }
        }
    };
    let (all, pages) = collect(Caller::Server, Owners::Any, 7);
    assert_eq!(all.len(), 90);
    assert_eq!(pages, 13);
    let mut sorted = all.clone();
    sorted.sort_by_key(|(u, k)| (owner_key(*u), k.clone()));
    assert_eq!(all, sorted);
    let (mine, _) = collect(Caller::User(user(1)), Owners::User(user(1)), 100);
    assert_eq!(mine.len(), 30);
    let (theirs, _) = collect(Caller::User(user(1)), Owners::User(user(2)), 100);
    assert_eq!(theirs.len(), 10, "public ones only");
    let (any, _) = collect(Caller::User(user(1)), Owners::Any, 100);
    assert_eq!(any.len(), 30 + 10 + 10);
    let (system, _) = collect(Caller::Server, Owners::System, 100);
    assert!(system.iter().all(|(u, _)| u.is_none()) && system.len() == 30);
    // A byte budget ends a page early, but never before its first object.
    let page = storage
        .list_as(Caller::Server, "c", Owners::Any, 100, None, 1)
        .expect("list");
    assert_eq!(page.objects.len(), 1);
    assert!(page.cursor.is_some());
    // A cursor from one user's listing does not continue another's.
    let page = storage
        .list("c", Owners::User(user(1)), 5, None)
        .expect("list");
    let e = storage.list("c", Owners::User(user(2)), 5, page.cursor.as_deref());
    assert!(matches!(e, Err(StorageError::BadInput(_))));
    for limit in [0, 101] {
        assert!(matches!(
            storage.list("c", Owners::Any, limit, None),
            Err(StorageError::BadInput(_))
        ));
    }
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(&config(dir.path())).expect("open");
    storage
        .write(vec![ObjectWrite::new("c", "k", "{}")])
        .expect("write");
    storage.close();
    {
        let db = Database::open(dir.path().join(FILE_NAME)).expect("raw open");
        let txn = db.begin_write().expect("txn");
        txn.open_table(tables::META)
            .expect("meta")
            .insert(tables::META_SCHEMA, tables::SCHEMA_VERSION + 1)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let e = Storage::open(&config(dir.path())).err().expect("refused");
    let text = e.to_string();
    assert!(matches!(e, StorageError::NewerSchema { .. }), "{e:?}");
    assert!(
        text.contains("schema version 2 is newer than this server's 1"),
        "{text}"
    );
    assert!(text.contains("quicmatch.redb"), "{text}");
}

#[test]
fn export_then_import_gives_the_same_objects() {
    let (a, b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let from = Storage::open(&config(a.path())).expect("open");
    from.write(vec![
        ObjectWrite::new("c", "k", r#"{ "spaced" : [1, 2] }"#)
            .owner(user(3))
            .permissions(PublicRead, NoWrite),
        ObjectWrite::new("c", "sys", r#"{"x":"\u00e9"}"#),
    ])
    .expect("write");
    let mut file = Vec::new();
    assert_eq!(from.export(&mut file).expect("export"), 2);
    let to = Storage::open(&config(b.path())).expect("open");
    assert_eq!(to.import(&mut file.as_slice()).expect("import"), 2);
    let ids = [id("c", "k", Some(user(3))), id("c", "sys", None)];
    assert_eq!(to.read(&ids).expect("read"), from.read(&ids).expect("read"));
    // Again: the same store, and versions go on from the imported ones.
    assert_eq!(to.import(&mut file.as_slice()).expect("import"), 2);
    assert_eq!(to.handle.inner.counters().objects, 2);
    let next = to
        .write(vec![ObjectWrite::new("c", "new", "{}")])
        .expect("write");
    let old = from.read(&ids).expect("read");
    assert!(old.iter().all(|o| o.version < next[0].version));
}

#[test]
fn many_writers_share_commits_and_exactly_one_wins_each_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(&config(dir.path())).expect("open");
    let base = storage
        .write(vec![ObjectWrite::new("c", "race", "{}")])
        .expect("write");
    let mut version = base[0].version.clone();
    for _ in 0..20 {
        let wins = std::thread::scope(|s| {
            let tries: Vec<_> = (0..10)
                .map(|i| {
                    let (storage, version) = (storage.clone(), version.clone());
                    s.spawn(move || {
                        storage.write(vec![ObjectWrite::new(
                            "c",
                            "race",
                            format!("{{\"w\":{i}}}"),
                        )
                        .version(version)])
                    })
                })
                .collect();
            tries
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .collect::<Vec<_>>()
        });
        let won: Vec<_> = wins.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "{wins:?}");
        assert!(wins
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StorageError::VersionConflict(_))));
        version = won[0][0].version.clone();
    }
}
