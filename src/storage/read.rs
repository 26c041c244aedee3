//! Reads: objects by name, and listings by collection with a cursor. Each runs in one
//! read transaction, so it sees one committed state, and never waits for the writer.

use std::ops::Bound;

use quicmatch_protocol::{
    storage::valid_name, StorageObject, StorageObjectId, StorageObjectList,
    MAX_STORAGE_COLLECTION_LEN, MAX_STORAGE_LIST_LIMIT,
};

use super::{
    model::{self, decode_cursor, encode_cursor, Caller},
    tables::{owner_key, Record, OBJECTS},
    Inner, Owners, StorageError, LIST_SCAN,
};

/// An upper bound of the bytes one object takes in a reply: its strings and at most 80
/// bytes of lengths, owner, version, permissions and times.
pub(crate) fn reply_size(object: &StorageObject) -> usize {
    object.collection.len() + object.key.len() + object.value.len() + object.version.len() + 80
}

fn damaged() -> StorageError {
    StorageError::Internal("a stored record is damaged".into())
}

/// What `caller` may read of `ids`, in their order.
pub(super) fn read(
    inner: &Inner,
    caller: Caller,
    ids: &[StorageObjectId],
) -> Result<Vec<StorageObject>, StorageError> {
    for id in ids {
        model::check_name(&id.collection, &id.key)?;
    }
    let Some(db) = inner.database(false)? else {
        return Ok(Vec::new());
    };
    let txn = db.begin_read().map_err(StorageError::internal)?;
    let objects = txn.open_table(OBJECTS).map_err(StorageError::internal)?;
    let mut found = Vec::new();
    for id in ids {
        let owner = owner_key(id.user_id);
        let key = (id.collection.as_str(), owner, id.key.as_str());
        let Some(guard) = objects.get(key).map_err(StorageError::internal)? else {
            continue;
        };
        let record = Record::decode(guard.value()).ok_or_else(damaged)?;
        if caller.may_read(owner, record.read) {
            found.push(record.into_object(&id.collection, owner, &id.key));
        }
    }
    Ok(found)
}

/// One page of `collection`'s objects of `owners` that `caller` may read (see
/// [`Storage::list_as`](super::Storage::list_as)).
pub(super) fn list(
    inner: &Inner,
    caller: Caller,
    collection: &str,
    owners: Owners,
    limit: u32,
    cursor: Option<&str>,
    budget: usize,
) -> Result<StorageObjectList, StorageError> {
    if !valid_name(collection, MAX_STORAGE_COLLECTION_LEN) {
        return Err(StorageError::BadInput(format!(
            "a collection must be 1 to {MAX_STORAGE_COLLECTION_LEN} bytes without control characters"
        )));
    }
    if limit == 0 || limit > MAX_STORAGE_LIST_LIMIT {
        return Err(StorageError::BadInput(format!(
            "limit must be 1 to {MAX_STORAGE_LIST_LIMIT}, got {limit}"
        )));
    }
    let (lowest, highest) = match owners {
        Owners::Any => (0, u128::MAX),
        Owners::System => (0, 0),
        Owners::User(user) => {
            let owner = owner_key(Some(user));
            (owner, owner)
        }
    };
    let after = cursor.map(decode_cursor).transpose()?;
    if after
        .as_ref()
        .is_some_and(|(owner, _)| !(lowest..=highest).contains(owner))
    {
        return Err(StorageError::BadInput(
            "the cursor belongs to another listing".into(),
        ));
    }
    let empty = StorageObjectList {
        objects: Vec::new(),
        cursor: None,
    };
    let Some(db) = inner.database(false)? else {
        return Ok(empty);
    };
    let txn = db.begin_read().map_err(StorageError::internal)?;
    let table = txn.open_table(OBJECTS).map_err(StorageError::internal)?;
    let start = match &after {
        Some((owner, key)) => Bound::Excluded((collection, *owner, key.as_str())),
        None => Bound::Included((collection, lowest, "")),
    };
    let range = table
        .range::<(&str, u128, &str)>((start, Bound::Unbounded))
        .map_err(StorageError::internal)?;
    let limit = limit as usize;
    let (mut objects, mut used, mut scanned) = (Vec::new(), 0, 0);
    let (mut last, mut more) = (None, false);
    for entry in range {
        let (name, record) = entry.map_err(StorageError::internal)?;
        let (c, owner, key) = name.value();
        if c != collection || owner > highest {
            break;
        }
        if objects.len() == limit || scanned == LIST_SCAN {
            more = true;
            break;
        }
        scanned += 1;
        let record = Record::decode(record.value()).ok_or_else(damaged)?;
        if caller.may_read(owner, record.read) {
            let object = record.into_object(c, owner, key);
            let size = reply_size(&object);
            // The first object always goes in (it fits a frame by itself), so every page
            // makes progress.
            if !objects.is_empty() && used + size > budget {
                more = true;
                break;
            }
            used += size;
            objects.push(object);
        }
        last = Some((owner, key.to_owned()));
    }
    let cursor = match (more, last) {
        (true, Some((owner, key))) => Some(encode_cursor(owner, &key)),
        _ => None,
    };
    Ok(StorageObjectList { objects, cursor })
}
