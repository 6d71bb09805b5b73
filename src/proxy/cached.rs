//! The cache step of the pipeline: lookup → policy decision → serve from the
//! store, revalidate, or fetch; then store what may be stored while the body
//! streams to the client. Every path reports a `CacheStatus`.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::body::{ProxyBody, RequestBody};
use super::error::ProxyError;
use super::headers;
use super::Handler;
use crate::cache::control::RequestControl;
use crate::cache::fill::Fill;
use crate::cache::key::{self, Vary};
use crate::cache::policy::{self, validation, NotStored, Reuse, StoredResponse, Why};
use crate::cache::store::{Entry, Lookup, Variants};
use crate::cache::{CacheStatus, Fwd, Stored};

/// A request ready for the origin, with what the cache needs to know about it.
pub(super) struct Exchange {
    pub parts: Parts,
    pub body: RequestBody,
    /// Name of the origin in error messages.
    pub upstream: String,
    /// Primary cache key: the target URI as the client named it.
    pub key: String,
}

pub(super) type Answer = (Result<Response<ProxyBody>, ProxyError>, CacheStatus);

/// Request fields that make a GET something the cache does not answer yet:
/// ranges, and preconditions other than the two it evaluates itself.
const BYPASS_FIELDS: [(header::HeaderName, &str); 4] = [
    (header::RANGE, "range"),
    (header::IF_RANGE, "range"),
    (header::IF_MATCH, "precondition"),
    (header::IF_UNMODIFIED_SINCE, "precondition"),
];

impl Handler {
    pub(super) async fn exchange(&self, ex: Exchange) -> Answer {
        let method = ex.parts.method.clone();
        if !self.cache.enabled {
            return self.pass(ex, Fwd::Bypass, "").await;
        }
        if method != Method::GET && method != Method::HEAD {
            return self.pass(ex, Fwd::Method, "").await;
        }
        if let Some((_, why)) = BYPASS_FIELDS
            .iter()
            .find(|(name, _)| ex.parts.headers.contains_key(name))
        {
            return self.pass(ex, Fwd::Bypass, why).await;
        }
        let req_cc = RequestControl::parse(&ex.parts.headers);
        if req_cc.no_store {
            // §5.2.1.5: neither served from nor stored in the cache.
            return self
                .pass(ex, Fwd::Request, NotStored::RequestNoStore.as_str())
                .await;
        }
        let now = SystemTime::now();
        match self.cache.store.lookup(&ex.key, &ex.parts.headers) {
            Lookup::Found { entry, index, all } => {
                match policy::decide(&req_cc, &entry.head, &self.cache.heuristics, now) {
                    Reuse::Serve { ttl } => {
                        let resp = self.serve_stored(&entry, &method, &ex.parts.headers, now, true);
                        (Ok(resp), CacheStatus::Hit { ttl })
                    }
                    // §5.2.1.7: only-if-cached never goes to the origin.
                    Reuse::Validate(_) if req_cc.only_if_cached => not_cached(),
                    Reuse::Validate(why) => {
                        let fwd = if why == Why::Request {
                            Fwd::Request
                        } else {
                            Fwd::Stale
                        };
                        self.revalidate(ex, all, Some(index), fwd).await
                    }
                }
            }
            Lookup::VaryMiss { .. } | Lookup::Miss if req_cc.only_if_cached => not_cached(),
            // Another variant's ETag may still match: ask with all of them.
            Lookup::VaryMiss { all } => self.revalidate(ex, all, None, Fwd::VaryMiss).await,
            Lookup::Miss => self.fetch(ex, Fwd::UriMiss).await,
        }
    }

    /// Forwards without using the store; unsafe methods invalidate (§4.4).
    async fn pass(&self, ex: Exchange, fwd: Fwd, detail: &'static str) -> Answer {
        let method = ex.parts.method.clone();
        let key = ex.key;
        let out = Request::from_parts(ex.parts, ex.body);
        match self.upstream.send(out, &ex.upstream).await {
            Err(e) => (
                Err(e.into()),
                forwarded(fwd, None, Stored::NotApplicable(detail)),
            ),
            Ok(resp) => {
                let status = resp.status();
                for target in
                    validation::invalidation_targets(&method, status, &key, resp.headers())
                {
                    self.cache.store.remove(&target);
                }
                let (mut parts, body) = resp.into_parts();
                self.finish_head(&mut parts.headers, parts.version);
                let resp = Response::from_parts(parts, ProxyBody::upstream(body));
                (
                    Ok(resp),
                    forwarded(fwd, Some(status.as_u16()), Stored::NotApplicable(detail)),
                )
            }
        }
    }

    /// A full (unconditional) fetch whose response is stored when allowed.
    async fn fetch(&self, mut ex: Exchange, fwd: Fwd) -> Answer {
        // The client's own conditionals would get a 304 we cannot store.
        ex.parts.headers.remove(header::IF_NONE_MATCH);
        ex.parts.headers.remove(header::IF_MODIFIED_SINCE);
        let request_headers = ex.parts.headers.clone();
        let method = ex.parts.method.clone();
        let key = std::mem::take(&mut ex.key);
        let request_time = SystemTime::now();
        let out = Request::from_parts(ex.parts, ex.body);
        match self.upstream.send(out, &ex.upstream).await {
            Err(e) => (
                Err(e.into()),
                forwarded(fwd, None, Stored::NotApplicable("")),
            ),
            Ok(resp) => self.store_and_deliver(
                resp,
                &method,
                &request_headers,
                key,
                fwd,
                request_time,
                false,
            ),
        }
    }

    /// Sends a conditional request for stored variants (§4.3.1) and uses a 304
    /// to refresh and serve the stored response (§4.3.3, §3.2).
    async fn revalidate(
        &self,
        mut ex: Exchange,
        all: Variants,
        selected: Option<usize>,
        fwd: Fwd,
    ) -> Answer {
        let fields = validation::conditional_fields(
            all.iter().map(|e| &e.head),
            selected.map(|i| &all[i].head),
        );
        if fields.is_empty() {
            return self.fetch(ex, fwd).await;
        }
        let client_headers = ex.parts.headers.clone();
        let method = ex.parts.method.clone();
        let must_revalidate = selected.is_some_and(|i| all[i].head.control.forbids_stale());
        let retry_parts = copy_parts(&ex.parts);
        ex.parts.headers.remove(header::IF_NONE_MATCH);
        ex.parts.headers.remove(header::IF_MODIFIED_SINCE);
        for (name, value) in fields {
            ex.parts.headers.insert(name, value);
        }
        let request_time = SystemTime::now();
        let out = Request::from_parts(ex.parts, ex.body);
        let resp = match self.upstream.send(out, &ex.upstream).await {
            Ok(resp) => resp,
            // §5.2.2.2: a response that must be revalidated is not served
            // stale; the client gets a 504.
            Err(e) if must_revalidate => {
                return (
                    Err(ProxyError::RevalidationFailed(e)),
                    forwarded(fwd, None, Stored::NotApplicable("must-revalidate")),
                )
            }
            Err(e) => {
                return (
                    Err(e.into()),
                    forwarded(fwd, None, Stored::NotApplicable("")),
                )
            }
        };
        if resp.status() != StatusCode::NOT_MODIFIED {
            // A new representation (or an error) replaces nothing it should not:
            // a 200 is stored over the same variant; a 5xx is passed on.
            let mut request_headers = client_headers;
            request_headers.remove(header::IF_NONE_MATCH);
            request_headers.remove(header::IF_MODIFIED_SINCE);
            return self.store_and_deliver(
                resp,
                &method,
                &request_headers,
                ex.key,
                fwd,
                request_time,
                true,
            );
        }
        let response_time = SystemTime::now();
        let (mut parts, _) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        let Some(index) =
            validation::select_for_update(all.iter().map(|e| &e.head), selected, &parts.headers)
        else {
            // The 304 names a representation we do not hold: fetch it whole.
            let retry = Exchange {
                parts: retry_parts,
                body: RequestBody::Empty,
                upstream: ex.upstream,
                key: ex.key,
            };
            return self.fetch(retry, fwd).await;
        };
        let old = &all[index];
        let merged = validation::merge_not_modified(&old.head.headers, &parts.headers);
        let head = StoredResponse::new(old.head.status, merged, request_time, response_time);
        let ttl = freshness_left(&head, &self.cache.heuristics, response_time);
        let entry = Arc::new(Entry::new(head, old.body.clone(), old.secondary.clone()));
        self.cache.store.insert(&ex.key, entry.clone());
        let resp = self.serve_stored(&entry, &method, &client_headers, response_time, false);
        (Ok(resp), forwarded(fwd, Some(304), Stored::Yes { ttl }))
    }

    /// Delivers an origin response, teeing its body into the store when RFC
    /// 9111 §3 allows and it fits. `replacing`: the response answers a
    /// revalidation, so a new representation that may not be stored must not
    /// leave the old one behind (a 5xx keeps it, for stale-if-error).
    #[allow(clippy::too_many_arguments)]
    fn store_and_deliver(
        &self,
        resp: Response<Incoming>,
        method: &Method,
        request_headers: &HeaderMap,
        key: String,
        fwd: Fwd,
        request_time: SystemTime,
        replacing: bool,
    ) -> Answer {
        let response_time = SystemTime::now();
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        // RFC 9110 §6.6.1: a cache adds the Date it did not receive.
        if !parts.headers.contains_key(header::DATE) {
            let now = httpdate::fmt_http_date(response_time);
            if let Ok(v) = HeaderValue::from_str(&now) {
                parts.headers.insert(header::DATE, v);
            }
        }
        let status = parts.status;
        let plan = self.plan_store(
            method,
            request_headers,
            status,
            &parts.headers,
            request_time,
            response_time,
        );
        let (outcome, fill) = match plan {
            Ok((head, ttl)) => {
                let secondary = match Vary::of(&parts.headers) {
                    Vary::Fields(names) => key::secondary(&names, request_headers),
                    Vary::Star => Vec::new(),
                };
                let expected = content_length(&parts.headers);
                let fill = Fill::new(self.cache.clone(), key, head, secondary, expected);
                (Stored::Yes { ttl }, Some(fill))
            }
            Err(why) => {
                if replacing && !status.is_server_error() {
                    self.cache.store.remove(&key);
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
            forwarded(fwd, Some(status.as_u16()), outcome),
        )
    }

    /// The stored head and its freshness, or why the response is not stored.
    fn plan_store(
        &self,
        method: &Method,
        request_headers: &HeaderMap,
        status: StatusCode,
        response: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Result<(StoredResponse, i64), NotStored> {
        let req_cc = RequestControl::parse(request_headers);
        let control = crate::cache::control::ResponseControl::parse(response);
        let strip = policy::storable(method, request_headers, &req_cc, status, response, &control)?;
        if content_length(response).is_some_and(|len| len > self.cache.max_object_size) {
            return Err(NotStored::TooLarge);
        }
        let mut stored = response.clone();
        for name in &strip {
            stored.remove(name);
        }
        let head = StoredResponse::new(status, stored, request_time, response_time);
        let ttl = freshness_left(&head, &self.cache.heuristics, response_time);
        // Stale on arrival with nothing to revalidate with: storing it is waste.
        let validators = head.headers.contains_key(header::ETAG)
            || head.headers.contains_key(header::LAST_MODIFIED);
        if ttl <= 0 && !validators {
            return Err(NotStored::NoFreshness);
        }
        Ok((head, ttl))
    }

    /// A response built from a stored entry: 304 when the client's conditional
    /// matches (RFC 9110 §13.2), the stored head with `Age` (§5.1) otherwise.
    fn serve_stored(
        &self,
        entry: &Entry,
        method: &Method,
        request: &HeaderMap,
        now: SystemTime,
        unvalidated: bool,
    ) -> Response<ProxyBody> {
        let stored = &entry.head;
        let (status, mut headers, body) =
            if validation::client_not_modified(method, request, &stored.headers) {
                (
                    StatusCode::NOT_MODIFIED,
                    validation::not_modified_head(&stored.headers),
                    ProxyBody::empty(),
                )
            } else {
                let body = if method == Method::HEAD {
                    ProxyBody::empty()
                } else {
                    ProxyBody::full(entry.body.clone())
                };
                (stored.status, stored.headers.clone(), body)
            };
        if unvalidated {
            for name in policy::fields_to_strip_on_reuse(stored) {
                headers.remove(name);
            }
        }
        let age = policy::current_age(stored, now);
        headers.insert(header::AGE, HeaderValue::from(age));
        self.via.append(&mut headers, Version::HTTP_11);
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }

    /// Strips hop-by-hop fields from an origin head and adds our Via.
    fn finish_head(&self, headers: &mut HeaderMap, version: Version) {
        headers::strip_hop_by_hop(headers);
        self.via.append(headers, version);
    }
}

/// Freshness left in seconds (negative when stale).
fn freshness_left(head: &StoredResponse, h: &policy::Heuristics, now: SystemTime) -> i64 {
    policy::lifetime(head, h).0 as i64 - policy::current_age(head, now) as i64
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn forwarded(fwd: Fwd, status: Option<u16>, outcome: Stored) -> CacheStatus {
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

fn copy_parts(parts: &Parts) -> Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}
