//! Reads, on a memory miss: the index names the variant's file, kept open
//! for the most used ones; a small record is read with one system call and
//! checked whole, a large one yields its head and a stream of checked
//! blocks. From the page cache on the request's thread when it can
//! (`Wait::No`), else on the blocking pool.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;

use super::format::{self, Fail, Wait};
use super::index::{self, Meta};
use super::{kind_of, DiskTier, Streamed, WHOLE};
use crate::cache::record::Bad;
use crate::cache::store::Entry;

/// A read from the page cache only found a byte on the disk.
struct Blocked;
/// Records up to this size (a body up to `WHOLE` and a head of up to 64
/// KiB) are read with one system call.
const SMALL: u64 = WHOLE + (64 << 10);
/// Disk hits after which a variant is copied into memory.
const PROMOTE_AFTER: u32 = 2;

/// What a read found.
pub enum Hit {
    /// The whole response, checked; `hot`: hit often enough to be copied
    /// into memory.
    Whole { entry: Arc<Entry>, hot: bool },
    /// The head, and the file to stream the body from.
    Stream(Arc<Streamed>),
}

impl DiskTier {
    /// The variant of `key` for `request` on disk, checked (the caller
    /// counts the hit or miss once it knows whether it could serve it):
    /// `None` when there is none, or it is damaged (removed and counted),
    /// or the disk failed (counted).
    pub async fn read(self: &Arc<Self>, key: &str, request: &HeaderMap) -> Option<Hit> {
        let name = match self.index.find(key, request) {
            Some(meta) => {
                if meta.keep_until <= SystemTime::now() {
                    self.index.forget(&self.root, key, meta.name);
                    return None;
                }
                Some(meta)
            }
            // Not indexed yet: a response without Vary is found by name.
            None if self.walking.load(Ordering::Acquire) => None,
            None => return None,
        };
        // From the page cache on this thread when it holds the record (no
        // hop to the blocking pool: a hit on a warm disk costs what a
        // memory hit does plus a few system calls), else on the pool.
        if let Ok(hit) = self.read_file(key, name.clone(), request, Wait::No) {
            return hit;
        }
        let me = self.clone();
        let key = key.to_string();
        let request = request.clone();
        let read =
            tokio::task::spawn_blocking(move || me.read_file(&key, name, &request, Wait::Yes));
        read.await.ok().and_then(Result::ok).flatten()
    }

    /// The record's checked contents; `Err` when `wait` is `No` and a byte
    /// is not in the page cache.
    fn read_file(
        self: &Arc<Self>,
        key: &str,
        meta: Option<Arc<Meta>>,
        request: &HeaderMap,
        wait: Wait,
    ) -> Result<Option<Hit>, Blocked> {
        let name = meta
            .as_ref()
            .map_or((format::hash(key.as_bytes()), 0), |m| m.name);
        let path = index::path_of(&self.root, name);
        let kept = meta.as_ref().and_then(|m| self.index.open_file(m));
        let file = match kept.map_or_else(|| std::fs::File::open(&path).map(Arc::new), Ok) {
            Ok(file) => file,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    self.stats.error(kind_of(&e));
                }
                if meta.is_some() {
                    self.index.forget(&self.root, key, name);
                }
                return Ok(None);
            }
        };
        // A small record in one read, body and all; a file replaced since
        // it was indexed (another length), or a large one, in two steps.
        let small = match meta.as_ref().filter(|m| m.size <= SMALL) {
            Some(m) => format::Header::read_small(&file, m.size, wait),
            None => Ok(None),
        };
        let read = match small {
            Ok(Some((header, body))) => Ok((header, Some(body))),
            Ok(None) => format::Header::read(&file, wait).map(|header| (header, None)),
            Err(fail) => Err(fail),
        };
        let (header, small_body) = match read {
            Ok(read) => read,
            Err(Fail::Blocked) => return Err(Blocked),
            Err(Fail::Bad(bad)) => {
                self.count_bad(bad);
                let _ = std::fs::remove_file(&path);
                self.index.forget(&self.root, key, name);
                return Ok(None);
            }
        };
        // Another URL with the same hash, or a variant for other fields.
        if header.key != key || !crate::cache::key::matches(&header.entry.secondary, request) {
            return Ok(None);
        }
        if header.keep_until <= SystemTime::now() {
            let _ = std::fs::remove_file(&path);
            self.index.forget(&self.root, key, name);
            return Ok(None);
        }
        let meta = match meta {
            Some(meta) => {
                self.index.keep_open(&meta, file.clone());
                meta
            }
            // Not kept open: the variant indexed meanwhile may be another
            // file than this one.
            None => {
                // Found by name during the walk: indexed now, unless a purge
                // made since the start names it.
                if self.purged_by_walk_orders(key, &header.entry) {
                    let _ = std::fs::remove_file(&path);
                    return Ok(None);
                }
                let Some(meta) = self.meta_of(&header, name, &file) else {
                    return Ok(None);
                };
                self.index.insert(&self.root, key, meta.clone(), true);
                // Hits count on what the index holds (the walk, or an
                // earlier read, may have put it there first).
                self.index.find(key, request).unwrap_or(meta)
            }
        };
        if header.body_len > WHOLE {
            return Ok(Some(Hit::Stream(Arc::new(Streamed {
                header,
                file,
                key: key.to_string(),
                tier: self.clone(),
            }))));
        }
        let sliced = small_body.is_some();
        let body = match small_body {
            Some(body) => body,
            None => match header.body(&file, wait) {
                Ok(body) => body,
                Err(Fail::Blocked) => return Err(Blocked),
                Err(Fail::Bad(bad)) => {
                    self.damaged(key, &header, bad);
                    return Ok(None);
                }
            },
        };
        let hot = promote(&meta);
        // A slice of the whole file's bytes is copied when it is to live in
        // memory, so the header's bytes do not live with it.
        let body = if sliced && hot {
            bytes::Bytes::copy_from_slice(&body)
        } else {
            body
        };
        let entry = Arc::new(header.entry.with_body(body));
        Ok(Some(Hit::Whole { entry, hot }))
    }

    pub(super) fn meta_of(
        &self,
        header: &format::Header,
        name: (u64, u64),
        file: &std::fs::File,
    ) -> Option<Arc<Meta>> {
        use std::os::unix::fs::MetadataExt;
        let fs = file.metadata().ok()?;
        Some(Arc::new(Meta {
            name,
            secondary: header.entry.secondary.clone(),
            size: fs.len(),
            keep_until: header.keep_until,
            tags: header.entry.tags().into(),
            inode: fs.ino(),
            hits: Default::default(),
        }))
    }

    /// A record that failed a check while it was read: removed, counted.
    pub(super) fn damaged(&self, key: &str, header: &format::Header, bad: Bad) {
        self.count_bad(bad);
        let name = format::name_of(key, &header.entry);
        self.index.forget(&self.root, key, name);
        tracing::warn!(key, error = %bad, "damaged record removed from the disk tier");
    }

    pub(super) fn count_bad(&self, bad: Bad) {
        self.stats.error(match bad {
            Bad::Version => "version",
            Bad::Checksum | Bad::Malformed => "damaged",
        });
    }
}

/// Counts a disk hit on `meta`; true when it is hot enough to copy into
/// memory. The count starts again then: a copy that memory evicted comes
/// back after as many hits again, not on every hit (with a working set
/// much larger than memory, that churn cost more than it saved).
fn promote(meta: &Meta) -> bool {
    let hot = meta.hits.fetch_add(1, Ordering::Relaxed) + 1 >= PROMOTE_AFTER;
    if hot {
        meta.hits.store(0, Ordering::Relaxed);
    }
    hot
}
