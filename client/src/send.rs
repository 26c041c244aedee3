//! Sending match data with an options value rather than a bare `bool`: how it travels
//! (a datagram or the reliable stream) and to whom.

use bytes::Bytes;
use quicmatch_protocol::{MatchId, Presence};

use crate::{RequestError, Socket};

/// How match data is sent: [`SendOptions::unreliable`] (a datagram, the default) or
/// [`SendOptions::reliable`], to every other member or only to [`to`](Self::to) these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOptions {
    /// Over the ordered control stream (at most 32 KiB) instead of as a datagram (at
    /// most 1 KiB, may be lost or arrive out of order).
    pub reliable: bool,
    /// Only these members (this socket too, if listed); `None`: every other member.
    pub targets: Option<Vec<Presence>>,
}

impl SendOptions {
    /// A datagram to every other member.
    pub fn unreliable() -> Self {
        Self::default()
    }

    /// Over the reliable stream, to every other member.
    pub fn reliable() -> Self {
        Self {
            reliable: true,
            targets: None,
        }
    }

    /// Only to these members.
    pub fn to(mut self, presences: &[Presence]) -> Self {
        self.targets = Some(presences.to_vec());
        self
    }
}

impl Socket {
    /// Sends match data as `options` say (see [`send_match_data`](Self::send_match_data)
    /// for the limits and when it returns).
    ///
    /// ```no_run
    /// # async fn demo(socket: &quicmatch_client::Socket, id: quicmatch_client::MatchId) -> Result<(), quicmatch_client::RequestError> {
    /// use quicmatch_client::SendOptions;
    /// socket.send_match_data_with(id, 1, b"pos 1 2".to_vec(), SendOptions::unreliable()).await?;
    /// socket.send_match_data_with(id, 2, b"score".to_vec(), SendOptions::reliable()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_match_data_with(
        &self,
        match_id: MatchId,
        op_code: i64,
        data: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<(), RequestError> {
        self.send_match_data(
            match_id,
            op_code,
            data,
            options.reliable,
            options.targets.as_deref(),
        )
        .await
    }
}
