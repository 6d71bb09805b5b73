//! The upstream pool's counters, owned here (as `cache::CacheStats` lives in
//! the cache) and registered by the metrics module.

use crate::sharded::Counter;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Upstream counters, shared with the pool and its connector.
#[derive(Clone, Default)]
pub struct UpstreamMetrics {
    pub requests: Counter,
    pub connections: Counter,
    pub errors: Family<KindLabels, Counter>,
}
