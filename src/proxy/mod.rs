//! The request pipeline (design.md, "The request's walk"):
//! classify → admit → route → [cache lookup] → upstream → deliver → log.

mod auth;
mod body;
mod cached;
mod classify;
mod collapse;
mod disk_hit;
mod disk_revalidate;
mod error;
mod fill_task;
mod inspect;
mod local;
mod policy;
mod prepare;
mod purge;
pub(crate) mod routes;
mod serve;
mod slice_fetch;
mod sliced;
mod suspects;
mod tunnel;
mod upgrade;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, Version};
use hyper::body::Incoming;

pub use body::ProxyBody;

use error::error_response;
pub(crate) use error::internal_error_response;
pub use error::ProxyError;
pub(crate) use local::pac_script;
pub use serve::stored_response;

use crate::access_log::{AccessLog, Outcome};
use crate::cache::{Cache, CacheStatus, Fwd, Stored};
use crate::config::Config;
use crate::http::headers::{self, Via};
use crate::metrics::{self, Metrics, Mode};
use crate::server::{Activity, InFlight};
use crate::upstream::guard::Guard;
use crate::upstream::Upstream;
use cached::{Answer, CacheStep, Exchange};

/// The client side of one connection, as the handler sees it.
pub struct ClientConn {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The connection came in over TLS (a `[tls] listen` port).
    pub tls: bool,
    pub activity: Arc<Activity>,
    /// The peer's address as forwarding fields give it, formatted once.
    pub address: crate::http::headers::ClientAddress,
    /// The connection's place under `max_connections`: a tunnel or an
    /// upgraded connection keeps it until it ends.
    pub slot: Arc<crate::server::ConnectionSlot>,
    /// Where file bodies register for `sendfile` (plain connections only;
    /// used for HTTP/1.x requests).
    pub zero_copy: Option<Arc<crate::server::SendQueue>>,
}

/// The proxy's own listeners, as a reload leaves them.
pub struct Listening {
    /// Every bound address, plain and TLS: never a destination.
    pub addrs: Vec<SocketAddr>,
    /// The first TLS listener's port, for `https_redirect`.
    pub https_port: Option<u16>,
}

/// RFC 9211.
static CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");

pub struct Handler {
    /// Routes, groups, forward admission: swapped whole on reload.
    policy: arc_swap::ArcSwap<policy::Policy>,
    suspects: crate::upstream::Suspects,
    default_tls: Arc<crate::tls::TlsClient>,
    cache: Arc<Cache>,
    cache_step: CacheStep,
    /// `[server] name`, used in Cache-Status.
    name: String,
    /// Reverse routes: operator-chosen origins.
    upstream: Arc<Upstream>,
    /// Forward traffic: every destination checked by the guard.
    forward_upstream: Arc<Upstream>,
    guard: Arc<Guard>,
    /// Replaced when a reload changes `[log] access` or `format`; a request
    /// writes its line to the log it started with.
    access_log: arc_swap::ArcSwap<AccessLog>,
    via: Via,
    metrics: Arc<Metrics>,
    /// `[cache] x_cache`: also send `X-Cache: HIT|MISS`. Atomics, not the
    /// policy: read before the policy is loaded, on every request.
    x_cache: AtomicBool,
    forward_route: Arc<str>,
    /// `[server] trace`.
    trace_enabled: AtomicBool,
    upstream_connect_timeout: std::time::Duration,
}

/// A request either goes on (to the cache and the origin) or is answered here.
/// Returned once per request and matched at once: boxing either side would
/// only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    Exchange(Exchange, Option<hyper::upgrade::OnUpgrade>),
    Local(Response<ProxyBody>),
    /// A `root` route's file (or refusal), or a `[[redirect]]`.
    Files(Response<ProxyBody>, &'static str),
}

/// What the pipeline learned about a request, for the log and the metrics.
pub(super) struct Trace {
    mode: Mode,
    route: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    /// Set by `prepare` when `want_key`: the access log shows the key.
    key: Option<Arc<str>>,
    want_key: bool,
}

static X_CACHE: http::HeaderName = http::HeaderName::from_static("x-cache");

impl Handler {
    /// `https_port`: the first TLS listener's port, for `https_redirect`.
    pub fn new(
        config: &Config,
        local_addrs: Vec<SocketAddr>,
        admin: SocketAddr,
        https_port: Option<u16>,
    ) -> std::io::Result<Handler> {
        let cache = Cache::start(&config.cache);
        let servers = metrics::ServerFamilies::default();
        let upstream_metrics = crate::upstream::UpstreamMetrics::default();
        let suspects = suspects::forget_suspects(cache.clone());
        // https:// forward requests (and routes without their own settings)
        // trust the public roots and `[upstream] tls_ca`.
        let default_tls = Arc::new(
            crate::tls::TlsClient::new(
                config.upstream.tls_ca.as_slice(),
                true,
                crate::tls::Alpn::Auto,
            )
            .map_err(std::io::Error::other)?,
        );
        let group_pool = |settings: &crate::config::UpstreamConfig| {
            Arc::new(Upstream::new(
                settings,
                upstream_metrics.clone(),
                None,
                suspects.clone(),
                default_tls.clone(),
            ))
        };
        let policy = policy::Policy::new(
            config,
            local_addrs.clone(),
            https_port,
            &servers,
            group_pool,
        )
        .map_err(std::io::Error::other)?;
        let route_rows = policy.route_rows();
        let guard = Arc::new(Guard::new(
            config.forward.deny_destinations.clone(),
            admin,
            local_addrs.clone(),
            config.forward.allow_loopback,
        ));
        let metrics = Arc::new(Metrics::new(
            &cache,
            config.cache.capacity.bytes(),
            route_rows,
            servers,
            upstream_metrics,
        ));
        let access_log =
            AccessLog::open(config.log.access.trim(), config.log.format, metrics.clone())?;
        Ok(Handler {
            policy: arc_swap::ArcSwap::from_pointee(policy),
            suspects: suspects.clone(),
            default_tls: default_tls.clone(),
            upstream: Arc::new(Upstream::new(
                &config.upstream,
                metrics.upstream.clone(),
                None,
                suspects.clone(),
                default_tls.clone(),
            )),
            forward_upstream: Arc::new(Upstream::new(
                &config.upstream,
                metrics.upstream.clone(),
                Some(guard.clone()),
                suspects,
                default_tls,
            )),
            guard,
            cache: cache.clone(),
            metrics,
            x_cache: AtomicBool::new(config.cache.x_cache),
            forward_route: Arc::from(metrics::FORWARD_ROUTE),
            trace_enabled: AtomicBool::new(config.server.trace),
            upstream_connect_timeout: config.upstream.connect_timeout.get(),
            name: config.server.name.clone(),
            access_log: arc_swap::ArcSwap::from_pointee(access_log),
            cache_step: CacheStep {
                cache: cache.clone(),
                flights: Arc::new(fill_task::Flights::new(
                    config.cache.collapse_timeout.get(),
                    config.cache.hit_for_miss.get(),
                )),
                disk_revalidations: Default::default(),
                via: Via::new(&config.server.name),
            },
            via: Via::new(&config.server.name),
        })
    }

    /// Writes the access lines of every finished request (graceful shutdown).
    pub async fn flush_access_log(&self) -> bool {
        self.access_log.load_full().flush().await
    }

    /// New origin connections opened by both pools.
    pub fn upstream_connections_opened(&self) -> u64 {
        self.upstream.connections_opened()
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn cache_handle(&self) -> Arc<Cache> {
        self.cache.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Answers one request. Never fails: every problem becomes a response.
    pub async fn handle(&self, req: Request<Incoming>, client: &ClientConn) -> Response<ProxyBody> {
        let index = client.activity.request_started();
        let in_flight = InFlight::new(client.activity.clone());
        let mut done = self.access_log.load().begin(&req, client.peer.ip());
        let version = req.version();
        let mut trace = Trace {
            mode: Mode::Local,
            route: None,
            upstream: None,
            key: None,
            want_key: done.logs_key(),
        };
        let (result, cache_status) = self.proxy(req, client, index, &mut trace).await;
        let mut response = match result {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(peer = %client.peer, error = %e, "answered locally");
                let mut resp = error_response(&e, version);
                // Says which hop answered, in a chain of proxies.
                self.via.append(resp.headers_mut(), Version::HTTP_11);
                resp
            }
        };
        let cache_header = cache_status.header_value(&self.name);
        // Only the access line reads these back: with the log off, a hit
        // does not clone them.
        let logging = done.logging();
        let logged_cache_header = logging.then(|| cache_header.clone());
        let headers = response.headers_mut();
        // RFC 9211 §2: a cache adds its member after those of the caches
        // before it (a parent proxy, a cache peer, a CDN behind us).
        match headers.entry(&CACHE_STATUS) {
            http::header::Entry::Occupied(mut earlier) => {
                let mut both = earlier.get().as_bytes().to_vec();
                both.extend_from_slice(b", ");
                both.extend_from_slice(cache_header.as_bytes());
                if let Ok(both) = HeaderValue::from_bytes(&both) {
                    earlier.insert(both);
                }
            }
            http::header::Entry::Vacant(slot) => {
                slot.insert(cache_header);
            }
        }
        if self.x_cache.load(Relaxed) {
            let hit = matches!(
                cache_status.as_str(),
                "hit" | "stale" | "collapsed" | "revalidated"
            );
            headers.insert(
                X_CACHE.clone(),
                HeaderValue::from_static(if hit { "HIT" } else { "MISS" }),
            );
        }
        let upstream_status = match cache_status {
            CacheStatus::Forward { status, .. } => status,
            _ => None,
        };
        let went_upstream = matches!(cache_status, CacheStatus::Forward { .. });
        done.set_outcome(Outcome {
            status: response.status().as_u16(),
            upstream_status,
            upstream_time: went_upstream.then(|| done.elapsed()),
            cache: cache_status,
            cache_header: logged_cache_header,
            mode: trace.mode,
            route: trace.route,
            cache_key: trace.key,
            upstream: trace.upstream.filter(|_| went_upstream),
            content_type: logging
                .then(|| response.headers().get(header::CONTENT_TYPE).cloned())
                .flatten(),
        });
        response.map(|body| body.with_completion(done, in_flight))
    }

    async fn proxy(
        &self,
        req: Request<Incoming>,
        client: &ClientConn,
        index: u64,
        trace: &mut Trace,
    ) -> Answer {
        // RFC 9112 §3.2: Host is checked for every request form before
        // anything routes, purges or looks up by it.
        if let Err(e) = crate::http::validate::host::check_request(&req) {
            let e = ProxyError::BadRequest(e.reason().into());
            let detail = e.detail();
            return (Err(e), CacheStatus::Local { detail });
        }
        if req.uri() == "*" {
            // RFC 9110 §9.3.7: `*` is only for OPTIONS, which asks about
            // this server as a whole; we answer it.
            let result = local::asterisk(&req);
            let detail = match &result {
                Ok(_) => "options",
                Err(e) => e.detail(),
            };
            return (result, CacheStatus::Local { detail });
        }
        if req.method().as_str() == "PURGE" {
            return self.purge(&req, client).await;
        }
        if req.method() == Method::CONNECT {
            trace.mode = Mode::Tunnel;
            trace.route = Some(self.forward_route.clone());
            trace.upstream = req.uri().authority().map(|a| Arc::from(a.as_str()));
            let result = match self.admit_forward(&req, client).await {
                Ok(()) => self.connect(req, client).await,
                Err(e) => Err(e),
            };
            return match result {
                Ok(resp) => {
                    // From here the client's bytes are the tunnel's.
                    client.activity.mark_upgraded();
                    let outcome = Stored::NotApplicable("tunnel");
                    (
                        Ok(resp),
                        CacheStatus::Forward {
                            fwd: Fwd::Method,
                            status: Some(200),
                            outcome,
                        },
                    )
                }
                Err(e) => {
                    let detail = e.detail();
                    (Err(e), CacheStatus::Local { detail })
                }
            };
        }
        if req.method() == Method::TRACE && !self.trace_enabled.load(Relaxed) {
            let e = ProxyError::MethodNotAllowed("TRACE is disabled on this proxy".into());
            return (
                Err(e),
                CacheStatus::Local {
                    detail: "trace-disabled",
                },
            );
        }
        if let Some(resp) = self.pac(&req, client) {
            return (Ok(resp), CacheStatus::Local { detail: "pac" });
        }
        let (exchange, client_upgrade) = match self.prepare(req, client, index, trace).await {
            Ok(Prepared::Exchange(exchange, upgrade)) => (exchange, upgrade),
            Ok(Prepared::Local(resp)) => {
                return (
                    Ok(resp),
                    CacheStatus::Local {
                        detail: "max-forwards",
                    },
                )
            }
            Ok(Prepared::Files(resp, detail)) => return (Ok(resp), CacheStatus::Local { detail }),
            Err(e) => {
                let detail = e.detail();
                return (Err(e), CacheStatus::Local { detail });
            }
        };
        let Some(client_upgrade) = client_upgrade else {
            return self.cache_step.exchange(exchange).await;
        };
        // An upgrade becomes a tunnel: nothing to look up or store.
        let out = Request::from_parts(exchange.parts, exchange.body);
        let result = match exchange
            .pool
            .send(out, &exchange.upstream, &exchange.to)
            .await
        {
            Ok(resp) => self.deliver(
                resp,
                Some((client_upgrade, client.slot.clone())),
                &exchange.upstream,
            ),
            Err(e) => Err(e.into()),
        };
        if result
            .as_ref()
            .is_ok_and(|r| r.status() == http::StatusCode::SWITCHING_PROTOCOLS)
        {
            // From here the client's bytes are the new protocol's.
            client.activity.mark_upgraded();
        }
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        let outcome = Stored::NotApplicable("upgrade");
        (
            result,
            CacheStatus::Forward {
                fwd: Fwd::Bypass,
                status,
                outcome,
            },
        )
    }

    /// The origin's response, made fit for the client.
    fn deliver(
        &self,
        mut resp: Response<crate::upstream::OriginBody>,
        client_upgrade: Option<(
            hyper::upgrade::OnUpgrade,
            Arc<crate::server::ConnectionSlot>,
        )>,
        upstream: &str,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let switched = if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            let (Some(client), Some(protocols)) =
                (client_upgrade, resp.headers().get(header::UPGRADE).cloned())
            else {
                return Err(ProxyError::Upstream(
                    crate::upstream::UpstreamError::Invalid {
                        upstream: upstream.to_string(),
                        detail: "101 Switching Protocols without an upgrade request".into(),
                    },
                ));
            };
            upgrade::join(client.0, &mut resp, client.1);
            Some(protocols)
        } else {
            None
        };
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(protocols) = switched {
            upgrade::restore(&mut parts.headers, protocols);
        }
        self.via.append(&mut parts.headers, parts.version);
        parts.version = Version::HTTP_11;
        Ok(Response::from_parts(parts, ProxyBody::upstream(body)))
    }
}
