//! Servers in processes of their own, for tests that must kill or freeze one: the test
//! binary started again to run only its `server_process` test, which serves when the
//! named environment variable carries its spec and prints `READY <addr> <fingerprint>`.
//! The child's standard output comes back line by line through a channel.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// A server process and the lines it prints.
pub struct Child {
    pub process: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Child {
    /// Starts this test binary's `server_process` with `env` set to `spec`.
    pub fn spawn(env: &str, spec: &str) -> Self {
        let mut process = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "server_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(env, spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let out = process.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { process, lines }
    }

    /// The first line containing `prefix` (from the prefix on), failing after `wait`.
    pub fn wait_for(&self, prefix: &str, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // libtest may print its own "test ... " before ours on the same line.
                Ok(line) if line.contains(prefix) => {
                    return line[line.find(prefix).unwrap_or(0)..].to_owned()
                }
                Ok(_) => {}
                Err(e) => panic!("server never printed {prefix:?}: {e}"),
            }
        }
    }

    /// Waits for `READY <addr> <fingerprint>`.
    pub fn ready(&self, wait: Duration) -> (SocketAddr, String) {
        let ready = self.wait_for("READY ", wait);
        let mut words = ready.split_whitespace().skip(1);
        let addr = words.next().expect("addr").parse().expect("addr");
        let fingerprint = words.next().expect("fingerprint").to_owned();
        (addr, fingerprint)
    }
}
