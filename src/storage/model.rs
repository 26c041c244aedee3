//! The rules of storage objects, without I/O: who may read or change an object, what a
//! valid value, name and version are, the listing cursor, and the per-session write
//! budget. The writer and the readers apply them; tests call them directly.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::Engine as _;
use quicmatch_protocol::{
    storage::{check_names, check_version},
    ReadPermission, SessionId, UserId, WritePermission, MAX_STORAGE_CURSOR_LEN,
    MAX_STORAGE_VALUE_LEN,
};

use super::{tables::owner_key, StorageError};

/// Who asks: server code (full access) or a client's user (its permissions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Hooks, RPC functions, match handlers, operators' tools.
    Server,
    /// A client, as this user.
    User(UserId),
}

impl Caller {
    /// Whether this caller may read an object of `owner` with permission `read`.
    pub(crate) fn may_read(self, owner: u128, read: ReadPermission) -> bool {
        match self {
            Self::Server => true,
            Self::User(user) => {
                read == ReadPermission::PublicRead
                    || (read == ReadPermission::OwnerRead && owner == owner_key(Some(user)))
            }
        }
    }

    /// Whether this caller may change or delete an object of `owner` with permission
    /// `write`.
    pub(crate) fn may_write(self, owner: u128, write: WritePermission) -> bool {
        match self {
            Self::Server => true,
            Self::User(user) => {
                write == WritePermission::OwnerWrite && owner == owner_key(Some(user))
            }
        }
    }
}

/// Checks a collection and key.
pub(crate) fn check_name(collection: &str, key: &str) -> Result<(), StorageError> {
    check_names(collection, key).map_err(StorageError::BadInput)
}

/// Checks a conditional version.
pub(crate) fn check_condition(version: Option<&str>) -> Result<(), StorageError> {
    check_version(version).map_err(StorageError::BadInput)
}

/// Checks a value: at most [`MAX_STORAGE_VALUE_LEN`] bytes (looked at first, so an
/// oversized value is never parsed), and one JSON object. Parsing builds nothing and
/// stops at serde_json's nesting limit, so any input costs at most its own length.
pub(crate) fn check_value(value: &str) -> Result<(), StorageError> {
    if value.len() > MAX_STORAGE_VALUE_LEN {
        return Err(StorageError::ValueTooLarge(format!(
            "a value of {} bytes exceeds {MAX_STORAGE_VALUE_LEN}",
            value.len()
        )));
    }
    if !value.trim_start().starts_with('{') {
        return Err(StorageError::InvalidJson(
            "the value must be a JSON object".into(),
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(value)
        .map(|_| ())
        .map_err(|e| StorageError::InvalidJson(format!("the value is not valid JSON: {e}")))
}

/// Cursor layout version, the first byte of every decoded cursor.
const CURSOR_FORMAT: u8 = 1;

/// Where a listing stopped: the last (owner, key) it looked at; the next page starts
/// after it. Opaque to clients (URL-safe base64).
pub(crate) fn encode_cursor(owner: u128, key: &str) -> String {
    let mut bytes = Vec::with_capacity(17 + key.len());
    bytes.push(CURSOR_FORMAT);
    bytes.extend_from_slice(&owner.to_be_bytes());
    bytes.extend_from_slice(key.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The position a cursor names.
pub(crate) fn decode_cursor(cursor: &str) -> Result<(u128, String), StorageError> {
    let bad = || StorageError::BadInput("the cursor is not one this server gave".into());
    if cursor.len() > MAX_STORAGE_CURSOR_LEN {
        return Err(bad());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let (head, key) = (bytes.get(..17).ok_or_else(bad)?, &bytes[17..]);
    if head[0] != CURSOR_FORMAT {
        return Err(bad());
    }
    let owner: [u8; 16] = head[1..].try_into().map_err(|_| bad())?;
    let key = String::from_utf8(key.to_vec()).map_err(|_| bad())?;
    Ok((u128::from_be_bytes(owner), key))
}

/// A token bucket per session for storage writes and deletes (`storage.writes_per_second`
/// and `storage.write_burst`). Sessions that have not written for long enough to be
/// back at a full bucket are forgotten, so the table holds only recent writers.
pub(crate) struct WriteLimits {
    rate: f64,
    burst: f64,
    /// One lock over every session's bucket; held for a lookup, never across an await.
    state: Mutex<LimitState>,
}

struct LimitState {
    buckets: HashMap<SessionId, (f64, Instant)>,
    /// The table is swept of full buckets when it reaches this size.
    sweep_at: usize,
}

/// Fewest entries before a sweep.
const MIN_SWEEP: usize = 1024;

impl WriteLimits {
    pub(crate) fn new(config: &crate::config::StorageConfig) -> Self {
        Self {
            rate: config.writes_per_second,
            burst: f64::from(config.write_burst),
            state: Mutex::new(LimitState {
                buckets: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// Takes one write from `session`'s budget, if there is one.
    pub(crate) fn admit(&self, session: SessionId, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (rate, burst) = (self.rate, self.burst);
        let refill = |(tokens, last): (f64, Instant)| {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            (tokens + elapsed * rate).min(burst)
        };
        if state.buckets.len() >= state.sweep_at {
            state.buckets.retain(|_, b| refill(*b) < burst);
            state.sweep_at = (state.buckets.len() * 2).max(MIN_SWEEP);
        }
        let tokens = state.buckets.get(&session).map_or(burst, |b| refill(*b));
        let admitted = tokens >= 1.0;
        let left = if admitted { tokens - 1.0 } else { tokens };
        state.buckets.insert(session, (left, now));
        admitted
    }

    /// Sessions with a bucket now (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state.lock().map(|s| s.buckets.len()).unwrap_or(0)
    }
}

/// How long a full bucket takes to refill from empty (for tests).
#[cfg(test)]
fn refill_time(rate: f64, burst: f64) -> Duration {
    Duration::from_secs_f64(burst / rate)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long a store that another process holds is left alone before it is tried again.
pub(crate) const BUSY_RETRY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u128) -> UserId {
        UserId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn permissions_follow_nakama() {
        use ReadPermission::*;
        use WritePermission::*;
        let (me, other) = (user(1), user(2));
        let mine = owner_key(Some(me));
        let system = owner_key(None);
        for read in [NoRead, OwnerRead, PublicRead] {
            assert!(Caller::Server.may_read(mine, read));
            assert!(Caller::Server.may_read(system, read));
            assert_eq!(Caller::User(me).may_read(mine, read), read != NoRead);
            assert_eq!(Caller::User(other).may_read(mine, read), read == PublicRead);
            assert_eq!(Caller::User(me).may_read(system, read), read == PublicRead);
        }
        for write in [NoWrite, OwnerWrite] {
            assert!(Caller::Server.may_write(mine, write));
            assert_eq!(Caller::User(me).may_write(mine, write), write == OwnerWrite);
            assert!(!Caller::User(other).may_write(mine, write));
            assert!(!Caller::User(me).may_write(system, write));
        }
    }

    #[test]
    fn values_must_be_json_objects_within_the_limit() {
        assert!(check_value(r#"{"a":[1,2,{"b":null}]}"#).is_ok());
        assert!(check_value("  {}  ").is_ok());
        for bad in ["", "[]", "1", "\"x\"", "{", "{} {}", "{\"a\":}", "null"] {
            let e = check_value(bad).expect_err(bad);
            assert!(matches!(e, StorageError::InvalidJson(_)), "{bad}: {e:?}");
        }
        // As deep as the size limit allows: checked without recursion, so no stack
        // runs out.
        let depth = (MAX_STORAGE_VALUE_LEN - 8) / 2;
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        assert!(check_value(&deep).is_ok());
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_STORAGE_VALUE_LEN));
        assert!(matches!(
            check_value(&big),
            Err(StorageError::ValueTooLarge(_))
        ));
        let fits = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_STORAGE_VALUE_LEN - 8));
        assert_eq!(fits.len(), MAX_STORAGE_VALUE_LEN);
        assert!(check_value(&fits).is_ok());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_bad_input() {
        let key = "k".repeat(quicmatch_protocol::MAX_STORAGE_KEY_LEN);
        let cursor = encode_cursor(u128::MAX, &key);
        assert!(cursor.len() <= MAX_STORAGE_CURSOR_LEN);
        assert_eq!(decode_cursor(&cursor).expect("decode"), (u128::MAX, key));
        for bad in ["", "!!!!", "AQ", &"A".repeat(MAX_STORAGE_CURSOR_LEN + 1)] {
            assert!(matches!(decode_cursor(bad), Err(StorageError::BadInput(_))));
        }
        let wrong_format = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([2u8; 20]);
        assert!(decode_cursor(&wrong_format).is_err());
    }

    #[test]
    fn write_budget_refills_and_forgets_idle_sessions() {
        let config = crate::config::StorageConfig {
            writes_per_second: 10.0,
            write_burst: 3,
            ..Default::default()
        };
        let limits = WriteLimits::new(&config);
        let t0 = Instant::now();
        let s = SessionId(uuid::Uuid::from_u128(7));
        assert!((0..3).all(|_| limits.admit(s, t0)));
        assert!(!limits.admit(s, t0), "burst spent");
        assert!(
            limits.admit(s, t0 + Duration::from_millis(110)),
            "one per 100 ms"
        );
        // Many sessions, each writing once: full again after the refill time, so the
        // next sweep (when the table has doubled) forgets them.
        let later = t0 + Duration::from_secs(1);
        for n in 0..(MIN_SWEEP as u128) {
            assert!(limits.admit(SessionId(uuid::Uuid::from_u128(100 + n)), later));
        }
        let after = later + refill_time(10.0, 3.0) + Duration::from_millis(1);
        for n in 0..3000 {
            assert!(limits.admit(SessionId(uuid::Uuid::from_u128(1 << 64 | n)), after));
        }
        assert_eq!(limits.tracked(), 3000, "only the recent writers are left");
    }
}
