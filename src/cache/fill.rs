//! Filling the store, as `plan.rs` decided: applying a 304 to what is held
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
use http::StatusCode;

use super::disk::DiskFill;
use super::head::StoredHead;
use super::key::Secondary;
use super::plan::{cap_lifetime, stored_head, Plan};
use super::policy::{validation, StoredResponse};
use super::rules::CacheRules;
use super::shared::FetchLock;
use super::slices::{self, Manifest, Slicing};
use super::store::{Entry, Tags, Variants};
use super::Cache;
use crate::http::headers;

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
    /// The body going to disk, for a response too large for memory:
    /// nothing is collected in memory then.
    disk: Option<Box<DiskFill>>,
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
    /// A fill of the whole body under `key`, as `plan` says, collected in
    /// memory until it outgrows `max_object_size`.
    pub fn new(cache: Arc<Cache>, key: String, plan: Plan) -> Fill {
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
            lock: None,
        }
    }

    /// The fill of what `plan` says: in slices, or whole (in memory, or
    /// on disk when too large for memory).
    pub fn of(cache: Arc<Cache>, key: String, plan: Plan) -> Option<Fill> {
        if let Some(slicing) = plan.slicing {
            return Fill::sliced(cache, key, plan, slicing);
        }
        let too_large = plan.length.is_some_and(|len| len > cache.max_object_size());
        let mut fill = Fill::new(cache, key, plan);
        (!too_large || fill.spill()).then_some(fill)
    }

    /// Frees `lock` (the shared tier's fetch lock) once the entry is kept.
    pub fn with_lock(mut self, lock: Option<FetchLock>) -> Fill {
        self.lock = lock;
        self
    }

    /// Whether the body now goes to disk rather than memory.
    pub fn spilled(&self) -> bool {
        self.disk.is_some()
    }

    /// Sends the body to disk from now on, with what was collected so
    /// far; false when there is no disk tier or it does not take it.
    fn spill(&mut self) -> bool {
        // The shared tier will not have it: other nodes need not wait.
        self.lock = None;
        let chunks = std::mem::take(&mut self.chunks);
        let Some(disk) = self.cache.disk.as_ref() else {
            return false;
        };
        let head = Entry::new(self.head.clone(), Bytes::new(), self.secondary.clone())
            .with_tags(self.tags.clone());
        let until = self.cache.disk_keep_until(&head.head);
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
        let mut fill = Fill::new(cache, key, plan);
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
        if let Some(disk) = self.disk.as_mut() {
            return disk.push(data);
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
    let index = validation::select_for_update(all.iter().map(|e| &e.head), selected, not_modified)?;
    let old = &all[index];
    let (head, ttl) = refreshed(cache, rules, old, not_modified, request_time);
    // The body is already compact (it was stored): shared, not copied.
    let entry = Entry::new(head, old.body.clone(), old.secondary.to_vec());
    let entry = Arc::new(entry.with_tags(old.tags().into()));
    cache.keep(key, entry.clone(), None);
    Some((entry, ttl))
}

/// A 304 applied to one stored response whose body is elsewhere (a large
/// record on disk): the refreshed response without its body, and its
/// freshness left; `None` when the 304 names another representation.
pub fn refresh_head(
    cache: &Cache,
    rules: &CacheRules,
    old: &Entry,
    not_modified: &HeaderMap,
    request_time: SystemTime,
) -> Option<(Entry, i64)> {
    validation::select_for_update(std::iter::once(&old.head), Some(0), not_modified)?;
    let (head, ttl) = refreshed(cache, rules, old, not_modified, request_time);
    let entry = Entry::new(head, Bytes::new(), old.secondary.to_vec()).with_tags(old.tags().into());
    Some((entry, ttl))
}

/// `old`'s head with a 304's fields (§3.2), as stored under `rules`.
fn refreshed(
    cache: &Cache,
    rules: &CacheRules,
    old: &Entry,
    not_modified: &HeaderMap,
    request_time: SystemTime,
) -> (StoredResponse, i64) {
    let mut merged = validation::merge_not_modified(&old.head.headers, not_modified);
    rules.strip_tags(&mut merged);
    let times = (request_time, SystemTime::now());
    stored_head(cache, rules, old.head.status, merged, times)
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
