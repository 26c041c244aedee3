//! The storage snippets written for the README ("Storage", in docs/storage-sections.md),
//! compiled and run against a real server, so the text can be pasted knowing it works.
//! Each sits between `// README:<name>-start` and `// README:<name>-end`, the markers
//! tests/readme.rs uses, ready to move there with the README text.

mod common;

use common::{test_config, TestServer, TEST_TIMEOUT};
use quicmatch_client::Socket;
use tokio::time::timeout;

/// README, "Storage": a client's own objects.
#[rustfmt::skip]
async fn storage(socket: &Socket) -> anyhow::Result<()> {
    // README:storage-start
    use quicmatch_client::{ReadPermission, WritePermission};

    // Save into an empty slot: anyone may read it, only its owner may change it.
    let saved = socket
        .write_storage_object("saves", "slot1", r#"{"level":3,"gold":120}"#)
        .if_absent()                                     // else STORAGE_VERSION_CONFLICT
        .permissions(ReadPermission::PublicRead, WritePermission::OwnerWrite)
        .await?;
    // Update it only if nobody wrote it since (another device of the same player).
    socket
        .write_storage_object("saves", "slot1", r#"{"level":4,"gold":80}"#)
        .version(saved.version)
        .await?;
    if let Some(save) = socket.read_storage_object("saves", "slot1").await? {
        println!("{} at version {}", save.value, save.version);
    }
    // Everyone's saves you may read, a page at a time.
    let mut page = socket.list_storage_objects("saves").limit(50).await?;
    while let Some(cursor) = page.cursor.take() {
        page = socket.list_storage_objects("saves").limit(50).cursor(cursor).await?;
    }
    socket.delete_storage_object("saves", "slot1", None).await?;
    // README:storage-end
    Ok(())
}

/// README, "Storage": server code with full access.
#[rustfmt::skip]
fn grant(config: quicmatch::Config) -> anyhow::Result<quicmatch::Server> {
    // README:storage-server-start
    use quicmatch::storage::{ObjectWrite, ReadPermission, WritePermission};

    let server = quicmatch::Server::builder(config)
        .rpc("claim_reward", |ctx, _payload| {
            // The player may read it but never change it; only server code can.
            let reward = ObjectWrite::new("inventory", "daily_reward", r#"{"gold":50}"#)
                .owner(ctx.caller.user_id)
                .if_absent()                                 // once
                .permissions(ReadPermission::OwnerRead, WritePermission::NoWrite);
            let acks = ctx.runtime.storage().write(vec![reward]).map_err(|e| e.to_string())?;
            Ok(acks[0].version.clone())
        })
        .bind()?;
    // README:storage-server-end
    Ok(server)
}

#[tokio::test]
async fn the_storage_snippets_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.data_dir = dir.path().into();
    let server = TestServer::start_with(config).await;
    let socket = server.client("alice").await;
    timeout(TEST_TIMEOUT, storage(&socket))
        .await
        .expect("in time")
        .expect("the client snippet");
    assert!(socket
        .read_storage_object("saves", "slot1")
        .await
        .expect("read")
        .is_none());

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.data_dir = dir.path().into();
    let server = grant(config).expect("bind");
    let (addr, cert) = (server.local_addr(), server.cert_der().clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    let serving = tokio::spawn(server.serve(async move { token.cancelled().await }));
    let config = quicmatch_client::ClientConfig::new(
        addr,
        quicmatch_client::Trust::Certificates(vec![cert]),
        quicmatch_client::Credentials::Device {
            id: "device-reward-0000".into(),
        },
    );
    let socket = timeout(TEST_TIMEOUT, Socket::connect(config))
        .await
        .expect("in time")
        .expect("connect");
    socket
        .rpc("claim_reward", "")
        .await
        .expect("the first claim");
    let again = socket.rpc("claim_reward", "").await.expect_err("once");
    assert_eq!(
        again.code(),
        Some(quicmatch_client::ErrorCode::RUNTIME_FUNCTION_EXCEPTION)
    );
    let reward = socket
        .read_storage_object("inventory", "daily_reward")
        .await
        .expect("read")
        .expect("granted");
    assert_eq!(reward.value, r#"{"gold":50}"#);
    socket.close().await;
    stop.cancel();
    timeout(TEST_TIMEOUT, serving)
        .await
        .expect("stops")
        .expect("serve");
}
