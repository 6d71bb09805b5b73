//! Tags: the names an origin gives a response in `Surrogate-Key` or
//! `Cache-Tag` (Fastly, Cloudflare, Varnish xkey), so that everything about
//! one product can be purged at once, and the index from a tag to the keys
//! of the URLs that carry it.
//!
//! The index counts, per tag and key, the stored values (a URL's list of
//! variants) carrying the tag: +1 when a list is put, -1 when moka lets a
//! list go for any reason (replaced, evicted, expired, removed). Each list
//! is counted before it enters the store (inside the store's compute, so
//! no other thread can evict it first) and released once after it leaves,
//! so a key leaves the index with its last tagged list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::header::{HeaderMap, HeaderName};

use super::store::Tags;

/// A tag longer than this is not kept (and counted).
pub const MAX_TAG_BYTES: usize = 1024;

/// What reading a response's tags dropped, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub too_long: usize,
    pub over_limit: usize,
}

/// The tags in `fields` of `headers`: separated by spaces or commas,
/// each once, in first-seen order, at most `max` of them; empty ones are
/// skipped, and ones over 1 KiB or past `max` are dropped and counted.
pub fn read(headers: &HeaderMap, fields: &[HeaderName], max: usize) -> (Tags, Dropped) {
    let mut tags: Vec<Arc<str>> = Vec::new();
    let mut dropped = Dropped::default();
    let words = fields
        .iter()
        .flat_map(|name| headers.get_all(name).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(|c: char| c == ',' || c.is_ascii_whitespace()))
        .filter(|t| !t.is_empty());
    for tag in words {
        if tag.len() > MAX_TAG_BYTES {
            dropped.too_long += 1;
        } else if tags.iter().any(|t| &**t == tag) {
            // Said twice: one tag.
        } else if tags.len() >= max {
            dropped.over_limit += 1;
        } else {
            tags.push(Arc::from(tag));
        }
    }
    (tags.into_boxed_slice(), dropped)
}

/// Tag → (key → how many stored lists of that key carry the tag), in
/// shards so that fills of different tags seldom meet on one lock. The hit
/// path never touches it.
pub struct TagIndex {
    shards: Box<[Mutex<Shard>]>,
}

/// Tag → key → count.
type Shard = HashMap<Arc<str>, HashMap<Arc<str>, u32>>;

const SHARDS: usize = 16;

impl Default for TagIndex {
    fn default() -> Self {
        TagIndex {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl TagIndex {
    fn shard(&self, tag: &str) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(tag);
        self.shards[hash as usize % self.shards.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A list carrying `tags` was put under `key`.
    pub fn add<'a>(&self, key: &str, tags: impl Iterator<Item = &'a Arc<str>>) {
        let key: Arc<str> = Arc::from(key);
        for tag in tags {
            *self
                .shard(tag)
                .entry(tag.clone())
                .or_default()
                .entry(key.clone())
                .or_insert(0) += 1;
        }
    }

    /// A list carrying `tags` under `key` was let go.
    pub fn remove<'a>(&self, key: &str, tags: impl Iterator<Item = &'a Arc<str>>) {
        for tag in tags {
            let mut shard = self.shard(tag);
            let Some(keys) = shard.get_mut(&**tag) else {
                continue;
            };
            if let Some(count) = keys.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    keys.remove(key);
                }
            }
            if keys.is_empty() {
                shard.remove(&**tag);
            }
        }
    }

    /// The keys carrying `tag` now.
    pub fn keys(&self, tag: &str) -> Vec<Arc<str>> {
        self.shard(tag)
            .get(tag)
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// (tags, tag-key pairs) held: for the metrics, and to prove the index
    /// follows the store.
    pub fn size(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(tags, pairs), shard| {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            (
                tags + shard.len(),
                pairs + shard.values().map(HashMap::len).sum::<usize>(),
            )
        })
    }
}

/// The distinct tags of a list of variants.
pub fn union<'a>(entries: impl Iterator<Item = &'a Arc<super::store::Entry>>) -> Vec<&'a Arc<str>> {
    let mut all: Vec<&Arc<str>> = Vec::new();
    for tag in entries.flat_map(|e| e.tags()) {
        if !all.iter().any(|t| ***t == **tag) {
            all.push(tag);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn names() -> Vec<HeaderName> {
        vec![
            HeaderName::from_static("surrogate-key"),
            HeaderName::from_static("cache-tag"),
        ]
    }

    #[test]
    fn tags_split_on_spaces_and_commas_each_once() {
        let h = headers(&[
            ("surrogate-key", "product-1  shoes"),
            ("cache-tag", "shoes,sale, ,product-1"),
            ("other", "ignored"),
        ]);
        let (tags, dropped) = read(&h, &names(), 64);
        let tags: Vec<&str> = tags.iter().map(|t| &**t).collect();
        assert_eq!(tags, ["product-1", "shoes", "sale"]);
        assert_eq!(dropped, Dropped::default());
    }

    #[test]
    fn long_and_surplus_tags_are_dropped_and_counted() {
        let long = "x".repeat(MAX_TAG_BYTES + 1);
        let many: Vec<String> = (0..10_000).map(|i| format!("t{i}")).collect();
        let h = headers(&[("surrogate-key", &long), ("cache-tag", &many.join(" "))]);
        let (tags, dropped) = read(&h, &names(), 64);
        assert_eq!(tags.len(), 64);
        assert_eq!(
            dropped,
            Dropped {
                too_long: 1,
                over_limit: 10_000 - 64
            }
        );
    }

    #[test]
    fn counts_follow_puts_and_releases_in_any_order() {
        let index = TagIndex::default();
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        // A list replaced by another carrying the same tag: the new one is
        // put before moka lets the old one go.
        index.add("k", [&a, &b].into_iter());
        index.add("k", [&a].into_iter());
        index.remove("k", [&a, &b].into_iter());
        assert_eq!(index.keys("a").len(), 1);
        assert!(index.keys("b").is_empty());
        index.remove("k", [&a].into_iter());
        assert_eq!(index.size(), (0, 0));
    }
}
