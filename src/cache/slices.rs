//! Partial content (RFC 9111 §3.3, §3.4) kept as aligned slices, the way
//! nginx's slice module does: an object fetched by Range is stored as
//! pieces of `[cache] slice_size` bytes, each its own entry, plus a
//! manifest (the object's 200 head, body empty) that says the object is
//! sliced. Any later range, or the whole object, is served by walking the
//! slices in order; a missing slice is fetched by an aligned Range.
//!
//! Pieces are combined only when they are the same representation: every
//! slice must carry the manifest's strong entity tag (§3.4 requires a
//! strong validator), and a slice whose tag differs means the object changed
//! mid-way, so the whole object is dropped. An object that fits
//! `max_object_size` becomes one ordinary entry once all its slices are in.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};

use super::policy::StoredResponse;
use super::store::{Entry, Lookup, Tags};
use super::Cache;

/// `Content-Range: bytes first-last/complete` of a 206 (RFC 9110 §14.4);
/// an unknown complete length (`*`) cannot be sliced and reads as `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    pub complete: u64,
}

impl ContentRange {
    pub fn parse(headers: &HeaderMap) -> Option<ContentRange> {
        let mut values = headers.get_all(header::CONTENT_RANGE).iter();
        let value = values.next()?.to_str().ok()?;
        if values.next().is_some() {
            return None;
        }
        let rest = value.trim().strip_prefix("bytes ")?;
        let (span, complete) = rest.split_once('/')?;
        let (first, last) = span.split_once('-')?;
        let number = |s: &str| -> Option<u64> {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let range = ContentRange {
            first: number(first)?,
            last: number(last)?,
            complete: number(complete)?,
        };
        (range.first <= range.last && range.last < range.complete).then_some(range)
    }

    pub fn bytes(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// The geometry of one sliced object: `complete` bytes in slices of `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slicing {
    pub size: u64,
    pub complete: u64,
}

impl Slicing {
    pub fn count(&self) -> u64 {
        self.complete.div_ceil(self.size)
    }

    /// The slice holding byte `offset`.
    pub fn index_of(&self, offset: u64) -> u64 {
        offset / self.size
    }

    /// Bytes `first..=last` of slice `index`.
    pub fn bounds(&self, index: u64) -> (u64, u64) {
        let first = index * self.size;
        (first, (first + self.size).min(self.complete) - 1)
    }

    /// The `Range` field that asks the origin for slice `index`.
    pub fn range_field(&self, index: u64) -> HeaderValue {
        let (first, last) = self.bounds(index);
        HeaderValue::from_str(&format!("bytes={first}-{last}")).expect("ascii")
    }

    /// Whether a 206's Content-Range is exactly slice `index` of this object.
    pub fn is_slice(&self, index: u64, range: &ContentRange) -> bool {
        range.complete == self.complete && (range.first, range.last) == self.bounds(index)
    }
}

/// The manifest's key: the object's key and the slice size (a reload that
/// changes `slice_size` starts new manifests; the old ones age out).
pub fn manifest_key(key: &str, size: u64) -> String {
    // A space never occurs in a request target, so no URL can collide.
    format!("{key} slices={size}")
}

pub fn slice_key(key: &str, size: u64, index: u64) -> String {
    format!("{key} slices={size}/{index}")
}

/// What a store key holds: a URL's variants, a sliced object's manifest,
/// or one of its slices; the last two with the URL key they belong to.
pub enum KeyKind<'a> {
    Url,
    Manifest(&'a str),
    Slice(&'a str),
}

pub fn kind_of(key: &str) -> KeyKind<'_> {
    match key.split_once(" slices=") {
        None => KeyKind::Url,
        Some((url, rest)) if rest.contains('/') => KeyKind::Slice(url),
        Some((url, _)) => KeyKind::Manifest(url),
    }
}

/// The URL key a store key belongs to.
pub fn url_of(key: &str) -> &str {
    match kind_of(key) {
        KeyKind::Url => key,
        KeyKind::Manifest(url) | KeyKind::Slice(url) => url,
    }
}

/// A strong entity tag (RFC 9110 §8.8.3): the only validator that lets
/// pieces be combined (RFC 9111 §3.4).
pub fn strong_etag(headers: &HeaderMap) -> Option<&HeaderValue> {
    let mut values = headers.get_all(header::ETAG).iter();
    let etag = values.next()?;
    (values.next().is_none() && etag.as_bytes().first() == Some(&b'"')).then_some(etag)
}

/// The whole object's head made from one slice's 206 head: status 200, the
/// complete length, no Content-Range.
pub fn whole_head(slice: &HeaderMap, complete: u64) -> HeaderMap {
    let mut head = slice.clone();
    head.remove(header::CONTENT_RANGE);
    head.insert(header::CONTENT_LENGTH, HeaderValue::from(complete));
    head
}

/// A slice's head, made from the whole object's 200 head when a full
/// response is cut into slices as it streams.
pub fn slice_head(whole: &HeaderMap, slicing: &Slicing, index: u64) -> HeaderMap {
    let (first, last) = slicing.bounds(index);
    let mut head = whole.clone();
    let range = format!("bytes {first}-{last}/{}", slicing.complete);
    head.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&range).expect("ascii"),
    );
    head.insert(header::CONTENT_LENGTH, HeaderValue::from(last - first + 1));
    head
}

/// What the cache holds of one sliced object.
pub struct Manifest {
    pub entry: Arc<Entry>,
    pub slicing: Slicing,
    pub etag: HeaderValue,
}

impl Cache {
    /// `[cache] slice_size`; 0 when range storage is off.
    pub fn slice_size(&self) -> u64 {
        self.tunables.slice_size()
    }

    /// The manifest of `key`'s sliced object, if one is held.
    pub fn manifest(&self, key: &str) -> Option<Manifest> {
        let size = self.slice_size();
        if size == 0 || !self.sliced_any.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let Lookup::Found { entry, .. } = self
            .store
            .lookup(&manifest_key(key, size), &HeaderMap::new())
        else {
            return None;
        };
        let complete = entry
            .head
            .headers
            .get_str(header::CONTENT_LENGTH)?
            .parse()
            .ok()?;
        let etag = HeaderValue::from_str(entry.head.headers.get_str(header::ETAG)?).ok()?;
        Some(Manifest {
            entry,
            slicing: Slicing { size, complete },
            etag,
        })
    }

    /// Records that `key` is sliced, with `head` (a 200 head) as the object's.
    pub fn put_manifest(
        &self,
        key: &str,
        size: u64,
        head: StoredResponse,
        tags: Tags,
    ) -> Arc<Entry> {
        self.sliced_any
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let entry = Arc::new(Entry::new(head, Bytes::new(), Vec::new()).with_tags(tags));
        self.store.insert(&manifest_key(key, size), entry.clone());
        entry
    }

    /// Slice `index` of the object, if held and of the same representation.
    pub fn slice(&self, key: &str, manifest: &Manifest, index: u64) -> Option<Bytes> {
        let slice_key = slice_key(key, manifest.slicing.size, index);
        let Lookup::Found { entry, .. } = self.store.lookup(&slice_key, &HeaderMap::new()) else {
            return None;
        };
        let same = entry.head.headers.get_str(header::ETAG) == manifest.etag.to_str().ok();
        let (first, last) = manifest.slicing.bounds(index);
        (same && entry.body.len() as u64 == last - first + 1).then(|| entry.body.clone())
    }

    /// Stores one slice (its 206 head and exactly its bytes); once every
    /// slice of an object that fits `max_object_size` is in, the object
    /// becomes one ordinary entry and its slices go.
    pub fn put_slice(
        &self,
        key: &str,
        manifest: &Manifest,
        index: u64,
        head: StoredResponse,
        body: Bytes,
    ) {
        let slice_key = slice_key(key, manifest.slicing.size, index);
        self.store
            .insert(&slice_key, Arc::new(Entry::new(head, body, Vec::new())));
        if manifest.slicing.complete <= self.max_object_size() {
            self.combine(key, manifest);
        }
    }

    fn combine(&self, key: &str, manifest: &Manifest) {
        let pieces: Option<Vec<Bytes>> = (0..manifest.slicing.count())
            .map(|index| self.slice(key, manifest, index))
            .collect();
        let Some(pieces) = pieces else {
            return;
        };
        let whole = Entry::compact(manifest.entry.head.clone(), &pieces, Vec::new())
            .with_tags(manifest.entry.tags().into());
        // Whole now: kept like any fill (in memory and the tiers below).
        self.keep(key, Arc::new(whole), None);
        self.forget_slices(key);
    }

    /// Drops `key`'s manifest and its slices (a purge, an invalidation, or
    /// a slice that showed the object changed).
    pub fn forget_slices(&self, key: &str) -> bool {
        let Some(manifest) = self.manifest(key) else {
            return false;
        };
        for index in 0..manifest.slicing.count() {
            self.store
                .remove(&slice_key(key, manifest.slicing.size, index));
        }
        self.store.remove(&manifest_key(key, manifest.slicing.size))
    }

    /// Removes everything stored for `key`: its variants and, when it is
    /// sliced, its manifest and slices. True when something was there.
    pub fn remove_url(&self, key: &str) -> bool {
        let whole = self.store.remove(key);
        self.forget_slices(key) || whole
    }

    /// After a Range fetch that could not be sliced, the URL's ranges go
    /// straight to the origin for a while (hit-for-miss, for ranges).
    pub fn mark_unsliceable(&self, key: &str) {
        self.unsliceable.insert(key.to_string(), ());
    }

    pub fn is_unsliceable(&self, key: &str) -> bool {
        self.unsliceable.contains_key(key)
    }
}

/// How long `mark_unsliceable` lasts.
pub const UNSLICEABLE_FOR: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str) -> Option<ContentRange> {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, value.parse().unwrap());
        ContentRange::parse(&h)
    }

    #[test]
    fn content_range_forms() {
        // RFC 9110 §14.4.
        assert_eq!(
            range("bytes 0-99/1000"),
            Some(ContentRange {
                first: 0,
                last: 99,
                complete: 1000
            })
        );
        for bad in [
            "bytes 0-99/*",
            "bytes */1000",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes -1-2/3",
        ] {
            assert_eq!(range(bad), None, "{bad}");
        }
    }

    #[test]
    fn slice_geometry() {
        let s = Slicing {
            size: 100,
            complete: 250,
        };
        assert_eq!(s.count(), 3);
        assert_eq!(s.bounds(0), (0, 99));
        assert_eq!(s.bounds(2), (200, 249));
        assert_eq!(s.index_of(199), 1);
        assert_eq!(s.range_field(2), "bytes=200-249");
        assert!(s.is_slice(
            2,
            &ContentRange {
                first: 200,
                last: 249,
                complete: 250
            }
        ));
        assert!(!s.is_slice(
            2,
            &ContentRange {
                first: 200,
                last: 249,
                complete: 251
            }
        ));
        assert!(!s.is_slice(
            1,
            &ContentRange {
                first: 100,
                last: 198,
                complete: 250
            }
        ));
    }

    #[test]
    fn only_a_single_strong_etag_combines() {
        // RFC 9111 §3.4.
        let etag = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::ETAG, v.parse().unwrap());
            }
            strong_etag(&h).is_some()
        };
        assert!(etag(&["\"v1\""]));
        assert!(!etag(&["W/\"v1\""]));
        assert!(!etag(&[]));
        assert!(!etag(&["\"a\"", "\"b\""]));
    }
}
