//! Restart survival: what the server records so that a restart, planned or a crash,
//! loses no game, and how it puts it back.
//!
//! Every `matches.snapshot_interval` a thread of its own ([`Persister`]) records the
//! session registry (who each session is), the parties, and every server-run match
//! whose handler gives a snapshot (its handler's bytes, label, members and counters)
//! in the store's `restart` table: only records that changed are written, and records
//! of what is gone are deleted, in one commit. A planned shutdown records once more,
//! after the matches have given their last snapshot ([`record_final`]).
//!
//! At start ([`restore`]) the records come back: sessions are held for
//! `session.reconnect_grace` plus `session.idle_timeout` (a client of a killed server
//! may only notice after its idle timeout), matches are rebuilt by their handler's
//! `restore` with those sessions as members, parties with theirs. A session that
//! resumes finds its matches and parties as they were, and the others see no leave;
//! one that does not come back leaves everything as any expired session does.
//! Matchmaker tickets are not recorded: a restart cancels them.

mod records;

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use self::records::{decode_all, Decoded, MatchRecord, PartyRecord, SessionRecord};
use crate::{
    runtime::{Kept, Restored, Snapshots},
    session::SessionState,
    storage::restart::{RestartChanges, RestartKind},
    Shared,
};

type Key = (RestartKind, u128);

/// What was last written, by record, as a hash of its bytes: a record is written again
/// only when its hash changes.
#[derive(Default)]
pub(crate) struct Recorder {
    written: HashMap<Key, u64>,
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Recorder {
    /// Records the server's state: sessions, parties, and the matches in `snapshots`.
    fn round(&mut self, shared: &Shared, snapshots: Snapshots) {
        let started = Instant::now();
        let (now, keep) = collect(shared, snapshots);
        let mut changes = RestartChanges::default();
        let mut hashes = Vec::new();
        for (key, bytes) in now {
            let h = hash_of(&bytes);
            if self.written.get(&key) != Some(&h) {
                hashes.push((key, h));
                changes.puts.push((key.0, key.1, bytes));
            } else {
                hashes.push((key, h));
            }
        }
        let present: HashSet<Key> = hashes.iter().map(|(k, _)| *k).collect();
        changes.deletes = self
            .written
            .keys()
            .filter(|k| !present.contains(k) && !keep.contains(k))
            .copied()
            .collect();
        if changes.is_empty() {
            return;
        }
        let (puts, deletes) = (changes.puts.len(), changes.deletes.len());
        match shared.runtime.storage().write_restart(changes) {
            Ok(()) => {
                let kept: HashMap<Key, u64> = self
                    .written
                    .iter()
                    .filter(|(k, _)| keep.contains(k))
                    .map(|(k, h)| (*k, *h))
                    .collect();
                self.written = kept;
                self.written.extend(hashes);
                metrics::counter!("quicmatch_restart_records_written_total")
                    .increment((puts + deletes) as u64);
                metrics::histogram!("quicmatch_restart_record_seconds")
                    .record(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                metrics::counter!("quicmatch_restart_record_failures_total").increment(1);
                warn!(error = %e, "could not record the state for a restart; trying again next time");
            }
        }
    }
}

/// Every record the server's state makes now, and the keys of busy matches whose
/// previous records stand.
fn collect(shared: &Shared, snapshots: Snapshots) -> (Vec<(Key, Vec<u8>)>, HashSet<Key>) {
    let mut out = Vec::new();
    for presence in shared.sessions.presences() {
        let record = SessionRecord {
            user_id: presence.user_id,
            username: presence.username.clone(),
        };
        if let Some(bytes) = records::encode(&record) {
            out.push((
                (RestartKind::Session, presence.session_id.0.as_u128()),
                bytes,
            ));
        }
    }
    for party in shared.parties.all() {
        let id = party.id.0.as_u128();
        if let Some(bytes) = records::encode(&PartyRecord::of(&party)) {
            out.push(((RestartKind::Party, id), bytes));
        }
    }
    for kept in snapshots.kept {
        let Some((counters, members, max_size)) = shared.matches.kept(kept.id) else {
            continue;
        };
        let id = kept.id.0.as_u128();
        let record = MatchRecord::of(&kept, counters, members, max_size);
        if let Some(bytes) = records::encode(&record) {
            out.push(((RestartKind::Match, id), bytes));
            out.push(((RestartKind::State, id), kept.state));
        }
    }
    let keep = snapshots
        .busy
        .iter()
        .flat_map(|id| {
            let id = id.0.as_u128();
            [(RestartKind::Match, id), (RestartKind::State, id)]
        })
        .collect();
    (out, keep)
}

/// The recording thread.
pub(crate) struct Persister {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<Recorder>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Persister {
    /// Starts recording every `matches.snapshot_interval` (not when it is zero).
    pub(crate) fn start(shared: Arc<Shared>, mut recorder: Recorder) -> Option<Self> {
        let every = shared.config.matches.snapshot_interval;
        if every.is_zero() {
            return None;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("quicmatch-persist".into())
            .spawn(move || {
                let (flag, cv) = &*signal;
                // A fixed schedule: a round's own time does not stretch the interval.
                let mut next = Instant::now() + every;
                loop {
                    {
                        let wait = next.saturating_duration_since(Instant::now());
                        let stopped = lock(flag);
                        let (stopped, _) = cv
                            .wait_timeout_while(stopped, wait, |s| !*s)
                            .unwrap_or_else(|p| p.into_inner());
                        if *stopped {
                            return recorder;
                        }
                    }
                    let snapshots = shared.runtime.engine().snapshots();
                    recorder.round(&shared, snapshots);
                    next += every;
                    let now = Instant::now();
                    if next < now {
                        // Far behind (a slow disk): skip the missed rounds.
                        next = now + every;
                    }
                }
            });
        match thread {
            Ok(thread) => Some(Self { stop, thread }),
            Err(e) => {
                warn!(error = %e, "could not start recording for restarts");
                None
            }
        }
    }

    /// Stops the thread after its current round; returns what it had written.
    pub(crate) fn stop(self) -> Recorder {
        let (flag, cv) = &*self.stop;
        *lock(flag) = true;
        cv.notify_all();
        self.thread.join().unwrap_or_default()
    }
}

/// At a planned shutdown: the last round, with the matches kept by the engine's
/// shutdown. Blocks until committed.
pub(crate) fn record_final(shared: &Shared, mut recorder: Recorder, kept: Vec<Kept>) {
    let matches = kept.len();
    recorder.round(
        shared,
        Snapshots {
            kept,
            busy: Vec::new(),
        },
    );
    info!(
        sessions = shared.sessions.len(),
        parties = shared.parties.len(),
        matches,
        "recorded for the restart"
    );
}

/// Puts back what the last run recorded (see the module doc); returns the sessions to
/// hold, and the recorder that knows what is stored. Blocking: run it on a blocking
/// thread before serving.
pub(crate) fn restore(shared: &Arc<Shared>) -> (Vec<SessionState>, Recorder) {
    let mut recorder = Recorder::default();
    if shared.config.matches.snapshot_interval.is_zero() {
        return (Vec::new(), recorder);
    }
    let rows = match shared.runtime.storage().load_restart() {
        Ok(rows) => rows,
        Err(e) => {
            warn!(error = %e, "could not read what the last run recorded; starting empty");
            return (Vec::new(), recorder);
        }
    };
    // Everything stored is known: what is not restored is deleted by the first round.
    recorder.written = rows
        .iter()
        .map(|(kind, id, bytes)| ((*kind, *id), hash_of(bytes)))
        .collect();
    let Decoded {
        sessions,
        parties,
        matches,
        mut states,
        damaged,
    } = decode_all(rows);
    if damaged > 0 {
        warn!(
            damaged,
            "some restart records could not be read; they are dropped"
        );
    }
    let mut held: HashMap<quicmatch_protocol::SessionId, SessionState> = sessions
        .into_iter()
        .map(|(id, record)| {
            let presence = record.presence(id);
            (id, SessionState::restored(shared, presence))
        })
        .collect();
    let mut restored_matches = 0;
    for (id, record) in matches {
        let Some(state) = states.remove(&id) else {
            continue;
        };
        let Some(handler) = shared.runtime.handler(&record.handler) else {
            warn!(match_id = %id, handler = %record.handler, "no handler of this name is registered; the match is not restored");
            continue;
        };
        let members: Vec<_> = record
            .members
            .iter()
            .filter_map(|m| {
                let s = held.get(&m.presence.session_id)?;
                Some((m.clone(), s.handle.clone()))
            })
            .collect();
        let restored = Restored {
            kept: record.kept(id, state),
            counters: record.counters,
            members,
        };
        match shared
            .runtime
            .engine()
            .restore(handler, restored, shared.runtime.clone())
        {
            Ok(()) => {
                restored_matches += 1;
                for m in &record.members {
                    if let Some(s) = held.get_mut(&m.presence.session_id) {
                        s.joined.insert(id);
                    }
                }
            }
            Err(e) => warn!(match_id = %id, error = %e, "the match could not be restored"),
        }
    }
    let mut restored_parties = 0;
    for (id, record) in parties {
        if let Some(party) = record.party(id, |s| held.contains_key(&s)) {
            shared.parties.restore(party);
            restored_parties += 1;
        }
    }
    let sessions: Vec<SessionState> = held.into_values().collect();
    if !sessions.is_empty() || restored_matches > 0 {
        info!(
            sessions = sessions.len(),
            matches = restored_matches,
            parties = restored_parties,
            "restored what the last run recorded; sessions are held for a resume"
        );
    }
    (sessions, recorder)
}

/// How long restored sessions are held: the reconnect grace, plus the idle timeout a
/// client may need to notice its server went away.
pub(crate) fn restore_grace(shared: &Shared) -> Duration {
    shared.config.session.reconnect_grace + shared.config.session.idle_timeout
}
