//! The HTTP cache (RFC 9111): a typed Cache-Control parser, a pure policy,
//! keys with Vary, a byte-weighed store, the fill that tees a response body
//! into the store, request collapsing, and the stale-serving extensions
//! (RFC 5861).

pub mod control;
pub mod disk;
pub mod fill;
pub mod flight;
pub mod head;
pub mod key;
pub mod plan;
pub mod policy;
mod purge;
pub mod range;
pub mod record;
pub mod rules;
pub mod shared;
pub mod slice_flights;
pub mod slices;
pub mod status;
pub mod store;
pub mod tags;
pub mod targeted;
mod tunables;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::config::CacheConfig;
use control::RequestControl;
use policy::{Heuristics, StoredResponse};
use store::Store;
use tunables::Tunables;

pub use status::{CacheStatus, Fwd, Stored, Tier};

/// How long the disk tier keeps a stale response it can revalidate, at
/// most (seconds; capacity usually pushes it out first).
const VALIDATABLE_ON_DISK: u64 = 365 * 24 * 3600;

/// The cache as the pipeline uses it: the store and the settings that are not
/// part of the pure policy.
pub struct Cache {
    pub store: Store,
    /// The settings a reload may change (`Cache::retune`).
    pub tunables: Tunables,
    pub stats: CacheStats,
    /// URLs whose ranges recently could not be sliced (`slices.rs`).
    unsliceable: moka::sync::Cache<String, ()>,
    /// Set when the first manifest is stored: until then a miss does not
    /// look for one (most caches never slice anything).
    sliced_any: std::sync::atomic::AtomicBool,
    /// Slices being fetched, so a crowd fetches each once.
    pub slice_flights: std::sync::Arc<slice_flights::SliceFlights>,
    /// `[cache.shared]`: the tier below memory, on Redis.
    pub shared: Option<std::sync::Arc<shared::SharedTier>>,
    /// `[cache.disk]`: the tier below memory on this node's disk.
    pub disk: Option<std::sync::Arc<disk::DiskTier>>,
}

/// Cache counters; `/metrics` exports these very counters.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Requests answered from another request's fetch.
    pub collapsed: Counter,
    /// Stale responses served (stale-while-revalidate, stale-if-error, max-stale).
    pub stale_served: Counter,
    pub background_revalidations: Counter,
    /// URLs (with all their variants) removed by purge requests.
    pub purges: Counter,
    /// Entries evicted for space or expiry.
    pub evictions: Counter,
    /// URLs made stale by soft purges.
    pub soft_purges: Counter,
    /// Tags not kept: over 1 KiB (`too-long`), or past
    /// `max_tags_per_object` (`over-limit`).
    pub tags_dropped: Family<DropReason, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DropReason {
    pub reason: &'static str,
}

impl CacheStats {
    pub fn count(counter: &Counter) {
        counter.inc();
    }

    pub fn count_dropped_tags(&self, dropped: tags::Dropped) {
        for (reason, n) in [
            ("too-long", dropped.too_long),
            ("over-limit", dropped.over_limit),
        ] {
            if n > 0 {
                self.tags_dropped
                    .get_or_create(&DropReason { reason })
                    .inc_by(n as u64);
            }
        }
    }
}

impl Cache {
    pub fn new(config: &CacheConfig) -> Cache {
        let stats = CacheStats::default();
        Cache {
            store: Store::new(
                config.capacity.bytes(),
                config.max_variants,
                stats.evictions.clone(),
            ),
            tunables: Tunables::new(config),
            stats,
            unsliceable: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(slices::UNSLICEABLE_FOR)
                .build(),
            sliced_any: std::sync::atomic::AtomicBool::new(false),
            slice_flights: Default::default(),
            shared: None,
            disk: None,
        }
    }

    /// The cache with its tiers below memory, started (inside a Tokio
    /// runtime). A tier that cannot be set up is logged and left out: the
    /// cache still works from memory.
    pub fn start(config: &CacheConfig) -> std::sync::Arc<Cache> {
        std::sync::Arc::new_cyclic(|me| {
            let mut cache = Cache::new(config);
            if let Some(disk) = &config.disk {
                match disk::DiskTier::start(disk, config.max_variants) {
                    Ok(tier) => cache.disk = Some(tier),
                    Err(e) => tracing::error!(error = %e, "disk cache tier not started"),
                }
            }
            if let Some(shared) = &config.shared {
                match shared::SharedTier::start(shared, config.max_variants, me.clone()) {
                    Ok(tier) => cache.shared = Some(tier),
                    Err(e) => tracing::error!(error = %e, "shared cache tier not started"),
                }
            }
            cache
        })
    }

    /// Stores `entry` under `key` in memory and offers it to the disk and
    /// shared tiers (written in the background), freeing `lock` once
    /// written.
    pub fn keep(
        &self,
        key: &str,
        entry: std::sync::Arc<store::Entry>,
        lock: Option<shared::FetchLock>,
    ) {
        self.store.insert(key, entry.clone());
        if self.disk.is_none() && self.shared.is_none() {
            return;
        }
        if let Some(tier) = &self.disk {
            tier.offer(key, entry.clone(), self.disk_keep_until(&entry.head));
        }
        if let Some(tier) = &self.shared {
            tier.offer(key, entry.clone(), self.tier_ttl(&entry.head), lock);
        }
    }

    /// Until when the disk tier keeps a response: as long as it may be
    /// served (`tier_ttl`), or, when it carries a validator, until the
    /// capacity pushes it out (a year at most): stale, it still saves the
    /// origin a body (a 304 instead of a 200), as it does in memory.
    pub(crate) fn disk_keep_until(&self, head: &StoredResponse) -> std::time::SystemTime {
        let validators = head.headers.contains_key(http::header::ETAG)
            || head.headers.contains_key(http::header::LAST_MODIFIED);
        let ttl = if validators {
            self.tier_ttl(head).max(VALIDATABLE_ON_DISK)
        } else {
            self.tier_ttl(head)
        };
        std::time::SystemTime::now() + std::time::Duration::from_secs(ttl)
    }

    /// A large record on disk refreshed by a 304: `entry` (the new head)
    /// is written with the body of `from`, in the background.
    pub fn refresh_on_disk(
        &self,
        key: &str,
        entry: store::Entry,
        from: std::sync::Arc<disk::Streamed>,
    ) {
        if let Some(tier) = &self.disk {
            let until = self.disk_keep_until(&entry.head);
            tier.refresh(key, entry, until, from);
        }
    }

    /// How long the tiers below memory keep a response: its freshness left
    /// plus the longest window in which it may still be served stale or
    /// used to revalidate (RFC 5861, `stale_if_unreachable`).
    fn tier_ttl(&self, head: &StoredResponse) -> u64 {
        let now = std::time::SystemTime::now();
        let fresh = plan::freshness_left(head, &self.heuristics(), now).max(0) as u64;
        let stale = self
            .stale_while_revalidate(head)
            .max(self.stale_if_error(head, None))
            .max(self.stale_if_unreachable(head));
        fresh.saturating_add(stale)
    }

    /// Applies a reloaded `[cache]` table; entries stay. The capacity is
    /// not changed (moka cannot resize).
    pub fn retune(&self, config: &CacheConfig) {
        self.tunables.set(config);
        self.store.set_max_variants(config.max_variants);
    }

    pub fn enabled(&self) -> bool {
        self.tunables.enabled()
    }

    pub fn heuristics(&self) -> Heuristics {
        self.tunables.heuristics()
    }

    pub fn max_object_size(&self) -> u64 {
        self.tunables.max_object_size()
    }

    /// Seconds past expiry during which `head` may be served while it is
    /// revalidated in the background (RFC 5861 §3); 0 when forbidden.
    pub fn stale_while_revalidate(&self, head: &StoredResponse) -> u64 {
        if head.control.forbids_stale() {
            return 0;
        }
        head.control
            .stale_while_revalidate
            .map_or_else(|| self.tunables.default_swr(), u64::from)
    }

    /// Seconds past expiry during which `head` may be served when the origin
    /// cannot be reached at all (RFC 9111 §4.2.4): `stale_if_unreachable`,
    /// unless the response forbids serving it stale (must-revalidate,
    /// proxy-revalidate, s-maxage) or asks for validation every time
    /// (no-cache).
    pub fn stale_if_unreachable(&self, head: &StoredResponse) -> u64 {
        let control = &head.control;
        if control.forbids_stale() || control.no_cache != control::FieldsDirective::Absent {
            return 0;
        }
        self.tunables.stale_if_unreachable()
    }

    /// Seconds past expiry during which `head` may be served when the origin
    /// fails (RFC 5861 §4), from the response, the request, or the default.
    pub fn stale_if_error(&self, head: &StoredResponse, request: Option<&RequestControl>) -> u64 {
        if head.control.forbids_stale() {
            return 0;
        }
        let from_request = request.and_then(|r| r.stale_if_error);
        head.control
            .stale_if_error
            .map(u64::from)
            .into_iter()
            .chain(from_request)
            .max()
            .unwrap_or_else(|| self.tunables.default_sie())
    }
}
