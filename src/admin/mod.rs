//! The admin listener: separate from the proxy port, so nothing on the proxy
//! port can reach it; loopback by default (`[admin] listen`), and with
//! `[admin] token` every request needs `Authorization: Bearer <token>`
//! (except the dashboard page itself and the health probes).
//!
//! - `GET /`: the dashboard (one self-contained page that polls `/stats`).
//! - `GET /metrics`: Prometheus / OpenMetrics text.
//! - `GET /stats`: the same numbers as JSON, with hit ratios and per-route rows.
//! - `GET /healthz`: the process is up. `GET /readyz`: listeners bound and
//!   serving (503 while draining).
//! - `GET /cache?url=...`: what is stored for a URL (for debugging a miss).
//! - `POST /purge?url=...` / `POST /purge?prefix=...` (eager ban).

mod listing;
mod purge;
mod stats;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::server::Phase;

const DASHBOARD: &str = include_str!("dashboard.html");

pub struct Admin {
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    token: Option<String>,
    name: String,
    phase: watch::Receiver<Phase>,
    /// The pipeline: the cache's namespaces and the upstream groups of the
    /// configuration in use.
    handler: Arc<crate::proxy::Handler>,
    pub(super) reloader: Arc<crate::reload::Reloader>,
}

impl Admin {
    pub fn new(
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
        token: Option<String>,
        name: String,
        phase: watch::Receiver<Phase>,
        handler: Arc<crate::proxy::Handler>,
        reloader: Arc<crate::reload::Reloader>,
    ) -> Admin {
        Admin {
            handler,
            reloader,
            cache,
            metrics,
            token,
            name,
            phase,
        }
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut phase = self.phase.clone();
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                // Admin stays up while draining (readyz says so); it stops with the rest.
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow() == Phase::Stop {
                        return;
                    }
                    continue;
                }
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.route(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        // The page itself holds no data (it asks for the token and sends it
        // with its /stats polls), and probes carry no credentials.
        let open = matches!(req.uri().path(), "/" | "/healthz" | "/readyz");
        if !open && !self.authorized(&req) {
            let mut resp = text(StatusCode::UNAUTHORIZED, "admin token required\n".into());
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"viaduct admin\""),
            );
            return resp;
        }
        let query = req.uri().query().unwrap_or("");
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/") => {
                let mut resp = Response::new(Full::new(Bytes::from_static(DASHBOARD.as_bytes())));
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                // Exactly what the page needs: itself, and fetches to this origin.
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
                    ),
                );
                resp
            }
            (&Method::GET, "/metrics") => {
                let body = self.metrics.encode(&self.cache);
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                resp
            }
            (&Method::GET, "/stats") => json(stats::snapshot(self)),
            (&Method::GET, "/upstreams") => {
                json(serde_json::json!({ "groups": stats::groups(self) }))
            }
            (&Method::GET, "/cache") => stats::inspect(self, query),
            (&Method::GET, "/cache/list") => listing::list(self, query),
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
            (&Method::GET, "/readyz") => match *self.phase.borrow() {
                Phase::Running => text(StatusCode::OK, "ready\n".into()),
                _ => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into()),
            },
            (&Method::POST, "/purge") => self.purge(query).await,
            (&Method::POST, "/reload") => match self.reloader.reload() {
                Ok(report) => text(StatusCode::OK, format!("{report}\n")),
                Err(why) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
            },
            (_, "/purge") => {
                let mut resp = text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use POST /purge?url=..., ?prefix=... or ?tag=...\n".into(),
                );
                // RFC 9110 §15.5.6: a 405 lists the methods that work.
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                resp
            }
            (_, path) => text(StatusCode::NOT_FOUND, format!("no admin endpoint {path}\n")),
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // RFC 9110 §11.1: the scheme name is case-insensitive.
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token);
        constant_time_eq(given.trim().as_bytes(), token.as_bytes())
    }
}

/// Compares without stopping at the first difference (no timing oracle on
/// the token's content).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json(value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
