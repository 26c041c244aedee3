//! The committed `ffi/include/quicmatch.h` is exactly what cbindgen writes from the
//! code, so the header C programmers read never drifts from the library they link.

mod common;

use std::process::Command;

use common::{ffi_dir, require};

const REGENERATE: &str = "cbindgen --config ffi/cbindgen.toml --crate quicmatch-ffi \
                          --output ffi/include/quicmatch.h";

#[test]
fn committed_header_matches_the_code() {
    if !require(
        "cbindgen",
        "cargo install cbindgen --locked --version 0.29.4",
    ) {
        return;
    }
    let ffi = ffi_dir();
    let root = ffi.parent().expect("repository root");
    let dir = tempfile::tempdir().expect("temp dir");
    let fresh = dir.path().join("quicmatch.h");
    let output = Command::new("cbindgen")
        .current_dir(root)
        .args([
            "--config",
            "ffi/cbindgen.toml",
            "--crate",
            "quicmatch-ffi",
            "--quiet",
        ])
        .arg("--output")
        .arg(&fresh)
        .output()
        .expect("run cbindgen");
    common::print_output(&output);
    assert!(output.status.success(), "cbindgen failed");
    let fresh = std::fs::read_to_string(&fresh).expect("generated header");
    let committed =
        std::fs::read_to_string(ffi.join("include/quicmatch.h")).expect("committed header");
    if fresh != committed {
        let (new, old): (Vec<_>, Vec<_>) = (fresh.lines().collect(), committed.lines().collect());
        let n = (0..new.len().max(old.len()))
            .find(|&i| new.get(i) != old.get(i))
            .unwrap_or_default();
        panic!(
            "ffi/include/quicmatch.h is out of date at line {}:\n  committed: {:?}\n  \
             generated: {:?}\nregenerate it from the repository root with\n  {REGENERATE}",
            n + 1,
            old.get(n),
            new.get(n),
        );
    }
}
