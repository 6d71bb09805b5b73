//! Reverse-proxy routing: the first host pattern (in file order) that matches the
//! request's host and has a route whose `path_prefix` starts the path; among
//! that pattern's routes, the longest prefix wins.

use std::sync::Arc;

use http::HeaderValue;

use std::collections::HashMap;

use crate::cache::rules::CacheRules;
use crate::config::{
    CacheConfig, ForwardedHeaders, HostPattern, RouteConfig, RouteUpstream, UpstreamProtocol,
    UpstreamUrl,
};
use crate::http::validate::host::normalize_host;
use crate::tls::{Alpn, TlsClient};
use crate::upstream::Group;

pub struct Route {
    pub name: Arc<str>,
    /// This route's part of the cache (`cache::key::route_namespace`).
    pub namespace: Arc<str>,
    /// `host:port` of the upstream, for logs.
    pub upstream_label: Arc<str>,
    pub path_prefix: String,
    pub upstream: UpstreamUrl,
    /// `Host` to send when `preserve_host` is false.
    pub upstream_host: HeaderValue,
    pub preserve_host: bool,
    pub forwarded: ForwardedHeaders,
    /// Plain-HTTP requests get 308 to https.
    pub https_redirect: bool,
    /// How to reach an `https://` upstream (`None` for http).
    pub tls: Option<crate::upstream::OriginTls>,
    /// The upstream group, when the route names one.
    pub group: Option<Arc<Group>>,
    /// What the route asks of the cache.
    pub cache_rules: Arc<CacheRules>,
    /// A `root` route: files are served from it, nothing is proxied (the
    /// upstream fields above are then never used).
    pub files: Option<Arc<crate::files::Docroot>>,
    /// Client networks admitted (any when empty).
    pub allow: Vec<crate::config::Cidr>,
    /// `basic_auth`: `Authorization` checked, 401 otherwise.
    pub auth: Option<Arc<super::auth::ProxyAuth>>,
}

/// The upstream of a `root` route, which no request is ever sent to
/// (`prepare` answers file routes first); a real URL, so that the fields
/// every route has stay plain values.
const NO_UPSTREAM: &str = "http://files.invalid:80";

/// The TLS client of an `https://` route: the public roots plus the CAs
/// configured for all origins and for this route, and its ALPN choice.
fn origin_tls(
    c: &RouteConfig,
    upstream_ca: Option<&std::path::Path>,
) -> Result<Option<crate::upstream::OriginTls>, String> {
    let Some(url) = c.upstream.as_ref().and_then(|u| u.url()).filter(|u| u.tls) else {
        return Ok(None);
    };
    let cas: Vec<std::path::PathBuf> = upstream_ca
        .map(std::path::Path::to_path_buf)
        .into_iter()
        .chain(c.tls_ca.clone())
        .collect();
    let alpn = match c.upstream_protocol {
        UpstreamProtocol::Auto => Alpn::Auto,
        UpstreamProtocol::Http1 => Alpn::Http1,
        UpstreamProtocol::Http2 => Alpn::Http2,
    };
    if !c.tls_verify {
        tracing::warn!(
            upstream = %url,
            "tls_verify = false: the origin's certificate is not checked (encrypted, not authenticated)"
        );
    }
    let client = TlsClient::new(&cas, c.tls_verify, alpn)?;
    Ok(Some(crate::upstream::OriginTls(Arc::new(client))))
}

#[derive(Default)]
pub struct RouteTable {
    /// Host patterns in first-seen order, each with its routes.
    groups: Vec<(HostPattern, Vec<Route>)>,
}

impl RouteTable {
    /// `upstream_ca`: `[upstream] tls_ca`, trusted by every https route;
    /// `groups`: the upstream groups by name (the configuration checked
    /// that every group a route names exists).
    pub fn new(
        configs: &[RouteConfig],
        upstream_ca: Option<&std::path::Path>,
        groups: &HashMap<String, Arc<Group>>,
        cache: &CacheConfig,
    ) -> Result<RouteTable, String> {
        let mut table = RouteTable::default();
        for c in configs {
            // A group route is labelled and first addressed by its first
            // server; the pool picks the server per request.
            let files = crate::files::Docroot::of(c)?;
            let (upstream, group) = match &c.upstream {
                None => (NO_UPSTREAM.parse::<UpstreamUrl>()?, None),
                Some(RouteUpstream::Url(url)) => (url.clone(), None),
                Some(RouteUpstream::Group(name)) => {
                    let group = groups
                        .get(name)
                        .ok_or_else(|| format!("no upstream group is named {name:?}"))?;
                    (group.server(0).url.clone(), Some(group.clone()))
                }
            };
            let host_header = upstream.host_header().to_string();
            let name: Arc<str> = Arc::from(c.name.clone().unwrap_or_else(|| {
                let host = match &c.host {
                    HostPattern::Any => "*".to_string(),
                    HostPattern::Suffix(s) => format!("*{s}"),
                    HostPattern::Exact(h) => h.clone(),
                };
                format!("{host}{}", c.path_prefix)
            }));
            let route = Route {
                namespace: Arc::from(crate::cache::key::route_namespace(&name)),
                name,
                upstream_label: match (&group, &files) {
                    (Some(group), _) => Arc::from(format!("group {}", group.name)),
                    (None, Some(files)) => Arc::from(format!("files {}", files.root().display())),
                    (None, None) => Arc::from(upstream.authority.as_str()),
                },
                path_prefix: c.path_prefix.clone(),
                upstream,
                group,
                upstream_host: HeaderValue::from_str(&host_header)
                    .expect("authority is a valid header value"),
                preserve_host: c.preserve_host,
                forwarded: c.forwarded,
                https_redirect: c.https_redirect,
                tls: origin_tls(c, upstream_ca)?,
                cache_rules: Arc::new(CacheRules::for_route(cache, c)),
                files,
                allow: c.allow.clone(),
                auth: c
                    .basic_auth
                    .as_ref()
                    .map(|a| Arc::new(super::auth::ProxyAuth::for_origin(a))),
            };
            match table.groups.iter_mut().find(|(p, _)| *p == c.host) {
                Some((_, routes)) => routes.push(route),
                None => table.groups.push((c.host.clone(), vec![route])),
            }
        }
        Ok(table)
    }

    pub fn all(&self) -> impl Iterator<Item = &Route> {
        self.groups.iter().flat_map(|(_, routes)| routes.iter())
    }

    /// `host` as it came in a `Host` header or URI authority (port and case allowed).
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        let host = normalize_host(host);
        self.groups
            .iter()
            .filter(|(pattern, _)| pattern.matches(&host))
            .find_map(|(_, routes)| {
                // `max_by_key` keeps the last maximum; reversed, the first wins.
                routes
                    .iter()
                    .rev()
                    .filter(|r| path.starts_with(&r.path_prefix))
                    .max_by_key(|r| r.path_prefix.len())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(spec: &[(&str, &str, &str)]) -> RouteTable {
        let configs: Vec<RouteConfig> = spec
            .iter()
            .map(|(host, prefix, name)| {
                let text = format!(
                    "name = \"{name}\"\nhost = \"{host}\"\npath_prefix = \"{prefix}\"\nupstream = \"http://127.0.0.1:1\"\n"
                );
                toml::from_str(&text).unwrap()
            })
            .collect();
        RouteTable::new(&configs, None, &HashMap::new(), &CacheConfig::default()).unwrap()
    }

    #[test]
    fn first_matching_host_then_longest_prefix() {
        let t = table(&[
            ("api.test", "/", "api-root"),
            ("api.test", "/v2/", "api-v2"),
            ("*.test", "/", "wild"),
            ("*", "/static/", "any-static"),
            ("*", "/", "any"),
        ]);
        let name = |h, p| t.find(h, p).map(|r| &*r.name);
        assert_eq!(name("API.test:8080", "/v2/x"), Some("api-v2"));
        assert_eq!(name("api.test", "/v1"), Some("api-root"));
        assert_eq!(name("www.test", "/static/a"), Some("wild"));
        assert_eq!(name("other.example", "/static/a"), Some("any-static"));
        assert_eq!(name("other.example", "/"), Some("any"));
    }

    #[test]
    fn falls_through_when_a_host_has_no_matching_prefix() {
        let t = table(&[("a.test", "/api/", "a-api"), ("*", "/", "any")]);
        assert_eq!(&*t.find("a.test", "/index.html").unwrap().name, "any");
        let t = table(&[("a.test", "/api/", "a-api")]);
        assert!(t.find("a.test", "/index.html").is_none());
        assert!(t.find("b.test", "/api/").is_none());
    }
}
