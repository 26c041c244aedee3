//! Newtype identifiers, so a match id can never be passed where a session id is expected.
//!
//! Every id wraps a [`uuid::Uuid`], prints as the usual hyphenated form and parses from it
//! (or from the simple 32-hex-digit form). On the wire an id is 17 bytes: the length 16,
//! then the 16 bytes of the UUID in network order.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The error for a string that is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct ParseIdError {
    kind: &'static str,
    reason: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random (version 4) id.
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            /// The id as raw bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s.trim()).map(Self).map_err(|e| ParseIdError {
                    kind: $kind,
                    reason: e.to_string(),
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

id_type!(
    /// A user: stable for the same device or custom id, across connections and restarts.
    UserId,
    "user id"
);
id_type!(
    /// One authenticated connection of a user; new for every connection.
    SessionId,
    "session id"
);
id_type!(
    /// A match, assigned by the server.
    MatchId,
    "match id"
);
id_type!(
    /// A party, assigned by the server.
    PartyId,
    "party id"
);
id_type!(
    /// A matchmaker ticket, assigned by the server.
    TicketId,
    "ticket id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = MatchId::new_random();
        let parsed: MatchId = id.to_string().parse().expect("parse");
        assert_eq!(parsed, id);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in ["", "abc", "c0ffee00-0000-0000-0000-00000000000g", "123."] {
            let err = bad.parse::<MatchId>().expect_err(bad);
            assert!(err.to_string().starts_with("invalid match id"), "{err}");
        }
    }
}
