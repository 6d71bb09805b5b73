//! Validation (RFC 9111 §4.3), updating stored heads (§3.2), answering client
//! conditionals from cache (RFC 9110 §13.2), and invalidation (§4.4).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::freshness::date_field;
use super::StoredResponse;
use crate::cache::head::StoredHead;

/// Conditional fields for revalidating (§4.3.1): `If-None-Match` with every
/// stored ETag for the URL, and `If-Modified-Since` with the selected
/// response's Last-Modified (else its Date).
pub fn conditional_fields<'a>(
    all_variants: impl Iterator<Item = &'a StoredResponse>,
    selected: Option<&StoredResponse>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut fields = Vec::new();
    let etags: Vec<&str> = all_variants
        .filter_map(|r| r.headers.get_str(header::ETAG))
        .collect();
    if !etags.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&etags.join(", ")) {
            fields.push((header::IF_NONE_MATCH, v));
        }
    }
    if let Some(selected) = selected {
        let since = selected
            .headers
            .get(header::LAST_MODIFIED)
            .or_else(|| selected.headers.get(header::DATE));
        if let Some(since) = since {
            fields.push((header::IF_MODIFIED_SINCE, since));
        }
    }
    fields
}

/// Which stored variant a 304 refers to (§4.3.4): the one whose ETag equals the
/// 304's; without an ETag in the 304, the one we asked about. `None` means the
/// 304 must not update anything.
pub fn select_for_update<'a>(
    mut variants: impl Iterator<Item = &'a StoredResponse>,
    asked_about: Option<usize>,
    not_modified: &HeaderMap,
) -> Option<usize> {
    match not_modified.get(header::ETAG) {
        Some(etag) => variants.position(|r| r.headers.get(header::ETAG).as_ref() == Some(etag)),
        None => asked_about,
    }
}

/// The stored head updated by a 304 (§3.2): every field in the 304 replaces
/// the stored one, except Content-Length (the stored body is unchanged).
pub fn merge_not_modified(stored: &StoredHead, not_modified: &HeaderMap) -> HeaderMap {
    let mut merged = stored.to_map(not_modified.len());
    for name in not_modified.keys() {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        merged.remove(name);
        for value in not_modified.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    merged
}

/// Whether a client's conditional GET/HEAD is satisfied by a stored response,
/// so it gets 304 (RFC 9110 §13.1.2, §13.1.3, §13.2.2): If-None-Match by weak
/// comparison takes precedence; If-Modified-Since only without it.
pub fn client_not_modified(method: &Method, request: &HeaderMap, stored: &StoredResponse) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored.headers.get_str(header::ETAG) else {
            return false;
        };
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|candidate| candidate == "*" || weak_eq(candidate, etag));
    }
    let Some(Some(since)) = date_field(request, header::IF_MODIFIED_SINCE) else {
        return false;
    };
    match stored.last_modified {
        Some(Some(modified)) => modified <= since,
        // RFC 9111 §4.3.2: without Last-Modified, a cache SHOULD use the
        // stored response's Date (or, without one, when it was received).
        None => super::freshness::date_value(stored) <= since,
        // Present but invalid: nothing to compare with.
        Some(None) => false,
    }
}

/// RFC 9110 §8.8.3.2: weak comparison ignores the `W/` prefix.
fn weak_eq(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.strip_prefix("W/").unwrap_or(s).to_string();
    strip(a) == strip(b)
}

/// The head of a 304 sent from cache (RFC 9110 §15.4.5): the fields a 200
/// would have carried that matter to caches.
pub fn not_modified_head(stored: &StoredHead) -> HeaderMap {
    let mut head = HeaderMap::new();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        for value in stored.get_all(&name) {
            head.append(name.clone(), value.clone());
        }
    }
    head
}

/// A request method that is not safe (RFC 9110 §9.2.1); unknown methods count as unsafe.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Keys to invalidate after `status` answered an unsafe request (§4.4): the
/// target, plus `Location` and `Content-Location` when they are on the same
/// origin. `target_key` is the request's primary key (`ns http://host:port/path`);
/// the targets stay in its namespace.
pub fn invalidation_targets(
    method: &Method,
    status: StatusCode,
    target_key: &str,
    response: &HeaderMap,
) -> Vec<String> {
    if !is_unsafe(method) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let origin = crate::cache::key::origin_of(target_key);
    let mut keys = vec![target_key.to_string()];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(value) = response.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Some(key) = resolve_same_origin(origin, target_key, value.trim()) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// Resolves a URI reference against the target; `None` when it names another origin.
fn resolve_same_origin(origin: &str, target_key: &str, reference: &str) -> Option<String> {
    if reference.starts_with("//") {
        return None;
    }
    if let Ok(uri) = reference.parse::<http::Uri>() {
        if let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let (namespace, _) = crate::cache::key::split(target_key);
            let key = crate::cache::key::primary(namespace, scheme, authority.as_str(), 80, path);
            return (crate::cache::key::origin_of(&key) == origin).then_some(key);
        }
    }
    if reference.contains("://") {
        return None;
    }
    if reference.starts_with('/') {
        return Some(format!("{origin}{reference}"));
    }
    // Relative path: resolve against the target's directory.
    let path = &target_key[origin.len()..];
    let path = path.split('?').next().unwrap_or("/");
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Some(format!("{origin}{dir}{reference}"))
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // test tables
mod tests {
    use super::super::tests_support::*;
    use super::*;

    #[test]
    fn conditional_request_fields() {
        // §4.3.1
        let a = stored(200, &[("etag", "\"a\""), ("last-modified", &at(-100))]);
        let b = stored(200, &[("etag", "W/\"b\"")]);
        let fields = conditional_fields([&a, &b].into_iter(), Some(&a));
        assert_eq!(
            fields[0],
            (
                header::IF_NONE_MATCH,
                HeaderValue::from_static("\"a\", W/\"b\"")
            )
        );
        assert_eq!(fields[1].0, header::IF_MODIFIED_SINCE);
        assert_eq!(fields[1].1.to_str().unwrap(), at(-100));
        // Without Last-Modified, the Date is used.
        let c = stored(200, &[]);
        let fields = conditional_fields([&c].into_iter(), Some(&c));
        assert_eq!(
            fields,
            vec![(
                header::IF_MODIFIED_SINCE,
                HeaderValue::from_str(&at(0)).unwrap()
            )]
        );
    }

    #[test]
    fn a_304_selects_by_etag_or_the_asked_variant() {
        // §4.3.4
        let variants = [
            stored(200, &[("etag", "\"a\"")]),
            stored(200, &[("etag", "\"b\"")]),
        ];
        assert_eq!(
            select_for_update(variants.iter(), Some(0), &headers(&[("etag", "\"b\"")])),
            Some(1)
        );
        assert_eq!(
            select_for_update(variants.iter(), Some(0), &headers(&[("etag", "\"zzz\"")])),
            None
        );
        assert_eq!(
            select_for_update(variants.iter(), Some(0), &headers(&[])),
            Some(0)
        );
    }

    #[test]
    fn a_304_updates_stored_fields_except_content_length() {
        // §3.2
        let stored = headers(&[
            ("cache-control", "max-age=10"),
            ("content-length", "5"),
            ("x-old", "kept"),
            ("x-multi", "1"),
        ]);
        let update = headers(&[
            ("cache-control", "max-age=600"),
            ("content-length", "0"),
            ("x-multi", "2"),
            ("x-multi", "3"),
            ("x-new", "added"),
        ]);
        let merged = merge_not_modified(&StoredHead::from_map(&stored), &update);
        assert_eq!(merged["cache-control"], "max-age=600");
        assert_eq!(merged["content-length"], "5");
        assert_eq!(merged["x-old"], "kept");
        assert_eq!(merged["x-new"], "added");
        let multi: Vec<_> = merged.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["2", "3"]);
    }

    #[test]
    fn client_conditionals() {
        // RFC 9110 §13.1.2, §13.1.3, §13.2.2
        let stored = stored(200, &[("etag", "W/\"v1\""), ("last-modified", &at(-100))]);
        let get = Method::GET;
        let cases: &[(&str, &[(&str, &str)], bool)] = &[
            (
                "If-None-Match weak match",
                &[("if-none-match", "\"v1\"")],
                true,
            ),
            (
                "If-None-Match list",
                &[("if-none-match", "\"x\", W/\"v1\"")],
                true,
            ),
            ("If-None-Match star", &[("if-none-match", "*")], true),
            (
                "If-None-Match mismatch",
                &[("if-none-match", "\"v2\"")],
                false,
            ),
            (
                "If-None-Match wins over If-Modified-Since",
                &[("if-none-match", "\"v2\""), ("if-modified-since", &at(0))],
                false,
            ),
            (
                "If-Modified-Since after modification",
                &[("if-modified-since", &at(-50))],
                true,
            ),
            (
                "If-Modified-Since equal to modification",
                &[("if-modified-since", &at(-100))],
                true,
            ),
            (
                "If-Modified-Since before modification",
                &[("if-modified-since", &at(-200))],
                false,
            ),
            (
                "invalid If-Modified-Since ignored",
                &[("if-modified-since", "yesterday")],
                false,
            ),
            ("no conditionals", &[], false),
        ];
        for (name, req, want) in cases {
            assert_eq!(
                client_not_modified(&get, &headers(req), &stored),
                *want,
                "{name}"
            );
        }
        assert!(!client_not_modified(
            &Method::POST,
            &headers(&[("if-none-match", "*")]),
            &stored
        ));
    }

    #[test]
    fn if_modified_since_without_last_modified_uses_date() {
        // RFC 9111 §4.3.2: the stored Date stands in for Last-Modified.
        let dated = stored(200, &[("date", &at(-100))]);
        let get = Method::GET;
        let ims = |when: &str| headers(&[("if-modified-since", when)]);
        assert!(client_not_modified(&get, &ims(&at(-50)), &dated));
        assert!(client_not_modified(&get, &ims(&at(-100)), &dated));
        assert!(!client_not_modified(&get, &ims(&at(-200)), &dated));
        // An invalid Last-Modified is not replaced by Date.
        let date = at(-100);
        let invalid = stored(200, &[("date", &date), ("last-modified", "soon")]);
        assert!(!client_not_modified(&get, &ims(&at(-50)), &invalid));
    }

    #[test]
    fn not_modified_head_keeps_cache_fields_only() {
        let stored = headers(&[
            ("etag", "\"a\""),
            ("content-type", "text/html"),
            ("cache-control", "max-age=5"),
            ("date", &at(0)),
        ]);
        let head = not_modified_head(&StoredHead::from_map(&stored));
        assert!(
            head.contains_key("etag")
                && head.contains_key("cache-control")
                && head.contains_key("date")
        );
        assert!(!head.contains_key("content-type"));
    }

    #[test]
    fn invalidation_targets_same_origin_only() {
        // §4.4
        let key = "http://site.test:80/items/7";
        let resp = headers(&[
            ("location", "/items/8"),
            ("content-location", "http://other.test/x"),
        ]);
        assert_eq!(
            invalidation_targets(&Method::POST, StatusCode::CREATED, key, &resp),
            ["http://site.test:80/items/7", "http://site.test:80/items/8"]
        );
        let resp = headers(&[
            ("location", "http://SITE.test/a"),
            ("content-location", "b?c=1"),
        ]);
        assert_eq!(
            invalidation_targets(&Method::PUT, StatusCode::OK, key, &resp),
            [
                "http://site.test:80/items/7",
                "http://site.test:80/a",
                "http://site.test:80/items/b?c=1"
            ]
        );
        assert!(invalidation_targets(
            &Method::DELETE,
            StatusCode::INTERNAL_SERVER_ERROR,
            key,
            &resp
        )
        .is_empty());
        assert!(invalidation_targets(&Method::GET, StatusCode::OK, key, &resp).is_empty());
        let unknown = Method::from_bytes(b"PURGEISH").unwrap();
        assert_eq!(
            invalidation_targets(&unknown, StatusCode::OK, key, &headers(&[])).len(),
            1
        );
        assert!(resolve_same_origin("http://site.test:80", key, "//evil.test/x").is_none());
    }
}
