//! Reading what C passes in and keeping Rust failures on this side: C strings, byte
//! buffers, ids and property JSON checked into Rust values, error messages copied into
//! caller buffers, and the panic guard every entry point runs inside.

use std::{
    collections::BTreeMap,
    ffi::{c_char, CStr},
    panic::{catch_unwind, AssertUnwindSafe},
    str::FromStr,
};

use serde::Deserialize;

use crate::types::{QM_ERR_BAD_INPUT, QM_ERR_NULL};

/// Runs `body`, turning a panic into `fallback` so no unwind crosses into C. (The
/// default panic hook still prints the panic to stderr, which is where a C programmer
/// will look.)
pub(crate) fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// Why an argument was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArgError {
    /// `QM_ERR_NULL` or `QM_ERR_BAD_INPUT`.
    pub(crate) code: i32,
    /// Says which argument and what is wrong with it.
    pub(crate) message: String,
}

impl ArgError {
    pub(crate) fn null(what: &str) -> Self {
        Self {
            code: QM_ERR_NULL,
            message: format!("{what} is NULL"),
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self {
            code: QM_ERR_BAD_INPUT,
            message: message.into(),
        }
    }
}

/// A string argument that may be NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays readable for `'a`.
pub(crate) unsafe fn opt_str<'a>(
    p: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, ArgError> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, and the caller promises a readable NUL-terminated string.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map(Some)
        .map_err(|_| ArgError::bad(format!("{what} is not valid UTF-8")))
}

/// A string argument that must not be NULL.
///
/// # Safety
/// As for [`opt_str`].
pub(crate) unsafe fn req_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, ArgError> {
    // SAFETY: the caller's promise is passed on unchanged.
    unsafe { opt_str(p, what) }?.ok_or_else(|| ArgError::null(what))
}

/// An id argument (match, party, ticket, session), parsed.
///
/// # Safety
/// As for [`opt_str`].
pub(crate) unsafe fn req_id<T: FromStr>(p: *const c_char, what: &str) -> Result<T, ArgError> {
    // SAFETY: the caller's promise is passed on unchanged.
    let s = unsafe { req_str(p, what) }?;
    s.parse()
        .map_err(|_| ArgError::bad(format!("{what} is not an id: {s:?}")))
}

/// A byte buffer argument, copied. NULL is allowed only with a zero length.
///
/// # Safety
/// When `len` is not zero, `data` points to `len` readable bytes.
pub(crate) unsafe fn bytes(data: *const u8, len: usize) -> Result<bytes::Bytes, ArgError> {
    if len == 0 {
        return Ok(bytes::Bytes::new());
    }
    if data.is_null() {
        return Err(ArgError::null("data"));
    }
    if isize::try_from(len).is_err() {
        return Err(ArgError::bad("len is too large"));
    }
    // SAFETY: non-NULL, `len` fits an allocation, and the caller promises `len` bytes.
    let slice = unsafe { std::slice::from_raw_parts(data, len) };
    Ok(bytes::Bytes::copy_from_slice(slice))
}

/// Copies `message` into a caller's buffer of `len` bytes, cut at a character boundary
/// to fit, always NUL-terminated. Nothing is written when `buf` is NULL or `len` is 0.
///
/// # Safety
/// When `buf` is not NULL, it points to `len` writable bytes.
pub(crate) unsafe fn write_message(buf: *mut c_char, len: usize, message: &str) {
    if buf.is_null() || len == 0 {
        return;
    }
    let mut n = message.len().min(len - 1);
    while !message.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `buf` holds `len` bytes and `n + 1 <= len`; the source is a Rust string
    // that cannot overlap a caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
}

/// Matchmaker properties as `qm_matchmaker_add` takes them:
/// `{"string":{"region":"eu"},"numeric":{"rank":7}}`, either part optional.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Properties {
    #[serde(default)]
    pub(crate) string: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) numeric: BTreeMap<String, f64>,
}

impl Properties {
    /// Parses the JSON; `None` (a NULL argument) is no properties.
    pub(crate) fn parse(json: Option<&str>) -> Result<Self, ArgError> {
        match json {
            None => Ok(Self::default()),
            Some(j) => serde_json::from_str(j).map_err(|e| {
                ArgError::bad(format!(
                    "props_json must look like {{\"string\":{{..}},\"numeric\":{{..}}}}: {e}"
                ))
            }),
        }
    }
}

/// Matchmaker ticket options as `qm_matchmaker_add_with` takes them, every part
/// optional: `{"composition":{"property":"role","counts":{"tank":1,"dps":3}},
/// "teams":2,"balance":"skill","fallback_query":"*","fallback_after":3,
/// "expires_after":10}`. The server checks the values.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TicketOptions {
    #[serde(default)]
    pub(crate) composition: Option<CompositionArg>,
    #[serde(default)]
    pub(crate) teams: Option<u32>,
    #[serde(default)]
    pub(crate) balance: Option<String>,
    #[serde(default)]
    pub(crate) fallback_query: Option<String>,
    #[serde(default)]
    pub(crate) fallback_after: u32,
    #[serde(default)]
    pub(crate) expires_after: Option<u32>,
}

/// Roles: exact counts of the values of one string property.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompositionArg {
    pub(crate) property: String,
    pub(crate) counts: BTreeMap<String, u32>,
}

impl TicketOptions {
    /// Parses the JSON; `None` (a NULL argument) is no options.
    pub(crate) fn parse(json: Option<&str>) -> Result<Self, ArgError> {
        match json {
            None => Ok(Self::default()),
            Some(j) => serde_json::from_str(j).map_err(|e| {
                ArgError::bad(format!(
                    "options_json must look like {{\"teams\":2,\"composition\":{{\"property\":..,\"counts\":{{..}}}},..}}: {e}"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_null_and_invalid() {
        // SAFETY: NULL and literals that are NUL-terminated.
        unsafe {
            assert_eq!(opt_str(std::ptr::null(), "name"), Ok(None));
            assert_eq!(
                req_str(std::ptr::null(), "name").map_err(|e| e.code),
                Err(QM_ERR_NULL)
            );
            assert_eq!(req_str(c"héllo".as_ptr(), "name"), Ok("héllo"));
            let bad = b"\xff\xfe\0";
            let e = req_str(bad.as_ptr().cast(), "name").map_err(|e| e.code);
            assert_eq!(e, Err(QM_ERR_BAD_INPUT));
            let id: Result<quicmatch_client::MatchId, _> =
                req_id(c"not-an-id".as_ptr(), "match_id");
            assert_eq!(id.map_err(|e| e.code), Err(QM_ERR_BAD_INPUT));
        }
    }

    #[test]
    fn buffers() {
        // SAFETY: NULL with zero length, and a live array.
        unsafe {
            assert_eq!(bytes(std::ptr::null(), 0).map(|b| b.len()), Ok(0));
            assert_eq!(
                bytes(std::ptr::null(), 3).map_err(|e| e.code),
                Err(QM_ERR_NULL)
            );
            assert_eq!(bytes([1u8, 2].as_ptr(), 2).as_deref(), Ok(&[1u8, 2][..]));
        }
    }

    #[test]
    fn messages_are_cut_at_a_character_and_terminated() {
        let mut buf = [0x55 as c_char; 5];
        // SAFETY: a live 5-byte buffer.
        unsafe { write_message(buf.as_mut_ptr(), buf.len(), "abcé!") };
        // "abcé" is 5 bytes; only 4 fit before the NUL, and é is two of them.
        assert_eq!(buf.map(|c| c as u8), *b"abc\0\x55");
        // SAFETY: NULL and zero lengths write nothing.
        unsafe {
            write_message(std::ptr::null_mut(), 10, "x");
            write_message(buf.as_mut_ptr(), 0, "x");
        }
        assert_eq!(buf[0] as u8, b'a');
    }

    #[test]
    fn properties() {
        let p = Properties::parse(Some(r#"{"string":{"mode":"duel"},"numeric":{"skill":5}}"#));
        let p = p.unwrap_or_default();
        assert_eq!(p.string.get("mode").map(String::as_str), Some("duel"));
        assert_eq!(p.numeric.get("skill"), Some(&5.0));
        assert_eq!(Properties::parse(None), Ok(Properties::default()));
        assert_eq!(Properties::parse(Some("{}")), Ok(Properties::default()));
        for bad in ["[", r#"{"strings":{}}"#, r#"{"numeric":{"a":"x"}}"#] {
            assert!(Properties::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn ticket_options() {
        let json = r#"{"composition":{"property":"role","counts":{"tank":1,"dps":3}},
            "teams":2,"balance":"skill","fallback_query":"*","fallback_after":3,
            "expires_after":10}"#;
        let o = TicketOptions::parse(Some(json)).unwrap_or_default();
        let roles = o
            .composition
            .as_ref()
            .map(|c| (c.property.as_str(), c.counts.len()));
        assert_eq!(roles, Some(("role", 2)));
        assert_eq!((o.teams, o.balance.as_deref()), (Some(2), Some("skill")));
        assert_eq!(
            (o.fallback_query.as_deref(), o.fallback_after),
            (Some("*"), 3)
        );
        assert_eq!(o.expires_after, Some(10));
        assert_eq!(TicketOptions::parse(None), Ok(TicketOptions::default()));
        assert_eq!(
            TicketOptions::parse(Some("{}")),
            Ok(TicketOptions::default())
        );
        for bad in [
            "{",
            r#"{"team":2}"#,
            r#"{"teams":-1}"#,
            r#"{"composition":{"property":"r"}}"#,
        ] {
            assert!(TicketOptions::parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
