//! The upstream pool: persistent connections to origins, timeouts, and the one
//! retry RFC 9110 §9.2.2 allows for idempotent requests.

pub(crate) mod addr;
mod connector;
mod error;
pub mod guard;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use connector::CountingConnector;
pub use error::UpstreamError;

use crate::config::UpstreamConfig;
use crate::metrics::{KindLabels, UpstreamMetrics};
use crate::proxy::RequestBody;

type Pool = Client<CountingConnector, RequestBody>;

pub struct Upstream {
    metrics: UpstreamMetrics,
    pooled: Pool,
    /// Never reuses a connection: for the retry after a stale pooled one.
    fresh: Pool,
    connector: CountingConnector,
    connect_timeout: Duration,
    response_header_timeout: Duration,
}

impl Upstream {
    /// `guard`: check every destination (forward traffic).
    pub fn new(
        config: &UpstreamConfig,
        metrics: UpstreamMetrics,
        guard: Option<Arc<guard::Guard>>,
    ) -> Upstream {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout.get()));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = CountingConnector::new(
            http,
            config.max_connections_per_host,
            metrics.connections.clone(),
            guard,
        );
        let build = |max_idle: usize| {
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(config.idle_timeout.get())
                .pool_max_idle_per_host(max_idle)
                // The proxy sets Host itself (client's or upstream's).
                .set_host(false)
                .build(connector.clone())
        };
        Upstream {
            metrics,
            pooled: build(config.max_idle_per_host),
            fresh: build(0),
            connector,
            connect_timeout: config.connect_timeout.get(),
            response_header_timeout: config.response_header_timeout.get(),
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// New origin connections opened since start (reuse shows as a low number).
    pub fn connections_opened(&self) -> u64 {
        self.connector.opened()
    }

    /// Sends `req` (absolute URI, hop-by-hop headers already removed) to the
    /// origin named `upstream` in messages.
    pub async fn send(
        &self,
        req: Request<RequestBody>,
        upstream: &str,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // Only a request without a body can be sent again: a streamed body is gone.
        let (parts, body) = req.into_parts();
        let replay = (is_idempotent(&parts.method) && http_body::Body::is_end_stream(&body))
            .then(|| Request::from_parts(copy_parts(&parts), RequestBody::Empty));
        let req = Request::from_parts(parts, body);
        match self.timed(&self.pooled, req, upstream).await {
            Err(Failed::Pool(e)) if replay.is_some() && error::is_stale_connection(&e) => {
                tracing::debug!(upstream, error = %e, "pooled connection was stale; retrying once");
                let retry = replay.expect("checked above");
                self.timed(&self.fresh, retry, upstream)
                    .await
                    .map_err(|f| self.describe(f, upstream))
            }
            other => other.map_err(|f| self.describe(f, upstream)),
        }
    }

    async fn timed(
        &self,
        pool: &Pool,
        mut req: Request<RequestBody>,
        upstream: &str,
    ) -> Result<Response<Incoming>, Failed> {
        // Whatever the client spoke, we speak HTTP/1.1 to origins.
        *req.version_mut() = Version::HTTP_11;
        self.metrics.requests.inc();
        match tokio::time::timeout(self.response_header_timeout, pool.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(Failed::Pool(e)),
            Err(_) => {
                tracing::debug!(upstream, "response head timeout");
                Err(Failed::Timeout)
            }
        }
    }

    fn describe(&self, failed: Failed, upstream: &str) -> UpstreamError {
        let error = match failed {
            Failed::Pool(e) => UpstreamError::classify(&e, upstream, self.connect_timeout),
            Failed::Timeout => UpstreamError::ResponseTimeout {
                upstream: upstream.to_string(),
                after: self.response_header_timeout,
            },
        };
        let kind = error.kind();
        self.metrics
            .errors
            .get_or_create(&KindLabels { kind })
            .inc();
        error
    }
}

enum Failed {
    Pool(hyper_util::client::legacy::Error),
    Timeout,
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A copy of a request head (method, URI, version, fields) for sending again.
pub fn copy_parts(parts: &http::request::Parts) -> http::request::Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}
