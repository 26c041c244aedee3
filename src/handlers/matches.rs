//! Handlers for relayed matches: create, join, leave, reliable data.

use bytes::Bytes;
use quicmatch_protocol::{ErrorCode, MatchId, MatchInfo, Response, SessionId};

use super::ApiError;
use crate::{session::SessionState, Shared};

pub(super) fn check_room(
    shared: &Shared,
    session: &SessionState,
    id: Option<MatchId>,
) -> Result<(), ApiError> {
    let already = id.is_some_and(|id| session.joined.contains(&id));
    // With single_match the session ends up in one match whatever it was in before.
    if !already
        && !shared.config.matches.single_match
        && session.joined.len() >= shared.config.matches.max_per_session
    {
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

/// Records a match the session is now in; with `single_match`, leaves the others (the
/// other members there see the leave).
pub(super) fn entered(shared: &Shared, session: &mut SessionState, info: MatchInfo) -> Response {
    if shared.config.matches.single_match {
        let sid = session.handle.presence.session_id;
        for other in session.joined.iter().filter(|m| **m != info.match_id) {
            shared.matches.leave(*other, sid);
        }
        session.joined.clear();
    }
    session.joined.insert(info.match_id);
    Response::Match(info)
}

pub(super) fn create(
    shared: &Shared,
    session: &mut SessionState,
    name: Option<&str>,
) -> Result<Option<Response>, ApiError> {
    check_room(shared, session, name.map(crate::matches::named_match_id))?;
    let info = shared.matches.create(name, &session.handle)?;
    Ok(Some(entered(shared, session, info)))
}

pub(super) fn join(
    shared: &Shared,
    session: &mut SessionState,
    match_id: MatchId,
) -> Result<Option<Response>, ApiError> {
    check_room(shared, session, Some(match_id))?;
    let info = shared.matches.join(match_id, &session.handle)?;
    Ok(Some(entered(shared, session, info)))
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
