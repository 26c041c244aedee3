//! Handlers for parties: lifecycle, leadership, data and party matchmaking.

use bytes::Bytes;
use quicmatch_protocol::{ErrorCode, PartyId, Presence, Request, Response};

use super::{ApiError, Dispatched, Outcome};
use crate::{session::SessionState, Shared};

pub(super) fn send_data(
    shared: &Shared,
    session: &SessionState,
    party_id: PartyId,
    op_code: i64,
    data: Bytes,
) -> Result<(), ApiError> {
    let sid = session.handle.presence.session_id;
    if !shared.parties.contains(party_id) {
        // A party of another node of the cluster, if the sender is in one.
        if let Some(sent) = shared
            .cluster
            .party_data(party_id, sid, op_code, data.clone())
        {
            return Ok(sent?);
        }
    }
    shared
        .parties
        .send_data(&session.handle.presence, party_id, op_code, data)
}

/// Every party request except data, which has its own fire-and-forget form; in a
/// cluster, one for a party this node does not have goes to the node that does.
pub(super) fn dispatch(shared: &Shared, session: &SessionState, request: Request) -> Dispatched {
    let remote = shared.cluster.is_active()
        && request
            .party_id()
            .is_some_and(|p| !shared.parties.contains(p));
    if !remote {
        return Dispatched::Now(run(shared, &session.handle.presence, request));
    }
    let cluster = shared.cluster.clone();
    let presence = (*session.handle.presence).clone();
    Dispatched::Later(Box::pin(async move {
        Ok(cluster.party(presence, request).await?)
    }))
}

/// A party request (not data) of `me`, a session of this node or, for a party here,
/// of another node of the cluster, applied to the local party table.
pub(crate) fn run(shared: &Shared, me: &Presence, request: Request) -> Outcome {
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
