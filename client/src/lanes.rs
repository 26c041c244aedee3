//! Lanes (protocol 3) on the client: the server sends each member's reliable match data
//! on a unidirectional stream of its own, so one sender's lost packet holds back only
//! that sender's data. Every lane's frames are the control stream's numbered frames;
//! the driver takes them from all streams as they come ([`accept`]) and keeps track of
//! which numbers it processed ([`Received`]), so a resume asks for exactly what is
//! missing and a replay is never processed twice.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures_util::StreamExt as _;
use quicmatch_protocol::{frame::FrameCodec, LANE_STREAM};
use tokio::{io::AsyncReadExt as _, sync::mpsc};
use tokio_util::codec::FramedRead;

/// Lane frames waiting for the driver; a full channel stops reading the lanes (flow
/// control then slows only those streams).
const LANE_FRAMES: usize = 1024;

/// Most numbers processed ahead of a gap that are remembered; a server that leaves a
/// gap open longer than this is treated as having lost it.
const MAX_AHEAD: usize = 1 << 20;

/// The numbered events processed so far: every number up to `through`, and some after.
#[derive(Debug, Clone, Default)]
pub(crate) struct Received {
    through: u64,
    ahead: BTreeSet<u64>,
}

impl Received {
    /// Nothing processed after `through` yet.
    pub(crate) fn after(through: u64) -> Self {
        Self {
            through,
            ahead: BTreeSet::new(),
        }
    }

    /// Records `seq`; `false` if it was processed before (a replay).
    pub(crate) fn first_time(&mut self, seq: u64) -> bool {
        if seq <= self.through || !self.ahead.insert(seq) {
            return false;
        }
        while self.ahead.remove(&(self.through + 1)) {
            self.through += 1;
        }
        if self.ahead.len() > MAX_AHEAD {
            if let Some(&last) = self.ahead.last() {
                self.through = last;
            }
            self.ahead.clear();
        }
        true
    }

    /// Every number up to this one was processed: what a resume continues after.
    pub(crate) fn through(&self) -> u64 {
        self.through
    }
}

/// Accepts the lanes the server opens on `conn` and forwards their frames until the
/// connection ends or the receiver is dropped.
pub(crate) fn accept(conn: quinn::Connection) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(LANE_FRAMES);
    tokio::spawn(async move {
        while let Ok(stream) = conn.accept_uni().await {
            if tx.is_closed() {
                return;
            }
            tokio::spawn(read_lane(stream, tx.clone()));
        }
    });
    rx
}

async fn read_lane(mut stream: quinn::RecvStream, tx: mpsc::Sender<Bytes>) {
    match stream.read_u8().await {
        Ok(LANE_STREAM) => {}
        // A stream this client does not know: refuse it, keep the connection.
        _ => {
            let _ = stream.stop(quinn::VarInt::from_u32(0));
            return;
        }
    }
    let mut frames = FramedRead::new(stream, FrameCodec);
    while let Some(Ok(body)) = frames.next().await {
        if tx.send(body).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_processed_out_of_order_advance_once_the_gap_fills() {
        let mut r = Received::after(10);
        assert!(!r.first_time(9) && !r.first_time(10));
        assert!(r.first_time(12) && r.first_time(13));
        assert_eq!(r.through(), 10);
        assert!(!r.first_time(12), "a replay of 12");
        assert!(r.first_time(11));
        assert_eq!(r.through(), 13);
        assert!(!r.first_time(11) && !r.first_time(13));
        assert!(r.first_time(14));
        assert_eq!(r.through(), 14);
    }
}
