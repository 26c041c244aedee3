//! Request dispatch: one `match` over [`Request`], one file per feature area, and the one
//! place where an [`ApiError`] becomes an error envelope.

mod matches;
mod matchmaker;
mod party;

use quicmatch_protocol::{
    envelope::{Event, Response, ServerBody, ServerEnvelope},
    frame, ErrorCode, Request,
};

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

/// Runs one request. `Ok(None)` means the request succeeded and has no reply (a
/// fire-and-forget request sent without a `cid`).
pub(crate) fn dispatch(
    shared: &Shared,
    session: &mut SessionState,
    cid: Option<u32>,
    request: Request,
) -> Result<Option<Response>, ApiError> {
    match request {
        Request::Authenticate { .. } => Err(ApiError::new(
            ErrorCode::UNAUTHENTICATED,
            "this connection is already authenticated",
        )),
        Request::Ping => Ok(Some(Response::Pong)),
        Request::MatchCreate { name } => matches::create(shared, session, name.as_deref()),
        Request::MatchJoin { match_id } => matches::join(shared, session, match_id),
        Request::MatchLeave { match_id } => matches::leave(shared, session, match_id),
        Request::MatchDataSend {
            match_id,
            op_code,
            data,
            targets,
        } => matches::send_data(shared, session, match_id, op_code, data, targets)
            .map(|()| cid.map(|_| Response::Ack)),
        Request::MatchmakerAdd(add) => matchmaker::add(shared, session, add),
        Request::MatchmakerRemove { ticket } => matchmaker::remove(shared, session, ticket),
        Request::MatchJoinToken { token } => matchmaker::join_token(shared, session, &token),
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
        | Request::PartyMatchmakerRemove { .. }) => party::dispatch(shared, session, party_request),
    }
}

/// Encodes the outcome of a request as the frame to send back, if any: a response with
/// the request's `cid`, or, for a failed fire-and-forget request, an error event.
pub(crate) fn reply_frame(
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
        (Err(e), None) => ServerBody::Event(Event::Error {
            code: e.code,
            message: e.message,
        }),
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
