//! `quicmatch-cli` at a terminal: under a pseudo-terminal (made by `script`, from
//! util-linux), it reads commands at a prompt with line editing and history, prints
//! events above the prompt, and Ctrl-D or Ctrl-C closes politely with status 0.
//! Skipped, with a note, where `script` is not installed, except with `CI` set, where
//! that fails (`.ci/run` installs it: bsdutils on Debian and Ubuntu).

use std::{process::Stdio, time::Duration};

use quicmatch::{tls, Config, Server};
use quicmatch_client::{ClientConfig, Credentials, Event, Socket, Trust};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    process::{Child, ChildStdin, Command},
    sync::watch,
    time::timeout,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(20);
const PROMPT: &str = "quicmatch> ";

/// Whether this run is CI's, where the terminal tests must run rather than skip.
fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// `script`'s path, or `None` (with a note) when it is not installed; on CI, a missing
/// `script` fails the test.
fn script() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("script"))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            !on_ci(),
            "`script` is required on CI (apt-get install bsdutils, or util-linux elsewhere)"
        );
        eprintln!("SKIPPED: `script` (bsdutils / util-linux) is not installed; CI runs the terminal tests");
    }
    found
}

/// Starts a server on port 0 and writes its certificate where `--ca` can read it.
fn start_server(
    dir: &std::path::Path,
) -> (
    std::net::SocketAddr,
    std::path::PathBuf,
    tokio_util::sync::CancellationToken,
) {
    use base64::Engine as _;
    let material = tls::generate(vec!["127.0.0.1".into()]).expect("cert");
    let ca = dir.join("server.crt");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&material.chain[0]);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    std::fs::write(
        &ca,
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        ),
    )
    .expect("write ca");
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: ca.with_file_name("data"),
        ..Config::default()
    };
    let server = Server::builder(config)
        .certificate(material)
        .secret([1u8; 32])
        .bind()
        .expect("bind");
    let addr = server.local_addr();
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(server.serve(async move { token.cancelled().await }));
    (addr, ca, stop)
}

/// Quotes a word for `sh -c`.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The CLI in a pseudo-terminal: keys go in, and everything the terminal shows (prompt,
/// echo, escape sequences and output) collects in `screen`.
struct Terminal {
    child: Child,
    keys: ChildStdin,
    screen: watch::Receiver<String>,
}

impl Terminal {
    fn spawn(
        script: &std::path::Path,
        addr: std::net::SocketAddr,
        ca: &std::path::Path,
        device: &str,
    ) -> Self {
        Self::spawn_in(script, addr, ca, device, |cli| cli.to_owned())
    }

    /// [`Terminal::spawn`], with `shell` making the `sh -c` line around the CLI's.
    fn spawn_in(
        script: &std::path::Path,
        addr: std::net::SocketAddr,
        ca: &std::path::Path,
        device: &str,
        shell: impl FnOnce(&str) -> String,
    ) -> Self {
        let cli = [
            env!("CARGO_BIN_EXE_quicmatch-cli"),
            "--server",
            &addr.to_string(),
            "--device-id",
            device,
            "--username",
            device,
            "--ca",
            ca.to_str().expect("utf-8 path"),
            "--json",
        ]
        .map(quote)
        .join(" ");
        // -q: no banner; -e: its status is the command's; -f: output at once.
        let mut child = Command::new(script)
            .args(["-qef", "-c", &shell(&cli), "/dev/null"])
            .env("TERM", "xterm")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn script");
        let keys = child.stdin.take().expect("stdin");
        let mut out = child.stdout.take().expect("stdout");
        let (tx, screen) = watch::channel(String::new());
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf).await {
                let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
                tx.send_modify(|all| all.push_str(&chunk));
            }
        });
        Self {
            child,
            keys,
            screen,
        }
    }

    async fn type_keys(&mut self, keys: &str) {
        self.keys
            .write_all(keys.as_bytes())
            .await
            .expect("type keys");
        self.keys.flush().await.expect("flush keys");
    }

    /// Waits until the screen shows `needle` at or after byte `from`; returns where that
    /// occurrence ends.
    async fn wait_for(&mut self, from: usize, needle: &str) -> usize {
        let found = timeout(
            TEST_TIMEOUT,
            self.screen
                .wait_for(|s| s.get(from..).is_some_and(|rest| rest.contains(needle))),
        )
        .await
        .is_ok_and(|seen| seen.is_ok());
        let screen = self.screen.borrow().clone();
        assert!(
            found,
            "no {needle:?} after byte {from} on the screen:\n{screen:?}"
        );
        from + screen[from..].find(needle).expect("just seen") + needle.len()
    }

    /// The CLI's process id: the `quicmatch-cli` among `script`'s descendants.
    fn cli_pid(&self) -> u32 {
        let mut parents = std::collections::HashMap::new();
        for entry in std::fs::read_dir("/proc").expect("/proc") {
            let entry = entry.expect("entry");
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            // pid (comm) state ppid ...
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
            else {
                continue;
            };
            let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
            parents.insert(pid, (ppid, comm.to_owned()));
        }
        let script = self.child.id().expect("script running");
        let descends = |mut pid: u32| {
            while let Some((Some(ppid), _)) = parents.get(&pid) {
                if *ppid == script {
                    return true;
                }
                pid = *ppid;
            }
            false
        };
        parents
            .iter()
            .find(|(pid, (_, comm))| comm == "quicmatch-cli" && descends(**pid))
            .map(|(pid, _)| *pid)
            .expect("quicmatch-cli under script")
    }

    async fn exit_status(mut self) -> std::process::ExitStatus {
        timeout(TEST_TIMEOUT, self.child.wait())
            .await
            .expect("waiting for exit")
            .expect("exit")
    }
}

/// The 36-character id after `"key":"` in the first JSON object of type `ty` shown at
/// or after byte `from`.
fn id_after(screen: &str, from: usize, ty: &str, key: &str) -> String {
    let line = screen[from..]
        .split("\r\n")
        .find(|line| line.contains(&format!("\"type\":\"{ty}\"")))
        .unwrap_or_else(|| panic!("no {ty} in {screen:?}"));
    let start = line
        .find(&format!("\"{key}\":\""))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        + key.len()
        + 4;
    line[start..start + 36].to_owned()
}

async fn peer(addr: std::net::SocketAddr, ca: &std::path::Path, device: &str) -> Socket {
    let config = ClientConfig::new(
        addr,
        Trust::CaFile(ca.to_owned()),
        Credentials::Device {
            id: device.to_owned(),
        },
    );
    Socket::connect(config).await.expect("peer connects")
}

/// Whether, within `within`, `peer` sees someone leave its match.
async fn sees_a_leave(peer: &Socket, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, peer.next_event()).await {
            Err(_) | Ok(None) => return false,
            Ok(Some(Event::MatchPresence(p))) if !p.leaves.is_empty() => return true,
            Ok(Some(_)) => {}
        }
    }
}

/// Typed commands run, with line editing; the up arrow brings back the last one; an
/// event prints while the prompt waits; Ctrl-D ends the input and the CLI leaves
/// politely and exits 0.
#[tokio::test]
async fn prompt_edits_recalls_and_ends_with_ctrl_d() {
    let Some(script) = script() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path());
    let mut term = Terminal::spawn(&script, addr, &ca, "device-prompt-ctrl-d");
    let at = term.wait_for(0, "\"type\":\"session\"").await;
    let at = term.wait_for(at, PROMPT).await;

    // Enter is a carriage return at a terminal.
    term.type_keys("ping\r").await;
    let at = term.wait_for(at, "\"type\":\"pong\"").await;
    let at = term.wait_for(at, PROMPT).await;
    // The up arrow brings back `ping`.
    term.type_keys("\x1b[A\r").await;
    let at = term.wait_for(at, "\"type\":\"pong\"").await;
    let at = term.wait_for(at, PROMPT).await;
    // `crate`, three times Ctrl-B (left), `e`: `create`.
    term.type_keys("crate\x02\x02\x02e\r").await;
    let from = at;
    let at = term.wait_for(at, "\"type\":\"match\"").await;
    let at = term.wait_for(at, PROMPT).await;
    let match_id = id_after(&term.screen.borrow(), from, "match", "match_id");

    // An event while the prompt waits for a line.
    let peer = peer(addr, &ca, "device-prompt-ctrl-d-peer").await;
    peer.join_match(match_id.parse().expect("match id"))
        .await
        .expect("peer joins");
    let at = term.wait_for(at, "\"type\":\"match_presence\"").await;
    term.wait_for(at, PROMPT).await;

    term.type_keys("\x04").await;
    assert!(
        sees_a_leave(&peer, Duration::from_secs(2)).await,
        "no leave within 2 s"
    );
    let status = term.exit_status().await;
    assert!(status.success(), "{status}");
    stop.cancel();
}

/// Ctrl-C at the prompt, with a line half typed, closes politely and exits 0.
#[tokio::test]
async fn ctrl_c_at_the_prompt_closes_politely() {
    let Some(script) = script() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path());
    let peer = peer(addr, &ca, "device-prompt-ctrl-c-peer").await;
    let m = peer.create_match(None).await.expect("create");
    let mut term = Terminal::spawn(&script, addr, &ca, "device-prompt-ctrl-c");
    let at = term.wait_for(0, PROMPT).await;
    // A prefix of an id the CLI has not seen is no id.
    let short = &m.match_id.to_string()[..8];
    term.type_keys(&format!("join {short}\r")).await;
    let at = term.wait_for(at, "\"type\":\"error\"").await;
    let at = term.wait_for(at, PROMPT).await;
    term.type_keys(&format!("join {}\r", m.match_id)).await;
    let at = term.wait_for(at, "\"type\":\"match\"").await;
    term.wait_for(at, PROMPT).await;

    term.type_keys("leave\x03").await;
    assert!(
        sees_a_leave(&peer, Duration::from_secs(2)).await,
        "no leave within 2 s"
    );
    let status = term.exit_status().await;
    assert!(status.success(), "{status}");
    stop.cancel();
}

/// SIGTERM while the prompt waits (the terminal in raw mode): the CLI exits 0 and puts
/// the terminal back as it found it (`stty -a` afterwards shows line mode and echo).
#[tokio::test]
async fn sigterm_at_the_prompt_puts_the_terminal_back() {
    let Some(script) = script() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path());
    let mut term = Terminal::spawn_in(&script, addr, &ca, "device-prompt-sigterm", |cli| {
        format!("{cli}; echo \"cli exited $?\"; stty -a")
    });
    let at = term.wait_for(0, PROMPT).await;
    term.type_keys("half a li").await;
    let at = term.wait_for(at, "half a li").await;
    let pid = term.cli_pid();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
    let at = term.wait_for(at, "cli exited 0").await;
    // The last item `stty -a` prints.
    term.wait_for(at, "flusho").await;
    let stty = term.screen.borrow()[at..].to_owned();
    let flags: Vec<&str> = stty.split_whitespace().collect();
    for flag in ["icanon", "echo", "isig", "icrnl"] {
        assert!(flags.contains(&flag), "{flag} in {stty:?}");
    }
    assert!(term.exit_status().await.success());
    stop.cancel();
}

/// Stdin at a terminal but stdout piped (`quicmatch-cli ... | tee log`): no prompt, the
/// lines are read as they are today, and Ctrl-D (end of input) exits 0.
#[tokio::test]
async fn piped_stdout_reads_plain_lines() {
    let Some(script) = script() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, stop) = start_server(dir.path());
    let mut term = Terminal::spawn_in(&script, addr, &ca, "device-prompt-piped", |cli| {
        format!("{cli} | cat; echo \"cli exited $?\"")
    });
    let at = term.wait_for(0, "\"type\":\"session\"").await;
    term.type_keys("ping\r").await;
    let at = term.wait_for(at, "\"type\":\"pong\"").await;
    term.type_keys("\x04").await;
    term.wait_for(at, "cli exited 0").await;
    assert!(!term.screen.borrow().contains(PROMPT));
    assert!(term.exit_status().await.success());
    stop.cancel();
}
