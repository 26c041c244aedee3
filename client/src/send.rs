//! Sending match data with an options value rather than a bare `bool`: how it travels
//! (a datagram or the reliable stream), to whom, and with how much redundancy.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use quicmatch_protocol::{bundle::MAX_REDUNDANCY, datagram, ErrorCode, MatchId, Presence};

use crate::{redundancy::Sent, RequestError, Socket};

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
    /// Unreliable data only: how many of this socket's previous redundant messages to
    /// that match each datagram repeats (0 to 3; see [`redundancy`](Self::redundancy)).
    pub redundancy: usize,
    /// Unreliable data only: send each datagram a second time this long after the first
    /// (see [`repeat_after`](Self::repeat_after)).
    pub repeat: Option<Duration>,
    /// How many times a repeated datagram is sent again, `repeat` apart (1 to
    /// [`MAX_REPEATS`]; 0 counts as 1; see [`repeat_times`](Self::repeat_times)).
    pub repeats: usize,
}

/// Most times [`SendOptions::repeat_times`] sends a datagram again.
pub const MAX_REPEATS: usize = 3;

/// The longest [`SendOptions::repeat_after`] delay: a repeat later than this would be
/// older than anything a game still renders.
pub const MAX_REPEAT_DELAY: Duration = Duration::from_secs(1);

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
            redundancy: 0,
            repeat: None,
            repeats: 0,
        }
    }

    /// Loss-tolerant unreliable data: each datagram also carries up to `k` (at most 3)
    /// of this socket's previous redundant messages to the match, as many as fit in one
    /// datagram, so a lost datagram costs nothing when one of the next `k` arrives.
    /// Receivers using this SDK deliver every message once, oldest first, and drop one
    /// older than what they already delivered from that sender; messages recovered from
    /// one datagram share its `seq`. A message and its repeats must fit in 1 024 bytes
    /// together (the repeats that do not fit are left out). Ignored for reliable data.
    pub fn redundancy(mut self, k: usize) -> Self {
        self.redundancy = k;
        self
    }

    /// Loss-tolerant unreliable data that stays fresh: the datagram is sent again
    /// `delay` after the first time (at most [`MAX_REPEAT_DELAY`]), unless this socket
    /// sent another redundant or repeated message to the match meanwhile (any op code
    /// or recipients: the newer datagram is what matters now, and with
    /// [`redundancy`](Self::redundancy) it carries this message too) or left it.
    /// Receivers using this SDK deliver the message once.
    ///
    /// Redundancy recovers a lost message only with the next one, a send interval
    /// later, when the receiver holds the newer message anyway: it restores delivery,
    /// not freshness. A repeat recovers the newest state `delay` after it was lost, so
    /// what a receiver renders stays as fresh as on a clean link; the price is twice the
    /// datagrams (upload, and relay work on the server). Pick a delay well below the
    /// send interval: a few milliseconds still outlasts most short loss bursts. Ignored
    /// for reliable data.
    pub fn repeat_after(mut self, delay: Duration) -> Self {
        self.repeat = Some(delay);
        self
    }

    /// With [`repeat_after`](Self::repeat_after): send the datagram again `n` times (at
    /// most [`MAX_REPEATS`]), `delay` apart, each only while its message is still the
    /// newest. A message then misses a receiver only when all `n + 1` copies are lost
    /// on the way: at 5 % loss on each of the two hops (about 10 % per copy), one repeat
    /// leaves about 1 % late, two about 0.1 %.
    pub fn repeat_times(mut self, n: usize) -> Self {
        self.repeats = n;
        self
    }

    /// Only to these members.
    pub fn to(mut self, presences: &[Presence]) -> Self {
        self.targets = Some(presences.to_vec());
        self
    }
}

/// `true` is [`SendOptions::reliable`], `false` [`SendOptions::unreliable`]: so calls
/// written when [`Socket::send_match_data`] took a bare `bool` still compile.
impl From<bool> for SendOptions {
    fn from(reliable: bool) -> Self {
        if reliable {
            Self::reliable()
        } else {
            Self::unreliable()
        }
    }
}

impl Socket {
    /// Sends match data as `options` say: [`send_match_data`](Self::send_match_data)
    /// without its separate recipients (see it for the limits and when it returns).
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
        self.send_match_data(match_id, op_code, data, options, None)
            .await
    }
}

impl Socket {
    /// A bundle datagram: the new message and up to `k` previous ones (see
    /// [`SendOptions::redundancy`]), sent again after `repeat` if given (see
    /// [`SendOptions::repeat_after`]).
    pub(crate) fn send_redundant(
        &self,
        match_id: MatchId,
        op_code: i64,
        data: Bytes,
        presences: Option<&[Presence]>,
        k: usize,
        repeat: Option<(Duration, usize)>,
    ) -> Result<(), RequestError> {
        if k > MAX_REDUNDANCY {
            return Err(RequestError::local(
                ErrorCode::BAD_INPUT,
                format!("redundancy is at most {MAX_REDUNDANCY}"),
            ));
        }
        if repeat.is_some_and(|(_, n)| n > MAX_REPEATS) {
            return Err(RequestError::local(
                ErrorCode::BAD_INPUT,
                format!("a datagram is repeated at most {MAX_REPEATS} times"),
            ));
        }
        if repeat.is_some_and(|(d, _)| d > MAX_REPEAT_DELAY) {
            return Err(RequestError::local(
                ErrorCode::BAD_INPUT,
                format!(
                    "a repeat is at most {} ms after its datagram",
                    MAX_REPEAT_DELAY.as_millis()
                ),
            ));
        }
        let (datagram, sent_as) = {
            let mut state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some((handle, targets)) = state.route(match_id, presences) else {
                return Err(RequestError::local(
                    ErrorCode::NOT_MATCH_MEMBER,
                    "this socket is not in that match",
                ));
            };
            let sent = state.sent.entry(match_id).or_default();
            let Some(bundle) = sent.bundle(op_code, data, k) else {
                return Err(RequestError::local(
                    ErrorCode::PAYLOAD_TOO_LARGE,
                    "unreliable payload too large for a redundant datagram; send it reliably",
                ));
            };
            let newest = sent.newest();
            let datagram =
                datagram::encode_client_kind(handle, op_code, targets.as_deref(), &bundle, true);
            (datagram, newest)
        };
        self.hand_datagram(datagram.clone())?;
        if let Some((delay, times)) = repeat {
            // The task holds the socket weakly: a socket dropped before a repeat is due
            // sends nothing more. It runs on the runtime the socket connected on, so a
            // send polled elsewhere still repeats.
            let inner = Arc::downgrade(&self.inner);
            self.inner.runtime.spawn(async move {
                for _ in 0..times.max(1) {
                    tokio::time::sleep(delay).await;
                    let Some(inner) = inner.upgrade() else {
                        return;
                    };
                    let state = lock_state(&inner);
                    // Another redundant message to the match went out, or the socket
                    // left it (and perhaps joined again, numbering anew): no more
                    // repeats. The lock is held while sending, so no newer message can
                    // overtake this repeat.
                    if state.sent.get(&match_id).map(Sent::newest) != Some(sent_as) {
                        return;
                    }
                    // Best effort, like the first send: a failure here is loss.
                    let _ = inner.link.get().1.send_datagram(datagram.clone());
                }
            });
        }
        Ok(())
    }
}

fn lock_state(inner: &crate::Inner) -> std::sync::MutexGuard<'_, crate::driver::ClientState> {
    inner.state.lock().unwrap_or_else(|p| p.into_inner())
}
