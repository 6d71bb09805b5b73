//! admit → classify → route: turning a client request into the request that
//! goes upstream (or an answer given here), with its cache key.

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, Uri};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::cached::Exchange;
use super::classify::Target;
use super::error::ProxyError;
use super::{local, upgrade, ClientConn, Handler, Prepared, Trace};
use crate::cache::key;
use crate::cache::rules::CacheRules;
use crate::http::body::RequestBody;
use crate::http::headers;
use crate::metrics::Mode;
use crate::upstream::peers::PEER_HEADER;

impl Handler {
    /// admit → classify → route: the request as it will go upstream, and its
    /// cache key.
    pub(super) async fn prepare(
        &self,
        mut req: Request<Incoming>,
        client: &ClientConn,
        index: u64,
        trace: &mut Trace,
    ) -> Result<Prepared, ProxyError> {
        // admit
        if client.activity.is_ambiguous(index) {
            return Err(ProxyError::BadRequest(
                "Content-Length together with Transfer-Encoding".into(),
            ));
        }
        if client.activity.is_large_head(index) {
            return Err(ProxyError::HeadTooLarge);
        }
        // This request's policy, whatever a reload does meanwhile (a guard,
        // not a clone of the Arc: no shared counter touched per request).
        let policy = self.policy.load();
        let max_body = policy.max_body;
        // A chunk size line past the limit may already have been read with
        // the head (`server::head_guard`); later ones end the body at once.
        if client.activity.is_oversized(index) {
            return Err(ProxyError::PayloadTooLarge(max_body));
        }
        // `[[redirect]]` rules come before routing (origin-form requests).
        if !policy.redirects.is_empty() && req.uri().authority().is_none() {
            if let Some(resp) = redirect(&policy.redirects, &req) {
                trace.mode = Mode::File;
                return Ok(Prepared::Files(resp, "redirect"));
            }
        }
        let target = policy.classifier.classify(&req, client.peer.ip())?;
        if self.via.is_loop(req.headers()) {
            return Err(ProxyError::Loop);
        }
        if let Target::Reverse {
            route, host, path, ..
        } = &target
        {
            // Admission to the route: its client networks, then its users.
            let ip = client.peer.ip().to_canonical();
            if !route.allow.is_empty() && !route.allow.iter().any(|net| net.contains(ip)) {
                return Err(ProxyError::Forbidden(format!(
                    "client {ip} may not use route {}",
                    route.name
                )));
            }
            if let Some(auth) = &route.auth {
                auth.check(req.headers(), ip).await?;
            }
            if let Some(files) = &route.files {
                trace.mode = Mode::File;
                trace.route = Some(route.name.clone());
                trace.upstream = Some(route.upstream_label.clone());
                let normal = path.as_ref().or(req.uri().path_and_query());
                let full = normal.map_or("/", |p| p.path());
                let query = req.uri().query();
                let rel = full.strip_prefix(route.path_prefix.as_str()).unwrap_or("");
                // sendfile needs the body's bytes as they are on the wire:
                // HTTP/1.x on a plain connection.
                let zero_copy = client
                    .zero_copy
                    .as_ref()
                    .filter(|_| req.version() <= http::Version::HTTP_11);
                let answer = files
                    .serve(
                        req.method(),
                        req.headers(),
                        full,
                        rel,
                        query,
                        zero_copy.is_some(),
                    )
                    .await;
                return Ok(Prepared::Files(file_response(answer, zero_copy), "file"));
            }
            if route.https_redirect && !client.tls {
                let path = path.as_ref().or(req.uri().path_and_query());
                return Ok(Prepared::Local(local::to_https(
                    host.as_ref(),
                    path,
                    policy.https_port,
                )?));
            }
        }
        if max_body > 0 && headers::content_length(req.headers()).is_some_and(|len| len > max_body)
        {
            return Err(ProxyError::PayloadTooLarge(max_body));
        }
        if let (Target::Forward { .. }, Some(auth)) = (&target, &policy.auth) {
            auth.check(req.headers(), client.peer.ip()).await?;
        }
        // RFC 9110 §7.6.2: TRACE and OPTIONS count down Max-Forwards; at zero
        // this proxy is the recipient.
        match local::max_forwards(&req) {
            local::MaxForwards::Answer => return Ok(Prepared::Local(local::answer_here(&req))),
            local::MaxForwards::Decrement(n) => {
                req.headers_mut()
                    .insert(header::MAX_FORWARDS, HeaderValue::from(n));
            }
            local::MaxForwards::Forward => {}
        }

        let upgrade = upgrade::requested(&req);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));

        // route: where the request goes, the head it goes with, and the key
        // of the URI the client asked for.
        let client_version = req.version();
        let (mut parts, body) = req.into_parts();
        // A cheap clone (shared bytes), and no re-parse for the upstream URI.
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        // A cache peer's hop says which scheme its client used; from anyone
        // else the field means nothing and goes. Without peers it means
        // nothing to anyone here, and the lookup is skipped (every request
        // pays for it otherwise).
        let from_peer = policy.cluster.as_ref().and_then(|cluster| {
            let marker = parts.headers.remove(&PEER_HEADER)?;
            cluster.is_peer(client.peer.ip()).then_some(marker)
        });
        let client_tls = match &from_peer {
            Some(proto) => proto.as_bytes() == b"https",
            None => client.tls,
        };
        let (uri, upstream_label, key, pool, to, rules) = match &target {
            Target::Forward { authority, https } => {
                let host = HeaderValue::from_str(authority.as_str()).map_err(|_| {
                    ProxyError::BadRequest("invalid host in the request URI".into())
                })?;
                // RFC 9112 §3.2.2: the absolute URI's authority replaces any Host.
                parts.headers.insert(header::HOST, host);
                let (scheme, port) = if *https { ("https", 443) } else { ("http", 80) };
                let key = key::primary(
                    key::FORWARD,
                    scheme,
                    authority.as_str(),
                    port,
                    path.as_str(),
                );
                trace.mode = Mode::Forward;
                trace.route = Some(self.forward_route.clone());
                trace.upstream = Some(Arc::from(authority.as_str()));
                (
                    parts.uri.clone(),
                    authority.to_string(),
                    key,
                    self.forward_upstream.clone(),
                    policy.forward_target.clone(),
                    CacheRules::forward(),
                )
            }
            Target::Reverse {
                route,
                host,
                path: normal,
            } => {
                let path = normal.as_ref().unwrap_or(&path);
                tracing::trace!(route = %route.name, "reverse route");
                trace.mode = Mode::Reverse;
                trace.route = Some(route.name.clone());
                trace.upstream = Some(route.upstream_label.clone());
                let uri = Uri::builder()
                    .scheme(if route.upstream.tls { "https" } else { "http" })
                    .authority(route.upstream.authority.clone())
                    .path_and_query(path.clone())
                    .build()
                    .map_err(|e| ProxyError::BadRequest(format!("invalid request target: {e}")))?;
                let sent_host = match (route.preserve_host, host) {
                    (true, Some(host)) => host.clone(),
                    _ => route.upstream_host.clone(),
                };
                parts.headers.insert(header::HOST, sent_host);
                let client_host = host
                    .as_ref()
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or(route.upstream.authority.as_str());
                // As nginx's `$scheme$host$request_uri`: an origin may answer
                // differently by X-Forwarded-Proto (its own redirect to
                // https, say), so the schemes never share an entry.
                let (scheme, port) = if client_tls {
                    ("https", 443)
                } else {
                    ("http", 80)
                };
                let keyed = route.cache_rules.key.path(path.as_str());
                let key = key::primary(&route.namespace, scheme, client_host, port, &keyed);
                // A key another cache peer owns goes to it (not when a peer
                // sent it: one hop only).
                let peer = match (&policy.cluster, &from_peer) {
                    (Some(cluster), None) => {
                        let host = host.clone().unwrap_or_else(|| route.upstream_host.clone());
                        cluster.hop(&key, host, scheme).map(Box::new)
                    }
                    _ => None,
                };
                let to = crate::upstream::Target {
                    tls: route.tls.clone(),
                    group: route
                        .group
                        .as_ref()
                        .map(|group| group.target(&key, !route.preserve_host)),
                    parents: None,
                    peer,
                };
                (
                    uri,
                    route.upstream.authority.to_string(),
                    key,
                    self.upstream.clone(),
                    to,
                    route.cache_rules.clone(),
                )
            }
        };
        if trace.want_key {
            trace.key = Some(Arc::from(key.as_str()));
        }
        parts.uri = uri;
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(protocols) = upgrade {
            upgrade::restore(&mut parts.headers, protocols);
        }
        // The client's 100-continue was answered by this hop (hyper sends it
        // when the body is first read); the origin gets the body regardless.
        if parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        {
            parts.headers.remove(header::EXPECT);
        }
        if let Target::Reverse { route, host, .. } = &target {
            headers::add_forwarded(
                &mut parts.headers,
                route.forwarded,
                &client.address,
                host.as_ref(),
                client_tls,
            );
        }
        self.via.append(&mut parts.headers, client_version);
        let exchange = Exchange {
            parts,
            body: RequestBody::new(body, max_body, client.activity.oversized(), index),
            upstream: upstream_label,
            key,
            pool,
            to,
            rules,
        };
        Ok(Prepared::Exchange(exchange, client_upgrade))
    }

    /// CONNECT is forward traffic: the same admission as absolute-form requests.
    pub(super) async fn admit_forward(
        &self,
        req: &Request<Incoming>,
        client: &ClientConn,
    ) -> Result<(), ProxyError> {
        let policy = self.policy.load_full();
        policy.classifier.admit_forward(client.peer.ip())?;
        if let Some(auth) = &policy.auth {
            auth.check(req.headers(), client.peer.ip()).await?;
        }
        Ok(())
    }

    /// The PAC file, for `GET /proxy.pac` (or `/wpad.dat`) addressed to us.
    pub(super) fn pac(
        &self,
        req: &Request<Incoming>,
        client: &ClientConn,
    ) -> Option<Response<ProxyBody>> {
        let policy = self.policy.load();
        if !policy.pac.enabled || !policy.classifier.forward.enabled {
            return None;
        }
        if !(req.method() == Method::GET || req.method() == Method::HEAD)
            || !local::is_pac_path(req.uri().path())
        {
            return None;
        }
        let to_us = match req.uri().authority() {
            None => true,
            Some(authority) => policy.classifier.is_self(authority),
        };
        if !to_us {
            return None;
        }
        // The address the client used to reach us, unless configured.
        let proxy = policy.pac.proxy.clone().unwrap_or_else(|| {
            req.uri()
                .authority()
                .map(|a| a.to_string())
                .or_else(|| {
                    req.headers()
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| client.local.to_string())
        });
        Some(local::pac(&policy.pac, &proxy))
    }
}

/// The answer of a `[[redirect]]` rule for `req`, if one matches.
fn redirect<B>(
    rules: &crate::files::redirect::Redirects,
    req: &Request<B>,
) -> Option<Response<ProxyBody>> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(crate::http::validate::host::normalize_host)
        .unwrap_or_default();
    let (status, location) = rules.find(&host, req.uri().path(), req.uri().query())?;
    let text = format!("moved to {}\n", location.to_str().unwrap_or(""));
    let mut resp = Response::new(ProxyBody::full(bytes::Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Some(resp)
}

/// A file answer as the pipeline sends it.
fn file_response(
    answer: crate::files::FileResponse,
    zero_copy: Option<&std::sync::Arc<crate::server::SendQueue>>,
) -> Response<ProxyBody> {
    use crate::files::FileBody;
    let body = match answer.body {
        FileBody::Empty => ProxyBody::empty(),
        FileBody::Full(bytes) => ProxyBody::full(bytes),
        FileBody::Stream { rx, len } => ProxyBody::channel(rx, len),
        FileBody::File { file, offset, len } => match zero_copy {
            Some(queue) => ProxyBody::file(queue.clone(), file, offset, len),
            // Only asked for with a queue; never reached.
            None => ProxyBody::empty(),
        },
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = answer.status;
    *resp.headers_mut() = answer.headers;
    resp
}
