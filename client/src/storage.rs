//! Storage objects: writing, reading, listing and deleting them, as Nakama's SDKs do.
//!
//! A client writes and deletes only its own objects; it reads its own (unless their
//! read permission is `NoRead`) and anyone's `PublicRead` ones. Requests whose names,
//! value size, version, count or listing limit are out of range fail with `BAD_INPUT`
//! or `STORAGE_VALUE_TOO_LARGE` without asking the server; the value's JSON is checked
//! by the server (`STORAGE_INVALID_JSON`).

use quicmatch_protocol::{
    storage::{check_names, check_version, valid_name, VERSION_ABSENT},
    ReadPermission, Request, Response, StorageDeleteObject, StorageListRequest, StorageObject,
    StorageObjectAck, StorageObjectId, StorageObjectList, StorageWriteObject, WritePermission,
    MAX_STORAGE_BATCH, MAX_STORAGE_COLLECTION_LEN, MAX_STORAGE_CURSOR_LEN, MAX_STORAGE_LIST_LIMIT,
    MAX_STORAGE_VALUE_LEN,
};

use crate::{ErrorCode, RequestError, Socket, UserId};

/// How many objects [`Socket::list_storage_objects`] asks for unless told otherwise.
const DEFAULT_LIST_LIMIT: u32 = 10;

fn bad_input(message: impl Into<String>) -> RequestError {
    RequestError::local(ErrorCode::BAD_INPUT, message)
}

fn check_batch(n: usize) -> Result<(), RequestError> {
    if n == 0 || n > MAX_STORAGE_BATCH {
        return Err(bad_input(format!(
            "name 1 to {MAX_STORAGE_BATCH} objects at once, not {n}"
        )));
    }
    Ok(())
}

fn check_write(o: &StorageWriteObject) -> Result<(), RequestError> {
    check_names(&o.collection, &o.key).map_err(bad_input)?;
    check_version(o.version.as_deref()).map_err(bad_input)?;
    if o.value.len() > MAX_STORAGE_VALUE_LEN {
        return Err(RequestError::local(
            ErrorCode::STORAGE_VALUE_TOO_LARGE,
            format!(
                "a value of {} bytes exceeds {MAX_STORAGE_VALUE_LEN}",
                o.value.len()
            ),
        ));
    }
    Ok(())
}

impl Socket {
    /// Writes one of the caller's objects: set a condition or permissions on the
    /// builder, then `.await` it for the object's new version.
    ///
    /// ```no_run
    /// # async fn demo(socket: &quicmatch_client::Socket) -> Result<(), quicmatch_client::RequestError> {
    /// use quicmatch_client::{ReadPermission, WritePermission};
    /// let ack = socket
    ///     .write_storage_object("saves", "slot1", r#"{"level":3}"#)
    ///     .if_absent()
    ///     .permissions(ReadPermission::PublicRead, WritePermission::OwnerWrite)
    ///     .await?;
    /// // Later: only if nobody wrote it since.
    /// socket
    ///     .write_storage_object("saves", "slot1", r#"{"level":4}"#)
    ///     .version(ack.version)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn write_storage_object(
        &self,
        collection: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> WriteStorageObject<'_> {
        WriteStorageObject {
            socket: self,
            object: StorageWriteObject::new(collection, key, value),
        }
    }

    /// Writes several of the caller's objects, all or none (one failing condition,
    /// permission or limit writes nothing); returns their new versions in order.
    pub async fn write_storage_objects(
        &self,
        objects: Vec<StorageWriteObject>,
    ) -> Result<Vec<StorageObjectAck>, RequestError> {
        check_batch(objects.len())?;
        objects.iter().try_for_each(check_write)?;
        match self.request(Request::StorageWrite { objects }).await? {
            Response::StorageAcks { acks } => Ok(acks),
            other => Err(RequestError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Reads one of the caller's own objects; `None` when it does not exist (or its
    /// read permission is `NoRead`).
    pub async fn read_storage_object(
        &self,
        collection: &str,
        key: &str,
    ) -> Result<Option<StorageObject>, RequestError> {
        let id = StorageObjectId::new(collection, key, Some(self.session().user_id));
        Ok(self.read_storage_objects(vec![id]).await?.pop())
    }

    /// Reads objects by name; those that do not exist or that the caller may not read
    /// are left out. A reply must fit one frame: reading several large objects at once
    /// can fail with `PAYLOAD_TOO_LARGE` (read fewer at a time).
    pub async fn read_storage_objects(
        &self,
        ids: Vec<StorageObjectId>,
    ) -> Result<Vec<StorageObject>, RequestError> {
        check_batch(ids.len())?;
        for id in &ids {
            check_names(&id.collection, &id.key).map_err(bad_input)?;
        }
        match self.request(Request::StorageRead { ids }).await? {
            Response::StorageObjects { objects } => Ok(objects),
            other => Err(RequestError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Lists a collection's objects the caller may read, by owner then key: every
    /// owner's unless narrowed with [`user`](ListStorageObjects::user) or
    /// [`system`](ListStorageObjects::system). `.await` it for one page; pass its
    /// `cursor` to [`cursor`](ListStorageObjects::cursor) for the next (a page can hold
    /// fewer than the limit and still have a cursor; `None` means the end).
    ///
    /// ```no_run
    /// # async fn demo(socket: &quicmatch_client::Socket) -> Result<(), quicmatch_client::RequestError> {
    /// let mut cursor = None;
    /// loop {
    ///     let mut list = socket.list_storage_objects("saves").limit(100);
    ///     if let Some(c) = cursor.take() {
    ///         list = list.cursor(c);
    ///     }
    ///     let page = list.await?;
    ///     for object in &page.objects {
    ///         println!("{}: {}", object.key, object.value);
    ///     }
    ///     match page.cursor {
    ///         Some(c) => cursor = Some(c),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn list_storage_objects(&self, collection: impl Into<String>) -> ListStorageObjects<'_> {
        ListStorageObjects {
            socket: self,
            request: StorageListRequest {
                collection: collection.into(),
                user_id: None,
                limit: DEFAULT_LIST_LIMIT,
                cursor: None,
            },
        }
    }

    /// Deletes one of the caller's objects: with a version, only if it is at that
    /// version (`STORAGE_VERSION_CONFLICT` otherwise); without, whatever is there
    /// (an absent object is no error).
    pub async fn delete_storage_object(
        &self,
        collection: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<(), RequestError> {
        let mut object = StorageDeleteObject::new(collection, key);
        object.version = version.map(str::to_owned);
        self.delete_storage_objects(vec![object]).await
    }

    /// Deletes several of the caller's objects, all or none.
    pub async fn delete_storage_objects(
        &self,
        objects: Vec<StorageDeleteObject>,
    ) -> Result<(), RequestError> {
        check_batch(objects.len())?;
        for o in &objects {
            check_names(&o.collection, &o.key).map_err(bad_input)?;
            check_version(o.version.as_deref()).map_err(bad_input)?;
        }
        let response = self.request(Request::StorageDelete { objects }).await?;
        Self::expect_ack(response)
    }
}

/// One object being written by [`Socket::write_storage_object`]; `.await` it (or call
/// [`send`](Self::send)).
#[must_use = "a storage write does nothing until awaited"]
pub struct WriteStorageObject<'a> {
    socket: &'a Socket,
    object: StorageWriteObject,
}

impl WriteStorageObject<'_> {
    /// Writes only if the object is at `version` (from an earlier read or write).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.object.version = Some(version.into());
        self
    }

    /// Writes only if the object does not exist yet.
    pub fn if_absent(self) -> Self {
        self.version(VERSION_ABSENT)
    }

    /// Who may read and who may change the object. Default: the owner, both.
    pub fn permissions(mut self, read: ReadPermission, write: WritePermission) -> Self {
        self.object.permission_read = read;
        self.object.permission_write = write;
        self
    }

    /// The object as it will be sent.
    pub fn object(&self) -> &StorageWriteObject {
        &self.object
    }

    /// Sends the write; returns the object's new version.
    pub async fn send(self) -> Result<StorageObjectAck, RequestError> {
        let mut acks = self.socket.write_storage_objects(vec![self.object]).await?;
        acks.pop()
            .ok_or_else(|| RequestError::Unexpected("no acknowledgement".into()))
    }
}

impl<'a> std::future::IntoFuture for WriteStorageObject<'a> {
    type Output = Result<StorageObjectAck, RequestError>;
    type IntoFuture =
        std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A storage listing being built by [`Socket::list_storage_objects`]; `.await` it (or
/// call [`send`](Self::send)).
#[must_use = "a storage listing does nothing until awaited"]
pub struct ListStorageObjects<'a> {
    socket: &'a Socket,
    request: StorageListRequest,
}

impl ListStorageObjects<'_> {
    /// Only this user's objects.
    pub fn user(mut self, user: UserId) -> Self {
        self.request.user_id = Some(user);
        self
    }

    /// Only objects no user owns (those server code keeps).
    pub fn system(mut self) -> Self {
        self.request.user_id = Some(UserId(uuid::Uuid::nil()));
        self
    }

    /// Most objects per page, 1 to [`quicmatch_protocol::MAX_STORAGE_LIST_LIMIT`]
    /// (100). Default 10.
    pub fn limit(mut self, limit: u32) -> Self {
        self.request.limit = limit;
        self
    }

    /// Goes on where a previous page ended.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.request.cursor = Some(cursor.into());
        self
    }

    /// The request as it will be sent.
    pub fn request(&self) -> &StorageListRequest {
        &self.request
    }

    /// Sends the request and returns one page.
    pub async fn send(self) -> Result<StorageObjectList, RequestError> {
        let request = self.request;
        if !valid_name(&request.collection, MAX_STORAGE_COLLECTION_LEN) {
            return Err(bad_input(format!(
                "a collection must be 1 to {MAX_STORAGE_COLLECTION_LEN} bytes without control characters"
            )));
        }
        if request.limit == 0 || request.limit > MAX_STORAGE_LIST_LIMIT {
            return Err(bad_input(format!(
                "limit must be 1 to {MAX_STORAGE_LIST_LIMIT}, got {}",
                request.limit
            )));
        }
        if request
            .cursor
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.len() > MAX_STORAGE_CURSOR_LEN)
        {
            return Err(bad_input("the cursor is not one the server gave"));
        }
        match self.socket.request(Request::StorageList(request)).await? {
            Response::StorageList(page) => Ok(page),
            other => Err(RequestError::Unexpected(format!("{other:?}"))),
        }
    }
}

impl<'a> std::future::IntoFuture for ListStorageObjects<'a> {
    type Output = Result<StorageObjectList, RequestError>;
    type IntoFuture =
        std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}
