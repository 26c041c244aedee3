//! Handlers for storage requests: a client writes and deletes its own objects and reads
//! and lists what the objects' read permissions let it, within the `[storage]` limits.
//!
//! Writes and deletes are checked here (names, sizes, JSON), then charged to the
//! session's storage write budget, then queued for the store's writer; the session
//! waits for the commit before its next request, so replies stay in order. Reads run on
//! a blocking thread. Every reply fits one control frame: a listing page ends before it
//! would not, and a read of several objects that would not is refused.

use std::time::Instant;

use quicmatch_protocol::{
    ErrorCode, Response, StorageDeleteObject, StorageListRequest, StorageObjectId,
    StorageWriteObject, MAX_FRAME_LEN,
};

use super::{ApiError, Dispatched};
use crate::{
    session::SessionState,
    storage::{Caller, Owners, StorageError},
    Shared,
};

/// Bytes of objects one reply may carry: a frame, less room for the envelope and the
/// cursor.
const REPLY_BUDGET: usize = MAX_FRAME_LEN - 1024;

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        let code = match &e {
            StorageError::BadInput(_) => ErrorCode::BAD_INPUT,
            StorageError::ValueTooLarge(_) => ErrorCode::STORAGE_VALUE_TOO_LARGE,
            StorageError::InvalidJson(_) => ErrorCode::STORAGE_INVALID_JSON,
            StorageError::VersionConflict(_) => ErrorCode::STORAGE_VERSION_CONFLICT,
            StorageError::PermissionDenied(_) => ErrorCode::STORAGE_PERMISSION_DENIED,
            StorageError::QuotaExceeded(_) => ErrorCode::STORAGE_QUOTA_EXCEEDED,
            StorageError::Busy => ErrorCode::LIMIT_EXCEEDED,
            StorageError::Unavailable(_) | StorageError::Closed => ErrorCode::STORAGE_UNAVAILABLE,
            _ => {
                tracing::error!(error = %e, "storage failed");
                return Self::new(ErrorCode::RUNTIME_EXCEPTION, "storage failed");
            }
        };
        Self::new(code, e.to_string())
    }
}

fn now(result: Result<Response, StorageError>) -> Dispatched {
    Dispatched::Now(result.map(Some).map_err(ApiError::from))
}

/// Takes one write from the session's budget.
fn admit(shared: &Shared, session: &SessionState) -> Result<(), ApiError> {
    let id = session.handle.presence.session_id;
    if shared.storage_limits.admit(id, Instant::now()) {
        return Ok(());
    }
    metrics::counter!("quicmatch_rate_limited_total").increment(1);
    Err(ApiError::new(
        ErrorCode::RATE_LIMITED,
        "over the storage write limit (storage.writes_per_second)",
    ))
}

/// Writes the caller's objects; answered with their new versions.
pub(super) fn write(
    shared: &Shared,
    session: &SessionState,
    objects: Vec<StorageWriteObject>,
) -> Dispatched {
    let storage = shared.runtime.storage();
    let user = session.handle.presence.user_id;
    let quota = shared.config.storage.max_objects_per_user;
    // Checked before the budget is charged, so a refused request costs none of it.
    let pending = match storage.check_client_write(user, objects, quota) {
        Ok(pending) => pending,
        Err(e) => return now(Err(e)),
    };
    if let Err(e) = admit(shared, session) {
        return Dispatched::Now(Err(e));
    }
    let commit = match storage.submit_write(pending) {
        Ok(commit) => commit,
        Err(e) => return now(Err(e)),
    };
    Dispatched::Later(Box::pin(async move {
        let acks = commit.await?;
        Ok(Some(Response::StorageAcks { acks }))
    }))
}

/// Deletes the caller's objects.
pub(super) fn delete(
    shared: &Shared,
    session: &SessionState,
    objects: Vec<StorageDeleteObject>,
) -> Dispatched {
    let storage = shared.runtime.storage();
    let user = session.handle.presence.user_id;
    let pending = match storage.check_client_delete(user, objects) {
        Ok(pending) => pending,
        Err(e) => return now(Err(e)),
    };
    if let Err(e) = admit(shared, session) {
        return Dispatched::Now(Err(e));
    }
    let commit = match storage.submit_delete(pending) {
        Ok(commit) => commit,
        Err(e) => return now(Err(e)),
    };
    Dispatched::Later(Box::pin(async move {
        commit.await?;
        Ok(Some(Response::Ack))
    }))
}

/// Reads the objects the caller may read.
pub(super) fn read(
    shared: &Shared,
    session: &SessionState,
    ids: Vec<StorageObjectId>,
) -> Dispatched {
    let storage = shared.runtime.storage().clone();
    let caller = Caller::User(session.handle.presence.user_id);
    blocking(move || {
        let objects = storage.read_as(caller, &ids)?;
        let size: usize = objects.iter().map(crate::storage::reply_size).sum();
        if objects.len() > 1 && size > REPLY_BUDGET {
            return Err(ApiError::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!(
                    "these objects take {size} bytes, more than one reply holds ({REPLY_BUDGET}); read fewer at once"
                ),
            ));
        }
        Ok(Response::StorageObjects { objects })
    })
}

/// One page of a listing of what the caller may read.
pub(super) fn list(
    shared: &Shared,
    session: &SessionState,
    request: StorageListRequest,
) -> Dispatched {
    let storage = shared.runtime.storage().clone();
    let caller = Caller::User(session.handle.presence.user_id);
    let owners = match request.user_id {
        None => Owners::Any,
        Some(user) if user.0.is_nil() => Owners::System,
        Some(user) => Owners::User(user),
    };
    blocking(move || {
        let page = storage.list_as(
            caller,
            &request.collection,
            owners,
            request.limit,
            request.cursor.as_deref(),
            REPLY_BUDGET,
        )?;
        Ok(Response::StorageList(page))
    })
}

/// Runs a read on a blocking thread (the file may need reading from disk).
fn blocking(read: impl FnOnce() -> Result<Response, ApiError> + Send + 'static) -> Dispatched {
    Dispatched::Later(Box::pin(async move {
        match tokio::task::spawn_blocking(read).await {
            Ok(result) => result.map(Some),
            Err(_) => {
                tracing::error!("a storage read panicked");
                Err(ApiError::new(
                    ErrorCode::RUNTIME_EXCEPTION,
                    "storage failed",
                ))
            }
        }
    }))
}
