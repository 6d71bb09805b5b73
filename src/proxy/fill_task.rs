//! The origin fetch behind a collapsed flight. It runs in its own task so a
//! client that leaves does not cancel it for the others; its `FlightGuard`
//! releases every waiter when it ends, however it ends.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;

use crate::cache::control::{RequestControl, ResponseControl};
use crate::cache::flight::{Flight, FlightGuard, LeaderAnswer};
use crate::cache::key::{self, Vary};
use crate::cache::policy::{self, validation, NotStored, StoredResponse};
use crate::cache::store::{Entry, Variants};
use crate::cache::Cache;
use crate::http::body::RequestBody;
use crate::http::headers;
use crate::upstream::{copy_parts, FramingConflict, Upstream};

pub(super) struct FillJob {
    pub upstream: Arc<Upstream>,
    pub cache: Arc<Cache>,
    /// The request for the origin (conditional when revalidating).
    pub request: Request<RequestBody>,
    /// The same request without our conditional fields, for a refetch.
    pub plain: Request<()>,
    pub label: String,
    pub key: String,
    /// Stored variants being revalidated, and the one the request selected.
    pub revalidating: Option<(Variants, Option<usize>)>,
}

/// Runs the fetch and publishes the result on `flight`.
pub(super) async fn run(job: FillJob, flight: Arc<Flight>, guard: FlightGuard) {
    let _guard = guard;
    let FillJob {
        upstream,
        cache,
        request,
        plain,
        label,
        key,
        revalidating,
    } = job;
    let (plain_parts, ()) = plain.into_parts();
    let method = plain_parts.method.clone();
    let request_headers = plain_parts.headers.clone();
    let request_time = SystemTime::now();
    let resp = match upstream.send(request, &label).await {
        Ok(resp) => resp,
        Err(e) => return flight.leader_only(LeaderAnswer::Error(e)),
    };
    let resp = if resp.status() == StatusCode::NOT_MODIFIED {
        if let Some((all, selected)) = &revalidating {
            let (mut parts, _) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            if let Some((entry, ttl)) =
                refresh(&cache, &key, all, *selected, &parts.headers, request_time)
            {
                return flight.done(entry, 304, ttl);
            }
        }
        // A 304 for nothing we hold: ask again without conditions.
        let retry = Request::from_parts(copy_parts(&plain_parts), RequestBody::Empty);
        match upstream.send(retry, &label).await {
            Ok(resp) => resp,
            Err(e) => return flight.leader_only(LeaderAnswer::Error(e)),
        }
    } else {
        resp
    };

    let response_time = SystemTime::now();
    let (mut parts, mut body) = resp.into_parts();
    finish_origin_head(&mut parts.headers, response_time);
    let plan = if parts.extensions.get::<FramingConflict>().is_some() {
        Err(NotStored::Framing)
    } else {
        plan_store(
            &cache,
            &method,
            &request_headers,
            parts.status,
            &parts.headers,
            request_time,
            response_time,
        )
    };
    let Plan {
        head,
        ttl,
        secondary,
        length,
    } = match plan {
        Ok(plan) => plan,
        Err(why) => {
            // Hit-for-miss: the next crowd fetches alone instead of queueing.
            cache.flights.mark_uncollapsible(&key);
            if revalidating.is_some() {
                forget_replaced(&cache, &key, parts.status);
            }
            let resp = http::Response::from_parts(parts, body);
            return flight.leader_only(LeaderAnswer::Response(Box::new(resp), why));
        }
    };
    let status = parts.status.as_u16();
    flight.filling(parts, ttl, length);

    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received = 0u64;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(%key, error = %e, "origin body broke off; nothing stored");
                return flight.body_failed();
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                received += data.len() as u64;
                if received > cache.max_object_size || length.is_some_and(|l| received > l) {
                    cache.flights.mark_uncollapsible(&key);
                    return flight.overflow(data, body);
                }
                chunks.push(data.clone());
                flight.chunk(data);
            }
        }
    }
    if length.is_some_and(|l| l != received) {
        return flight.body_failed();
    }
    let entry = Arc::new(Entry::compact(head, &chunks, secondary));
    cache.store.insert(&key, entry.clone());
    flight.done(entry, status, ttl);
}

/// Applies a 304 to the stored variant it names (§4.3.4, §3.2) and stores the
/// refreshed entry; `None` when it names none of them.
pub(super) fn refresh(
    cache: &Cache,
    key: &str,
    all: &Variants,
    selected: Option<usize>,
    not_modified: &HeaderMap,
    request_time: SystemTime,
) -> Option<(Arc<Entry>, i64)> {
    let response_time = SystemTime::now();
    let index = validation::select_for_update(all.iter().map(|e| &e.head), selected, not_modified)?;
    let old = &all[index];
    let merged = validation::merge_not_modified(&old.head.headers, not_modified);
    let head = StoredResponse::new(old.head.status, merged, request_time, response_time);
    let ttl = freshness_left(&head, &cache.heuristics, response_time);
    let entry = Arc::new(Entry::compact(
        head,
        std::slice::from_ref(&old.body),
        old.secondary.clone(),
    ));
    cache.store.insert(key, entry.clone());
    Some((entry, ttl))
}

/// What storing a response needs, decided before its body arrives.
pub(super) struct Plan {
    pub head: StoredResponse,
    /// Freshness left in seconds.
    pub ttl: i64,
    /// The request's values of the fields the response's Vary names.
    pub secondary: key::Secondary,
    /// Content-Length, when declared.
    pub length: Option<u64>,
}

/// An origin head made fit for the client and the store: hop-by-hop fields
/// removed, and the Date it did not send added (RFC 9110 §6.6.1).
pub(super) fn finish_origin_head(headers: &mut HeaderMap, received: SystemTime) {
    headers::strip_hop_by_hop(headers);
    if !headers.contains_key(header::DATE) {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(received)) {
            headers.insert(header::DATE, v);
        }
    }
}

/// A revalidation brought a new representation that may not be stored: it
/// must not leave the old one behind (a 5xx keeps it, for stale-if-error).
pub(super) fn forget_replaced(cache: &Cache, key: &str, status: StatusCode) {
    if !status.is_server_error() {
        cache.store.remove(key);
    }
}

/// The stored head, its freshness and Vary key, or why the response is not
/// stored.
pub(super) fn plan_store(
    cache: &Cache,
    method: &Method,
    request_headers: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<Plan, NotStored> {
    let req_cc = RequestControl::parse(request_headers);
    let control = ResponseControl::parse(response);
    let strip = policy::storable(method, request_headers, &req_cc, status, response, &control)?;
    if content_length(response).is_some_and(|len| len > cache.max_object_size) {
        return Err(NotStored::TooLarge);
    }
    // Entry::compact makes the owned copy when the body is complete.
    let mut stored = response.clone();
    for name in &strip {
        stored.remove(name);
    }
    let head = StoredResponse::new(status, stored, request_time, response_time);
    let ttl = freshness_left(&head, &cache.heuristics, response_time);
    // Stale on arrival, with nothing to revalidate with and no stale window:
    // storing it is waste.
    let validators =
        head.headers.contains_key(header::ETAG) || head.headers.contains_key(header::LAST_MODIFIED);
    let stale_window =
        cache.stale_while_revalidate(&head) > 0 || cache.stale_if_error(&head, None) > 0;
    if ttl <= 0 && !validators && !stale_window {
        return Err(NotStored::NoFreshness);
    }
    let secondary = match Vary::of(response) {
        Vary::Fields(names) => key::secondary(&names, request_headers),
        Vary::Star => Vec::new(),
    };
    Ok(Plan {
        head,
        ttl,
        secondary,
        length: content_length(response),
    })
}

/// Freshness left in seconds (negative when stale).
pub(super) fn freshness_left(
    head: &StoredResponse,
    h: &policy::Heuristics,
    now: SystemTime,
) -> i64 {
    policy::lifetime(head, h).0 as i64 - policy::current_age(head, now) as i64
}

pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
