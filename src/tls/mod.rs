//! TLS on the listeners (rustls with the ring provider): certificates chosen
//! by SNI, ALPN `h2` and `http/1.1`, TLS 1.2 and 1.3 only, certificates
//! re-read on reload. After the handshake a TLS connection is served exactly
//! like a plain one (`server::connection`).

mod certs;
mod client;
mod resolver;

use std::io;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use tokio_rustls::TlsAcceptor;

use crate::config::{CertificateConfig, TlsConfig};
pub use certs::Loaded;
pub use client::{describe_failure, Alpn, TlsClient};
use resolver::SniResolver;

/// The crypto provider every TLS configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the TLS listeners share: the acceptor and the certificates behind it.
pub struct TlsServer {
    acceptor: TlsAcceptor,
    resolver: Arc<SniResolver>,
    certificates: std::sync::Mutex<Vec<CertificateConfig>>,
    provider: Arc<CryptoProvider>,
}

impl TlsServer {
    /// Loads every certificate; fails with a message naming the file.
    pub fn new(tls: &TlsConfig, http2: bool) -> Result<TlsServer, String> {
        let provider = provider();
        let loaded = load_all(&tls.certificate, &provider)?;
        for (cert, entry) in loaded.iter().zip(&tls.certificate) {
            if cert.expired() {
                tracing::warn!(cert = %entry.cert.display(), "TLS certificate has expired");
            }
        }
        let resolver = Arc::new(SniResolver::new(&loaded));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // RFC 7301: offer h2 first when HTTP/2 is on; hyper's auto server
        // then sees the h2 preface on the decrypted stream.
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(TlsServer {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            certificates: std::sync::Mutex::new(tls.certificate.clone()),
            provider,
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Re-reads the certificate files. On any error the old certificates
    /// stay in use and the error names the file.
    pub fn reload(&self) -> Result<usize, String> {
        let certificates = self.lock().clone();
        self.replace(certificates)
    }

    /// Serves `certificates` (a reloaded configuration's list) from the next
    /// handshake on; on any error the old ones stay.
    pub fn replace(&self, certificates: Vec<CertificateConfig>) -> Result<usize, String> {
        let loaded = load_all(&certificates, &self.provider)?;
        self.resolver.replace(&loaded);
        *self.lock() = certificates;
        Ok(loaded.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CertificateConfig>> {
        self.certificates.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn load_all(
    entries: &[CertificateConfig],
    provider: &CryptoProvider,
) -> Result<Vec<Loaded>, String> {
    if entries.is_empty() {
        return Err("[tls] listen is set but no [[tls.certificate]] is configured".into());
    }
    entries.iter().map(|e| certs::load(e, provider)).collect()
}

/// `--check`: every certificate file problem as an error, an expired
/// certificate as a warning.
pub fn check(tls: &TlsConfig) -> (Vec<String>, Vec<String>) {
    let provider = provider();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if !tls.listen.is_empty() && tls.certificate.is_empty() {
        errors.push("[tls] listen is set but no [[tls.certificate]] is configured".into());
    }
    for entry in &tls.certificate {
        match certs::load(entry, &provider) {
            Ok(loaded) if loaded.expired() => warnings.push(format!(
                "{}: the certificate expired on {}",
                entry.cert.display(),
                httpdate::fmt_http_date(loaded.not_after)
            )),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    (errors, warnings)
}

/// The `reason` label of `viaduct_tls_handshake_errors_total` for a failed
/// handshake (a small fixed set).
pub fn handshake_failure(e: &io::Error) -> &'static str {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. } => "protocol",
            rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => {
                "incompatible"
            }
            rustls::Error::AlertReceived(_) => "alert",
            _ => "other",
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => "closed",
        io::ErrorKind::InvalidData => "protocol",
        _ => "other",
    }
}
