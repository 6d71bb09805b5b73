//! The shared tier (`[cache.shared]`): a second cache level on Redis that
//! every node reads and fills. A memory miss looks here before the origin
//! (`before_origin`); a response stored in memory is also offered here,
//! written by a background task so the client never waits for it (`offer`).
//! A cold key is fetched by one node at a time across the cluster: the
//! first takes a short lock (SET NX PX), the others wait for its record.
//! Purges reach Redis and, through a channel, every node's memory
//! (`orders.rs`). Redis down, slow or full costs a request at most
//! `timeout`, is counted, and is reconnected to in the background.

mod keys;
mod orders;
mod redis;
mod stats;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use tokio::sync::mpsc;

use super::plan::freshness_left;
use super::store::Entry;
use super::{key, record, Cache};
use crate::config::SharedConfig;

pub use orders::Selector;
pub use redis::Failure;
pub use stats::{KindLabel, OutcomeLabel, SharedStats};

/// Writes waiting for Redis; past this, new ones are dropped (and counted)
/// rather than holding memory or delaying anything. (A queued write holds
/// an `Arc` of an entry that memory holds anyway.)
const WRITE_QUEUE: usize = 4096;
/// Writes in flight at once: fred pipelines them on its connections, so a
/// burst of fills is written at Redis's pace, not one round trip at a time.
const WRITERS: usize = 64;
/// How often a node waiting for another node's fetch looks again.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(50);

pub struct SharedTier {
    redis: Arc<redis::Redis>,
    max_object_size: u64,
    /// The Redis URLs, passwords hidden (for `/stats`).
    pub servers: Vec<String>,
    /// This node's name in purge orders and lock tokens.
    node: String,
    writes: mpsc::Sender<Job>,
    pub stats: Arc<SharedStats>,
}

/// Work for the background writers.
enum Job {
    Write {
        key: String,
        entry: Arc<Entry>,
        ttl: u64,
        token: Option<String>,
    },
    Unlock {
        key: String,
        token: String,
    },
}

/// What a memory miss should do after looking here.
pub enum Before {
    /// A fresh stored response: serve it (it is in memory now too).
    Hit(Arc<Entry>, i64),
    /// Go to the origin; holding the cluster-wide fetch lock when `Some`.
    Fetch(Option<FetchLock>),
}

/// The cluster-wide fetch lock of one key, freed when the response is
/// written (`Cache::keep`), or when this is dropped without a write.
pub struct FetchLock {
    tier: Arc<SharedTier>,
    key: String,
    token: Option<String>,
}

impl Drop for FetchLock {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            let key = std::mem::take(&mut self.key);
            self.tier.enqueue(Job::Unlock { key, token });
        }
    }
}

impl SharedTier {
    /// Connects (in the background) and starts the writers and the purge
    /// listener. `cache` is the cache this tier belongs to.
    pub fn start(
        config: &SharedConfig,
        max_variants: usize,
        cache: Weak<Cache>,
    ) -> Result<Arc<SharedTier>, String> {
        let (redis, feed) = redis::Redis::connect(&config.redis.0, config.timeout.0)?;
        let redis = Arc::new(redis);
        let stats = Arc::new(SharedStats::default());
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let tier = Arc::new(SharedTier {
            redis: redis.clone(),
            max_object_size: config.max_object_size.bytes(),
            servers: config
                .redis
                .0
                .iter()
                .map(|u| crate::config::redacted_redis_url(u))
                .collect(),
            node: node_name(),
            writes,
            stats: stats.clone(),
        });
        tokio::spawn(write_all(redis.clone(), stats.clone(), queue, max_variants));
        tokio::spawn(orders::listen(redis, feed, stats, tier.node.clone(), cache));
        Ok(tier)
    }

    pub fn is_connected(&self) -> bool {
        self.redis.is_connected()
    }

    /// The stored response for `key` that `request` selects, whatever its
    /// freshness; `Err` when Redis could not say in time (counted).
    async fn lookup(
        &self,
        key: &str,
        request: &HeaderMap,
        deadline: Instant,
    ) -> Result<Option<Entry>, Failure> {
        let started = Instant::now();
        let found = self.redis.lookup(key, request, deadline).await;
        let bytes = match found {
            Err(failure) => {
                self.stats.error(failure);
                return Err(failure);
            }
            Ok(bytes) => bytes,
        };
        self.stats
            .lookup_seconds
            .observe(started.elapsed().as_secs_f64());
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        match record::decode(bytes) {
            // A hash collision of two selections must not serve the other
            // one's variant (§4.1).
            Ok(entry) if key::matches(&entry.secondary, request) => Ok(Some(entry)),
            Ok(_) => Ok(None),
            Err(bad) => {
                tracing::warn!(%key, %bad, "shared tier record refused");
                self.stats.error_kind("damaged");
                Ok(None)
            }
        }
    }

    /// Before a memory miss goes to the origin: a fresh record here is
    /// served; otherwise this node takes the key's fetch lock, or, when
    /// another node holds it, waits for that node's record up to
    /// `patience` (then fetches anyway, as a local flight's follower does).
    /// Looking and locking together take at most `timeout`: a slow Redis
    /// is skipped, not waited for.
    pub async fn before_origin(
        self: &Arc<Self>,
        cache: &Cache,
        key: &str,
        request: &HeaderMap,
        patience: Duration,
    ) -> Before {
        let deadline = Instant::now() + self.redis.timeout();
        match self.fresh(cache, key, request, deadline).await {
            Ok(Some(hit)) => {
                self.stats.hits.inc();
                return hit;
            }
            Ok(None) => {
                self.stats.misses.inc();
            }
            Err(_) => return Before::Fetch(None),
        }
        let token = format!("{}-{:x}", self.node, lock_serial());
        match self.redis.lock(key, &token, patience, deadline).await {
            Ok(true) => {
                let lock = FetchLock {
                    tier: self.clone(),
                    key: key.to_string(),
                    token: Some(token),
                };
                // Another node may have stored it and let go of the lock
                // between the lookup and the lock: look once more (dropping
                // the lock frees it).
                let deadline = Instant::now() + self.redis.timeout();
                if let Ok(Some(hit)) = self.fresh(cache, key, request, deadline).await {
                    self.stats.collapsed.inc();
                    return hit;
                }
                return Before::Fetch(Some(lock));
            }
            Ok(false) => {}
            Err(failure) => {
                self.stats.error(failure);
                return Before::Fetch(None);
            }
        }
        // Another node is fetching: its record appears when its response
        // is stored, in the same script that frees the lock; the lock also
        // goes (without a record) when the response cannot be stored. So
        // the lock is looked at before the record: gone, then the record
        // is there now or never comes.
        let until = Instant::now() + patience;
        let mut pause = POLL_FIRST;
        while Instant::now() + pause < until {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
            let gone = match self.redis.locked(key).await {
                Ok(held) => !held,
                Err(failure) => {
                    self.stats.error(failure);
                    break;
                }
            };
            let deadline = Instant::now() + self.redis.timeout();
            match self.fresh(cache, key, request, deadline).await {
                Ok(Some(hit)) => {
                    self.stats.collapsed.inc();
                    return hit;
                }
                Ok(None) if !gone => {}
                Ok(None) | Err(_) => break,
            }
        }
        Before::Fetch(None)
    }

    /// A fresh record for the request, put in memory.
    async fn fresh(
        &self,
        cache: &Cache,
        key: &str,
        request: &HeaderMap,
        deadline: Instant,
    ) -> Result<Option<Before>, Failure> {
        let Some(entry) = self.lookup(key, request, deadline).await? else {
            return Ok(None);
        };
        let ttl = freshness_left(&entry.head, &cache.heuristics(), SystemTime::now());
        if ttl <= 0 {
            return Ok(None);
        }
        let entry = Arc::new(entry);
        cache.store.insert(key, entry.clone());
        Ok(Some(Before::Hit(entry, ttl)))
    }

    /// Queues `entry` for writing under `key` for `ttl` seconds, freeing
    /// `lock` once written. Never waits: a full queue drops the write.
    pub fn offer(&self, key: &str, entry: Arc<Entry>, ttl: u64, lock: Option<FetchLock>) {
        let outcome = if entry.body.len() as u64 > self.max_object_size {
            "too-large"
        } else if ttl == 0 {
            "expired"
        } else {
            let token = lock.and_then(|mut l| l.token.take());
            return self.enqueue(Job::Write {
                key: key.to_string(),
                entry,
                ttl,
                token,
            });
        };
        // Not written: the lock (if held) is freed when `lock` drops here,
        // so the nodes waiting for this key fetch at once.
        self.stats.write(outcome);
    }

    fn enqueue(&self, job: Job) {
        let Err(full) = self.writes.try_send(job) else {
            return;
        };
        self.stats.write("dropped");
        // A dropped write must not keep its key locked for the others.
        let (key, token) = match full.into_inner() {
            Job::Write {
                key,
                token: Some(token),
                ..
            } => (key, token),
            Job::Unlock { key, token } => (key, token),
            Job::Write { .. } => return,
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let redis = self.redis.clone();
            runtime.spawn(async move { redis.unlock(&key, &token).await });
        }
    }

    /// Applies a purge to Redis and tells every other node; how many URLs
    /// it removed (or softened) in Redis.
    pub async fn purge(&self, selector: &Selector, soft: bool) -> Result<usize, Failure> {
        orders::purge(&self.redis, &self.node, selector, soft).await
    }
}

/// Runs the queued writes, `WRITERS` at a time, for as long as the tier
/// lives.
async fn write_all(
    redis: Arc<redis::Redis>,
    stats: Arc<SharedStats>,
    queue: mpsc::Receiver<Job>,
    max_variants: usize,
) {
    use futures_util::StreamExt;
    let jobs =
        futures_util::stream::unfold(
            queue,
            |mut q| async move { q.recv().await.map(|job| (job, q)) },
        );
    jobs.for_each_concurrent(WRITERS, |job| {
        let (redis, stats) = (redis.clone(), stats.clone());
        async move { run(&redis, &stats, job, max_variants).await }
    })
    .await;
}

async fn run(redis: &redis::Redis, stats: &SharedStats, job: Job, max_variants: usize) {
    match job {
        Job::Write {
            key,
            entry,
            ttl,
            token,
        } => {
            let record = record::encode(&entry);
            let write = redis::Write {
                key: &key,
                field: &keys::variant_field_of(&entry.secondary),
                record,
                vary: &keys::vary_value(&entry.secondary),
                ttl_secs: ttl,
                max_fields: max_variants,
                tags: entry.tags(),
                token: token.as_deref().unwrap_or(""),
            };
            match redis.write(write).await {
                Ok(()) => stats.write("stored"),
                Err(failure) => {
                    stats.write("failed");
                    stats.error(failure);
                }
            }
        }
        Job::Unlock { key, token } => {
            if let Err(failure) = redis.unlock(&key, &token).await {
                stats.error(failure);
            }
        }
    }
}

/// A name for this node that no other node shares (pid, time, and the
/// process's hash seed).
fn node_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

fn lock_serial() -> u64 {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
