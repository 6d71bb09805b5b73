//! What an address means on this host: IP literals in every spelling the
//! system resolver accepts, the IPv4 address inside IPv6 transition forms, and
//! whether a connection would land on one of this process's own listeners.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// `host` (a normalised URI host: lower case, no port, no trailing dot,
/// brackets around IPv6) as an IP address, when it is a literal.
///
/// Besides the canonical forms this takes what inet_aton(3), and so
/// getaddrinfo(3), takes for IPv4: `0`, `127.1`, `0x7f.1`, `017700000001`,
/// `2130706433`. Reading them here means the guard checks exactly the address
/// the system would connect to, and no resolver is asked about a literal.
pub fn parse_literal(host: &str) -> Option<IpAddr> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    parse_ipv4_loose(host).map(IpAddr::V4)
}

/// inet_aton(3): one to four parts, each decimal, octal (`0` prefix) or hex
/// (`0x` prefix); the last part fills the bytes the others left.
fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let mut parts = Vec::with_capacity(4);
    for part in s.split('.') {
        if parts.len() == 4 {
            return None;
        }
        let (digits, radix) = match part.strip_prefix("0x") {
            Some(hex) => (hex, 16),
            None if part.len() > 1 && part.starts_with('0') => (&part[1..], 8),
            None => (part, 10),
        };
        if part.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        let value = if digits.is_empty() {
            0 // "0x" alone, as inet_aton reads it
        } else {
            u32::from_str_radix(digits, radix).ok()?
        };
        parts.push(value);
    }
    let (last, leading) = parts.split_last()?;
    if leading.iter().any(|&p| p > 0xff) {
        return None;
    }
    let last_bits = 32 - 8 * leading.len() as u32;
    if last_bits < 32 && *last >> last_bits != 0 {
        return None;
    }
    let high = leading
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &p)| acc | p << (24 - 8 * i as u32));
    Some(Ipv4Addr::from(high | last))
}

/// The IPv4 address an IPv6 transition form carries, which is where a
/// connection to it ends up (directly, or through a translator or relay):
///
/// - IPv4-mapped `::ffff:0:0/96` (RFC 4291 §2.5.5.2);
/// - IPv4-compatible `::/96` (RFC 4291 §2.5.5.1; deprecated, still routed by
///   some stacks), except `::` and `::1`, IPv6's own unspecified and loopback;
/// - NAT64 well-known prefix `64:ff9b::/96` (RFC 6052 §2.1);
/// - 6to4 `2002::/16` (RFC 3056 §2), the IPv4 address in bits 16..48.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, high, low16, ..] => {
            Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low16)))
        }
        _ => None,
    }
}

/// The address, then the IPv4 address it embeds (if any). A destination rule
/// holds for an address when it holds for any of its views.
pub fn views(ip: IpAddr) -> impl Iterator<Item = IpAddr> {
    let embedded = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    std::iter::once(ip).chain(embedded)
}

/// "This host": `0.0.0.0/8` (RFC 1122 §3.2.1.3) and `::`. Linux connects
/// to `0.0.0.0` and `::` as to loopback.
pub fn is_unspecified(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

/// Whether `ip` is one of this host's addresses: binding a socket to it
/// succeeds only then (EADDRNOTAVAIL otherwise); nothing is sent. With the
/// `ip_nonlocal_bind` sysctl on, every address looks local, which errs on the
/// side of refusing.
pub fn is_local(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Whether a connection to `ip:port` lands on `listener`, a socket of this
/// process: at its own address, at the unspecified address when it listens on
/// loopback or on all addresses, or at any local address when it listens on
/// all of them.
pub fn reaches(listener: SocketAddr, ip: IpAddr, port: u16) -> bool {
    if port != listener.port() {
        return false;
    }
    let bound = listener.ip().to_canonical();
    views(ip).any(|ip| {
        ip == bound
            || (is_unspecified(ip) && (bound.is_loopback() || bound.is_unspecified()))
            || (bound.is_unspecified() && (ip.is_loopback() || is_local(ip)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn literals_are_read_as_the_resolver_reads_them() {
        for (host, expected) in [
            ("0", "0.0.0.0"),
            ("0.0.0.0", "0.0.0.0"),
            ("0x0", "0.0.0.0"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("169.254.43518", "169.254.169.254"),
            ("[::]", "::"),
            ("[::ffff:0:0]", "::ffff:0.0.0.0"),
            ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ] {
            assert_eq!(parse_literal(host), Some(ip(expected)), "{host}");
        }
        for name in [
            "",
            "example.com",
            "1.2.3.4.5",
            "256.0.0.1",
            "1.2.3.256",
            "1.2.65536",
            "08",
            "0x1g",
            "1..2",
            "+1",
            "::1",
            "[example]",
            "[127.0.0.1]",
            "4294967296",
        ] {
            assert_eq!(parse_literal(name), None, "{name}");
        }
    }

    #[test]
    fn transition_forms_yield_their_ipv4_address() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(embedded_ipv4(v6("::ffff:1.2.3.4")), Some(v4("1.2.3.4")));
        assert_eq!(embedded_ipv4(v6("::1.2.3.4")), Some(v4("1.2.3.4")));
        assert_eq!(embedded_ipv4(v6("64:ff9b::1.2.3.4")), Some(v4("1.2.3.4")));
        assert_eq!(embedded_ipv4(v6("2002:102:304::9")), Some(v4("1.2.3.4")));
        assert_eq!(embedded_ipv4(v6("::")), None);
        assert_eq!(embedded_ipv4(v6("::1")), None);
        assert_eq!(embedded_ipv4(v6("2001:db8::1.2.3.4")), None);
        assert_eq!(embedded_ipv4(v6("64:ff9b:1::1.2.3.4")), None);
    }

    #[test]
    fn reaching_a_listener() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(reaches(lo, ip("127.0.0.1"), 8080));
        assert!(reaches(lo, ip("::ffff:127.0.0.1"), 8080));
        assert!(reaches(lo, ip("0.0.0.0"), 8080));
        assert!(reaches(lo, ip("::"), 8080));
        assert!(!reaches(lo, ip("127.0.0.1"), 8081));
        assert!(!reaches(lo, ip("127.0.0.2"), 8080));
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(reaches(any, ip("127.0.0.2"), 8080));
        assert!(reaches(any, ip("::1"), 8080));
        assert!(!reaches(any, ip("198.51.100.1"), 8080)); // TEST-NET-2: not ours
        let specific: SocketAddr = "192.0.2.7:8080".parse().unwrap();
        assert!(reaches(specific, ip("192.0.2.7"), 8080));
        assert!(!reaches(specific, ip("0.0.0.0"), 8080));
        assert!(!reaches(specific, ip("127.0.0.1"), 8080));
    }
}
