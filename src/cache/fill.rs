//! Filling the store: deciding before the body arrives whether and how a
//! response is stored (`plan_store`), applying a 304 to what is held
//! (`refresh`), and teeing a body into the store while it streams to the
//! client (`Fill`). The entry is inserted only when the whole body arrived
//! and matched its declared length; a client that leaves, an origin that
//! stops early, or a body past `max_object_size` leaves nothing behind.
//! With a disk tier, a body too large for memory is written to disk as it
//! streams instead (`disk::DiskFill`): from the start when its declared
//! length says so, or from the chunk that takes it past the limit.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use super::control::RequestControl;
use super::disk::DiskFill;
use super::head::StoredHead;
use super::key::{self, Secondary, Vary};
use super::policy::{self, validation, NotStored, StoredResponse};
use super::rules;
use super::rules::CacheRules;
use super::shared::FetchLock;
use super::slices::{self, Manifest, Slicing};
use super::store::{Entry, Tags, Variants};
use super::tags;
use super::Cache;
use crate::http::headers::{self, content_length};

pub struct Fill {
    cache: Arc<Cache>,
    key: String,
    head: StoredResponse,
    secondary: Secondary,
    tags: Tags,
    chunks: Vec<Bytes>,
    received: u64,
    /// Content-Length, when the origin declared one.
    expected: Option<u64>,
    /// A response too large to keep whole, cut into slices as it streams.
    cut: Option<Box<SliceCut>>,
    /// The body's copy on disk, for a response too large for memory.
    disk: Option<Box<DiskFill>>,
    /// Gone to disk: nothing is collected in memory.
    spilled: bool,
    /// Freed once the shared tier has the entry.
    lock: Option<FetchLock>,
}

/// The slice being filled while a large response streams by.
struct SliceCut {
    manifest: Manifest,
    whole: HeaderMap,
    index: u64,
    current: bytes::BytesMut,
}

impl Fill {
    /// A fill of the whole body under `key`, as `plan` says.
    pub fn new(cache: Arc<Cache>, key: String, plan: Plan) -> Fill {
        let too_large = plan.length.is_some_and(|len| len > cache.max_object_size());
        let mut fill = Fill::unstarted(cache, key, plan);
        if too_large {
            fill.spill();
        }
        fill
    }

    fn unstarted(cache: Arc<Cache>, key: String, plan: Plan) -> Fill {
        Fill {
            cache,
            key,
            head: plan.head,
            secondary: plan.secondary,
            tags: plan.tags,
            chunks: Vec::new(),
            received: 0,
            expected: plan.length,
            cut: None,
            disk: None,
            spilled: false,
            lock: None,
        }
    }

    /// The fill of what `plan` says: in slices, or whole (in memory, or
    /// on disk when too large for memory).
    pub fn of(cache: Arc<Cache>, key: String, plan: Plan) -> Option<Fill> {
        match plan.slicing {
            Some(slicing) => Fill::sliced(cache, key, plan, slicing),
            None => Some(Fill::new(cache, key, plan)),
        }
    }

    /// Frees `lock` (the shared tier's fetch lock) once the entry is kept.
    pub fn with_lock(mut self, lock: Option<FetchLock>) -> Fill {
        self.lock = lock;
        self
    }

    /// Whether the body now goes to disk rather than memory.
    pub fn spilled(&self) -> bool {
        self.spilled
    }

    /// Sends the body to disk from now on, with what was collected so
    /// far; false when there is no disk tier or it does not take it.
    fn spill(&mut self) -> bool {
        self.spilled = true;
        // The shared tier will not have it: other nodes need not wait.
        self.lock = None;
        let chunks = std::mem::take(&mut self.chunks);
        let Some(disk) = self.cache.disk.as_ref() else {
            return false;
        };
        let head = Entry::new(self.head.clone(), Bytes::new(), self.secondary.clone())
            .with_tags(self.tags.clone());
        let until =
            SystemTime::now() + std::time::Duration::from_secs(self.cache.tier_ttl(&head.head));
        let Some(mut spool) = disk.spool(&self.key, head, until, self.expected) else {
            return false;
        };
        if !chunks.iter().all(|c| spool.push(c)) {
            return false;
        }
        self.disk = Some(Box::new(spool));
        true
    }

    /// A fill for a response over `max_object_size` that `plan_store`
    /// found sliceable: each slice is stored as soon as its bytes are in
    /// (a body cut short keeps the slices it completed).
    pub fn sliced(cache: Arc<Cache>, key: String, plan: Plan, slicing: Slicing) -> Option<Fill> {
        let etag = slices::strong_etag(&plan.head.headers.to_map(0))?.clone();
        let whole = plan.head.headers.to_map(0);
        let entry = cache.put_manifest(&key, slicing.size, plan.head.clone(), plan.tags.clone());
        let cut = SliceCut {
            manifest: Manifest {
                entry,
                slicing,
                etag,
            },
            whole,
            index: 0,
            current: bytes::BytesMut::with_capacity(slicing.size as usize),
        };
        let mut fill = Fill::unstarted(cache, key, plan);
        fill.cut = Some(Box::new(cut));
        Some(fill)
    }

    /// Takes a chunk; false when the body outgrew what may be stored (the
    /// caller then drops the fill and keeps streaming).
    pub fn push(&mut self, data: &Bytes) -> bool {
        if let Some(cut) = self.cut.as_mut() {
            self.received += data.len() as u64;
            if self.expected.is_some_and(|e| self.received > e) {
                return false;
            }
            let mut rest = &data[..];
            while !rest.is_empty() {
                let room = cut.manifest.slicing.size as usize - cut.current.len();
                let (now, later) = rest.split_at(room.min(rest.len()));
                cut.current.extend_from_slice(now);
                rest = later;
                if cut.current.len() as u64 == cut.manifest.slicing.size {
                    cut.store(&self.cache, &self.key, &self.head);
                }
            }
            return true;
        }
        self.received += data.len() as u64;
        if self.expected.is_some_and(|e| self.received > e) {
            return false;
        }
        if self.spilled {
            return self.disk.as_mut().is_some_and(|disk| disk.push(data));
        }
        self.chunks.push(data.clone());
        if self.received > self.cache.max_object_size() {
            return self.spill();
        }
        true
    }

    /// The body ended normally: store it if it is whole. The entry kept
    /// in memory, if that is where it went.
    pub fn finish(mut self) -> Option<Arc<Entry>> {
        if self.expected.is_some_and(|e| e != self.received) {
            tracing::debug!(key = %self.key, "body length differs from Content-Length; not stored");
            return None;
        }
        if let Some(disk) = self.disk.take() {
            disk.finish();
            // A copy held in memory is older than the one on disk now.
            self.cache.store.remove(&self.key);
            return None;
        }
        if self.spilled {
            // Meant for a disk that would not take it.
            return None;
        }
        if let Some(cut) = self.cut.as_mut() {
            if !cut.current.is_empty() {
                cut.store(&self.cache, &self.key, &self.head);
            }
            return None;
        }
        // One allocation for the header values and body: hyper's chunks are
        // slices of larger read buffers that must not be kept alive.
        let entry = Entry::compact(self.head, &self.chunks, self.secondary).with_tags(self.tags);
        let entry = Arc::new(entry);
        self.cache.keep(&self.key, entry.clone(), self.lock);
        Some(entry)
    }
}

impl SliceCut {
    /// Stores the filled slice under its own key, with a 206 head.
    fn store(&mut self, cache: &Cache, key: &str, whole: &StoredResponse) {
        let body = self.current.split().freeze();
        let mut head = whole.clone();
        head.status = StatusCode::PARTIAL_CONTENT;
        head.headers = StoredHead::from_map(&slices::slice_head(
            &self.whole,
            &self.manifest.slicing,
            self.index,
        ));
        cache.put_slice(key, &self.manifest, self.index, head, body);
        self.index += 1;
    }
}

/// The request headers this cache sends to fill or revalidate: never the
/// client's own conditionals (the 304 they could bring is not storable),
/// no `Range` when the whole representation is wanted (`whole`), and, when
/// variants are held, our own conditionals for them (RFC 9111 §4.3.1).
/// Returns whether any conditional was added.
pub fn origin_request(
    headers: &mut HeaderMap,
    whole: bool,
    held: Option<(&Variants, Option<usize>)>,
) -> bool {
    headers.remove(header::IF_NONE_MATCH);
    headers.remove(header::IF_MODIFIED_SINCE);
    if whole {
        headers.remove(header::RANGE);
        headers.remove(header::IF_RANGE);
    }
    let Some((all, selected)) = held else {
        return false;
    };
    let fields =
        validation::conditional_fields(all.iter().map(|e| &e.head), selected.map(|i| &all[i].head));
    let added = !fields.is_empty();
    for (name, value) in fields {
        headers.insert(name, value);
    }
    added
}

/// Applies a 304 to the stored variant it names (§4.3.4, §3.2) and stores the
/// refreshed entry; `None` when it names none of them.
pub fn refresh(
    cache: &Cache,
    rules: &CacheRules,
    key: &str,
    all: &Variants,
    selected: Option<usize>,
    not_modified: &HeaderMap,
    request_time: SystemTime,
) -> Option<(Arc<Entry>, i64)> {
    let response_time = SystemTime::now();
    let index = validation::select_for_update(all.iter().map(|e| &e.head), selected, not_modified)?;
    let old = &all[index];
    let mut merged = validation::merge_not_modified(&old.head.headers, not_modified);
    rules.strip_tags(&mut merged);
    let mut head = StoredResponse::targeted(
        old.head.status,
        merged,
        request_time,
        response_time,
        &rules.targeted_fields,
    );
    apply_ttl_rules(&mut head, rules);
    let ttl = freshness_left(&head, &cache.heuristics(), response_time);
    // The body is already compact (it was stored): shared, not copied.
    let entry = Entry::new(head, old.body.clone(), old.secondary.to_vec());
    let entry = Arc::new(entry.with_tags(old.tags().into()));
    cache.keep(key, entry.clone(), None);
    Some((entry, ttl))
}

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
fn cap_lifetime(
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

/// After `refresh`: the refreshed entry kept fresh for at most `limit` (a
/// copy of what another cache owns, revalidated through it), stored again
/// when that changed it.
pub fn refreshed_at_most(
    cache: &Cache,
    key: &str,
    (entry, ttl): (Arc<Entry>, i64),
    limit: std::time::Duration,
) -> (Arc<Entry>, i64) {
    let now = SystemTime::now();
    let mut head = entry.head.clone();
    let Some(ttl) = cap_lifetime(&mut head, ttl, limit, cache, now) else {
        return (entry, ttl);
    };
    let capped = Entry::new(head, entry.body.clone(), entry.secondary.to_vec())
        .with_tags(entry.tags().into());
    let capped = Arc::new(capped);
    cache.keep(key, capped.clone(), None);
    (capped, ttl)
}

/// An origin head made fit for the client and the store: hop-by-hop fields
/// removed, and the Date it did not send added (RFC 9110 §6.6.1).
pub fn finish_origin_head(headers: &mut HeaderMap, received: SystemTime) {
    headers::strip_hop_by_hop(headers);
    if !headers.contains_key(header::DATE) {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(received)) {
            headers.insert(header::DATE, v);
        }
    }
}

/// A revalidation brought a new representation that may not be stored: it
/// must not leave the old one behind (a 5xx keeps it, for stale-if-error).
pub fn forget_replaced(cache: &Cache, key: &str, status: StatusCode) {
    if !status.is_server_error() {
        cache.store.remove(key);
        if let Some(disk) = &cache.disk {
            disk.remove(key);
        }
    }
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
    let mut head = StoredResponse::targeted(
        status,
        stored,
        request_time,
        response_time,
        &rules.targeted_fields,
    );
    apply_ttl_rules(&mut head, rules);
    let ttl = freshness_left(&head, &cache.heuristics(), response_time);
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
