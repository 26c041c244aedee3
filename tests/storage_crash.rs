//! Crash safety of the store: the real `quicmatch` binary as a child process, SDK
//! clients writing to it, and `kill -9` at a random moment, fifty times over. After
//! every restart each write the server acknowledged is there (an object that was
//! overwritten holds the acknowledged version or a later one), and the store opened
//! without an error. A process kill leaves the page cache intact, so this tests that
//! acknowledgements follow commits and that every commit is whole, not power loss.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use quicmatch_client::{ClientConfig, Credentials, Socket, Trust};
use tokio::time::timeout;

/// Every wait is bounded by this (the binary is a debug build).
const TIMEOUT: Duration = Duration::from_secs(20);
/// Kills (and restarts) in one run.
const KILLS: usize = 50;
/// Clients writing at once.
const WRITERS: usize = 4;
/// Keys each writer keeps overwriting.
const KEYS_PER_WRITER: usize = 8;
/// New objects writer 0 creates per run of the server, at most.
const NEW_PER_RUN: usize = 10;

/// A running server, killed when dropped (a failing test included).
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every output line so far, for failure messages.
    seen: Vec<String>,
}

impl Server {
    fn start(dir: &std::path::Path) -> (Self, String, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quicmatch"));
        command
            .args(["serve", "--no-advertise", "--listen", "127.0.0.1:0"])
            .arg("--certs-dir")
            .arg(dir.join("certs"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("QUICMATCH_") {
                command.env_remove(name);
            }
        }
        // The writers go as fast as they can; no limit should refuse them.
        for (key, value) in [
            ("QUICMATCH_SESSION__REQUESTS_PER_SECOND", "100000"),
            ("QUICMATCH_SESSION__REQUEST_BURST", "100000"),
            ("QUICMATCH_STORAGE__WRITES_PER_SECOND", "100000"),
            ("QUICMATCH_STORAGE__WRITE_BURST", "100000"),
        ] {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn quicmatch");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut server = Self {
            child,
            lines,
            seen: Vec::new(),
        };
        let (mut addr, mut fingerprint) = (None, None);
        let deadline = Instant::now() + TIMEOUT;
        while addr.is_none() || fingerprint.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = server
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no banner ({e}); output:\n{}", server.seen.join("\n")));
            if let Some(a) = line.strip_prefix("quicmatch ready on ") {
                addr = a.split_whitespace().next().map(str::to_owned);
            }
            if let Some(f) = line
                .trim()
                .strip_prefix("certificate fingerprint (SHA-256): ")
            {
                fingerprint = Some(f.to_owned());
            }
            server.seen.push(line);
        }
        let (addr, fingerprint) = (addr.unwrap_or_default(), fingerprint.unwrap_or_default());
        (server, addr, fingerprint)
    }

    /// Whether the server said it repaired the store after an unclean stop.
    fn repaired(&self) -> bool {
        self.seen.iter().any(|l| l.contains("not closed cleanly"))
    }

    /// Output lines that say something went wrong.
    fn troubles(&mut self) -> Vec<String> {
        self.seen.extend(self.lines.try_iter());
        self.seen
            .iter()
            .filter(|l| l.contains("ERROR") || l.contains("panicked"))
            .cloned()
            .collect()
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(addr: &str, fingerprint: &str) -> Socket {
    let mut config = ClientConfig::new(
        addr.parse().expect("an address"),
        Trust::pin(fingerprint).expect("pin"),
        Credentials::Device {
            id: "device-crash-writer".into(),
        },
    );
    config.reconnect_for = Duration::ZERO;
    config.request_timeout = TIMEOUT;
    timeout(TIMEOUT, Socket::connect(config))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// What the server acknowledged: per key, the version and value of the last
/// acknowledged write.
type Acked = Arc<Mutex<HashMap<String, (String, String)>>>;

fn snapshot(acked: &Acked) -> HashMap<String, (String, String)> {
    acked.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Checks every acknowledged write against what the restarted server holds.
async fn check(socket: &Socket, acked: &HashMap<String, (String, String)>, round: usize) {
    let (mut stored, mut cursor) = (HashMap::new(), None::<String>);
    loop {
        let mut list = socket.list_storage_objects("crash").limit(100);
        if let Some(c) = cursor.take() {
            list = list.cursor(c);
        }
        let page = timeout(TIMEOUT, list)
            .await
            .expect("a listing in time")
            .expect("list");
        stored.extend(
            page.objects
                .into_iter()
                .map(|o| (o.key, (o.version, o.value))),
        );
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    for (key, (version, value)) in acked {
        let (have_version, have_value) = stored
            .get(key)
            .unwrap_or_else(|| panic!("after kill {round}: acknowledged {key} is missing"));
        // Versions are fixed-width hex, so they compare as numbers.
        assert!(
            have_version >= version,
            "after kill {round}: {key} went back from {version} to {have_version}"
        );
        if have_version == version {
            assert_eq!(have_value, value, "after kill {round}: {key} at {version}");
        }
        if key.starts_with("new-") {
            assert_eq!(
                have_version, version,
                "after kill {round}: {key} is written once"
            );
        }
    }
}

/// One writer: overwrites its keys in turn (writer 0 also creates new objects) until
/// aborted, recording what was acknowledged and counting it in `acks`.
async fn write(
    socket: Arc<Socket>,
    writer: usize,
    run: usize,
    acked: Acked,
    acks: Arc<AtomicUsize>,
) {
    let mut n = 0usize;
    loop {
        let (key, new) = if writer == 0 && n % 2 == 1 && n / 2 < NEW_PER_RUN {
            (format!("new-{run}-{n}"), true)
        } else {
            (format!("w{writer}-k{}", n % KEYS_PER_WRITER), false)
        };
        let value = format!("{{\"run\":{run},\"n\":{n}}}");
        let write = socket.write_storage_object("crash", key.as_str(), value.as_str());
        let write = if new { write.if_absent() } else { write };
        match write.await {
            Ok(ack) => {
                acked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, (ack.version, value));
                acks.fetch_add(1, Ordering::Relaxed);
            }
            // The server is going away; only acknowledged writes count.
            Err(_) => return,
        }
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acked: Acked = Arc::default();
    let acks = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut repairs = 0;
    for run in 0..=KILLS {
        let (mut server, addr, fingerprint) = Server::start(dir.path());
        let sockets: Vec<Arc<Socket>> = {
            let mut sockets = Vec::new();
            for _ in 0..WRITERS {
                sockets.push(Arc::new(connect(&addr, &fingerprint).await));
            }
            sockets
        };
        // The store opened: what was acknowledged before the last kill is all there.
        check(&sockets[0], &snapshot(&acked), run).await;
        let troubles = server.troubles();
        assert!(troubles.is_empty(), "after kill {run}: {troubles:#?}");
        repairs += usize::from(server.repaired());
        if run == KILLS {
            server.kill();
            break;
        }
        let before = acks.load(Ordering::Relaxed);
        let writers: Vec<_> = sockets
            .iter()
            .enumerate()
            .map(|(i, s)| tokio::spawn(write(s.clone(), i, run, acked.clone(), acks.clone())))
            .collect();
        // Some writes land, then the kill comes at a random moment among them.
        let deadline = Instant::now() + TIMEOUT;
        while acks.load(Ordering::Relaxed) == before {
            assert!(
                Instant::now() < deadline,
                "run {run}: no write was acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..150))).await;
        server.kill();
        for w in writers {
            w.abort();
        }
    }
    // Every kill left the store to be recovered (none was a clean stop).
    assert_eq!(repairs, KILLS, "restarts that repaired the store");
    let total = snapshot(&acked).len();
    assert!(
        total > WRITERS * KEYS_PER_WRITER,
        "only {total} keys written"
    );
    // The last kill's store, opened here: every record reads back.
    let config = quicmatch::Config {
        data_dir: dir.path().join("data"),
        ..quicmatch::Config::default()
    };
    let mut exported = Vec::new();
    let count = tokio::task::spawn_blocking(move || {
        let storage = quicmatch::storage::Storage::open(&config).expect("the store opens");
        let count = storage.export(&mut exported).expect("every record reads");
        storage.close();
        count
    })
    .await
    .expect("join");
    // At least: creates whose acknowledgement the kill cut off may be there too.
    assert!(count as usize >= total, "{count} objects for {total} keys");
    eprintln!(
        "{KILLS} kills, {} acknowledged writes, {total} objects, {:?}",
        acks.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}
