//! Who a connection is: credential rules, stable user ids, and signed session tokens.
//!
//! User ids are UUIDv5 over the kind and value of the credential, so the same device or
//! custom id is the same user on every server start without any storage. Tokens are
//! `v1.<payload>.<tag>` with a base64url JSON payload and an HMAC-SHA256 tag (ring), so a
//! client can read its claims and only the server can mint them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use quicmatch_protocol::{
    Credentials, SessionId, UserId, CUSTOM_ID_LEN, DEVICE_ID_LEN, MAX_USERNAME_LEN,
};
use ring::{hmac, rand::SecureRandom};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace of user ids derived from credentials.
const USER_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_4f0e_9c1d_4b7e_8f37_1e2d_9a0c_5b11);

/// Why authentication failed; the message is sent to the client in the close reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The server key does not match.
    #[error("invalid server key")]
    ServerKey,
    /// The device or custom id breaks the length or character rules.
    #[error("{0}")]
    BadId(String),
    /// The username breaks the rules.
    #[error("{0}")]
    BadUsername(String),
}

/// The signing key for session tokens (and, later, match tokens).
#[derive(Clone)]
pub struct Secret {
    key: hmac::Key,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from raw bytes (at least 32).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// 32 fresh random bytes from the system generator.
    pub fn random_bytes() -> Result<[u8; 32], ring::error::Unspecified> {
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut bytes)?;
        Ok(bytes)
    }

    /// The key for QUIC stateless resets, derived from this secret, so a restarted
    /// server's resets are ones its clients accept: they learn at once that their old
    /// connection is gone and resume, instead of waiting out their idle timeout.
    pub(crate) fn reset_key(&self) -> hmac::Key {
        hmac::Key::new(
            hmac::HMAC_SHA256,
            self.sign(b"quicmatch stateless reset key").as_ref(),
        )
    }

    /// The key connection ids are signed with, derived from this secret: a restarted
    /// server recognizes its predecessor's connection ids, which it must to answer
    /// their packets with stateless resets at all.
    pub(crate) fn connection_id_key(&self) -> u64 {
        let tag = self.sign(b"quicmatch connection id key");
        let mut key = [0u8; 8];
        key.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_le_bytes(key)
    }

    pub(crate) fn sign(&self, data: &[u8]) -> hmac::Tag {
        hmac::sign(&self.key, data)
    }

    pub(crate) fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.key, data, tag).is_ok()
    }

    /// Compares a presented value with the expected one in constant time (through their
    /// HMACs), so the comparison does not leak how many leading bytes matched.
    pub fn equal_constant_time(&self, presented: &[u8], expected: &[u8]) -> bool {
        self.verify(presented, self.sign(expected).as_ref())
    }
}

/// The user a set of credentials names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Stable user id.
    pub user_id: UserId,
    /// Display name: the one asked for, or one derived from the user id.
    pub username: String,
}

fn check_id(kind: &str, id: &str, len: std::ops::RangeInclusive<usize>) -> Result<(), AuthError> {
    if !len.contains(&id.len()) {
        return Err(AuthError::BadId(format!(
            "{kind} id must be {} to {} bytes",
            len.start(),
            len.end()
        )));
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AuthError::BadId(format!(
            "{kind} id must not contain whitespace or control characters"
        )));
    }
    Ok(())
}

/// Checks the credentials and derives the identity they name.
pub fn identify(credentials: &Credentials, username: Option<&str>) -> Result<Identity, AuthError> {
    let (kind, id) = match credentials {
        Credentials::Device { id } => {
            check_id("device", id, DEVICE_ID_LEN)?;
            ("device", id)
        }
        Credentials::Custom { id } => {
            check_id("custom", id, CUSTOM_ID_LEN)?;
            ("custom", id)
        }
        Credentials::SessionToken { .. } | Credentials::Resume { .. } => {
            return Err(AuthError::BadId(
                "a session token resumes a session; it does not name a user".into(),
            ))
        }
    };
    let mut name = Vec::with_capacity(kind.len() + 1 + id.len());
    name.extend_from_slice(kind.as_bytes());
    name.push(0);
    name.extend_from_slice(id.as_bytes());
    let user_id = UserId(Uuid::new_v5(&USER_NAMESPACE, &name));
    let username = match username {
        Some(u) => {
            if u.is_empty() || u.len() > MAX_USERNAME_LEN {
                return Err(AuthError::BadUsername(format!(
                    "username must be 1 to {MAX_USERNAME_LEN} bytes"
                )));
            }
            if u.chars().any(|c| c.is_control()) {
                return Err(AuthError::BadUsername(
                    "username must not contain control characters".into(),
                ));
            }
            u.to_owned()
        }
        None => derived_username(user_id),
    };
    Ok(Identity { user_id, username })
}

/// Ten lowercase letters derived from the user id, like Nakama's generated names but
/// stable for the same user.
fn derived_username(user_id: UserId) -> String {
    user_id
        .as_bytes()
        .iter()
        .take(10)
        .map(|b| char::from(b'a' + b % 26))
        .collect()
}

/// The claims inside a session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// User id.
    pub uid: UserId,
    /// Session id.
    pub sid: SessionId,
    /// Username.
    pub usn: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mints a token for the claims.
pub fn issue_token(secret: &Secret, claims: &SessionClaims) -> String {
    // Serializing a struct of ids, a string and integers cannot fail.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signed = format!("v1.{payload}");
    let tag = URL_SAFE_NO_PAD.encode(secret.sign(signed.as_bytes()).as_ref());
    format!("{signed}.{tag}")
}

/// Builds the claims for a new session.
pub fn claims_for(identity: &Identity, session_id: SessionId, lifetime: Duration) -> SessionClaims {
    let iat = unix_now();
    SessionClaims {
        uid: identity.user_id,
        sid: session_id,
        usn: identity.username.clone(),
        iat,
        exp: iat.saturating_add(lifetime.as_secs()),
    }
}

/// Checks a token's signature and expiry and returns its claims.
pub fn verify_token(secret: &Secret, token: &str, now: u64) -> Option<SessionClaims> {
    if token.len() > quicmatch_protocol::MAX_TOKEN_LEN {
        return None;
    }
    let (signed, tag) = token.rsplit_once('.')?;
    let payload = signed.strip_prefix("v1.")?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    if !secret.verify(signed.as_bytes(), &tag) {
        return None;
    }
    let claims: SessionClaims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    (claims.exp > now).then_some(claims)
}

/// Decodes lowercase or uppercase hex; `None` on any other character or an odd length.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Encodes bytes as lowercase hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str) -> Credentials {
        Credentials::Device { id: id.into() }
    }

    #[test]
    fn same_credentials_same_user() {
        let a = identify(&device("device-0001"), None).expect("ok");
        let b = identify(&device("device-0001"), Some("bob")).expect("ok");
        assert_eq!(a.user_id, b.user_id);
        assert_eq!(a.username.len(), 10);
        assert_eq!(b.username, "bob");
        let c = identify(
            &Credentials::Custom {
                id: "device-0001".into(),
            },
            None,
        )
        .expect("ok");
        assert_ne!(a.user_id, c.user_id, "kinds are separate namespaces");
    }

    #[test]
    fn nakama_id_rules() {
        assert!(identify(&device("short"), None).is_err());
        assert!(identify(&device(&"x".repeat(129)), None).is_err());
        assert!(identify(&device("has space 123"), None).is_err());
        assert!(identify(&device("ctrl\u{7}char12"), None).is_err());
        assert!(identify(
            &Credentials::Custom {
                id: "six666".into()
            },
            None
        )
        .is_ok());
        assert!(identify(&Credentials::Custom { id: "five5".into() }, None).is_err());
        assert!(identify(&device("device-0001"), Some("")).is_err());
    }

    #[test]
    fn tokens_verify_and_expire() {
        let secret = Secret::from_bytes(&[7; 32]);
        let id = identify(&device("device-0001"), None).expect("ok");
        let claims = claims_for(&id, SessionId::new_random(), Duration::from_secs(60));
        let token = issue_token(&secret, &claims);
        assert_eq!(
            verify_token(&secret, &token, claims.iat),
            Some(claims.clone())
        );
        assert_eq!(verify_token(&secret, &token, claims.exp), None, "expired");
        let other = Secret::from_bytes(&[8; 32]);
        assert_eq!(verify_token(&other, &token, claims.iat), None, "foreign");
        let mut forged = token.clone();
        forged.replace_range(5..6, if &token[5..6] == "A" { "B" } else { "A" });
        assert_eq!(verify_token(&secret, &forged, claims.iat), None, "tampered");
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(
            decode_hex(&encode_hex(&[0, 255, 16])),
            Some(vec![0, 255, 16])
        );
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
