//! Authentication: the first frame, server key, id rules, and the timeout.

mod common;

use std::time::Duration;

use common::{TestServer, TEST_TIMEOUT};
use quicmatch_client::{ClientConfig, CloseCode, ConnectError, Credentials, Socket, Trust};
use quicmatch_protocol::{Request, Response, ServerBody};
use tokio::time::timeout;

async fn connect(config: ClientConfig) -> Result<Socket, ConnectError> {
    timeout(TEST_TIMEOUT, Socket::connect(config))
        .await
        .expect("waiting for connect")
}

#[tokio::test]
async fn good_credentials_give_a_stable_user_and_a_fresh_session() {
    let server = TestServer::start().await;
    let a = server.client("alice").await;
    let b = server.client("alice").await;
    assert_eq!(a.session().user_id, b.session().user_id);
    assert_ne!(a.session().session_id, b.session().session_id);
    assert_eq!(a.session().username, "alice");
    assert!(a.session().token.starts_with("v1."));
    assert!(a.session().token_expires_at > quicmatch::auth::unix_now());
    let claims = quicmatch::auth::verify_token(
        &quicmatch::auth::Secret::from_bytes(&[7u8; 32]),
        &a.session().token,
        quicmatch::auth::unix_now(),
    )
    .expect("token verifies with the server secret");
    assert_eq!(claims.sid, a.session().session_id);
    let other = server.client("bob").await;
    assert_ne!(other.session().user_id, a.session().user_id);
    assert!(a.ping().await.is_ok());
}

#[tokio::test]
async fn user_ids_survive_a_server_restart() {
    let first = TestServer::start().await;
    let before = first.client("carol").await.session().user_id;
    first.stop().await;
    let second = TestServer::start().await;
    let after = second.client("carol").await.session().user_id;
    assert_eq!(before, after);
}

#[tokio::test]
async fn wrong_server_key_is_closed_with_auth_failed() {
    let server = TestServer::start().await;
    let err = connect(server.client_config("mallory").server_key("nope"))
        .await
        .err()
        .expect("must fail");
    let (code, reason) = err.close_code().expect("closed by the server");
    assert_eq!(code, CloseCode::AUTH_FAILED);
    assert!(reason.contains("server key"), "{reason}");
}

#[tokio::test]
async fn bad_ids_are_closed_with_auth_failed() {
    let server = TestServer::start().await;
    for credentials in [
        Credentials::Device { id: "short".into() },
        Credentials::Device {
            id: "has a space 123".into(),
        },
        Credentials::Custom {
            id: "x".repeat(129),
        },
    ] {
        let config = ClientConfig::new(
            server.addr,
            Trust::Certificates(vec![server.cert.clone()]),
            credentials.clone(),
        );
        let err = connect(config).await.err().expect("must fail");
        let (code, reason) = err.close_code().expect("closed by the server");
        assert_eq!(code, CloseCode::AUTH_FAILED, "{credentials:?}");
        assert!(reason.contains(" id must"), "{reason}");
    }
    // The server still serves good clients.
    server.client("honest").await;
}

#[tokio::test]
async fn no_first_frame_is_closed_after_the_timeout() {
    let mut config = common::test_config();
    config.session.auth_timeout = Duration::from_millis(300);
    let server = TestServer::start_with(config).await;
    let conn = server.raw_connection().await;
    common::assert_closed_with(&conn, CloseCode::AUTH_TIMEOUT).await;
}

#[tokio::test]
async fn first_frame_must_be_authenticate() {
    let server = TestServer::start().await;
    let conn = server.raw_connection().await;
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    let ping = quicmatch_protocol::frame::encode(&quicmatch_protocol::ClientEnvelope {
        cid: Some(1),
        body: Request::Ping,
    })
    .expect("encode");
    send.write_all(&ping).await.expect("write");
    common::assert_closed_with(&conn, CloseCode::AUTH_FAILED).await;
}

#[tokio::test]
async fn a_second_authenticate_is_an_error_not_a_close() {
    let server = TestServer::start().await;
    let mut raw = server.raw_session("twice").await;
    let reply = raw
        .request(
            Some(5),
            Request::Authenticate {
                server_key: "defaultkey".into(),
                credentials: Credentials::Device {
                    id: "device-twice-0000".into(),
                },
                username: None,
            },
        )
        .await;
    assert_eq!(reply.cid, Some(5));
    match reply.body {
        ServerBody::Response(Response::Error { code, .. }) => {
            assert_eq!(code, quicmatch_protocol::ErrorCode::UNAUTHENTICATED)
        }
        other => panic!("unexpected {other:?}"),
    }
    let pong = raw.request(Some(6), Request::Ping).await;
    assert_eq!(pong.body, ServerBody::Response(Response::Pong));
}

#[tokio::test]
async fn pinned_fingerprint_connects_and_a_wrong_pin_does_not() {
    let server = TestServer::start().await;
    let pin = quicmatch::tls::fingerprint(&server.cert);
    let mut config = server.client_config("pinned");
    config.trust = Trust::pin(&pin).expect("pin");
    connect(config).await.expect("pinned connect");
    let mut config = server.client_config("pinned");
    config.trust = Trust::pin(&"00".repeat(32)).expect("pin");
    assert!(connect(config).await.is_err());
}
