//! TLS on the listen address (`[tls] cert`, `key`): https, wss and TLS-wrapped SSE from the
//! same port, with rustls.
//!
//! TLS is a listener wrapper, not a change to how connections are served: [`TlsListener`]
//! takes any axum [`Listener`] (a plain `TcpListener`, or one that limits or tunes
//! connections) and yields streams that finished their handshake. Handshakes run in tasks
//! of their own, each bounded by a timeout, so a client that opens a socket and stalls
//! delays nobody else's handshake; at most [`MAX_PENDING_HANDSHAKES`] are in flight, and
//! connections beyond that are closed at once.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::task::JoinSet;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes in progress at once; connections beyond this are closed unanswered.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

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

/// A listener that serves TLS over another listener's connections.
///
/// The inner listener's `accept` must be cancel-safe (a `TcpListener`'s is, and so are
/// wrappers that only adjust the accepted stream): it is raced against finishing handshakes.
pub struct TlsListener<L: Listener> {
    inner: L,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Handshake<L>>,
}

/// A finished handshake (the stream and the peer's address), or `None` when it failed.
type Handshake<L> = Option<(TlsStream<<L as Listener>::Io>, <L as Listener>::Addr)>;

impl<L: Listener> TlsListener<L> {
    /// Wraps `inner`, serving `config`.
    pub fn new(inner: L, config: Arc<ServerConfig>) -> Self {
        TlsListener {
            inner,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl<L> Listener for TlsListener<L>
where
    L: Listener,
    L::Addr: std::fmt::Debug + 'static,
{
    type Io = TlsStream<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                (io, addr) = self.inner.accept() => {
                    if self.handshakes.len() >= MAX_PENDING_HANDSHAKES {
                        tracing::warn!(?addr, "too many TLS handshakes in progress; closing a new connection");
                        metrics::counter!("crier_limit_hits_total", "limit" => "tls_handshakes")
                            .increment(1);
                        continue;
                    }
                    let acceptor = self.acceptor.clone();
                    self.handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                            Ok(Ok(stream)) => Some((stream, addr)),
                            Ok(Err(e)) => {
                                tracing::debug!(?addr, error = %e, "TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(?addr, "TLS handshake timed out");
                                None
                            }
                        }
                    });
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
