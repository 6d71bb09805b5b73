//! The in-memory store: moka, weighed by each entry's real size (head + body +
//! bookkeeping), holding every Vary variant of a URL under its primary key so
//! that removing a URL removes them all.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use moka::ops::compute::Op;

use super::key::{self, Secondary};
use super::policy::StoredResponse;
use super::tags::{self, TagIndex};

/// Bytes charged per entry beyond its head bytes and body: the entry struct
/// (320 B with its Arc), moka's node, key and queues (~400 B), the variant
/// list, and allocator rounding. Measured with `cargo bench --bench memory`
/// (1.99 KiB RSS per 1 KiB object with nine origin fields, charged 2.0 KiB)
/// so that `capacity` bounds real memory (docs/benchmarks.md).
const ENTRY_OVERHEAD: usize = 800;
/// Bytes charged per secondary-key field beyond its name and value.
const FIELD_OVERHEAD: usize = 40;
/// Bytes charged per tag beyond its text (its Arc and the index's share).
const TAG_OVERHEAD: usize = 64;

/// An entry's tags, each once.
pub type Tags = Box<[Arc<str>]>;

/// One stored response (one Vary variant of a URL).
#[derive(Debug)]
pub struct Entry {
    pub head: StoredResponse,
    pub body: Bytes,
    /// The request field values this variant was stored for (§4.1). A
    /// boxed slice, not a Vec, so that `tags` fits in the same 24 bytes
    /// and the entry stays in its allocator size class.
    pub secondary: Box<[(http::HeaderName, Option<String>)]>,
    /// The origin's tags (`Surrogate-Key`, `Cache-Tag`), for purge by tag.
    tags: Option<Box<Tags>>,
    /// u32 so the struct fits a smaller allocator size class; an entry
    /// over 4 GiB is never stored (the weigher caps at u32 too).
    weight: u32,
}

impl Entry {
    /// Builds an entry that owns an exact-size copy of its body: hyper's
    /// body chunks are slices of larger read buffers, which an entry must
    /// not keep alive. (The head compacted itself: `cache::head`.)
    pub fn compact(head: StoredResponse, body: &[Bytes], secondary: Secondary) -> Entry {
        let body_len: usize = body.iter().map(|c| c.len()).sum();
        let mut owned_body = bytes::BytesMut::with_capacity(body_len);
        for chunk in body {
            owned_body.extend_from_slice(chunk);
        }
        Entry::new(head, owned_body.freeze(), secondary)
    }

    pub fn new(head: StoredResponse, body: Bytes, secondary: Secondary) -> Entry {
        let weight = ENTRY_OVERHEAD
            + body.len()
            + head.headers.bytes()
            + secondary
                .iter()
                .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, String::len) + FIELD_OVERHEAD)
                .sum::<usize>();
        Entry {
            head,
            body,
            secondary: secondary.into_boxed_slice(),
            tags: None,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        }
    }

    /// The entry carrying `tags` (none: unchanged), charged for them.
    pub fn with_tags(mut self, tags: Tags) -> Entry {
        if tags.is_empty() {
            return self;
        }
        let bytes: usize = tags.iter().map(|t| t.len() + TAG_OVERHEAD).sum();
        self.weight = self
            .weight
            .saturating_add(u32::try_from(bytes).unwrap_or(u32::MAX));
        self.tags = Some(Box::new(tags));
        self
    }

    /// The same response with `body` (a head read from disk, and the body
    /// read after it), charged for it.
    pub fn with_body(self, body: Bytes) -> Entry {
        let tags = self.tags;
        let mut entry = Entry::new(self.head, body, self.secondary.into_vec());
        if let Some(tags) = tags {
            entry = entry.with_tags(*tags);
        }
        entry
    }

    pub fn tags(&self) -> &[Arc<str>] {
        self.tags.as_deref().map_or(&[], |t| &t[..])
    }

    /// A copy that is stale from `now` on (a soft purge): its freshness
    /// lifetime becomes its current age, so the next request revalidates,
    /// while stale-while-revalidate and stale-if-error still count from now.
    pub fn expired_copy(&self, now: std::time::SystemTime) -> Entry {
        let mut head = self.head.clone();
        let age = super::policy::current_age(&head, now).min(u64::from(u32::MAX)) as u32;
        head.set_lifetime(age);
        Entry {
            head,
            body: self.body.clone(),
            secondary: self.secondary.clone(),
            tags: self.tags.clone(),
            weight: self.weight,
        }
    }

    /// Bytes this entry is charged against the capacity.
    pub fn weight(&self) -> usize {
        self.weight as usize
    }
}

/// The variants stored for one URL, newest first: one allocation (an Arc
/// of a slice), not an Arc of a Vec and its buffer.
pub type Variants = Arc<[Arc<Entry>]>;

/// What a lookup found for a request.
pub enum Lookup {
    /// A variant whose secondary key matches the request.
    Found {
        entry: Arc<Entry>,
        index: usize,
        all: Variants,
    },
    /// Variants exist, none for this request's Vary fields.
    VaryMiss {
        all: Variants,
    },
    Miss,
}

pub struct Store {
    cache: moka::sync::Cache<String, Variants>,
    /// Tag → keys, kept by `insert` and moka's removal listener.
    tags: Arc<TagIndex>,
    /// `[cache] max_variants`; a reload may change it.
    max_variants: std::sync::atomic::AtomicUsize,
    capacity: u64,
}

impl Store {
    pub fn new(
        capacity: u64,
        max_variants: usize,
        evictions: prometheus_client::metrics::counter::Counter,
    ) -> Store {
        let tags = Arc::new(TagIndex::default());
        let index = tags.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            // Every list let go, whatever the cause (replaced, evicted,
            // expired, removed), gives back its tags.
            .eviction_listener(move |key: Arc<String>, value: Variants, cause| {
                if cause.was_evicted() {
                    evictions.inc();
                }
                let released = tags::union(value.iter());
                if !released.is_empty() {
                    index.remove(&key, released.into_iter());
                }
            })
            .weigher(|key: &String, variants: &Variants| {
                let bytes = key.len() + variants.iter().map(|e| e.weight()).sum::<usize>();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .build();
        Store {
            cache,
            tags,
            max_variants: std::sync::atomic::AtomicUsize::new(max_variants.max(1)),
            capacity,
        }
    }

    pub fn set_max_variants(&self, max: usize) {
        self.max_variants
            .store(max.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn lookup(&self, key: &str, request: &HeaderMap) -> Lookup {
        let Some(all) = self.cache.get(key) else {
            return Lookup::Miss;
        };
        match all.iter().position(|e| key::matches(&e.secondary, request)) {
            Some(index) => Lookup::Found {
                entry: all[index].clone(),
                index,
                all,
            },
            None => Lookup::VaryMiss { all },
        }
    }

    /// Stores `entry`, replacing the variant with the same secondary key and
    /// dropping the oldest variants beyond `max_variants`. Atomic per URL.
    pub fn insert(&self, key: &str, entry: Arc<Entry>) {
        let max = self.max_variants.load(std::sync::atomic::Ordering::Relaxed);
        self.cache.entry_by_ref(key).and_compute_with(|current| {
            let mut list: Vec<Arc<Entry>> = Vec::with_capacity(max.min(4));
            list.push(entry.clone());
            if let Some(current) = current {
                list.extend(
                    current
                        .value()
                        .iter()
                        .filter(|e| e.secondary != entry.secondary)
                        .take(max - 1)
                        .cloned(),
                );
            }
            self.put(key, list)
        });
    }

    /// The compute's answer that stores `list` under `key`, its tags counted
    /// first: once it is in the store another thread may evict it, and its
    /// release must find the count.
    fn put(&self, key: &str, list: Vec<Arc<Entry>>) -> Op<Variants> {
        let tagged = tags::union(list.iter());
        if !tagged.is_empty() {
            self.tags.add(key, tagged.into_iter());
        }
        Op::Put(Arc::from(list))
    }

    /// Makes every variant of `key` stale from `now` on (a soft purge);
    /// true when something was stored.
    pub fn soften(&self, key: &str, now: std::time::SystemTime) -> bool {
        let mut found = false;
        self.cache.entry_by_ref(key).and_compute_with(|current| {
            let Some(current) = current else {
                return Op::Nop;
            };
            found = true;
            let list: Vec<Arc<Entry>> = current
                .value()
                .iter()
                .map(|e| Arc::new(e.expired_copy(now)))
                .collect();
            self.put(key, list)
        });
        found
    }

    /// The keys whose stored variants carry `tag`.
    pub fn tagged(&self, tag: &str) -> Vec<Arc<str>> {
        self.tags.keys(tag)
    }

    /// (tags, tag-key pairs) in the index, after pending removals ran.
    pub fn tag_index_size(&self) -> (usize, usize) {
        self.cache.run_pending_tasks();
        self.tags.size()
    }

    /// Every key with its variants (for listings; walks the whole store).
    pub fn iter(&self) -> impl Iterator<Item = (Arc<String>, Variants)> + '_ {
        self.cache.iter()
    }

    /// Every variant stored for `key`.
    pub fn variants(&self, key: &str) -> Option<Variants> {
        self.cache.get(key)
    }

    /// The configured capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Removes every variant stored for `key`; true when something was there.
    pub fn remove(&self, key: &str) -> bool {
        self.cache.remove(key).is_some()
    }

    /// Removes every URL in one of `namespaces` whose URL part starts with
    /// `url_prefix` (an eager ban: the keys are walked now, so later requests
    /// never see the banned objects). Returns how many URLs went.
    pub fn remove_prefix(&self, namespaces: &[&str], url_prefix: &str) -> usize {
        let keys: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(key, _)| key::under_prefix(key, namespaces, url_prefix))
            .map(|(key, _)| key)
            .collect();
        keys.iter()
            .filter(|key| self.cache.remove(key.as_str()).is_some())
            .count()
    }

    /// Bytes charged against the capacity (after pending evictions ran).
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// URLs stored (after pending evictions ran).
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::tests_support::{headers, stored};
    use http::header;

    fn entry(body: &'static str, accept: Option<&str>) -> Entry {
        let req = headers(
            &accept
                .map(|a| vec![("accept-encoding", a)])
                .unwrap_or_default(),
        );
        Entry::new(
            stored(200, &[("cache-control", "max-age=60")]),
            Bytes::from_static(body.as_bytes()),
            key::secondary(&[header::ACCEPT_ENCODING], &req),
        )
    }

    #[test]
    fn variants_replace_and_cap() {
        let store = Store::new(1 << 20, 2, Default::default());
        store.insert("k", Arc::new(entry("gzip-1", Some("gzip"))));
        store.insert("k", Arc::new(entry("br", Some("br"))));
        store.insert("k", Arc::new(entry("gzip-2", Some("gzip"))));
        let Lookup::Found { entry: e, .. } =
            store.lookup("k", &headers(&[("accept-encoding", "gzip")]))
        else {
            panic!("gzip variant stored")
        };
        assert_eq!(&e.body[..], b"gzip-2");
        assert!(matches!(
            store.lookup("k", &headers(&[("accept-encoding", "br")])),
            Lookup::Found { .. }
        ));
        // A third distinct variant pushes out the oldest (br).
        store.insert("k", Arc::new(entry("none", None)));
        assert!(matches!(
            store.lookup("k", &headers(&[("accept-encoding", "br")])),
            Lookup::VaryMiss { .. }
        ));
        assert!(store.remove("k"));
        assert!(matches!(store.lookup("k", &HeaderMap::new()), Lookup::Miss));
    }

    #[test]
    fn weight_counts_head_body_and_overhead() {
        let e = entry("12345", None);
        assert!(e.weight() > 5 + ENTRY_OVERHEAD);
    }
}
