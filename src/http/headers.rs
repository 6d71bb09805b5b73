//! Header rules for a proxy hop (RFC 9110 §7.6): hop-by-hop fields removed in
//! both directions, `Via` appended, loops recognised, client address passed on.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

use crate::config::ForwardedHeaders;

/// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1,
/// RFC 9112 §9.6 plus the historical `Proxy-Connection` and `Keep-Alive`).
/// `Proxy-Authorization`/`Proxy-Authenticate` are consumed by the proxy that
/// asked for them (RFC 9110 §11.7.1–2).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Removes every hop-by-hop field, including each field named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (no hashing) finds which are there: most
    // messages carry none, and an origin's usual `Connection: keep-alive`
    // then costs two hashed removals instead of ten.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // HOP_BY_HOP[0] is Connection: the fields it names go too (RFC 9110 §7.6.1).
    if present & 1 != 0 {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            // The target host is never a connection option, and the fixed
            // hop-by-hop names are removed below.
            .filter(|name| name != header::HOST && !HOP_BY_HOP.contains(name))
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Our `Via` entries, built once: `1.0 name`, `1.1 name`, `2 name`.
#[derive(Debug, Clone)]
pub struct Via {
    name: String,
    v10: HeaderValue,
    v11: HeaderValue,
    v2: HeaderValue,
}

impl Via {
    pub fn new(name: &str) -> Via {
        let value = |proto: &str| {
            HeaderValue::from_str(&format!("{proto} {name}")).expect("name validated as a token")
        };
        Via {
            name: name.to_string(),
            v10: value("1.0"),
            v11: value("1.1"),
            v2: value("2"),
        }
    }

    /// The entry for a message received with `version` (RFC 9110 §7.6.3).
    pub fn entry(&self, version: Version) -> HeaderValue {
        match version {
            Version::HTTP_10 | Version::HTTP_09 => self.v10.clone(),
            Version::HTTP_2 | Version::HTTP_3 => self.v2.clone(),
            _ => self.v11.clone(),
        }
    }

    /// Appends our entry after the existing ones.
    pub fn append(&self, headers: &mut HeaderMap, version: Version) {
        headers.append(header::VIA, self.entry(version));
    }

    /// True when a `Via` entry names us as the receiver: the request has been
    /// here before and forwarding it again would loop.
    pub fn is_loop(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|entry| entry.split_whitespace().nth(1))
            .any(|received_by| received_by.eq_ignore_ascii_case(&self.name))
    }
}

/// A client's address as the forwarding fields name it, formatted once per
/// connection rather than once per request.
#[derive(Debug, Clone)]
pub struct ClientAddress {
    /// IPv4-mapped IPv6 addresses are given as the IPv4 address.
    ip: IpAddr,
    /// `ip` as text, the `X-Forwarded-For` item.
    text: HeaderValue,
}

impl ClientAddress {
    pub fn new(ip: IpAddr) -> ClientAddress {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let text = HeaderValue::from_str(&ip.to_string()).expect("an address is ASCII");
        ClientAddress { ip, text }
    }
}

/// Adds the client address headers a reverse route asks for.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    mode: ForwardedHeaders,
    client: &ClientAddress,
    host: Option<&HeaderValue>,
    https: bool,
) {
    let proto = if https { "https" } else { "http" };
    if matches!(mode, ForwardedHeaders::XForwarded | ForwardedHeaders::Both) {
        append_list(
            headers,
            HeaderName::from_static("x-forwarded-for"),
            &client.text,
        );
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(proto),
        );
        if let Some(host) = host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
        }
    }
    if matches!(mode, ForwardedHeaders::Forwarded | ForwardedHeaders::Both) {
        // RFC 7239 §4, §6: IPv6 nodes are bracketed and quoted.
        let mut element = match client.ip {
            IpAddr::V4(v4) => format!("for={v4}"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
        };
        if let Some(host) = host.and_then(|h| h.to_str().ok()) {
            if host
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                element.push_str(&format!(";host=\"{host}\""));
            }
        }
        element.push_str(";proto=");
        element.push_str(proto);
        if let Ok(element) = HeaderValue::from_str(&element) {
            append_list(headers, header::FORWARDED, &element);
        }
    }
}

/// Appends `item` to a comma-separated list field, keeping one field line.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &HeaderValue) {
    let existing: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if existing.is_empty() {
        // The usual case: the value is shared, not rebuilt.
        headers.insert(name, item.clone());
        return;
    }
    let Ok(item) = item.to_str() else { return };
    let joined = format!("{}, {item}", existing.join(", "));
    if let Ok(value) = HeaderValue::from_str(&joined) {
        headers.insert(name, value);
    }
}

/// A `Content-Length` that parses as one number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn connection_listed_and_fixed_hop_by_hop_fields_go() {
        let mut h = map(&[
            ("connection", "X-Foo, close"),
            ("connection", "x-bar"),
            ("x-foo", "1"),
            ("x-bar", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("host", "a"),
            ("x-keep", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "x-keep"]);
    }

    #[test]
    fn via_appends_and_detects_our_name() {
        let via = Via::new("viaduct");
        let mut h = map(&[("via", "1.0 fred, 1.1 p.example.net")]);
        assert!(!via.is_loop(&h));
        via.append(&mut h, Version::HTTP_10);
        let all: Vec<_> = h
            .get_all("via")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(all, ["1.0 fred, 1.1 p.example.net", "1.0 viaduct"]);
        assert!(via.is_loop(&h));
        assert!(via.is_loop(&map(&[("via", "1.1 other (comment), 2 VIADUCT")])));
        assert!(!via.is_loop(&map(&[("via", "1.1 viaduct-2")])));
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        let host = HeaderValue::from_static("site.test");
        add_forwarded(
            &mut h,
            ForwardedHeaders::Both,
            &ClientAddress::new("::1".parse().unwrap()),
            Some(&host),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(h["x-forwarded-host"], "site.test");
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";host=\"site.test\";proto=http"
        );
        let mut h = HeaderMap::new();
        add_forwarded(
            &mut h,
            ForwardedHeaders::None,
            &ClientAddress::new("127.0.0.1".parse().unwrap()),
            None,
            false,
        );
        assert!(h.is_empty());
        // An IPv4-mapped client is named by its IPv4 address.
        let mut h = HeaderMap::new();
        add_forwarded(
            &mut h,
            ForwardedHeaders::XForwarded,
            &ClientAddress::new("::ffff:10.1.2.3".parse().unwrap()),
            None,
            true,
        );
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
