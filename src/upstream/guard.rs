//! Where the forward proxy may connect. The check is made on resolved
//! addresses and the caller connects to exactly the addresses returned, so a
//! name that resolves differently a moment later (DNS rebinding) cannot slip
//! past it. By default link-local networks (cloud metadata services) and the
//! proxy's own admin listener are refused.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::config::{Destination, HostPattern};
use crate::proxy::routes::normalize_host;

#[derive(Debug, Clone)]
pub struct Guard {
    rules: Vec<Destination>,
    /// The admin listener: refused at its exact address (any local address
    /// when it listens on all of them).
    admin: SocketAddr,
}

/// Why a destination could not be used.
#[derive(Debug)]
pub enum GuardError {
    Denied(String),
    Resolve(String),
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::Denied(host) => write!(f, "destination {host} is not allowed"),
            GuardError::Resolve(host) => write!(f, "host name {host} could not be resolved"),
        }
    }
}

impl std::error::Error for GuardError {}

impl Guard {
    pub fn new(rules: Vec<Destination>, admin: SocketAddr) -> Guard {
        Guard { rules, admin }
    }

    fn host_denied(&self, host: &str) -> bool {
        self.rules.iter().any(|rule| match rule {
            Destination::Host(pattern) => pattern.matches(host) && *pattern != HostPattern::Any,
            Destination::Network(_) => false,
        })
    }

    pub fn addr_denied(&self, addr: SocketAddr) -> bool {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr.ip()),
            v4 => v4,
        };
        let admin = addr.port() == self.admin.port()
            && (ip == self.admin.ip()
                || (self.admin.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())));
        admin
            || self.rules.iter().any(|rule| match rule {
                Destination::Network(net) => net.contains(ip),
                Destination::Host(_) => false,
            })
    }

    /// The addresses `host:port` may be reached at, all checked.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        let name = normalize_host(host);
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if self.host_denied(&name) {
            return Err(GuardError::Denied(name));
        }
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|_| GuardError::Resolve(name.clone()))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(GuardError::Resolve(name));
        }
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| !self.addr_denied(*a))
            .collect();
        if allowed.is_empty() {
            return Err(GuardError::Denied(name));
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        let rules = vec![
            "169.254.0.0/16".parse().unwrap(),
            "fe80::/10".parse().unwrap(),
            "*.internal".parse().unwrap(),
        ];
        Guard::new(rules, "127.0.0.1:8081".parse().unwrap())
    }

    #[tokio::test]
    async fn metadata_admin_and_named_hosts_are_refused() {
        let g = guard();
        assert!(matches!(
            g.resolve("169.254.169.254", 80).await,
            Err(GuardError::Denied(_))
        ));
        assert!(matches!(
            g.resolve("[fe80::1]", 80).await,
            Err(GuardError::Denied(_))
        ));
        assert!(matches!(
            g.resolve("127.0.0.1", 8081).await,
            Err(GuardError::Denied(_))
        ));
        assert!(matches!(
            g.resolve("metadata.internal", 80).await,
            Err(GuardError::Denied(_))
        ));
        assert_eq!(
            g.resolve("127.0.0.1", 8080).await.unwrap(),
            ["127.0.0.1:8080".parse().unwrap()]
        );
        let resolved = g.resolve("localhost", 9).await.unwrap();
        assert!(resolved.iter().all(|a| a.ip().is_loopback()));
        assert!(g.addr_denied("[::ffff:169.254.1.1]:80".parse().unwrap()));
    }

    #[tokio::test]
    async fn an_admin_listener_on_all_addresses_is_refused_on_loopback() {
        let g = Guard::new(Vec::new(), "0.0.0.0:8081".parse().unwrap());
        assert!(g.addr_denied("127.0.0.1:8081".parse().unwrap()));
        assert!(!g.addr_denied("127.0.0.1:8082".parse().unwrap()));
    }
}
