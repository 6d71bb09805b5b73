//! Where the forward proxy may connect. The check is made on resolved
//! addresses and the caller connects to exactly the addresses returned, so a
//! name that resolves differently a moment later (DNS rebinding) cannot slip
//! past it.
//!
//! Always refused: the unspecified addresses (`0.0.0.0/8`, `::`), which Linux
//! connects to as this host, and the proxy's own listeners (the admin listener
//! on its port at every address that reaches it). Loopback is refused unless
//! `[forward] allow_loopback`. Then `[forward] deny_destinations` (link-local,
//! so cloud metadata services, by default). Every rule also applies to the
//! IPv4 address inside an IPv6 transition form (`addr::embedded_ipv4`), so
//! `[::ffff:0:0]`, `[64:ff9b::a9fe:a9fe]` or `[2002:7f00:1::]` are judged as
//! the IPv4 address they lead to.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::addr;
use crate::config::{Destination, HostPattern};
use crate::http::validate::host::normalize_host;

#[derive(Debug)]
pub struct Guard {
    /// `[forward] deny_destinations`, `allow_loopback` and the proxy's
    /// listeners: replaced whole on a configuration reload.
    policy: arc_swap::ArcSwap<DenyPolicy>,
    /// The admin listener: refused on its port at its own address, at
    /// loopback and, when it listens on all addresses, at every local one.
    admin: SocketAddr,
}

#[derive(Debug)]
struct DenyPolicy {
    rules: Vec<Destination>,
    allow_loopback: bool,
    /// The proxy's listeners: refused wherever a connection would reach them
    /// (absolute-form requests that name them are answered locally before
    /// this; CONNECT and names that resolve here are not).
    listeners: Vec<SocketAddr>,
}

/// Why a destination is refused; the one-line reason the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unspecified,
    OwnListener,
    Loopback,
    DenyRule,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Unspecified => "the unspecified address (0.0.0.0/8, ::) means this host",
            Refusal::OwnListener => "it is one of this proxy's own listeners",
            Refusal::Loopback => "loopback destinations are off ([forward] allow_loopback)",
            Refusal::DenyRule => "it is in [forward] deny_destinations",
        })
    }
}

/// Why a destination could not be used.
#[derive(Debug)]
pub enum GuardError {
    Denied { host: String, why: Refusal },
    Resolve(String),
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::Denied { host, why } => {
                write!(f, "destination {host} is not allowed: {why}")
            }
            GuardError::Resolve(host) => write!(f, "host name {host} could not be resolved"),
        }
    }
}

impl std::error::Error for GuardError {}

impl Guard {
    pub fn new(
        rules: Vec<Destination>,
        admin: SocketAddr,
        listeners: Vec<SocketAddr>,
        allow_loopback: bool,
    ) -> Guard {
        Guard {
            policy: arc_swap::ArcSwap::from_pointee(DenyPolicy {
                rules,
                allow_loopback,
                listeners,
            }),
            admin,
        }
    }

    /// A reloaded configuration's deny rules, for destinations checked from now on.
    pub fn update(
        &self,
        rules: Vec<Destination>,
        allow_loopback: bool,
        listeners: Vec<SocketAddr>,
    ) {
        self.policy.store(std::sync::Arc::new(DenyPolicy {
            rules,
            allow_loopback,
            listeners,
        }));
    }

    fn host_denied(&self, host: &str) -> bool {
        self.policy.load().rules.iter().any(|rule| match rule {
            Destination::Host(pattern) => pattern.matches(host) && *pattern != HostPattern::Any,
            Destination::Network(_) => false,
        })
    }

    /// Why `addr` must not be connected to, if it must not.
    pub fn refusal(&self, addr: SocketAddr) -> Option<Refusal> {
        let (ip, port) = (addr.ip(), addr.port());
        if addr::views(ip).any(addr::is_unspecified) {
            return Some(Refusal::Unspecified);
        }
        let policy = self.policy.load();
        if self.is_admin(ip, port) || policy.listeners.iter().any(|l| addr::reaches(*l, ip, port)) {
            return Some(Refusal::OwnListener);
        }
        if !policy.allow_loopback && addr::views(ip).any(|v| v.is_loopback()) {
            return Some(Refusal::Loopback);
        }
        let denied = |v: IpAddr| {
            policy.rules.iter().any(|rule| match rule {
                Destination::Network(net) => net.contains(v),
                Destination::Host(_) => false,
            })
        };
        addr::views(ip).any(denied).then_some(Refusal::DenyRule)
    }

    /// The admin port at the admin address, at loopback (even with
    /// `allow_loopback`), and at every address of this host when the admin
    /// listens on all of them. The local-address probe runs only on the
    /// admin port.
    fn is_admin(&self, ip: IpAddr, port: u16) -> bool {
        if port != self.admin.port() {
            return false;
        }
        let bound = self.admin.ip().to_canonical();
        addr::views(ip)
            .any(|v| v == bound || v.is_loopback() || (bound.is_unspecified() && addr::is_local(v)))
    }

    /// What can be checked without resolving `host` (for requests a parent
    /// proxy resolves): a denied name, or a literal address this proxy
    /// would refuse (its own listeners, loopback, deny rules).
    pub fn check_unresolved(&self, host: &str, port: u16) -> Result<(), GuardError> {
        let name = normalize_host(host);
        let refused = match addr::parse_literal(&name) {
            _ if self.host_denied(&name) => Some(Refusal::DenyRule),
            Some(ip) => self.refusal(SocketAddr::new(ip, port)),
            None => None,
        };
        match refused {
            Some(why) => Err(GuardError::Denied { host: name, why }),
            None => Ok(()),
        }
    }

    /// The addresses `host:port` may be reached at, all checked. An
    /// IPv4-mapped address comes back as its IPv4 address (the same
    /// destination, reachable without an IPv6 socket).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        let name = normalize_host(host);
        if self.host_denied(&name) {
            return Err(GuardError::Denied {
                host: name,
                why: Refusal::DenyRule,
            });
        }
        let addrs: Vec<SocketAddr> = match addr::parse_literal(&name) {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => {
                let bare = name.trim_start_matches('[').trim_end_matches(']');
                tokio::net::lookup_host((bare, port))
                    .await
                    .map_err(|_| GuardError::Resolve(name.clone()))?
                    .collect()
            }
        };
        if addrs.is_empty() {
            return Err(GuardError::Resolve(name));
        }
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter_map(|a| match self.refusal(a) {
                Some(why) => {
                    first_refusal.get_or_insert(why);
                    None
                }
                None => Some(SocketAddr::new(a.ip().to_canonical(), a.port())),
            })
            .collect();
        match first_refusal {
            Some(why) if allowed.is_empty() => Err(GuardError::Denied { host: name, why }),
            _ => Ok(allowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "127.0.0.1:8081";

    fn guard_with(allow_loopback: bool) -> Guard {
        let rules = vec![
            "169.254.0.0/16".parse().unwrap(),
            "fe80::/10".parse().unwrap(),
            "*.internal".parse().unwrap(),
        ];
        let listeners = vec!["127.0.0.1:8080".parse().unwrap()];
        Guard::new(rules, ADMIN.parse().unwrap(), listeners, allow_loopback)
    }

    fn at(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    /// Every IPv6 form that embeds `v4`: mapped, compatible, NAT64, 6to4.
    fn embedded_forms(v4: &str) -> Vec<String> {
        let [a, b, c, d] = v4.parse::<std::net::Ipv4Addr>().unwrap().octets();
        let (high, low) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
        vec![
            format!("::ffff:{v4}"),
            format!("::{v4}"),
            format!("64:ff9b::{v4}"),
            format!("2002:{high:x}:{low:x}::1"),
        ]
    }

    #[tokio::test]
    async fn metadata_admin_and_named_hosts_are_refused() {
        let g = guard_with(true);
        for (host, port) in [
            ("169.254.169.254", 80),
            ("[fe80::1]", 80),
            ("127.0.0.1", 8081),
            ("metadata.internal", 80),
        ] {
            assert!(
                matches!(g.resolve(host, port).await, Err(GuardError::Denied { .. })),
                "{host}:{port}"
            );
        }
        assert_eq!(
            g.resolve("127.0.0.1", 9000).await.unwrap(),
            [at("127.0.0.1", 9000)]
        );
        let resolved = g.resolve("localhost", 9).await.unwrap();
        assert!(resolved.iter().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn every_embedded_form_of_a_metadata_address_is_refused() {
        let g = guard_with(true);
        for form in embedded_forms("169.254.169.254") {
            assert_eq!(g.refusal(at(&form, 80)), Some(Refusal::DenyRule), "{form}");
        }
    }

    #[test]
    fn every_embedded_form_of_loopback_follows_allow_loopback() {
        for form in embedded_forms("127.0.0.1")
            .into_iter()
            .chain(["::1".into()])
        {
            assert_eq!(
                guard_with(false).refusal(at(&form, 80)),
                Some(Refusal::Loopback),
                "{form}"
            );
            assert_eq!(guard_with(true).refusal(at(&form, 80)), None, "{form}");
            // The admin port stays refused with loopback allowed.
            assert_eq!(
                guard_with(true).refusal(at(&form, 8081)),
                Some(Refusal::OwnListener),
                "{form}"
            );
        }
    }

    #[test]
    fn every_form_of_the_unspecified_address_is_refused_always() {
        let mut forms = embedded_forms("0.0.0.0");
        forms.extend(["::", "0.0.0.0", "0.1.2.3", "::ffff:0:0", "2002::"].map(String::from));
        for allow_loopback in [false, true] {
            let g = guard_with(allow_loopback);
            for form in &forms {
                for port in [80, 8081] {
                    assert_eq!(
                        g.refusal(at(form, port)),
                        Some(Refusal::Unspecified),
                        "{form}:{port}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn spellings_the_resolver_accepts_are_checked_as_what_they_mean() {
        let g = guard_with(true);
        for host in [
            "0",
            "0x0",
            "0.0.0.0.",
            "[::]",
            "[::ffff:0.0.0.0]",
            "[::FFFF:0:0]",
        ] {
            assert!(
                matches!(
                    g.resolve(host, 8081).await,
                    Err(GuardError::Denied {
                        why: Refusal::Unspecified,
                        ..
                    })
                ),
                "{host}"
            );
        }
        for host in ["127.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]"] {
            assert!(
                matches!(
                    g.resolve(host, 8081).await,
                    Err(GuardError::Denied {
                        why: Refusal::OwnListener,
                        ..
                    })
                ),
                "{host}"
            );
        }
        // A mapped address is connected to as the IPv4 address it is.
        assert_eq!(
            g.resolve("[::ffff:127.0.0.1]", 9000).await.unwrap(),
            [at("127.0.0.1", 9000)]
        );
    }

    #[test]
    fn the_proxy_port_is_refused_where_it_listens() {
        let g = guard_with(true);
        for form in ["127.0.0.1", "::ffff:127.0.0.1", "0.0.0.0"] {
            assert!(g.refusal(at(form, 8080)).is_some(), "{form}");
        }
        assert_eq!(g.refusal(at("127.0.0.1", 8082)), None);
    }

    #[test]
    fn an_admin_listener_on_all_addresses_is_refused_at_every_local_address() {
        for admin in ["0.0.0.0:8081", "[::]:8081"] {
            let g = Guard::new(Vec::new(), admin.parse().unwrap(), Vec::new(), true);
            assert_eq!(g.refusal(at("127.0.0.1", 8081)), Some(Refusal::OwnListener));
            assert_eq!(g.refusal(at("127.0.0.2", 8081)), Some(Refusal::OwnListener));
            assert_eq!(g.refusal(at("::1", 8081)), Some(Refusal::OwnListener));
            assert_eq!(g.refusal(at("127.0.0.1", 8082)), None);
            // Another host's admin port is somebody else's (TEST-NET-2).
            assert_eq!(g.refusal(at("198.51.100.1", 8081)), None);
            // This host's own address on another interface, if it has one.
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            if socket.connect("192.0.2.1:9").is_ok() {
                let local = socket.local_addr().unwrap().ip();
                if !local.is_loopback() && !local.is_unspecified() {
                    let a = SocketAddr::new(local, 8081);
                    assert_eq!(g.refusal(a), Some(Refusal::OwnListener), "{a}");
                }
            }
        }
    }

    #[test]
    fn an_admin_listener_on_one_address_is_refused_there_and_on_loopback() {
        let g = Guard::new(Vec::new(), at("192.0.2.7", 8081), Vec::new(), true);
        for form in [
            "192.0.2.7",
            "::ffff:192.0.2.7",
            "64:ff9b::192.0.2.7",
            "127.0.0.1",
        ] {
            assert_eq!(
                g.refusal(at(form, 8081)),
                Some(Refusal::OwnListener),
                "{form}"
            );
        }
        assert_eq!(g.refusal(at("192.0.2.8", 8081)), None);
        assert_eq!(g.refusal(at("192.0.2.7", 80)), None);
    }
}
