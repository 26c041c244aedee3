//! Which server certificates the SDK accepts: explicit certificates or a CA file, a
//! pinned SHA-256 fingerprint (for LAN play tests with a development certificate), or
//! the platform's roots. There is deliberately no "accept anything" option.

use std::{path::PathBuf, sync::Arc};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::ConnectError;

/// How the client decides the server's certificate is genuine. Marked
/// `#[non_exhaustive]`: more ways may come, so a `match` on it needs a `_` arm.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Trust {
    /// Trust anchors given in memory (a CA, or the server's own self-signed certificate).
    Certificates(Vec<CertificateDer<'static>>),
    /// A PEM file holding one or more CA (or self-signed server) certificates.
    CaFile(PathBuf),
    /// The SHA-256 of the server's leaf certificate, as printed by `quicmatch serve`.
    /// Names are not checked: the pin alone identifies the server.
    Pin([u8; 32]),
    /// The operating system's trust store, for servers with a public certificate.
    PlatformRoots,
}

impl Trust {
    /// Parses a fingerprint in hex, with or without `:` separators.
    pub fn pin(hex: &str) -> Result<Self, ConnectError> {
        let clean: String = hex.chars().filter(|c| *c != ':').collect();
        let bad = || ConnectError::Config(format!("pin must be 64 hex digits, got {hex:?}"));
        if clean.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = clean
                .get(2 * i..2 * i + 2)
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(bad)?;
        }
        Ok(Self::Pin(out))
    }

    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, ConnectError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        let roots = |certs: Vec<CertificateDer<'static>>| {
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(ConnectError::Config("no usable trust certificate".into()));
            }
            Ok(roots)
        };
        let config = match self {
            Self::Certificates(certs) => builder
                .with_root_certificates(roots(certs.clone())?)
                .with_no_client_auth(),
            Self::CaFile(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| ConnectError::Config(format!("{}: {e}", path.display())))?;
                builder
                    .with_root_certificates(roots(certs)?)
                    .with_no_client_auth()
            }
            Self::PlatformRoots => {
                let found = rustls_native_certs::load_native_certs();
                builder
                    .with_root_certificates(roots(found.certs)?)
                    .with_no_client_auth()
            }
            Self::Pin(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier {
                    pin: *pin,
                    provider,
                }))
                .with_no_client_auth(),
        };
        Ok(config)
    }
}

/// Accepts exactly the certificate whose SHA-256 is the pin, and still checks that the
/// server holds its private key (the handshake signature).
/// The server's certificate is not the pinned one: says both, so the user can compare
/// them with the server's banner.
#[derive(Debug, thiserror::Error)]
#[error("the server presented certificate fingerprint {presented}, but {pinned} was pinned: check the fingerprint in the server's banner")]
struct PinMismatch {
    presented: String,
    pinned: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity);
        if digest.as_ref() == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                    presented: hex(digest.as_ref()),
                    pinned: hex(&self.pin),
                }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_with_or_without_colons() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert!(matches!(Trust::pin(&hex), Ok(Trust::Pin(p)) if p == [0xab; 32]));
        assert!(matches!(Trust::pin(&colons), Ok(Trust::Pin(p)) if p == [0xab; 32]));
        assert!(Trust::pin("abcd").is_err());
        assert!(Trust::pin(&"zz".repeat(32)).is_err());
    }
}
