//! The store's one writer: a thread that takes writes from a bounded queue and commits
//! whatever is waiting together, in one transaction with one fsync (group commit).
//!
//! Each write is checked (versions, permissions, the per-user quota) against the store
//! as the writes before it in the same transaction left it, and either applied whole or
//! refused whole; a refused write changes nothing. Replies go out only after the commit
//! returned, so an acknowledged write is on disk. If the commit fails, every write in it
//! is told so and none of them happened.
//!
//! The queue (`storage.write_queue`) holds [`Op`]s from client requests (`try_send`: a
//! full queue refuses the request) and from server code (`send`: it waits for room).

use std::{
    collections::HashMap,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{mpsc::Receiver, Arc},
    time::Instant,
};

use quicmatch_protocol::{
    storage::VERSION_ABSENT, ReadPermission, StorageObject, StorageObjectAck, WritePermission,
};
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use tracing::{error, info};

use super::{
    model::{now_ms, Caller},
    tables::{
        owner_of, version_number, version_text, Record, META, META_BYTES, META_NEXT_VERSION,
        META_OBJECTS, OBJECTS, OWNERS,
    },
    Inner, StorageError,
};

/// Most operations one commit takes; the rest wait for the next one.
const MAX_BATCH: usize = 1024;

/// How an operation's outcome reaches its caller: a blocked thread or an awaiting task.
pub(crate) type Reply<T> = Box<dyn FnOnce(Result<T, StorageError>) + Send>;

/// One object to write, checked and named as stored.
#[derive(Debug, Clone)]
pub(crate) struct Put {
    pub(crate) collection: String,
    pub(crate) key: String,
    pub(crate) owner: u128,
    pub(crate) value: String,
    pub(crate) version: Option<String>,
    pub(crate) read: ReadPermission,
    pub(crate) write: WritePermission,
}

/// One object to delete.
#[derive(Debug, Clone)]
pub(crate) struct Remove {
    pub(crate) collection: String,
    pub(crate) key: String,
    pub(crate) owner: u128,
    pub(crate) version: Option<String>,
}

/// What the writer is asked to do.
pub(crate) enum Op {
    /// Write objects, all or none; `quota` bounds a user caller's objects.
    Write {
        caller: Caller,
        puts: Vec<Put>,
        quota: usize,
        reply: Reply<Vec<StorageObjectAck>>,
    },
    /// Delete objects, all or none.
    Delete {
        caller: Caller,
        removes: Vec<Remove>,
        reply: Reply<()>,
    },
    /// Put objects back as they were exported (versions and times kept).
    Import {
        objects: Vec<StorageObject>,
        reply: Reply<()>,
    },
    /// Replace and delete restart records (sessions, parties, match snapshots).
    Restart {
        changes: super::restart::RestartChanges,
        reply: Reply<()>,
    },
    /// Commit what came before, then close the store.
    Close { reply: Reply<()> },
}

impl Op {
    fn fail(self, e: StorageError) {
        match self {
            Self::Write { reply, .. } => reply(Err(e)),
            Self::Delete { reply, .. }
            | Self::Import { reply, .. }
            | Self::Restart { reply, .. }
            | Self::Close { reply } => reply(Err(e)),
        }
    }
}

/// Counters kept in the `meta` table, in step with the objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) next_version: u64,
    pub(crate) objects: u64,
    pub(crate) bytes: u64,
}

impl Counters {
    pub(crate) fn publish(&self) {
        metrics::gauge!("quicmatch_storage_objects").set(self.objects as f64);
        metrics::gauge!("quicmatch_storage_bytes").set(self.bytes as f64);
    }
}

/// Runs until every sender is gone.
pub(crate) fn run(inner: Arc<Inner>, queue: Receiver<Op>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        // A panic inside the database (a damaged page) must not leave callers waiting or
        // the file half-written: the batch's callers are told (their replies are
        // dropped), and the store is closed until the server restarts and recovers it.
        if catch_unwind(AssertUnwindSafe(|| process(&inner, batch))).is_err() {
            error!("the store's writer failed; storage is closed until the server restarts");
            inner.close();
        }
    }
}

/// A finished operation waiting for the commit.
enum Done {
    Acks(
        Reply<Vec<StorageObjectAck>>,
        Result<Vec<StorageObjectAck>, StorageError>,
    ),
    Unit(Reply<()>, Result<(), StorageError>),
}

impl Done {
    /// Answers the caller: a refusal stands whatever the commit did; a success only if
    /// the commit did too.
    fn send(self, failed: Option<&StorageError>) {
        match self {
            Self::Acks(reply, result) => reply(settle(result, failed)),
            Self::Unit(reply, result) => reply(settle(result, failed)),
        }
    }
}

fn settle<T>(
    result: Result<T, StorageError>,
    failed: Option<&StorageError>,
) -> Result<T, StorageError> {
    match (result, failed) {
        (Ok(_), Some(e)) => Err(e.clone()),
        (result, _) => result,
    }
}

fn process(inner: &Inner, batch: Vec<Op>) {
    let (mut ops, mut closes) = (Vec::with_capacity(batch.len()), Vec::new());
    for op in batch {
        match op {
            Op::Close { reply } => closes.push(reply),
            // Anything sent after a close fails as closed (its sender raced the close).
            op if !closes.is_empty() => op.fail(StorageError::Closed),
            op => ops.push(op),
        }
    }
    if !ops.is_empty() {
        commit(inner, ops);
    }
    if !closes.is_empty() {
        inner.close();
        info!("store closed");
        for reply in closes {
            reply(Ok(()));
        }
    }
}

fn commit(inner: &Inner, ops: Vec<Op>) {
    let db = match inner.database(true) {
        Ok(Some(db)) => db,
        Ok(None) => {
            let e = StorageError::Internal("the store could not be created".into());
            return ops.into_iter().for_each(|op| op.fail(e.clone()));
        }
        Err(e) => return ops.into_iter().for_each(|op| op.fail(e.clone())),
    };
    let before = inner.counters();
    let mut counters = before;
    let started = Instant::now();
    let mut written = 0;
    let (done, result) = match apply_all(&db, &mut counters, &mut written, ops) {
        Ok(done) => (done, Ok(())),
        Err((done, e)) => (done, Err(e)),
    };
    let failed = match result {
        Ok(()) => {
            metrics::histogram!("quicmatch_storage_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("quicmatch_storage_writes_total").increment(written);
            inner.set_counters(counters);
            if counters != before {
                counters.publish();
            }
            None
        }
        Err(e) => {
            error!(error = %e, "storage commit failed; its writes were refused");
            Some(StorageError::Internal("the store could not commit".into()))
        }
    };
    for d in done {
        d.send(failed.as_ref());
    }
}

type Tables<'t> = (
    Table<'t, (&'static str, u128, &'static str), &'static [u8]>,
    Table<'t, u128, u64>,
);

/// Applies every operation in one transaction and commits it. On a storage failure the
/// transaction is dropped (nothing is written) and the failure returned with what the
/// operations would have answered.
fn apply_all(
    db: &Database,
    counters: &mut Counters,
    written: &mut u64,
    ops: Vec<Op>,
) -> Result<Vec<Done>, (Vec<Done>, StorageError)> {
    let mut done = Vec::with_capacity(ops.len());
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            let e = StorageError::internal(e);
            ops.into_iter().for_each(|op| op.fail(e.clone()));
            return Err((done, e));
        }
    };
    txn.set_durability(Durability::Immediate);
    let mut fatal = None;
    {
        let tables = txn
            .open_table(OBJECTS)
            .and_then(|o| Ok((o, txn.open_table(OWNERS)?)))
            .map_err(StorageError::internal);
        let mut tables: Tables<'_> = match tables {
            Ok(t) => t,
            Err(e) => {
                ops.into_iter().for_each(|op| op.fail(e.clone()));
                return Err((done, e));
            }
        };
        let now = now_ms();
        for op in ops {
            if fatal.is_some() {
                op.fail(StorageError::Internal("the store could not commit".into()));
                continue;
            }
            let mut trial = *counters;
            let size = match &op {
                Op::Write { puts, .. } => puts.len(),
                Op::Delete { removes, .. } => removes.len(),
                Op::Import { objects, .. } => objects.len(),
                Op::Restart { .. } | Op::Close { .. } => 0,
            };
            let outcome = match op {
                Op::Write {
                    caller,
                    puts,
                    quota,
                    reply,
                } => Done::Acks(
                    reply,
                    write(&mut tables, &mut trial, caller, &puts, quota, now),
                ),
                Op::Delete {
                    caller,
                    removes,
                    reply,
                } => Done::Unit(reply, delete(&mut tables, &mut trial, caller, &removes)),
                Op::Import { objects, reply } => {
                    Done::Unit(reply, import(&mut tables, &mut trial, &objects))
                }
                Op::Restart { changes, reply } => {
                    let applied = txn
                        .open_table(super::restart::RESTART)
                        .map_err(StorageError::internal)
                        .and_then(|mut t| super::restart::apply(&mut t, &changes));
                    Done::Unit(reply, applied)
                }
                Op::Close { reply } => Done::Unit(reply, Ok(())),
            };
            let failure = match &outcome {
                Done::Acks(_, Err(e)) | Done::Unit(_, Err(e)) => Some(e),
                _ => None,
            };
            match failure {
                Some(e @ StorageError::Internal(_)) => fatal = Some(e.clone()),
                Some(_) => {}
                None => {
                    *counters = trial;
                    *written += size as u64;
                }
            }
            done.push(outcome);
        }
    }
    if let Some(e) = fatal {
        let _ = txn.abort();
        return Err((done, e));
    }
    match put_counters(&mut txn, counters)
        .and_then(|()| txn.commit().map_err(StorageError::internal))
    {
        Ok(()) => Ok(done),
        Err(e) => Err((done, e)),
    }
}

fn put_counters(txn: &mut WriteTransaction, c: &Counters) -> Result<(), StorageError> {
    let mut meta = txn.open_table(META).map_err(StorageError::internal)?;
    for (name, value) in [
        (META_NEXT_VERSION, c.next_version),
        (META_OBJECTS, c.objects),
        (META_BYTES, c.bytes),
    ] {
        meta.insert(name, value).map_err(StorageError::internal)?;
    }
    Ok(())
}

/// What an object's current record says, for checks.
struct Existing {
    version: u64,
    write: WritePermission,
    created: u64,
    len: u64,
}

fn existing(
    objects: &Table<'_, (&'static str, u128, &'static str), &'static [u8]>,
    collection: &str,
    owner: u128,
    key: &str,
) -> Result<Option<Existing>, StorageError> {
    let Some(guard) = objects
        .get((collection, owner, key))
        .map_err(StorageError::internal)?
    else {
        return Ok(None);
    };
    let record = Record::decode(guard.value()).ok_or_else(|| {
        StorageError::Internal(format!("a stored record of {collection}/{key} is damaged"))
    })?;
    Ok(Some(Existing {
        version: record.version,
        write: record.write,
        created: record.created,
        len: record.value.len() as u64,
    }))
}

/// Whether `version` (as a client named it) allows a change to `current`.
fn condition_holds(version: Option<&str>, current: Option<&Existing>) -> bool {
    match (version, current) {
        (None, _) => true,
        (Some(VERSION_ABSENT), current) => current.is_none(),
        (Some(v), Some(c)) => version_number(v) == Some(c.version),
        (Some(_), None) => false,
    }
}

fn conflict(collection: &str, key: &str, version: Option<&str>) -> StorageError {
    StorageError::VersionConflict(match version {
        Some(VERSION_ABSENT) => format!("{collection}/{key} already exists"),
        _ => format!(
            "{collection}/{key} is not at version {}",
            version.unwrap_or("")
        ),
    })
}

fn denied(collection: &str, key: &str) -> StorageError {
    StorageError::PermissionDenied(format!(
        "{collection}/{key} may be changed only by server code"
    ))
}

fn write(
    (objects, owners): &mut Tables<'_>,
    counters: &mut Counters,
    caller: Caller,
    puts: &[Put],
    quota: usize,
    now: u64,
) -> Result<Vec<StorageObjectAck>, StorageError> {
    // Every check first, so a refused write changes nothing.
    let mut found = Vec::with_capacity(puts.len());
    let mut added: HashMap<u128, u64> = HashMap::new();
    for p in puts {
        let current = existing(objects, &p.collection, p.owner, &p.key)?;
        if !condition_holds(p.version.as_deref(), current.as_ref()) {
            return Err(conflict(&p.collection, &p.key, p.version.as_deref()));
        }
        if current
            .as_ref()
            .is_some_and(|c| !caller.may_write(p.owner, c.write))
        {
            return Err(denied(&p.collection, &p.key));
        }
        if current.is_none() {
            *added.entry(p.owner).or_default() += 1;
        }
        found.push(current);
    }
    let mut totals = HashMap::new();
    for (&owner, &n) in &added {
        let had = owners
            .get(owner)
            .map_err(StorageError::internal)?
            .map_or(0, |g| g.value());
        if let Caller::User(_) = caller {
            if owner != 0 && had.saturating_add(n) > quota as u64 {
                return Err(StorageError::QuotaExceeded(format!(
                    "at most {quota} objects per user"
                )));
            }
        }
        totals.insert(owner, had.saturating_add(n));
    }
    let mut acks = Vec::with_capacity(puts.len());
    for (p, current) in puts.iter().zip(found) {
        let version = counters.next_version;
        counters.next_version += 1;
        let record = Record {
            version,
            read: p.read,
            write: p.write,
            created: current.as_ref().map_or(now, |c| c.created),
            updated: now,
            value: p.value.clone(),
        };
        objects
            .insert(
                (p.collection.as_str(), p.owner, p.key.as_str()),
                record.encode().as_slice(),
            )
            .map_err(StorageError::internal)?;
        match current {
            Some(c) => counters.bytes = counters.bytes.saturating_sub(c.len),
            None => counters.objects += 1,
        }
        counters.bytes += p.value.len() as u64;
        acks.push(StorageObjectAck {
            collection: p.collection.clone(),
            key: p.key.clone(),
            user_id: owner_of(p.owner),
            version: version_text(version),
        });
    }
    for (owner, total) in totals {
        owners
            .insert(owner, total)
            .map_err(StorageError::internal)?;
    }
    Ok(acks)
}

fn delete(
    (objects, owners): &mut Tables<'_>,
    counters: &mut Counters,
    caller: Caller,
    removes: &[Remove],
) -> Result<(), StorageError> {
    let mut found = Vec::with_capacity(removes.len());
    for r in removes {
        let current = existing(objects, &r.collection, r.owner, &r.key)?;
        if !condition_holds(r.version.as_deref(), current.as_ref()) {
            return Err(conflict(&r.collection, &r.key, r.version.as_deref()));
        }
        if current
            .as_ref()
            .is_some_and(|c| !caller.may_write(r.owner, c.write))
        {
            return Err(denied(&r.collection, &r.key));
        }
        found.push(current);
    }
    for (r, current) in removes.iter().zip(found) {
        let Some(current) = current else { continue };
        objects
            .remove((r.collection.as_str(), r.owner, r.key.as_str()))
            .map_err(StorageError::internal)?;
        counters.objects = counters.objects.saturating_sub(1);
        counters.bytes = counters.bytes.saturating_sub(current.len);
        let had = owners
            .get(r.owner)
            .map_err(StorageError::internal)?
            .map_or(0, |g| g.value());
        match had.saturating_sub(1) {
            0 => owners.remove(r.owner).map(drop),
            left => owners.insert(r.owner, left).map(drop),
        }
        .map_err(StorageError::internal)?;
    }
    Ok(())
}

fn import(
    (objects, owners): &mut Tables<'_>,
    counters: &mut Counters,
    imported: &[StorageObject],
) -> Result<(), StorageError> {
    for o in imported {
        let owner = super::tables::owner_key(o.user_id);
        let current = existing(objects, &o.collection, owner, &o.key)?;
        // Versions this store could have given are kept (so conditional writes that
        // name them still work); others get a new one.
        let version = match version_number(&o.version) {
            Some(v) => v,
            None => counters.next_version,
        };
        counters.next_version = counters.next_version.max(version.saturating_add(1));
        let record = Record {
            version,
            read: o.permission_read,
            write: o.permission_write,
            created: o.create_time,
            updated: o.update_time,
            value: o.value.clone(),
        };
        objects
            .insert(
                (o.collection.as_str(), owner, o.key.as_str()),
                record.encode().as_slice(),
            )
            .map_err(StorageError::internal)?;
        match current {
            Some(c) => counters.bytes = counters.bytes.saturating_sub(c.len),
            None => {
                counters.objects += 1;
                let had = owners
                    .get(owner)
                    .map_err(StorageError::internal)?
                    .map_or(0, |g| g.value());
                owners
                    .insert(owner, had + 1)
                    .map_err(StorageError::internal)?;
            }
        }
        counters.bytes += o.value.len() as u64;
    }
    Ok(())
}
