//! TLS for the listeners (rustls on ring): a certificate chain and its
//! private key, PEM files as PostgreSQL's `ssl_cert_file`/`ssl_key_file`
//! and Kafka's `ssl.keystore.location` (PEM) take them.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ServerError;

/// An acceptor for the certificate chain in `cert` and the key in `key`
/// (PKCS#8, PKCS#1 or SEC1), offering `alpn` (PostgreSQL's direct TLS
/// needs "postgresql"; Kafka offers none).
pub fn acceptor(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<TlsAcceptor, ServerError> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        ServerError::Config(format!("TLS {what} {}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("certificate", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", cert, &e))?;
    if chain.is_empty() {
        return Err(bad("certificate", cert, &"no CERTIFICATE in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad("certificate and key", cert, &e))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}
