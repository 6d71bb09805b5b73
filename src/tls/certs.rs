//! Certificates and keys from PEM files: the chain (leaf first), the private
//! key (PKCS#8, PKCS#1 RSA or SEC1 EC), the names the leaf is valid for, and
//! its expiry, with errors that name the file.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::CertificateConfig;

/// One certificate ready to serve.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// Host names (lowercase; `*.example.com` for wildcards) SNI selects it by.
    pub hosts: Vec<String>,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
}

impl Loaded {
    pub fn expired(&self) -> bool {
        self.not_after < SystemTime::now()
    }
}

/// Reads and checks one `[[tls.certificate]]`.
pub fn load(entry: &CertificateConfig, provider: &CryptoProvider) -> Result<Loaded, String> {
    let cert_path = entry.cert.display();
    let key_path = entry.key.display();
    let chain = read_chain(&entry.cert)?;
    let key = PrivateKeyDer::from_pem_file(&entry.key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{key_path}: no private key (expected a PEM PRIVATE KEY block)")
        }
        e => format!("{key_path}: cannot read the private key: {}", pem_error(&e)),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{key_path}: unsupported private key: {e}"))?;
    let leaf = chain[0].clone();
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|_| format!("{key_path} does not match the certificate in {cert_path}"))?;
    let (names, not_after) = describe(&leaf).map_err(|e| format!("{cert_path}: {e}"))?;
    let hosts = match &entry.hosts {
        Some(hosts) => hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        None => names,
    };
    if hosts.is_empty() {
        return Err(format!(
            "{cert_path}: the certificate names no DNS host; list them in `hosts`"
        ));
    }
    Ok(Loaded {
        key: Arc::new(certified),
        hosts,
        not_after,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{shown}: cannot read: {}", pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: {}", pem_error(&e)))?;
    if chain.is_empty() {
        return Err(format!(
            "{shown}: no certificate (expected PEM CERTIFICATE blocks, leaf first)"
        ));
    }
    Ok(chain)
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

/// The leaf's DNS names (subjectAltName, else the common name) and notAfter.
fn describe(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime), String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("the leaf certificate does not parse: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.to_ascii_lowercase());
            }
        }
    }
    let seconds = cert.validity().not_after.timestamp();
    let not_after = if seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds as u64)
    } else {
        SystemTime::UNIX_EPOCH
    };
    Ok((names, not_after))
}
