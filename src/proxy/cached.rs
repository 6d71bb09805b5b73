//! The cache step of the pipeline: lookup → policy decision → serve from the
//! store, serve stale while revalidating, or go to the origin (collapsed with
//! other requests for the same URL, see `collapse.rs`). Every path reports a
//! `CacheStatus`.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};

use super::body::ProxyBody;
use super::collapse::Refill;
use super::disk_hit::FromDisk;
use super::error::ProxyError;
use super::fill_task::Flights;
use crate::cache::fill::Fill;
use crate::cache::fill::{self, finish_origin_head, forget_replaced};
use crate::cache::plan::{self, plan_store};
use crate::cache::policy::NotStored;
use crate::cache::policy::{self, validation, Reuse, Why};
use crate::cache::rules::CacheRules;
use crate::cache::store::{Lookup, Variants};
use crate::cache::{Cache, CacheStats, CacheStatus, Fwd, Stored};
use crate::http::body::RequestBody;
use crate::http::headers::{self, Via};
use crate::upstream::peers::PeerCopy;
use crate::upstream::{FramingConflict, OriginBody, StoreTag};

/// A request ready for the origin, with what the cache needs to know about it.
pub(super) struct Exchange {
    pub parts: Parts,
    pub body: RequestBody,
    /// Name of the origin in error messages.
    pub upstream: String,
    /// Primary cache key: the target URI as the client named it.
    pub key: String,
    /// The pool to send it with (forward traffic is guarded).
    pub pool: Arc<crate::upstream::Upstream>,
    /// A reverse route's TLS settings or upstream group.
    pub to: crate::upstream::Target,
    /// What the route asks of the cache (targeted fields, ...).
    pub rules: Arc<CacheRules>,
}

impl Exchange {
    /// The same request again, without a body (GET and HEAD have none worth
    /// resending): for a second fetch or a background revalidation.
    pub(super) fn replay(&self) -> Exchange {
        Exchange {
            parts: crate::upstream::copy_parts(&self.parts),
            body: RequestBody::Empty,
            upstream: self.upstream.clone(),
            key: self.key.clone(),
            pool: self.pool.clone(),
            to: self.to.clone(),
            rules: self.rules.clone(),
        }
    }
}

/// The cache step of the pipeline (lookup, policy, serve, collapse, fill),
/// with what it owns: the cache, the flights of collapsed fetches, the
/// large disk records being revalidated in the background, and our `Via`
/// for what it delivers.
#[derive(Clone)]
pub(super) struct CacheStep {
    pub cache: Arc<Cache>,
    pub flights: Arc<Flights>,
    pub disk_revalidations: Arc<super::disk_revalidate::Revalidating>,
    pub via: Via,
}

pub(super) type Answer = (Result<Response<ProxyBody>, ProxyError>, CacheStatus);

/// Preconditions the cache does not evaluate itself: such requests go to the origin.
const BYPASS_FIELDS: [header::HeaderName; 2] = [header::IF_MATCH, header::IF_UNMODIFIED_SINCE];

impl CacheStep {
    pub(super) async fn exchange(&self, ex: Exchange) -> Answer {
        let method = ex.parts.method.clone();
        if !self.cache.enabled() {
            return self.pass(ex, Fwd::Bypass, "").await;
        }
        if method != Method::GET && method != Method::HEAD {
            return self.pass(ex, Fwd::Method, "").await;
        }
        if BYPASS_FIELDS
            .iter()
            .any(|name| ex.parts.headers.contains_key(name))
        {
            return self.pass(ex, Fwd::Bypass, "precondition").await;
        }
        let req_cc = ex.rules.request_control(&ex.parts.headers);
        if req_cc.no_store {
            // RFC 9111 §5.2.1.5: neither served from nor stored in the cache.
            return self.pass(ex, Fwd::Request, "request-no-store").await;
        }
        let mut lookup = self.cache.store.lookup(&ex.key, &ex.parts.headers);
        if self.cache.disk.is_some() && !matches!(lookup, Lookup::Found { .. }) {
            match self.ask_disk(&ex, &req_cc).await {
                Some(FromDisk::Served(answer) | FromDisk::Fetched(answer)) => return *answer,
                Some(FromDisk::InMemory) => {
                    lookup = self.cache.store.lookup(&ex.key, &ex.parts.headers);
                }
                None => {}
            }
        }
        let now = SystemTime::now();
        let (entry, index, all) = match lookup {
            Lookup::Found { entry, index, all } => (entry, index, all),
            // §5.2.1.7: only-if-cached never goes to the origin.
            _ if req_cc.only_if_cached => return not_cached(),
            Lookup::VaryMiss { all } => {
                // Another variant's ETag may still match: ask with all of them.
                let refill = Refill {
                    revalidating: Some((all, None)),
                    fwd: Fwd::VaryMiss,
                    stale: None,
                    req_cc,
                };
                return self.refill(ex, refill).await;
            }
            Lookup::Miss => {
                let ex = match self.sliced(ex, &req_cc).await {
                    Ok(answer) => return answer,
                    Err(ex) => ex,
                };
                let refill = Refill {
                    revalidating: None,
                    fwd: Fwd::UriMiss,
                    stale: None,
                    req_cc,
                };
                return self.refill(ex, refill).await;
            }
        };
        let heuristics = self.cache.heuristics();
        match policy::decide(&req_cc, &entry.head, &heuristics, now) {
            Reuse::Serve { ttl } => {
                if ttl <= 0 {
                    CacheStats::count(&self.cache.stats.stale_served);
                }
                let resp = self.serve_stored(&entry, &method, &ex.parts.headers, now, true);
                (Ok(resp), CacheStatus::Hit { ttl })
            }
            Reuse::Validate(_) if req_cc.only_if_cached => not_cached(),
            Reuse::Validate(why) => {
                let ttl = plan::freshness_left(&entry.head, &heuristics, now);
                // RFC 5861 §3: inside the window, serve stale now and
                // revalidate once in the background.
                let window = self.cache.stale_while_revalidate(&entry.head) as i64;
                if why == Why::Stale && window > 0 && ttl + window >= 0 {
                    self.revalidate_in_background(&ex, all, index);
                    CacheStats::count(&self.cache.stats.stale_served);
                    let resp = self.serve_stored(&entry, &method, &ex.parts.headers, now, true);
                    let status = CacheStatus::StaleServed {
                        ttl,
                        fwd_status: None,
                        reason: "stale-while-revalidate",
                    };
                    return (Ok(resp), status);
                }
                let fwd = if why == Why::Request {
                    Fwd::Request
                } else {
                    Fwd::Stale
                };
                let refill = Refill {
                    revalidating: Some((all, Some(index))),
                    fwd,
                    stale: Some(entry),
                    req_cc,
                };
                self.refill(ex, refill).await
            }
        }
    }

    /// Forwards without using the store; unsafe methods invalidate (§4.4).
    async fn pass(&self, ex: Exchange, fwd: Fwd, detail: &'static str) -> Answer {
        let method = ex.parts.method.clone();
        let key = ex.key;
        let out = Request::from_parts(ex.parts, ex.body);
        match ex.pool.send(out, &ex.upstream, &ex.to).await {
            Err(e) => (
                Err(e.into()),
                forwarded(fwd, None, Stored::NotApplicable(detail)),
            ),
            Ok(resp) => {
                let status = resp.status();
                for target in
                    validation::invalidation_targets(&method, status, &key, resp.headers())
                {
                    self.cache.invalidate(&target);
                }
                let (mut parts, body) = resp.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers);
                ex.rules.strip_tags(&mut parts.headers);
                self.via.append(&mut parts.headers, parts.version);
                let resp = Response::from_parts(parts, ProxyBody::upstream(body));
                (
                    Ok(resp),
                    forwarded(fwd, Some(status.as_u16()), Stored::NotApplicable(detail)),
                )
            }
        }
    }

    /// The uncollapsed path: this request's own fetch or revalidation.
    pub(super) async fn alone(&self, ex: Exchange, refill: Refill) -> Answer {
        match refill.revalidating.clone() {
            Some((all, selected)) => self.revalidate(ex, all, selected, refill).await,
            None => self.fetch(ex, refill.fwd).await,
        }
    }

    /// A full fetch whose response is stored when allowed. A Range goes
    /// through to the origin here (and its 206 is not stored).
    pub(super) async fn fetch(&self, mut ex: Exchange, fwd: Fwd) -> Answer {
        fill::origin_request(&mut ex.parts.headers, false, None);
        let request_headers = ex.parts.headers.clone();
        let method = ex.parts.method.clone();
        let key = std::mem::take(&mut ex.key);
        ex.parts.extensions.insert(StoreTag(key.clone()));
        let request_time = SystemTime::now();
        let out = Request::from_parts(ex.parts, ex.body);
        match ex.pool.send(out, &ex.upstream, &ex.to).await {
            Err(e) => (
                Err(e.into()),
                forwarded(fwd, None, Stored::NotApplicable("")),
            ),
            Ok(resp) => {
                let ctx = Delivery {
                    method: &method,
                    request_headers: &request_headers,
                    rules: &ex.rules,
                    key,
                    fwd,
                    request_time,
                    replacing: false,
                };
                self.store_and_deliver(resp, ctx)
            }
        }
    }

    /// A conditional request for stored variants (§4.3.1); a 304 refreshes
    /// and serves the stored response (§4.3.3, §3.2).
    async fn revalidate(
        &self,
        mut ex: Exchange,
        all: Variants,
        selected: Option<usize>,
        refill: Refill,
    ) -> Answer {
        let fwd = refill.fwd;
        let client_headers = ex.parts.headers.clone();
        if !fill::origin_request(&mut ex.parts.headers, false, Some((&all, selected))) {
            // Nothing to validate with: a plain fetch, and the stale entry
            // if the origin cannot be reached.
            ex.parts.headers = client_headers.clone();
            let method = ex.parts.method.clone();
            let (result, status) = self.fetch(ex, fwd).await;
            if let Err(ProxyError::Upstream(e)) = &result {
                let stale = refill.stale.as_ref();
                if let Some((resp, status)) =
                    self.stale_on_failure(stale, &refill.req_cc, &method, &client_headers, e)
                {
                    return (Ok(resp), status);
                }
            }
            return (result, status);
        }
        let method = ex.parts.method.clone();
        let mut retry = ex.replay();
        retry.parts.headers = client_headers.clone();
        ex.parts.extensions.insert(StoreTag(ex.key.clone()));
        let request_time = SystemTime::now();
        let out = Request::from_parts(ex.parts, ex.body);
        let stale = refill.stale.as_ref();
        let resp = match ex.pool.send(out, &ex.upstream, &ex.to).await {
            Ok(resp) => resp,
            Err(e) => {
                if let Some((resp, status)) =
                    self.stale_on_failure(stale, &refill.req_cc, &method, &client_headers, &e)
                {
                    return (Ok(resp), status);
                }
                // §5.2.2.2: a response that must be revalidated is not served
                // stale; the client gets a 504.
                if stale.is_some_and(|s| s.head.control.forbids_stale()) {
                    return (
                        Err(ProxyError::RevalidationFailed(e)),
                        forwarded(fwd, None, Stored::NotApplicable("must-revalidate")),
                    );
                }
                return (
                    Err(e.into()),
                    forwarded(fwd, None, Stored::NotApplicable("")),
                );
            }
        };
        if resp.status() != StatusCode::NOT_MODIFIED {
            let status = resp.status();
            if super::serve::triggers_stale_if_error(status) {
                let served = self.stale_if_error(
                    stale,
                    &refill.req_cc,
                    &method,
                    &client_headers,
                    Some(status.as_u16()),
                );
                if let Some((resp, status)) = served {
                    return (Ok(resp), status);
                }
            }
            // A new representation replaces the variant; a 5xx is passed on.
            let mut request_headers = client_headers;
            fill::origin_request(&mut request_headers, false, None);
            let ctx = Delivery {
                method: &method,
                request_headers: &request_headers,
                rules: &ex.rules,
                key: ex.key,
                fwd,
                request_time,
                replacing: true,
            };
            return self.store_and_deliver(resp, ctx);
        }
        let (mut parts, _) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        match fill::refresh(
            &self.cache,
            &ex.rules,
            &ex.key,
            &all,
            selected,
            &parts.headers,
            request_time,
        )
        .map(|refreshed| match parts.extensions.get::<PeerCopy>() {
            // A copy revalidated through the cache peer that owns it: still
            // kept at most local_ttl.
            Some(PeerCopy(limit)) => {
                fill::refreshed_at_most(&self.cache, &ex.key, refreshed, *limit)
            }
            None => refreshed,
        }) {
            Some((entry, ttl)) => {
                let resp =
                    self.serve_stored(&entry, &method, &client_headers, SystemTime::now(), false);
                (Ok(resp), forwarded(fwd, Some(304), Stored::Yes { ttl }))
            }
            None => {
                // The 304 names a representation we do not hold: fetch it whole.
                self.fetch(retry, fwd).await
            }
        }
    }

    /// Delivers an origin response, teeing its body into the store when RFC
    /// 9111 §3 allows and it fits.
    pub(super) fn store_and_deliver(
        &self,
        resp: Response<OriginBody>,
        ctx: Delivery<'_>,
    ) -> Answer {
        let response_time = SystemTime::now();
        let (mut parts, body) = resp.into_parts();
        finish_origin_head(&mut parts.headers, response_time);
        let status = parts.status;
        let plan = if parts.extensions.get::<FramingConflict>().is_some() {
            Err(NotStored::Framing)
        } else {
            plan_store(
                &self.cache,
                ctx.rules,
                ctx.method,
                ctx.request_headers,
                &parts,
                ctx.request_time,
                response_time,
            )
        };
        ctx.rules.strip_tags(&mut parts.headers);
        let (outcome, fill) = match plan {
            Ok(mut plan) => {
                if let Some(PeerCopy(limit)) = parts.extensions.get::<PeerCopy>() {
                    plan.keep_at_most(*limit, &self.cache, response_time);
                }
                let ttl = plan.ttl;
                let fill = Fill::of(self.cache.clone(), ctx.key, plan);
                (Stored::Yes { ttl }, fill)
            }
            Err(why) => {
                if ctx.replacing {
                    forget_replaced(&self.cache, &ctx.key, status);
                }
                (Stored::No(why), None)
            }
        };
        self.via.append(&mut parts.headers, parts.version);
        parts.version = Version::HTTP_11;
        let mut body = ProxyBody::upstream(body);
        if let Some(fill) = fill {
            body = body.with_fill(fill);
        }
        (
            Ok(Response::from_parts(parts, body)),
            forwarded(ctx.fwd, Some(status.as_u16()), outcome),
        )
    }
}

impl CacheStep {
    /// `store_and_deliver` for an origin answer to a request made on
    /// `ex`'s behalf (the slice path), with `request_headers` as sent.
    pub(super) fn store_and_deliver_for(
        &self,
        ex: &Exchange,
        request_headers: &HeaderMap,
        resp: Response<OriginBody>,
        fwd: Fwd,
    ) -> Answer {
        let ctx = Delivery {
            method: &ex.parts.method,
            request_headers,
            rules: &ex.rules,
            key: ex.key.clone(),
            fwd,
            request_time: SystemTime::now(),
            replacing: false,
        };
        self.store_and_deliver(resp, ctx)
    }
}

/// What `store_and_deliver` needs to know about the request.
pub(super) struct Delivery<'a> {
    pub method: &'a Method,
    pub request_headers: &'a HeaderMap,
    pub rules: &'a CacheRules,
    pub key: String,
    pub fwd: Fwd,
    pub request_time: SystemTime,
    /// The response answers a revalidation of a stored entry.
    pub replacing: bool,
}

pub(super) fn forwarded(fwd: Fwd, status: Option<u16>, outcome: Stored) -> CacheStatus {
    CacheStatus::Forward {
        fwd,
        status,
        outcome,
    }
}

fn not_cached() -> Answer {
    (
        Err(ProxyError::NotCached),
        CacheStatus::Local {
            detail: "only-if-cached",
        },
    )
}
