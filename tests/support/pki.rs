//! A test certificate authority: certificates for the proxy's TLS listeners
//! and for HTTPS test origins, written to files, and clients that trust it.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

/// A test CA and the files of the certificates it signs.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate written to `<name>.pem` / `<name>.key`.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("viaduct-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "viaduct test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        Pki { dir, ca }
    }

    /// Signs a leaf for `names` (DNS names, or IP addresses as text).
    pub fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        self.leaf_with(file, names, |_| {})
    }

    pub fn leaf_with(
        &self,
        file: &str,
        names: &[&str],
        edit: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        edit(&mut params);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }

    /// A client that trusts this CA and offers `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut config = rustls::ClientConfig::builder_with_provider(viaduct::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// The CA certificate as a PEM file (for `tls_ca`, `curl --cacert`).
    pub fn ca_file(&self) -> PathBuf {
        let file = self.dir.join("ca.pem");
        std::fs::write(&file, self.ca.pem()).unwrap();
        file
    }

    /// A server configuration for `names`, offering `alpn`.
    pub fn server(&self, names: &[&str], alpn: &[&[u8]]) -> rustls::ServerConfig {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(viaduct::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
