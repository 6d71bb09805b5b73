//! Deciding, before a response's body arrives, whether and how it is
//! stored (RFC 9111 §3): what is kept of its head, its freshness left, its
//! Vary key and tags, and whether it goes whole, in slices, or (too large
//! for memory) to the disk tier.

use std::time::SystemTime;

use http::header;
use http::{HeaderMap, Method, StatusCode};

use super::control::RequestControl;
use super::key::{self, Vary};
use super::policy::{self, NotStored, StoredResponse};
use super::rules;
use super::rules::CacheRules;
use super::slices::{self, Slicing};
use super::store::Tags;
use super::tags;
use super::Cache;
use crate::http::headers::content_length;

/// What storing a response needs, decided before its body arrives.
pub struct Plan {
    pub head: StoredResponse,
    /// Freshness left in seconds.
    pub ttl: i64,
    /// The request's values of the fields the response's Vary names.
    pub secondary: key::Secondary,
    /// Content-Length, when declared.
    pub length: Option<u64>,
    /// Set when the response is too large to keep whole but can be kept
    /// in slices (`slices.rs`): fill it with `Fill::sliced`.
    pub slicing: Option<Slicing>,
    /// The origin's tags for the entry.
    pub tags: Tags,
}

impl Plan {
    /// Keeps the entry fresh for at most `limit` from `now` (a copy of what
    /// another cache owns): its lifetime becomes its age plus `limit`
    /// when that is shorter.
    pub fn keep_at_most(&mut self, limit: std::time::Duration, cache: &Cache, now: SystemTime) {
        if let Some(ttl) = cap_lifetime(&mut self.head, self.ttl, limit, cache, now) {
            self.ttl = ttl;
        }
    }
}

/// `head`'s lifetime cut so that it is fresh for at most `limit` from
/// `now`; the new freshness left, or `None` when `ttl` was within it.
pub(super) fn cap_lifetime(
    head: &mut StoredResponse,
    ttl: i64,
    limit: std::time::Duration,
    cache: &Cache,
    now: SystemTime,
) -> Option<i64> {
    let limit = limit.as_secs().min(u64::from(u32::MAX)) as i64;
    if ttl <= limit {
        return None;
    }
    let age = policy::current_age(head, now) as i64;
    head.set_lifetime(u32::try_from(age + limit).unwrap_or(u32::MAX));
    Some(freshness_left(head, &cache.heuristics(), now))
}

/// The stored head, its freshness and Vary key, or why the response is not
/// stored.
pub fn plan_store(
    cache: &Cache,
    rules: &CacheRules,
    method: &Method,
    request_headers: &HeaderMap,
    origin: &http::response::Parts,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<Plan, NotStored> {
    let times = (request_time, response_time);
    plan(cache, rules, method, request_headers, origin, times, true)
}

/// As `plan_store`, for the whole head of an object kept in slices: its
/// length is not held against `max_object_size` (each slice is bounded by
/// `slice_size` instead).
pub fn plan_sliced(
    cache: &Cache,
    rules: &CacheRules,
    request_headers: &HeaderMap,
    origin: &http::response::Parts,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<Plan, NotStored> {
    let times = (request_time, response_time);
    plan(
        cache,
        rules,
        &Method::GET,
        request_headers,
        origin,
        times,
        false,
    )
}

fn plan(
    cache: &Cache,
    rules: &CacheRules,
    method: &Method,
    request_headers: &HeaderMap,
    origin: &http::response::Parts,
    (request_time, response_time): (SystemTime, SystemTime),
    bounded: bool,
) -> Result<Plan, NotStored> {
    let (status, response) = (origin.status, &origin.headers);
    let req_cc = RequestControl::parse(request_headers);
    let control = policy::response_control(response, &rules.targeted_fields);
    let verdict = policy::storable(
        method,
        request_headers,
        &req_cc,
        status,
        response,
        &control,
        cache.tunables.set_cookie(),
    );
    // A route's TTL rule stands in for freshness the origin did not give,
    // and only for that: every other refusal stands.
    let rule_ttl = rules.ttl_for(status);
    let strip = match verdict {
        Err(NotStored::NoFreshness) if rule_ttl.is_some() => {
            rules::private_fields(&control.private)
        }
        other => other?,
    };
    let mut slicing = None;
    let limit = if bounded {
        cache.max_object_size()
    } else {
        u64::MAX
    };
    if let Some(len) = content_length(response).filter(|len| *len > limit) {
        // Too large for memory, but not for the disk tier: it goes there
        // whole (slices in memory would only copy it). Else in slices,
        // when it can be.
        let to_disk = (cache.disk.as_ref()).is_some_and(|disk| len <= disk.max_object_size());
        if !to_disk {
            slicing = whole_sliceable(cache, origin, len).filter(|_| rules.key.include.is_empty());
            if slicing.is_none() {
                return Err(NotStored::TooLarge);
            }
        }
    }
    // Entry::compact makes the owned copy when the body is complete.
    let mut stored = response.clone();
    for name in &strip {
        stored.remove(name);
    }
    let (tags, dropped) = tags::read(response, &rules.tag_fields, rules.max_tags);
    cache.stats.count_dropped_tags(dropped);
    rules.strip_tags(&mut stored);
    let (head, ttl) = stored_head(cache, rules, status, stored, (request_time, response_time));
    // Stale on arrival, with nothing to revalidate with and no stale window:
    // storing it is waste.
    let validators =
        head.headers.contains_key(header::ETAG) || head.headers.contains_key(header::LAST_MODIFIED);
    let stale_window =
        cache.stale_while_revalidate(&head) > 0 || cache.stale_if_error(&head, None) > 0;
    if ttl <= 0 && !validators && !stale_window {
        return Err(NotStored::NoFreshness);
    }
    let mut names = match Vary::of(response) {
        Vary::Fields(names) => names,
        Vary::Star => Vec::new(),
    };
    // The route's own key fields, as if the origin had named them in Vary.
    for name in rules.key.include.iter() {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let secondary = key::secondary(&names, request_headers);
    Ok(Plan {
        head,
        ttl,
        secondary,
        length: content_length(response),
        slicing,
        tags,
    })
}

/// The head stored for `status` and `fields` under `rules` (targeted
/// fields read, TTL rules applied), and its freshness left.
pub(super) fn stored_head(
    cache: &Cache,
    rules: &CacheRules,
    status: StatusCode,
    fields: HeaderMap,
    (request_time, response_time): (SystemTime, SystemTime),
) -> (StoredResponse, i64) {
    let mut head = StoredResponse::targeted(
        status,
        fields,
        request_time,
        response_time,
        &rules.targeted_fields,
    );
    apply_ttl_rules(&mut head, rules);
    let ttl = freshness_left(&head, &cache.heuristics(), response_time);
    (head, ttl)
}

/// A route's `status_ttl` / `default_ttl` for a response with no explicit
/// freshness (no max-age, s-maxage or Expires): written as its max-age, so
/// it replaces the heuristic (§4.2.2) and survives a 304's refresh.
fn apply_ttl_rules(head: &mut StoredResponse, rules: &CacheRules) {
    if policy::freshness::has_explicit_freshness(head) {
        return;
    }
    if let Some(ttl) = rules.ttl_for(head.status) {
        head.set_lifetime(ttl);
    }
}

/// A whole (200) response of `len` bytes over `max_object_size` can be cut
/// into slices when slicing is on, the origin takes byte ranges (so a
/// missing slice can be fetched later), and a single strong entity tag
/// names the representation (RFC 9111 §3.4). Varying objects are not
/// sliced: a slice has no Vary key of its own.
fn whole_sliceable(cache: &Cache, origin: &http::response::Parts, len: u64) -> Option<Slicing> {
    let size = cache.slice_size();
    let headers = &origin.headers;
    let ranges = headers
        .get_all(header::ACCEPT_RANGES)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"bytes"));
    (size > 0
        && origin.status == StatusCode::OK
        && ranges
        && !headers.contains_key(header::VARY)
        && slices::strong_etag(headers).is_some())
    .then_some(Slicing {
        size,
        complete: len,
    })
}

/// Freshness left in seconds (negative when stale).
pub fn freshness_left(head: &StoredResponse, h: &policy::Heuristics, now: SystemTime) -> i64 {
    policy::lifetime(head, h).0 as i64 - policy::current_age(head, now) as i64
}
