//! Storage objects in an embedded, crash-safe store: the only module that opens the
//! file (`data_dir/quicmatch.redb`, a redb database).
//!
//! Objects follow Nakama's model: `(collection, key, owner)` names a JSON object with a
//! version and read and write permissions (see [`quicmatch_protocol::storage`]). Server
//! code gets a [`Storage`] handle with full access ([`Runtime::storage`]); clients reach
//! it through the storage requests, under the permissions and the `[storage]` limits.
//!
//! Durability: every write is acknowledged only after the transaction that holds it is
//! committed with an fsync; writes that wait together share one commit (the writer
//! thread, `writer.rs`). Reads see the last committed state and never wait for writes.
//!
//! The file is opened when the server starts if it exists, and created by the first
//! write otherwise. A file written by a newer server (a greater schema version) or one
//! that cannot be read stops the start with a message saying so; a file another process
//! holds leaves storage unavailable (`STORAGE_UNAVAILABLE`) until it is free, tried
//! again at most once a second. Servers in one process that name the same `data_dir`
//! share one store.
//!
//! [`Runtime::storage`]: crate::runtime::Runtime::storage

mod export;
mod file;
mod model;
mod objects;
mod read;
pub(crate) mod restart;
mod tables;
mod writer;

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc::{sync_channel, SyncSender, TrySendError},
        Arc, Mutex, MutexGuard, Weak,
    },
    time::Instant,
};

pub use quicmatch_protocol::{
    ReadPermission, StorageObject, StorageObjectAck, StorageObjectId, StorageObjectList, UserId,
    WritePermission,
};
use redb::Database;
use tracing::{info, warn};

pub use self::objects::{ObjectDelete, ObjectWrite, Owners, StorageError};
use self::{
    model::BUSY_RETRY,
    tables::{owner_key, FILE_NAME},
    writer::{Counters, Op, Put, Remove},
};
pub(crate) use self::{
    model::{Caller, WriteLimits},
    read::reply_size,
};
use crate::config::Config;

/// The store, as server code uses it: cheap to clone. Its calls block (a write until
/// its commit is on disk, about a millisecond on a local disk, shared with other writes
/// waiting), so they belong on blocking threads: RPC functions and hooks run on one;
/// in a match handler, keep them out of `tick` where possible.
#[derive(Clone)]
pub struct Storage {
    handle: Arc<Handle>,
}

/// What every clone shares; when the last one goes, the writer stops and the file is
/// closed.
struct Handle {
    /// To the writer thread; bounded by `storage.write_queue`.
    queue: SyncSender<Op>,
    inner: Arc<Inner>,
    /// Servers serving with this store; the last one to stop closes it.
    servers: AtomicUsize,
}

/// The file and the state shared by the writer and the readers.
pub(crate) struct Inner {
    path: PathBuf,
    cache_size: usize,
    /// One lock over the open database and its counters, held for a lookup (or while
    /// the file is opened), never across an await.
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    db: Option<Arc<Database>>,
    counters: Counters,
    closed: bool,
    /// When another process was last found holding the file.
    busy_since: Option<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stores open in this process, by directory, so servers naming the same `data_dir`
/// share one (the file can be opened once).
static OPEN: Mutex<Vec<(PathBuf, Weak<Handle>)>> = Mutex::new(Vec::new());

impl Inner {
    /// The open database; opens (or, with `create`, creates) the file if needed.
    /// `Ok(None)`: there is no store yet and `create` is false.
    pub(crate) fn database(&self, create: bool) -> Result<Option<Arc<Database>>, StorageError> {
        let mut slot = lock(&self.slot);
        if slot.closed {
            return Err(StorageError::Closed);
        }
        if let Some(db) = &slot.db {
            return Ok(Some(db.clone()));
        }
        if !create && !self.path.exists() {
            return Ok(None);
        }
        if slot.busy_since.is_some_and(|t| t.elapsed() < BUSY_RETRY) {
            return Err(self.busy());
        }
        match file::open_file(&self.path, self.cache_size) {
            Ok((db, counters)) => {
                counters.publish();
                let db = Arc::new(db);
                *slot = Slot {
                    db: Some(db.clone()),
                    counters,
                    closed: false,
                    busy_since: None,
                };
                Ok(Some(db))
            }
            Err(file::OpenError::Busy) => {
                if slot.busy_since.is_none() {
                    warn!(path = %self.path.display(), "the store is held by another process; storage is unavailable until it is free");
                }
                slot.busy_since = Some(Instant::now());
                Err(self.busy())
            }
            Err(file::OpenError::Failed(e)) => Err(e),
        }
    }

    fn busy(&self) -> StorageError {
        StorageError::Unavailable(format!(
            "the store {} is in use by another process",
            self.path.display()
        ))
    }

    pub(crate) fn counters(&self) -> Counters {
        lock(&self.slot).counters
    }

    pub(crate) fn set_counters(&self, counters: Counters) {
        lock(&self.slot).counters = counters;
    }

    /// Closes the file (once readers still holding it are done).
    pub(crate) fn close(&self) {
        let mut slot = lock(&self.slot);
        slot.closed = true;
        slot.db = None;
    }

    fn is_closed(&self) -> bool {
        lock(&self.slot).closed
    }
}

impl Storage {
    /// The store of `config.data_dir`: the one already open in this process, or a new
    /// handle that opens the file now if it exists (and creates it on the first write
    /// otherwise). Fails if the file is from a newer server or cannot be read; a file
    /// held by another process only logs a warning (storage calls then fail with
    /// [`StorageError::Unavailable`] until it is free).
    pub fn open(config: &Config) -> Result<Self, StorageError> {
        let dir = std::path::absolute(&config.data_dir)
            .map_err(|e| StorageError::Io(format!("{}: {e}", config.data_dir.display())))?;
        let mut open = lock(&OPEN);
        open.retain(|(_, weak)| weak.strong_count() > 0);
        let existing = open
            .iter()
            .filter(|(path, _)| *path == dir)
            .find_map(|(_, weak)| weak.upgrade())
            .filter(|handle| !handle.inner.is_closed());
        if let Some(handle) = existing {
            return Ok(Self { handle });
        }
        let path = dir.join(FILE_NAME);
        let inner = Arc::new(Inner {
            path: path.clone(),
            cache_size: config.storage.cache_size,
            slot: Mutex::new(Slot::default()),
        });
        match inner.database(false) {
            Ok(Some(_)) | Err(StorageError::Unavailable(_)) => {}
            Ok(None) => info!(path = %path.display(), "no store yet; the first write creates it"),
            Err(e) => return Err(e),
        }
        let (queue, receiver) = sync_channel(config.storage.write_queue);
        let writer = inner.clone();
        std::thread::Builder::new()
            .name("quicmatch-store".into())
            .spawn(move || writer::run(writer, receiver))
            .map_err(|e| StorageError::Io(format!("starting the store's writer: {e}")))?;
        let handle = Arc::new(Handle {
            queue,
            inner,
            servers: AtomicUsize::new(0),
        });
        open.push((dir, Arc::downgrade(&handle)));
        Ok(Self { handle })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.handle.inner.path
    }

    /// Writes objects, all or none, and returns their new versions in order. Waits
    /// until the commit is on disk.
    pub fn write(&self, objects: Vec<ObjectWrite>) -> Result<Vec<StorageObjectAck>, StorageError> {
        let puts = objects
            .into_iter()
            .map(|o| Put {
                collection: o.collection,
                key: o.key,
                owner: owner_key(o.owner),
                value: o.value,
                version: o.version,
                read: o.permission_read,
                write: o.permission_write,
            })
            .collect();
        let puts = check_puts(puts)?;
        self.wait(|reply| Op::Write {
            caller: Caller::Server,
            puts,
            quota: usize::MAX,
            reply,
        })
    }

    /// Deletes objects, all or none (an absent object without a version is no error).
    pub fn delete(&self, objects: Vec<ObjectDelete>) -> Result<(), StorageError> {
        let removes = objects
            .into_iter()
            .map(|o| Remove {
                collection: o.collection,
                key: o.key,
                owner: owner_key(o.owner),
                version: o.version,
            })
            .collect();
        let removes = check_removes(removes)?;
        self.wait(|reply| Op::Delete {
            caller: Caller::Server,
            removes,
            reply,
        })
    }

    /// Reads objects; those that do not exist are left out.
    pub fn read(&self, ids: &[StorageObjectId]) -> Result<Vec<StorageObject>, StorageError> {
        self.read_as(Caller::Server, ids)
    }

    /// Lists `collection`'s objects of `owners`, by owner then key, from `cursor` (a
    /// previous page's), at most `limit` (1 to
    /// [`quicmatch_protocol::MAX_STORAGE_LIST_LIMIT`]).
    pub fn list(
        &self,
        collection: &str,
        owners: Owners,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<StorageObjectList, StorageError> {
        self.list_as(
            Caller::Server,
            collection,
            owners,
            limit,
            cursor,
            usize::MAX,
        )
    }

    /// Writes every object as one JSON line to `out` (a consistent snapshot), after a
    /// header line; returns how many objects.
    pub fn export(&self, out: &mut dyn std::io::Write) -> Result<u64, StorageError> {
        export::export(self.handle.inner.database(false)?, out)
    }

    /// Puts back the objects of an export read from `input` (versions, permissions
    /// and times kept; an object that exists is replaced); returns how many. Each batch
    /// of lines is committed as it is read, so a failure part-way leaves the lines
    /// before it imported; importing the same file again gives the same store.
    pub fn import(&self, input: &mut dyn std::io::BufRead) -> Result<u64, StorageError> {
        export::import(input, |objects| {
            self.wait(|reply| Op::Import { objects, reply })
        })
    }

    /// Commits what is waiting and closes the file; later calls fail with
    /// [`StorageError::Closed`]. Servers close their store when the last one using it
    /// stops serving.
    pub fn close(&self) {
        let _ = self.wait(|reply| Op::Close { reply });
    }

    /// A server starts serving with this store.
    pub(crate) fn attach(&self) {
        self.handle.servers.fetch_add(1, Ordering::Relaxed);
    }

    /// A server stopped; the last one closes the store.
    pub(crate) fn detach(&self) {
        if self.handle.servers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.close();
        }
    }

    /// Sends an operation and blocks until the writer answers.
    fn wait<T: Send + 'static>(
        &self,
        op: impl FnOnce(writer::Reply<T>) -> Op,
    ) -> Result<T, StorageError> {
        let (tx, rx) = sync_channel(1);
        let reply: writer::Reply<T> = Box::new(move |result| {
            let _ = tx.send(result);
        });
        self.handle
            .queue
            .send(op(reply))
            .map_err(|_| StorageError::Closed)?;
        rx.recv().unwrap_or(Err(StorageError::Closed))
    }

    /// Sends an operation for an awaiting task; a full queue refuses it.
    fn submit<T: Send + 'static>(
        &self,
        op: impl FnOnce(writer::Reply<T>) -> Op,
    ) -> Result<impl Future<Output = Result<T, StorageError>>, StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply: writer::Reply<T> = Box::new(move |result| {
            let _ = tx.send(result);
        });
        match self.handle.queue.try_send(op(reply)) {
            Ok(()) => Ok(async move { rx.await.unwrap_or(Err(StorageError::Closed)) }),
            Err(TrySendError::Full(_)) => Err(StorageError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(StorageError::Closed),
        }
    }

    /// Checks a client's write of its own objects, before anything is queued.
    pub(crate) fn check_client_write(
        &self,
        user: UserId,
        objects: Vec<quicmatch_protocol::StorageWriteObject>,
        quota: usize,
    ) -> Result<ClientWrite, StorageError> {
        let owner = owner_key(Some(user));
        let puts = objects
            .into_iter()
            .map(|o| Put {
                collection: o.collection,
                key: o.key,
                owner,
                value: o.value,
                version: o.version,
                read: o.permission_read,
                write: o.permission_write,
            })
            .collect();
        Ok(ClientWrite {
            user,
            puts: check_puts(puts)?,
            quota,
        })
    }

    /// Queues a checked client write; the future gives its outcome once committed.
    pub(crate) fn submit_write(
        &self,
        w: ClientWrite,
    ) -> Result<impl Future<Output = Result<Vec<StorageObjectAck>, StorageError>>, StorageError>
    {
        self.submit(move |reply| Op::Write {
            caller: Caller::User(w.user),
            puts: w.puts,
            quota: w.quota,
            reply,
        })
    }

    /// Checks a client's delete of its own objects.
    pub(crate) fn check_client_delete(
        &self,
        user: UserId,
        objects: Vec<quicmatch_protocol::StorageDeleteObject>,
    ) -> Result<ClientDelete, StorageError> {
        let owner = owner_key(Some(user));
        let removes = objects
            .into_iter()
            .map(|o| Remove {
                collection: o.collection,
                key: o.key,
                owner,
                version: o.version,
            })
            .collect();
        Ok(ClientDelete {
            user,
            removes: check_removes(removes)?,
        })
    }

    /// Queues a checked client delete.
    pub(crate) fn submit_delete(
        &self,
        d: ClientDelete,
    ) -> Result<impl Future<Output = Result<(), StorageError>>, StorageError> {
        self.submit(move |reply| Op::Delete {
            caller: Caller::User(d.user),
            removes: d.removes,
            reply,
        })
    }

    /// Reads what `caller` may read of `ids`.
    pub(crate) fn read_as(
        &self,
        caller: Caller,
        ids: &[StorageObjectId],
    ) -> Result<Vec<StorageObject>, StorageError> {
        check_batch(ids.len())?;
        read::read(&self.handle.inner, caller, ids)
    }

    /// Lists what `caller` may read; a page also ends before its objects' bytes would
    /// pass `budget`, and after [`LIST_SCAN`] objects looked at (a page may then hold
    /// fewer than `limit`, even none, with a cursor to go on from).
    pub(crate) fn list_as(
        &self,
        caller: Caller,
        collection: &str,
        owners: Owners,
        limit: u32,
        cursor: Option<&str>,
        budget: usize,
    ) -> Result<StorageObjectList, StorageError> {
        read::list(
            &self.handle.inner,
            caller,
            collection,
            owners,
            limit,
            cursor,
            budget,
        )
    }
}

/// A client's write, checked and ready to queue.
pub(crate) struct ClientWrite {
    user: UserId,
    puts: Vec<Put>,
    quota: usize,
}

/// A client's delete, checked and ready to queue.
pub(crate) struct ClientDelete {
    user: UserId,
    removes: Vec<Remove>,
}

#[cfg(test)]
mod tests;

/// Objects a listing looks at per page, readable or not.
pub(crate) const LIST_SCAN: usize = 1000;

fn check_batch(n: usize) -> Result<(), StorageError> {
    let max = quicmatch_protocol::MAX_STORAGE_BATCH;
    if n == 0 || n > max {
        return Err(StorageError::BadInput(format!(
            "name 1 to {max} objects at once, not {n}"
        )));
    }
    Ok(())
}

/// Checks every write before any reaches the writer: names, versions, values, and no
/// object twice.
fn check_puts(puts: Vec<Put>) -> Result<Vec<Put>, StorageError> {
    check_batch(puts.len())?;
    for p in &puts {
        model::check_name(&p.collection, &p.key)?;
        model::check_condition(p.version.as_deref())?;
        model::check_value(&p.value)?;
    }
    no_twice(puts.iter().map(|p| (&p.collection, p.owner, &p.key)))?;
    Ok(puts)
}

fn check_removes(removes: Vec<Remove>) -> Result<Vec<Remove>, StorageError> {
    check_batch(removes.len())?;
    for r in &removes {
        model::check_name(&r.collection, &r.key)?;
        model::check_condition(r.version.as_deref())?;
    }
    no_twice(removes.iter().map(|r| (&r.collection, r.owner, &r.key)))?;
    Ok(removes)
}

fn no_twice<'a>(
    names: impl Iterator<Item = (&'a String, u128, &'a String)>,
) -> Result<(), StorageError> {
    let mut seen = std::collections::HashSet::new();
    for (collection, owner, key) in names {
        if !seen.insert((collection, owner, key)) {
            return Err(StorageError::BadInput(format!(
                "{collection}/{key} is named twice"
            )));
        }
    }
    Ok(())
}
