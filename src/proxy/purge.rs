//! `PURGE <url>` on the proxy port: removes the URL and every Vary variant,
//! for clients in `[cache] purge_allow`.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};

use super::body::ProxyBody;
use super::cached::Answer;
use super::error::ProxyError;
use super::{ClientConn, Handler};
use crate::cache::key;
use crate::cache::shared::Selector;
use crate::cache::CacheStatus;

impl Handler {
    pub(super) async fn purge<B>(&self, req: &Request<B>, client: &ClientConn) -> Answer {
        let status = CacheStatus::Local { detail: "purge" };
        let ip = client.peer.ip();
        if !self
            .policy
            .load()
            .purge_allow
            .iter()
            .any(|net| net.contains(ip))
        {
            return (
                Err(ProxyError::Forbidden(format!("client {ip} may not purge"))),
                status,
            );
        }
        let uri = req.uri();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let host = match uri.authority() {
            Some(authority) => authority.as_str().to_string(),
            None => match req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
            {
                Some(host) => host.to_string(),
                None => {
                    return (
                        Err(ProxyError::BadRequest(
                            "PURGE needs a URL or a Host header".into(),
                        )),
                        status,
                    )
                }
            },
        };
        // Every part of the cache (forward traffic and each route) loses it.
        let target = key::primary("", "http", &host, 80, path);
        let keys = self
            .cache_namespaces()
            .iter()
            .map(|(_, ns)| key::in_namespace(ns, &target))
            .collect();
        let purged = self.cache.purge(Selector::Url { keys }, false).await;
        let shared = purged
            .shared
            .as_ref()
            .map_or(0, |r| *r.as_ref().unwrap_or(&0));
        let (code, text) = if let Some(Err(failure)) = purged.shared {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "purged {target} here; the shared tier failed: {}\n",
                    failure.as_str()
                ),
            )
        } else if purged.here > 0 || shared > 0 {
            (StatusCode::OK, format!("purged {target}\n"))
        } else {
            (StatusCode::NOT_FOUND, format!("not in cache: {target}\n"))
        };
        (Ok(text_response(code, text)), status)
    }
}

pub(super) fn text_response(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
