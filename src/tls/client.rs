//! TLS to origins: a rustls client configuration per set of trust settings
//! (Mozilla's roots from webpki-roots plus any configured CA files, or no
//! verification when a route says `tls_verify = false`), and the words a
//! person needs when a handshake fails.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

/// The ALPN protocols offered to an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    /// `h2` first, then `http/1.1`: the origin chooses.
    Auto,
    Http2,
}

/// One way of connecting to origins over TLS.
pub struct TlsClient {
    connector: TlsConnector,
    alpn: Alpn,
    /// Distinguishes pooled connections made with different settings.
    id: usize,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

impl TlsClient {
    /// `extra_ca`: PEM files of CAs trusted besides the public roots.
    pub fn new(extra_ca: &[PathBuf], verify: bool, alpn: Alpn) -> Result<TlsClient, String> {
        let provider: Arc<CryptoProvider> = super::provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS: {e}"))?;
        let mut config = if verify {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            for file in extra_ca {
                let shown = file.display();
                let certs = CertificateDer::pem_file_iter(file)
                    .map_err(|e| format!("{shown}: cannot read: {e:?}"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{shown}: {e:?}"))?;
                if certs.is_empty() {
                    return Err(format!(
                        "{shown}: no CA certificate (expected PEM CERTIFICATE blocks)"
                    ));
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{shown}: not a usable CA certificate: {e}"))?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth()
        };
        config.alpn_protocols = match alpn {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http2 => vec![b"h2".to_vec()],
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            alpn,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn alpn(&self) -> Alpn {
        self.alpn
    }

    pub fn id(&self) -> usize {
        self.id
    }

    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    /// The name sent as SNI and checked against the certificate.
    pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string())
            .map_err(|_| format!("{host:?} is not a valid TLS server name"))
    }
}

/// What went wrong in a handshake with an origin, in a few words.
pub fn describe_failure(e: &std::io::Error, host: &str) -> String {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return e.to_string();
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "its certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "its certificate is not valid yet".into()
            }
            CertificateError::UnknownIssuer => {
                "its certificate was issued by an unknown CA (set tls_ca for a private CA)".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("its certificate is not valid for {host}")
            }
            CertificateError::Revoked => "its certificate has been revoked".into(),
            CertificateError::BadSignature => "its certificate has a bad signature".into(),
            other => format!("its certificate was refused: {other:?}"),
        },
        rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol) => {
            "it speaks none of the protocols offered (ALPN)".into()
        }
        rustls::Error::AlertReceived(alert) => format!("it sent the TLS alert {alert:?}"),
        rustls::Error::NoApplicationProtocol => {
            "it speaks none of the protocols offered (ALPN)".into()
        }
        rustls::Error::PeerIncompatible(why) => format!("no common TLS parameters: {why:?}"),
        other => other.to_string(),
    }
}

/// `tls_verify = false`: any certificate is accepted, but the handshake's
/// signatures are still checked (the connection is encrypted, not authenticated).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
