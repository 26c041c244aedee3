//! Storage as an operator meets it, through the real `quicmatch` binary: `storage export`
//! and `storage import` carrying objects from one store to another, `data_dir` from a
//! flag, a variable or a config file, the store's startup log line, and a store from a
//! newer server refused at start with a message saying so.

mod common;

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{test_config, TestServer, TEST_TIMEOUT};
use quicmatch::storage::{ObjectWrite, Owners, Storage};
use quicmatch_client::{ReadPermission, WritePermission};
use tokio::time::timeout;

/// Runs the binary to completion (bounded), with only the `QUICMATCH_*` variables given.
fn quicmatch(args: &[&str], env: &[(&str, &Path)], cwd: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quicmatch"));
    command
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("QUICMATCH_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn quicmatch");
    let deadline = Instant::now() + TEST_TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("quicmatch {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn export_and_import_carry_objects_to_another_store() {
    let (from, to, work) = (
        tempfile::tempdir().expect("from"),
        tempfile::tempdir().expect("to"),
        tempfile::tempdir().expect("work"),
    );
    let mut config = test_config();
    config.data_dir = from.path().into();
    let server = TestServer::start_with(config).await;
    let alice = server.client("alice").await;
    let ack = timeout(
        TEST_TIMEOUT,
        alice
            .write_storage_object("saves", "slot", r#"{ "level": 3, "name": "é" }"#)
            .permissions(ReadPermission::PublicRead, WritePermission::OwnerWrite),
    )
    .await
    .expect("in time")
    .expect("write");
    let storage = server.runtime.storage().clone();
    tokio::task::spawn_blocking(move || {
        storage.write(vec![ObjectWrite::new("config", "motd", "{}")])
    })
    .await
    .expect("join")
    .expect("server write");
    alice.close().await;
    server.stop().await;

    // Export with --data-dir, to a file.
    let file = work.path().join("backup.jsonl");
    let file_arg = file.to_str().expect("a UTF-8 path");
    let from_arg = from.path().to_str().expect("a UTF-8 path");
    let out = quicmatch(
        &["storage", "export", file_arg, "--data-dir", from_arg],
        &[],
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("exported 2 objects"),
        "{}",
        text(&out.stderr)
    );
    let lines: Vec<String> = std::fs::read_to_string(&file)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].contains("\"quicmatch_storage_export\":1"),
        "{}",
        lines[0]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""value":{ "level": 3, "name": "é" }"#)),
        "{lines:#?}"
    );
    // The same to stdout, with the directory from the environment: nothing else on it.
    let out = quicmatch(
        &["storage", "export", "-"],
        &[("QUICMATCH_DATA_DIR", from.path())],
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        3,
        "{}",
        text(&out.stdout)
    );

    // Import into another store named by a config file (relative to the file).
    std::fs::write(
        work.path().join("quicmatch.toml"),
        "data_dir = \"restored\"\n",
    )
    .expect("config");
    let config_arg = work.path().join("quicmatch.toml");
    let config_arg = config_arg.to_str().expect("a UTF-8 path");
    let elsewhere = to.path();
    let out = quicmatch(
        &["storage", "import", file_arg, "--config", config_arg],
        &[],
        elsewhere,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("imported 2 objects"),
        "{}",
        text(&out.stderr)
    );
    let restored = work.path().join("restored");
    assert!(restored.join("quicmatch.redb").exists());

    // A server on the restored store serves the same object, same version.
    let mut config = test_config();
    config.data_dir = restored.clone();
    let server = TestServer::start_with(config).await;
    let alice = server.client("alice").await;
    let object = timeout(TEST_TIMEOUT, alice.read_storage_object("saves", "slot"))
        .await
        .expect("in time")
        .expect("read")
        .expect("restored");
    assert_eq!(object.version, ack.version);
    assert_eq!(object.value, r#"{ "level": 3, "name": "é" }"#);
    assert_eq!(object.permission_read, ReadPermission::PublicRead);
    let storage = server.runtime.storage().clone();
    let system =
        tokio::task::spawn_blocking(move || storage.list("config", Owners::System, 10, None))
            .await
            .expect("join")
            .expect("list");
    assert_eq!(system.objects.len(), 1);
    // While the server holds the store, the tool says so instead of waiting.
    let restored_arg = restored.to_str().expect("a UTF-8 path");
    let out = quicmatch(
        &["storage", "export", "-", "--data-dir", restored_arg],
        &[],
        work.path(),
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    server.stop().await;
    // A bad line names its line, and stops the import.
    std::fs::write(&file, format!("{}\n{{\"collection\":\"c\"}}\n", lines[1])).expect("write");
    let out = quicmatch(
        &["storage", "import", file_arg, "--data-dir", restored_arg],
        &[],
        work.path(),
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("line 2: "), "{stderr}");
}

#[test]
fn a_store_from_a_newer_server_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    {
        let config = quicmatch::Config {
            data_dir: data.clone(),
            ..quicmatch::Config::default()
        };
        let storage = Storage::open(&config).expect("open");
        storage
            .write(vec![ObjectWrite::new("c", "k", "{}")])
            .expect("write");
        storage.close();
        bump_schema(&data.join("quicmatch.redb"), 2);
    }
    let certs = dir.path().join("certs");
    let out = quicmatch(
        &[
            "serve",
            "--no-advertise",
            "--listen",
            "127.0.0.1:0",
            "--certs-dir",
            certs.to_str().expect("a UTF-8 path"),
        ],
        &[("QUICMATCH_DATA_DIR", &data)],
        dir.path(),
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("schema version 2 is newer than this server's 1"),
        "{stderr}"
    );
    assert!(stderr.contains("quicmatch storage export"), "{stderr}");
}

/// Sets the store's schema version (the `meta` table's `schema_version`), as a newer
/// server would have left it.
fn bump_schema(path: &Path, version: u64) {
    const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    let db = redb::Database::open(path).expect("open the file");
    let txn = db.begin_write().expect("write");
    txn.open_table(META)
        .expect("meta")
        .insert("schema_version", version)
        .expect("insert");
    txn.commit().expect("commit");
}

#[tokio::test]
async fn the_startup_log_names_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    {
        let config = quicmatch::Config {
            data_dir: data.clone(),
            ..quicmatch::Config::default()
        };
        let storage = Storage::open(&config).expect("open");
        storage
            .write(vec![ObjectWrite::new("c", "k", "{}")])
            .expect("write");
        storage.close();
    }
    let out = quicmatch(
        &[
            "storage",
            "export",
            "-",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        &[],
        dir.path(),
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("store opened"), "{stderr}");
    assert!(stderr.contains("schema_version=1"), "{stderr}");
    assert!(stderr.contains("size_bytes="), "{stderr}");
    assert!(stderr.contains("objects=1"), "{stderr}");
}
