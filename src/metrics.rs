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

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::cache::policy::NotStored;
use crate::cache::{Cache, CacheStatus, Stored};
// Per-worker lines, summed at scrape time: a request touches no line that
// another core writes (see sharded.rs).
pub use crate::sharded::{Counter, Histogram};
use crate::upstream::UpstreamMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub mode: &'static str,
    pub cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub group: String,
    pub server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// How a request was handled, for the `mode` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Reverse,
    Tunnel,
    Local,
    /// Files served from a route's `root`.
    File,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::Forward,
        Mode::Reverse,
        Mode::Tunnel,
        Mode::Local,
        Mode::File,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Forward => "forward",
            Mode::Reverse => "reverse",
            Mode::Tunnel => "tunnel",
            Mode::Local => "local",
            Mode::File => "file",
        }
    }
}

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
        let stats = &cache.stats;
        let r = &mut registry;
        r.register(
            "requests",
            "Requests answered, by mode and cache status",
            m.requests.clone(),
        );
        r.register(
            "cache_hits",
            "Requests served from the cache",
            m.hits.clone(),
        );
        r.register(
            "cache_misses",
            "Requests whose body came from the origin",
            m.misses.clone(),
        );
        r.register(
            "response_bytes",
            "Response body bytes sent to clients, by where they came from",
            m.response_bytes.clone(),
        );
        r.register("cache_entries", "URLs stored", m.cache_entries.clone());
        r.register(
            "cache_bytes",
            "Bytes charged against the cache capacity",
            m.cache_bytes.clone(),
        );
        r.register(
            "cache_capacity_bytes",
            "Configured cache capacity",
            m.cache_capacity.clone(),
        );
        r.register(
            "cache_evictions",
            "Entries evicted for space or expiry",
            stats.evictions.clone(),
        );
        r.register(
            "cache_not_stored",
            "Forwarded responses not stored, by reason",
            m.not_stored.clone(),
        );
        r.register(
            "cache_collapsed",
            "Requests answered from another request's fetch",
            stats.collapsed.clone(),
        );
        r.register(
            "cache_stale_served",
            "Stale responses served (RFC 5861, max-stale)",
            stats.stale_served.clone(),
        );
        r.register(
            "cache_background_revalidations",
            "Background revalidations started (stale-while-revalidate)",
            stats.background_revalidations.clone(),
        );
        r.register(
            "cache_purges",
            "URLs removed by purge requests",
            stats.purges.clone(),
        );
        r.register(
            "cache_soft_purges",
            "URLs made stale by soft purges",
            stats.soft_purges.clone(),
        );
        r.register(
            "cache_tags_dropped",
            "Response tags not kept, by reason (over 1 KiB, past max_tags_per_object)",
            stats.tags_dropped.clone(),
        );
        if let Some(tier) = &cache.shared {
            tier.stats.register(r);
        }
        r.register(
            "upstream_requests",
            "Requests sent to origins (retries included)",
            m.upstream.requests.clone(),
        );
        r.register(
            "upstream_connections",
            "New connections opened to origins",
            m.upstream.connections.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed origin requests, by kind",
            m.upstream.errors.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to the end of the response, by cache status",
            m.duration.clone(),
        );
        r.register(
            "client_connections",
            "Open client connections (with their tunnels and upgrades)",
            m.client_connections.clone(),
        );
        r.register(
            "panics",
            "Requests whose handling panicked, answered 500",
            m.panics.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads (SIGHUP, POST /reload), by result",
            m.config_reloads.clone(),
        );
        r.register(
            "config_loaded_timestamp_seconds",
            "When the configuration in use was loaded, in Unix seconds",
            m.config_loaded.clone(),
        );
        r.register(
            "forward_parent_requests",
            "Forward requests sent through a parent proxy, by parent (or direct after the parents) and outcome",
            m.servers.parents.clone(),
        );
        r.register(
            "cluster_peer_requests",
            "Misses sent to the cache peer that owns the key, by peer and outcome",
            m.servers.peers.clone(),
        );
        r.register(
            "upstream_server_up",
            "Servers of upstream groups: 1 up, 0 down (passive marking or health checks)",
            m.servers.up.clone(),
        );
        r.register(
            "upstream_server_requests",
            "Requests sent to each server of an upstream group",
            m.servers.requests.clone(),
        );
        r.register(
            "upstream_server_errors",
            "Failures counted against each server of an upstream group",
            m.servers.errors.clone(),
        );
        r.register(
            "upstream_server_response_seconds",
            "Time from sending a request to a server of an upstream group to its response head",
            m.servers.response_time.clone(),
        );
        r.register(
            "tls_handshake_errors",
            "Failed TLS handshakes on the TLS listeners, by reason",
            m.tls_handshake_errors.clone(),
        );
        r.register(
            "tunnels_open",
            "Open CONNECT tunnels",
            m.tunnels_open.clone(),
        );
        r.register(
            "tunnel_bytes",
            "Bytes relayed through CONNECT tunnels, by direction",
            tunnel_bytes.clone(),
        );
        r.register(
            "route_requests",
            "Requests per route",
            m.route_requests.clone(),
        );
        r.register(
            "route_hits",
            "Requests served from the cache, per route",
            m.route_hits.clone(),
        );
        r.register(
            "route_response_bytes",
            "Response body bytes, per route",
            m.route_bytes.clone(),
        );
        r.register(
            "access_log_dropped",
            "Access log lines dropped: the writer was behind or a write failed",
            m.access_log_dropped.clone(),
        );
        r.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
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
