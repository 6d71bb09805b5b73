//! Every metric registered under its Prometheus name and help text.

use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use prometheus_client::metrics::family::Family;

use super::{Counter, DirectionLabels, Metrics};
use crate::cache::Cache;

/// `tunnel_bytes`: the family whose two counters `m` holds (the family
/// itself is registered, not kept).
pub(super) fn all(
    m: &Metrics,
    cache: &Cache,
    tunnel_bytes: &Family<DirectionLabels, Counter>,
    r: &mut Registry,
) {
    let stats = &cache.stats;
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
    if let Some(tier) = &cache.disk {
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
}
