//! Metrics an operator reads: Prometheus text at `/metrics` (prometheus-client
//! encodes it) and the same numbers as JSON at `/stats`. Every request is
//! recorded once, when its response ends, from the same `CacheStatus` that
//! produced the `Cache-Status` header and the access log line.
//!
//! Labels stay bounded: cache statuses, modes, reasons and error kinds are
//! fixed sets; routes appear by their configured name, never by URL or client.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use crate::cache::policy::NotStored;
use crate::cache::{Cache, CacheStatus, Stored};
// Per-worker lines, summed at scrape time: a request touches no line that
// another core writes (see sharded.rs).
pub use crate::sharded::{Counter, Histogram};
use crate::upstream::UpstreamMetrics;

mod labels;
mod register;

pub use labels::*;

/// The route label of forward-proxy traffic.
pub const FORWARD_ROUTE: &str = "forward proxy";

type DurationFamily = Family<CacheLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub started: Instant,
    pub requests: Family<RequestLabels, Counter>,
    pub hits: Counter,
    pub misses: Counter,
    pub response_bytes: Family<SourceLabels, Counter>,
    pub not_stored: Family<ReasonLabels, Counter>,
    pub upstream: UpstreamMetrics,
    pub duration: DurationFamily,
    pub client_connections: Gauge,
    /// Requests whose handler panicked (answered 500).
    pub panics: Counter,
    pub tunnels_open: Gauge,
    pub tunnel_bytes_up: Counter,
    pub tunnel_bytes_down: Counter,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    cache_capacity: Gauge,
    pub route_requests: Family<RouteLabels, Counter>,
    pub route_hits: Family<RouteLabels, Counter>,
    pub route_bytes: Family<RouteLabels, Counter>,
    /// Access log lines not written: the writer was behind, or a write failed.
    pub access_log_dropped: Counter,
    /// Failed TLS handshakes on the TLS listeners, by reason.
    pub tls_handshake_errors: Family<ReasonLabels, Counter>,
    /// Servers of upstream groups: up (1) or down (0), requests, failures.
    pub servers: ServerFamilies,
    /// Configuration reloads, by result (`ok`, `error`).
    pub config_reloads: Family<ResultLabels, Counter>,
    /// When the configuration in use was loaded (Unix seconds).
    pub config_loaded: Gauge,
    /// Configured routes (name, upstream), so `/stats` lists them before
    /// traffic, and their counters; replaced on reload.
    routes: arc_swap::ArcSwap<RouteRows>,
    // The per-request path uses these, resolved once from the families above:
    // no hashing, locking or allocation per request.
    by_mode_and_cache: Vec<Counter>,
    duration_by_cache: Vec<Histogram>,
    bytes_from_cache: Counter,
    bytes_from_upstream: Counter,
    not_stored_by_reason: Vec<Counter>,
}

/// The routes' rows and counters, resolved once per configuration.
struct RouteRows {
    rows: Vec<(String, String)>,
    by_route: HashMap<String, RouteCounters>,
}

/// One route's counters.
struct RouteCounters {
    requests: Counter,
    hits: Counter,
    bytes: Counter,
}

fn duration_histogram() -> Histogram {
    // 0.1 ms .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The per-server families of upstream groups, made before the groups
/// (which the routes, and so the rest of the metrics, depend on).
#[derive(Clone)]
pub struct ServerFamilies {
    pub up: Family<ServerLabels, Gauge>,
    pub requests: Family<ServerLabels, Counter>,
    pub errors: Family<ServerLabels, Counter>,
    pub response_time: Family<ServerLabels, Histogram, fn() -> Histogram>,
    /// Forward requests through `[forward] parent` proxies (or direct after them).
    pub parents: crate::upstream::parents::ParentMetrics,
    /// Misses sent to the cache peer that owns the key.
    pub peers: crate::upstream::parents::ParentMetrics,
}

impl Default for ServerFamilies {
    fn default() -> Self {
        ServerFamilies {
            up: Family::default(),
            requests: Family::default(),
            errors: Family::default(),
            response_time: Family::new_with_constructor(duration_histogram),
            parents: Family::default(),
            peers: Family::default(),
        }
    }
}

impl ServerFamilies {
    /// The handles of one server of an upstream group.
    pub fn server(&self, group: &str, server: &str) -> crate::upstream::ServerMetrics {
        let labels = ServerLabels {
            group: group.to_string(),
            server: server.to_string(),
        };
        crate::upstream::ServerMetrics {
            up: self.up.get_or_create_owned(&labels),
            requests: self.requests.get_or_create_owned(&labels),
            errors: self.errors.get_or_create_owned(&labels),
            response_time: self.response_time.get_or_create_owned(&labels),
        }
    }
}

impl Metrics {
    pub fn new(
        cache: &Cache,
        capacity: u64,
        routes: Vec<(String, String)>,
        servers: ServerFamilies,
        upstream: UpstreamMetrics,
    ) -> Metrics {
        let mut registry = Registry::with_prefix("viaduct");
        let requests: Family<RequestLabels, Counter> = Family::default();
        let duration: DurationFamily = Family::new_with_constructor(duration_histogram);
        let response_bytes: Family<SourceLabels, Counter> = Family::default();
        let not_stored: Family<ReasonLabels, Counter> = Family::default();
        let tunnel_bytes: Family<DirectionLabels, Counter> = Family::default();
        let (route_requests, route_hits, route_bytes) = (
            Family::<RouteLabels, Counter>::default(),
            Family::default(),
            Family::default(),
        );
        let by_mode_and_cache = Mode::ALL
            .iter()
            .flat_map(|mode| {
                CacheStatus::LABELS.iter().map(|cache| {
                    requests.get_or_create_owned(&RequestLabels {
                        mode: mode.as_str(),
                        cache,
                    })
                })
            })
            .collect();
        let duration_by_cache = CacheStatus::LABELS
            .iter()
            .map(|cache| duration.get_or_create_owned(&CacheLabels { cache }))
            .collect();
        let not_stored_by_reason = NotStored::ALL
            .iter()
            .map(|why| {
                not_stored.get_or_create_owned(&ReasonLabels {
                    reason: why.as_str(),
                })
            })
            .collect();
        let m = Metrics {
            bytes_from_cache: response_bytes.get_or_create_owned(&SourceLabels { source: "cache" }),
            bytes_from_upstream: response_bytes
                .get_or_create_owned(&SourceLabels { source: "upstream" }),
            by_mode_and_cache,
            duration_by_cache,
            not_stored_by_reason,
            started: Instant::now(),
            requests,
            hits: Counter::default(),
            misses: Counter::default(),
            response_bytes,
            not_stored,
            upstream,
            duration,
            client_connections: Gauge::default(),
            panics: Counter::default(),
            tunnels_open: Gauge::default(),
            tunnel_bytes_up: tunnel_bytes.get_or_create_owned(&DirectionLabels {
                direction: "to-origin",
            }),
            tunnel_bytes_down: tunnel_bytes.get_or_create_owned(&DirectionLabels {
                direction: "to-client",
            }),
            cache_entries: Gauge::default(),
            cache_bytes: Gauge::default(),
            cache_capacity: Gauge::default(),
            route_requests,
            route_hits,
            route_bytes,
            access_log_dropped: Counter::default(),
            tls_handshake_errors: Family::default(),
            servers,
            config_reloads: Family::default(),
            config_loaded: Gauge::default(),
            routes: arc_swap::ArcSwap::from_pointee(RouteRows {
                rows: Vec::new(),
                by_route: HashMap::new(),
            }),
            registry: Registry::default(),
        };
        m.cache_capacity.set(capacity as i64);
        m.set_routes(routes);
        m.config_loaded.set(unix_now());
        register::all(&m, cache, &tunnel_bytes, &mut registry);
        Metrics { registry, ..m }
    }

    /// Records one finished request.
    pub fn record(
        &self,
        mode: Mode,
        route: Option<&str>,
        status: &CacheStatus,
        bytes: u64,
        took: Duration,
    ) {
        let cache = status.label_index();
        // Mode::ALL and NotStored::ALL list the variants in declaration order.
        self.by_mode_and_cache[mode as usize * CacheStatus::LABELS.len() + cache].inc();
        self.duration_by_cache[cache].observe(took);
        let from_cache = served_from_cache(status);
        match from_cache {
            Some(true) => {
                self.hits.inc();
            }
            Some(false) if is_miss(status) => {
                self.misses.inc();
            }
            _ => {}
        }
        match bytes_source(status) {
            Some("cache") => {
                self.bytes_from_cache.inc_by(bytes);
            }
            Some(_) => {
                self.bytes_from_upstream.inc_by(bytes);
            }
            None => {}
        }
        if let CacheStatus::Forward {
            outcome: Stored::No(why),
            ..
        } = status
        {
            self.not_stored_by_reason[*why as usize].inc();
        }
        let routes = self.routes.load();
        if let Some(counters) = route.and_then(|r| routes.by_route.get(r)) {
            counters.requests.inc();
            counters.bytes.inc_by(bytes);
            if from_cache == Some(true) {
                counters.hits.inc();
            }
        }
    }

    /// The configured routes (name, upstream), for `/stats`.
    pub fn routes(&self) -> Vec<(String, String)> {
        self.routes.load().rows.clone()
    }

    /// Sets the configured routes: at start and after a reload.
    pub fn set_routes(&self, rows: Vec<(String, String)>) {
        let by_route = rows
            .iter()
            .map(|(name, _)| {
                let labels = RouteLabels {
                    route: name.clone(),
                };
                let counters = RouteCounters {
                    requests: self.route_requests.get_or_create_owned(&labels),
                    hits: self.route_hits.get_or_create_owned(&labels),
                    bytes: self.route_bytes.get_or_create_owned(&labels),
                };
                (name.clone(), counters)
            })
            .collect();
        self.routes.store(Arc::new(RouteRows { rows, by_route }));
    }

    /// The Prometheus text exposition, with the cache gauges refreshed.
    pub fn encode(&self, cache: &Cache) -> String {
        self.refresh(cache);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn refresh(&self, cache: &Cache) {
        self.cache_entries.set(cache.store.entry_count() as i64);
        self.cache_bytes.set(cache.store.weighted_size() as i64);
        if let Some(disk) = &cache.disk {
            disk.sizes();
        }
    }
}

/// Hits count requests answered without the origin sending the body:
/// fresh hits, stale serves and collapsed followers. Misses count bodies
/// fetched for the cache. Revalidations, passes and local answers are neither.
fn served_from_cache(status: &CacheStatus) -> Option<bool> {
    match status {
        CacheStatus::Hit { .. }
        | CacheStatus::TierHit { .. }
        | CacheStatus::StaleServed { .. }
        | CacheStatus::Collapsed { .. } => Some(true),
        CacheStatus::Forward { .. } => Some(false),
        CacheStatus::Local { .. } => None,
    }
}

fn is_miss(status: &CacheStatus) -> bool {
    matches!(status.as_str(), "miss" | "refresh")
}

/// Where the body bytes came from, for the byte hit ratio.
fn bytes_source(status: &CacheStatus) -> Option<&'static str> {
    match status {
        CacheStatus::Hit { .. }
        | CacheStatus::TierHit { .. }
        | CacheStatus::StaleServed { .. }
        | CacheStatus::Collapsed { .. } => Some("cache"),
        CacheStatus::Forward {
            status: Some(304), ..
        } => Some("cache"),
        CacheStatus::Forward { .. } => Some("upstream"),
        CacheStatus::Local { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_tables_are_indexed_by_declaration_order() {
        // `record` indexes its pre-resolved counters with `as usize`.
        for (i, mode) in Mode::ALL.iter().enumerate() {
            assert_eq!(*mode as usize, i);
        }
        for (i, why) in NotStored::ALL.iter().enumerate() {
            assert_eq!(*why as usize, i);
        }
    }
}
