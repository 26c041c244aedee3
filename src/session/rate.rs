//! Per-connection rate limits: token buckets for control requests and for datagrams.
//!
//! Within its budget a session is never slowed. Beyond it, each excess request or
//! datagram is refused, and the sender is told once per second with a `RATE_LIMITED`
//! error; a sender that stays over budget for `strikes` seconds in a row is closed with
//! the `RATE_LIMITED` close code. Pure logic with an explicit clock, so it is tested
//! without sockets.

use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What to do with one request or datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within budget.
    Allow,
    /// Over budget: drop it; tell the sender if `tell` (once per second).
    Reject {
        /// Whether to send a `RATE_LIMITED` error for this one.
        tell: bool,
    },
    /// Over budget for too long: close the connection.
    Close,
}

/// The limits of one session.
#[derive(Debug, Clone)]
pub(crate) struct Limiter {
    requests: TokenBucket,
    datagrams: TokenBucket,
    window_start: Instant,
    excess_in_window: bool,
    told_in_window: bool,
    strikes: u32,
    max_strikes: u32,
}

/// Which budget an item draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Datagram,
}

const WINDOW: Duration = Duration::from_secs(1);

impl Limiter {
    pub(crate) fn new(config: &crate::config::SessionConfig, now: Instant) -> Self {
        Self {
            requests: TokenBucket::new(
                config.requests_per_second,
                f64::from(config.request_burst),
                now,
            ),
            datagrams: TokenBucket::new(
                config.datagrams_per_second,
                f64::from(config.datagram_burst),
                now,
            ),
            window_start: now,
            excess_in_window: false,
            told_in_window: false,
            strikes: 0,
            max_strikes: config.rate_limit_strikes,
        }
    }

    pub(crate) fn check(&mut self, kind: Kind, now: Instant) -> Verdict {
        if now.saturating_duration_since(self.window_start) >= WINDOW {
            let windows = now.saturating_duration_since(self.window_start).as_secs();
            // A quiet gap of more than one window forgives earlier excess.
            self.strikes = if self.excess_in_window && windows <= 1 {
                self.strikes + 1
            } else {
                0
            };
            self.window_start = now;
            self.excess_in_window = false;
            self.told_in_window = false;
        }
        let bucket = match kind {
            Kind::Request => &mut self.requests,
            Kind::Datagram => &mut self.datagrams,
        };
        if bucket.take(now) {
            return Verdict::Allow;
        }
        self.excess_in_window = true;
        if self.strikes >= self.max_strikes {
            return Verdict::Close;
        }
        let tell = !self.told_in_window;
        self.told_in_window = true;
        Verdict::Reject { tell }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: u32, strikes: u32, now: Instant) -> Limiter {
        let config = crate::config::SessionConfig {
            requests_per_second: rate,
            request_burst: burst,
            datagrams_per_second: rate,
            datagram_burst: burst,
            rate_limit_strikes: strikes,
            ..Default::default()
        };
        Limiter::new(&config, now)
    }

    #[test]
    fn bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2.0, t0);
        assert!(b.take(t0));
        assert!(b.take(t0));
        assert!(!b.take(t0), "burst spent");
        assert!(!b.take(t0 + Duration::from_millis(50)));
        assert!(
            b.take(t0 + Duration::from_millis(160)),
            "one token per 100 ms"
        );
        assert!(b.take(t0 + Duration::from_secs(10)));
        assert!(b.take(t0 + Duration::from_secs(10)));
        assert!(
            !b.take(t0 + Duration::from_secs(10)),
            "never more than the burst"
        );
    }

    #[test]
    fn excess_is_refused_told_once_per_second_then_closed() {
        let t0 = Instant::now();
        let mut l = limiter(10.0, 10, 2, t0);
        for _ in 0..10 {
            assert_eq!(l.check(Kind::Request, t0), Verdict::Allow);
        }
        assert_eq!(l.check(Kind::Request, t0), Verdict::Reject { tell: true });
        assert_eq!(l.check(Kind::Request, t0), Verdict::Reject { tell: false });
        // Datagrams have their own budget.
        assert_eq!(l.check(Kind::Datagram, t0), Verdict::Allow);
        // Keep flooding: strikes accumulate window after window, then close.
        let mut t = t0;
        let mut closed = false;
        for _ in 0..5 {
            t += WINDOW;
            for _ in 0..100 {
                if l.check(Kind::Request, t) == Verdict::Close {
                    closed = true;
                }
            }
        }
        assert!(closed);
    }

    #[test]
    fn a_burst_then_calm_is_forgiven() {
        let t0 = Instant::now();
        let mut l = limiter(10.0, 10, 2, t0);
        for _ in 0..50 {
            l.check(Kind::Request, t0);
        }
        // Within budget afterwards: strikes reset.
        for s in 1..10 {
            let t = t0 + Duration::from_secs(s);
            assert_eq!(l.check(Kind::Request, t), Verdict::Allow);
        }
        assert_eq!(l.strikes, 0);
    }
}
