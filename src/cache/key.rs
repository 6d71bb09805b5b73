//! Cache keys. The primary key is the traffic's namespace, then the target
//! URI: scheme, lower-cased host, port (always written, so `:80` and no port
//! are one key), path and query. Leaving the host out would let virtual hosts
//! poison each other; leaving the namespace out would let a client of one
//! reverse route (or of the forward proxy) fill entries that another serves:
//! `Host: www.bank.test` sent to a catch-all route would answer forward
//! requests for `http://www.bank.test/`.
//! The secondary key (RFC 9111 §4.1) is the normalized values of the request
//! fields a response's `Vary` names.

use http::header::{self, HeaderMap, HeaderName};

/// The namespace of forward-proxy traffic.
pub const FORWARD: &str = "forward";

/// The namespace of one reverse route, by its name (no spaces: a space ends
/// the namespace in a key).
pub fn route_namespace(route: &str) -> String {
    let name: String = route
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    format!("route:{name}")
}

/// `ns http://example.com:80/path?q`: the key. `origin_of` gives the origin
/// (with its namespace) for §4.4 same-origin checks.
pub fn primary(
    namespace: &str,
    scheme: &str,
    host: &str,
    default_port: u16,
    path_and_query: &str,
) -> String {
    let host = host.trim();
    let (name, port) = split_port(host);
    let name = name.trim_end_matches('.');
    let port = port.unwrap_or(default_port);
    let path = if path_and_query.is_empty() {
        "/"
    } else {
        path_and_query
    };
    // Built in one exact allocation (this runs on every lookup, hits too).
    let mut digits = itoa::Buffer::new();
    let port = digits.format(port);
    let mut key = String::with_capacity(
        namespace.len() + 1 + scheme.len() + 3 + name.len() + 1 + port.len() + path.len(),
    );
    if !namespace.is_empty() {
        key.push_str(namespace);
        key.push(' ');
    }
    key.push_str(scheme);
    key.push_str("://");
    let at = key.len();
    key.push_str(name);
    key[at..].make_ascii_lowercase();
    key.push(':');
    key.push_str(port);
    key.push_str(path);
    key
}

/// The key of `url_key` (a namespace-less `primary`) in `namespace`.
pub fn in_namespace(namespace: &str, url_key: &str) -> String {
    format!("{namespace} {url_key}")
}

/// A key split into its namespace and its URL part.
pub fn split(key: &str) -> (&str, &str) {
    key.split_once(' ').unwrap_or(("", key))
}

/// Whether `key` is in one of `namespaces` and its URL part starts with
/// `prefix`: what a prefix purge removes, in every tier.
pub fn under_prefix(key: &str, namespaces: &[&str], prefix: &str) -> bool {
    let (namespace, url) = split(key);
    url.starts_with(prefix) && namespaces.contains(&namespace)
}

/// The `ns scheme://host:port` prefix of a primary key.
pub fn origin_of(key: &str) -> &str {
    let after_scheme = key.find("://").map_or(0, |i| i + 3);
    let end = key[after_scheme..]
        .find('/')
        .map_or(key.len(), |i| after_scheme + i);
    &key[..end]
}

fn split_port(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return match rest.split_once(']') {
            Some((_, after)) => {
                let end = host.len() - after.len();
                (
                    &host[..end],
                    after.strip_prefix(':').and_then(|p| p.parse().ok()),
                )
            }
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty() => {
            (name, port.parse().ok())
        }
        _ => (host, None),
    }
}

/// What a response's `Vary` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// `Vary: *`: no later request can match (§4.1).
    Star,
    /// The request fields that select this response (possibly none).
    Fields(Vec<HeaderName>),
}

impl Vary {
    pub fn of(response: &HeaderMap) -> Vary {
        let mut names = Vec::new();
        for value in response.get_all(header::VARY) {
            let Ok(value) = value.to_str() else { continue };
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*" {
                    return Vary::Star;
                }
                if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
        Vary::Fields(names)
    }
}

/// The secondary-key name standing for one cookie (`cache_key =
/// { include_cookies = [...] }`): `~cookie~lang` is the value of the cookie
/// `lang`. `~` cannot start a field an origin names in `Vary`... it can,
/// but no real field is spelled so, and a clash only splits variants.
pub const COOKIE_FIELD: &str = "~cookie~";

/// The secondary-key name for the cookie `name` (matched without regard
/// to case: field names are lower case).
pub fn cookie_field(name: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(format!("{COOKIE_FIELD}{name}").as_bytes()).ok()
}

/// The value of the cookie `name` in the request's Cookie lines (RFC 6265
/// §5.4: `a=1; b=2`), `None` when it is not sent.
fn cookie_value(request: &HeaderMap, name: &str) -> Option<String> {
    request
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

/// The secondary key: for each field `Vary` names, the request's normalized
/// value (`None` when absent; absent and empty differ, §4.1).
pub type Secondary = Vec<(HeaderName, Option<String>)>;

pub fn secondary(names: &[HeaderName], request: &HeaderMap) -> Secondary {
    names
        .iter()
        .map(|name| (name.clone(), normalized(name, request)))
        .collect()
}

/// Whether `request` selects the variant stored with `stored` (§4.1).
pub fn matches(stored: &[(HeaderName, Option<String>)], request: &HeaderMap) -> bool {
    stored
        .iter()
        .all(|(name, value)| normalized(name, request).as_deref() == value.as_deref())
}

/// Combines field lines, collapses whitespace around commas (§4.1 allows
/// normalizing by the field's syntax); Accept-Encoding becomes a sorted,
/// lower-case set of codings without the ones refused with q=0, so that
/// browsers sending the same preferences in another order share a variant.
fn normalized(name: &HeaderName, request: &HeaderMap) -> Option<String> {
    if let Some(cookie) = name.as_str().strip_prefix(COOKIE_FIELD) {
        return cookie_value(request, cookie);
    }
    let mut values = request.get_all(name).iter().peekable();
    values.peek()?;
    let items: Vec<String> = values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| item.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|item| !item.is_empty())
        .collect();
    if name == header::ACCEPT_ENCODING {
        let mut codings: Vec<String> = items
            .iter()
            .filter_map(|item| {
                let mut parts = item.split(';');
                let coding = parts.next()?.trim().to_ascii_lowercase();
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q == 0.0)
                });
                (!refused).then_some(coding)
            })
            .collect();
        codings.sort();
        codings.dedup();
        return Some(codings.join(","));
    }
    if name == header::ACCEPT_LANGUAGE {
        if let Some(languages) = languages(&items) {
            return Some(languages);
        }
    }
    Some(items.join(","))
}

/// Accept-Language as a key (RFC 9111 §4.1 allows normalising by the
/// field's syntax, RFC 9110 §12.5.4): tags lower-cased, whitespace gone,
/// ordered by quality and, among equal qualities, by name, since their
/// order says nothing then. `None` when a quality does not parse: the
/// field is then compared as it came.
fn languages(items: &[String]) -> Option<String> {
    let mut ranked: Vec<(u16, String)> = Vec::with_capacity(items.len());
    for item in items {
        let mut parts = item.split(';');
        let tag = parts.next()?.trim().to_ascii_lowercase();
        let mut q = 1000;
        for param in parts {
            let param = param.trim();
            if let Some(value) = param
                .strip_prefix("q=")
                .or_else(|| param.strip_prefix("Q="))
            {
                q = qvalue(value.trim())?;
            }
        }
        ranked.push((q, tag));
    }
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    ranked.dedup();
    let mut out = String::new();
    for (i, (q, tag)) in ranked.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(tag);
        if *q != 1000 {
            // Three decimals at most (RFC 9110 §12.4.2), trailing zeros cut.
            let digits = format!("{q:03}");
            let digits = digits.trim_end_matches('0');
            out.push_str(";q=0");
            if !digits.is_empty() {
                out.push('.');
                out.push_str(digits);
            }
        }
    }
    Some(out)
}

/// A qvalue (RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`) in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn accept_language_normalises_case_whitespace_and_equal_quality_order() {
        // RFC 9111 §4.1: normalising by the field's syntax is allowed.
        let key = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_str(v).unwrap());
            normalized(&header::ACCEPT_LANGUAGE, &h).unwrap()
        };
        let a = key("en-US,en;q=0.9,de;q=0.9");
        assert_eq!(a, "en-us,de;q=0.9,en;q=0.9");
        assert_eq!(key("EN-us , de ; q=0.90,en;q=0.9"), a);
        assert_eq!(key("en-us,en;q=0.900,de;q=0.9,en-US"), a);
        // Quality order matters.
        assert_ne!(key("en;q=0.9,de;q=0.8"), key("en;q=0.8,de;q=0.9"));
        assert_eq!(key("fr;q=1.000"), "fr");
        assert_eq!(key("fr;q=0"), "fr;q=0");
        assert_eq!(key("fr;q=0.000,de;q=0.050"), "de;q=0.05,fr;q=0");
        // A quality that does not parse: compared as it came.
        assert_eq!(key("fr;q=high"), "fr;q=high");
        assert_eq!(key("fr;q=0.1234"), "fr;q=0.1234");
    }

    #[test]
    fn primary_key_normalizes_host_and_default_port() {
        let a = primary(FORWARD, "http", "Example.COM", 80, "/a?b=1");
        assert_eq!(a, "forward http://example.com:80/a?b=1");
        assert_eq!(primary(FORWARD, "http", "example.com:80", 80, "/a?b=1"), a);
        assert_eq!(primary(FORWARD, "http", "example.com.", 80, "/a?b=1"), a);
        assert_ne!(
            primary(FORWARD, "http", "example.com:8080", 80, "/a?b=1"),
            a
        );
        assert_ne!(primary(FORWARD, "http", "other.com", 80, "/a?b=1"), a);
        assert_eq!(
            primary("route:x", "http", "[::1]:81", 80, ""),
            "route:x http://[::1]:81/"
        );
        assert_eq!(origin_of("forward http://a:80/x/y"), "forward http://a:80");
        assert_eq!(split(&a), (FORWARD, "http://example.com:80/a?b=1"));
    }

    #[test]
    fn forward_and_each_route_key_apart() {
        let forward = primary(FORWARD, "http", "www.bank.test", 80, "/login");
        let catch_all = primary(
            &route_namespace("*/"),
            "http",
            "www.bank.test",
            80,
            "/login",
        );
        let other = primary(
            &route_namespace("api"),
            "http",
            "www.bank.test",
            80,
            "/login",
        );
        assert_ne!(forward, catch_all);
        assert_ne!(catch_all, other);
        assert_eq!(route_namespace("my route"), "route:my_route");
    }

    #[test]
    fn vary_parsing() {
        let mut h = HeaderMap::new();
        h.append(
            header::VARY,
            HeaderValue::from_static("Accept-Encoding, accept-language"),
        );
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        assert_eq!(
            Vary::of(&h),
            Vary::Fields(vec![header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE])
        );
        h.append(header::VARY, HeaderValue::from_static("*"));
        assert_eq!(Vary::of(&h), Vary::Star);
    }

    #[test]
    fn accept_encoding_is_normalized() {
        let req = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            h
        };
        let names = [header::ACCEPT_ENCODING];
        let stored = secondary(&names, &req("gzip, br"));
        assert!(matches(&stored, &req("br,gzip")));
        assert!(matches(&stored, &req("BR ; q=1, gzip, identity;q=0")));
        assert!(!matches(&stored, &req("gzip")));
        assert!(!matches(&stored, &HeaderMap::new()));
        let none = secondary(&names, &HeaderMap::new());
        assert!(matches(&none, &HeaderMap::new()));
        assert!(!matches(&none, &req("")));
    }
}
