//! The shared tier's metrics (`viaduct_shared_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::redis::Failure;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug)]
pub struct SharedStats {
    /// Lookups that found a usable record.
    pub hits: Counter,
    /// Lookups that found nothing usable (absent, stale, or damaged).
    pub misses: Counter,
    pub errors: Family<KindLabel, Counter>,
    /// Seconds per lookup that reached Redis.
    pub lookup_seconds: Histogram,
    /// Records offered for writing, by what became of them.
    pub writes: Family<OutcomeLabel, Counter>,
    /// Misses answered by another node's fetch, waited for through the lock.
    pub collapsed: Counter,
    /// Purge orders applied that other nodes published.
    pub purges_received: Counter,
    /// 1 while the command connections are up.
    pub up: Gauge,
}

impl Default for SharedStats {
    fn default() -> Self {
        SharedStats {
            hits: Counter::default(),
            misses: Counter::default(),
            errors: Family::default(),
            // 50 µs .. ~3.3 s
            lookup_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 17)),
            writes: Family::default(),
            collapsed: Counter::default(),
            purges_received: Counter::default(),
            up: Gauge::default(),
        }
    }
}

impl SharedStats {
    pub fn error(&self, failure: Failure) {
        self.error_kind(failure.as_str());
    }

    pub fn error_kind(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn write(&self, outcome: &'static str) {
        self.writes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn error_count(&self) -> u64 {
        ["timeout", "unavailable", "full", "error", "damaged"]
            .iter()
            .map(|kind| self.errors.get_or_create(&KindLabel { kind }).get())
            .sum()
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "shared_hits",
            "Memory misses answered by the shared tier (Redis)",
            self.hits.clone(),
        );
        r.register(
            "shared_misses",
            "Shared tier lookups that found nothing usable",
            self.misses.clone(),
        );
        r.register(
            "shared_errors",
            "Shared tier calls that failed, by kind (timeout, unavailable, full, error, damaged)",
            self.errors.clone(),
        );
        r.register(
            "shared_lookup_seconds",
            "Time per shared tier lookup",
            self.lookup_seconds.clone(),
        );
        r.register(
            "shared_writes",
            "Responses offered to the shared tier, by outcome (stored, too-large, expired, dropped, failed)",
            self.writes.clone(),
        );
        r.register(
            "shared_collapsed",
            "Misses answered by another node's fetch of the same URL",
            self.collapsed.clone(),
        );
        r.register(
            "shared_purges_received",
            "Purge orders from other nodes applied to this node's memory",
            self.purges_received.clone(),
        );
        r.register(
            "shared_up",
            "1 while this node is connected to the shared tier",
            self.up.clone(),
        );
    }
}
