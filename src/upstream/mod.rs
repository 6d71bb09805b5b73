//! The upstream pool: persistent HTTP/1.1 connections to origins, driven from
//! the request's own task (no dispatcher in between), with timeouts, the
//! destination guard, a cap per origin, and the one retry RFC 9110 §9.2.2
//! allows for idempotent requests.
//!
//! Responses are only ever matched to the request written on that connection:
//! a connection is reused only after its previous response was read to the
//! end and only if nothing arrived since (see `socket.rs`).

pub(crate) mod addr;
mod attempt;
mod body;
mod conn;
mod connector;
mod error;
mod failover;
mod fold;
pub mod group;
pub mod guard;
mod metrics;
pub mod parents;
mod passed_over;
mod peer_checks;
pub mod peers;
mod pool;
mod socket;
mod streak;

use failover::Unsent;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri, Version};

pub use body::OriginBody;
pub use error::UpstreamError;
pub use group::{Group, GroupTarget, ServerMetrics};
pub use metrics::{KindLabels, UpstreamMetrics};
pub use parents::{Parent, Parents};

use crate::config::UpstreamConfig;
use crate::http::body::RequestBody;
use crate::tls::TlsClient;
use conn::Conn;
use connector::{ConnectError, Connector};
use pool::Pool;

/// The cache key a request's response may be stored under, carried in the
/// request's extensions. The pool keeps the last few per connection and
/// reports them on `Suspects` if that connection later proves to be out of
/// step with its origin. Opaque here: the pool knows nothing of the cache.
#[derive(Debug, Clone)]
pub struct StoreTag(pub String);

/// Where a desynchronised connection's recent `StoreTag`s are reported.
pub type Suspects = tokio::sync::mpsc::UnboundedSender<Vec<String>>;

/// Marks a response that arrived with both Content-Length and
/// Transfer-Encoding (RFC 9112 §6.3): delivered by its chunked framing, but
/// never stored and never followed by another request on that connection.
#[derive(Debug, Clone, Copy)]
pub struct FramingConflict;

/// The TLS settings of an `https://` origin (a reverse route's own `tls_ca`
/// / `tls_verify` / `upstream_protocol`, or a group server's).
#[derive(Clone)]
pub struct OriginTls(pub Arc<TlsClient>);

/// Where a request goes beyond the origin in its URI: a reverse route's TLS
/// settings, or its upstream group. The default is the URI's origin, with
/// the pool's default TLS for `https://`. Held by the request's exchange (so
/// a replay or a background revalidation goes the same way) and handed to
/// `send`; cheap to clone.
#[derive(Clone, Default)]
pub struct Target {
    pub tls: Option<OriginTls>,
    pub group: Option<GroupTarget>,
    /// Forward traffic with `[forward] parent`: sent through these proxies.
    pub parents: Option<Arc<Parents>>,
    /// A reverse request for a key another cache peer owns.
    pub peer: Option<Box<peers::PeerHop>>,
}

/// A new connection: HTTP/1.1 (one request at a time), or HTTP/2 when the
/// origin chose it by ALPN.
enum Link {
    H1(Conn),
    H2(pool::H2Sender, u64),
}

/// Where one request goes: the origin's address, its pool key, and TLS.
struct Origin<'a> {
    authority: &'a Authority,
    /// The authority, or for TLS the scheme, authority and settings: a
    /// connection is reused only for requests that would have made the same one.
    key: &'a str,
    tls: Option<&'a TlsClient>,
}

pub struct Upstream {
    metrics: UpstreamMetrics,
    /// For `https://` requests whose `Target` names no TLS settings.
    default_tls: Arc<TlsClient>,
    pool: Arc<Pool>,
    connector: Connector,
    connect_timeout: Duration,
    response_header_timeout: Duration,
    body_idle_timeout: Duration,
    suspects: Suspects,
}

/// A failed attempt: why, whether the connection had been reused, and the
/// request when none of it was sent.
type Attempted = (Failed, bool, Option<Request<RequestBody>>);

/// Why one attempt failed, before it is named for the client.
enum Failed {
    Connect(ConnectError),
    Http(hyper::Error),
    Timeout,
    Upgrade(&'static str),
    /// The origin sent a response nobody asked for on this connection.
    Desync,
    /// The TLS handshake with the origin failed (the words say why).
    Tls(String),
}

impl Failed {
    /// The request may not have reached the origin, or its answer cannot be
    /// trusted: one more try on a new connection.
    fn worth_retrying(&self) -> bool {
        match self {
            Failed::Http(e) => is_stale_connection(e),
            Failed::Desync => true,
            _ => false,
        }
    }
}

impl Upstream {
    /// `guard`: check every destination (forward traffic).
    pub fn new(
        config: &UpstreamConfig,
        metrics: UpstreamMetrics,
        guard: Option<Arc<guard::Guard>>,
        suspects: Suspects,
        default_tls: Arc<TlsClient>,
    ) -> Upstream {
        let connector = Connector::new(
            config.max_connections_per_host,
            config.connect_timeout.get(),
            metrics.connections.clone(),
            guard,
        );
        Upstream {
            metrics,
            default_tls,
            pool: Pool::new(config.max_idle_per_host, config.idle_timeout.get()),
            connector,
            connect_timeout: config.connect_timeout.get(),
            response_header_timeout: config.response_header_timeout.get(),
            body_idle_timeout: config.body_idle_timeout.get(),
            suspects,
        }
    }

    /// Closes the idle pooled connections; requests in flight keep theirs.
    pub fn drop_idle(&self) {
        self.pool.clear();
    }

    /// New origin connections opened since start (reuse shows as a low number).
    pub fn connections_opened(&self) -> u64 {
        self.connector.opened()
    }

    fn error_counter(&self, kind: &'static str) -> crate::sharded::Counter {
        self.metrics
            .errors
            .get_or_create(&KindLabels { kind })
            .clone()
    }

    /// Sends `req` (absolute URI, hop-by-hop headers already removed) to the
    /// origin named `upstream` in messages.
    pub async fn send(
        &self,
        req: Request<RequestBody>,
        upstream: &str,
        to: &Target,
    ) -> Result<Response<OriginBody>, UpstreamError> {
        if let Some(parents) = &to.parents {
            return self.send_parents(req, upstream, parents).await;
        }
        let req = match &to.peer {
            Some(hop) => match self.send_peer(req, hop).await {
                Ok(resp) => return Ok(resp),
                Err(Err(e)) => return Err(e),
                // This node owns the key after all (the owner is down).
                Err(Ok(req)) => req,
            },
            None => req,
        };
        match &to.group {
            Some(group) => self.send_group(req, group).await,
            None => self
                .send_to(req, upstream, to.tls.as_ref())
                .await
                .map_err(|(e, _)| e),
        }
    }

    /// Sends `req` to the origin in its URI. On failure, what can be sent
    /// elsewhere comes back with the error (see `Unsent`).
    async fn send_to(
        &self,
        req: Request<RequestBody>,
        upstream: &str,
        chosen: Option<&OriginTls>,
    ) -> Result<Response<OriginBody>, (UpstreamError, Option<Unsent>)> {
        let (mut parts, body) = req.into_parts();
        let tag = parts.extensions.remove::<StoreTag>();
        let Some(authority) = parts.uri.authority().cloned() else {
            let failed = Failed::Upgrade("the request has no origin to go to");
            return Err((self.describe(failed, upstream), None));
        };
        let https = parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let tls: Option<&TlsClient> = https.then(|| chosen.map_or(&*self.default_tls, |t| &*t.0));
        let key: std::borrow::Cow<'_, str> = match &tls {
            Some(tls) => format!("https://{authority}#{}", tls.id()).into(),
            None => authority.as_str().into(),
        };
        let origin = Origin {
            authority: &authority,
            key: &key,
            tls,
        };
        // RFC 9112 §3.2.1: origin-form to an origin server.
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path);
        self.send_on(parts, body, &origin, upstream, tag).await
    }

    /// Sends `req` to the forward proxy at `parent` (`kind` "parent"), or a
    /// cache peer (`kind` "peer"), as it is: for a parent absolute-form
    /// (RFC 9112 §3.2.2), `https://` targets included (the parent fetches
    /// them), over plain HTTP/1.1.
    async fn send_via(
        &self,
        req: Request<RequestBody>,
        upstream: &str,
        parent: &Authority,
        kind: &'static str,
    ) -> Result<Response<OriginBody>, (UpstreamError, Option<Unsent>)> {
        let (mut parts, body) = req.into_parts();
        let tag = parts.extensions.remove::<StoreTag>();
        // Pooled apart from origin connections to the same address.
        let key = format!("{kind} {parent}");
        let origin = Origin {
            authority: parent,
            key: &key,
            tls: None,
        };
        self.send_on(parts, body, &origin, upstream, tag).await
    }

    /// The request, its target already in the form `origin` takes, sent on a
    /// pooled or new connection to `origin`, with the retry and timeouts.
    async fn send_on(
        &self,
        mut parts: http::request::Parts,
        body: RequestBody,
        origin: &Origin<'_>,
        upstream: &str,
        tag: Option<StoreTag>,
    ) -> Result<Response<OriginBody>, (UpstreamError, Option<Unsent>)> {
        // Whatever the client spoke, we speak HTTP/1.1 to origins.
        parts.version = Version::HTTP_11;
        let asked_upgrade = parts.headers.get(header::UPGRADE).cloned();
        // Only a request without a body can be sent again: a streamed body is gone.
        let replay = (is_idempotent(&parts.method) && http_body::Body::is_end_stream(&body))
            .then(|| copy_parts(&parts));
        // Kept outside the timed future, so a timeout still leaves a copy
        // for another server of a group.
        let attempt = async {
            let first = self
                .attempt(Request::from_parts(parts, body), origin, false)
                .await;
            match (first, replay.as_ref()) {
                // Usually a pooled connection the origin had just closed;
                // a new connection that dies the same way gets one more try too.
                (Err((failed, _, _)), Some(replay)) if failed.worth_retrying() => {
                    tracing::debug!(
                        upstream,
                        "pooled connection was stale or out of step; retrying once"
                    );
                    let retry = Request::from_parts(copy_parts(replay), RequestBody::Empty);
                    self.attempt(retry, origin, true).await
                }
                (other, _) => other,
            }
        };
        let (resp, conn) = match tokio::time::timeout(self.response_header_timeout, attempt).await {
            Ok(Ok((resp, conn))) => {
                if let (Some(StoreTag(key)), Some(conn)) = (tag, &conn) {
                    conn.peeker.watch.remember(key);
                }
                (resp, conn)
            }
            Ok(Err((failed, _, unsent))) => {
                let back = unsent.map(Unsent::Request).or(replay.map(Unsent::Replay));
                return Err((self.describe(failed, upstream), back));
            }
            Err(_) => {
                tracing::debug!(upstream, "response head timeout");
                let back = replay.map(Unsent::Replay);
                return Err((self.describe(Failed::Timeout, upstream), back));
            }
        };
        self.finish(resp, conn, asked_upgrade.as_ref())
            .map_err(|f| (self.describe(f, upstream), None))
    }

    /// Checks the response head and ties the connection to its body.
    fn finish(
        &self,
        resp: Response<hyper::body::Incoming>,
        conn: Option<Conn>,
        asked_upgrade: Option<&HeaderValue>,
    ) -> Result<Response<OriginBody>, Failed> {
        let (mut parts, body) = resp.into_parts();
        let mut reusable = true;
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            // RFC 9110 §7.8: only to a protocol the request asked for.
            let agreed = match (asked_upgrade, parts.headers.get(header::UPGRADE)) {
                (Some(asked), Some(chosen)) => offered(asked, chosen),
                _ => false,
            };
            if !agreed {
                return Err(Failed::Upgrade(
                    "101 Switching Protocols to a request that did not ask for that upgrade",
                ));
            }
            // The connection now belongs to the upgraded protocol.
            reusable = false;
        }
        if parts.headers.contains_key(header::TRANSFER_ENCODING)
            && parts.headers.remove(header::CONTENT_LENGTH).is_some()
        {
            // RFC 9112 §6.3 (3): Transfer-Encoding overrides; an intermediary
            // that forwards such a message MUST remove Content-Length first.
            // Where the origin thinks the message ends is now in doubt, so the
            // connection is not reused.
            tracing::debug!("response with Content-Length and Transfer-Encoding");
            self.error_counter("framing").inc();
            parts.extensions.insert(FramingConflict);
            reusable = false;
        }
        if matches!(parts.status.as_u16(), 204 | 304) {
            // RFC 9110 §8.6: no Content-Length on a 204; on a 304 it would
            // describe a body that is not there.
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        let pool = reusable.then(|| self.pool.clone());
        let body = OriginBody::new(
            body,
            conn,
            pool,
            self.body_idle_timeout,
            self.error_counter("body-timeout"),
        );
        Ok(Response::from_parts(parts, body))
    }

    fn describe(&self, failed: Failed, upstream: &str) -> UpstreamError {
        let error = match failed {
            Failed::Connect(e) => UpstreamError::from_connect(e, upstream, self.connect_timeout),
            Failed::Http(e) => UpstreamError::from_hyper(&e, upstream),
            Failed::Timeout => UpstreamError::ResponseTimeout {
                upstream: upstream.to_string(),
                after: self.response_header_timeout,
            },
            Failed::Upgrade(detail) => UpstreamError::Invalid {
                upstream: upstream.to_string(),
                detail: detail.into(),
            },
            Failed::Desync => UpstreamError::Invalid {
                upstream: upstream.to_string(),
                detail: "a response nobody asked for arrived on the connection".into(),
            },
            Failed::Tls(detail) => UpstreamError::Tls {
                upstream: upstream.to_string(),
                detail,
            },
        };
        self.error_counter(error.kind()).inc();
        error
    }
}

/// Whether `chosen` (the 101's Upgrade) names a protocol from `asked`.
fn offered(asked: &HeaderValue, chosen: &HeaderValue) -> bool {
    let names = |v: &HeaderValue| -> Vec<String> {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect()
    };
    let asked = names(asked);
    let chosen = names(chosen);
    !chosen.is_empty() && chosen.iter().all(|c| asked.contains(c))
}

/// Whether a failed request may have died on a pooled connection the origin
/// had already closed: the request never got a response head. Only such
/// failures are worth one retry on a fresh connection.
fn is_stale_connection(e: &hyper::Error) -> bool {
    if e.is_user() || e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return false;
    }
    e.is_incomplete_message() || e.is_canceled() || e.is_closed() || error::is_reset_chain(e)
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
