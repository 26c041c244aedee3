//! The socket's time-bounded queue of received unreliable data
//! ([`ClientConfig::max_datagram_age`](crate::ClientConfig::max_datagram_age)): a task
//! reads each datagram the moment it arrives and stamps it, and
//! [`Socket::next_event`](crate::Socket::next_event) takes them oldest first, dropping
//! (and counting) any that waited longer than the bound. An application that stalls
//! (a loading hitch, a window in the background) thus resumes with the players' current
//! state instead of working through a backlog of old positions first.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::{watch, Notify};

/// Most datagrams held for the application; past it the oldest goes (counted), so a
/// socket nobody reads holds a bounded amount whatever the bound in time.
pub(crate) const INBOX_LIMIT: usize = 4096;

/// Received datagrams waiting for the application, with when each arrived.
pub(crate) struct Inbox {
    queue: Mutex<VecDeque<(Instant, Bytes)>>,
    ready: Notify,
    max_age: Duration,
    dropped: AtomicU64,
}

impl Inbox {
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            max_age,
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Bytes)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a datagram that arrived at `at`.
    pub(crate) fn push(&self, at: Instant, datagram: Bytes) {
        {
            let mut queue = self.lock();
            if queue.len() >= INBOX_LIMIT {
                queue.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue.push_back((at, datagram));
        }
        self.ready.notify_one();
    }

    /// The oldest datagram that has not waited past the bound at `now`; older ones are
    /// dropped and counted on the way.
    pub(crate) fn take(&self, now: Instant) -> Option<Bytes> {
        let mut queue = self.lock();
        while let Some((at, datagram)) = queue.pop_front() {
            if now.saturating_duration_since(at) <= self.max_age {
                return Some(datagram);
            }
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    /// Resolves once a datagram may have arrived since the last [`take`](Self::take)
    /// found none (a push before the wait is not missed).
    pub(crate) async fn readable(&self) {
        self.ready.notified().await;
    }

    /// Datagrams dropped so far: stale, or pushed out by [`INBOX_LIMIT`].
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Reads the datagrams of each connection the socket uses in turn (a resume brings a
/// new one) into `inbox`. Ends when the socket's driver is gone (its sender dropped).
pub(crate) async fn read(inbox: Arc<Inbox>, mut link: watch::Receiver<(u64, quinn::Connection)>) {
    'connections: loop {
        let conn = link.borrow_and_update().1.clone();
        loop {
            tokio::select! {
                datagram = conn.read_datagram() => match datagram {
                    Ok(d) => inbox.push(Instant::now(), d),
                    Err(_) => break,
                },
                changed = link.changed() => match changed {
                    Ok(()) => continue 'connections,
                    Err(_) => return,
                },
            }
        }
        // This connection is over: wait for the next one, or for the end.
        if link.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn stale_datagrams_are_dropped_and_counted_fresh_ones_kept_in_order() {
        let inbox = Inbox::new(50 * MS);
        let t0 = Instant::now();
        inbox.push(t0, Bytes::from_static(b"old-1"));
        inbox.push(t0 + 10 * MS, Bytes::from_static(b"old-2"));
        inbox.push(t0 + 70 * MS, Bytes::from_static(b"new-1"));
        inbox.push(t0 + 80 * MS, Bytes::from_static(b"new-2"));
        let now = t0 + 100 * MS;
        assert_eq!(inbox.take(now).as_deref(), Some(&b"new-1"[..]));
        assert_eq!(inbox.take(now).as_deref(), Some(&b"new-2"[..]));
        assert_eq!(inbox.take(now), None);
        assert_eq!(inbox.dropped(), 2);
    }

    #[test]
    fn a_datagram_exactly_at_the_bound_is_delivered() {
        let inbox = Inbox::new(50 * MS);
        let t0 = Instant::now();
        inbox.push(t0, Bytes::from_static(b"edge"));
        assert_eq!(inbox.take(t0 + 50 * MS).as_deref(), Some(&b"edge"[..]));
        assert_eq!(inbox.dropped(), 0);
    }

    #[test]
    fn an_unread_inbox_keeps_the_newest_within_its_limit() {
        let inbox = Inbox::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        for i in 0..INBOX_LIMIT + 10 {
            inbox.push(t0, Bytes::from(i.to_string()));
        }
        assert_eq!(inbox.dropped(), 10);
        assert_eq!(inbox.take(t0).as_deref(), Some(b"10".as_slice()));
    }

    #[tokio::test]
    async fn a_push_before_the_wait_is_not_missed() {
        let inbox = Inbox::new(50 * MS);
        assert_eq!(inbox.take(Instant::now()), None);
        inbox.push(Instant::now(), Bytes::from_static(b"x"));
        tokio::time::timeout(Duration::from_secs(5), inbox.readable())
            .await
            .expect("woken by the earlier push");
    }
}
