//! Requests for matches beyond plain relaying: listing matches, creating labelled,
//! size-limited or private matches, joining with metadata, and calling the server's
//! RPC functions.

use std::collections::BTreeMap;

use quicmatch_protocol::{
    MatchListRequest, MatchListing, Request, Response, MAX_LABEL_LEN, MAX_LIST_LIMIT,
    MAX_METADATA_ENTRIES, MAX_PROPERTY_KEY_LEN, MAX_PROPERTY_VALUE_LEN, MAX_RPC_ID_LEN,
    MAX_RPC_PAYLOAD,
};

use crate::{ErrorCode, Match, MatchId, RequestError, Socket};

/// How many matches [`Socket::list_matches`] asks for unless told otherwise.
const DEFAULT_LIST_LIMIT: u32 = 10;

/// Options for [`Socket::create_match_with`]; start from `MatchOptions::default()`.
///
/// ```
/// let options = quicmatch_client::MatchOptions::default()
///     .label(r#"{"mode":"casual"}"#)
///     .max_size(8)
///     .private(true);
/// assert_eq!(options.max_size, Some(8));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MatchOptions {
    /// Free text shown in listings, usually JSON so listing queries can test its
    /// fields (`+label.mode:casual`); at most [`quicmatch_protocol::MAX_LABEL_LEN`]
    /// bytes.
    pub label: Option<String>,
    /// Most members, 2 to the server's `matches.max_size`; `None`: the server's.
    pub max_size: Option<u32>,
    /// Joinable by id but never listed.
    pub private: bool,
    /// Latest-state op codes (see [`latest_state`](Self::latest_state)).
    pub latest_op_codes: Vec<i64>,
}

impl MatchOptions {
    /// Latest state: the server keeps each member's newest broadcast (to every other
    /// member, at most 1 KiB) under each of these op codes (at most 8) and sends them to
    /// a member who joins later, right after its `Match` reply, as
    /// [`Event::MatchData`](crate::Event::MatchData) marked reliable, with their
    /// original `seq`. A late joiner then sees every player's state at once instead of
    /// waiting for their next send. A member's messages are forgotten when it leaves.
    pub fn latest_state(mut self, op_codes: impl IntoIterator<Item = i64>) -> Self {
        self.latest_op_codes = op_codes.into_iter().collect();
        self
    }

    /// Sets the label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Sets the most members the match admits.
    pub fn max_size(mut self, max_size: u32) -> Self {
        self.max_size = Some(max_size);
        self
    }

    /// Makes the match private (never listed) or not.
    pub fn private(mut self, private: bool) -> Self {
        self.private = private;
        self
    }
}

impl Socket {
    /// Lists joinable matches, relayed and server-run: private matches never appear,
    /// full ones do. Narrow the listing with the builder, then `.await` it. Without a
    /// `limit`, at most 10 matches come back.
    ///
    /// The server orders them by query score (when a query is given), then matches
    /// with room before full ones, then fuller first, then newest first.
    ///
    /// ```no_run
    /// # async fn demo(socket: &quicmatch_client::Socket) -> Result<(), quicmatch_client::RequestError> {
    /// let matches = socket
    ///     .list_matches()
    ///     .limit(10)
    ///     .authoritative(true)
    ///     .min_size(1)
    ///     .max_size(4)
    ///     .query("+label.mode:ranked")
    ///     .await?;
    /// for m in matches {
    ///     println!("{} ({}/{}) {:?}", m.match_id, m.size, m.max_size, m.label);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn list_matches(&self) -> ListMatches<'_> {
        ListMatches {
            socket: self,
            request: MatchListRequest {
                limit: DEFAULT_LIST_LIMIT,
                authoritative: None,
                label: None,
                min_size: None,
                max_size: None,
                query: None,
            },
        }
    }

    /// Calls the server function registered as `id` with `payload` (usually JSON) and
    /// returns what it returned. An unknown function gives
    /// `RUNTIME_FUNCTION_NOT_FOUND`, one that fails `RUNTIME_FUNCTION_EXCEPTION` with
    /// its message; a payload over [`quicmatch_protocol::MAX_RPC_PAYLOAD`] bytes
    /// `PAYLOAD_TOO_LARGE` and a name that is empty or over
    /// [`quicmatch_protocol::MAX_RPC_ID_LEN`] bytes `BAD_INPUT`, both without asking
    /// the server.
    pub async fn rpc(&self, id: &str, payload: &str) -> Result<String, RequestError> {
        if id.is_empty() || id.len() > MAX_RPC_ID_LEN {
            return Err(RequestError::local(
                ErrorCode::BAD_INPUT,
                format!("rpc id must be 1 to {MAX_RPC_ID_LEN} bytes"),
            ));
        }
        if payload.len() > MAX_RPC_PAYLOAD {
            return Err(RequestError::local(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!(
                    "rpc payload of {} bytes exceeds {MAX_RPC_PAYLOAD}",
                    payload.len()
                ),
            ));
        }
        let response = self
            .request(Request::Rpc {
                id: id.to_owned(),
                payload: payload.to_owned(),
            })
            .await?;
        match response {
            Response::Rpc { payload, .. } => Ok(payload),
            other => Err(RequestError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Joins a live match by id, like [`join_match`](Self::join_match), with metadata a
    /// server-run match's `join_attempt` sees (a relayed match ignores it). A handler
    /// that refuses gives `MATCH_JOIN_REJECTED` with its reason. At most
    /// [`quicmatch_protocol::MAX_METADATA_ENTRIES`] entries, keys 1 to
    /// [`quicmatch_protocol::MAX_PROPERTY_KEY_LEN`] bytes, values at most
    /// [`quicmatch_protocol::MAX_PROPERTY_VALUE_LEN`]; otherwise `BAD_INPUT`.
    pub async fn join_match_with(
        &self,
        match_id: MatchId,
        metadata: BTreeMap<String, String>,
    ) -> Result<Match, RequestError> {
        if metadata.len() > MAX_METADATA_ENTRIES {
            return Err(RequestError::local(
                ErrorCode::BAD_INPUT,
                format!("at most {MAX_METADATA_ENTRIES} metadata entries"),
            ));
        }
        if metadata.iter().any(|(k, v)| {
            k.is_empty() || k.len() > MAX_PROPERTY_KEY_LEN || v.len() > MAX_PROPERTY_VALUE_LEN
        }) {
            return Err(RequestError::local(
                ErrorCode::BAD_INPUT,
                format!(
                    "metadata keys must be 1 to {MAX_PROPERTY_KEY_LEN} bytes, values at most {MAX_PROPERTY_VALUE_LEN}"
                ),
            ));
        }
        let response = self
            .request(Request::MatchJoinWith { match_id, metadata })
            .await?;
        self.expect_match(response)
    }

    /// Creates a relayed match with a label, a size limit or privacy, and joins it.
    /// With a name it is join-or-create like [`create_match`](Self::create_match): a
    /// match of that name that already lives is joined as it is (the options apply
    /// only to a new one). A label over [`quicmatch_protocol::MAX_LABEL_LEN`] bytes or
    /// a `max_size` under 2 gives `BAD_INPUT` without asking the server.
    pub async fn create_match_with(
        &self,
        name: Option<&str>,
        options: MatchOptions,
    ) -> Result<Match, RequestError> {
        check_label(options.label.as_deref())?;
        if options.max_size.is_some_and(|n| n < 2) {
            return Err(RequestError::local(
                ErrorCode::BAD_INPUT,
                "max_size must be at least 2",
            ));
        }
        let request = if options.latest_op_codes.is_empty() {
            Request::MatchCreateWith {
                name: name.map(str::to_owned),
                label: options.label,
                max_size: options.max_size,
                private: options.private,
            }
        } else {
            Request::MatchCreateWithLatest {
                name: name.map(str::to_owned),
                label: options.label,
                max_size: options.max_size,
                private: options.private,
                latest_op_codes: options.latest_op_codes,
            }
        };
        let response = self.request(request).await?;
        self.expect_match(response)
    }
}

fn check_label(label: Option<&str>) -> Result<(), RequestError> {
    match label {
        Some(l) if l.len() > MAX_LABEL_LEN => Err(RequestError::local(
            ErrorCode::BAD_INPUT,
            format!("match label of {} bytes exceeds {MAX_LABEL_LEN}", l.len()),
        )),
        _ => Ok(()),
    }
}

/// A match listing being built by [`Socket::list_matches`]; `.await` it (or call
/// [`send`](Self::send)).
#[must_use = "a match listing does nothing until awaited"]
pub struct ListMatches<'a> {
    socket: &'a Socket,
    request: MatchListRequest,
}

impl<'a> ListMatches<'a> {
    /// Most matches returned, 1 to [`quicmatch_protocol::MAX_LIST_LIMIT`] (100).
    /// Default 10.
    pub fn limit(mut self, limit: u32) -> Self {
        self.request.limit = limit;
        self
    }

    /// Only server-run (`true`) or only relayed (`false`) matches.
    pub fn authoritative(mut self, authoritative: bool) -> Self {
        self.request.authoritative = Some(authoritative);
        self
    }

    /// Only matches whose label is exactly `label`.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.request.label = Some(label.into());
        self
    }

    /// Only matches with at least this many members.
    pub fn min_size(mut self, min_size: u32) -> Self {
        self.request.min_size = Some(min_size);
        self
    }

    /// Only matches with at most this many members.
    pub fn max_size(mut self, max_size: u32) -> Self {
        self.request.max_size = Some(max_size);
        self
    }

    /// Only matches whose label passes `query`, in the matchmaker's query language over
    /// the label's fields: a JSON label's keys as `label.<key>` (nested keys dotted,
    /// `+label.mode:ranked label.skill:>=5`), any other label as the field `label`.
    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.request.query = Some(query.into());
        self
    }

    /// The request as it will be sent.
    pub fn request(&self) -> &MatchListRequest {
        &self.request
    }

    /// Sends the request and returns the matches, in the server's order. A limit out
    /// of range, or a label over [`quicmatch_protocol::MAX_LABEL_LEN`] bytes, gives
    /// `BAD_INPUT` without asking the server; so does `min_size` above `max_size`.
    pub async fn send(self) -> Result<Vec<MatchListing>, RequestError> {
        let request = self.request;
        if request.limit == 0 || request.limit > MAX_LIST_LIMIT {
            return Err(RequestError::local(
                ErrorCode::BAD_INPUT,
                format!("limit must be 1 to {MAX_LIST_LIMIT}, got {}", request.limit),
            ));
        }
        if let (Some(min), Some(max)) = (request.min_size, request.max_size) {
            if min > max {
                return Err(RequestError::local(
                    ErrorCode::BAD_INPUT,
                    format!("min_size {min} is greater than max_size {max}"),
                ));
            }
        }
        check_label(request.label.as_deref())?;
        match self.socket.request(Request::MatchList(request)).await? {
            Response::MatchList { matches } => Ok(matches),
            other => Err(RequestError::Unexpected(format!("{other:?}"))),
        }
    }
}

impl<'a> std::future::IntoFuture for ListMatches<'a> {
    type Output = Result<Vec<MatchListing>, RequestError>;
    type IntoFuture =
        std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}
