//! Handlers for the matchmaker: add and remove tickets, join a match by token.

use quicmatch_protocol::{MatchmakerAdd, MatchmakerOptions, Response, TicketId};

use super::{matches::check_room, ApiError};
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

pub(super) fn join_token(
    shared: &Shared,
    session: &mut SessionState,
    token: &str,
) -> Result<Option<Response>, ApiError> {
    let (match_id, until) = shared
        .matchmaker
        .redeem(token, session.handle.presence.user_id)?;
    check_room(shared, session, Some(match_id))?;
    let info = shared
        .matches
        .join_or_create_until(match_id, &session.handle, until)?;
    Ok(Some(super::matches::entered(shared, session, info)))
}
