//! What is on disk, in memory: URL key → the variants stored for it, each
//! with its file, secondary key, size, tags and how long it may be used.
//! moka bounds the bytes (`[cache.disk] capacity`) and picks what goes;
//! whatever leaves the index for any reason but a replacement has its file
//! removed. Tags are indexed for purge by tag, as in memory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderName;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;

use crate::cache::key;
use crate::cache::tags::TagIndex;

/// One variant on disk.
pub struct Meta {
    /// The file name's two hashes (URL key, secondary key).
    pub name: (u64, u64),
    pub secondary: Box<[(HeaderName, Option<String>)]>,
    /// Bytes of the file.
    pub size: u64,
    /// After this it can neither be served nor revalidated: removed.
    pub keep_until: SystemTime,
    pub tags: Box<[Arc<str>]>,
    /// The file's inode: a file replaced under the same name since is not
    /// removed with this entry.
    pub inode: u64,
    /// Disk hits, for promotion to memory.
    pub hits: AtomicU32,
}

pub type Variants = Arc<[Arc<Meta>]>;

pub struct Index {
    map: moka::sync::Cache<String, Variants>,
    tags: Arc<TagIndex>,
    max_variants: usize,
    /// Files kept open for the most used variants (nginx's
    /// `open_file_cache`): a warm small hit is then one read, not an open,
    /// a read and a close. Keyed by name, with the inode they were opened
    /// for: a file replaced since is opened again.
    files: OpenFiles,
}

type OpenFiles = moka::sync::Cache<(u64, u64), (u64, Arc<File>)>;

/// How many files the index keeps open: an eighth of the descriptors the
/// process may have (connections need the rest), at most 4,096.
fn open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the call to fill.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let soft = if known { limit.rlim_cur } else { 1024 };
    (soft / 8).clamp(16, 4096)
}

/// The file of a variant under `root`.
pub fn path_of(root: &Path, name: (u64, u64)) -> PathBuf {
    let (url, secondary) = name;
    root.join(format!("{:02x}", url >> 56))
        .join(format!("{url:016x}-{secondary:016x}"))
}

/// Removes `meta`'s file if it is still the one `meta` describes (and
/// closes it).
fn remove_file(root: &Path, files: &OpenFiles, meta: &Meta) {
    use std::os::unix::fs::MetadataExt;
    files.invalidate(&meta.name);
    let path = path_of(root, meta.name);
    if std::fs::metadata(&path).is_ok_and(|m| m.ino() == meta.inode) {
        let _ = std::fs::remove_file(&path);
    }
}

impl Index {
    pub fn new(
        root: PathBuf,
        capacity: u64,
        max_variants: usize,
        evicted: impl Fn(u64) + Send + Sync + 'static,
    ) -> Index {
        let tags = Arc::new(TagIndex::default());
        let released = tags.clone();
        let files: OpenFiles = moka::sync::Cache::new(open_files_limit());
        let closed = files.clone();
        let map = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|key: &String, variants: &Variants| {
                let bytes = key.len() as u64 + variants.iter().map(|m| m.size).sum::<u64>();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |key: Arc<String>, variants: Variants, cause| {
                for meta in variants.iter() {
                    released.remove(&key, meta.tags.iter());
                }
                // A replacement's files are settled by `insert`.
                if cause == RemovalCause::Replaced {
                    return;
                }
                if cause.was_evicted() {
                    evicted(variants.len() as u64);
                }
                for meta in variants.iter() {
                    remove_file(&root, &closed, meta);
                }
            })
            .build();
        Index {
            map,
            tags,
            max_variants: max_variants.max(1),
            files,
        }
    }

    /// `meta`'s file, if it is kept open.
    pub fn open_file(&self, meta: &Meta) -> Option<Arc<File>> {
        self.files
            .get(&meta.name)
            .filter(|(inode, _)| *inode == meta.inode)
            .map(|(_, file)| file)
    }

    /// Keeps `file`, just opened for `meta`, open.
    pub fn keep_open(&self, meta: &Meta, file: Arc<File>) {
        self.files.insert(meta.name, (meta.inode, file));
    }

    /// The variant of `key` for `request`'s fields, if one is stored.
    pub fn find(&self, key: &str, request: &http::HeaderMap) -> Option<Arc<Meta>> {
        let all = self.map.get(key)?;
        all.iter()
            .find(|m| key::matches(&m.secondary, request))
            .cloned()
    }

    /// Whether the file `name` of `key` is indexed.
    pub fn holds(&self, key: &str, name: (u64, u64)) -> bool {
        self.map
            .get(key)
            .is_some_and(|all| all.iter().any(|m| m.name == name))
    }

    /// Adds `meta` for `key`, replacing the variant with the same
    /// secondary key (its file was just replaced by the rename) and
    /// dropping the oldest beyond `max_variants` (their files go).
    /// `only_new`: leave an already indexed file as it is (the start-up
    /// walk, which must not undo a newer write).
    pub fn insert(&self, root: &Path, key: &str, meta: Arc<Meta>, only_new: bool) {
        let mut dropped: Vec<Arc<Meta>> = Vec::new();
        self.map.entry_by_ref(key).and_compute_with(|current| {
            let mut list = vec![meta.clone()];
            if let Some(current) = current {
                if only_new && current.value().iter().any(|m| m.name == meta.name) {
                    return Op::Nop;
                }
                for old in current.value().iter() {
                    if old.name == meta.name {
                        continue;
                    }
                    if list.len() < self.max_variants {
                        list.push(old.clone());
                    } else {
                        dropped.push(old.clone());
                    }
                }
            }
            for m in &list {
                self.tags.add(key, m.tags.iter());
            }
            Op::Put(Arc::from(list))
        });
        // The file under this name was replaced: the open one is stale.
        self.files.invalidate(&meta.name);
        for meta in dropped {
            remove_file(root, &self.files, &meta);
        }
    }

    /// Removes one variant (its file is gone or damaged).
    pub fn forget(&self, root: &Path, key: &str, name: (u64, u64)) {
        self.map.entry_by_ref(key).and_compute_with(|current| {
            let Some(current) = current else {
                return Op::Nop;
            };
            let (gone, kept): (Vec<_>, Vec<_>) = current
                .value()
                .iter()
                .cloned()
                .partition(|m| m.name == name);
            for meta in &gone {
                remove_file(root, &self.files, meta);
            }
            if kept.is_empty() {
                Op::Remove
            } else {
                for m in &kept {
                    self.tags.add(key, m.tags.iter());
                }
                Op::Put(Arc::from(kept))
            }
        });
    }

    /// Removes every variant of `key` with its files; true when one was
    /// indexed.
    pub fn remove(&self, key: &str) -> bool {
        self.map.remove(key).is_some()
    }

    /// Removes every URL in one of `namespaces` starting with `prefix`.
    pub fn remove_prefix(&self, namespaces: &[&str], prefix: &str) -> usize {
        let keys: Vec<Arc<String>> = self
            .map
            .iter()
            .filter(|(key, _)| key::under_prefix(key, namespaces, prefix))
            .map(|(key, _)| key)
            .collect();
        keys.iter().filter(|key| self.remove(key)).count()
    }

    /// The keys whose variants carry `tag`.
    pub fn tagged(&self, tag: &str) -> Vec<Arc<str>> {
        self.tags.keys(tag)
    }

    /// (URLs, bytes) indexed, after pending evictions ran.
    pub fn size(&self) -> (u64, u64) {
        self.map.run_pending_tasks();
        (self.map.entry_count(), self.map.weighted_size())
    }
}
