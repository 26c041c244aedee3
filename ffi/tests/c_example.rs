//! `ffi/examples/play.c`, compiled with the system C compiler against the static
//! library and the committed header, plays the whole script against a real server and
//! a Rust SDK player: under valgrind, which must find no leak and no invalid access.

mod common;

use std::{path::Path, process::Command};

use common::{ffi_dir, lib_dir, play_against_peer, require, unique_name, TestServer, FULL_SCRIPT};

/// Builds `play.c` into `dir`, linked statically so the program needs nothing at run
/// time; returns the executable.
fn build_play(dir: &Path) -> std::path::PathBuf {
    let exe = dir.join("play");
    let ffi = ffi_dir();
    let output = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-g", "-I"])
        .arg(ffi.join("include"))
        .arg(ffi.join("examples/play.c"))
        .arg(lib_dir().join("libquicmatch_ffi.a"))
        // What the Rust standard library needs from the system (`--print
        // native-static-libs`).
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ])
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run cc");
    common::print_output(&output);
    assert!(output.status.success(), "play.c does not compile");
    exe
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_c_plays_the_whole_script_under_valgrind() {
    if !require("cc", "apt-get install gcc") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = build_play(dir.path());
    let server = TestServer::start().await;
    let name = unique_name("c-play");
    let args = [server.addr.to_string(), server.pin(), name.clone()];

    let valgrind = require("valgrind", "apt-get install valgrind");
    let mut program = if valgrind {
        let mut cmd = tokio::process::Command::new("valgrind");
        cmd.args([
            "--quiet",
            "--error-exitcode=99",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
        ])
        .arg(format!(
            "--suppressions={}",
            ffi_dir().join("tests/valgrind.supp").display()
        ))
        .arg(&exe);
        cmd
    } else {
        eprintln!("running play.c without valgrind");
        tokio::process::Command::new(&exe)
    };
    program.args(&args);

    let (output, seen) = play_against_peer(&server, &name, "c-player", program).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "play.c failed ({}); valgrind exits 99 on an error it found",
        output.status
    );
    assert!(stdout.contains("ok: done"), "play.c did not finish");
    if valgrind {
        // `--quiet` leaves stderr empty unless valgrind found something.
        assert!(!stderr.contains("=="), "valgrind reported:\n{stderr}");
    }
    let expected: std::collections::BTreeSet<_> = FULL_SCRIPT.iter().copied().collect();
    assert_eq!(seen, expected, "what the Rust player saw");
}
