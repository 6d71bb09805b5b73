//! Picks the certificate for a handshake by SNI (RFC 6066 §3): an exact host
//! name first, then a wildcard for its parent domain (`*.example.com` covers
//! one label, RFC 6125 §6.4.3), else the first configured certificate, which
//! also answers clients that send no SNI (those that connect by IP address).
//! The table is replaced whole on reload; handshakes in progress keep theirs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::Loaded;

#[derive(Debug)]
pub struct SniResolver {
    table: RwLock<Arc<Table>>,
}

#[derive(Debug)]
struct Table {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the parent domain: `example.com` for `*.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl Table {
    /// `loaded` must not be empty (the configuration checks it).
    fn new(loaded: &[Loaded]) -> Table {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for cert in loaded {
            for host in &cert.hosts {
                // The first certificate that names a host keeps it.
                match host.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()),
                    None => exact.entry(host.clone()),
                }
                .or_insert_with(|| cert.key.clone());
            }
        }
        Table {
            exact,
            wildcard,
            default: loaded[0].key.clone(),
        }
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(key) = self.wildcard.get(parent) {
                return key.clone();
            }
        }
        self.default.clone()
    }
}

impl SniResolver {
    pub fn new(loaded: &[Loaded]) -> SniResolver {
        SniResolver {
            table: RwLock::new(Arc::new(Table::new(loaded))),
        }
    }

    /// New handshakes use `loaded` from now on.
    pub fn replace(&self, loaded: &[Loaded]) {
        let table = Arc::new(Table::new(loaded));
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    fn current(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().pick(hello.server_name()))
    }
}
