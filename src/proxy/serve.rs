//! Answers built from a stored entry: 304 for a satisfied client conditional
//! (RFC 9110 §13.2), 206/416 for a byte range (§14), or the stored response
//! with `Age` (RFC 9111 §5.1).

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Version};

use super::body::ProxyBody;
use super::cached::CacheStep;
use crate::cache::control::RequestControl;
use crate::cache::policy::{self, validation, StoredResponse};
use crate::cache::range::{self, RangeAnswer};
use crate::cache::store::Entry;
use crate::cache::{CacheStats, CacheStatus};

impl CacheStep {
    /// `unvalidated`: served without asking the origin, so `no-cache="field"`
    /// fields are withheld (RFC 9111 §5.2.2.4).
    pub(super) fn serve_stored(
        &self,
        entry: &Entry,
        method: &Method,
        request: &HeaderMap,
        now: SystemTime,
        unvalidated: bool,
    ) -> Response<ProxyBody> {
        stored_response(
            entry,
            method,
            request,
            now,
            unvalidated,
            self.via.entry(Version::HTTP_11),
        )
    }

    /// A stale entry the origin failure lets us serve (RFC 5861 §4), with the
    /// reason in Cache-Status.
    pub(super) fn stale_if_error(
        &self,
        stale: Option<&Arc<Entry>>,
        req_cc: &RequestControl,
        method: &Method,
        request: &HeaderMap,
        fwd_status: Option<u16>,
    ) -> Option<(Response<ProxyBody>, CacheStatus)> {
        let entry = stale?;
        self.stale_after_failure(&entry.head, req_cc, fwd_status, None, |now| {
            self.serve_stored(entry, method, request, now, true)
        })
    }

    /// A stale entry served because the request failed with `error`: by
    /// stale-if-error, or, when the origin could not be reached at all, for
    /// up to `[cache] stale_if_unreachable` (RFC 9111 §4.2.4).
    pub(super) fn stale_on_failure(
        &self,
        stale: Option<&Arc<Entry>>,
        req_cc: &RequestControl,
        method: &Method,
        request: &HeaderMap,
        error: &crate::upstream::UpstreamError,
    ) -> Option<(Response<ProxyBody>, CacheStatus)> {
        let entry = stale?;
        self.stale_after_failure(&entry.head, req_cc, None, Some(error), |now| {
            self.serve_stored(entry, method, request, now, true)
        })
    }

    /// The stored response with `head`, built by `respond` (from memory or
    /// from a disk record), served stale because the origin failed: within
    /// stale-if-error (RFC 5861 §4; `fwd_status` is what the origin
    /// answered), or, when `error` says the origin could not be reached at
    /// all, within `[cache] stale_if_unreachable` (RFC 9111 §4.2.4).
    pub(super) fn stale_after_failure(
        &self,
        head: &StoredResponse,
        req_cc: &RequestControl,
        fwd_status: Option<u16>,
        error: Option<&crate::upstream::UpstreamError>,
        respond: impl FnOnce(SystemTime) -> Response<ProxyBody>,
    ) -> Option<(Response<ProxyBody>, CacheStatus)> {
        let now = SystemTime::now();
        let on_error = self.cache.stale_if_error(head, Some(req_cc));
        let (ttl, reason) = match self.stale_within(head, on_error, now) {
            Some(ttl) => (ttl, "stale-if-error"),
            None if error.is_some_and(|e| e.unreachable()) => {
                let unreachable = self.cache.stale_if_unreachable(head);
                (
                    self.stale_within(head, unreachable, now)?,
                    "origin-unreachable",
                )
            }
            None => return None,
        };
        Some((respond(now), self.served_stale(ttl, fwd_status, reason)))
    }

    /// `head`'s freshness left, if it expired less than `window` seconds
    /// ago (or is fresh) and `window` is not 0.
    pub(super) fn stale_within(
        &self,
        head: &StoredResponse,
        window: u64,
        now: SystemTime,
    ) -> Option<i64> {
        let ttl = crate::cache::plan::freshness_left(head, &self.cache.heuristics(), now);
        (window > 0 && ttl + window as i64 >= 0).then_some(ttl)
    }

    /// A stale response served, counted, with its reason.
    pub(super) fn served_stale(
        &self,
        ttl: i64,
        fwd_status: Option<u16>,
        reason: &'static str,
    ) -> CacheStatus {
        CacheStats::count(&self.cache.stats.stale_served);
        CacheStatus::StaleServed {
            ttl,
            fwd_status,
            reason,
        }
    }
}

/// The origin answers that let stale-if-error serve a stale response
/// (RFC 5861 §4); connection failures count too.
pub(super) fn triggers_stale_if_error(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// The answer built from a stored entry (public for the micro-benchmarks).
/// `via` is this proxy's Via entry.
pub fn stored_response(
    entry: &Entry,
    method: &Method,
    request: &HeaderMap,
    now: SystemTime,
    unvalidated: bool,
    via: HeaderValue,
) -> Response<ProxyBody> {
    let body = Body {
        len: entry.body.len() as u64,
        part: |span: Option<(u64, u64)>| match span {
            None => ProxyBody::full(entry.body.clone()),
            Some((start, end)) => ProxyBody::full(entry.body.slice(start as usize..=end as usize)),
        },
    };
    response_with(entry, body, method, request, now, unvalidated, via)
}

/// Where a stored body comes from: its length, and the bytes of a span
/// (inclusive; `None` for all of it) as a body to send.
pub(super) struct Body<F: FnOnce(Option<(u64, u64)>) -> ProxyBody> {
    pub len: u64,
    pub part: F,
}

/// The answer built from `entry`'s head with the body from `body` (in
/// memory, or streamed from the disk tier).
pub(super) fn response_with<F: FnOnce(Option<(u64, u64)>) -> ProxyBody>(
    entry: &Entry,
    body: Body<F>,
    method: &Method,
    request: &HeaderMap,
    now: SystemTime,
    unvalidated: bool,
    via: HeaderValue,
) -> Response<ProxyBody> {
    let stored = &entry.head;

    let (status, mut headers, body) = if validation::client_not_modified(method, request, stored) {
        (
            StatusCode::NOT_MODIFIED,
            validation::not_modified_head(&stored.headers),
            ProxyBody::empty(),
        )
    } else {
        representation(entry, body, method, request)
    };
    if unvalidated {
        for name in policy::fields_to_strip_on_reuse(stored) {
            headers.remove(name);
        }
        // What the caches before this one did for the response that filled
        // the entry (RFC 9211) is not true of a hit here.
        // A scan of the head's small name indexes, cheaper than the
        // HeaderMap's hash for the common head without one.
        if stored.headers.contains_key(&super::CACHE_STATUS) {
            headers.remove(&super::CACHE_STATUS);
        }
    }
    let age = policy::current_age(stored, now);
    headers.insert(header::AGE, HeaderValue::from(age));
    headers.append(header::VIA, via);
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// The stored response, or the part a single byte range asks for.
fn representation<F: FnOnce(Option<(u64, u64)>) -> ProxyBody>(
    entry: &Entry,
    body: Body<F>,
    method: &Method,
    request: &HeaderMap,
) -> (StatusCode, HeaderMap, ProxyBody) {
    let stored = &entry.head;
    let Body { len, part } = body;
    // Room for Accept-Ranges, Age, Via, Cache-Status (and X-Cache).
    let mut headers = stored.headers.to_map(5);
    let whole = |headers, part: F| {
        let body = if method == Method::HEAD || len == 0 {
            ProxyBody::empty()
        } else {
            part(None)
        };
        (stored.status, headers, body)
    };
    if stored.status != StatusCode::OK || *method != Method::GET {
        return whole(headers, part);
    }
    headers
        .entry(header::ACCEPT_RANGES)
        .or_insert(HeaderValue::from_static("bytes"));
    let Some(requested) = request.get(header::RANGE) else {
        return whole(headers, part);
    };
    // §13.1.5: a changed representation gets the whole body.
    if request
        .get(header::IF_RANGE)
        .is_some_and(|v| !range::if_range_holds(v, stored))
    {
        return whole(headers, part);
    }
    match range::evaluate(requested, len) {
        RangeAnswer::Full => whole(headers, part),
        RangeAnswer::Partial { start, end } => {
            let value = format!("bytes {start}-{end}/{len}");
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&value).expect("ascii"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            (
                StatusCode::PARTIAL_CONTENT,
                headers,
                part(Some((start, end))),
            )
        }
        RangeAnswer::Unsatisfiable => {
            let value = format!("bytes */{len}");
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&value).expect("ascii"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            (
                StatusCode::RANGE_NOT_SATISFIABLE,
                headers,
                ProxyBody::empty(),
            )
        }
    }
}
