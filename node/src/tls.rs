//! TLS for the HTTP API, with rustls and its ring provider (the one
//! libp2p's QUIC already builds): the server's certificate from PEM files
//! (`--tls-cert`, `--tls-key`) or a self-signed one made once and kept in
//! the data dir (`--tls-self-signed`), its SHA-256 fingerprint, and the
//! CLI's verifier that accepts exactly the certificate it pins
//! (`--tls-fingerprint`), checking the handshake signatures as usual.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// Largest certificate or key file read, bytes.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files the operator gave.
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
    /// A self-signed certificate in `DATA_DIR/tls/`, made on first start.
    SelfSigned,
}

/// A server side ready to accept, and the fingerprint of its leaf.
pub struct ServerTls {
    /// The rustls configuration (HTTP/1.1 by ALPN).
    pub config: Arc<rustls::ServerConfig>,
    /// `sha256:<hex>` of the leaf certificate's DER.
    pub fingerprint: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `sha256:<64 hex>` of a certificate's DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut text = String::from("sha256:");
    for byte in digest {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Reads a fingerprint as `sha256:<hex>`, bare hex, or colon-separated
/// hex pairs (as `openssl x509 -fingerprint -sha256` prints it).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("SHA256:"))
        .or_else(|| trimmed.strip_prefix("sha256 Fingerprint="))
        .unwrap_or(trimmed);
    let hex_text: String = body.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&hex_text)
        .ok()
        .filter(|bytes| bytes.len() == 32)
        .ok_or_else(|| {
            format!("invalid --tls-fingerprint {text:?}: expected sha256:<64 hex digits>")
        })?;
    let mut pin = [0u8; 32];
    pin.copy_from_slice(&bytes);
    Ok(pin)
}

fn read_capped(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|error| format!("cannot read {what} {}: {error}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot read {what} {}: {error}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{what} {} is larger than {} KiB",
            path.display(),
            MAX_PEM_BYTES >> 10
        ));
    }
    Ok(bytes)
}

/// A server configuration from a PEM certificate chain and key.
pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerTls, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|error| format!("the TLS certificate is not PEM: {error}"))?;
    let leaf = certs
        .first()
        .ok_or("the TLS certificate file holds no certificate")?;
    let fingerprint = fingerprint(leaf.as_ref());
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|error| format!("the TLS key is not a PEM private key: {error}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| format!("the TLS certificate and key do not go together: {error}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        fingerprint,
    })
}

/// The server side from `source`; a self-signed certificate is made once
/// in `data_dir/tls/` (key mode 0600) for `names` and reused after.
pub fn server(source: &TlsSource, data_dir: &Path, names: &[String]) -> Result<ServerTls, String> {
    match source {
        TlsSource::Files { cert, key } => from_pem(
            &read_capped(cert, "--tls-cert")?,
            &read_capped(key, "--tls-key")?,
        ),
        TlsSource::SelfSigned => {
            let dir = data_dir.join("tls");
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !cert.exists() || !key.exists() {
                let made = rcgen::generate_simple_self_signed(names.to_vec())
                    .map_err(|error| format!("cannot make a TLS certificate: {error}"))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
                crate::datadir::write_secret(&key, made.key_pair.serialize_pem().as_bytes())
                    .map_err(|error| error.to_string())?;
                crate::datadir::write_atomic(&cert, made.cert.pem().as_bytes())
                    .map_err(|error| error.to_string())?;
            }
            from_pem(
                &read_capped(&cert, "the certificate")?,
                &read_capped(&key, "the key")?,
            )
        }
    }
}

/// A client configuration that trusts exactly the certificate whose
/// SHA-256 is `pin` (any name, any issuer), with signatures checked.
pub fn pinned_client(pin: [u8; 32]) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate is {}, not the one --tls-fingerprint pins",
                fingerprint(end_entity.as_ref())
            )))
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
    fn fingerprints_read_in_every_usual_spelling() {
        let der = b"not really a certificate";
        let printed = fingerprint(der);
        let pin = parse_fingerprint(&printed).expect("own format");
        assert_eq!(pin.as_slice(), Sha256::digest(der).as_slice());
        let bare = printed.trim_start_matches("sha256:").to_string();
        assert_eq!(parse_fingerprint(&bare), Ok(pin));
        let colons: Vec<String> = bare
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
            .collect();
        assert_eq!(parse_fingerprint(&colons.join(":")), Ok(pin));
        for bad in ["", "sha256:", "sha256:abc", &format!("{bare}00"), "zz"] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = server(&TlsSource::SelfSigned, dir.path(), &names).expect("made");
        let again = server(&TlsSource::SelfSigned, dir.path(), &names).expect("kept");
        assert_eq!(first.fingerprint, again.fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("tls/key.pem"))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_pem_is_refused_with_the_reason() {
        let error = from_pem(b"hello", b"world").err().expect("refused");
        assert!(error.contains("no certificate"), "{error}");
        let dir = tempfile::tempdir().expect("tempdir");
        let names = vec!["localhost".to_string()];
        server(&TlsSource::SelfSigned, dir.path(), &names).expect("made");
        let cert = std::fs::read(dir.path().join("tls/cert.pem")).expect("cert");
        let error = from_pem(
            &cert,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .err()
        .expect("refused");
        assert!(
            error.contains("do not go together") || error.contains("key"),
            "{error}"
        );
        let error = server(
            &TlsSource::Files {
                cert: dir.path().join("missing.pem"),
                key: dir.path().join("tls/key.pem"),
            },
            dir.path(),
            &names,
        )
        .err()
        .expect("refused");
        assert!(
            error.contains("--tls-cert") && error.contains("missing.pem"),
            "{error}"
        );
    }
}
