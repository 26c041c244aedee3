//! Lanes (protocol 3): reliable match data that one member of a relayed match sent
//! reaches this session on a unidirectional stream of its own per (match, sender), so
//! a lost packet of one sender's data holds back only that sender's later data, never
//! another's or the control stream's.
//!
//! Each lane is a small task that opens its stream, writes the [`LANE_STREAM`] byte and
//! then the frames the session hands it (the same numbered frames as on the control
//! stream, so a resume replays them like any event). What a lane has been handed and
//! its stream has not accepted yet counts as unsent for the slow-consumer rule and the
//! hard limit (`Outbound::lane_written`). Beyond [`MAX_LANES`] open lanes, further
//! (match, sender) pairs use the control stream for the rest of the connection, so one
//! sender's data never switches streams and overtakes itself.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use bytes::Bytes;
use quicmatch_protocol::{MatchId, LANE_STREAM, MAX_LANES};
use quinn::Connection;
use tokio::sync::mpsc;
use tracing::debug;

use crate::outbound::{Lane, Outbound};

/// The lanes of one connection.
pub(super) struct Lanes {
    conn: Connection,
    outbound: Arc<Outbound>,
    open: HashMap<Lane, mpsc::UnboundedSender<Vec<Bytes>>>,
    /// Pairs that found no free lane: the control stream carries them from then on.
    on_control: HashSet<Lane>,
}

fn size(chunks: &[Bytes]) -> usize {
    chunks.iter().map(Bytes::len).sum()
}

impl Lanes {
    pub(super) fn new(conn: Connection, outbound: Arc<Outbound>) -> Self {
        Self {
            conn,
            outbound,
            open: HashMap::new(),
            on_control: HashSet::new(),
        }
    }

    /// Hands each lane its chunks, opening lanes on first use; a pair without a lane
    /// goes to the end of `control`.
    pub(super) fn route(&mut self, lanes: Vec<(Lane, Vec<Bytes>)>, control: &mut Vec<Bytes>) {
        for (lane, chunks) in lanes {
            let bytes = size(&chunks);
            let tx = if self.on_control.contains(&lane) {
                None
            } else if let Some(tx) = self.open.get(&lane) {
                // A lane whose stream failed is not opened again: the connection is
                // going, and a new stream could overtake what the old one lost.
                (!tx.is_closed()).then(|| tx.clone())
            } else if self.open.len() < MAX_LANES as usize {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(self.conn.clone(), self.outbound.clone(), rx));
                self.open.insert(lane, tx.clone());
                Some(tx)
            } else {
                self.on_control.insert(lane);
                None
            };
            match tx {
                Some(tx) => {
                    if tx.send(chunks).is_err() {
                        // The lane's stream failed (the connection is going): the frames
                        // are in the replay buffer for a resume either way.
                        self.outbound.lane_written(bytes);
                    }
                }
                None => {
                    self.outbound.lane_written(bytes);
                    control.extend(chunks);
                }
            }
        }
    }

    /// Closes the lanes of matches the session is no longer in.
    pub(super) fn retain(&mut self, joined: &HashSet<MatchId>) {
        self.open.retain(|lane, _| joined.contains(&lane.match_id));
    }
}

/// One lane: opens its stream, then writes what it is handed, in order, until the
/// session drops it (the stream is finished) or the connection fails.
async fn run(
    conn: Connection,
    outbound: Arc<Outbound>,
    mut rx: mpsc::UnboundedReceiver<Vec<Bytes>>,
) {
    let stream = match conn.open_uni().await {
        Ok(mut stream) => match stream.write_all(&[LANE_STREAM]).await {
            Ok(()) => Some(stream),
            Err(e) => {
                debug!(error = %e, "lane stream failed");
                None
            }
        },
        Err(e) => {
            debug!(error = %e, "could not open a lane");
            None
        }
    };
    let Some(mut stream) = stream else {
        rx.close();
        while let Some(chunks) = rx.recv().await {
            outbound.lane_written(size(&chunks));
        }
        return;
    };
    while let Some(mut chunks) = rx.recv().await {
        let bytes = size(&chunks);
        let written = stream.write_all_chunks(&mut chunks).await;
        outbound.lane_written(bytes);
        if let Err(e) = written {
            debug!(error = %e, "lane stream failed");
            rx.close();
            while let Some(chunks) = rx.recv().await {
                outbound.lane_written(size(&chunks));
            }
            return;
        }
    }
    let _ = stream.finish();
}
