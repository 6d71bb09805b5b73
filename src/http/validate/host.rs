//! The `Host` field and URI authorities (RFC 9112 §3.2, RFC 3986 §3.2.2–3):
//! what a request must carry before anything routes or looks up by host.
//!
//! `Host = uri-host [ ":" port ]` where `uri-host` is an IP literal in
//! brackets, a dotted IPv4 address or a reg-name (unreserved, pct-encoded and
//! sub-delims), and `port` is digits that must fit in 16 bits. No userinfo.

use http::header::{self, HeaderMap};
use http::uri::Authority;
use http::{Method, Request, Version};

/// Why a request's host information is refused (each a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// More than one `Host` field line (RFC 9112 §3.2).
    Repeated,
    /// An HTTP/1.1 request in origin form without `Host`.
    Missing,
    /// `Host:` present but empty where an authority is needed to route.
    Empty,
    /// `user@host`: userinfo is not allowed in Host or a request target.
    Userinfo,
    /// Not `host[:port]` by RFC 3986's grammar.
    Invalid,
    /// A port that is not a 16-bit number.
    BadPort,
    /// HTTP/2 `:authority` and `Host` name different hosts (RFC 9113 §8.3.1).
    Mismatch,
}

impl HostError {
    /// The one-line reason sent with the 400.
    pub fn reason(self) -> &'static str {
        match self {
            HostError::Repeated => "more than one Host header",
            HostError::Missing => "missing Host header",
            HostError::Empty => "empty Host header",
            HostError::Userinfo => "user information in the host",
            HostError::Invalid => "invalid host",
            HostError::BadPort => "invalid port in the host",
            HostError::Mismatch => "Host differs from :authority",
        }
    }
}

/// Lower-case host without port or trailing dot: `WWW.Example.com.:8080` → `www.example.com`.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop what follows `]`.
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// Checks one `host[:port]` value (a Host field or a URI authority).
pub fn check(value: &[u8]) -> Result<(), HostError> {
    if value.is_empty() {
        return Err(HostError::Empty);
    }
    if value.contains(&b'@') {
        return Err(HostError::Userinfo);
    }
    let (host, port) = split_port(value)?;
    if let Some(port) = port {
        check_port(port)?;
    }
    if host.first() == Some(&b'[') {
        return check_ip_literal(host);
    }
    // A dotted IPv4 address is also a valid reg-name, so one rule covers both.
    if host.is_empty() || !reg_name(host) {
        return Err(HostError::Invalid);
    }
    Ok(())
}

/// Checks everything a request says about its host, for every request form:
/// at most one Host line, each authority well formed, Host present where
/// HTTP/1.1 requires it, and over HTTP/2 `Host` agreeing with `:authority`.
pub fn check_request<B>(req: &Request<B>) -> Result<(), HostError> {
    let host = single_host(req.headers())?;
    if let Some(value) = host {
        check(value.as_bytes())?;
    }
    // RFC 9112 §3.2: every HTTP/1.1 request carries Host, whatever the form
    // of its target ("a server MUST respond with 400 to any HTTP/1.1 request
    // message that lacks a Host header field").
    if host.is_none() && req.version() == Version::HTTP_11 {
        return Err(HostError::Missing);
    }
    if let Some(authority) = req.uri().authority() {
        check(authority.as_str().as_bytes())?;
        if req.version() == Version::HTTP_2 {
            if let Some(value) = host {
                let scheme_port = default_port(req.uri().scheme_str());
                if !same_host(authority, value.as_bytes(), scheme_port) {
                    return Err(HostError::Mismatch);
                }
            }
        }
        if req.method() == Method::CONNECT && authority.port().is_none() {
            return Err(HostError::BadPort);
        }
        return Ok(());
    }
    Ok(())
}

fn single_host(headers: &HeaderMap) -> Result<Option<&http::HeaderValue>, HostError> {
    let mut values = headers.get_all(header::HOST).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(HostError::Repeated);
    }
    Ok(first)
}

fn default_port(scheme: Option<&str>) -> u16 {
    match scheme {
        Some("https") => 443,
        _ => 80,
    }
}

/// Host names compare without case and without a trailing dot; ports compare
/// as numbers with the scheme's default filled in.
fn same_host(authority: &Authority, host: &[u8], default: u16) -> bool {
    let Ok((name, port)) = split_port(host) else {
        return false;
    };
    let port = match port {
        Some(p) => match std::str::from_utf8(p)
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
        {
            Some(p) => p,
            None => return false,
        },
        None => default,
    };
    let trim = |s: &[u8]| -> Vec<u8> {
        let s = s.strip_suffix(b".").unwrap_or(s);
        s.to_ascii_lowercase()
    };
    trim(authority.host().as_bytes()) == trim(name)
        && authority.port_u16().unwrap_or(default) == port
}

/// Splits `host[:port]`; an IPv6 literal keeps its brackets.
fn split_port(value: &[u8]) -> Result<(&[u8], Option<&[u8]>), HostError> {
    if value.first() == Some(&b'[') {
        let end = value
            .iter()
            .position(|b| *b == b']')
            .ok_or(HostError::Invalid)?;
        let (host, rest) = value.split_at(end + 1);
        return match rest {
            [] => Ok((host, None)),
            [b':', port @ ..] => Ok((host, Some(port))),
            _ => Err(HostError::Invalid),
        };
    }
    match value.iter().rposition(|b| *b == b':') {
        Some(i) => Ok((&value[..i], Some(&value[i + 1..]))),
        None => Ok((value, None)),
    }
}

/// RFC 3986 allows an empty port (`host:`); a port must fit in 16 bits.
fn check_port(port: &[u8]) -> Result<(), HostError> {
    if !port.iter().all(u8::is_ascii_digit) {
        return Err(HostError::BadPort);
    }
    let digits = port.iter().skip_while(|b| **b == b'0').count();
    if digits > 5 {
        return Err(HostError::BadPort);
    }
    let value = port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    if value > u32::from(u16::MAX) {
        return Err(HostError::BadPort);
    }
    Ok(())
}

fn check_ip_literal(host: &[u8]) -> Result<(), HostError> {
    let inner = &host[1..host.len() - 1];
    let text = std::str::from_utf8(inner).map_err(|_| HostError::Invalid)?;
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(());
    }
    // IPvFuture: "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
    let future = text
        .strip_prefix(['v', 'V'])
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(version, tail)| {
            !version.is_empty()
                && version.bytes().all(|b| b.is_ascii_hexdigit())
                && !tail.is_empty()
                && tail
                    .bytes()
                    .all(|b| unreserved(b) || sub_delim(b) || b == b':')
        });
    if future {
        Ok(())
    } else {
        Err(HostError::Invalid)
    }
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`
fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            let hex = host.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(unreserved(b) || sub_delim(b)) {
            return false;
        }
        i += 1;
    }
    true
}

/// RFC 3986 §2.3: `ALPHA / DIGIT / "-" / "." / "_" / "~"`
pub fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §2.2 sub-delims.
fn sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("WWW.Example.COM.:80"), "www.example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn accepts_the_usual_hosts() {
        for ok in [
            "example.com",
            "EXAMPLE.com.",
            "example.com:8080",
            "example.com:",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8443",
            "[v1.fe80::a+en1]",
            "xn--bcher-kva.example",
            "a_b-c~d",
            "caf%C3%A9.test",
            "host:00080",
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_what_the_grammar_does_not_allow() {
        let cases: &[(&str, HostError)] = &[
            ("", HostError::Empty),
            ("a b/c", HostError::Invalid),
            ("a/b", HostError::Invalid),
            ("u@a.test", HostError::Userinfo),
            ("u:p@a.test:80", HostError::Userinfo),
            ("a.test:65536", HostError::BadPort),
            ("a.test:99999999999999999999", HostError::BadPort),
            ("a.test:8o", HostError::BadPort),
            ("a.test:-1", HostError::BadPort),
            ("[::1", HostError::Invalid),
            ("[::1]x", HostError::Invalid),
            ("[not-ip]", HostError::Invalid),
            (":80", HostError::Invalid),
            ("a%zz", HostError::Invalid),
            ("a%4", HostError::Invalid),
            ("a\\b", HostError::Invalid),
            ("a\"b", HostError::Invalid),
            ("a.test:80:80", HostError::Invalid),
        ];
        for (value, want) in cases {
            assert_eq!(check(value.as_bytes()), Err(*want), "{value:?}");
        }
    }

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn request_forms() {
        use HostError::*;
        let v11 = Version::HTTP_11;
        assert_eq!(check_request(&request(v11, "/", &["a.test"])), Ok(()));
        assert_eq!(check_request(&request(v11, "/", &[])), Err(Missing));
        assert_eq!(check_request(&request(Version::HTTP_10, "/", &[])), Ok(()));
        assert_eq!(
            check_request(&request(v11, "/", &["a.test", "b.test"])),
            Err(Repeated)
        );
        assert_eq!(
            check_request(&request(v11, "/", &["a.test", "a.test"])),
            Err(Repeated)
        );
        assert_eq!(check_request(&request(v11, "/", &[""])), Err(Empty));
        // Absolute form: the URI names the host, and an HTTP/1.1 request
        // still needs a (valid) Host line; HTTP/1.0 does not.
        assert_eq!(
            check_request(&request(v11, "http://a.test/", &["a.test"])),
            Ok(())
        );
        assert_eq!(
            check_request(&request(v11, "http://a.test/", &[])),
            Err(Missing)
        );
        assert_eq!(
            check_request(&request(Version::HTTP_10, "http://a.test/", &[])),
            Ok(())
        );
        assert_eq!(
            check_request(&request(v11, "http://a.test/", &["a b"])),
            Err(Invalid)
        );
        // HTTP/2: :authority and Host must agree.
        let v2 = Version::HTTP_2;
        assert_eq!(
            check_request(&request(v2, "http://a.test/", &["A.TEST:80"])),
            Ok(())
        );
        assert_eq!(
            check_request(&request(v2, "https://a.test/", &["a.test:443"])),
            Ok(())
        );
        assert_eq!(
            check_request(&request(v2, "http://a.test/", &["b.test"])),
            Err(Mismatch)
        );
        assert_eq!(
            check_request(&request(v2, "http://a.test:8080/", &["a.test"])),
            Err(Mismatch)
        );
    }

    #[test]
    fn connect_needs_a_port() {
        let req = |uri: &str| {
            Request::builder()
                .method(Method::CONNECT)
                .uri(uri)
                .header("host", uri)
                .body(())
                .unwrap()
        };
        assert_eq!(check_request(&req("a.test:443")), Ok(()));
        assert_eq!(check_request(&req("a.test")), Err(HostError::BadPort));
    }
}
