//! Request dispatch: one `match` over [`Request`], one file per feature area, and the one
//! place where an [`ApiError`] becomes an error envelope.

mod matches;
mod matchmaker;
mod party;
mod peers;
mod runtime;
mod storage;

use std::{future::Future, pin::Pin};

use quicmatch_protocol::{
    envelope::{Event, Response, ServerBody, ServerEnvelope},
    frame, ErrorCode, Request,
};

pub(crate) use self::{matches::leave_any, party::run as run_party, peers::Peers};
use crate::{session::SessionState, Shared};

/// A request failure the client is told about: a stable code and a short reason.
/// Internal details are logged, never put here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Stable numeric code.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > quicmatch_protocol::MAX_MESSAGE_LEN {
            let mut end = quicmatch_protocol::MAX_MESSAGE_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self { code, message }
    }
}

/// A request's outcome: `Ok(None)` means it succeeded and has no reply (a
/// fire-and-forget request sent without a `cid`).
pub(crate) type Outcome = Result<Option<Response>, ApiError>;

/// An outcome that server code decides later (a server-run match's `join_attempt`, an
/// RPC). The session waits for it before its next request, so replies stay in order.
pub(crate) type Later = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// What dispatching a request gave.
pub(crate) enum Dispatched {
    /// Answered at once.
    Now(Outcome),
    /// To be awaited, then passed to [`finish`].
    Later(Later),
}

impl From<Outcome> for Dispatched {
    fn from(outcome: Outcome) -> Self {
        Self::Now(outcome)
    }
}

/// Applies what a later outcome means for the session (a match it is now in).
pub(crate) fn finish(shared: &Shared, session: &mut SessionState, outcome: Outcome) -> Outcome {
    match outcome {
        Ok(Some(Response::Match(info))) => Ok(Some(matches::entered(shared, session, info))),
        other => other,
    }
}

/// Runs one request.
pub(crate) fn dispatch(
    shared: &Shared,
    session: &mut SessionState,
    cid: Option<u32>,
    request: Request,
) -> Dispatched {
    let outcome = match request {
        Request::Authenticate { .. } => Err(ApiError::new(
            ErrorCode::UNAUTHENTICATED,
            "this connection is already authenticated",
        )),
        Request::Ping => Ok(Some(Response::Pong)),
        Request::MatchCreate { name } => return matches::create(shared, session, name.as_deref()),
        Request::MatchJoin { match_id } => {
            return matches::join_with(shared, session, match_id, Default::default())
        }
        Request::MatchJoinWith { match_id, metadata } => {
            return matches::join_with(shared, session, match_id, metadata)
        }
        Request::MatchCreateWith {
            name,
            label,
            max_size,
            private,
        } => {
            let options = relayed(label, max_size, private, Vec::new());
            return matches::create_with(shared, session, name.as_deref(), options);
        }
        Request::MatchCreateWithLatest {
            name,
            label,
            max_size,
            private,
            latest_op_codes,
        } => {
            let options = relayed(label, max_size, private, latest_op_codes);
            return matches::create_with(shared, session, name.as_deref(), options);
        }
        Request::MatchList(request) => return matches::list(shared, request),
        Request::Rpc { id, payload } => return runtime::rpc(shared, session, id, payload),
        Request::StorageWrite { objects } => return storage::write(shared, session, objects),
        Request::StorageRead { ids } => return storage::read(shared, session, ids),
        Request::StorageList(request) => return storage::list(shared, session, request),
        Request::StorageDelete { objects } => return storage::delete(shared, session, objects),
        Request::MatchLeave { match_id } => matches::leave(shared, session, match_id),
        Request::MatchDataSend {
            match_id,
            op_code,
            data,
            targets,
        } => matches::send_data(shared, session, match_id, op_code, data, targets)
            .map(|()| cid.map(|_| Response::Ack)),
        Request::MatchmakerAdd(add) => matchmaker::add(shared, session, add, Default::default()),
        Request::MatchmakerAddWith { request, options } => {
            matchmaker::add(shared, session, request, options)
        }
        Request::MatchmakerRemove { ticket } => matchmaker::remove(shared, session, ticket),
        Request::MatchJoinToken { token } => {
            return matchmaker::join_token(shared, session, &token)
        }
        Request::PartyDataSend {
            party_id,
            op_code,
            data,
        } => party::send_data(shared, session, party_id, op_code, data)
            .map(|()| cid.map(|_| Response::Ack)),
        party_request @ (Request::PartyCreate { .. }
        | Request::PartyJoin { .. }
        | Request::PartyLeave { .. }
        | Request::PartyClose { .. }
        | Request::PartyAccept { .. }
        | Request::PartyRemove { .. }
        | Request::PartyPromote { .. }
        | Request::PartyJoinRequestList { .. }
        | Request::PartyUpdate { .. }
        | Request::PartyMatchmakerAdd { .. }
        | Request::PartyMatchmakerAddWith { .. }
        | Request::PartyMatchmakerRemove { .. }) => {
            return party::dispatch(shared, session, party_request)
        }
    };
    Dispatched::Now(outcome)
}

/// How a relayed match is to be created.
fn relayed(
    label: Option<String>,
    max_size: Option<u32>,
    private: bool,
    latest_op_codes: Vec<i64>,
) -> crate::matches::RelayedOptions {
    crate::matches::RelayedOptions {
        label,
        max_size,
        private,
        latest_op_codes,
    }
}

/// Encodes the outcome of a request as the frame to send back, if any: a response with
/// the request's `cid`. A failed fire-and-forget request (no `cid`) becomes an error
/// event in the session's outbound queue instead, so it is numbered (and replayed on a
/// resume) like every other event.
pub(crate) fn reply_frame(
    session: &crate::outbound::SessionHandle,
    cid: Option<u32>,
    outcome: Result<Option<Response>, ApiError>,
) -> Option<bytes::Bytes> {
    if let Err(e) = &outcome {
        metrics::counter!("quicmatch_requests_rejected_total", "code" => e.code.to_string())
            .increment(1);
    }
    let body = match (outcome, cid) {
        (Ok(None), _) => return None,
        (Ok(Some(response)), _) => ServerBody::Response(response),
        (Err(e), Some(_)) => ServerBody::Response(Response::Error {
            code: e.code,
            message: e.message,
        }),
        (Err(e), None) => {
            let event = Event::Error {
                code: e.code,
                message: e.message,
            };
            match frame::EventBody::encode(&event) {
                Ok(body) => session.push_event(&body),
                Err(err) => tracing::error!(error = %err, "error event did not encode"),
            }
            return None;
        }
    };
    match frame::encode(&ServerEnvelope { cid, body }) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::error!(error = %e, "reply did not encode");
            frame::encode(&ServerEnvelope {
                cid,
                body: ServerBody::Response(Response::Error {
                    code: ErrorCode::RUNTIME_EXCEPTION,
                    message: "internal error".into(),
                }),
            })
            .ok()
        }
    }
}
