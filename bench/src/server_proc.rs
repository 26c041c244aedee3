//! Server processes the benchmarks start: a `quicmatch` server with a fresh
//! certificate directory, or any child the caller spawned; killed when dropped.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A server the benchmark started (or was pointed at).
pub(crate) struct ServerProc {
    child: Option<Child>,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its certificate, to trust.
    pub(crate) ca: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A UDP port free right now on loopback.
pub(crate) fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A binary in the same directory as this one.
pub(crate) fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no directory for {}", exe.display()))?;
    Ok(dir.join(name))
}

impl ServerProc {
    /// A server someone else runs.
    pub(crate) fn existing(addr: SocketAddr, ca: Option<PathBuf>) -> Self {
        Self {
            child: None,
            addr,
            ca,
            _dir: None,
        }
    }

    /// A child the caller spawned, listening on `addr`.
    pub(crate) fn from_child(child: Child, addr: SocketAddr) -> Self {
        Self {
            child: Some(child),
            addr,
            ca: None,
            _dir: None,
        }
    }

    /// The same server, with the certificate to trust and the directory it lives in
    /// (removed when the server is dropped).
    pub(crate) fn with_cert(mut self, ca: PathBuf, dir: tempfile::TempDir) -> Self {
        self.ca = Some(ca);
        self._dir = Some(dir);
        self
    }

    /// Starts `quicmatch serve` on a free loopback port with a fresh certificate
    /// directory (and `config_toml`, if given), plus `extra` arguments, and waits until
    /// it has written its certificate.
    pub(crate) async fn quicmatch(
        bin: Option<&Path>,
        config_toml: Option<&str>,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        Self::quicmatch_in(bin, config_toml, extra, None).await
    }

    /// Like [`quicmatch`](Self::quicmatch), with the certificate (and key) of
    /// `certs_dir` when given: another server of the same deployment.
    pub(crate) async fn quicmatch_in(
        bin: Option<&Path>,
        config_toml: Option<&str>,
        extra: &[String],
        certs_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        Self::quicmatch_on(bin, config_toml, extra, certs_dir, false).await
    }

    /// Like [`quicmatch_in`](Self::quicmatch_in); with `any_address` the server listens
    /// on every IPv4 address (`0.0.0.0`), as a server that must name each reply's
    /// source does, and is reached on loopback.
    pub(crate) async fn quicmatch_on(
        bin: Option<&Path>,
        config_toml: Option<&str>,
        extra: &[String],
        certs_dir: Option<&Path>,
        any_address: bool,
    ) -> anyhow::Result<Self> {
        let addr: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
        let listen = if any_address {
            SocketAddr::from(([0, 0, 0, 0], addr.port()))
        } else {
            addr
        };
        let bin = match bin {
            Some(b) => b.to_path_buf(),
            None => sibling_binary("quicmatch")?,
        };
        let dir = tempfile::tempdir()?;
        let certs = certs_dir.unwrap_or(dir.path()).to_path_buf();
        let mut cmd = Command::new(&bin);
        cmd.args(["serve", "--listen", &listen.to_string(), "--certs-dir"])
            .arg(&certs)
            .args(extra)
            // Its store (restart records included) in the run's own directory.
            .env("QUICMATCH_DATA_DIR", dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        if let Some(toml) = config_toml {
            let path = dir.path().join("bench.toml");
            std::fs::write(&path, toml)?;
            cmd.arg("--config").arg(path);
        }
        let child = crate::pin::spawn(&mut cmd)
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", bin.display()))?;
        let mut proc = Self {
            child: Some(child),
            addr,
            ca: None,
            _dir: None,
        };
        let ca = certs.join("server.crt");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ca.exists() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "server did not write its certificate"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proc.ca = Some(ca);
        proc._dir = Some(dir);
        Ok(proc)
    }

    /// Kills the server with SIGKILL now (a crash, not a shutdown).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's process id, when the benchmark started it.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}
