//! `[cache]`: the cache's settings, and the types only it uses.

use serde::{de, Deserialize, Deserializer};

use super::{Cidr, Dur, Size};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Store and serve responses (false: every request goes to the origin).
    pub enabled: bool,
    /// Memory the cache may use, weighed as headers + body + overhead.
    pub capacity: Size,
    /// Responses larger than this are passed through, never stored.
    pub max_object_size: Size,
    /// Heuristic freshness (RFC 9111 §4.2.2): this fraction of the time since
    /// Last-Modified, for responses without explicit freshness.
    pub heuristic_fraction: f64,
    /// Upper bound of a heuristic freshness lifetime.
    pub heuristic_max: Dur,
    /// Vary variants kept per URL; the oldest goes first.
    pub max_variants: usize,
    /// How long a request waits for another request's fetch of the same URL
    /// before fetching on its own.
    pub collapse_timeout: Dur,
    /// After a response that cannot be shared, requests for that URL fetch
    /// on their own (not collapsed) for this long.
    pub hit_for_miss: Dur,
    /// Default stale-while-revalidate window when the response names none.
    pub stale_while_revalidate: Dur,
    /// Default stale-if-error window when neither response nor request names one.
    pub stale_if_error: Dur,
    /// Clients allowed to send PURGE on the proxy port.
    pub purge_allow: Vec<Cidr>,
    /// Also send `X-Cache: HIT|MISS` (for tools that expect it).
    pub x_cache: bool,
    /// Which responses with `Set-Cookie` may be stored.
    pub set_cookie: SetCookie,
    /// How long past expiry a stored response may be served when the
    /// origin cannot be reached (RFC 9111 §4.2.4); 0 turns it off.
    pub stale_if_unreachable: Dur,
    /// Targeted cache-control fields (RFC 9213) obeyed on reverse routes,
    /// first valid one wins; a route's own `targeted_fields` replaces it.
    pub targeted_fields: Vec<FieldName>,
    /// Objects fetched by Range are stored in aligned pieces of this size
    /// (nginx's slice module), so that any range, or the whole object, is
    /// later served from the pieces; 0 turns range storage off.
    pub slice_size: Size,
    /// Response fields whose words are the entry's tags, for purge by tag.
    pub tag_fields: Vec<FieldName>,
    /// Remove the tag fields from what clients receive (they are for this
    /// cache, and often name internal things).
    pub strip_tag_fields: bool,
    /// Tags kept per response; the rest are dropped and counted.
    pub max_tags_per_object: usize,
    /// `[cache.shared]`: a tier on Redis shared by every node.
    pub shared: Option<super::SharedConfig>,
    /// `[cache.disk]`: a tier on the local disk, kept across restarts.
    pub disk: Option<super::DiskConfig>,
}

/// `[cache] set_cookie`: RFC 9111 §3.1 lets a cache store every field, but
/// a cookie is usually one user's (§7.3, RFC 6265 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SetCookie {
    /// Stored only when the origin gave explicit shared freshness
    /// (`s-maxage`, `max-age`, `public` or `Expires`); never on heuristics.
    #[default]
    Explicit,
    /// Never stored.
    Pass,
    /// Stored like any other response.
    Store,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            capacity: Size(256 << 20),
            max_object_size: Size(8 << 20),
            heuristic_fraction: 0.1,
            heuristic_max: Dur(std::time::Duration::from_secs(86_400)),
            max_variants: 16,
            collapse_timeout: Dur(std::time::Duration::from_secs(5)),
            hit_for_miss: Dur(std::time::Duration::from_secs(30)),
            stale_while_revalidate: Dur(std::time::Duration::ZERO),
            stale_if_error: Dur(std::time::Duration::ZERO),
            purge_allow: vec![
                "127.0.0.0/8".parse().expect("valid literal"),
                "::1/128".parse().expect("valid literal"),
            ],
            x_cache: false,
            set_cookie: SetCookie::Explicit,
            stale_if_unreachable: Dur(std::time::Duration::from_secs(3600)),
            targeted_fields: vec![FieldName(http::HeaderName::from_static(
                "cdn-cache-control",
            ))],
            slice_size: Size(1 << 20),
            tag_fields: vec![
                FieldName(http::HeaderName::from_static("surrogate-key")),
                FieldName(http::HeaderName::from_static("cache-tag")),
            ],
            strip_tag_fields: true,
            max_tags_per_object: 64,
            shared: None,
            disk: None,
        }
    }
}

/// A header field name in the configuration, checked when it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldName(pub http::HeaderName);

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        http::HeaderName::from_bytes(text.trim().as_bytes())
            .map(FieldName)
            .map_err(|_| de::Error::custom(format!("{text:?} is not a header field name")))
    }
}

/// A route's `cache_key = { ... }`: how its requests are keyed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheKeyConfig {
    /// Query parameters left out of the key: names, or globs with `*` and `?`.
    pub ignore_query: Vec<QueryGlob>,
    /// Sort the query parameters, so their order does not split the cache.
    pub sort_query: bool,
    /// Request fields whose values split the cache (as if the origin sent
    /// `Vary` with them).
    pub include_headers: Vec<FieldName>,
    /// Cookies whose values split the cache.
    pub include_cookies: Vec<CookieName>,
}

/// A query-parameter name pattern: letters, digits and `-_.~%+!$'()*,;:@/?`
/// where `*` is any run of characters and `?` any one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryGlob(pub String);

impl<'de> Deserialize<'de> for QueryGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = text.is_empty()
            || text.chars().any(|c| {
                c.is_whitespace()
                    || c.is_control()
                    || matches!(c, '&' | '=' | '#' | '[' | ']' | '{' | '}')
            });
        if bad {
            return Err(de::Error::custom(format!(
                "{text:?} is not a query parameter pattern: a name, with * for any run and ? for one character"
            )));
        }
        Ok(QueryGlob(text))
    }
}

/// A cookie name (RFC 6265 §4.1.1: a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieName(pub String);

impl<'de> Deserialize<'de> for CookieName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let token = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(de::Error::custom(format!("{text:?} is not a cookie name")));
        }
        Ok(CookieName(text))
    }
}

/// A route's `status_ttl = { 404 = "30s" }`: a status code and a lifetime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusTtl(pub Vec<(u16, Dur)>);

impl<'de> Deserialize<'de> for StatusTtl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let table = std::collections::BTreeMap::<String, Dur>::deserialize(d)?;
        let mut out = Vec::new();
        for (status, ttl) in table {
            match status.trim().parse::<u16>() {
                Ok(code) if (200..=599).contains(&code) => out.push((code, ttl)),
                _ => {
                    return Err(de::Error::custom(format!(
                        "{status:?} is not a final status code (200 to 599)"
                    )))
                }
            }
        }
        Ok(StatusTtl(out))
    }
}

/// `[forward] parent`: `http://[user:password@]host:port` of a forward
/// proxy. Plain HTTP (the parent fetches `https://` URLs itself, and
/// tunnels are CONNECTs through it); the port is required.
#[derive(Clone, PartialEq, Eq)]
pub struct ParentUrl {
    pub authority: http::uri::Authority,
    /// `user:password`, sent as Basic `Proxy-Authorization`.
    pub credentials: Option<String>,
}

impl std::fmt::Debug for ParentUrl {
    // Never the credentials (no secret in a log line).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParentUrl({})", self.authority)
    }
}

impl<'de> Deserialize<'de> for ParentUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let shown = match text.rsplit_once('@') {
            Some((_, host)) => format!("http://***@{host}"),
            None => text.clone(),
        };
        let bad = |why: &str| de::Error::custom(format!("parent {shown:?}: {why}"));
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| bad("use http://host:port (a parent is reached over plain HTTP)"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (credentials, host) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c.to_string()), h),
            None => (None, rest),
        };
        if credentials.as_deref().is_some_and(|c| !c.contains(':')) {
            return Err(bad("credentials are user:password"));
        }
        let authority: http::uri::Authority = host.parse().map_err(|_| bad("not host:port"))?;
        if authority.port_u16().is_none() || authority.host().is_empty() || host.contains('/') {
            return Err(bad("give the parent's host and port, as http://host:port"));
        }
        Ok(ParentUrl {
            authority,
            credentials,
        })
    }
}
