//! The C entry points for a client's life: connect, poll, send, close, free, and the
//! small helpers around them. Requests are in `requests` and `party`.

use std::{
    ffi::{c_char, CStr},
    panic::{catch_unwind, AssertUnwindSafe},
    ptr,
};

use quicmatch_client::{MatchId, SessionId};

use crate::{
    args::{bytes, guard, opt_str, req_id, req_str, write_message, ArgError},
    client::{Client, ConnectArgs},
    types::*,
};

/// The client behind a pointer, or `None` for NULL.
///
/// # Safety
/// `c` is NULL or a pointer returned by `qm_connect` and not yet freed.
pub(crate) unsafe fn client<'a>(c: *const qm_client) -> Option<&'a Client> {
    // SAFETY: the caller promises NULL or a live client.
    unsafe { c.as_ref() }.map(|c| &c.inner)
}

/// Connects to a server and authenticates, blocking until it has (a few round trips;
/// at most about 10 s when the server does not answer).
///
/// - `server`: `"host:port"`, for example `"127.0.0.1:7350"` or `"play.example.com:7350"`
///   (a host name is also the name checked against the certificate).
/// - `trust`: which certificate to accept: `"ca:PATH"` (a PEM file, such as the
///   `certs/server.crt` a development server writes), `"pin:HEX"` (the SHA-256
///   fingerprint a server prints at start, with or without `:`), or `"platform"` (the
///   operating system's roots).
/// - `device_id`: identifies the user, 10 to 128 bytes; the same id is the same user.
/// - `username`: the display name, or NULL for the server's choice.
/// - `err`, `err_len`: a buffer for the reason of a failure (NUL-terminated, cut to
///   fit); may be NULL.
///
/// Returns the client, to be released with `qm_free`, or NULL with the reason in `err`.
/// Each client runs one background thread of its own. Do not call it from a thread
/// that runs a tokio runtime.
///
/// # Safety
/// Every non-NULL string argument is NUL-terminated; `err` is NULL or holds `err_len`
/// writable bytes.
#[no_mangle]
pub unsafe extern "C" fn qm_connect(
    server: *const c_char,
    trust: *const c_char,
    device_id: *const c_char,
    username: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> *mut qm_client {
    // SAFETY: the caller's promises are passed on unchanged.
    unsafe {
        qm_connect_key(
            server,
            trust,
            ptr::null(),
            device_id,
            username,
            err,
            err_len,
        )
    }
}

/// Like `qm_connect`, with the server key (`server_key`, NULL for the default
/// `"defaultkey"`) for servers configured with another.
///
/// # Safety
/// As for `qm_connect`.
#[no_mangle]
pub unsafe extern "C" fn qm_connect_key(
    server: *const c_char,
    trust: *const c_char,
    server_key: *const c_char,
    device_id: *const c_char,
    username: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> *mut qm_client {
    let connect = || -> Result<Client, String> {
        let text = |e: ArgError| e.message;
        // SAFETY: the caller promises NULL or NUL-terminated strings.
        let args = unsafe {
            ConnectArgs {
                server: req_str(server, "server").map_err(text)?,
                trust: req_str(trust, "trust").map_err(text)?,
                server_key: opt_str(server_key, "server_key").map_err(text)?,
                device_id: req_str(device_id, "device_id").map_err(text)?,
                username: opt_str(username, "username").map_err(text)?,
            }
        };
        Client::connect(args)
    };
    let outcome = catch_unwind(AssertUnwindSafe(connect))
        .unwrap_or_else(|_| Err("internal error while connecting".into()));
    match outcome {
        Ok(inner) => Box::into_raw(Box::new(qm_client { inner })),
        Err(message) => {
            // SAFETY: the caller promises `err` is NULL or holds `err_len` bytes.
            unsafe { write_message(err, err_len, &message) };
            ptr::null_mut()
        }
    }
}

/// Takes the next event, without waiting.
///
/// Returns 1 and fills `out` when an event was waiting; 0 when none is (call again next
/// frame); `QM_ERR_DISCONNECTED` once the last event (`QM_EVENT_DISCONNECTED`) has been
/// returned; `QM_ERR_NULL` when `c` or `out` is NULL. Whenever it does not return 1,
/// `out` (if not NULL) is zeroed (`QM_EVENT_NONE`).
///
/// The pointers in `out` stay valid until the next `qm_poll` or `qm_free` on this
/// client. Call it every frame until it returns 0: events queue up, and a client that
/// stops polling is eventually cut off by the server as a slow consumer.
///
/// # Safety
/// `c` is NULL or a live client; `out` is NULL or points to a writable `qm_event`.
#[no_mangle]
pub unsafe extern "C" fn qm_poll(c: *mut qm_client, out: *mut qm_event) -> i32 {
    // SAFETY: the caller promises `out` is NULL or writable.
    let Some(out) = (unsafe { out.as_mut() }) else {
        return QM_ERR_NULL;
    };
    *out = qm_event::EMPTY;
    // SAFETY: the caller promises NULL or a live client.
    let Some(client) = (unsafe { client(c) }) else {
        return QM_ERR_NULL;
    };
    guard(QM_ERR_INTERNAL, || client.poll(out))
}

/// Sends match data to every other member of a match.
///
/// Unreliable (`reliable` false): one datagram of at most 1024 bytes, which may be
/// lost or arrive out of order. Reliable: over the ordered stream, at most 32 KiB.
/// `data` may be NULL when `len` is 0. The bytes are copied before it returns.
///
/// Returns `QM_OK`, or `QM_ERR_NULL`, `QM_ERR_BAD_INPUT` (`match_id` is not an id),
/// `QM_ERR_NOT_MEMBER`, `QM_ERR_TOO_LARGE`, `QM_ERR_BUSY` (the send queue is full: try
/// next frame), `QM_ERR_CLOSED` (after `qm_close`) or `QM_ERR_DISCONNECTED`. A failure
/// only the server sees arrives later as `QM_EVENT_ERROR` with request 0.
///
/// # Safety
/// `c` is NULL or a live client; `match_id` is NULL or NUL-terminated; `data` is NULL
/// or holds `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn qm_send(
    c: *mut qm_client,
    match_id: *const c_char,
    op_code: i64,
    data: *const u8,
    len: usize,
    reliable: bool,
) -> i32 {
    // SAFETY: the caller's promises are passed on unchanged.
    unsafe { qm_send_to(c, match_id, op_code, data, len, reliable, ptr::null(), 0) }
}

/// Like `qm_send`, to some members only: `session_ids` is an array of
/// `session_ids_len` session id strings (`qm_presence.session_id`), at most 64. With
/// `session_ids_len` 0 it sends to every other member, as `qm_send` does. This client
/// receives its own data only if it lists itself.
///
/// # Safety
/// As for `qm_send`; `session_ids` is NULL or points to `session_ids_len` pointers,
/// each NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_send_to(
    c: *mut qm_client,
    match_id: *const c_char,
    op_code: i64,
    data: *const u8,
    len: usize,
    reliable: bool,
    session_ids: *const *const c_char,
    session_ids_len: usize,
) -> i32 {
    guard(QM_ERR_INTERNAL, || {
        // SAFETY: the caller promises NULL or a live client.
        let Some(client) = (unsafe { client(c) }) else {
            return QM_ERR_NULL;
        };
        let args = || -> Result<_, ArgError> {
            // SAFETY: the caller promises a NUL-terminated id and `len` readable bytes.
            let (id, data) =
                unsafe { (req_id::<MatchId>(match_id, "match_id")?, bytes(data, len)?) };
            // SAFETY: the caller promises `session_ids_len` readable string pointers.
            let targets = unsafe { session_id_list(session_ids, session_ids_len) }?;
            Ok((id, data, targets))
        };
        match args() {
            Ok((id, data, targets)) => client.send(id, op_code, data, reliable, targets),
            Err(e) => e.code,
        }
    })
}

/// The target list of `qm_send_to`; `None` for "everyone else".
///
/// # Safety
/// `ids` is NULL or points to `len` pointers, each NULL or NUL-terminated.
unsafe fn session_id_list(
    ids: *const *const c_char,
    len: usize,
) -> Result<Option<Vec<SessionId>>, ArgError> {
    if len == 0 {
        return Ok(None);
    }
    if ids.is_null() {
        return Err(ArgError::null("session_ids"));
    }
    // SAFETY: non-NULL with `len` readable pointers, as promised. (The SDK refuses more
    // than 64 targets.)
    let ptrs = unsafe { std::slice::from_raw_parts(ids, len) };
    ptrs.iter()
        // SAFETY: each pointer is NULL or NUL-terminated, as promised.
        .map(|p| unsafe { req_id::<SessionId>(*p, "session_ids[i]") })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Starts closing politely: the server is told at once and ends the session (leaving
/// its matches and party). Returns without waiting. Afterwards requests return 0 and
/// `qm_send` returns `QM_ERR_CLOSED`; keep calling `qm_poll` to drain the events still
/// on their way, ending with `QM_EVENT_DISCONNECTED`, then `qm_free`. Calling it again,
/// or with NULL, does nothing.
///
/// # Safety
/// `c` is NULL or a live client.
#[no_mangle]
pub unsafe extern "C" fn qm_close(c: *mut qm_client) {
    // SAFETY: the caller promises NULL or a live client.
    if let Some(client) = unsafe { client(c) } {
        guard((), || client.close());
    }
}

/// Releases a client: closes its connection if `qm_close` did not (waiting up to about
/// 1 s for the server to be told), ends its background thread, and frees everything,
/// including the last event's pointers. `c` must not be used afterwards. NULL does
/// nothing. Call it from the thread that uses the client, never twice.
///
/// # Safety
/// `c` is NULL or a live client, not used by another thread during or after the call.
#[no_mangle]
pub unsafe extern "C" fn qm_free(c: *mut qm_client) {
    if c.is_null() {
        return;
    }
    // SAFETY: a non-NULL `c` came from `Box::into_raw` in `qm_connect_key` and, as the
    // caller promises, has not been freed.
    let owned = unsafe { Box::from_raw(c) };
    guard((), move || drop(owned));
}

/// Fills `out` with this client's own presence (user id, session id, name). The
/// strings stay valid until `qm_free`. Returns `QM_OK`, or `QM_ERR_NULL`.
///
/// # Safety
/// `c` is NULL or a live client; `out` is NULL or points to a writable `qm_presence`.
#[no_mangle]
pub unsafe extern "C" fn qm_self(c: *mut qm_client, out: *mut qm_presence) -> i32 {
    // SAFETY: the caller promises NULL or a live client, and NULL or a writable `out`.
    match unsafe { (client(c), out.as_mut()) } {
        (Some(client), Some(out)) => {
            *out = client.presence();
            QM_OK
        }
        _ => QM_ERR_NULL,
    }
}

/// Unreliable match data this client dropped itself rather than hand to `qm_poll`
/// late: messages that waited more than 100 ms between arriving and being polled (after
/// a hitch the game gets the players' current state, not a backlog), or that arrived
/// while 4096 were already waiting. Reliable data and events are never dropped. 0 for
/// NULL.
///
/// # Safety
/// `c` is NULL or a live client.
#[no_mangle]
pub unsafe extern "C" fn qm_datagrams_dropped(c: *mut qm_client) -> u64 {
    // SAFETY: the caller promises NULL or a live client.
    unsafe { client(c) }.map_or(0, Client::datagrams_dropped)
}

/// The name of an error code, for logs: `"QM_ERR_TIMEOUT"` for a negative code, the
/// server's name (`"MATCH_NOT_FOUND"`) otherwise, `"UNKNOWN"` for a code this version
/// does not know. The string is static: never free it.
#[no_mangle]
pub extern "C" fn qm_code_name(code: i32) -> *const c_char {
    code_name(code).as_ptr()
}

/// The size of `qm_event` in bytes, so a binding in another language can check its
/// copy of the layout before it polls (the C# binding does, at start).
#[no_mangle]
pub extern "C" fn qm_event_size() -> usize {
    size_of::<qm_event>()
}

/// This library's version, as a static string (never free it).
#[no_mangle]
pub extern "C" fn qm_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}
