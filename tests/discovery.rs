//! LAN discovery between two network namespaces this test creates (joined by a veth
//! pair, with addresses of their own): the server advertises in one, `quicmatch-cli
//! discover --json` finds it in the other with the server's own fingerprint, and
//! `--discover NAME` connects pinning it. Nothing is advertised on the host's
//! interfaces. Needs root and `ip` (iproute2); elsewhere it says why it cannot run,
//! except with `CI` set, where it fails instead (CI runs as root, and `.ci/run`
//! installs iproute2).

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(20);

/// Two namespaces and a veth pair between them, removed on drop.
struct Lan {
    a: String,
    b: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Lan {
    fn create() -> Result<Self, String> {
        let tag = std::process::id() % 100_000;
        let lan = Self {
            a: format!("qmdA{tag}"),
            b: format!("qmdB{tag}"),
        };
        let (va, vb) = (format!("qmva{tag}"), format!("qmvb{tag}"));
        ip(&["netns", "add", &lan.a])?;
        ip(&["netns", "add", &lan.b])?;
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", &lan.a])?;
        ip(&["link", "set", &vb, "netns", &lan.b])?;
        for (ns, dev, addr) in [
            (&lan.a, &va, "10.213.7.1/24"),
            (&lan.b, &vb, "10.213.7.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

/// A sibling binary of this test's build (target/<profile>/NAME).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the workspace's tests (cargo test --workspace) so both binaries exist",
        path.display()
    );
    path
}

fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Kills a child on drop, so a failing assert leaves nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether this run is CI's, where the test must run rather than skip.
fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Says why the test cannot run here: a failure on CI, a plain note elsewhere (so a
/// skip is never silent).
fn cannot_run(why: &str) {
    assert!(!on_ci(), "the discovery test must run on CI, but {why}");
    eprintln!("SKIPPED: the discovery test cannot run here: {why}; CI runs it");
}

#[test]
fn a_client_in_another_namespace_discovers_the_server_and_pins_its_fingerprint() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return cannot_run("it needs root to create network namespaces");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return cannot_run("`ip` is not installed (apt-get install iproute2)");
    }
    let lan = match Lan::create() {
        Ok(lan) => lan,
        // Root without the right to make namespaces (a restricted container).
        Err(e) => return cannot_run(&format!("network namespaces could not be made: {e}")),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Command::new("ip")
        .args(["netns", "exec", &lan.a])
        .arg(binary("quicmatch"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:7350",
            "--name",
            "lan-test",
            "--certs-dir",
        ])
        .arg(dir.path())
        .env("QUICMATCH_DATA_DIR", dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the server in its namespace");
    let mut server = Running(server);
    let out = lines(&mut server.0);
    let deadline = Instant::now() + WAIT;
    let mut banner = Vec::new();
    let fingerprint = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = out.recv_timeout(left).expect("the server's banner");
        banner.push(line.clone());
        if let Some(f) = line
            .trim()
            .strip_prefix("certificate fingerprint (SHA-256): ")
        {
            break f.to_owned();
        }
    };
    // An advertised server's banner gives the discovery command first, then the
    // address one.
    while !banner
        .iter()
        .any(|l| l.trim().starts_with("quicmatch-cli --server"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        banner.push(out.recv_timeout(left).expect("the rest of the banner"));
    }
    let discover = banner
        .iter()
        .position(|l| l.trim().starts_with("quicmatch-cli --discover lan-test "))
        .unwrap_or_else(|| panic!("no --discover command in the banner: {banner:#?}"));
    let by_address = banner
        .iter()
        .position(|l| l.trim().starts_with("quicmatch-cli --server"))
        .unwrap_or(0);
    assert!(discover < by_address, "{banner:#?}");

    // Discovery answers within a few seconds; ask until it does, within the limit.
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        let out = Command::new("ip")
            .args(["netns", "exec", &lan.b])
            .arg(binary("quicmatch-cli"))
            .args(["discover", "--json", "--wait", "3"])
            .output()
            .expect("run discover");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["name"] == "lan-test");
    }
    let found = found.expect("the server was discovered from the other namespace");
    assert_eq!(found["type"], "server");
    assert_eq!(found["fingerprint"], fingerprint.as_str());
    let addresses = found["addresses"].as_array().expect("addresses");
    assert!(addresses.iter().any(|a| a == "10.213.7.1:7350"), "{found}");

    // And connects by name, pinning what was advertised.
    let mut cli = Command::new("ip")
        .args(["netns", "exec", &lan.b])
        .arg(binary("quicmatch-cli"))
        .args([
            "--discover",
            "lan-test",
            "--device-id",
            "discover-device-1",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the CLI");
    let mut stdin = cli.stdin.take().expect("stdin");
    let mut cli = Running(cli);
    let out = lines(&mut cli.0);
    let deadline = Instant::now() + WAIT;
    let mut saw_session = false;
    while !saw_session {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = out.recv_timeout(left).expect("the CLI's session line");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            saw_session = v["type"] == "session";
        }
    }
    use std::io::Write as _;
    let _ = writeln!(stdin, "quit");
}
