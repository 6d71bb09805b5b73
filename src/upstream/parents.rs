//! Parent proxies for forward traffic (`[forward] parent`): a cache
//! hierarchy, as Squid's `cache_peer parent` and seed ch. 7.6 describe. A
//! forward request that is not answered from this cache goes to the first
//! parent that is up, in absolute-form; a parent whose connection fails is
//! skipped for `passed_over::DOWN_FOR`, and when none is left the request goes direct
//! (through the destination guard), unless `never_direct` forbids it.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Request, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::failover::Unsent;
use super::passed_over::PassedOver;
use super::{OriginBody, StoreTag, Upstream, UpstreamError};
use crate::http::body::RequestBody;

/// `viaduct_forward_parent_requests_total{parent, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ParentLabels {
    /// A parent's `host:port`, or `direct`.
    pub parent: String,
    /// `answered` (the parent or origin answered), `failed` (no answer).
    pub outcome: &'static str,
}

pub type ParentMetrics = Family<ParentLabels, Counter>;

/// Counts one use of the parent (or cache peer) `parent` in `metrics`.
pub fn count(metrics: &ParentMetrics, parent: &str, answered: bool) {
    metrics
        .get_or_create(&ParentLabels {
            parent: parent.to_string(),
            outcome: if answered { "answered" } else { "failed" },
        })
        .inc();
}

/// One parent proxy.
pub struct Parent {
    pub authority: Authority,
    /// `Proxy-Authorization` for it, from the URL's user information.
    auth: Option<HeaderValue>,
    state: PassedOver,
}

impl Parent {
    /// `user:password`, when given, becomes Basic credentials (RFC 7617).
    pub fn new(authority: Authority, credentials: Option<&str>) -> Parent {
        use base64::Engine;
        let auth = credentials.and_then(|c| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(c);
            HeaderValue::from_str(&format!("Basic {encoded}")).ok()
        });
        Parent {
            authority,
            auth,
            state: PassedOver::default(),
        }
    }

    /// `Proxy-Authorization` for this parent, if it takes credentials.
    pub fn credentials(&self) -> Option<&HeaderValue> {
        self.auth.as_ref()
    }
}

/// The parents of forward traffic, in the configuration's order.
pub struct Parents {
    parents: Box<[Parent]>,
    pub never_direct: bool,
    /// Connections to the parents: operator-chosen addresses, so not
    /// through the destination guard.
    pool: Arc<Upstream>,
    metrics: ParentMetrics,
}

impl Parents {
    pub fn new(
        parents: Vec<Parent>,
        never_direct: bool,
        pool: Arc<Upstream>,
        metrics: ParentMetrics,
    ) -> Parents {
        Parents {
            parents: parents.into_boxed_slice(),
            never_direct,
            pool,
            metrics,
        }
    }

    /// The parents to try now, in order: those up; when all are down, all
    /// of them if going direct is forbidden (one may be back), else none.
    pub fn candidates(&self) -> Vec<&Parent> {
        let now = Instant::now();
        let up: Vec<&Parent> = self.parents.iter().filter(|p| p.state.is_up(now)).collect();
        if up.is_empty() && self.never_direct {
            return self.parents.iter().collect();
        }
        up
    }

    /// Every parent and whether it is up (not passed over now).
    pub fn state(&self) -> Vec<(String, bool)> {
        let now = Instant::now();
        self.parents
            .iter()
            .map(|p| (p.authority.to_string(), p.state.is_up(now)))
            .collect()
    }

    /// The outcome of using `parent` (a tunnel, say), for its state and
    /// the metrics.
    pub fn record(&self, parent: &Parent, reached: bool) {
        parent.state.mark(reached);
        self.count(parent.authority.as_str(), reached);
    }

    pub fn count(&self, parent: &str, answered: bool) {
        count(&self.metrics, parent, answered);
    }
}

impl Upstream {
    /// Sends a forward request through the first parent that takes it; a
    /// parent that cannot be reached passes the request (when nothing of it
    /// was sent) to the next, and after the last, direct through this pool
    /// unless `never_direct`.
    pub(super) async fn send_parents(
        &self,
        req: Request<RequestBody>,
        upstream: &str,
        parents: &Parents,
    ) -> Result<Response<OriginBody>, UpstreamError> {
        // The parent resolves the name; what this proxy can refuse without
        // resolving it, it refuses here (a literal loopback, its own admin
        // listener, a denied name).
        if let (Some(guard), Some(authority)) = (self.connector.guard(), req.uri().authority()) {
            let port = authority.port_u16().unwrap_or(
                if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
                    443
                } else {
                    80
                },
            );
            if let Err(e) = guard.check_unresolved(authority.host(), port) {
                return Err(UpstreamError::from_guard(&e, upstream.to_string()));
            }
        }
        let (mut parts, body) = req.into_parts();
        let tag = parts.extensions.remove::<StoreTag>();
        let mut next = Request::from_parts(parts, body);
        let mut last = None;
        for parent in parents.candidates() {
            let mut req = next;
            if let Some(auth) = parent.credentials() {
                req.headers_mut()
                    .insert(header::PROXY_AUTHORIZATION, auth.clone());
            }
            if let Some(tag) = &tag {
                req.extensions_mut().insert(tag.clone());
            }
            let label = parent.authority.as_str();
            match parents
                .pool
                .send_via(req, label, &parent.authority, "parent")
                .await
            {
                Ok(resp) => {
                    parents.record(parent, true);
                    return Ok(resp);
                }
                Err((e, back)) => {
                    parents.record(parent, false);
                    tracing::debug!(parent = label, error = %e, "parent proxy failed");
                    next = match back {
                        Some(Unsent::Request(unsent)) if e.before_sending() => unsent,
                        _ => return Err(e),
                    };
                    next.headers_mut().remove(header::PROXY_AUTHORIZATION);
                    last = Some(e);
                }
            }
        }
        if parents.never_direct {
            return Err(last.unwrap_or_else(|| UpstreamError::Other {
                upstream: upstream.to_string(),
                detail: "no parent proxy is up, and never_direct forbids going direct".into(),
            }));
        }
        let (mut parts, body) = next.into_parts();
        if let Some(tag) = tag {
            parts.extensions.insert(tag);
        }
        let result = self
            .send_to(Request::from_parts(parts, body), upstream, None)
            .await
            .map_err(|(e, _)| e);
        parents.count("direct", result.is_ok());
        result
    }
}
