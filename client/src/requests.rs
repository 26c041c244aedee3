//! The requests of a [`Socket`]: relayed matches, match data, the matchmaker and
//! parties. (Listings, labelled matches, join metadata and RPCs are in `runtime`.)

use std::time::{Duration, Instant};

use bytes::Bytes;
use quicmatch_protocol::{
    datagram, envelope::ClientEnvelope, frame, Composition, MatchmakerAdd, MatchmakerOptions,
    Request, Response, Teams, MAX_DATAGRAM_PAYLOAD, MAX_PARTY_LABEL_LEN, MAX_RELIABLE_PAYLOAD,
    MAX_TARGETS,
};

#[cfg(doc)]
use crate::Event;
use crate::{
    driver::Command, lock, ErrorCode, Match, MatchId, PartyId, PartyInfo, Presence, RequestError,
    SendOptions, SessionId, Socket, TicketId,
};

impl Socket {
    /// Round trip to the server and back over the control stream.
    pub async fn ping(&self) -> Result<Duration, RequestError> {
        let start = Instant::now();
        match self.request(Request::Ping).await? {
            Response::Pong => Ok(start.elapsed()),
            other => Err(RequestError::Unexpected(format!("{other:?}"))),
        }
    }

    async fn ack(&self, request: Request) -> Result<(), RequestError> {
        Self::expect_ack(self.request(request).await?)
    }

    /// Creates a match and joins it. With a name, every caller using that name lands in
    /// the same match while it lives (join-or-create).
    pub async fn create_match(&self, name: Option<&str>) -> Result<Match, RequestError> {
        let response = self
            .request(Request::MatchCreate {
                name: name.map(str::to_owned),
            })
            .await?;
        self.expect_match(response)
    }

    /// Joins a live match by id. Joining a match this socket is already in succeeds and
    /// changes nothing. An unknown or ended match gives `MATCH_NOT_FOUND`.
    pub async fn join_match(&self, match_id: MatchId) -> Result<Match, RequestError> {
        let response = self.request(Request::MatchJoin { match_id }).await?;
        self.expect_match(response)
    }

    /// Leaves a match. Always acknowledged, even for a match this socket is not in.
    pub async fn leave_match(&self, match_id: MatchId) -> Result<(), RequestError> {
        let response = self.request(Request::MatchLeave { match_id }).await?;
        lock(&self.inner.state).forget(match_id);
        Self::expect_ack(response)
    }

    /// Sends match data as `options` say ([`SendOptions::unreliable`], the default, or
    /// [`SendOptions::reliable`], with any [`SendOptions::redundancy`]), to every other
    /// member, or only to `presences` when given (they replace the options' own
    /// [`SendOptions::to`]; this socket receives its own data only if it lists itself).
    /// A `bool` still works as the options (`true`: reliable).
    ///
    /// Unreliable data goes as one datagram of at most
    /// [`quicmatch_protocol::MAX_DATAGRAM_PAYLOAD`] bytes; reliable
    /// data goes over the control stream, in order. Both return once the data is handed
    /// to the connection; a failure the server detects arrives as [`Event::Error`].
    ///
    /// ```no_run
    /// # async fn demo(socket: &quicmatch_client::Socket, id: quicmatch_client::MatchId) -> Result<(), quicmatch_client::RequestError> {
    /// use quicmatch_client::SendOptions;
    /// socket.send_match_data(id, 1, b"pos 1 2".to_vec(), SendOptions::unreliable(), None).await?;
    /// socket.send_match_data(id, 2, b"score".to_vec(), SendOptions::reliable(), None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_match_data(
        &self,
        match_id: MatchId,
        op_code: i64,
        data: impl Into<Bytes>,
        options: impl Into<SendOptions>,
        presences: Option<&[Presence]>,
    ) -> Result<(), RequestError> {
        let options = options.into();
        let presences = presences.or(options.targets.as_deref());
        if !options.reliable && (options.redundancy > 0 || options.repeat.is_some()) {
            return self.send_redundant(
                match_id,
                op_code,
                data.into(),
                presences,
                options.redundancy,
                options.repeat.map(|d| (d, options.repeats)),
            );
        }
        self.send_plain(match_id, op_code, data.into(), options.reliable, presences)
            .await
    }

    /// One message, reliable or as a datagram of its own.
    async fn send_plain(
        &self,
        match_id: MatchId,
        op_code: i64,
        data: Bytes,
        reliable: bool,
        presences: Option<&[Presence]>,
    ) -> Result<(), RequestError> {
        if presences.is_some_and(|p| p.len() > MAX_TARGETS) {
            return Err(RequestError::local(
                ErrorCode::BAD_INPUT,
                format!("at most {MAX_TARGETS} recipients"),
            ));
        }
        if reliable {
            if data.len() > MAX_RELIABLE_PAYLOAD {
                return Err(RequestError::local(
                    ErrorCode::PAYLOAD_TOO_LARGE,
                    format!("reliable payload exceeds {MAX_RELIABLE_PAYLOAD} bytes"),
                ));
            }
            let frame = frame::encode(&ClientEnvelope {
                cid: None,
                body: Request::MatchDataSend {
                    match_id,
                    op_code,
                    data,
                    targets: presences.map(|p| p.iter().map(|p| p.session_id).collect()),
                },
            })
            .map_err(|e| RequestError::local(ErrorCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
            return self
                .inner
                .commands
                .send(Command::Send { frame })
                .await
                .map_err(|_| RequestError::Disconnected);
        }
        if data.len() > MAX_DATAGRAM_PAYLOAD {
            return Err(RequestError::local(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!(
                    "unreliable payload of {} bytes exceeds {MAX_DATAGRAM_PAYLOAD}; send it reliably",
                    data.len()
                ),
            ));
        }
        let datagram = {
            let state = lock(&self.inner.state);
            let Some((handle, targets)) = state.route(match_id, presences) else {
                return Err(RequestError::local(
                    ErrorCode::NOT_MATCH_MEMBER,
                    "this socket is not in that match",
                ));
            };
            datagram::encode_client(handle, op_code, targets.as_deref(), &data)
        };
        self.hand_datagram(datagram)
    }

    /// Hands a datagram to the connection, mapping its errors.
    pub(crate) fn hand_datagram(&self, datagram: Bytes) -> Result<(), RequestError> {
        match self.connection().send_datagram(datagram) {
            Ok(()) => Ok(()),
            Err(quinn::SendDatagramError::TooLarge) => Err(RequestError::local(
                ErrorCode::PAYLOAD_TOO_LARGE,
                "datagram too large for the current path; send it reliably",
            )),
            Err(quinn::SendDatagramError::ConnectionLost(_)) => Err(RequestError::Disconnected),
            Err(e) => Err(RequestError::Unexpected(e.to_string())),
        }
    }

    /// Starts a matchmaker ticket: `query` in the query language (`"*"` for anyone),
    /// and the smallest and largest acceptable match, this socket included. Add the
    /// optional parts with the builder, then `.await` it for the ticket id.
    ///
    /// ```no_run
    /// # async fn demo(socket: &quicmatch_client::Socket) -> Result<(), quicmatch_client::RequestError> {
    /// let ticket = socket
    ///     .add_matchmaker("+properties.region:eu +properties.rank:>=5", 2, 4)
    ///     .string_property("region", "eu")
    ///     .numeric_property("rank", 7.0)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn add_matchmaker(&self, query: &str, min_count: u32, max_count: u32) -> AddMatchmaker<'_> {
        AddMatchmaker {
            socket: self,
            party: None,
            request: MatchmakerAdd {
                query: query.to_owned(),
                min_count,
                max_count,
                count_multiple: None,
                string_properties: Default::default(),
                numeric_properties: Default::default(),
            },
            options: MatchmakerOptions::default(),
        }
    }

    /// Cancels one of this socket's tickets; `TICKET_NOT_FOUND` if it already matched,
    /// was cancelled, or is not this socket's.
    pub async fn remove_matchmaker(&self, ticket: TicketId) -> Result<(), RequestError> {
        let response = self.request(Request::MatchmakerRemove { ticket }).await?;
        Self::expect_ack(response)
    }

    /// Joins the match a matchmaker token names; the first matched player to arrive
    /// creates it. A forged, expired or foreign token gets `BAD_INPUT`.
    pub async fn join_match_token(&self, token: &str) -> Result<Match, RequestError> {
        let response = self
            .request(Request::MatchJoinToken {
                token: token.to_owned(),
            })
            .await?;
        self.expect_match(response)
    }

    /// Creates a party led by this socket (`max_size` 1 to 256). An open party admits
    /// joiners at once; a closed one sends their requests to the leader.
    pub async fn create_party(&self, open: bool, max_size: u32) -> Result<PartyInfo, RequestError> {
        self.create_party_with(open, max_size, None).await
    }

    /// Like [`create_party`](Self::create_party), with a label: free-form text every
    /// member sees in its [`Event::Party`] snapshot and in [`Event::PartyUpdate`]. A
    /// label over [`quicmatch_protocol::MAX_PARTY_LABEL_LEN`] bytes gives `BAD_INPUT`
    /// without asking the server; an empty label is no label.
    pub async fn create_party_with(
        &self,
        open: bool,
        max_size: u32,
        label: Option<&str>,
    ) -> Result<PartyInfo, RequestError> {
        check_party_label(label)?;
        match self
            .request(Request::PartyCreate {
                open,
                max_size,
                label: label.map(str::to_owned),
            })
            .await?
        {
            Response::Party(info) => Ok(info),
            other => Err(RequestError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Joins an open party (an [`Event::Party`] snapshot follows), or asks to join a
    /// closed one (the snapshot follows if the leader accepts; [`Event::PartyClose`]
    /// if it declines).
    pub async fn join_party(&self, party_id: PartyId) -> Result<(), RequestError> {
        self.ack(Request::PartyJoin { party_id }).await
    }

    /// Leaves a party (always acknowledged).
    pub async fn leave_party(&self, party_id: PartyId) -> Result<(), RequestError> {
        self.ack(Request::PartyLeave { party_id }).await
    }

    /// Leader only: ends the party for everyone.
    pub async fn close_party(&self, party_id: PartyId) -> Result<(), RequestError> {
        self.ack(Request::PartyClose { party_id }).await
    }

    /// Leader only: admits a pending requester.
    pub async fn accept_party_member(
        &self,
        party_id: PartyId,
        who: impl Into<SessionId>,
    ) -> Result<(), RequestError> {
        self.ack(Request::PartyAccept {
            party_id,
            session_id: who.into(),
        })
        .await
    }

    /// Leader only: removes a member (told with [`Event::PartyClose`]) or declines a
    /// pending request (the requester is told too).
    pub async fn remove_party_member(
        &self,
        party_id: PartyId,
        who: impl Into<SessionId>,
    ) -> Result<(), RequestError> {
        self.ack(Request::PartyRemove {
            party_id,
            session_id: who.into(),
        })
        .await
    }

    /// Leader only: makes another member the leader.
    pub async fn promote_party_member(
        &self,
        party_id: PartyId,
        who: impl Into<SessionId>,
    ) -> Result<(), RequestError> {
        self.ack(Request::PartyPromote {
            party_id,
            session_id: who.into(),
        })
        .await
    }

    /// Leader only: the pending join requests, oldest first.
    pub async fn list_party_join_requests(
        &self,
        party_id: PartyId,
    ) -> Result<Vec<Presence>, RequestError> {
        match self
            .request(Request::PartyJoinRequestList { party_id })
            .await?
        {
            Response::PartyJoinRequests { presences, .. } => Ok(presences),
            other => Err(RequestError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Leader only: opens or closes the party (its label stays; see
    /// [`update_party_label`](Self::update_party_label)).
    pub async fn update_party(&self, party_id: PartyId, open: bool) -> Result<(), RequestError> {
        self.ack(Request::PartyUpdate {
            party_id,
            open: Some(open),
            label: None,
        })
        .await
    }

    /// Leader only: sets the party's label (`None` removes it), leaving its open flag
    /// as it is; every member gets [`Event::PartyUpdate`]. A label over
    /// [`quicmatch_protocol::MAX_PARTY_LABEL_LEN`] bytes gives `BAD_INPUT` without
    /// asking the server.
    pub async fn update_party_label(
        &self,
        party_id: PartyId,
        label: Option<&str>,
    ) -> Result<(), RequestError> {
        check_party_label(label)?;
        self.ack(Request::PartyUpdate {
            party_id,
            open: None,
            // On the wire `None` means "unchanged"; the server takes an empty label as
            // no label.
            label: Some(label.unwrap_or_default().to_owned()),
        })
        .await
    }

    /// Sends reliable data to every other party member (never echoed back).
    pub async fn send_party_data(
        &self,
        party_id: PartyId,
        op_code: i64,
        data: impl Into<Bytes>,
    ) -> Result<(), RequestError> {
        self.ack(Request::PartyDataSend {
            party_id,
            op_code,
            data: data.into(),
        })
        .await
    }

    /// Leader only: starts one matchmaker ticket for the whole party; every member gets
    /// [`Event::PartyMatchmakerTicket`] and, when matched, [`Event::MatchmakerMatched`].
    pub fn add_matchmaker_party(
        &self,
        party_id: PartyId,
        query: &str,
        min_count: u32,
        max_count: u32,
    ) -> AddMatchmaker<'_> {
        let mut add = self.add_matchmaker(query, min_count, max_count);
        add.party = Some(party_id);
        add
    }

    /// Leader only: cancels one of the party's tickets.
    pub async fn remove_matchmaker_party(
        &self,
        party_id: PartyId,
        ticket: TicketId,
    ) -> Result<(), RequestError> {
        self.ack(Request::PartyMatchmakerRemove { party_id, ticket })
            .await
    }
}

fn check_party_label(label: Option<&str>) -> Result<(), RequestError> {
    match label {
        Some(l) if l.len() > MAX_PARTY_LABEL_LEN => Err(RequestError::local(
            ErrorCode::BAD_INPUT,
            format!(
                "party label of {} bytes exceeds {MAX_PARTY_LABEL_LEN}",
                l.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// A matchmaker request being built; `.await` it (or call [`send`](Self::send)).
#[must_use = "a matchmaker request does nothing until awaited"]
pub struct AddMatchmaker<'a> {
    socket: &'a Socket,
    party: Option<PartyId>,
    request: MatchmakerAdd,
    options: MatchmakerOptions,
}

impl<'a> AddMatchmaker<'a> {
    /// Replaces the query.
    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.request.query = query.into();
        self
    }

    /// Match sizes must be a multiple of `n` (it must divide both counts).
    pub fn count_multiple(mut self, n: u32) -> Self {
        self.request.count_multiple = Some(n);
        self
    }

    /// A string property other tickets' queries can test.
    pub fn string_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request
            .string_properties
            .insert(key.into(), value.into());
        self
    }

    /// A numeric property other tickets' queries can test.
    pub fn numeric_property(mut self, key: impl Into<String>, value: f64) -> Self {
        self.request.numeric_properties.insert(key.into(), value);
        self
    }

    /// Roles: a group (or, with [`teams`](Self::teams), each team) must hold exactly
    /// `counts` of the values of the string property `property`, e.g.
    /// `.composition("role", [("tank", 1), ("healer", 1), ("dps", 3)])` with
    /// `.string_property("role", "tank")`. A party lists one value per member,
    /// comma-separated (`"tank,dps"`). Every ticket in a group must ask for the same
    /// composition, and the group's size is the counts' total (times the teams).
    pub fn composition<K: Into<String>>(
        mut self,
        property: impl Into<String>,
        counts: impl IntoIterator<Item = (K, u32)>,
    ) -> Self {
        self.options.composition = Some(Composition {
            property: property.into(),
            counts: counts.into_iter().map(|(k, n)| (k.into(), n)).collect(),
        });
        self
    }

    /// Splits the group into `count` teams (the group size must be a multiple); parties
    /// are never split. The result arrives as [`Event::MatchmakerMatchedTeams`](crate::Event::MatchmakerMatchedTeams).
    pub fn teams(mut self, count: u32) -> Self {
        let balance = self.options.teams.take().and_then(|t| t.balance_property);
        self.options.teams = Some(Teams {
            count,
            balance_property: balance,
        });
        self
    }

    /// With [`teams`](Self::teams): balance the teams' sums of this numeric property.
    pub fn balance_teams_on(mut self, property: impl Into<String>) -> Self {
        let count = self.options.teams.as_ref().map_or(2, |t| t.count);
        self.options.teams = Some(Teams {
            count,
            balance_property: Some(property.into()),
        });
        self
    }

    /// Widening: after `after_passes` matchmaker passes without a match, `query`
    /// replaces the ticket's query.
    pub fn fallback_query(mut self, query: impl Into<String>, after_passes: u32) -> Self {
        self.options.fallback_query = Some(query.into());
        self.options.fallback_after = after_passes;
        self
    }

    /// Gives up after `passes` matchmaker passes without a match: the ticket is cancelled
    /// and [`Event::MatchmakerTicketCancelled`](crate::Event::MatchmakerTicketCancelled)
    /// arrives with the reason `"expired"`.
    pub fn expires_after(mut self, passes: u32) -> Self {
        self.options.expires_after = Some(passes);
        self
    }

    /// Sends the request and returns the ticket.
    pub async fn send(self) -> Result<TicketId, RequestError> {
        let plain = self.options == MatchmakerOptions::default();
        let request = match (self.party, plain) {
            (None, true) => Request::MatchmakerAdd(self.request),
            (None, false) => Request::MatchmakerAddWith {
                request: self.request,
                options: self.options,
            },
            (Some(party_id), true) => Request::PartyMatchmakerAdd {
                party_id,
                request: self.request,
            },
            (Some(party_id), false) => Request::PartyMatchmakerAddWith {
                party_id,
                request: self.request,
                options: self.options,
            },
        };
        match self.socket.request(request).await? {
            Response::MatchmakerTicket { ticket }
            | Response::PartyMatchmakerTicket { ticket, .. } => Ok(ticket),
            other => Err(RequestError::Unexpected(format!("{other:?}"))),
        }
    }
}

impl<'a> std::future::IntoFuture for AddMatchmaker<'a> {
    type Output = Result<TicketId, RequestError>;
    type IntoFuture =
        std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}
