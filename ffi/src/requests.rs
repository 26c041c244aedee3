//! The C entry points for requests about matches, the matchmaker, listings and RPCs.
//! Each returns a request id at once; the outcome arrives later from `qm_poll` as an
//! event carrying that id. `request` holds the rules they all share.

use std::{ffi::c_char, ptr};

use quicmatch_client::{MatchId, MatchOptions, RequestError, TicketId};

use crate::{
    api::client,
    args::{guard, opt_str, req_id, req_str, ArgError, Properties, TicketOptions},
    client::Client,
    item::Item,
    types::*,
};

/// Runs a request entry point. Returns 0 (nothing sent, no event will follow) when `c`
/// is NULL, after `qm_close` or the last event, when too many requests are waiting, or
/// on an internal failure. Arguments `body` refuses still get an id, answered by a
/// `QM_EVENT_ERROR` with `QM_CODE_BAD_INPUT` and a message naming the argument.
///
/// # Safety
/// `c` is NULL or a live client.
pub(crate) unsafe fn request(
    c: *mut qm_client,
    body: impl FnOnce(&Client) -> Result<u32, ArgError>,
) -> u32 {
    guard(0, || {
        // SAFETY: the caller promises NULL or a live client.
        let Some(client) = (unsafe { client(c) }) else {
            return 0;
        };
        body(client).unwrap_or_else(|e| client.reject(e.message))
    })
}

/// The event for a finished request: `ok` lays out a success, a failure becomes
/// `QM_EVENT_ERROR`.
pub(crate) fn answer<T>(
    id: u32,
    result: Result<T, RequestError>,
    ok: impl FnOnce(u32, T) -> Item,
) -> Item {
    match result {
        Ok(value) => ok(id, value),
        Err(e) => Item::failed(id, &e),
    }
}

/// Creates a match and joins it. With a `name` (NULL for none), everyone using that
/// name lands in the same match while it lives (join-or-create). Answered by
/// `QM_EVENT_MATCH`, or `QM_EVENT_ERROR`.
///
/// Returns the request id, or 0 when nothing was sent (`c` NULL, closed, disconnected,
/// or 256 requests already waiting).
///
/// # Safety
/// `c` is NULL or a live client; `name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_match_create(c: *mut qm_client, name: *const c_char) -> u32 {
    // SAFETY: the caller's promise about `c`, and about `name` below.
    unsafe {
        request(c, |client| {
            let name = opt_str(name, "name")?.map(str::to_owned);
            Ok(client.submit(move |socket, id| async move {
                answer(id, socket.create_match(name.as_deref()).await, Item::joined)
            }))
        })
    }
}

/// Like `qm_match_create`, for a new match with a `label` (NULL for none; shown in
/// listings, usually JSON), at most `max_size` members (0: the server's limit), and
/// `unlisted` (joinable by id but never listed). A named match that already lives is
/// joined as it is.
///
/// # Safety
/// As for `qm_match_create`; `label` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_match_create_with(
    c: *mut qm_client,
    name: *const c_char,
    label: *const c_char,
    max_size: u32,
    unlisted: bool,
) -> u32 {
    // SAFETY: the caller's promises about `c` and the strings.
    unsafe {
        request(c, |client| {
            let name = opt_str(name, "name")?.map(str::to_owned);
            let mut options = MatchOptions::default().private(unlisted);
            if let Some(label) = opt_str(label, "label")? {
                options = options.label(label);
            }
            if max_size > 0 {
                options = options.max_size(max_size);
            }
            Ok(client.submit(move |socket, id| async move {
                let result = socket.create_match_with(name.as_deref(), options).await;
                answer(id, result, Item::joined)
            }))
        })
    }
}

/// Joins a live match by id. Answered by `QM_EVENT_MATCH` (also when already in it), or
/// `QM_EVENT_ERROR` (`QM_CODE_MATCH_NOT_FOUND` for an unknown or ended match).
///
/// Returns the request id, or 0 as for `qm_match_create`.
///
/// # Safety
/// `c` is NULL or a live client; `match_id` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_match_join(c: *mut qm_client, match_id: *const c_char) -> u32 {
    // SAFETY: the caller's promises about `c` and `match_id`.
    unsafe {
        request(c, |client| {
            let match_id: MatchId = req_id(match_id, "match_id")?;
            Ok(client.submit(move |socket, id| async move {
                answer(id, socket.join_match(match_id).await, Item::joined)
            }))
        })
    }
}

/// Leaves a match. Answered by `QM_EVENT_ACK`, even for a match this client is not in.
///
/// Returns the request id, or 0 as for `qm_match_create`.
///
/// # Safety
/// `c` is NULL or a live client; `match_id` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_match_leave(c: *mut qm_client, match_id: *const c_char) -> u32 {
    // SAFETY: the caller's promises about `c` and `match_id`.
    unsafe {
        request(c, |client| {
            let match_id: MatchId = req_id(match_id, "match_id")?;
            Ok(client.submit(move |socket, id| async move {
                answer(id, socket.leave_match(match_id).await, |id, ()| {
                    Item::ack(id)
                })
            }))
        })
    }
}

/// Joins the match a matchmaker token names (`qm_event.token` of
/// `QM_EVENT_MATCHMAKER_MATCHED`); the first matched player to arrive creates it.
/// Answered by `QM_EVENT_MATCH`, or `QM_EVENT_ERROR` (`QM_CODE_BAD_INPUT` for a
/// forged, expired or foreign token).
///
/// Returns the request id, or 0 as for `qm_match_create`.
///
/// # Safety
/// `c` is NULL or a live client; `token` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_join_token(c: *mut qm_client, token: *const c_char) -> u32 {
    // SAFETY: the caller's promises about `c` and `token`.
    unsafe {
        request(c, |client| {
            let token = req_str(token, "token")?.to_owned();
            Ok(client.submit(move |socket, id| async move {
                answer(id, socket.join_match_token(&token).await, Item::joined)
            }))
        })
    }
}

/// Lists joinable matches (never private ones). `limit`: 1 to 100, 0 for 10.
/// `authoritative`: 1 only server-run, 0 only relayed, -1 both. `label`: only this exact
/// label (NULL: any). `min_size`, `max_size`: member bounds (0: none). `query`: the
/// matchmaker query language over the label's JSON fields, such as
/// `"+label.mode:ranked"` (NULL: none). Answered by `QM_EVENT_MATCH_LIST`, or
/// `QM_EVENT_ERROR`.
///
/// Returns the request id, or 0 as for `qm_match_create`.
///
/// # Safety
/// `c` is NULL or a live client; `label` and `query` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_match_list(
    c: *mut qm_client,
    limit: u32,
    authoritative: i32,
    label: *const c_char,
    min_size: u32,
    max_size: u32,
    query: *const c_char,
) -> u32 {
    // SAFETY: the caller's promises about `c` and the strings.
    unsafe {
        request(c, |client| {
            let label = opt_str(label, "label")?.map(str::to_owned);
            let query = opt_str(query, "query")?.map(str::to_owned);
            let authoritative = match authoritative {
                -1 => None,
                0 => Some(false),
                1 => Some(true),
                other => {
                    return Err(ArgError::bad(format!(
                        "authoritative must be -1, 0 or 1, got {other}"
                    )))
                }
            };
            Ok(client.submit(move |socket, id| async move {
                let mut list = socket.list_matches();
                if limit > 0 {
                    list = list.limit(limit);
                }
                if let Some(a) = authoritative {
                    list = list.authoritative(a);
                }
                if let Some(label) = label {
                    list = list.label(label);
                }
                if min_size > 0 {
                    list = list.min_size(min_size);
                }
                if max_size > 0 {
                    list = list.max_size(max_size);
                }
                if let Some(query) = query {
                    list = list.query(query);
                }
                answer(id, list.await, Item::listing)
            }))
        })
    }
}

/// Starts a matchmaker ticket. `query`: who this ticket accepts, in the query language
/// (`"*"` for anyone), for example `"+properties.mode:duel properties.skill:>=3"`.
/// `min`, `max`: the smallest and largest acceptable match, this client included.
/// `multiple`: match sizes must be a multiple of it (0: any). `props_json`: this
/// ticket's properties others' queries test, as
/// `{"string":{"mode":"duel"},"numeric":{"skill":5}}` (NULL: none).
///
/// Answered by `QM_EVENT_MATCHMAKER_TICKET`, or `QM_EVENT_ERROR`; when the matchmaker
/// forms a group, `QM_EVENT_MATCHMAKER_MATCHED` follows.
///
/// Returns the request id, or 0 as for `qm_match_create`.
///
/// # Safety
/// `c` is NULL or a live client; `query` and `props_json` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_matchmaker_add(
    c: *mut qm_client,
    query: *const c_char,
    min: u32,
    max: u32,
    multiple: u32,
    props_json: *const c_char,
) -> u32 {
    // SAFETY: the caller's promises are passed on unchanged.
    unsafe { qm_matchmaker_add_with(c, query, min, max, multiple, props_json, ptr::null()) }
}

/// Like `qm_matchmaker_add`, with ticket options (NULL: none), as JSON where every part
/// is optional: `{"composition":{"property":"role","counts":{"tank":1,"dps":3}}}`
/// (exact counts of a string property's values per group, or per team), `"teams":2`
/// (split the group into teams; each matched user's `team` says which),
/// `"balance":"skill"` (balance the teams' sums of a numeric property),
/// `"fallback_query":"*","fallback_after":3` (widen the query after that many
/// matchmaker passes), `"expires_after":10` (give up after that many passes:
/// `QM_EVENT_MATCHMAKER_TICKET_CANCELLED` with "expired").
///
/// Returns the request id, or 0 as for `qm_match_create`.
///
/// # Safety
/// `c` is NULL or a live client; the strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_matchmaker_add_with(
    c: *mut qm_client,
    query: *const c_char,
    min: u32,
    max: u32,
    multiple: u32,
    props_json: *const c_char,
    options_json: *const c_char,
) -> u32 {
    // SAFETY: the caller's promises about `c` and the strings.
    unsafe {
        request(c, |client| {
            let ticket = TicketArgs::read(query, min, max, multiple, props_json, options_json)?;
            Ok(client.submit(move |socket, id| async move {
                let result = ticket
                    .apply(socket.add_matchmaker(&ticket.query, min, max))
                    .await;
                answer(id, result, |id, t| Item::ticket(id, t, None))
            }))
        })
    }
}

/// The arguments of a matchmaker ticket, checked.
pub(crate) struct TicketArgs {
    pub(crate) query: String,
    multiple: u32,
    props: Properties,
    options: TicketOptions,
}

impl TicketArgs {
    /// # Safety
    /// `query`, `props_json` and `options_json` are NULL or NUL-terminated.
    pub(crate) unsafe fn read(
        query: *const c_char,
        min: u32,
        max: u32,
        multiple: u32,
        props_json: *const c_char,
        options_json: *const c_char,
    ) -> Result<Self, ArgError> {
        if min > max {
            return Err(ArgError::bad(format!(
                "min {min} is greater than max {max}"
            )));
        }
        // SAFETY: the caller's promises about the strings.
        let (query, props, options) = unsafe {
            (
                req_str(query, "query")?,
                opt_str(props_json, "props_json")?,
                opt_str(options_json, "options_json")?,
            )
        };
        Ok(Self {
            query: query.to_owned(),
            multiple,
            props: Properties::parse(props)?,
            options: TicketOptions::parse(options)?,
        })
    }

    /// The builder with the count multiple and properties added.
    pub(crate) fn apply<'a>(
        &self,
        mut add: quicmatch_client::AddMatchmaker<'a>,
    ) -> quicmatch_client::AddMatchmaker<'a> {
        if self.multiple > 0 {
            add = add.count_multiple(self.multiple);
        }
        for (k, v) in &self.props.string {
            add = add.string_property(k.as_str(), v.as_str());
        }
        for (k, v) in &self.props.numeric {
            add = add.numeric_property(k.as_str(), *v);
        }
        let o = &self.options;
        if let Some(c) = &o.composition {
            let counts = c.counts.iter().map(|(k, n)| (k.as_str(), *n));
            add = add.composition(c.property.as_str(), counts);
        }
        if let Some(count) = o.teams {
            add = add.teams(count);
        }
        if let Some(property) = &o.balance {
            add = add.balance_teams_on(property.as_str());
        }
        if let Some(query) = &o.fallback_query {
            add = add.fallback_query(query.as_str(), o.fallback_after);
        }
        if let Some(passes) = o.expires_after {
            add = add.expires_after(passes);
        }
        add
    }
}

/// Cancels one of this client's tickets. Answered by `QM_EVENT_ACK`, or
/// `QM_EVENT_ERROR` (`QM_CODE_TICKET_NOT_FOUND` when it already matched, was
/// cancelled, or is not this client's).
///
/// Returns the request id, or 0 as for `qm_match_create`.
///
/// # Safety
/// `c` is NULL or a live client; `ticket` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_matchmaker_remove(c: *mut qm_client, ticket: *const c_char) -> u32 {
    // SAFETY: the caller's promises about `c` and `ticket`.
    unsafe {
        request(c, |client| {
            let ticket: TicketId = req_id(ticket, "ticket")?;
            Ok(client.submit(move |socket, id| async move {
                answer(id, socket.remove_matchmaker(ticket).await, |id, ()| {
                    Item::ack(id)
                })
            }))
        })
    }
}

/// Calls the server function registered as `rpc_id` with `payload` (usually JSON; NULL
/// for empty). Answered by `QM_EVENT_RPC` with the function's output in `data`, or
/// `QM_EVENT_ERROR` (`QM_CODE_RUNTIME_FUNCTION_NOT_FOUND`,
/// `QM_CODE_RUNTIME_FUNCTION_EXCEPTION` with the function's message).
///
/// Returns the request id, or 0 as for `qm_match_create`.
///
/// # Safety
/// `c` is NULL or a live client; `rpc_id` and `payload` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_rpc(
    c: *mut qm_client,
    rpc_id: *const c_char,
    payload: *const c_char,
) -> u32 {
    // SAFETY: the caller's promises about `c` and the strings.
    unsafe {
        request(c, |client| {
            let name = req_str(rpc_id, "rpc_id")?.to_owned();
            let payload = opt_str(payload, "payload")?.unwrap_or_default().to_owned();
            Ok(client.submit(move |socket, id| async move {
                answer(id, socket.rpc(&name, &payload).await, Item::rpc)
            }))
        })
    }
}
