//! Deciding what a request is: forward proxying (absolute-form), a reverse route
//! (origin-form, by Host and path), or something we answer ourselves.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::uri::Authority;
use http::{header, HeaderValue, Request, Version};

use super::error::ProxyError;
use super::routes::{normalize_host, Route, RouteTable};
use crate::config::ForwardConfig;
use crate::upstream::addr;

pub enum Target<'a> {
    /// Absolute-form `http://authority/...` from an allowed client.
    Forward { authority: Authority },
    /// Origin-form (or a forward request aimed at the proxy itself).
    Reverse {
        route: &'a Route,
        /// The host the client asked for, sent on when the route preserves it.
        host: Option<HeaderValue>,
    },
}

pub struct Classifier {
    pub forward: ForwardConfig,
    pub routes: RouteTable,
    /// Where the proxy listens, so it never forwards a request to itself.
    pub local_addrs: Vec<SocketAddr>,
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
            let host = match req.headers().get(header::HOST) {
                Some(h) => Some(h.clone()),
                None => uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
            };
            if host.is_none() && req.version() == Version::HTTP_11 {
                // RFC 9112 §3.2: a 1.1 request without Host is a 400.
                return Err(ProxyError::BadRequest("missing Host header".into()));
            }
            return self.reverse(host, uri.path());
        }

        if uri.scheme_str() != Some("http") {
            return Err(ProxyError::NotImplemented(format!(
                "{}:// URLs through the proxy (https must be tunnelled with CONNECT)",
                uri.scheme_str().unwrap_or_default()
            )));
        }
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
            return self.reverse(host, uri.path());
        }
        self.admit_forward(client)?;
        Ok(Target::Forward { authority })
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

    fn reverse(&self, host: Option<HeaderValue>, path: &str) -> Result<Target<'_>, ProxyError> {
        let name = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
        match self.routes.find(name, path) {
            Some(route) => Ok(Target::Reverse { route, host }),
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
