//! Counters and histograms for the per-request path that each worker thread
//! updates in its own cache line, summed only when `/metrics` or `/stats`
//! reads them. A counter shared by every core moves its cache line between
//! cores on every request, and prometheus-client's `Histogram` takes a mutex
//! per observation; with these, a request touches only lines its own thread
//! owns. They encode exactly as prometheus-client's counter and histogram.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Lines per metric. Threads beyond this share lines (still correct: every
/// update is an atomic add), so it only needs to cover the worker threads.
const SHARDS: usize = 16;

/// This thread's line, assigned round robin on first use.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// One cache line (two, against the adjacent-line prefetcher).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line(AtomicU64);

/// A monotonic counter, one line per worker.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    lines: Arc<[Line; SHARDS]>,
}

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.lines[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum over every worker.
    pub fn get(&self) -> u64 {
        self.lines.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Buckets of one histogram on one worker: a count per bucket (the last one
/// is +Inf), the observation count and the sum in nanoseconds.
#[derive(Debug)]
#[repr(align(128))]
struct HistogramLine {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A histogram of durations in seconds, one set of buckets per worker.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: Arc<[f64]>,
    lines: Arc<[HistogramLine]>,
}

impl Histogram {
    /// `bounds` are the buckets' upper bounds in seconds, ascending; a +Inf
    /// bucket is added.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Histogram {
        let bounds: Arc<[f64]> = bounds.into_iter().collect();
        let lines = (0..SHARDS)
            .map(|_| HistogramLine {
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                count: AtomicU64::new(0),
                sum_nanos: AtomicU64::new(0),
            })
            .collect();
        Histogram { bounds, lines }
    }

    pub fn observe(&self, d: std::time::Duration) {
        let seconds = d.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len());
        let line = &self.lines[shard()];
        line.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        line.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        line.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts with their upper bounds).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .map(|b| (b, 0))
            .collect();
        let (mut count, mut nanos) = (0u64, 0u64);
        for line in self.lines.iter() {
            for (slot, n) in buckets.iter_mut().zip(line.buckets.iter()) {
                slot.1 += n.load(Ordering::Relaxed);
            }
            count += line.count.load(Ordering::Relaxed);
            nanos = nanos.wrapping_add(line.sum_nanos.load(Ordering::Relaxed));
        }
        (nanos as f64 / 1e9, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counters_sum_over_threads() {
        let c = Counter::default();
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.inc();
                    }
                    c.inc_by(5);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), (SHARDS as u64 + 3) * 1005);
    }

    #[test]
    fn histograms_encode_like_prometheus_client() {
        let ours = Histogram::new([0.001, 0.01]);
        let theirs = prometheus_client::metrics::histogram::Histogram::new([0.001, 0.01]);
        for ms in [0, 5, 5, 50] {
            let d = Duration::from_millis(ms);
            ours.observe(d);
            theirs.observe(d.as_secs_f64());
        }
        let mut a = prometheus_client::registry::Registry::default();
        a.register("d", "help", ours);
        let mut b = prometheus_client::registry::Registry::default();
        b.register("d", "help", theirs);
        let (mut x, mut y) = (String::new(), String::new());
        prometheus_client::encoding::text::encode(&mut x, &a).unwrap();
        prometheus_client::encoding::text::encode(&mut y, &b).unwrap();
        // The sums differ in the last float digits (ours adds nanoseconds).
        let without_sum = |t: &str| -> String {
            t.lines()
                .filter(|l| !l.starts_with("d_sum"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(without_sum(&x), without_sum(&y));
        assert!(x.contains("d_sum 0.06\n"), "{x}");
        assert!(x.contains("d_bucket{le=\"0.01\"} 3"), "{x}");
    }
}
