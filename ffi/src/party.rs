//! The C entry points for parties: create, join, leave, leader actions, party data and
//! party matchmaking. They follow the rules of the other requests (see
//! `requests::request`): an id at once, the outcome later as an event.

use std::{ffi::c_char, ptr};

use quicmatch_client::{PartyId, SessionId, TicketId};

use crate::{
    args::{bytes, opt_str, req_id},
    item::Item,
    requests::{answer, request, TicketArgs},
    types::*,
};

/// A party request that names the party and answers with an ack.
macro_rules! party_ack {
    ($c:expr, $party:expr, |$socket:ident, $p:ident| $call:expr) => {
        // SAFETY: the caller's promises about `c` and `party_id`.
        unsafe {
            request($c, |client| {
                let $p: PartyId = req_id($party, "party_id")?;
                Ok(client.submit(move |$socket, id| async move {
                    answer(id, $call.await, |id, ()| Item::ack(id))
                }))
            })
        }
    };
}

/// A leader request that names the party and a member's session, answered with an ack.
macro_rules! party_member_ack {
    ($c:expr, $party:expr, $session:expr, |$socket:ident, $p:ident, $s:ident| $call:expr) => {
        // SAFETY: the caller's promises about `c` and the ids.
        unsafe {
            request($c, |client| {
                let $p: PartyId = req_id($party, "party_id")?;
                let $s: SessionId = req_id($session, "session_id")?;
                Ok(client.submit(move |$socket, id| async move {
                    answer(id, $call.await, |id, ()| Item::ack(id))
                }))
            })
        }
    };
}

/// Creates a party led by this client: `open` admits joiners at once, a closed one
/// sends their requests to the leader; `max_size` 1 to 256; `label` free text every
/// member sees (NULL: none). Answered by `QM_EVENT_PARTY` (share its `party_id`), or
/// `QM_EVENT_ERROR`.
///
/// Returns the request id, or 0 when nothing was sent (`c` NULL, closed, disconnected,
/// or 256 requests already waiting).
///
/// # Safety
/// `c` is NULL or a live client; `label` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_create(
    c: *mut qm_client,
    open: bool,
    max_size: u32,
    label: *const c_char,
) -> u32 {
    // SAFETY: the caller's promises about `c` and `label`.
    unsafe {
        request(c, |client| {
            let label = opt_str(label, "label")?.map(str::to_owned);
            Ok(client.submit(move |socket, id| async move {
                let result = socket
                    .create_party_with(open, max_size, label.as_deref())
                    .await;
                answer(id, result, Item::party)
            }))
        })
    }
}

/// Joins an open party, or asks to join a closed one. Answered by `QM_EVENT_ACK`; a
/// pushed `QM_EVENT_PARTY` follows once admitted, `QM_EVENT_PARTY_CLOSE` if declined.
///
/// # Safety
/// `c` is NULL or a live client; `party_id` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_join(c: *mut qm_client, party_id: *const c_char) -> u32 {
    party_ack!(c, party_id, |socket, party| socket.join_party(party))
}

/// Leaves a party. Answered by `QM_EVENT_ACK`.
///
/// # Safety
/// `c` is NULL or a live client; `party_id` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_leave(c: *mut qm_client, party_id: *const c_char) -> u32 {
    party_ack!(c, party_id, |socket, party| socket.leave_party(party))
}

/// Leader only: ends the party for everyone. Answered by `QM_EVENT_ACK`, or
/// `QM_EVENT_ERROR` (`QM_CODE_PARTY_NOT_LEADER`).
///
/// # Safety
/// `c` is NULL or a live client; `party_id` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_close(c: *mut qm_client, party_id: *const c_char) -> u32 {
    party_ack!(c, party_id, |socket, party| socket.close_party(party))
}

/// Leader only: admits a pending requester (`session_id` from its presence). Answered
/// by `QM_EVENT_ACK`, or `QM_EVENT_ERROR`.
///
/// # Safety
/// `c` is NULL or a live client; the ids are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_accept(
    c: *mut qm_client,
    party_id: *const c_char,
    session_id: *const c_char,
) -> u32 {
    party_member_ack!(c, party_id, session_id, |socket, party, who| socket
        .accept_party_member(party, who))
}

/// Leader only: removes a member, or declines a pending request. Answered by
/// `QM_EVENT_ACK`, or `QM_EVENT_ERROR`.
///
/// # Safety
/// `c` is NULL or a live client; the ids are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_remove(
    c: *mut qm_client,
    party_id: *const c_char,
    session_id: *const c_char,
) -> u32 {
    party_member_ack!(c, party_id, session_id, |socket, party, who| socket
        .remove_party_member(party, who))
}

/// Leader only: makes another member the leader. Answered by `QM_EVENT_ACK`, or
/// `QM_EVENT_ERROR`.
///
/// # Safety
/// `c` is NULL or a live client; the ids are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_promote(
    c: *mut qm_client,
    party_id: *const c_char,
    session_id: *const c_char,
) -> u32 {
    party_member_ack!(c, party_id, session_id, |socket, party, who| socket
        .promote_party_member(party, who))
}

/// Leader only: lists the pending join requests, oldest first. Answered by
/// `QM_EVENT_PARTY_JOIN_REQUEST` (with this request id; `presences` are the
/// requesters), or `QM_EVENT_ERROR`.
///
/// # Safety
/// `c` is NULL or a live client; `party_id` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_join_requests(c: *mut qm_client, party_id: *const c_char) -> u32 {
    // SAFETY: the caller's promises about `c` and `party_id`.
    unsafe {
        request(c, |client| {
            let party: PartyId = req_id(party_id, "party_id")?;
            Ok(client.submit(move |socket, id| async move {
                answer(id, socket.list_party_join_requests(party).await, |id, p| {
                    Item::join_requests(id, party, p)
                })
            }))
        })
    }
}

/// Leader only: opens or closes the party. Answered by `QM_EVENT_ACK`; every member
/// gets `QM_EVENT_PARTY_UPDATE`.
///
/// # Safety
/// `c` is NULL or a live client; `party_id` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_update(
    c: *mut qm_client,
    party_id: *const c_char,
    open: bool,
) -> u32 {
    party_ack!(c, party_id, |socket, party| socket
        .update_party(party, open))
}

/// Leader only: sets the party's label (NULL removes it). Answered by `QM_EVENT_ACK`;
/// every member gets `QM_EVENT_PARTY_UPDATE`.
///
/// # Safety
/// `c` is NULL or a live client; `party_id` and `label` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_label(
    c: *mut qm_client,
    party_id: *const c_char,
    label: *const c_char,
) -> u32 {
    // SAFETY: the caller's promises about `c` and the strings.
    unsafe {
        request(c, |client| {
            let party: PartyId = req_id(party_id, "party_id")?;
            let label = opt_str(label, "label")?.map(str::to_owned);
            Ok(client.submit(move |socket, id| async move {
                let result = socket.update_party_label(party, label.as_deref()).await;
                answer(id, result, |id, ()| Item::ack(id))
            }))
        })
    }
}

/// Sends data reliably to every other party member (never back to this client).
/// `data` may be NULL when `len` is 0; the bytes are copied before it returns.
/// Answered by `QM_EVENT_ACK`, or `QM_EVENT_ERROR`; members get `QM_EVENT_PARTY_DATA`.
///
/// # Safety
/// `c` is NULL or a live client; `party_id` is NULL or NUL-terminated; `data` is NULL
/// or holds `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn qm_party_send(
    c: *mut qm_client,
    party_id: *const c_char,
    op_code: i64,
    data: *const u8,
    len: usize,
) -> u32 {
    // SAFETY: the caller's promises about `c`, `party_id` and `data`.
    unsafe {
        request(c, |client| {
            let party: PartyId = req_id(party_id, "party_id")?;
            let data = bytes(data, len)?;
            Ok(client.submit(move |socket, id| async move {
                let result = socket.send_party_data(party, op_code, data).await;
                answer(id, result, |id, ()| Item::ack(id))
            }))
        })
    }
}

/// Leader only: starts one matchmaker ticket for the whole party, with the arguments
/// of `qm_matchmaker_add` (`min` and `max` count every member). Answered by
/// `QM_EVENT_MATCHMAKER_TICKET` (with `party_id` set), or `QM_EVENT_ERROR`; every
/// member gets `QM_EVENT_PARTY_MATCHMAKER_TICKET`, then `QM_EVENT_MATCHMAKER_MATCHED`.
///
/// # Safety
/// `c` is NULL or a live client; the strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_matchmaker_add(
    c: *mut qm_client,
    party_id: *const c_char,
    query: *const c_char,
    min: u32,
    max: u32,
    multiple: u32,
    props_json: *const c_char,
) -> u32 {
    // SAFETY: the caller's promises are passed on unchanged.
    unsafe {
        qm_party_matchmaker_add_with(
            c,
            party_id,
            query,
            min,
            max,
            multiple,
            props_json,
            ptr::null(),
        )
    }
}

/// Like `qm_party_matchmaker_add`, with the ticket options of `qm_matchmaker_add_with`
/// (a party is never split between teams).
///
/// # Safety
/// `c` is NULL or a live client; the strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_matchmaker_add_with(
    c: *mut qm_client,
    party_id: *const c_char,
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
            let party: PartyId = req_id(party_id, "party_id")?;
            let ticket = TicketArgs::read(query, min, max, multiple, props_json, options_json)?;
            Ok(client.submit(move |socket, id| async move {
                let add = socket.add_matchmaker_party(party, &ticket.query, min, max);
                let result = ticket.apply(add).await;
                answer(id, result, |id, t| Item::ticket(id, t, Some(party)))
            }))
        })
    }
}

/// Leader only: cancels one of the party's tickets. Answered by `QM_EVENT_ACK`, or
/// `QM_EVENT_ERROR`.
///
/// # Safety
/// `c` is NULL or a live client; the ids are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_party_matchmaker_remove(
    c: *mut qm_client,
    party_id: *const c_char,
    ticket: *const c_char,
) -> u32 {
    // SAFETY: the caller's promises about `c` and the ids.
    unsafe {
        request(c, |client| {
            let party: PartyId = req_id(party_id, "party_id")?;
            let ticket: TicketId = req_id(ticket, "ticket")?;
            Ok(client.submit(move |socket, id| async move {
                let result = socket.remove_matchmaker_party(party, ticket).await;
                answer(id, result, |id, ()| Item::ack(id))
            }))
        })
    }
}
