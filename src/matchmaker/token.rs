//! Signed match tokens: what a matched group uses to meet in a new match.
//!
//! A token is `m1.<payload>.<tag>`: a base64url payload (version, match id, expiry,
//! and the user ids it admits) and an HMAC-SHA256 tag over everything before the last
//! dot, made with the server's secret (ring). It names the match, expires (30 s by
//! default), and admits only the users it was issued to.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use quicmatch_protocol::{MatchId, UserId, MAX_TOKEN_LEN};
use uuid::Uuid;

use crate::auth::Secret;

const PREFIX: &str = "m1.";
const VERSION: u8 = 1;

/// What a match token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchToken {
    /// The match it names.
    pub match_id: MatchId,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The users it admits.
    pub users: Vec<UserId>,
}

/// Why a token was refused; clients see one BAD_INPUT message for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token at all.
    #[error("malformed match token")]
    Malformed,
    /// Not signed by this server.
    #[error("match token signature is invalid")]
    Signature,
    /// Past its expiry.
    #[error("match token expired")]
    Expired,
    /// The caller is not one of the users it was issued to.
    #[error("match token was issued to other users")]
    Foreign,
}

impl MatchToken {
    /// Signs the token.
    pub fn issue(&self, secret: &Secret) -> String {
        let mut payload = Vec::with_capacity(1 + 16 + 8 + 2 + 16 * self.users.len());
        payload.push(VERSION);
        payload.extend_from_slice(self.match_id.as_bytes());
        payload.extend_from_slice(&self.expires_at.to_le_bytes());
        let n = u16::try_from(self.users.len()).unwrap_or(u16::MAX);
        payload.extend_from_slice(&n.to_le_bytes());
        for u in self.users.iter().take(usize::from(n)) {
            payload.extend_from_slice(u.as_bytes());
        }
        let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&payload));
        let tag = URL_SAFE_NO_PAD.encode(secret.sign(signed.as_bytes()).as_ref());
        format!("{signed}.{tag}")
    }

    /// Checks signature and expiry, and that `user` may use it.
    pub fn verify(
        secret: &Secret,
        token: &str,
        now: u64,
        user: UserId,
    ) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (signed, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let payload = signed.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        if !secret.verify(signed.as_bytes(), &tag) {
            return Err(TokenError::Signature);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let token = Self::decode(&bytes).ok_or(TokenError::Malformed)?;
        if token.expires_at <= now {
            return Err(TokenError::Expired);
        }
        if !token.users.contains(&user) {
            return Err(TokenError::Foreign);
        }
        Ok(token)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION {
            return None;
        }
        let match_id = MatchId(Uuid::from_bytes(rest.get(..16)?.try_into().ok()?));
        let expires_at = u64::from_le_bytes(rest.get(16..24)?.try_into().ok()?);
        let n = usize::from(u16::from_le_bytes(rest.get(24..26)?.try_into().ok()?));
        let users_bytes = rest.get(26..)?;
        if users_bytes.len() != n * 16 {
            return None;
        }
        let users = users_bytes
            .chunks_exact(16)
            .filter_map(|c| c.try_into().ok().map(|b| UserId(Uuid::from_bytes(b))))
            .collect();
        Some(Self {
            match_id,
            expires_at,
            users,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(exp: u64) -> MatchToken {
        MatchToken {
            match_id: MatchId::new_random(),
            expires_at: exp,
            users: vec![UserId::new_random(), UserId::new_random()],
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let secret = Secret::from_bytes(&[3; 32]);
        let t = token(100);
        let s = t.issue(&secret);
        assert_eq!(
            MatchToken::verify(&secret, &s, 99, t.users[1]),
            Ok(t.clone())
        );
        assert_eq!(
            MatchToken::verify(&secret, &s, 100, t.users[0]),
            Err(TokenError::Expired)
        );
        assert_eq!(
            MatchToken::verify(&secret, &s, 99, UserId::new_random()),
            Err(TokenError::Foreign)
        );
        let other = Secret::from_bytes(&[4; 32]);
        assert_eq!(
            MatchToken::verify(&other, &s, 99, t.users[0]),
            Err(TokenError::Signature)
        );
        // Swap in another payload under the same tag: the signature no longer fits.
        let forged_payload = token(1_000_000).issue(&other);
        let (_, tag) = s.rsplit_once('.').expect("tag");
        let (signed, _) = forged_payload.rsplit_once('.').expect("signed");
        let forged = format!("{signed}.{tag}");
        assert_eq!(
            MatchToken::verify(&secret, &forged, 99, t.users[0]),
            Err(TokenError::Signature)
        );
        for junk in [
            "",
            "m1.",
            "v1.abc.def",
            "m1.!!.??",
            &"m".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(
                MatchToken::verify(&secret, junk, 0, t.users[0]).is_err(),
                "{junk}"
            );
        }
        // A session token is not a match token.
        let session = crate::auth::issue_token(
            &secret,
            &crate::auth::SessionClaims {
                uid: t.users[0],
                sid: quicmatch_protocol::SessionId::new_random(),
                usn: "x".into(),
                iat: 0,
                exp: 1000,
            },
        );
        assert!(MatchToken::verify(&secret, &session, 1, t.users[0]).is_err());
    }
}
