//! The C API called as C would call it, from a plain thread against a real server:
//! the events it lays out (read back through their pointers), and misuse (NULL
//! pointers, invalid UTF-8, unknown ids, use after `qm_close`) answered with errors,
//! never a crash.
// Every unsafe call here passes pointers to live `CString`s, arrays and events, or a
// deliberate NULL, which the API documents as refused.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use std::{
    ffi::{c_char, CStr, CString},
    ptr,
    time::{Duration, Instant},
};

use common::{TestServer, PEER, TEST_TIMEOUT};
use quicmatch_client::{MatchId, Socket};
use quicmatch_ffi::*;

/// A server on its own runtime, so the test thread calls the C API outside any runtime
/// (as a game thread would).
struct Harness {
    server: TestServer,
    runtime: tokio::runtime::Runtime,
}

impl Harness {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = runtime.block_on(TestServer::start());
        Self { server, runtime }
    }

    fn connect(&self, name: &str) -> *mut qm_client {
        let (server, trust) = (c(&self.server.addr.to_string()), c(&self.server.pin()));
        let (device, user) = (c(&format!("device-{name}-0000")), c(name));
        let mut err = [0 as c_char; 256];
        let client = unsafe {
            qm_connect(
                server.as_ptr(),
                trust.as_ptr(),
                device.as_ptr(),
                user.as_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        assert!(!client.is_null(), "connect: {:?}", text(err.as_ptr()));
        client
    }

    fn sdk(&self, name: &str) -> Socket {
        self.runtime.block_on(self.server.client(name))
    }
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn text(p: *const c_char) -> Option<String> {
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn presences(p: *const qm_presence, len: usize) -> Vec<(String, String)> {
    if len == 0 {
        return Vec::new();
    }
    unsafe { std::slice::from_raw_parts(p, len) }
        .iter()
        .map(|p| {
            (
                text(p.username).unwrap_or_default(),
                text(p.session_id).unwrap_or_default(),
            )
        })
        .collect()
}

fn data(e: &qm_event) -> Vec<u8> {
    if e.data_len == 0 {
        return Vec::new();
    }
    unsafe { std::slice::from_raw_parts(e.data, e.data_len) }.to_vec()
}

/// Polls frame by frame until `want` accepts an event, failing on an error or a
/// disconnect nobody waited for, or after `TEST_TIMEOUT`.
fn wait(client: *mut qm_client, what: &str, want: impl Fn(&qm_event) -> bool) -> qm_event {
    let deadline = Instant::now() + TEST_TIMEOUT;
    let mut e = qm_event_zeroed();
    while Instant::now() < deadline {
        while unsafe { qm_poll(client, &mut e) } == 1 {
            if want(&e) {
                return e;
            }
            assert!(
                e.kind != QM_EVENT_ERROR && e.kind != QM_EVENT_DISCONNECTED,
                "waiting for {what}: kind {} {:?}",
                e.kind,
                text(e.message)
            );
        }
        // One frame of a game loop.
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out waiting for {what}");
}

/// The answer to request `id`, whatever its kind.
fn answer(client: *mut qm_client, id: u32) -> qm_event {
    assert_ne!(id, 0, "the request was not sent");
    let deadline = Instant::now() + TEST_TIMEOUT;
    let mut e = qm_event_zeroed();
    while Instant::now() < deadline {
        while unsafe { qm_poll(client, &mut e) } == 1 {
            if e.request == id {
                return e;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out waiting for the answer to request {id}");
}

/// Asserts request `id` failed with `code` and a message containing `says`.
fn refused(client: *mut qm_client, id: u32, code: i32, says: &str) {
    let e = answer(client, id);
    let message = text(e.message).unwrap_or_default();
    assert_eq!((e.kind, e.code), (QM_EVENT_ERROR, code), "{message}");
    assert!(message.contains(says), "{message:?} does not say {says:?}");
}

fn qm_event_zeroed() -> qm_event {
    // An all-zero `qm_event` is valid: integers, NULL pointers and `false`.
    unsafe { std::mem::zeroed() }
}

#[test]
fn null_pointers_and_bad_strings_are_refused_without_a_client() {
    let mut err = [0 as c_char; 128];
    let trust = c("pin:00");
    let device = c("device-nobody-0000");
    let connect = |server: *const c_char, trust: *const c_char, err: &mut [c_char]| unsafe {
        qm_connect(
            server,
            trust,
            device.as_ptr(),
            ptr::null(),
            err.as_mut_ptr(),
            err.len(),
        )
    };
    assert!(connect(ptr::null(), trust.as_ptr(), &mut err).is_null());
    assert_eq!(text(err.as_ptr()).as_deref(), Some("server is NULL"));
    let bad_utf8 = c"127.0.0.1:\xff";
    assert!(connect(bad_utf8.as_ptr(), trust.as_ptr(), &mut err).is_null());
    assert_eq!(
        text(err.as_ptr()).as_deref(),
        Some("server is not valid UTF-8")
    );
    let server = c("127.0.0.1:1");
    assert!(connect(server.as_ptr(), c("trust-me").as_ptr(), &mut err).is_null());
    assert!(text(err.as_ptr())
        .unwrap_or_default()
        .starts_with("trust must be"));
    assert!(connect(server.as_ptr(), trust.as_ptr(), &mut err).is_null());
    assert!(text(err.as_ptr())
        .unwrap_or_default()
        .contains("64 hex digits"));
    // No buffer, or one too small: still NULL, and never a write past the end.
    assert!(unsafe {
        qm_connect(
            ptr::null(),
            ptr::null(),
            ptr::null(),
            ptr::null(),
            ptr::null_mut(),
            99,
        )
    }
    .is_null());
    let mut tiny = [0x55 as c_char; 4];
    assert!(connect(ptr::null(), trust.as_ptr(), &mut tiny[..3]).is_null());
    assert_eq!(tiny.map(|b| b as u8), *b"se\0\x55");

    let none: *mut qm_client = ptr::null_mut();
    let mut e = qm_event_zeroed();
    let id = c("00000000-0000-4000-8000-000000000001");
    unsafe {
        assert_eq!(qm_poll(none, &mut e), QM_ERR_NULL);
        assert_eq!(qm_poll(none, ptr::null_mut()), QM_ERR_NULL);
        assert_eq!(
            qm_send(none, id.as_ptr(), 1, ptr::null(), 0, true),
            QM_ERR_NULL
        );
        let mut me = std::mem::zeroed();
        assert_eq!(qm_self(none, &mut me), QM_ERR_NULL);
        assert_eq!(qm_datagrams_dropped(none), 0);
        assert_eq!(qm_match_create(none, ptr::null()), 0);
        assert_eq!(qm_match_join(none, id.as_ptr()), 0);
        assert_eq!(
            qm_matchmaker_add(none, c("*").as_ptr(), 2, 2, 0, ptr::null()),
            0
        );
        assert_eq!(qm_party_create(none, true, 2, ptr::null()), 0);
        assert_eq!(qm_rpc(none, c("echo").as_ptr(), ptr::null()), 0);
        qm_close(none);
        qm_free(none);
    }
    assert_eq!(
        text(qm_code_name(QM_ERR_TIMEOUT)).as_deref(),
        Some("QM_ERR_TIMEOUT")
    );
    assert_eq!(text(qm_code_name(4)).as_deref(), Some("MATCH_NOT_FOUND"));
    assert_eq!(text(qm_code_name(9999)).as_deref(), Some("UNKNOWN"));
    assert_eq!(
        text(qm_version()).as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn events_read_back_through_their_pointers() {
    let h = Harness::start();
    let client = h.connect("c-api");
    let mut me = unsafe { std::mem::zeroed::<qm_presence>() };
    assert_eq!(unsafe { qm_self(client, &mut me) }, QM_OK);
    assert_eq!(text(me.username).as_deref(), Some("c-api"));
    assert_eq!(
        unsafe { qm_datagrams_dropped(client) },
        0,
        "nothing dropped yet"
    );
    let my_session = text(me.session_id).unwrap_or_default();

    let create = unsafe { qm_match_create(client, ptr::null()) };
    let e = answer(client, create);
    assert_eq!((e.kind, e.size, e.presences_len), (QM_EVENT_MATCH, 1, 1));
    assert_eq!(text(e.self_presence.session_id), Some(my_session.clone()));
    let match_text = text(e.match_id).unwrap_or_default();
    let match_id: MatchId = match_text.parse().expect("a match id");

    let peer = h.sdk(PEER);
    let joined = h
        .runtime
        .block_on(peer.join_match(match_id))
        .expect("peer joins");
    assert_eq!(joined.size, 2);
    let e = wait(client, "the peer's arrival", |e| {
        e.kind == QM_EVENT_MATCH_PRESENCE
    });
    assert_eq!(text(e.match_id).as_deref(), Some(match_text.as_str()));
    let joins = presences(e.presences, e.presences_len);
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].0, PEER);
    assert_eq!(e.leaves_len, 0);

    // Reliable data carries its sender, bytes (zeros included) and flag.
    h.runtime
        .block_on(peer.send_match_data(match_id, 42, &b"a\0b"[..], true, None))
        .expect("reliable send");
    let e = wait(client, "reliable data", |e| e.kind == QM_EVENT_MATCH_DATA);
    assert_eq!(
        (e.op_code, e.reliable, data(&e)),
        (42, true, b"a\0b".to_vec())
    );
    assert_eq!(text(e.sender.username).as_deref(), Some(PEER));
    assert_eq!(text(e.match_id).as_deref(), Some(match_text.as_str()));
    let first_seq = e.seq;

    // A datagram, sent until one arrives (loopback almost never loses one).
    let e = (0..50)
        .find_map(|_| {
            h.runtime
                .block_on(peer.send_match_data(match_id, 7, &b"dgram"[..], false, None))
                .expect("datagram send");
            let deadline = Instant::now() + Duration::from_millis(200);
            let mut e = qm_event_zeroed();
            while Instant::now() < deadline {
                if unsafe { qm_poll(client, &mut e) } == 1 && e.kind == QM_EVENT_MATCH_DATA {
                    return Some(e);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            None
        })
        .expect("a datagram arrives");
    assert_eq!(
        (e.op_code, e.reliable, data(&e)),
        (7, false, b"dgram".to_vec())
    );
    assert!(e.seq > first_seq, "seq grows: {} then {}", first_seq, e.seq);

    // Data the C side sends reaches the peer, and only the listed target.
    let only_peer = c(&joins[0].1);
    let targets = [only_peer.as_ptr()];
    let sent = unsafe {
        qm_send_to(
            client,
            c(&match_text).as_ptr(),
            9,
            b"hi".as_ptr(),
            2,
            true,
            targets.as_ptr(),
            1,
        )
    };
    assert_eq!(sent, QM_OK);
    let got = h.runtime.block_on(async {
        loop {
            match tokio::time::timeout(TEST_TIMEOUT, peer.next_event()).await {
                Ok(Some(quicmatch_client::Event::MatchData(d))) => break d,
                Ok(Some(_)) => continue,
                other => panic!("waiting for data at the peer: {other:?}"),
            }
        }
    });
    assert_eq!((got.op_code, &got.data[..]), (9, &b"hi"[..]));

    // The peer leaves: a presence event with it in `leaves`.
    h.runtime
        .block_on(peer.leave_match(match_id))
        .expect("leave");
    let e = wait(client, "the peer's departure", |e| {
        e.kind == QM_EVENT_MATCH_PRESENCE
    });
    assert_eq!(presences(e.leaves, e.leaves_len)[0].0, PEER);
    assert!(e.presences.is_null() && e.presences_len == 0);
    unsafe { qm_free(client) };
}

#[test]
fn misuse_gets_errors_and_use_after_close_is_refused() {
    let h = Harness::start();
    let client = h.connect("misuser");
    let unknown = c("00000000-0000-4000-8000-000000000009");
    let bad_utf8 = c"\xc3\x28".as_ptr();
    let code_bad = QM_CODE_BAD_INPUT;
    unsafe {
        assert_eq!(qm_poll(client, ptr::null_mut()), QM_ERR_NULL);
        refused(
            client,
            qm_match_join(client, ptr::null()),
            code_bad,
            "match_id is NULL",
        );
        refused(
            client,
            qm_match_join(client, bad_utf8),
            code_bad,
            "not valid UTF-8",
        );
        refused(
            client,
            qm_match_join(client, c("42").as_ptr()),
            code_bad,
            "not an id",
        );
        let id = qm_match_join(client, unknown.as_ptr());
        refused(client, id, QM_CODE_MATCH_NOT_FOUND, "");
        let e = answer(client, qm_match_leave(client, unknown.as_ptr()));
        assert_eq!(e.kind, QM_EVENT_ACK);
        refused(
            client,
            qm_join_token(client, c("forged").as_ptr()),
            code_bad,
            "",
        );
        let any = c("*");
        let id = qm_matchmaker_add(client, any.as_ptr(), 3, 2, 0, ptr::null());
        refused(client, id, code_bad, "min 3 is greater than max 2");
        let id = qm_matchmaker_add(client, any.as_ptr(), 2, 2, 0, c("{bad").as_ptr());
        refused(client, id, code_bad, "props_json");
        let id = qm_matchmaker_remove(client, unknown.as_ptr());
        refused(client, id, QM_CODE_TICKET_NOT_FOUND, "");
        let id = qm_match_list(client, 10, 7, ptr::null(), 0, 0, ptr::null());
        refused(client, id, code_bad, "authoritative must be");
        refused(
            client,
            qm_rpc(client, ptr::null(), ptr::null()),
            code_bad,
            "rpc_id is NULL",
        );
        let id = qm_party_join(client, unknown.as_ptr());
        refused(client, id, QM_CODE_PARTY_NOT_FOUND, "");
        let id = qm_party_send(client, unknown.as_ptr(), 1, ptr::null(), 3);
        refused(client, id, code_bad, "data is NULL");
        let id = qm_party_accept(client, unknown.as_ptr(), bad_utf8);
        refused(client, id, code_bad, "session_id is not valid UTF-8");

        // Sends answer at once.
        let m = unknown.as_ptr();
        assert_eq!(
            qm_send(client, m, 1, b"x".as_ptr(), 1, false),
            QM_ERR_NOT_MEMBER
        );
        assert_eq!(
            qm_send(client, ptr::null(), 1, ptr::null(), 0, false),
            QM_ERR_NULL
        );
        assert_eq!(
            qm_send(client, bad_utf8, 1, ptr::null(), 0, false),
            QM_ERR_BAD_INPUT
        );
        assert_eq!(qm_send(client, m, 1, ptr::null(), 5, false), QM_ERR_NULL);
        let one = [ptr::null::<c_char>()];
        assert_eq!(
            qm_send_to(client, m, 1, ptr::null(), 0, true, one.as_ptr(), 1),
            QM_ERR_NULL
        );
        assert_eq!(
            qm_send_to(client, m, 1, ptr::null(), 0, true, ptr::null(), 2),
            QM_ERR_NULL
        );

        // Request ids are distinct and never 0.
        let a = qm_match_create(client, ptr::null());
        let b = qm_match_create(client, ptr::null());
        assert!(a != 0 && b != 0 && a != b);
        let big = vec![0u8; 40_000];
        let game = text(answer(client, a).match_id).expect("a match");
        let game = c(&game);
        let send = |len, reliable| qm_send(client, game.as_ptr(), 1, big.as_ptr(), len, reliable);
        assert_eq!(send(2000, false), QM_ERR_TOO_LARGE);
        assert_eq!(send(40_000, true), QM_ERR_TOO_LARGE);
        assert_eq!(send(10, true), QM_OK);

        // After qm_close: nothing new is sent, the rest drains, then the end.
        qm_close(client);
        qm_close(client);
        assert_eq!(qm_match_create(client, ptr::null()), 0);
        assert_eq!(qm_party_create(client, true, 2, ptr::null()), 0);
        assert_eq!(send(10, true), QM_ERR_CLOSED);
        let e = wait(client, "the last event", |e| {
            e.kind == QM_EVENT_DISCONNECTED
        });
        assert_eq!(e.request, 0);
        let mut after = qm_event_zeroed();
        after.kind = 12345;
        for _ in 0..3 {
            assert_eq!(qm_poll(client, &mut after), QM_ERR_DISCONNECTED);
            assert_eq!(after.kind, QM_EVENT_NONE);
        }
        let mut me = std::mem::zeroed::<qm_presence>();
        assert_eq!(qm_self(client, &mut me), QM_OK);
        assert_eq!(text(me.username).as_deref(), Some("misuser"));
        qm_free(client);
    }
}

#[test]
fn freeing_without_closing_or_polling_ends_the_session_at_once() {
    let h = Harness::start();
    let peer = h.sdk(PEER);
    let game = h.runtime.block_on(peer.create_match(None)).expect("create");
    let client = h.connect("leaver");
    let id = c(&game.match_id.to_string());
    let join = unsafe { qm_match_join(client, id.as_ptr()) };
    assert_eq!(answer(client, join).kind, QM_EVENT_MATCH);
    // Events queue up unread; freeing must not wait for them.
    unsafe { qm_send(client, id.as_ptr(), 1, b"x".as_ptr(), 1, true) };
    let started = Instant::now();
    unsafe { qm_free(client) };
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "qm_free took {:?}",
        started.elapsed()
    );
    // The server heard the close: the peer sees the leave long before any idle timeout.
    let left = h.runtime.block_on(async {
        loop {
            match tokio::time::timeout(TEST_TIMEOUT, peer.next_event()).await {
                Ok(Some(quicmatch_client::Event::MatchPresence(p))) if !p.leaves.is_empty() => {
                    break p.leaves[0].username.clone();
                }
                Ok(Some(_)) => continue,
                other => panic!("waiting for the leave: {other:?}"),
            }
        }
    });
    assert_eq!(left, "leaver");
}

#[test]
fn matchmaker_options_split_the_group_into_teams() {
    let h = Harness::start();
    let (a, b) = (h.connect("red"), h.connect("blue"));
    let query = c("+properties.mode:teams");
    let props = c(r#"{"string":{"mode":"teams"},"numeric":{"skill":3}}"#);
    let options = c(r#"{"teams":2,"balance":"skill","expires_after":600}"#);
    for client in [a, b] {
        let id = unsafe {
            qm_matchmaker_add_with(
                client,
                query.as_ptr(),
                2,
                2,
                0,
                props.as_ptr(),
                options.as_ptr(),
            )
        };
        assert_eq!(answer(client, id).kind, QM_EVENT_MATCHMAKER_TICKET);
    }
    let mut teams = Vec::new();
    for client in [a, b] {
        let e = wait(client, "the teams", |e| {
            e.kind == QM_EVENT_MATCHMAKER_MATCHED
        });
        assert!(!e.token.is_null());
        let users = unsafe { std::slice::from_raw_parts(e.users, e.users_len) };
        let me = text(e.self_presence.username).unwrap_or_default();
        let mine = users
            .iter()
            .find(|u| text(u.presence.username).as_deref() == Some(me.as_str()))
            .map(|u| u.team);
        teams.push(mine);
        let mut all: Vec<i32> = users.iter().map(|u| u.team).collect();
        all.sort_unstable();
        assert_eq!(all, vec![0, 1], "one player a team");
    }
    assert!(teams[0].is_some() && teams[0] != teams[1], "{teams:?}");
    // Options the library cannot read are refused before anything is sent.
    let bad = c(r#"{"teams":"two"}"#);
    let id =
        unsafe { qm_matchmaker_add_with(a, query.as_ptr(), 2, 2, 0, ptr::null(), bad.as_ptr()) };
    refused(a, id, QM_CODE_BAD_INPUT, "options_json");
    unsafe {
        qm_free(a);
        qm_free(b);
    }
}

#[test]
fn connecting_on_a_runtime_thread_is_refused() {
    let h = Harness::start();
    let (server, trust, device) = (
        c(&h.server.addr.to_string()),
        c(&h.server.pin()),
        c("device-async-0000"),
    );
    let mut err = [0 as c_char; 128];
    let client = h.runtime.block_on(async {
        unsafe {
            qm_connect(
                server.as_ptr(),
                trust.as_ptr(),
                device.as_ptr(),
                ptr::null(),
                err.as_mut_ptr(),
                err.len(),
            )
        }
    });
    assert!(client.is_null());
    assert!(text(err.as_ptr())
        .unwrap_or_default()
        .contains("tokio runtime"));
}
