//! The disk tier's metrics (`viaduct_disk_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cache::shared::{KindLabel, OutcomeLabel};

/// Error kinds, in the order `/stats` lists them.
pub const KINDS: [&str; 5] = ["full", "readonly", "io", "damaged", "version"];

#[derive(Debug, Default)]
pub struct DiskStats {
    /// Memory misses answered from disk.
    pub hits: Counter,
    /// Memory misses the disk could not answer.
    pub misses: Counter,
    /// Disk hits copied into memory (hot).
    pub promotions: Counter,
    pub errors: Family<KindLabel, Counter>,
    /// Responses offered for writing, by what became of them.
    pub writes: Family<OutcomeLabel, Counter>,
    /// Variants removed to stay under the capacity.
    pub evictions: Counter,
    pub entries: Gauge,
    pub bytes: Gauge,
    pub capacity: Gauge,
    /// 1 until the start-up walk has indexed every file.
    pub recovering: Gauge,
    /// Variants the start-up walk found and indexed.
    pub recovered: Counter,
}

impl DiskStats {
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn error_count(&self, kind: &'static str) -> u64 {
        self.errors.get_or_create(&KindLabel { kind }).get()
    }

    pub fn write(&self, outcome: &'static str) {
        self.writes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn write_count(&self, outcome: &'static str) -> u64 {
        self.writes.get_or_create(&OutcomeLabel { outcome }).get()
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "disk_hits",
            "Memory misses answered by the disk tier",
            self.hits.clone(),
        );
        r.register(
            "disk_misses",
            "Disk tier lookups that found nothing usable",
            self.misses.clone(),
        );
        r.register(
            "disk_promotions",
            "Disk hits copied into memory because they were hot",
            self.promotions.clone(),
        );
        r.register(
            "disk_errors",
            "Disk tier faults, by kind (full, readonly, io, damaged, version)",
            self.errors.clone(),
        );
        r.register(
            "disk_writes",
            "Responses offered to the disk tier, by outcome (stored, too-large, expired, dropped, failed)",
            self.writes.clone(),
        );
        r.register(
            "disk_evictions",
            "Variants removed from disk to stay under the capacity",
            self.evictions.clone(),
        );
        r.register("disk_entries", "URLs on disk", self.entries.clone());
        r.register("disk_bytes", "Bytes of records on disk", self.bytes.clone());
        r.register(
            "disk_capacity_bytes",
            "[cache.disk] capacity",
            self.capacity.clone(),
        );
        r.register(
            "disk_recovering",
            "1 while the start-up walk indexes the records found on disk",
            self.recovering.clone(),
        );
        r.register(
            "disk_recovered",
            "Records found on disk at start and indexed",
            self.recovered.clone(),
        );
    }
}
