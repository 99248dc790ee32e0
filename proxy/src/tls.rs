//! TLS on both sides: terminating clients' TLS with certificates and keys (PEM; the one for
//! the name the client asks for, by SNI; ALPN `h2` and `http/1.1`), and verifying `https://` members' certificates, with the platform's roots by
//! default or the CA file given (`upstream_ca`). Verification is never turned off. rustls
//! with the `ring` provider (no cmake, no OpenSSL).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ProxyError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, ProxyError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| ProxyError::config(field, format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ProxyError::config(field, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ProxyError::config(
            field,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

/// Picks the certificate for a handshake by the name the client asked for (SNI): the first
/// whose leaf is valid for it, else the first one.
#[derive(Debug)]
struct BySni {
    keys: Vec<Arc<rustls::sign::CertifiedKey>>,
}

impl rustls::server::ResolvesServerCert for BySni {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let wanted = hello
            .server_name()
            .and_then(|n| rustls::pki_types::ServerName::try_from(n.to_owned()).ok());
        if let Some(name) = wanted {
            for k in &self.keys {
                let valid = k.end_entity_cert().ok().is_some_and(|leaf| {
                    webpki::EndEntityCert::try_from(leaf)
                        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
                });
                if valid {
                    return Some(k.clone());
                }
            }
        }
        self.keys.first().cloned()
    }
}

/// The acceptor for clients' TLS: one certificate and key per pair, chosen by SNI.
pub fn acceptor(pairs: &[(&Path, &Path)]) -> Result<tokio_rustls::TlsAcceptor, ProxyError> {
    let provider = provider();
    let mut keys = Vec::new();
    for (cert, key) in pairs {
        let chain = certs(cert, "--tls-cert")?;
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| ProxyError::config("--tls-key", format!("{}: {e}", key.display())))?;
        let certified =
            rustls::sign::CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| {
                ProxyError::config(
                    "--tls-key",
                    format!("{} does not go with {}: {e}", key.display(), cert.display()),
                )
            })?;
        keys.push(Arc::new(certified));
    }
    if keys.is_empty() {
        return Err(ProxyError::config(
            "--tls-cert",
            "no certificate given".into(),
        ));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::config("--tls-cert", e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { keys }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The client configuration for `https://` members: the platform's roots, or `ca`'s.
pub fn upstream(ca: Option<&Path>) -> Result<rustls::ClientConfig, ProxyError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::config("upstream TLS", e.to_string()))?;
    let config = match ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(path, "--upstream-ca")? {
                roots.add(c).map_err(|e| {
                    ProxyError::config("--upstream-ca", format!("{}: {e}", path.display()))
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt as _;
            builder
                .with_platform_verifier()
                .map_err(|e| ProxyError::config("upstream TLS", e.to_string()))?
                .with_no_client_auth()
        }
    };
    Ok(config)
}
