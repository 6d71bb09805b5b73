//! The disk tier (`[cache.disk]`): under memory, above the shared tier and
//! the origin, and kept across restarts.
//!
//! - **Writes** (`Cache::keep`, every fill and refresh): queued for two
//!   writer threads (a bounded queue: when it is full the write is dropped
//!   and counted; a client never waits for the disk). One file per variant
//!   (`format.rs`), written under a temporary name and renamed.
//! - **Responses too large for memory** are written as their body streams
//!   by (`spool.rs`), in blocks queued for the same writers.
//! - **Reads** (`read.rs`), on a memory miss: the index (`index.rs`, in
//!   memory) says whether the variant is on disk; the file (kept open for
//!   the most used ones) is read from the page cache, else on the blocking
//!   pool. Bodies up to 1 MiB are read whole and checked (and copied into
//!   memory from their second hit on); larger ones stream block by block,
//!   each block checked before it is sent.
//! - **Restart**: the files are the truth. At start a background walk
//!   reads every file's header and indexes it (a damaged or foreign record
//!   is removed). Until it is done, a URL not yet indexed is looked for
//!   directly: the file of a response without Vary is named by the URL's
//!   hash alone. Prefix and tag purges made during the walk are kept and
//!   applied to what it finds.
//! - **Faults** (disk full, read-only, I/O errors, damaged records) are
//!   counted in `viaduct_disk_errors_total{kind}`; the request goes on
//!   from memory or the origin, and a damaged record is never served.

mod format;
mod index;
mod read;
mod refresh;
mod spool;
pub mod stats;
mod stream;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::shared::Selector;
use super::store::Entry;
use crate::config::DiskConfig;
use index::{Index, Meta};

pub use read::Hit;
pub use spool::DiskFill;
pub use stats::DiskStats;
pub use stream::Streamed;

/// Bodies up to this size are read whole (and may be promoted to memory);
/// larger ones stream.
pub const WHOLE: u64 = format::BLOCK;
/// Writes waiting for the writers; past it they are dropped.
const QUEUE: usize = 1024;
const WRITERS: usize = 2;

struct Write {
    key: String,
    entry: Arc<Entry>,
    keep_until: SystemTime,
}

/// What the writer threads do.
enum Job {
    /// A whole response, from memory.
    Whole(Write),
    /// Block `index` of a response being spooled (`spool.rs`).
    Block {
        spool: Arc<spool::Spool>,
        index: u64,
        data: bytes::Bytes,
    },
    /// A spool whose body ended: committed once its blocks are written.
    Commit(Arc<spool::Spool>),
    /// A large record with a head refreshed by a 304 (`refresh.rs`).
    Refresh(Box<refresh::Refresh>),
}

pub struct DiskTier {
    /// `<path>/v1`: the format's directory.
    root: PathBuf,
    index: Index,
    max_object_size: u64,
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// Jobs queued or being written (for `flush`).
    pending: Arc<AtomicUsize>,
    /// Bytes of spooled blocks queued (`spool::BUDGET`).
    spooled: AtomicU64,
    pub stats: Arc<DiskStats>,
    /// While the start-up walk runs.
    walking: AtomicBool,
    /// Prefix and tag purges made while the walk runs: applied to what it
    /// finds (records written before this start).
    purged_while_walking: Mutex<Vec<Selector>>,
    /// Temporary file names.
    serial: AtomicU64,
}

impl DiskTier {
    /// Opens (creating) the directory, starts the writers and the walk
    /// that indexes what is already there. A directory that cannot be
    /// written is still read (the writes fail and are counted).
    pub fn start(config: &DiskConfig, max_variants: usize) -> Result<Arc<DiskTier>, String> {
        let root = config.path.join("v1");
        let stats = Arc::new(DiskStats::default());
        stats.capacity.set(config.capacity.bytes() as i64);
        let made = std::fs::create_dir_all(root.join("tmp")).and_then(|()| {
            for hh in 0..=255u8 {
                std::fs::create_dir_all(root.join(format!("{hh:02x}")))?;
            }
            Ok(())
        });
        if let Err(e) = made {
            if !root.is_dir() {
                return Err(format!("{}: {e}", root.display()));
            }
            tracing::warn!(path = %root.display(), error = %e, "disk tier directory is not writable: serving what is there, writing nothing");
            stats.error(kind_of(&e));
        }
        let evictions = stats.clone();
        let index = Index::new(
            root.clone(),
            config.capacity.bytes(),
            max_variants,
            move |n| {
                evictions.evictions.inc_by(n);
            },
        );
        let (jobs, queue) = std::sync::mpsc::sync_channel(QUEUE);
        let tier = Arc::new(DiskTier {
            root,
            index,
            max_object_size: config.max_object_size.bytes(),
            jobs,
            pending: Arc::new(AtomicUsize::new(0)),
            spooled: AtomicU64::new(0),
            stats,
            walking: AtomicBool::new(true),
            purged_while_walking: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
        });
        tier.stats.recovering.set(1);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..WRITERS {
            let (me, queue) = (Arc::downgrade(&tier), queue.clone());
            std::thread::Builder::new()
                .name(format!("viaduct-disk-{n}"))
                .spawn(move || writer(me, queue))
                .map_err(|e| format!("disk writer: {e}"))?;
        }
        let me = Arc::downgrade(&tier);
        std::thread::Builder::new()
            .name("viaduct-disk-walk".into())
            .spawn(move || walk::walk(me))
            .map_err(|e| format!("disk walk: {e}"))?;
        Ok(tier)
    }

    /// Queues `entry` for writing; it may be used until `keep_until`.
    pub fn offer(&self, key: &str, entry: Arc<Entry>, keep_until: SystemTime) {
        if entry.body.len() as u64 > self.max_object_size {
            self.stats.write("too-large");
            return;
        }
        if keep_until <= SystemTime::now() {
            self.stats.write("expired");
            return;
        }
        self.queue(Job::Whole(Write {
            key: key.to_string(),
            entry,
            keep_until,
        }));
    }

    /// Hands `job` to the writers; false (counted as dropped) when the
    /// queue is full.
    fn queue(&self, job: Job) -> bool {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.jobs.try_send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.stats.write("dropped");
            return false;
        }
        true
    }

    /// The tier's `max_object_size`.
    pub fn max_object_size(&self) -> u64 {
        self.max_object_size
    }

    /// Waits (at most `limit`) until the queued writes are on disk: for a
    /// graceful stop.
    pub async fn flush(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        while self.pending.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Removes every variant of `key`; true when one was indexed. The
    /// files of a URL not indexed yet are found by name.
    pub fn remove(&self, key: &str) -> bool {
        let mut removed = self.index.remove(key);
        if self.walking.load(Ordering::Acquire) {
            let prefix = format!("{:016x}-", format::hash(key.as_bytes()));
            let dir = index::path_of(&self.root, (format::hash(key.as_bytes()), 0));
            if let Some(dir) = dir.parent() {
                removed |= remove_named(dir, &prefix);
            }
        }
        removed
    }

    /// Applies a purge (URL, prefix or tags); how many URLs went.
    pub fn purge(&self, selector: &Selector) -> usize {
        if self.walking.load(Ordering::Acquire) && !matches!(selector, Selector::Url { .. }) {
            self.purged_while_walking
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(selector.clone());
        }
        match selector {
            Selector::Url { keys } => keys.iter().filter(|k| self.remove(k)).count(),
            Selector::Prefix { namespaces, prefix } => {
                let namespaces: Vec<&str> = namespaces.iter().map(String::as_str).collect();
                self.index.remove_prefix(&namespaces, prefix)
            }
            Selector::Tags { namespaces, tags } => {
                let mut gone = 0;
                for tag in tags {
                    for key in self.index.tagged(tag) {
                        let (namespace, _) = super::key::split(&key);
                        if namespaces.iter().any(|n| n == namespace) && self.index.remove(&key) {
                            gone += 1;
                        }
                    }
                }
                gone
            }
        }
    }

    /// Whether a purge made during the walk names this record.
    fn purged_by_walk_orders(&self, key: &str, entry: &Entry) -> bool {
        let orders = self
            .purged_while_walking
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (namespace, _) = super::key::split(key);
        orders.iter().any(|order| match order {
            Selector::Url { keys } => keys.iter().any(|k| k == key),
            Selector::Prefix { namespaces, prefix } => {
                let namespaces: Vec<&str> = namespaces.iter().map(String::as_str).collect();
                super::key::under_prefix(key, &namespaces, prefix)
            }
            Selector::Tags { namespaces, tags } => {
                namespaces.iter().any(|n| n == namespace)
                    && entry
                        .tags()
                        .iter()
                        .any(|t| tags.iter().any(|x| x.as_str() == &**t))
            }
        })
    }

    /// Refreshes the size gauges (for a scrape or `/stats`).
    pub fn sizes(&self) -> (u64, u64) {
        let (entries, bytes) = self.index.size();
        self.stats.entries.set(entries as i64);
        self.stats.bytes.set(bytes as i64);
        (entries, bytes)
    }

    pub fn is_walking(&self) -> bool {
        self.walking.load(Ordering::Acquire)
    }

    fn write_one(&self, job: &Write) {
        let name = format::name_of(&job.key, &job.entry);
        let path = index::path_of(&self.root, name);
        let tmp = self.temporary_name();
        match format::write(&tmp, &path, &job.key, &job.entry, job.keep_until) {
            Ok(size) => {
                self.indexed(&job.key, &job.entry, name, size, job.keep_until);
                self.stats.write("stored");
            }
            Err(e) => self.write_failed(&e),
        }
    }

    /// A file name under `tmp/` no other write uses: this process's id
    /// (the start-up walk leaves the files of a live process alone) and a
    /// serial number.
    fn temporary_name(&self) -> PathBuf {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}-{serial}.tmp", std::process::id()))
    }

    /// Indexes a record just renamed into place as `name`.
    fn indexed(
        &self,
        key: &str,
        entry: &Entry,
        name: (u64, u64),
        size: u64,
        keep_until: SystemTime,
    ) {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(index::path_of(&self.root, name)).map_or(0, |m| m.ino());
        let meta = Arc::new(Meta {
            name,
            secondary: entry.secondary.clone(),
            size,
            keep_until,
            tags: entry.tags().into(),
            inode,
            hits: Default::default(),
        });
        self.index.insert(&self.root, key, meta, false);
    }

    fn write_failed(&self, e: &std::io::Error) {
        self.stats.error(kind_of(e));
        self.stats.write("failed");
        tracing::debug!(error = %e, "disk tier write failed");
    }
}

/// The error kind an I/O error is counted under.
fn kind_of(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "full",
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => "readonly",
        _ => "io",
    }
}

/// Removes the files in `dir` whose names start with `prefix`; whether
/// one went.
fn remove_named(dir: &Path, prefix: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut removed = false;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            removed |= std::fs::remove_file(entry.path()).is_ok();
        }
    }
    removed
}

/// A writer thread: takes queued writes until the tier is dropped.
fn writer(tier: std::sync::Weak<DiskTier>, queue: Arc<Mutex<std::sync::mpsc::Receiver<Job>>>) {
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.recv_timeout(Duration::from_millis(500))
        };
        let Some(tier) = tier.upgrade() else { return };
        match job {
            Ok(job) => {
                match job {
                    Job::Whole(write) => tier.write_one(&write),
                    Job::Block { spool, index, data } => tier.write_block(&spool, index, &data),
                    Job::Commit(spool) => tier.commit(&spool),
                    Job::Refresh(refresh) => tier.refresh_one(&refresh),
                }
                tier.pending.fetch_sub(1, Ordering::AcqRel);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}
