//! What a route asks of the cache beyond RFC 9111's defaults: chosen per
//! reverse route from `[cache]` and the route's own keys, and fixed for
//! forward traffic. The pipeline carries one `Arc<CacheRules>` per request.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use http::header::{HeaderMap, HeaderName};

use super::control::{FieldsDirective, RequestControl};
use super::key;
use super::policy::freshness::heuristically_cacheable;
use crate::config::{CacheConfig, RouteConfig};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheRules {
    /// Targeted cache-control fields (RFC 9213) this cache obeys, in order
    /// of precedence; empty: only Cache-Control and Expires count.
    pub targeted_fields: Box<[HeaderName]>,
    /// Response fields holding the entry's tags; empty: no tags.
    pub tag_fields: Box<[HeaderName]>,
    /// Tag fields are removed from what clients receive.
    pub strip_tag_fields: bool,
    pub max_tags: usize,
    pub key: KeyRules,
    /// Seconds of freshness for responses without explicit freshness, in
    /// place of the heuristic.
    pub default_ttl: Option<u32>,
    /// Seconds of freshness by status, for responses without explicit
    /// freshness (negative caching).
    pub status_ttl: Box<[(u16, u32)]>,
    /// A client's no-cache, Pragma: no-cache or max-age is not obeyed.
    pub ignore_client_no_cache: bool,
}

/// `cache_key = { ... }`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyRules {
    pub ignore_query: Box<[String]>,
    pub sort_query: bool,
    /// Request fields and cookies (as `key::cookie_field` names) added to
    /// every response's secondary key, as if it had Vary with them.
    pub include: Box<[HeaderName]>,
}

impl CacheRules {
    /// Forward-proxy traffic: targeted fields and tags speak to the origin's
    /// CDN, not to a proxy its visitors chose, so none is read.
    pub fn forward() -> Arc<CacheRules> {
        static FORWARD: LazyLock<Arc<CacheRules>> =
            LazyLock::new(|| Arc::new(CacheRules::default()));
        FORWARD.clone()
    }

    /// A reverse route's rules: its own keys over `[cache]`'s.
    pub fn for_route(cache: &CacheConfig, route: &RouteConfig) -> CacheRules {
        let names = |list: &[crate::config::FieldName]| list.iter().map(|f| f.0.clone()).collect();
        let key = &route.cache_key;
        let include = key
            .include_headers
            .iter()
            .map(|f| f.0.clone())
            .chain(
                key.include_cookies
                    .iter()
                    .filter_map(|c| key::cookie_field(&c.0)),
            )
            .collect();
        let secs = |d: crate::config::Dur| u32::try_from(d.get().as_secs()).unwrap_or(u32::MAX);
        CacheRules {
            targeted_fields: names(
                route
                    .targeted_fields
                    .as_deref()
                    .unwrap_or(&cache.targeted_fields),
            ),
            tag_fields: names(&cache.tag_fields),
            strip_tag_fields: cache.strip_tag_fields,
            max_tags: cache.max_tags_per_object,
            key: KeyRules {
                ignore_query: key.ignore_query.iter().map(|g| g.0.clone()).collect(),
                sort_query: key.sort_query,
                include,
            },
            default_ttl: route.default_ttl.map(secs),
            status_ttl: route
                .status_ttl
                .0
                .iter()
                .map(|(s, d)| (*s, secs(*d)))
                .collect(),
            ignore_client_no_cache: route.ignore_client_no_cache,
        }
    }

    /// The lifetime the route gives a response of `status` that carries no
    /// explicit freshness: `status_ttl`, else `default_ttl` for the
    /// statuses a heuristic would apply to (RFC 9110 §15.1).
    pub fn ttl_for(&self, status: http::StatusCode) -> Option<u32> {
        let code = status.as_u16();
        self.status_ttl
            .iter()
            .find(|(s, _)| *s == code)
            .map(|(_, ttl)| *ttl)
            .or(self.default_ttl.filter(|_| heuristically_cacheable(status)))
    }

    /// Removes the tag fields from a response on its way to clients.
    pub fn strip_tags(&self, headers: &mut HeaderMap) {
        if self.strip_tag_fields {
            for name in self.tag_fields.iter() {
                headers.remove(name);
            }
        }
    }

    /// The request's directives as this route obeys them.
    pub fn request_control(&self, headers: &HeaderMap) -> RequestControl {
        let mut control = RequestControl::parse(headers);
        if self.ignore_client_no_cache {
            control.no_cache = false;
            control.max_age = None;
        }
        control
    }
}

impl KeyRules {
    /// `path_and_query` as the key has it: ignored parameters removed, the
    /// rest sorted when asked. Borrowed when nothing changes.
    pub fn path<'a>(&self, path_and_query: &'a str) -> Cow<'a, str> {
        if self.ignore_query.is_empty() && !self.sort_query {
            return Cow::Borrowed(path_and_query);
        }
        let Some((path, query)) = path_and_query.split_once('?') else {
            return Cow::Borrowed(path_and_query);
        };
        let mut params: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let name = p.split_once('=').map_or(*p, |(n, _)| n);
                !self.ignore_query.iter().any(|g| glob(g, name))
            })
            .collect();
        if self.sort_query {
            params.sort_unstable();
        }
        if params.is_empty() {
            return Cow::Owned(path.to_string());
        }
        Cow::Owned(format!("{path}?{}", params.join("&")))
    }
}

/// `*` matches any run of characters, `?` any one; the rest literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matching with one backtrack point (the last `*`).
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// The fields a qualified `private="..."` keeps out of the store
/// (§5.2.2.7), for a response a TTL rule makes storable.
pub fn private_fields(private: &FieldsDirective) -> Vec<HeaderName> {
    match private {
        FieldsDirective::Fields(names) => names.to_vec(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("utm_*", "utm_source"));
        assert!(glob("utm_*", "utm_"));
        assert!(!glob("utm_*", "xutm_source"));
        assert!(glob("fbclid", "fbclid"));
        assert!(!glob("fbclid", "fbclid2"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*id*", "gclid_x"));
        assert!(!glob("a*b", "ac"));
    }

    #[test]
    fn query_rules() {
        let rules = KeyRules {
            ignore_query: vec!["utm_*".to_string(), "fbclid".to_string()].into(),
            sort_query: true,
            include: Box::new([]),
        };
        assert_eq!(rules.path("/p?b=2&utm_source=x&a=1&fbclid=y"), "/p?a=1&b=2");
        assert_eq!(rules.path("/p?utm_medium=m"), "/p");
        assert_eq!(rules.path("/p"), "/p");
        let none = KeyRules::default();
        assert!(matches!(none.path("/p?b&a"), Cow::Borrowed("/p?b&a")));
    }

    #[test]
    fn status_ttl_before_default_ttl() {
        let rules = CacheRules {
            default_ttl: Some(300),
            status_ttl: vec![(404, 30), (302, 60)].into(),
            ..CacheRules::default()
        };
        use http::StatusCode as S;
        assert_eq!(rules.ttl_for(S::NOT_FOUND), Some(30));
        assert_eq!(rules.ttl_for(S::FOUND), Some(60));
        assert_eq!(rules.ttl_for(S::OK), Some(300));
        // Not heuristically cacheable, and not listed.
        assert_eq!(rules.ttl_for(S::SERVICE_UNAVAILABLE), None);
    }
}
