//! Handlers for relayed matches: create, join, leave, reliable data.

use bytes::Bytes;
use quicmatch_protocol::{ErrorCode, MatchId, Response, SessionId};

use super::ApiError;
use crate::{session::SessionState, Shared};

pub(super) fn check_room(
    shared: &Shared,
    session: &SessionState,
    id: Option<MatchId>,
) -> Result<(), ApiError> {
    let already = id.is_some_and(|id| session.joined.contains(&id));
    if !already && session.joined.len() >= shared.config.matches.max_per_session {
        return Err(ApiError::new(
            ErrorCode::LIMIT_EXCEEDED,
            format!(
                "a session may be in at most {} matches",
                shared.config.matches.max_per_session
            ),
        ));
    }
    Ok(())
}

pub(super) fn create(
    shared: &Shared,
    session: &mut SessionState,
    name: Option<&str>,
) -> Result<Option<Response>, ApiError> {
    check_room(shared, session, name.map(crate::matches::named_match_id))?;
    let info = shared.matches.create(name, &session.handle)?;
    session.joined.insert(info.match_id);
    Ok(Some(Response::Match(info)))
}

pub(super) fn join(
    shared: &Shared,
    session: &mut SessionState,
    match_id: MatchId,
) -> Result<Option<Response>, ApiError> {
    check_room(shared, session, Some(match_id))?;
    let info = shared.matches.join(match_id, &session.handle)?;
    session.joined.insert(info.match_id);
    Ok(Some(Response::Match(info)))
}

pub(super) fn leave(
    shared: &Shared,
    session: &mut SessionState,
    match_id: MatchId,
) -> Result<Option<Response>, ApiError> {
    // Like Nakama, leaving a match one is not in (or that ended) is still acknowledged.
    if session.joined.remove(&match_id) {
        shared
            .matches
            .leave(match_id, session.handle.presence.session_id);
    }
    Ok(Some(Response::Ack))
}

pub(super) fn send_data(
    shared: &Shared,
    session: &SessionState,
    match_id: MatchId,
    op_code: i64,
    data: Bytes,
    targets: Option<Vec<SessionId>>,
) -> Result<(), ApiError> {
    shared.matches.send_reliable(
        match_id,
        session.handle.presence.session_id,
        op_code,
        data,
        targets.as_deref(),
    )
}
