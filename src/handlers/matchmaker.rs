//! Handlers for the matchmaker: add and remove tickets, join a match by token.

use quicmatch_protocol::{MatchmakerAdd, MatchmakerOptions, Response, TicketId};

use super::{matches::check_room, ApiError, Dispatched};
use crate::{session::SessionState, Shared};

pub(super) fn add(
    shared: &Shared,
    session: &mut SessionState,
    request: MatchmakerAdd,
    options: MatchmakerOptions,
) -> Result<Option<Response>, ApiError> {
    let ticket = shared
        .matchmaker
        .add(&session.handle.presence, request, options)?;
    Ok(Some(Response::MatchmakerTicket { ticket }))
}

pub(super) fn remove(
    shared: &Shared,
    session: &mut SessionState,
    ticket: TicketId,
) -> Result<Option<Response>, ApiError> {
    shared
        .matchmaker
        .remove(session.handle.presence.session_id, ticket)?;
    Ok(Some(Response::Ack))
}

/// Joins the match a matchmaker token names, creating it for the first redeemer; in a
/// cluster, on the node the matchmaker placed it on (or the first redeemer's), so the
/// group meets in one match whichever nodes its players are on.
pub(super) fn join_token(shared: &Shared, session: &mut SessionState, token: &str) -> Dispatched {
    let redeemed = shared
        .matchmaker
        .redeem(token, session.handle.presence.user_id)
        .and_then(|(id, until)| check_room(shared, session, Some(id)).map(|()| (id, until)));
    let (match_id, until) = match redeemed {
        Ok(r) => r,
        Err(e) => return Dispatched::Now(Err(e)),
    };
    if shared.cluster.is_active() && !shared.matches.is_live(match_id) {
        let cluster = shared.cluster.clone();
        let matches = shared.matches.clone();
        let handle = session.handle.clone();
        return Dispatched::Later(Box::pin(async move {
            super::matches::placed(&cluster, match_id, &handle, || {
                matches.join_or_create_until(match_id, &handle, until)
            })
            .await
        }));
    }
    Dispatched::Now(
        shared
            .matches
            .join_or_create_until(match_id, &session.handle, until)
            .map(|info| Some(super::matches::entered(shared, session, info))),
    )
}
