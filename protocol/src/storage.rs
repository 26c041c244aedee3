//! Storage objects on the wire: what a client writes, reads, lists and deletes, and
//! what the server answers with.
//!
//! The model is Nakama's: an object is named by its collection, its key and its owner
//! (a user, or none for objects server code keeps for itself), and holds a JSON object
//! as text, a version the server assigns on every write, and two permissions. A client
//! writes and deletes only objects it owns; it reads an object when the object's read
//! permission lets it. Enum variants are encoded by their position, so the permissions
//! go over the wire as Nakama's numbers (`NoRead` 0, `OwnerRead` 1, `PublicRead` 2;
//! `NoWrite` 0, `OwnerWrite` 1).

use serde::{Deserialize, Serialize};

use crate::{
    ids::UserId, MAX_STORAGE_COLLECTION_LEN, MAX_STORAGE_KEY_LEN, MAX_STORAGE_VERSION_LEN,
};

/// Who, besides server code, may read an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReadPermission {
    /// Only server code.
    NoRead,
    /// The owner and server code (Nakama's default).
    OwnerRead,
    /// Every user.
    PublicRead,
}

/// Who, besides server code, may change or delete an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WritePermission {
    /// Only server code.
    NoWrite,
    /// The owner and server code (Nakama's default).
    OwnerWrite,
}

impl ReadPermission {
    /// Nakama's number for it (0, 1, 2).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The permission with Nakama's number `n`.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            0 => Some(Self::NoRead),
            1 => Some(Self::OwnerRead),
            2 => Some(Self::PublicRead),
            _ => None,
        }
    }
}

impl WritePermission {
    /// Nakama's number for it (0, 1).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The permission with Nakama's number `n`.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            0 => Some(Self::NoWrite),
            1 => Some(Self::OwnerWrite),
            _ => None,
        }
    }
}

/// The version a conditional write or delete names: write only if the object is absent.
pub const VERSION_ABSENT: &str = "*";

/// One object a client writes; the caller owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageWriteObject {
    /// 1 to [`MAX_STORAGE_COLLECTION_LEN`] bytes, no control characters.
    pub collection: String,
    /// 1 to [`MAX_STORAGE_KEY_LEN`] bytes, no control characters.
    pub key: String,
    /// A JSON object as text, at most [`crate::MAX_STORAGE_VALUE_LEN`] bytes.
    pub value: String,
    /// `None`: write whatever is there. `Some("*")`: only if the object does not exist.
    /// `Some(version)`: only if the object exists with this version. Otherwise the write
    /// fails with `STORAGE_VERSION_CONFLICT`.
    pub version: Option<String>,
    /// Who may read it.
    pub permission_read: ReadPermission,
    /// Who may change it.
    pub permission_write: WritePermission,
}

/// Names one object to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StorageObjectId {
    /// The collection.
    pub collection: String,
    /// The key.
    pub key: String,
    /// The owner; `None` for an object no user owns.
    pub user_id: Option<UserId>,
}

/// One of the caller's own objects to delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageDeleteObject {
    /// The collection.
    pub collection: String,
    /// The key.
    pub key: String,
    /// `None`: delete whatever is there (nothing, if absent). `Some(version)`: only if
    /// the object exists with this version, else `STORAGE_VERSION_CONFLICT`.
    pub version: Option<String>,
}

/// What a storage listing asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageListRequest {
    /// The collection.
    pub collection: String,
    /// Only this user's objects; the nil id names objects no user owns; `None`: every
    /// owner's. Only objects the caller may read are listed.
    pub user_id: Option<UserId>,
    /// Most objects returned, 1 to [`crate::MAX_STORAGE_LIST_LIMIT`].
    pub limit: u32,
    /// Where the previous page ended ([`StorageObjectList::cursor`]); `None` starts at
    /// the beginning.
    pub cursor: Option<String>,
}

/// A stored object as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageObject {
    /// The collection.
    pub collection: String,
    /// The key.
    pub key: String,
    /// The owner; `None` for an object no user owns.
    pub user_id: Option<UserId>,
    /// The JSON object, as written.
    pub value: String,
    /// Changes on every write; name it in a conditional write or delete.
    pub version: String,
    /// Who may read it.
    pub permission_read: ReadPermission,
    /// Who may change it.
    pub permission_write: WritePermission,
    /// When it was created, in milliseconds since the Unix epoch.
    pub create_time: u64,
    /// When it was last written, in milliseconds since the Unix epoch.
    pub update_time: u64,
}

/// A write's result: the object's new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageObjectAck {
    /// The collection.
    pub collection: String,
    /// The key.
    pub key: String,
    /// The owner; `None` for an object no user owns.
    pub user_id: Option<UserId>,
    /// The version the write gave the object.
    pub version: String,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageObjectList {
    /// The objects, by owner, then key.
    pub objects: Vec<StorageObject>,
    /// Where the next page starts; `None` when this page is the last.
    pub cursor: Option<String>,
}

impl StorageWriteObject {
    /// An unconditional write of `value` with Nakama's default permissions (owner
    /// read, owner write).
    pub fn new(
        collection: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        Self {
            collection: collection.into(),
            key: key.into(),
            value: value.into(),
            version: None,
            permission_read: ReadPermission::OwnerRead,
            permission_write: WritePermission::OwnerWrite,
        }
    }
}

impl StorageObjectId {
    /// Names `owner`'s object (`None`: the object no user owns).
    pub fn new(
        collection: impl Into<String>,
        key: impl Into<String>,
        owner: Option<UserId>,
    ) -> Self {
        Self {
            collection: collection.into(),
            key: key.into(),
            user_id: owner,
        }
    }
}

impl StorageDeleteObject {
    /// An unconditional delete.
    pub fn new(collection: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            collection: collection.into(),
            key: key.into(),
            version: None,
        }
    }
}

/// Whether `name` can be a collection (`max` = [`MAX_STORAGE_COLLECTION_LEN`]) or a key
/// (`max` = [`MAX_STORAGE_KEY_LEN`]): 1 to `max` bytes without control characters.
pub fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty() && name.len() <= max && !name.chars().any(char::is_control)
}

/// Checks a collection and key, naming what is wrong.
pub fn check_names(collection: &str, key: &str) -> Result<(), String> {
    if !valid_name(collection, MAX_STORAGE_COLLECTION_LEN) {
        return Err(format!(
            "a collection must be 1 to {MAX_STORAGE_COLLECTION_LEN} bytes without control characters"
        ));
    }
    if !valid_name(key, MAX_STORAGE_KEY_LEN) {
        return Err(format!(
            "a key must be 1 to {MAX_STORAGE_KEY_LEN} bytes without control characters"
        ));
    }
    Ok(())
}

/// Checks a version a conditional write or delete names.
pub fn check_version(version: Option<&str>) -> Result<(), String> {
    match version {
        Some(v) if v.is_empty() || v.len() > MAX_STORAGE_VERSION_LEN => Err(format!(
            "a version must be 1 to {MAX_STORAGE_VERSION_LEN} bytes (\"*\": only if absent)"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_have_nakamas_numbers() {
        for n in 0..3 {
            let p = ReadPermission::from_number(n).expect("read permission");
            assert_eq!(p.number(), n);
        }
        for n in 0..2 {
            let p = WritePermission::from_number(n).expect("write permission");
            assert_eq!(p.number(), n);
        }
        assert_eq!(ReadPermission::from_number(3), None);
        assert_eq!(WritePermission::from_number(2), None);
        assert!(ReadPermission::PublicRead > ReadPermission::OwnerRead);
    }

    #[test]
    fn names_and_versions_are_bounded() {
        assert!(check_names("saves", "slot-1").is_ok());
        assert!(check_names("", "k").is_err());
        assert!(check_names("c", "").is_err());
        assert!(check_names("c", "a\nb").is_err());
        assert!(check_names(&"c".repeat(MAX_STORAGE_COLLECTION_LEN + 1), "k").is_err());
        assert!(check_names("c", &"k".repeat(MAX_STORAGE_KEY_LEN)).is_ok());
        assert!(check_version(None).is_ok());
        assert!(check_version(Some("*")).is_ok());
        assert!(check_version(Some("")).is_err());
        assert!(check_version(Some(&"v".repeat(MAX_STORAGE_VERSION_LEN + 1))).is_err());
    }

    fn object(value_len: usize) -> StorageObject {
        StorageObject {
            collection: "c".repeat(MAX_STORAGE_COLLECTION_LEN),
            key: "k".repeat(MAX_STORAGE_KEY_LEN),
            user_id: Some(UserId(uuid::Uuid::from_u128(u128::MAX))),
            value: "v".repeat(value_len),
            version: "f".repeat(16),
            permission_read: ReadPermission::PublicRead,
            permission_write: WritePermission::OwnerWrite,
            create_time: u64::MAX,
            update_time: u64::MAX,
        }
    }

    #[test]
    fn requests_and_replies_round_trip_and_the_largest_object_fits_a_frame() {
        use crate::{
            envelope::{ClientEnvelope, Request, Response, ServerBody, ServerEnvelope},
            frame, MAX_STORAGE_VALUE_LEN,
        };
        let write = ClientEnvelope {
            cid: Some(u32::MAX),
            body: Request::StorageWrite {
                objects: vec![StorageWriteObject {
                    collection: "c".repeat(MAX_STORAGE_COLLECTION_LEN),
                    key: "k".repeat(MAX_STORAGE_KEY_LEN),
                    value: "v".repeat(MAX_STORAGE_VALUE_LEN),
                    version: Some("x".repeat(MAX_STORAGE_VERSION_LEN)),
                    permission_read: ReadPermission::NoRead,
                    permission_write: WritePermission::NoWrite,
                }],
            },
        };
        let bytes = frame::encode(&write).expect("the largest write fits a frame");
        let decoded = frame::decode_client(&bytes[frame::LEN_PREFIX..]).expect("decode");
        assert_eq!(decoded, write);
        let list = ServerEnvelope {
            cid: Some(u32::MAX),
            body: ServerBody::Response(Response::StorageList(StorageObjectList {
                objects: vec![object(MAX_STORAGE_VALUE_LEN)],
                cursor: Some("c".repeat(crate::MAX_STORAGE_CURSOR_LEN)),
            })),
        };
        let bytes = frame::encode(&list).expect("the largest object fits a frame");
        let decoded = frame::decode_server(&bytes[frame::LEN_PREFIX..]).expect("decode");
        assert_eq!(decoded, list);
        // Permissions go over the wire as Nakama's numbers.
        let read = ClientEnvelope {
            cid: None,
            body: Request::StorageList(StorageListRequest {
                collection: "c".into(),
                user_id: None,
                limit: 1,
                cursor: None,
            }),
        };
        let bytes = frame::encode(&read).expect("encode");
        assert_eq!(
            bytes[frame::LEN_PREFIX + 1],
            30,
            "StorageList is request 30"
        );
    }
}
