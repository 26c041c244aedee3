//! Certificates and secrets: load PEM files, or generate a development certificate and a
//! token-signing secret into `certs/`, and build the TLS 1.3 configuration.
//!
//! The generated certificate names localhost, the loopback addresses, this host's name
//! and its LAN addresses, so LAN play testers can connect by IP and pin its SHA-256
//! fingerprint, which the server logs at start.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use quicmatch_protocol::{ALPN, ALPN_V2, ALPN_V3};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// File names inside the certificates directory.
pub const CERT_FILE: &str = "server.crt";
/// The private key of [`CERT_FILE`]; never committed.
pub const KEY_FILE: &str = "server.key";
/// The token-signing secret, hex; never committed, never logged.
pub const SECRET_FILE: &str = "session.secret";

/// A certificate chain with its private key.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// A certificate or secret problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Certificate generation or TLS setup failed.
    #[error("tls: {0}")]
    Setup(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.into(),
        source,
    }
}

/// Loads a PEM certificate chain and private key.
pub fn load_pem(cert: &Path, key: &Path) -> Result<TlsMaterial, TlsError> {
    let pem_err = |path: &Path, reason: String| TlsError::Pem {
        path: path.into(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err(cert, "no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e.to_string()))?;
    Ok(TlsMaterial { chain, key })
}

/// The names a development certificate covers on this machine.
pub fn dev_names() -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = gethostname::gethostname().to_str() {
        if !host.is_empty() {
            names.push(host.to_owned());
        }
    }
    if let Ok(ifaces) = if_addrs::get_if_addrs() {
        names.extend(
            ifaces
                .into_iter()
                .filter(|i| !i.is_loopback())
                .map(|i| i.ip().to_string()),
        );
    }
    names.sort();
    names.dedup();
    names
}

/// Generates a self-signed certificate for `names`.
pub fn generate(names: Vec<String>) -> Result<TlsMaterial, TlsError> {
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Setup(e.to_string()))?;
    Ok(TlsMaterial {
        chain: vec![certified.cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()).into(),
    })
}

/// Loads `dir/server.crt` and `dir/server.key`, or generates a development certificate
/// there when either is missing. Returns the material and whether it was generated.
pub fn load_or_generate(dir: &Path) -> Result<(TlsMaterial, bool), TlsError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        return Ok((load_pem(&cert_path, &key_path)?, false));
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let names = dev_names();
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Setup(e.to_string()))?;
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
    fs::write(&cert_path, certified.cert.pem()).map_err(io_err(&cert_path))?;
    Ok((load_pem(&cert_path, &key_path)?, true))
}

/// Reads `dir/session.secret`, or generates 32 random bytes into it.
pub fn load_or_create_secret(dir: &Path) -> Result<Vec<u8>, TlsError> {
    let path = dir.join(SECRET_FILE);
    if path.exists() {
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        return match crate::auth::decode_hex(&text) {
            Some(bytes) if bytes.len() >= 32 => Ok(bytes),
            _ => Err(TlsError::Pem {
                path,
                reason: "expected at least 32 hex-encoded bytes".into(),
            }),
        };
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let bytes = crate::auth::Secret::random_bytes()
        .map_err(|_| TlsError::Setup("system random generator failed".into()))?;
    write_private(&path, crate::auth::encode_hex(&bytes).as_bytes())?;
    Ok(bytes.to_vec())
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::io::Write as _;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(contents).map_err(io_err(path))
}

/// SHA-256 of a certificate's DER bytes, as lowercase hex: what `--pin` takes.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    crate::auth::encode_hex(ring::digest::digest(&ring::digest::SHA256, cert).as_ref())
}

/// The rustls server configuration: TLS 1.3 only, ALPN required, no 0-RTT.
pub fn server_crypto(material: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(material.chain.clone(), material.key.clone_key())
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    // Newest first: a client offering several gets the newest it knows.
    config.alpn_protocols = vec![ALPN_V3.to_vec(), ALPN_V2.to_vec(), ALPN.to_vec()];
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_loads_the_same_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, generated) = load_or_generate(dir.path()).expect("generate");
        assert!(generated);
        let (second, generated) = load_or_generate(dir.path()).expect("load");
        assert!(!generated);
        assert_eq!(fingerprint(&first.chain[0]), fingerprint(&second.chain[0]));
        assert_eq!(fingerprint(&first.chain[0]).len(), 64);
        let s1 = load_or_create_secret(dir.path()).expect("secret");
        let s2 = load_or_create_secret(dir.path()).expect("secret");
        assert_eq!(s1, s2);
        assert_eq!(s1.len(), 32);
        server_crypto(&first).expect("rustls accepts it");
    }

    #[test]
    fn dev_names_cover_loopback() {
        let names = dev_names();
        for n in ["localhost", "127.0.0.1", "::1"] {
            assert!(names.iter().any(|x| x == n), "{n}");
        }
    }
}
