//! Every session by id: connected ones, held ones waiting for a resume, and the
//! hand-over of a session from one connection to another.
//!
//! A session moves between connections only through here: its old task retires it
//! ([`SessionRegistry::retire`]) and either hands it to a resume that is waiting for it,
//! holds it for the reconnect grace, or ends it; a new connection claims it
//! ([`SessionRegistry::claim`]), taking a held session at once or asking the connected
//! one to step aside.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use quicmatch_protocol::{SessionId, UserId};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{leave_everything, SessionState};
use crate::{outbound::SessionHandle, Shared};

/// How long a resume waits for the connected session it takes over to step aside.
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);

/// Why a session task was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// A resume with the session's token takes the session over (it is handed on).
    Resumed,
    /// `single_socket`: a newer connection of the same user replaces it (it ends).
    SingleSocket,
}

/// The stop signal of one connected session task.
#[derive(Default)]
pub(crate) struct Kicker {
    pub(crate) token: CancellationToken,
    why: Mutex<Option<Kick>>,
}

impl Kicker {
    fn kick(&self, why: Kick) {
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.token.cancel();
    }

    /// Why the task was kicked, once `token` fired.
    pub(crate) fn why(&self) -> Option<Kick> {
        *self.why.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every session by id (connected, or held during its reconnect grace), so the
/// matchmaker and the party table can reach sessions they did not get a handle from.
#[derive(Clone, Default)]
pub struct SessionRegistry {
    /// One lock over every map, held only for map operations, never across an
    /// `.await`, and never while calling into a table.
    inner: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    /// Sessions others can push to. A held session stays here, so what is pushed to it
    /// waits in its queue for the client to come back.
    live: HashMap<SessionId, Live>,
    /// Sessions whose connection dropped, waiting for a resume.
    held: HashMap<SessionId, Held>,
    /// Resumes waiting for a connected session to step aside.
    waiters: HashMap<SessionId, oneshot::Sender<Held>>,
    /// Members of this node's parties homed on other nodes of the cluster: remote
    /// handles, reached by the party table and the matchmaker, never counted or listed
    /// as this node's sessions.
    guests: HashMap<SessionId, (SessionHandle, String)>,
    next_generation: u64,
}

struct Live {
    handle: SessionHandle,
    kicker: Arc<Kicker>,
}

/// A session between connections: held for its grace, or on its way to a resume.
pub(crate) struct Held {
    pub(crate) state: SessionState,
    /// Tells a resumed-then-dropped-again session from the one an expiry timer was
    /// started for.
    generation: u64,
}

impl Held {
    /// Ends a held session for good: the usual leaves and cancellations happen.
    pub(crate) fn expire(self, shared: &Shared) {
        info!(session = %self.state.handle.presence.session_id, "session ended while held");
        leave_everything(shared, &self.state);
    }
}

/// What a resume found.
pub(crate) enum Claim {
    /// The session, taken.
    Taken(Held),
    /// The session is connected; it was asked to step aside and arrives here.
    Wait(oneshot::Receiver<Held>),
    /// No such session for this user.
    Gone,
}

/// How a session task's connection ended, for [`SessionRegistry::retire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The client may come back: hold the session for the grace.
    Dropped,
    /// Taken over by a resume: hand it on.
    Replaced,
    /// Over for good: leave everything now.
    Final,
}

impl SessionRegistry {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connected session; a resumed one replaces its old entry.
    pub(crate) fn insert(&self, handle: SessionHandle, kicker: Arc<Kicker>) {
        self.lock()
            .live
            .insert(handle.presence.session_id, Live { handle, kicker });
    }

    pub(crate) fn remove(&self, id: SessionId) {
        self.lock().live.remove(&id);
    }

    /// Claims `id` for a resume by `user`: a held session at once; a connected one is
    /// asked to step aside and waited for (bounded).
    pub(crate) async fn claim(&self, id: SessionId, user: UserId) -> Option<Held> {
        let claim = {
            let mut reg = self.lock();
            if reg
                .held
                .get(&id)
                .is_some_and(|h| h.state.handle.presence.user_id == user)
            {
                reg.held.remove(&id).map_or(Claim::Gone, Claim::Taken)
            } else if let Some(live) = reg
                .live
                .get(&id)
                .filter(|l| l.handle.presence.user_id == user)
            {
                let kicker = live.kicker.clone();
                let (tx, rx) = oneshot::channel();
                // A newer resume wins over an older one still waiting.
                reg.waiters.insert(id, tx);
                kicker.kick(Kick::Resumed);
                Claim::Wait(rx)
            } else {
                Claim::Gone
            }
        };
        match claim {
            Claim::Taken(held) => Some(held),
            Claim::Wait(rx) => tokio::time::timeout(TAKEOVER_WAIT, rx).await.ok()?.ok(),
            Claim::Gone => None,
        }
    }

    /// Tells every other connected session of `user` to end (`single_socket`), and
    /// takes that user's held sessions to be ended by the caller.
    pub(crate) fn replace_user(&self, user: UserId, keep: SessionId) -> Vec<Held> {
        let mut reg = self.lock();
        for live in reg.live.values() {
            let p = &live.handle.presence;
            if p.user_id == user && p.session_id != keep {
                live.kicker.kick(Kick::SingleSocket);
            }
        }
        let ids: Vec<SessionId> = reg
            .held
            .iter()
            .filter(|(_, h)| h.state.handle.presence.user_id == user)
            .map(|(id, _)| *id)
            .collect();
        ids.iter().filter_map(|id| reg.held.remove(id)).collect()
    }

    /// A session task is done with its connection: the session goes to a waiting
    /// resume, or is held for `grace`, or ends.
    pub(crate) fn retire(
        &self,
        shared: &Arc<Shared>,
        state: SessionState,
        ending: Ending,
        grace: Duration,
    ) {
        let id = state.handle.presence.session_id;
        state.handle.outbound.set_connected(false);
        let mut held = Held {
            state,
            generation: 0,
        };
        let to_end = {
            let mut reg = self.lock();
            if let Some(waiter) = reg.waiters.remove(&id) {
                match waiter.send(held) {
                    Ok(()) => return,
                    // The resume gave up waiting: carry on as if it never came.
                    Err(back) => held = back,
                }
            }
            if ending != Ending::Final && !grace.is_zero() {
                reg.next_generation += 1;
                held.generation = reg.next_generation;
                let generation = held.generation;
                reg.held.insert(id, held);
                let shared = shared.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    if let Some(held) = shared.sessions.take_expired(id, generation) {
                        held.expire(&shared);
                    }
                });
                None
            } else {
                Some(held)
            }
        };
        if let Some(held) = to_end {
            leave_everything(shared, &held.state);
        }
    }

    fn take_expired(&self, id: SessionId, generation: u64) -> Option<Held> {
        let mut reg = self.lock();
        if reg.held.get(&id)?.generation == generation {
            reg.held.remove(&id)
        } else {
            None
        }
    }

    /// Holds a session restored after a restart for `grace`, as if its connection had
    /// just dropped: a resume with its token takes it, expiry ends it as usual.
    pub(crate) fn hold_restored(&self, shared: &Arc<Shared>, state: SessionState, grace: Duration) {
        self.insert(state.handle.clone(), Arc::new(Kicker::default()));
        self.retire(shared, state, Ending::Dropped, grace);
    }

    /// Every session, connected or held (for restart records).
    pub(crate) fn presences(&self) -> Vec<Arc<quicmatch_protocol::Presence>> {
        self.lock()
            .live
            .values()
            .map(|l| l.handle.presence.clone())
            .collect()
    }

    /// Marks, in every connected session's queue, what was queued before the shutdown:
    /// that much is written before the close (`Outbound::take_before_shutdown`), not
    /// what other sessions' departures queue after it.
    pub(crate) fn mark_shutdown(&self) {
        for live in self.lock().live.values() {
            live.handle.outbound.mark_shutdown();
        }
    }

    /// Takes every held session (at shutdown).
    pub(crate) fn take_all_held(&self) -> Vec<Held> {
        self.lock().held.drain().map(|(_, h)| h).collect()
    }

    /// The session, if it is connected or held.
    pub fn get(&self, id: SessionId) -> Option<SessionHandle> {
        self.lock().live.get(&id).map(|l| l.handle.clone())
    }

    /// The session, if it is connected or held here, or a member of a party here homed
    /// on another node (a remote handle).
    pub(crate) fn reach(&self, id: SessionId) -> Option<SessionHandle> {
        let reg = self.lock();
        reg.live
            .get(&id)
            .map(|l| l.handle.clone())
            .or_else(|| reg.guests.get(&id).map(|(h, _)| h.clone()))
    }

    /// Registers a session homed on node `home` that parties here reach through
    /// `handle` (a remote one); a session of this node, or of another home, is never
    /// replaced. Whether it is (now) registered.
    pub(crate) fn add_guest(&self, handle: SessionHandle, home: &str) -> bool {
        let mut reg = self.lock();
        let id = handle.presence.session_id;
        if reg.live.contains_key(&id) {
            return false;
        }
        let (_, at) = reg
            .guests
            .entry(id)
            .or_insert_with(|| (handle, home.to_owned()));
        at == home
    }

    /// The sessions of other nodes registered here: those homed on `home`, or all.
    pub(crate) fn guests(&self, home: Option<&str>) -> Vec<SessionId> {
        self.lock()
            .guests
            .iter()
            .filter(|(_, (_, at))| home.is_none_or(|h| h == at))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forgets a session of another node.
    pub(crate) fn remove_guest(&self, id: SessionId) {
        self.lock().guests.remove(&id);
    }

    /// Whether `id` is a session of another node registered here.
    pub(crate) fn is_guest(&self, id: SessionId) -> bool {
        self.lock().guests.contains_key(&id)
    }

    /// Whether `id` is a session of node `home` registered here.
    pub(crate) fn is_guest_of(&self, id: SessionId, home: &str) -> bool {
        self.lock()
            .guests
            .get(&id)
            .is_some_and(|(_, at)| at == home)
    }

    /// Sessions connected or held.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.lock().live.is_empty()
    }

    /// Sessions held for a reconnect.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }
}
