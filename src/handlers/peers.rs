//! What other nodes of the cluster ask of this one, applied to the local tables
//! (`cluster::Local`): members homed elsewhere join, send to, and leave the relayed
//! matches this node hosts; link items for this node's sessions reach them here.

use std::{collections::BTreeMap, sync::Arc};

use bytes::Bytes;
use quicmatch_protocol::{
    datagram::ClientDatagram, envelope::Response, ErrorCode, MatchId, MatchInfo, MatchListRequest,
    PartyId, Presence, Request, SessionId,
};

use super::ApiError;
use crate::{
    cluster::{Joining, Listed, Local, Refusal},
    outbound::{self, Outbound, RemotePeer, SessionHandle},
    Shared,
};

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        Self::new(r.code, r.message)
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self::new(e.code, e.message)
    }
}

/// The local tables, for the cluster.
pub(crate) struct Peers(pub(crate) Arc<Shared>);

impl Local for Peers {
    fn join(
        &self,
        match_id: MatchId,
        presence: Presence,
        remote: Arc<dyn RemotePeer>,
        create: bool,
        metadata: BTreeMap<String, String>,
    ) -> Joining {
        let shared = &self.0;
        // The member's queue and connection are on its home; this handle forwards.
        let handle = SessionHandle {
            presence: Arc::new(presence),
            conn: None,
            outbound: Arc::new(Outbound::new(outbound::Limits::new(&shared.config.session))),
            remote: Some(remote),
        };
        if !shared.runtime.engine().has(match_id) {
            let joined = if create {
                shared.matches.join_or_create(match_id, &handle)
            } else {
                shared.matches.join(match_id, &handle)
            };
            return Joining::Done(joined.map_err(Refusal::from));
        }
        // A server-run match: its handler decides, as for a local member (join
        // metadata included), within `matches.answer_timeout`.
        if super::matches::check_metadata(&metadata).is_err() {
            return Joining::Done(Err(Refusal::new(
                ErrorCode::BAD_INPUT,
                "join metadata out of bounds",
            )));
        }
        let sid = handle.presence.session_id;
        if shared.matches.is_member(match_id, sid) {
            let infos = shared
                .matches
                .infos(sid, &std::iter::once(match_id).collect());
            if let Some(info) = infos.into_iter().next() {
                return Joining::Done(Ok(info));
            }
        }
        let rx = match shared
            .runtime
            .engine()
            .join_attempt(match_id, handle, metadata)
        {
            Ok(rx) => rx,
            Err(e) => return Joining::Done(Err(e.into())),
        };
        let wait = shared.config.matches.answer_timeout;
        Joining::Later(Box::pin(async move {
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(answer)) => answer.map_err(Refusal::from),
                Ok(Err(_)) => Err(Refusal::new(ErrorCode::MATCH_NOT_FOUND, "the match ended")),
                Err(_) => Err(Refusal::new(
                    ErrorCode::MATCH_JOIN_REJECTED,
                    "the match did not answer the join attempt in time",
                )),
            }
        }))
    }

    fn is_live(&self, match_id: MatchId) -> bool {
        self.0.matches.is_live(match_id)
    }

    fn data(
        &self,
        match_id: MatchId,
        sender: SessionId,
        op_code: i64,
        data: Bytes,
        targets: Option<&[SessionId]>,
    ) -> Result<(), Refusal> {
        Ok(self
            .0
            .matches
            .send_reliable(match_id, sender, op_code, data, targets)?)
    }

    fn datagram(&self, sender: SessionId, datagram: Bytes) -> Result<(), Refusal> {
        let datagram =
            ClientDatagram::decode(datagram).map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        Ok(self.0.matches.send_unreliable(sender, datagram)?)
    }

    fn leave(&self, match_id: MatchId, session: SessionId) -> bool {
        self.0.matches.leave(match_id, session)
    }

    fn session(&self, session: SessionId) -> Option<SessionHandle> {
        self.0.sessions.get(session)
    }

    fn matchmaker(&self) -> crate::matchmaker::Matchmaker {
        self.0.matchmaker.clone()
    }

    fn list(&self, request: &MatchListRequest) -> Result<Vec<Listed>, Refusal> {
        Ok(self
            .0
            .matches
            .list_ranked(request)?
            .into_iter()
            .map(|r| Listed {
                listing: r.listing,
                score: r.score,
                age_ns: r.age_ns,
                created: r.created,
            })
            .collect())
    }

    fn infos(&self, session: SessionId, matches: &[MatchId]) -> Vec<MatchInfo> {
        self.0
            .matches
            .infos(session, &matches.iter().copied().collect())
    }

    fn party_hosted(&self, party: PartyId) -> bool {
        self.0.parties.contains(party)
    }

    fn party(
        &self,
        home: &str,
        presence: Presence,
        remote: Arc<dyn RemotePeer>,
        request: Request,
    ) -> Result<Option<Response>, Refusal> {
        let shared = &self.0;
        if matches!(
            request,
            Request::PartyCreate { .. } | Request::PartyDataSend { .. }
        ) {
            return Err(Refusal::new(
                ErrorCode::BAD_INPUT,
                "parties are created, and their data sent, through the home node",
            ));
        }
        // The parties and the matchmaker reach the member through its home.
        let handle = SessionHandle {
            presence: Arc::new(presence),
            conn: None,
            outbound: Arc::new(Outbound::new(outbound::Limits::new(&shared.config.session))),
            remote: Some(remote),
        };
        let presence = handle.presence.clone();
        if !shared.sessions.add_guest(handle.clone(), home) {
            return Err(Refusal::new(
                ErrorCode::BAD_INPUT,
                "a session of this node cannot act through another",
            ));
        }
        let outcome = super::run_party(shared, &presence, request);
        shared.parties.keep_guest(&handle, home);
        Ok(outcome?)
    }

    fn party_data(
        &self,
        home: &str,
        party: PartyId,
        sender: SessionId,
        op_code: i64,
        data: Bytes,
    ) -> Result<(), Refusal> {
        let shared = &self.0;
        let Some(handle) = shared
            .sessions
            .reach(sender)
            .filter(|_| shared.sessions.is_guest_of(sender, home))
        else {
            return Err(Refusal::new(
                ErrorCode::PARTY_NOT_MEMBER,
                "not a party member",
            ));
        };
        Ok(shared
            .parties
            .send_data(&handle.presence, party, op_code, data)?)
    }

    fn parties_of(&self, session: SessionId) -> Vec<PartyId> {
        self.0.parties.of(session)
    }

    fn party_left(&self, home: &str, party: PartyId, session: SessionId) {
        if self.0.sessions.is_guest_of(session, home) {
            self.0.parties.leave(session, party);
        }
    }

    fn party_gone(&self, home: &str, session: SessionId) {
        if self.0.sessions.is_guest_of(session, home) {
            self.party_gone_anywhere(session);
        }
    }

    fn party_gone_anywhere(&self, session: SessionId) {
        if self.0.sessions.is_guest(session) {
            self.0.parties.disconnect(session);
            self.0.sessions.remove_guest(session);
        }
    }

    fn party_guests(&self, node: Option<&str>) -> Vec<SessionId> {
        self.0.sessions.guests(node)
    }
}
