//! The store's file layout: its tables, the schema version, and how an object is laid
//! out in its table's value. Nothing here does I/O.
//!
//! Tables (redb, one file):
//! - `meta`: `&str -> u64`: `schema_version`, `next_version` (the next object version
//!   to hand out), `objects` and `bytes` (counts kept in step with `objects`, for
//!   metrics);
//! - `objects`: `(collection, owner, key) -> record`, owner as a `u128` (0 for objects
//!   no user owns), so one collection's objects, by owner then key, are one range;
//! - `owners`: `owner -> object count`, for `storage.max_objects_per_user`.
//!
//! A new table (match snapshots will be one, `snapshots`: match id -> bytes) is added
//! by opening it at start; that needs no new schema version. A change that an older
//! server would misread (a new record layout, a key that means something else) bumps
//! [`SCHEMA_VERSION`], and an older server then refuses the file.

use quicmatch_protocol::{ReadPermission, StorageObject, UserId, WritePermission};
use redb::TableDefinition;

/// The layout this server writes. A file with a greater one is refused.
pub(crate) const SCHEMA_VERSION: u64 = 1;

/// The store's file name inside `data_dir`.
pub(crate) const FILE_NAME: &str = "quicmatch.redb";

pub(crate) const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
pub(crate) const OBJECTS: TableDefinition<'static, (&str, u128, &str), &[u8]> =
    TableDefinition::new("objects");
pub(crate) const OWNERS: TableDefinition<'static, u128, u64> = TableDefinition::new("owners");

pub(crate) const META_SCHEMA: &str = "schema_version";
pub(crate) const META_NEXT_VERSION: &str = "next_version";
pub(crate) const META_OBJECTS: &str = "objects";
pub(crate) const META_BYTES: &str = "bytes";

/// An owner as stored: 0 for no user.
pub(crate) fn owner_key(user: Option<UserId>) -> u128 {
    user.map_or(0, |u| u.0.as_u128())
}

/// An owner as the API shows it.
pub(crate) fn owner_of(key: u128) -> Option<UserId> {
    (key != 0).then(|| UserId(uuid::Uuid::from_u128(key)))
}

/// A version as clients see it: 16 hex digits.
pub(crate) fn version_text(version: u64) -> String {
    format!("{version:016x}")
}

/// A version a client named, if it is one this store hands out.
pub(crate) fn version_number(text: &str) -> Option<u64> {
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// Record layout version, the first byte of every record.
const RECORD_FORMAT: u8 = 1;
/// Bytes before the value: format, version, read, write, created, updated.
const HEADER: usize = 1 + 8 + 1 + 1 + 8 + 8;

/// An object's stored fields (its name is the table key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) version: u64,
    pub(crate) read: ReadPermission,
    pub(crate) write: WritePermission,
    pub(crate) created: u64,
    pub(crate) updated: u64,
    pub(crate) value: String,
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.value.len());
        out.push(RECORD_FORMAT);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.push(self.read.number());
        out.push(self.write.number());
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.updated.to_le_bytes());
        out.extend_from_slice(self.value.as_bytes());
        out
    }

    /// The record in `bytes`, or `None` when they are not one this server wrote.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (head, value) = (bytes.get(..HEADER)?, bytes.get(HEADER..)?);
        if head[0] != RECORD_FORMAT {
            return None;
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(head.get(at..at + 8)?);
            Some(u64::from_le_bytes(b))
        };
        Some(Self {
            version: u64_at(1)?,
            read: ReadPermission::from_number(head[9])?,
            write: WritePermission::from_number(head[10])?,
            created: u64_at(11)?,
            updated: u64_at(19)?,
            value: String::from_utf8(value.to_vec()).ok()?,
        })
    }

    pub(crate) fn into_object(self, collection: &str, owner: u128, key: &str) -> StorageObject {
        StorageObject {
            collection: collection.to_owned(),
            key: key.to_owned(),
            user_id: owner_of(owner),
            value: self.value,
            version: version_text(self.version),
            permission_read: self.read,
            permission_write: self.write,
            create_time: self.created,
            update_time: self.updated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let record = Record {
            version: 0x0123_4567_89ab_cdef,
            read: ReadPermission::PublicRead,
            write: WritePermission::NoWrite,
            created: 1,
            updated: u64::MAX,
            value: r#"{"hp":10}"#.into(),
        };
        let bytes = record.encode();
        assert_eq!(Record::decode(&bytes), Some(record.clone()));
        assert_eq!(Record::decode(&bytes[..HEADER - 1]), None);
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert_eq!(Record::decode(&bad), None);
        let mut bad = bytes.clone();
        bad[9] = 3;
        assert_eq!(Record::decode(&bad), None);
        let mut bad = bytes;
        bad.push(0xff);
        assert_eq!(Record::decode(&bad), None, "not UTF-8");
    }

    #[test]
    fn versions_and_owners_convert_both_ways() {
        assert_eq!(version_text(255), "00000000000000ff");
        assert_eq!(version_number("00000000000000ff"), Some(255));
        assert_eq!(version_number("ff"), None);
        assert_eq!(version_number("zzzzzzzzzzzzzzzz"), None);
        assert_eq!(owner_of(owner_key(None)), None);
        let user = UserId(uuid::Uuid::from_u128(42));
        assert_eq!(owner_of(owner_key(Some(user))), Some(user));
    }
}
