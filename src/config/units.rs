//! Value types of `proxy.toml` that validate themselves while being deserialized,
//! so every error carries the span (and so the line) of the offending value.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A byte size written as `"64KiB"`, `"256MiB"`, `"1GiB"` or a bare integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        bytesize::ByteSize::from_str(s.trim())
            .map(|b| Size(b.as_u64()))
            .map_err(|_| format!("invalid size {s:?}: expected a number with a unit such as \"64KiB\", \"8MiB\" or \"1GiB\""))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Text(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

/// A duration written as `"30s"`, `"5m"`, `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration {s:?} ({e}): expected e.g. \"250ms\", \"30s\", \"5m\""
            ))
        })
    }
}

/// A client network: `"127.0.0.0/8"`, `"::1/128"`, or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client reached over an IPv6 socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net));
        }
        s.parse::<IpAddr>()
            .map(|ip| Cidr(ipnet::IpNet::from(ip)))
            .map_err(|_| {
                format!("invalid network {s:?}: expected an address or CIDR such as \"10.0.0.0/8\"")
            })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// The origin a route sends requests to: `http://host[:port]` or `https://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `host:port` with the port always present (80, or 443 for https, when the URL has none).
    pub authority: http::uri::Authority,
    pub host: String,
    pub port: u16,
    /// `https://`: TLS to the origin.
    pub tls: bool,
}

impl FromStr for UpstreamUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s
            .parse()
            .map_err(|e| format!("invalid upstream URL {s:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "invalid upstream URL {s:?}: expected http://host[:port] or https://host[:port]"
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("invalid upstream URL {s:?}: no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "upstream {s:?}: credentials in the URL are not supported"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "upstream {s:?}: a path or query in the upstream URL is not supported; requests keep their own path"
            ));
        }
        let host = authority.host().to_string();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = format!("{}:{port}", authority.host())
            .parse()
            .map_err(|e| format!("invalid upstream URL {s:?}: {e}"))?;
        Ok(UpstreamUrl {
            authority,
            host,
            port,
            tls,
        })
    }
}

impl UpstreamUrl {
    /// The `Host` to send this origin: `host`, with `:port` unless it is
    /// the scheme's default (RFC 9110 §7.2).
    pub fn host_header(&self) -> &str {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            &self.host
        } else {
            self.authority.as_str()
        }
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

impl FromStr for super::RouteUpstream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.contains("://") {
            return s.parse().map(super::RouteUpstream::Url);
        }
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "upstream {s:?}: expected http://host[:port], https://host[:port] or a group name"
            ));
        }
        Ok(super::RouteUpstream::Group(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for super::RouteUpstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// `"http://10.0.0.2:8000 weight=2 backup"`.
impl FromStr for super::ServerSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut words = s.split_whitespace();
        let url: UpstreamUrl = words
            .next()
            .ok_or_else(|| "an empty server".to_string())?
            .parse()?;
        let mut spec = super::ServerSpec {
            url,
            weight: 1,
            backup: false,
        };
        for word in words {
            match word.split_once('=') {
                Some(("weight", n)) => {
                    spec.weight = n
                        .parse()
                        .ok()
                        .filter(|w: &u32| (1..=1000).contains(w))
                        .ok_or_else(|| format!("server {s:?}: weight must be 1 to 1000"))?;
                }
                None if word == "backup" => spec.backup = true,
                _ => {
                    return Err(format!(
                        "server {s:?}: unknown parameter {word:?} (expected weight=N or backup)"
                    ))
                }
            }
        }
        Ok(spec)
    }
}

impl<'de> Deserialize<'de> for super::ServerSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// Which hosts a route serves: an exact name, `*.suffix`, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    /// Stored as `.example.com`: matches `a.example.com`, not `example.com`.
    Suffix(String),
    Exact(String),
}

impl HostPattern {
    /// `host` must already be lower-case and without a port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            HostPattern::Exact(name) => host == name,
        }
    }
}

impl FromStr for HostPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        if s == "*" {
            return Ok(HostPattern::Any);
        }
        // Request hosts are compared without their port, so a pattern with a
        // port could never match. IPv6 literals keep their brackets.
        let port_free = if s.starts_with('[') {
            s.ends_with(']')
        } else {
            !s.contains(':')
        };
        if !port_free {
            return Err(format!(
                "invalid host pattern {s:?}: hosts are matched without the port; remove \":port\""
            ));
        }
        let valid = |name: &str| {
            !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
                })
        };
        if let Some(rest) = s.strip_prefix("*.") {
            if valid(rest) && !rest.contains('*') {
                return Ok(HostPattern::Suffix(format!(".{rest}")));
            }
        } else if valid(&s) {
            return Ok(HostPattern::Exact(s));
        }
        Err(format!(
            "invalid host pattern {s:?}: expected an exact host, \"*.example.com\" or \"*\""
        ))
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!("64KiB".parse::<Size>().unwrap().bytes(), 64 * 1024);
        assert_eq!("256MiB".parse::<Size>().unwrap().bytes(), 256 << 20);
        assert_eq!("1GiB".parse::<Size>().unwrap().bytes(), 1 << 30);
        assert!("12 parsecs".parse::<Size>().is_err());
    }

    #[test]
    fn upstream_urls_are_validated() {
        let u: UpstreamUrl = "http://127.0.0.1:9000".parse().unwrap();
        assert_eq!(u.authority.as_str(), "127.0.0.1:9000");
        let u: UpstreamUrl = "http://origin.test/".parse().unwrap();
        assert_eq!(u.authority.as_str(), "origin.test:80");
        let u: UpstreamUrl = "https://origin.test".parse().unwrap();
        assert_eq!(u.authority.as_str(), "origin.test:443");
        assert!(u.tls);
        assert_eq!(u.to_string(), "https://origin.test:443");
        assert!("ftp://x".parse::<UpstreamUrl>().is_err());
        assert!("http://x/app".parse::<UpstreamUrl>().is_err());
    }

    #[test]
    fn host_patterns_match_exact_suffix_and_any() {
        let p: HostPattern = "*.Example.com".parse().unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("b.a.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
        let p: HostPattern = "example.com".parse().unwrap();
        assert!(p.matches("example.com") && !p.matches("a.example.com"));
        assert!("*".parse::<HostPattern>().unwrap().matches("anything"));
        assert!("a*b".parse::<HostPattern>().is_err());
        assert!("a.test:8080".parse::<HostPattern>().is_err());
        assert!("[::1]".parse::<HostPattern>().unwrap().matches("[::1]"));
        assert!("a.test.".parse::<HostPattern>().unwrap().matches("a.test"));
    }

    #[test]
    fn cidrs_accept_bare_addresses_and_mapped_v4() {
        let c: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(c.contains("127.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:127.0.0.1".parse().unwrap()));
        let c: Cidr = "::1".parse().unwrap();
        assert!(c.contains("::1".parse().unwrap()));
        assert!("300.0.0.0/8".parse::<Cidr>().is_err());
    }
}
