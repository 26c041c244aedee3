//! Handlers for relayed matches: create, join, leave, reliable data.

use std::collections::BTreeMap;

use bytes::Bytes;
use quicmatch_protocol::{ErrorCode, MatchId, MatchInfo, Response, SessionId, MAX_MATCH_NAME_LEN};

use super::{ApiError, Dispatched, Outcome};
use crate::{session::SessionState, Shared};

pub(super) fn check_room(
    shared: &Shared,
    session: &mut SessionState,
    id: Option<MatchId>,
) -> Result<(), ApiError> {
    // Server-run matches can end or kick without the session's doing: forget those.
    let sid = session.handle.presence.session_id;
    session
        .joined
        .retain(|m| shared.matches.is_member(*m, sid) || shared.cluster.is_remote_member(*m, sid));
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
            leave_any(shared, *other, sid);
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
) -> Dispatched {
    create_with(
        shared,
        session,
        name,
        crate::matches::RelayedOptions::default(),
    )
}

/// Creates a relayed match with a label, a size limit or privacy. With a name, joins
/// the live match of that name instead; in a cluster, wherever it lives (the name is
/// claimed first, so two nodes never make two matches of one name).
pub(super) fn create_with(
    shared: &Shared,
    session: &mut SessionState,
    name: Option<&str>,
    options: crate::matches::RelayedOptions,
) -> Dispatched {
    let id = name.map(crate::matches::named_match_id);
    if let Err(e) = check_room(shared, session, id) {
        return Dispatched::Now(Err(e));
    }
    match (name, id) {
        (Some(name), Some(id))
            if shared.cluster.is_active()
                && !shared.matches.is_live(id)
                && !name.is_empty()
                && name.len() <= MAX_MATCH_NAME_LEN =>
        {
            let cluster = shared.cluster.clone();
            let matches = shared.matches.clone();
            let handle = session.handle.clone();
            let name = name.to_owned();
            Dispatched::Later(Box::pin(async move {
                named(&cluster, &matches, &handle, &name, &options).await
            }))
        }
        _ => Dispatched::Now(
            shared
                .matches
                .create_with(name, &session.handle, &options)
                .map(|info| Some(entered(shared, session, info))),
        ),
    }
}

/// A named match is relayed: its join needs no handler's answer.
const REQUEST_ONLY: std::time::Duration = std::time::Duration::ZERO;

/// How long a node that found a name claimed but its match missing waits before
/// asking again (a claim is made just before its match is created).
const CLAIM_SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// A named match in a cluster: created here when this node claims the name, else
/// joined where the claim says; a claim whose holder no longer hosts the match is taken
/// over. The session's events wait for the reply, as for any join.
async fn named(
    cluster: &crate::cluster::Cluster,
    matches: &crate::matches::MatchTable,
    handle: &crate::outbound::SessionHandle,
    name: &str,
    options: &crate::matches::RelayedOptions,
) -> Outcome {
    let id = crate::matches::named_match_id(name);
    placed(cluster, id, handle, || {
        matches.create_with(Some(name), handle, options)
    })
    .await
}

/// Joins the match `id` wherever the cluster's claim on it says, or, when this node
/// holds the claim (or takes it over from a holder without the match), makes it here
/// with `create`: one id, one match across the cluster (a named match, a matchmaker
/// token's).
pub(super) async fn placed(
    cluster: &crate::cluster::Cluster,
    id: MatchId,
    handle: &crate::outbound::SessionHandle,
    create: impl Fn() -> Result<MatchInfo, ApiError>,
) -> Outcome {
    use crate::cluster::Place;
    let mut place = cluster.place(id).await?;
    for _ in 0..3 {
        match place {
            Place::Here => {
                let info = create()?;
                return Ok(Some(Response::Match(info)));
            }
            Place::There(revision) => {
                // A holder that has just claimed the id may not have created its match
                // yet: asked twice, a moment apart, before its claim is taken over.
                let join = || {
                    cluster.join(
                        id,
                        (*handle.presence).clone(),
                        BTreeMap::new(),
                        REQUEST_ONLY,
                    )
                };
                let mut answer = join().await;
                if answer
                    .as_ref()
                    .is_err_and(|r| r.code == ErrorCode::MATCH_NOT_FOUND)
                {
                    tokio::time::sleep(CLAIM_SETTLE).await;
                    answer = join().await;
                }
                match answer {
                    Ok(info) => return Ok(Some(Response::Match(info))),
                    Err(r) if r.code == ErrorCode::MATCH_NOT_FOUND => {
                        place = cluster.take_over(id, revision).await?;
                    }
                    Err(r) => return Err(r.into()),
                }
            }
        }
    }
    Err(ApiError::new(
        ErrorCode::CLUSTER_UNAVAILABLE,
        "the match kept moving between nodes; try again",
    ))
}

/// Lists matches; in a cluster, every live node's, merged in the one listing order (a
/// node that does not answer in time is left out).
pub(super) fn list(shared: &Shared, request: quicmatch_protocol::MatchListRequest) -> Dispatched {
    if !shared.cluster.is_active() {
        return Dispatched::Now(
            shared
                .matches
                .list(&request)
                .map(|matches| Some(Response::MatchList { matches })),
        );
    }
    // Checked here first: a bad request is this node's answer, at once.
    let local = match shared.matches.list_ranked(&request) {
        Ok(local) => local,
        Err(e) => return Dispatched::Now(Err(e)),
    };
    let cluster = shared.cluster.clone();
    Dispatched::Later(Box::pin(async move {
        let mut lists = vec![local];
        for other in cluster.list(&request).await {
            lists.push(
                other
                    .into_iter()
                    .map(|l| crate::matches::listing::Ranked {
                        listing: l.listing,
                        score: l.score,
                        age_ns: l.age_ns,
                        created: l.created,
                    })
                    .collect(),
            );
        }
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let matches = crate::matches::listing::merge(lists, limit);
        Ok(Some(Response::MatchList { matches }))
    }))
}

/// Joins a match by id: a relayed one at once, a server-run one once its handler's
/// `join_attempt` accepts (with the metadata).
pub(super) fn join_with(
    shared: &Shared,
    session: &mut SessionState,
    match_id: MatchId,
    metadata: BTreeMap<String, String>,
) -> Dispatched {
    if let Err(e) =
        check_room(shared, session, Some(match_id)).and_then(|()| check_metadata(&metadata))
    {
        return Dispatched::Now(Err(e));
    }
    if !shared.runtime.engine().has(match_id) {
        let joined = shared.matches.join(match_id, &session.handle);
        return match joined {
            Err(e) if e.code == ErrorCode::MATCH_NOT_FOUND && shared.cluster.is_active() => {
                // Not here: another node of the cluster may host it. The session's
                // events wait for the answer, so the `Match` reply comes first.
                let cluster = shared.cluster.clone();
                let presence = (*session.handle.presence).clone();
                let wait = shared.config.matches.answer_timeout;
                Dispatched::Later(Box::pin(async move {
                    let info = cluster.join(match_id, presence, metadata, wait).await?;
                    Ok(Some(Response::Match(info)))
                }))
            }
            joined => Dispatched::Now(joined.map(|info| Some(entered(shared, session, info)))),
        };
    }
    let sid = session.handle.presence.session_id;
    if shared.matches.is_member(match_id, sid) {
        let infos = shared
            .matches
            .infos(sid, &std::iter::once(match_id).collect());
        if let Some(info) = infos.into_iter().next() {
            return Dispatched::Now(Ok(Some(entered(shared, session, info))));
        }
    }
    let attempt = shared
        .runtime
        .engine()
        .join_attempt(match_id, session.handle.clone(), metadata);
    let rx = match attempt {
        Ok(rx) => rx,
        Err(e) => return Dispatched::Now(Err(e)),
    };
    let wait = shared.config.matches.answer_timeout;
    Dispatched::Later(Box::pin(async move {
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(answer)) => answer.map(|info| Some(Response::Match(info))),
            Ok(Err(_)) => Err(ApiError::new(ErrorCode::MATCH_NOT_FOUND, "the match ended")),
            Err(_) => Err(ApiError::new(
                ErrorCode::MATCH_JOIN_REJECTED,
                "the match did not answer the join attempt in time",
            )),
        }
    }))
}

/// Join metadata is bounded like matchmaker properties.
pub(super) fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    use quicmatch_protocol::{MAX_METADATA_ENTRIES, MAX_PROPERTY_KEY_LEN, MAX_PROPERTY_VALUE_LEN};
    let bad = |m: String| Err(ApiError::new(ErrorCode::BAD_INPUT, m));
    if metadata.len() > MAX_METADATA_ENTRIES {
        return bad(format!("at most {MAX_METADATA_ENTRIES} metadata entries"));
    }
    if metadata.iter().any(|(k, v)| {
        k.is_empty() || k.len() > MAX_PROPERTY_KEY_LEN || v.len() > MAX_PROPERTY_VALUE_LEN
    }) {
        return bad(format!(
            "metadata keys must be 1 to {MAX_PROPERTY_KEY_LEN} bytes, values at most {MAX_PROPERTY_VALUE_LEN}"
        ));
    }
    Ok(())
}

pub(super) fn leave(
    shared: &Shared,
    session: &mut SessionState,
    match_id: MatchId,
) -> Result<Option<Response>, ApiError> {
    // Like Nakama, leaving a match one is not in (or that ended) is still acknowledged.
    if session.joined.remove(&match_id) {
        leave_any(shared, match_id, session.handle.presence.session_id);
    }
    Ok(Some(Response::Ack))
}

/// Leaves a match, local or hosted by another node of the cluster.
pub(crate) fn leave_any(shared: &Shared, match_id: MatchId, session: SessionId) {
    if !shared.matches.leave(match_id, session) {
        shared.cluster.leave(match_id, session);
    }
}

pub(super) fn send_data(
    shared: &Shared,
    session: &SessionState,
    match_id: MatchId,
    op_code: i64,
    data: Bytes,
    targets: Option<Vec<SessionId>>,
) -> Result<(), ApiError> {
    let sender = session.handle.presence.session_id;
    if shared.cluster.is_remote_member(match_id, sender) {
        // A match another node hosts: on to it (checked there as here).
        return match shared
            .cluster
            .send_data(match_id, sender, op_code, data, targets)
        {
            Some(sent) => Ok(sent?),
            None => Err(ApiError::new(
                ErrorCode::MATCH_NOT_FOUND,
                format!("no live match has id {match_id}"),
            )),
        };
    }
    shared
        .matches
        .send_reliable(match_id, sender, op_code, data, targets.as_deref())
}
