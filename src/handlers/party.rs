//! Handlers for parties: lifecycle, leadership, data and party matchmaking.

use bytes::Bytes;
use quicmatch_protocol::{ErrorCode, PartyId, Request, Response};

use super::ApiError;
use crate::{session::SessionState, Shared};

pub(super) fn send_data(
    shared: &Shared,
    session: &SessionState,
    party_id: PartyId,
    op_code: i64,
    data: Bytes,
) -> Result<(), ApiError> {
    shared
        .parties
        .send_data(&session.handle.presence, party_id, op_code, data)
}

/// Every party request except data, which has its own fire-and-forget form.
pub(super) fn dispatch(
    shared: &Shared,
    session: &SessionState,
    request: Request,
) -> Result<Option<Response>, ApiError> {
    let me = &session.handle.presence;
    let sid = me.session_id;
    let parties = &shared.parties;
    let ack = |r: Result<(), ApiError>| r.map(|()| Some(Response::Ack));
    match request {
        Request::PartyCreate {
            open,
            max_size,
            label,
        } => parties
            .create(me, open, max_size, label)
            .map(|info| Some(Response::Party(info))),
        Request::PartyJoin { party_id } => ack(parties.join(me, party_id)),
        Request::PartyLeave { party_id } => {
            parties.leave(sid, party_id);
            Ok(Some(Response::Ack))
        }
        Request::PartyClose { party_id } => ack(parties.close(sid, party_id)),
        Request::PartyAccept {
            party_id,
            session_id,
        } => ack(parties.accept(sid, party_id, session_id)),
        Request::PartyRemove {
            party_id,
            session_id,
        } => ack(parties.remove(sid, party_id, session_id)),
        Request::PartyPromote {
            party_id,
            session_id,
        } => ack(parties.promote(sid, party_id, session_id)),
        Request::PartyJoinRequestList { party_id } => {
            parties.list_requests(sid, party_id).map(|presences| {
                Some(Response::PartyJoinRequests {
                    party_id,
                    presences,
                })
            })
        }
        Request::PartyUpdate {
            party_id,
            open,
            label,
        } => ack(parties.update(sid, party_id, open, label)),
        Request::PartyMatchmakerAdd { party_id, request } => parties
            .matchmaker_add(me, party_id, request, Default::default())
            .map(|ticket| Some(Response::PartyMatchmakerTicket { party_id, ticket })),
        Request::PartyMatchmakerAddWith {
            party_id,
            request,
            options,
        } => parties
            .matchmaker_add(me, party_id, request, options)
            .map(|ticket| Some(Response::PartyMatchmakerTicket { party_id, ticket })),
        Request::PartyMatchmakerRemove { party_id, ticket } => {
            ack(parties.matchmaker_remove(sid, party_id, ticket))
        }
        other => Err(ApiError::new(
            ErrorCode::RUNTIME_EXCEPTION,
            format!("{} is not a party request", other.kind()),
        )),
    }
}
