//! TLS on the listen address (`[tls] cert`, `key`): https, wss and TLS-wrapped SSE from the
//! same port, with rustls.
//!
//! This module turns the configured files into a rustls configuration; the accept loop
//! (`listener.rs`) runs each connection's handshake in the connection's own task, bounded by
//! [`HANDSHAKE_TIMEOUT`] and counted against `max_connections` like any connection, so a
//! client that opens a socket and stalls delays nobody else's handshake.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the server's TLS configuration from PEM text: a certificate chain (leaf first) and
/// its private key (PKCS#8, PKCS#1 or SEC1). Offers HTTP/1.1 over ALPN.
pub fn server_config_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig, String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("not a PEM private key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no usable TLS version: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reads `cert` and `key` (PEM files) into a TLS configuration. The error names the key
/// (`tls.cert` or `tls.key`) at fault and what is wrong with it.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, (&'static str, String)> {
    let cert_pem = std::fs::read(cert)
        .map_err(|e| ("tls.cert", format!("cannot read {}: {e}", cert.display())))?;
    let key_pem = std::fs::read(key)
        .map_err(|e| ("tls.key", format!("cannot read {}: {e}", key.display())))?;
    CertificateDer::pem_slice_iter(&cert_pem)
        .next()
        .ok_or_else(|| {
            (
                "tls.cert",
                format!("{} holds no PEM certificate", cert.display()),
            )
        })?
        .map_err(|e| ("tls.cert", format!("{}: {e}", cert.display())))?;
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        (
            "tls.key",
            format!("{} holds no PEM private key: {e}", key.display()),
        )
    })?;
    server_config_from_pem(&cert_pem, &key_pem)
        .map(Arc::new)
        .map_err(|e| ("tls.key", format!("{}: {e}", key.display())))
}
