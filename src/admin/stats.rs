//! `/stats` (a JSON snapshot of the same counters `/metrics` exports) and
//! `/cache?url=` (what is stored for one URL).

use std::time::SystemTime;

use crate::metrics::Counter;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use prometheus_client::metrics::family::Family;
use serde_json::{json, Map, Value};

use super::purge::{key_of, query_param};
use super::{json, text, Admin};
use crate::cache::policy::{self, NotStored};
use crate::cache::CacheStatus;
use crate::metrics::{Mode, ReasonLabels, RequestLabels, RouteLabels, SourceLabels};
use crate::upstream::KindLabels;
use crate::upstream::UpstreamError;

const CACHE_LABELS: [&str; 8] = CacheStatus::LABELS;

fn read<
    S: Clone + std::hash::Hash + Eq + prometheus_client::encoding::EncodeLabelSet + std::fmt::Debug,
>(
    family: &Family<S, Counter>,
    labels: &S,
) -> u64 {
    family.get(labels).map_or(0, |c| c.get())
}

fn ratio(part: u64, whole: u64) -> Value {
    if whole == 0 {
        Value::Null
    } else {
        json!(part as f64 / whole as f64)
    }
}

/// Each upstream group with its servers' state (`/upstreams`, `/stats`).
pub(super) fn groups(admin: &Admin) -> Value {
    let groups: Vec<Value> = admin
        .handler
        .upstream_groups()
        .iter()
        .map(|group| {
            let servers: Vec<Value> = group
                .servers()
                .iter()
                .enumerate()
                .map(|(i, server)| {
                    json!({
                        "server": &*server.label,
                        "url": server.url.to_string(),
                        "weight": server.weight(),
                        "backup": server.backup(),
                        "up": group.is_up(i),
                        "in_flight": server.in_flight(),
                        "requests": server.metrics.requests.get(),
                        "errors": server.metrics.errors.get(),
                    })
                })
                .collect();
            let balance = match group.balance() {
                crate::config::Balance::RoundRobin => "round_robin",
                crate::config::Balance::LeastConn => "least_conn",
                crate::config::Balance::ConsistentHash => "consistent_hash",
            };
            json!({ "name": &*group.name, "balance": balance, "servers": servers })
        })
        .collect();
    Value::Array(groups)
}

pub(super) fn snapshot(admin: &Admin) -> Value {
    let (peers, parents) = admin.handler.hierarchy();
    let m = &admin.metrics;
    let cache = &admin.cache;
    // requests[mode][cache], read once and summed both ways.
    let table: Vec<Vec<u64>> = Mode::ALL
        .iter()
        .map(|mode| {
            CACHE_LABELS
                .iter()
                .map(|cache| {
                    read(
                        &m.requests,
                        &RequestLabels {
                            mode: mode.as_str(),
                            cache,
                        },
                    )
                })
                .collect()
        })
        .collect();
    let by_cache: Map<String, Value> = CACHE_LABELS
        .iter()
        .enumerate()
        .map(|(i, label)| {
            (
                label.to_string(),
                json!(table.iter().map(|row| row[i]).sum::<u64>()),
            )
        })
        .collect();
    let by_mode: Map<String, Value> = Mode::ALL
        .iter()
        .zip(&table)
        .map(|(mode, row)| (mode.as_str().to_string(), json!(row.iter().sum::<u64>())))
        .collect();
    let total: u64 = table.iter().flatten().sum();
    let (hits, misses) = (m.hits.get(), m.misses.get());
    let bytes_cache = read(&m.response_bytes, &SourceLabels { source: "cache" });
    let bytes_upstream = read(&m.response_bytes, &SourceLabels { source: "upstream" });
    let mut not_stored = Map::new();
    for why in NotStored::ALL {
        let n = read(
            &m.not_stored,
            &ReasonLabels {
                reason: why.as_str(),
            },
        );
        if n > 0 {
            not_stored.insert(why.as_str().into(), json!(n));
        }
    }
    let mut errors = Map::new();
    for kind in UpstreamError::KINDS {
        let n = read(&m.upstream.errors, &KindLabels { kind });
        if n > 0 {
            errors.insert(kind.into(), json!(n));
        }
    }
    let routes: Vec<Value> = m
        .routes()
        .iter()
        .map(|(name, upstream)| {
            let labels = RouteLabels {
                route: name.clone(),
            };
            let requests = read(&m.route_requests, &labels);
            let hits = read(&m.route_hits, &labels);
            json!({
                "route": name,
                "upstream": upstream,
                "requests": requests,
                "hits": hits,
                "hit_ratio": ratio(hits, requests),
                "bytes": read(&m.route_bytes, &labels),
            })
        })
        .collect();
    json!({
        "name": admin.name,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": m.started.elapsed().as_secs_f64(),
        "requests": { "total": total, "by_cache": by_cache, "by_mode": by_mode },
        "hits": hits,
        "misses": misses,
        "hit_ratio": ratio(hits, hits + misses),
        "bytes": { "cache": bytes_cache, "upstream": bytes_upstream },
        "byte_hit_ratio": ratio(bytes_cache, bytes_cache + bytes_upstream),
        "cache": {
            "enabled": cache.enabled(),
            "entries": cache.store.entry_count(),
            "bytes": cache.store.weighted_size(),
            "capacity_bytes": cache.store.capacity(),
            "max_object_size": cache.max_object_size(),
            "evictions": cache.stats.evictions.get(),
            "not_stored": not_stored,
            "collapsed": cache.stats.collapsed.get(),
            "stale_served": cache.stats.stale_served.get(),
            "background_revalidations": cache.stats.background_revalidations.get(),
            "purges": cache.stats.purges.get(),
        },
        "upstream_groups": groups(admin),
        "shared": shared_tier(cache),
        "disk": disk_tier(cache),
        "peers": peers.iter().map(|(addr, up, me)| json!({"peer": addr.to_string(), "up": up, "self": me})).collect::<Vec<_>>(),
        "parents": parents.iter().map(|(addr, up)| json!({"parent": addr, "up": up})).collect::<Vec<_>>(),
        "config": {
            "loaded_at": m.config_loaded.get(),
            "reloads": m.config_reloads.get_or_create(&crate::metrics::ResultLabels { result: "ok" }).get(),
            "reload_errors": m.config_reloads.get_or_create(&crate::metrics::ResultLabels { result: "error" }).get(),
            "listening": admin.reloader.listening(false),
            "listening_tls": admin.reloader.listening(true),
        },
        "upstream": {
            "requests": m.upstream.requests.get(),
            "connections_opened": m.upstream.connections.get(),
            "errors": errors,
        },
        "client_connections": m.client_connections.get(),
        "tunnels": {
            "open": m.tunnels_open.get(),
            "bytes_to_origin": m.tunnel_bytes_up.get(),
            "bytes_to_client": m.tunnel_bytes_down.get(),
        },
        "routes": routes,
        "access_log": { "dropped": m.access_log_dropped.get() },
    })
}

/// `GET /cache?url=...`: every stored variant of a URL with its age, ttl,
/// size and stored header fields.
pub(super) fn inspect(admin: &Admin, query: &str) -> Response<Full<Bytes>> {
    let Some(url) = query_param(query, "url") else {
        return text(
            StatusCode::BAD_REQUEST,
            "use GET /cache?url=http://host/path\n".into(),
        );
    };
    let Some(key) = key_of(&url) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("not an absolute http(s) URL: {url}\n"),
        );
    };
    let namespaces = match admin.namespaces(query) {
        Ok(namespaces) => namespaces,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let now = SystemTime::now();
    let mut keys = Vec::new();
    let mut variants: Vec<Value> = Vec::new();
    for ns in &namespaces {
        let full = admin.handler.key_in(ns, &key);
        let Some(all) = admin.cache.store.variants(&full) else {
            continue;
        };
        keys.push(full);
        variants.extend(all.iter().map(|e| {
            let (lifetime, heuristic) = policy::lifetime(&e.head, &admin.cache.heuristics());
            let age = policy::current_age(&e.head, now);
            let mut headers = Map::new();
            for (name, value) in e.head.headers.iter() {
                let list = headers
                    .entry(name.as_str().to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = list {
                    list.push(json!(String::from_utf8_lossy(value.as_bytes())));
                }
            }
            let vary: Map<String, Value> = e
                .secondary
                .iter()
                .map(|(name, value)| (name.as_str().to_string(), json!(value)))
                .collect();
            json!({
                "namespace": ns,
                "status": e.head.status.as_u16(),
                "vary": vary,
                "age": age,
                "freshness_lifetime": lifetime,
                "heuristic": heuristic,
                "ttl": lifetime as i64 - age as i64,
                "body_bytes": e.body.len(),
                "size": e.weight(),
                "tags": e.tags().iter().map(|t| &**t).collect::<Vec<&str>>(),
                "headers": headers,
            })
        }));
    }
    let owners: Map<String, Value> = keys
        .iter()
        .filter_map(|k| Some((k.clone(), json!(admin.handler.peer_owner(k)?.to_string()))))
        .collect();
    json(json!({
        "url": url,
        "keys": keys,
        "owners": owners,
        "stored": !variants.is_empty(),
        "variants": variants,
    }))
}

/// `[cache.disk]` at a glance: null when there is no disk tier.
fn disk_tier(cache: &crate::cache::Cache) -> Value {
    let Some(tier) = &cache.disk else {
        return Value::Null;
    };
    let s = &tier.stats;
    let (entries, bytes) = tier.sizes();
    let errors: Map<String, Value> = crate::cache::disk::stats::KINDS
        .iter()
        .map(|kind| (kind.to_string(), json!(s.error_count(kind))))
        .collect();
    json!({
        "entries": entries,
        "bytes": bytes,
        "capacity": s.capacity.get(),
        "recovering": tier.is_walking(),
        "hits": s.hits.get(),
        "misses": s.misses.get(),
        "promotions": s.promotions.get(),
        "writes": s.write_count("stored"),
        "writes_dropped": s.write_count("dropped"),
        "writes_failed": s.write_count("failed"),
        "evictions": s.evictions.get(),
        "errors": errors,
    })
}

/// `[cache.shared]` at a glance: null when there is no shared tier.
fn shared_tier(cache: &crate::cache::Cache) -> Value {
    let Some(tier) = &cache.shared else {
        return Value::Null;
    };
    let s = &tier.stats;
    let writes = |outcome| {
        s.writes
            .get_or_create(&crate::cache::shared::OutcomeLabel { outcome })
            .get()
    };
    json!({
        "servers": tier.servers,
        "connected": tier.is_connected(),
        "hits": s.hits.get(),
        "misses": s.misses.get(),
        "errors": s.error_count(),
        "collapsed": s.collapsed.get(),
        "writes": writes("stored"),
        "writes_dropped": writes("dropped") + writes("failed"),
        "purges_received": s.purges_received.get(),
    })
}
