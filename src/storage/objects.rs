//! What server code hands the store and gets back from it: the objects it writes and
//! deletes, whose objects a listing covers, and why a call failed.

use std::path::PathBuf;

use quicmatch_protocol::{ReadPermission, UserId, WritePermission};

/// Why a storage call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A name, version, cursor or count out of range.
    #[error("{0}")]
    BadInput(String),
    /// A value larger than [`quicmatch_protocol::MAX_STORAGE_VALUE_LEN`].
    #[error("{0}")]
    ValueTooLarge(String),
    /// A value that is not a JSON object.
    #[error("{0}")]
    InvalidJson(String),
    /// A conditional write or delete whose version did not match.
    #[error("{0}")]
    VersionConflict(String),
    /// A write or delete the caller's permissions do not allow.
    #[error("{0}")]
    PermissionDenied(String),
    /// The write would give a user more than `storage.max_objects_per_user` objects.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The write queue is full.
    #[error("the store is busy; try again")]
    Busy,
    /// The store's file is held by another process.
    #[error("{0}")]
    Unavailable(String),
    /// The store was closed (the server stopped).
    #[error("the store is closed")]
    Closed,
    /// The file was written by a newer server.
    #[error(
        "{path}: schema version {found} is newer than this server's {supported}; run the \
         newer quicmatch, or restore a backup made with `quicmatch storage export`"
    )]
    NewerSchema {
        /// The store's file.
        path: PathBuf,
        /// The file's schema version.
        found: u64,
        /// This server's.
        supported: u64,
    },
    /// The file or directory could not be opened or read.
    #[error("{0}")]
    Io(String),
    /// An unexpected failure inside the store (details are logged).
    #[error("{0}")]
    Internal(String),
}

impl StorageError {
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(format!("storage: {e}"))
    }
}

/// One object server code writes (any owner, any permissions).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectWrite {
    /// The collection.
    pub collection: String,
    /// The key.
    pub key: String,
    /// The owner; `None` for an object no user owns.
    pub owner: Option<UserId>,
    /// A JSON object as text.
    pub value: String,
    /// `None`: unconditional; `Some("*")`: only if absent; `Some(version)`: only if the
    /// object is at that version.
    pub version: Option<String>,
    /// Who may read it. Default `OwnerRead`.
    pub permission_read: ReadPermission,
    /// Who may change it. Default `OwnerWrite`.
    pub permission_write: WritePermission,
}

impl ObjectWrite {
    /// An unconditional write of `value` to the object no user owns, with Nakama's
    /// default permissions (owner read, owner write).
    pub fn new(
        collection: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        Self {
            collection: collection.into(),
            key: key.into(),
            owner: None,
            value: value.into(),
            version: None,
            permission_read: ReadPermission::OwnerRead,
            permission_write: WritePermission::OwnerWrite,
        }
    }

    /// Makes `user` the owner.
    pub fn owner(mut self, user: UserId) -> Self {
        self.owner = Some(user);
        self
    }

    /// Writes only if the object is at `version`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Writes only if the object does not exist.
    pub fn if_absent(self) -> Self {
        self.version(quicmatch_protocol::storage::VERSION_ABSENT)
    }

    /// Sets both permissions.
    pub fn permissions(mut self, read: ReadPermission, write: WritePermission) -> Self {
        self.permission_read = read;
        self.permission_write = write;
        self
    }
}

/// One object server code deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectDelete {
    /// The collection.
    pub collection: String,
    /// The key.
    pub key: String,
    /// The owner; `None` for an object no user owns.
    pub owner: Option<UserId>,
    /// `None`: delete whatever is there; `Some(version)`: only at that version.
    pub version: Option<String>,
}

impl ObjectDelete {
    /// An unconditional delete of the object no user owns.
    pub fn new(collection: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            collection: collection.into(),
            key: key.into(),
            owner: None,
            version: None,
        }
    }

    /// Names `user` as the owner.
    pub fn owner(mut self, user: UserId) -> Self {
        self.owner = Some(user);
        self
    }

    /// Deletes only if the object is at `version`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }
}

/// Whose objects a listing covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Owners {
    /// Every owner's, and those no user owns.
    Any,
    /// Only objects no user owns.
    System,
    /// Only this user's.
    User(UserId),
}
