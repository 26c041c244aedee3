//! The C# binding (`bindings/csharp`), built as a library with Mono's compiler, and
//! `bindings/csharp/examples/Play.cs` built against it, play the whole script against a
//! real server and a Rust SDK player, loading the shared library through P/Invoke.

mod common;

use std::{path::Path, process::Command};

use common::{ffi_dir, lib_dir, play_against_peer, require, unique_name, TestServer, FULL_SCRIPT};

/// Compiles with `mcs`, warnings as errors; fails the test with the compiler's output.
fn mcs(args: &[&str], sources: &[std::path::PathBuf]) {
    let output = Command::new("mcs")
        .args(["-warnaserror+", "-codepage:utf8"])
        .args(args)
        .args(sources)
        .output()
        .expect("run mcs");
    common::print_output(&output);
    assert!(output.status.success(), "the C# code does not compile");
}

fn sources(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("C# sources")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cs"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_cs_plays_the_whole_script_with_mono() {
    let install = "apt-get install mono-mcs mono-runtime";
    if !require("mcs", install) || !require("mono", install) {
        return;
    }
    let csharp = ffi_dir()
        .parent()
        .expect("repository root")
        .join("bindings/csharp");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path();
    let dll = out.join("Quicmatch.dll");
    let exe = out.join("play.exe");
    mcs(
        &["-target:library", &format!("-out:{}", dll.display())],
        &sources(&csharp.join("src")),
    );
    mcs(
        &[
            &format!("-out:{}", exe.display()),
            &format!("-r:{}", dll.display()),
            "-r:System.Core.dll",
        ],
        &sources(&csharp.join("examples")),
    );
    // Next to the program, as a game ships it.
    std::fs::copy(
        lib_dir().join("libquicmatch_ffi.so"),
        out.join("libquicmatch_ffi.so"),
    )
    .expect("copy the library");

    let server = TestServer::start().await;
    let name = unique_name("cs-play");
    let mut program = tokio::process::Command::new("mono");
    program
        .arg("--debug")
        .arg(&exe)
        .args([server.addr.to_string(), server.ca(out), name.clone()])
        .current_dir(out)
        .env("LD_LIBRARY_PATH", out);
    let (output, seen) = play_against_peer(&server, &name, "cs-player", program).await;
    assert!(
        output.status.success(),
        "Play.cs failed ({})",
        output.status
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok: done"));
    let expected: std::collections::BTreeSet<_> = FULL_SCRIPT.iter().copied().collect();
    assert_eq!(seen, expected, "what the Rust player saw");
}
