//! Opening the store's file: redb's settings, the schema check, the counters, and the
//! log line an operator reads at startup (path, size, schema version, objects, and
//! whether the file needed repair after an unclean stop).

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use redb::{Builder, Database, DatabaseError, Durability, ReadableTable, Table};
use tracing::{info, warn};

use super::{
    tables::{
        META, META_BYTES, META_NEXT_VERSION, META_OBJECTS, META_SCHEMA, OBJECTS, OWNERS,
        SCHEMA_VERSION,
    },
    writer::Counters,
    StorageError,
};

/// Why the file did not open.
pub(super) enum OpenError {
    /// Another process holds it.
    Busy,
    /// Anything else, said for an operator.
    Failed(StorageError),
}

fn failed(path: &Path, e: impl std::fmt::Display) -> OpenError {
    OpenError::Failed(StorageError::Io(format!("{}: {e}", path.display())))
}

/// Opens (creating it and its directory if needed) the store at `path`, repairing it
/// if it was not closed cleanly, and checks and initializes its schema.
pub(super) fn open_file(path: &Path, cache_size: usize) -> Result<(Database, Counters), OpenError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    }
    // redb repairs a file it has just created too; only a file with data in it was
    // not closed cleanly.
    let existed = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
    let repaired = Arc::new(AtomicBool::new(false));
    let flag = repaired.clone();
    let mut builder = Builder::new();
    builder
        .create_with_file_format_v3(true)
        .set_cache_size(cache_size)
        .set_repair_callback(move |_| flag.store(true, Ordering::Relaxed));
    // A damaged file must stop the start with a message, never take the process down.
    let opened = catch_unwind(AssertUnwindSafe(|| builder.create(path)))
        .map_err(|_| failed(path, "the file is damaged and could not be repaired"))?;
    let db = match opened {
        Ok(db) => db,
        Err(DatabaseError::DatabaseAlreadyOpen) => return Err(OpenError::Busy),
        Err(e) => return Err(failed(path, e)),
    };
    let (counters, schema) = init(&db).map_err(|e| match e {
        StorageError::NewerSchema {
            found, supported, ..
        } => OpenError::Failed(StorageError::NewerSchema {
            path: path.to_owned(),
            found,
            supported,
        }),
        e => failed(path, e),
    })?;
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    if existed && repaired.load(Ordering::Relaxed) {
        warn!(path = %path.display(), "the store was not closed cleanly; it was checked and repaired");
    }
    info!(
        path = %path.display(),
        size_bytes = size,
        schema_version = schema,
        objects = counters.objects,
        value_bytes = counters.bytes,
        "store opened"
    );
    Ok((db, counters))
}

/// Creates the tables of a new store; refuses a newer schema; reads the counters and
/// the schema version.
fn init(db: &Database) -> Result<(Counters, u64), StorageError> {
    let mut txn = db.begin_write().map_err(StorageError::internal)?;
    txn.set_durability(Durability::Immediate);
    let opened = {
        let mut meta = txn.open_table(META).map_err(StorageError::internal)?;
        txn.open_table(OBJECTS).map_err(StorageError::internal)?;
        txn.open_table(OWNERS).map_err(StorageError::internal)?;
        let schema = match get(&meta, META_SCHEMA)? {
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StorageError::NewerSchema {
                    path: Default::default(),
                    found,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(found) => found,
            None => {
                meta.insert(META_SCHEMA, SCHEMA_VERSION)
                    .map_err(StorageError::internal)?;
                SCHEMA_VERSION
            }
        };
        let counters = Counters {
            next_version: get(&meta, META_NEXT_VERSION)?.unwrap_or(1).max(1),
            objects: get(&meta, META_OBJECTS)?.unwrap_or(0),
            bytes: get(&meta, META_BYTES)?.unwrap_or(0),
        };
        (counters, schema)
    };
    txn.commit().map_err(StorageError::internal)?;
    Ok(opened)
}

fn get(meta: &Table<'_, &'static str, u64>, name: &str) -> Result<Option<u64>, StorageError> {
    Ok(meta
        .get(name)
        .map_err(StorageError::internal)?
        .map(|g| g.value()))
}
