//! Lanes (protocol 3): reliable match data that one member of a relayed match sent
//! reaches this session on a unidirectional stream of its own per (match, sender), so
//! a lost packet of one sender's data holds back only that sender's later data, never
//! another's or the control stream's.
//!
//! A lane's stream starts with the [`LANE_STREAM`] byte, then carries the frames the
//! session hands it (the same numbered frames as on the control stream, so a resume
//! replays them like any event). The session task writes to a lane itself while the
//! stream takes data at once (the usual case: quinn buffers within its send window),
//! which costs no more than the control stream; a lane that cannot (no stream credit
//! yet, or flow control under loss) gets a task of its own that writes in order and
//! keeps it for the rest of its life. What a lane has been handed and its stream has not
//! accepted counts as unsent for the slow-consumer rule and the hard limit
//! (`Outbound::lane_written`). Beyond [`MAX_LANES`] open lanes, further (match, sender)
//! pairs use the control stream for the rest of the connection, so one sender's data
//! never switches streams and overtakes itself.

use std::{
    collections::{hash_map::Entry, HashSet},
    future::Future,
    sync::Arc,
};

use bytes::Bytes;
use quicmatch_protocol::{MatchId, LANE_STREAM, MAX_LANES};
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::debug;

use crate::{
    outbound::{Lane, Outbound},
    transport::{Conn, SendStream},
};

/// How a lane is written.
enum Writer {
    /// By the session task, while the stream takes everything at once.
    Direct(SendStream),
    /// By a task of its own, in order; the task hands back the finished stream.
    Task(
        mpsc::UnboundedSender<Vec<Bytes>>,
        JoinHandle<Option<SendStream>>,
    ),
    /// Its stream failed (the connection is going): nothing more is written.
    Failed,
}

/// The lanes of one connection.
pub(super) struct Lanes {
    conn: Conn,
    outbound: Arc<Outbound>,
    /// Looked up for every lane of every batch, so with a cheap hasher: the keys are
    /// server-made (match ids, slots) and at most [`MAX_LANES`] per connection.
    open: FxHashMap<Lane, Writer>,
    /// Pairs that found no free lane: the control stream carries them from then on.
    on_control: HashSet<Lane>,
}

fn size(chunks: &[Bytes]) -> usize {
    chunks.iter().map(Bytes::len).sum()
}

impl Lanes {
    pub(super) fn new(conn: Conn, outbound: Arc<Outbound>) -> Self {
        Self {
            conn,
            outbound,
            open: FxHashMap::default(),
            on_control: HashSet::new(),
        }
    }

    /// Hands each lane its chunks, opening lanes on first use; a pair without a lane
    /// goes to the end of `control`.
    /// The chunks are written from `lanes` in place; what a lane's stream did not take
    /// is moved out. The caller empties it afterwards ([`Taken::clear`](crate::outbound::Taken::clear)), keeping its
    /// buffers.
    pub(super) fn route(&mut self, lanes: &mut [(Lane, Vec<Bytes>)], control: &mut Vec<Bytes>) {
        for (lane, chunks) in lanes.iter_mut() {
            let lane = *lane;
            let bytes = size(chunks);
            if !self.on_control.is_empty() && self.on_control.contains(&lane) {
                self.outbound.lane_written(bytes);
                control.append(chunks);
                continue;
            }
            let full = self.open.len() >= MAX_LANES as usize;
            let writer = match self.open.entry(lane) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(_) if full => {
                    self.on_control.insert(lane);
                    self.outbound.lane_written(bytes);
                    control.append(chunks);
                    continue;
                }
                Entry::Vacant(entry) => entry.insert(match self.conn.try_open_uni() {
                    Some(Ok(stream)) => {
                        chunks.insert(0, Bytes::from_static(&[LANE_STREAM]));
                        Writer::Direct(stream)
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "could not open a lane");
                        Writer::Failed
                    }
                    // No stream credit yet: a task waits for it.
                    None => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        let task = tokio::spawn(run(
                            Opening::Wait(self.conn.clone()),
                            self.outbound.clone(),
                            rx,
                        ));
                        Writer::Task(tx, task)
                    }
                }),
            };
            let current = std::mem::replace(writer, Writer::Failed);
            *writer = write(&self.outbound, current, chunks, bytes);
        }
    }

    /// Finishes every lane (one written by a task once it has written what it holds);
    /// the future resolves when the client has acknowledged them all, which a close
    /// must wait for: it discards what was not delivered.
    pub(super) fn finish_all(&mut self) -> impl Future<Output = ()> + use<> {
        let mut direct = Vec::new();
        let mut tasks = Vec::new();
        for (_, writer) in self.open.drain() {
            match writer {
                Writer::Direct(mut stream) => {
                    let _ = stream.finish();
                    direct.push(stream);
                }
                // Dropping the sender ends the task once it has written the rest.
                Writer::Task(_, task) => tasks.push(task),
                Writer::Failed => {}
            }
        }
        async move {
            for mut stream in direct {
                stream.acknowledged().await;
            }
            for task in tasks {
                if let Ok(Some(mut stream)) = task.await {
                    stream.acknowledged().await;
                }
            }
        }
    }

    /// Closes the lanes of matches the session is no longer in.
    pub(super) fn retain(&mut self, joined: &FxHashSet<MatchId>) {
        if self.open.is_empty() {
            return;
        }
        self.open.retain(|lane, writer| {
            let keep = joined.contains(&lane.match_id);
            if !keep {
                if let Writer::Direct(stream) = writer {
                    let _ = stream.finish();
                }
            }
            keep
        });
    }
}

/// Writes `chunks` (`bytes` of frames, as `take` counted them) through `writer`;
/// returns how the lane is written from now on.
fn write(
    outbound: &Arc<Outbound>,
    writer: Writer,
    chunks: &mut Vec<Bytes>,
    bytes: usize,
) -> Writer {
    match writer {
        Writer::Direct(mut stream) => match stream.write_now(chunks) {
            Ok(true) => {
                outbound.lane_written(bytes);
                Writer::Direct(stream)
            }
            Ok(false) => {
                // The stream is full: a task writes the rest, then what follows.
                let rest: Vec<Bytes> = chunks.drain(..).filter(|c| !c.is_empty()).collect();
                let left = size(&rest).min(bytes);
                outbound.lane_written(bytes - left);
                let (tx, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(run(Opening::Open(stream), outbound.clone(), rx));
                // The rest goes first; a send on a fresh channel cannot fail.
                let _ = tx.send(rest);
                Writer::Task(tx, task)
            }
            Err(e) => {
                debug!(error = %e, "lane stream failed");
                outbound.lane_written(bytes);
                Writer::Failed
            }
        },
        Writer::Task(tx, task) => {
            if tx.send(std::mem::take(chunks)).is_err() {
                // The lane's task ended (its stream failed): the frames are in the
                // replay buffer for a resume either way.
                outbound.lane_written(bytes);
                Writer::Failed
            } else {
                Writer::Task(tx, task)
            }
        }
        Writer::Failed => {
            // A lane whose stream failed is not opened again: the connection is
            // going, and a new stream could overtake what the old one lost.
            outbound.lane_written(bytes);
            Writer::Failed
        }
    }
}

/// A lane task's stream: open already, or to be opened when credit comes.
enum Opening {
    Open(SendStream),
    Wait(Conn),
}

/// A lane written by a task: what it is handed, in order, until the session drops it
/// (the stream is finished and returned) or the connection fails (`None`).
async fn run(
    opening: Opening,
    outbound: Arc<Outbound>,
    mut rx: mpsc::UnboundedReceiver<Vec<Bytes>>,
) -> Option<SendStream> {
    let stream = match opening {
        Opening::Open(stream) => Some(stream),
        Opening::Wait(conn) => match conn.open_uni().await {
            Ok(mut stream) => stream
                .write_all_chunks(&mut [Bytes::from_static(&[LANE_STREAM])])
                .await
                .ok()
                .map(|()| stream),
            Err(e) => {
                debug!(error = %e, "could not open a lane");
                None
            }
        },
    };
    let Some(mut stream) = stream else {
        rx.close();
        while let Some(chunks) = rx.recv().await {
            outbound.lane_written(size(&chunks));
        }
        return None;
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
            return None;
        }
    }
    let _ = stream.finish();
    Some(stream)
}
