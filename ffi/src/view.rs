//! Lays an [`Item`] out as the `qm_event` C reads: NUL-terminated copies of its
//! strings and arrays of presences, users and listings, all owned by a [`Held`] that
//! the client keeps until the next poll. The pointers point into heap buffers that do
//! not move when the `Held` itself moves.

use std::{
    ffi::{c_char, CString},
    ptr,
};

use bytes::Bytes;
use quicmatch_client::Presence;

use crate::{item::Item, types::*};

/// A `qm_event` and everything its pointers point at.
pub(crate) struct Held {
    view: qm_event,
    /// Every string the view (or its arrays) points at.
    _strings: Vec<CString>,
    _presences: Vec<Vec<qm_presence>>,
    _users: Vec<qm_matched_user>,
    _matches: Vec<qm_match_listing>,
    _data: Option<Bytes>,
}

// SAFETY: the raw pointers in `view` and the arrays point only into buffers this value
// owns (CString and Vec heap buffers, a `Bytes`), none shared with another thread
// mutably, so moving a `Held` to another thread moves their owner with them.
unsafe impl Send for Held {}

/// Collects the owned strings while the view is built.
#[derive(Default)]
struct Strings(Vec<CString>);

impl Strings {
    /// A C copy of `s`; NUL bytes inside it (which C cannot carry) become U+FFFD.
    fn add(&mut self, s: &str) -> *const c_char {
        let owned = CString::new(s)
            .or_else(|_| CString::new(s.replace('\0', "\u{FFFD}")))
            .unwrap_or_default();
        let p = owned.as_ptr();
        // The pointer stays valid: pushing moves the CString handle, not its buffer.
        self.0.push(owned);
        p
    }

    fn opt(&mut self, s: Option<&str>) -> *const c_char {
        s.map_or(ptr::null(), |s| self.add(s))
    }

    fn presence(&mut self, p: Option<&Presence>) -> qm_presence {
        match p {
            None => qm_presence::NONE,
            Some(p) => qm_presence {
                user_id: self.add(&p.user_id.to_string()),
                session_id: self.add(&p.session_id.to_string()),
                username: self.add(&p.username),
            },
        }
    }
}

/// A pointer to a vector's elements, NULL when it is empty.
fn array<T>(v: &[T]) -> *const T {
    if v.is_empty() {
        ptr::null()
    } else {
        v.as_ptr()
    }
}

impl Held {
    /// Lays `item` out for C.
    pub(crate) fn new(item: Item) -> Self {
        let mut s = Strings::default();
        let presences: Vec<qm_presence> =
            item.presences.iter().map(|p| s.presence(Some(p))).collect();
        let leaves: Vec<qm_presence> = item.leaves.iter().map(|p| s.presence(Some(p))).collect();
        let users: Vec<qm_matched_user> = item
            .users
            .iter()
            .map(|u| qm_matched_user {
                presence: s.presence(Some(&u.presence)),
                party_id: s.opt(u.party_id.as_deref()),
                properties_json: s.add(&u.properties_json),
                team: u.team,
            })
            .collect();
        let matches: Vec<qm_match_listing> = item
            .matches
            .iter()
            .map(|m| qm_match_listing {
                match_id: s.add(&m.match_id.to_string()),
                label: s.opt(m.label.as_deref()),
                handler: s.add(&m.handler),
                size: m.size,
                max_size: m.max_size,
                tick_rate: m.tick_rate,
                authoritative: m.authoritative,
            })
            .collect();
        let view = qm_event {
            kind: item.kind,
            request: item.request,
            code: item.code,
            match_id: s.opt(item.match_id.as_deref()),
            party_id: s.opt(item.party_id.as_deref()),
            ticket: s.opt(item.ticket.as_deref()),
            token: s.opt(item.token.as_deref()),
            message: s.opt(item.message.as_deref()),
            label: s.opt(item.label.as_deref()),
            sender: s.presence(item.sender.as_ref()),
            leader: s.presence(item.leader.as_ref()),
            self_presence: s.presence(item.self_presence.as_ref()),
            op_code: item.op_code,
            data: item.data.as_ref().map_or(ptr::null(), |d| d.as_ptr()),
            data_len: item.data.as_ref().map_or(0, Bytes::len),
            seq: item.seq,
            size: item.size,
            max_size: item.max_size,
            attempts: item.attempts,
            reliable: item.reliable,
            open: item.open,
            presences: array(&presences),
            presences_len: presences.len(),
            leaves: array(&leaves),
            leaves_len: leaves.len(),
            users: array(&users),
            users_len: users.len(),
            matches: array(&matches),
            matches_len: matches.len(),
        };
        Self {
            view,
            _strings: s.0,
            _presences: vec![presences, leaves],
            _users: users,
            _matches: matches,
            _data: item.data,
        }
    }

    /// The C view; its pointers live as long as `self`.
    pub(crate) fn view(&self) -> &qm_event {
        &self.view
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use quicmatch_client::{MatchListing, MatchmakerMatched, MatchmakerUser};

    use super::*;
    use crate::item::tests::{id, presence};

    /// Reads a C string of the view back.
    fn read(p: *const c_char) -> Option<String> {
        if p.is_null() {
            return None;
        }
        // SAFETY: every non-NULL string pointer in a view points at a CString its Held
        // owns, and the Held outlives this call in every test below.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    fn slice<'a, T>(p: *const T, len: usize) -> &'a [T] {
        if len == 0 {
            assert!(p.is_null());
            return &[];
        }
        // SAFETY: a non-empty array in a view points at `len` elements of a Vec that
        // its Held owns, alive for the whole test.
        unsafe { std::slice::from_raw_parts(p, len) }
    }

    fn read_presence(p: &qm_presence) -> Option<(String, String, String)> {
        Some((read(p.user_id)?, read(p.session_id)?, read(p.username)?))
    }

    fn expected(n: u32) -> Option<(String, String, String)> {
        let p = presence(n);
        Some((p.user_id.to_string(), p.session_id.to_string(), p.username))
    }

    #[test]
    fn strings_presences_and_data_read_back() {
        let item = Item {
            kind: QM_EVENT_MATCH,
            request: 3,
            match_id: Some(id::<quicmatch_client::MatchId>(1).to_string()),
            message: Some("with\0nul".into()),
            data: Some(Bytes::from_static(b"\x00\x01\x02")),
            presences: vec![presence(1), presence(2)],
            self_presence: Some(presence(2)),
            ..Item::default()
        };
        let held = Held::new(item);
        let moved = held; // buffers do not move with the value
        let e = moved.view();
        assert_eq!(e.kind, QM_EVENT_MATCH);
        assert_eq!(e.request, 3);
        assert_eq!(
            read(e.match_id),
            Some(id::<quicmatch_client::MatchId>(1).to_string())
        );
        assert_eq!(read(e.message).as_deref(), Some("with\u{FFFD}nul"));
        assert_eq!(read(e.party_id), None);
        assert_eq!(slice(e.data, e.data_len), b"\x00\x01\x02");
        let members = slice(e.presences, e.presences_len);
        assert_eq!(members.len(), 2);
        assert_eq!(read_presence(&members[0]), expected(1));
        assert_eq!(read_presence(&members[1]), expected(2));
        assert_eq!(read_presence(&e.self_presence), expected(2));
        assert!(e.sender.user_id.is_null() && e.leader.username.is_null());
        assert!(slice(e.leaves, e.leaves_len).is_empty());
        assert!(slice(e.users, e.users_len).is_empty());
    }

    #[test]
    fn matched_users_and_listings_read_back() {
        let user = MatchmakerUser {
            presence: presence(1),
            party_id: Some(id(5)),
            string_properties: Default::default(),
            numeric_properties: Default::default(),
        };
        let held = Held::new(Item::from_event(
            quicmatch_client::Event::MatchmakerMatched(MatchmakerMatched {
                ticket: id(2),
                token: None,
                match_id: Some(id(3)),
                users: vec![user.clone()],
                self_user: user,
            }),
        ));
        let e = held.view();
        assert_eq!(read(e.token), None);
        assert_eq!(
            read(e.match_id),
            Some(id::<quicmatch_client::MatchId>(3).to_string())
        );
        let users = slice(e.users, e.users_len);
        assert_eq!(read_presence(&users[0].presence), expected(1));
        assert_eq!(
            read(users[0].party_id),
            Some(id::<quicmatch_client::PartyId>(5).to_string())
        );
        assert_eq!(
            read(users[0].properties_json).as_deref(),
            Some(r#"{"numeric":{},"string":{}}"#)
        );
        assert_eq!(users[0].team, -1);

        let listing = MatchListing {
            match_id: id(4),
            authoritative: true,
            label: None,
            size: 2,
            max_size: 4,
            tick_rate: 10,
            handler: "arena".into(),
        };
        let held = Held::new(Item::listing(1, vec![listing]));
        let e = held.view();
        let m = slice(e.matches, e.matches_len)[0];
        assert_eq!(read(m.handler).as_deref(), Some("arena"));
        assert_eq!(read(m.label), None);
        assert_eq!(
            (m.size, m.max_size, m.tick_rate, m.authoritative),
            (2, 4, 10, true)
        );
    }

    #[test]
    fn rpc_output_is_also_a_c_string() {
        let held = Held::new(Item::rpc(2, "pong".into()));
        let e = held.view();
        assert_eq!(e.data_len, 4);
        // SAFETY: `Item::rpc` stores a NUL right after the output, in the same buffer.
        let text = unsafe { CStr::from_ptr(e.data.cast::<c_char>()) };
        assert_eq!(text.to_bytes(), b"pong");
    }
}
