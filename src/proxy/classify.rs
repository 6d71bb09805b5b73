//! Deciding what a request is: forward proxying (absolute-form), a reverse route
//! (origin-form, by Host and path), or something we answer ourselves.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::borrow::Cow;

use http::uri::{Authority, PathAndQuery};
use http::{header, HeaderValue, Request, Uri, Version};

use super::error::ProxyError;
use super::routes::{Route, RouteTable};
use crate::config::ForwardConfig;
use crate::http::validate::host::normalize_host;
use crate::http::validate::target;
use crate::upstream::addr;

pub enum Target<'a> {
    /// Absolute-form `http://authority/...` (or `https://`, fetched over
    /// TLS by the proxy) from an allowed client.
    Forward { authority: Authority, https: bool },
    /// Origin-form (or a forward request aimed at the proxy itself).
    Reverse {
        route: &'a Route,
        /// The host the client asked for, sent on when the route preserves it.
        host: Option<HeaderValue>,
        /// The normalised path (and the query) when it differs from what the
        /// client sent: what was routed by, and what is keyed and sent.
        path: Option<PathAndQuery>,
    },
}

pub struct Classifier {
    pub forward: ForwardConfig,
    pub routes: RouteTable,
    /// Where the proxy listens, so it never forwards a request to itself.
    pub local_addrs: Vec<SocketAddr>,
    /// `[server] allow_encoded_slash`: keep `%2F`, `%5C` in reverse paths.
    pub allow_encoded_slash: bool,
}

impl Classifier {
    pub fn classify<'a, B>(
        &'a self,
        req: &Request<B>,
        client: IpAddr,
    ) -> Result<Target<'a>, ProxyError> {
        let uri = req.uri();
        // HTTP/2 requests always carry scheme and authority; they are reverse
        // traffic (browsers do not speak h2c to proxies).
        let absolute = req.version() != Version::HTTP_2 && uri.scheme().is_some();
        if !absolute {
            // `http::validate::host::check_request` has vetted Host (and :authority).
            let host = match req.headers().get(header::HOST) {
                Some(h) => Some(h.clone()),
                None => uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
            };
            return self.reverse(host, uri);
        }

        let https = match uri.scheme_str() {
            Some("http") => false,
            // Some clients send `GET https://...` to a proxy instead of
            // CONNECT: the proxy makes the TLS connection itself.
            Some("https") => true,
            other => {
                return Err(ProxyError::NotImplemented(format!(
                    "{}:// URLs through the proxy",
                    other.unwrap_or_default()
                )))
            }
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| ProxyError::BadRequest("absolute URI without a host".into()))?
            .clone();
        if authority.as_str().contains('@') {
            return Err(ProxyError::BadRequest(
                "user information in the request URI".into(),
            ));
        }
        if self.is_self(&authority) {
            let host = HeaderValue::from_str(authority.as_str()).ok();
            return self.reverse(host, uri);
        }
        self.admit_forward(client)?;
        Ok(Target::Forward { authority, https })
    }

    /// Forward proxying (and CONNECT) only when enabled, for allowed clients.
    pub fn admit_forward(&self, client: IpAddr) -> Result<(), ProxyError> {
        if !self.forward.enabled {
            return Err(ProxyError::Forbidden(
                "forward proxying is disabled on this proxy".into(),
            ));
        }
        if !self
            .forward
            .allow_clients
            .iter()
            .any(|net| net.contains(client))
        {
            return Err(ProxyError::Forbidden(format!(
                "client {client} is not allowed to use this proxy"
            )));
        }
        Ok(())
    }

    /// Routes by host and by the normalised path (RFC 3986 §5.2.4), so
    /// `/pub/../secret` is routed, keyed and sent as `/secret`.
    fn reverse(&self, host: Option<HeaderValue>, uri: &Uri) -> Result<Target<'_>, ProxyError> {
        let name = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
        let normal = target::normalize_path(uri.path(), self.allow_encoded_slash)
            .map_err(|e| ProxyError::BadRequest(e.reason().into()))?;
        let path = match normal {
            Cow::Borrowed(_) => None,
            Cow::Owned(mut normal) => {
                if let Some(query) = uri.query() {
                    normal.push('?');
                    normal.push_str(query);
                }
                Some(
                    PathAndQuery::try_from(normal)
                        .map_err(|_| ProxyError::BadRequest("invalid request target".into()))?,
                )
            }
        };
        let routed = path.as_ref().map_or(uri.path(), PathAndQuery::path);
        match self.routes.find(name, routed) {
            Some(route) => Ok(Target::Reverse { route, host, path }),
            None => Err(ProxyError::NoRoute(if name.is_empty() {
                "(none)".into()
            } else {
                normalize_host(name)
            })),
        }
    }

    /// True when `authority` names one of our own listeners, in any spelling
    /// the resolver accepts (`0`, `127.1`, `[::ffff:127.0.0.1]`, `[::]`, ...).
    /// Names other than `localhost` that resolve here are not recognised; the
    /// destination guard refuses those, so nothing loops either way.
    pub fn is_self(&self, authority: &Authority) -> bool {
        let port = authority.port_u16().unwrap_or(80);
        let host = normalize_host(authority.host());
        let ips: &[IpAddr] = match addr::parse_literal(&host) {
            Some(ip) => &[ip],
            None if host == "localhost" => &[
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            None => return false,
        };
        self.local_addrs
            .iter()
            .any(|local| ips.iter().any(|ip| addr::reaches(*local, *ip, port)))
    }
}
