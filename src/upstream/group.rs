//! Upstream groups: several origin servers behind one name, with a choice of
//! server per request (weighted round robin, least connections, or a
//! consistent hash of the cache key), passive marking from real traffic,
//! optional active health checks, and backup servers used only when every
//! primary is down.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

use super::OriginTls;
use crate::config::{Balance, GroupConfig, HealthCheckConfig, UpstreamUrl};
use crate::sharded::Counter;

/// Per-server metric handles, made by the caller (the metrics registry).
pub struct ServerMetrics {
    pub up: Gauge,
    pub requests: Counter,
    pub errors: Counter,
    /// Time to the response head.
    pub response_time: crate::sharded::Histogram,
}

pub struct Server {
    pub url: UpstreamUrl,
    /// Built once: what a request to this server carries.
    scheme: http::uri::Scheme,
    host: Option<http::HeaderValue>,
    /// `host:port`, for messages and metric labels.
    pub label: Arc<str>,
    /// For `https://` servers.
    pub tls: Option<OriginTls>,
    weight: u32,
    backup: bool,
    /// Seed of this server in the consistent hash: from its address, so the
    /// order of servers in the file does not matter.
    seed: u64,
    in_flight: AtomicUsize,
    /// Passive marking: failures in the current window, and when it began.
    fails: Mutex<(u32, Option<Instant>)>,
    /// Marked down by passive checks until this many ms after `epoch`.
    down_until_ms: AtomicU64,
    /// Marked down by active health checks.
    unhealthy: AtomicBool,
    pub metrics: ServerMetrics,
}

pub struct Group {
    pub name: Arc<str>,
    /// The group's own pool when it overrides `[upstream]` settings.
    pub pool: Option<Arc<super::Upstream>>,
    servers: Vec<Server>,
    balance: Balance,
    max_fails: u32,
    fail_timeout: Duration,
    /// Smooth weighted round-robin orders (nginx's algorithm, precomputed):
    /// primaries, then backups.
    order: [Vec<usize>; 2],
    cursor: AtomicUsize,
    epoch: Instant,
}

/// A request's place in a group (part of its `upstream::Target`).
#[derive(Clone)]
pub struct GroupTarget {
    pub group: Arc<Group>,
    /// The cache key's hash, for `consistent_hash`.
    pub hash: u64,
    /// Send the chosen server's `host:port` as Host (`preserve_host = false`).
    pub set_host: bool,
}

impl Group {
    /// `tls`: the TLS client for an `https://` server; `metrics`: the
    /// handles for a server's label.
    pub fn new(
        config: &GroupConfig,
        tls: impl Fn(&UpstreamUrl) -> Result<Option<OriginTls>, String>,
        metrics: impl Fn(&str) -> ServerMetrics,
        pool: Option<Arc<super::Upstream>>,
    ) -> Result<Arc<Group>, String> {
        let mut servers = Vec::with_capacity(config.servers.len());
        for spec in &config.servers {
            let label: Arc<str> = Arc::from(spec.url.authority.as_str());
            let metrics = metrics(&label);
            metrics.up.set(1);
            let url = &spec.url;
            let host = http::HeaderValue::from_str(url.host_header());
            if config.servers.len() > 64 {
                return Err(format!("group {}: at most 64 servers", config.name));
            }
            servers.push(Server {
                scheme: if url.tls {
                    http::uri::Scheme::HTTPS
                } else {
                    http::uri::Scheme::HTTP
                },
                host: host.ok(),
                tls: tls(&spec.url)?,
                seed: hash_bytes(label.as_bytes()),
                url: spec.url.clone(),
                label,
                weight: spec.weight,
                backup: spec.backup,
                in_flight: AtomicUsize::new(0),
                fails: Mutex::new((0, None)),
                down_until_ms: AtomicU64::new(0),
                unhealthy: AtomicBool::new(false),
                metrics,
            });
        }
        let order = [false, true].map(|backup| smooth_order(&servers, backup));
        let group = Arc::new(Group {
            name: Arc::from(config.name.as_str()),
            pool,
            servers,
            balance: config.balance,
            max_fails: config.max_fails,
            fail_timeout: config.fail_timeout.get(),
            order,
            cursor: AtomicUsize::new(0),
            epoch: Instant::now(),
        });
        if let Some(check) = &config.health_check {
            for index in 0..group.servers.len() {
                tokio::spawn(health::run(Arc::downgrade(&group), index, check.clone()));
            }
        }
        Ok(group)
    }

    pub fn balance(&self) -> Balance {
        self.balance
    }

    /// The place in this group of the request with cache key `key`.
    pub fn target(self: &Arc<Self>, key: &str, set_host: bool) -> GroupTarget {
        GroupTarget {
            group: self.clone(),
            // Only consistent_hash reads it.
            hash: match self.balance {
                Balance::ConsistentHash => hash_bytes(key.as_bytes()),
                _ => 0,
            },
            set_host,
        }
    }

    pub fn server(&self, index: usize) -> &Server {
        &self.servers[index]
    }

    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn is_up(&self, index: usize) -> bool {
        let server = &self.servers[index];
        if server.unhealthy.load(Ordering::Relaxed) {
            return false;
        }
        // Never marked down: no clock read.
        let until = server.down_until_ms.load(Ordering::Relaxed);
        until == 0 || until <= self.now_ms()
    }

    /// The server for a request, skipping `tried`: a primary that is up, else
    /// a backup that is up; `None` when every server is down or tried.
    /// `tried`: a bit per server index.
    pub fn pick(&self, hash: u64, tried: u64) -> Option<usize> {
        for backup in [false, true] {
            let open = |i: &usize| {
                self.servers[*i].backup == backup && tried & (1 << *i) == 0 && self.is_up(*i)
            };
            let chosen = match self.balance {
                Balance::RoundRobin => {
                    let order = &self.order[backup as usize];
                    if order.is_empty() {
                        continue;
                    }
                    let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                    (0..order.len())
                        .map(|k| order[(start + k) % order.len()])
                        .find(|i| open(i))
                }
                Balance::LeastConn => (0..self.servers.len()).filter(open).min_by(|a, b| {
                    // Fewest in flight per unit of weight, compared without division.
                    let (a, b) = (&self.servers[*a], &self.servers[*b]);
                    let load = |s: &Server, other: &Server| {
                        s.in_flight.load(Ordering::Relaxed) as u64 * other.weight as u64
                    };
                    load(a, b).cmp(&load(b, a))
                }),
                // Rendezvous hashing: the server with the highest score for
                // this key wins, so removing one moves only the keys it had.
                Balance::ConsistentHash => (0..self.servers.len()).filter(open).max_by_key(|i| {
                    let server = &self.servers[*i];
                    (0..server.weight)
                        .map(|replica| {
                            mix(hash ^ server.seed ^ (replica as u64).wrapping_mul(0x9E37_79B9))
                        })
                        .max()
                        .unwrap_or(0)
                }),
            };
            if chosen.is_some() {
                return chosen;
            }
        }
        None
    }

    /// A connect error, timeout or 502–504 from `index`: `max_fails` of them
    /// within `fail_timeout` mark it down for `fail_timeout`.
    pub fn failed(self: &Arc<Self>, index: usize) {
        let server = &self.servers[index];
        server.metrics.errors.inc();
        let mut fails = server.fails.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match fails.1 {
            Some(start) if now.duration_since(start) < self.fail_timeout => fails.0 += 1,
            _ => *fails = (1, Some(now)),
        }
        if fails.0 >= self.max_fails {
            *fails = (0, None);
            let until = self.now_ms() + self.fail_timeout.as_millis() as u64;
            server.down_until_ms.store(until, Ordering::Relaxed);
            self.show_state(index);
            tracing::warn!(
                group = %self.name,
                server = %server.label,
                "upstream server marked down for {}",
                humantime::format_duration(self.fail_timeout)
            );
            // It comes back on its own when the time is up: the gauge is
            // brought in line then.
            let group = Arc::downgrade(self);
            let wait = self.fail_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if let Some(group) = group.upgrade() {
                    group.show_state(index);
                }
            });
        }
    }

    /// Sets the server's `up` gauge from its state (passive marking and
    /// health checks together), the one place that writes it.
    fn show_state(&self, index: usize) {
        let up = self.is_up(index);
        self.servers[index].metrics.up.set(up as i64);
    }

    /// Seconds until a server may be back, for `Retry-After`.
    pub fn retry_after(&self) -> u64 {
        let now = self.now_ms();
        self.servers
            .iter()
            .map(|s| s.down_until_ms.load(Ordering::Relaxed).saturating_sub(now))
            .filter(|ms| *ms > 0)
            .min()
            .map_or(1, |ms| ms.div_ceil(1000).max(1))
    }
}

impl Server {
    /// Points `req` at this server: scheme and authority, and `Host` when
    /// the route does not preserve the client's.
    pub fn aim(&self, req: &mut http::Request<crate::http::body::RequestBody>, set_host: bool) {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.url.authority.clone());
        uri.path_and_query = Some(
            req.uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        if let Ok(uri) = http::Uri::from_parts(uri) {
            *req.uri_mut() = uri;
        }
        if set_host {
            if let Some(host) = &self.host {
                req.headers_mut().insert(http::header::HOST, host.clone());
            }
        }
    }

    /// Counts a request in flight here until the guard drops.
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.requests.inc();
        InFlight { server: self }
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    pub fn backup(&self) -> bool {
        self.backup
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request in flight to one server (for `least_conn`).
pub struct InFlight<'a> {
    server: &'a Server,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// nginx's smooth weighted round robin, run once over a full cycle: each
/// server appears `weight` times, spread out rather than in runs.
fn smooth_order(servers: &[Server], backup: bool) -> Vec<usize> {
    let members: Vec<usize> = (0..servers.len())
        .filter(|i| servers[*i].backup == backup)
        .collect();
    let total: i64 = members.iter().map(|i| servers[*i].weight as i64).sum();
    let mut current = vec![0i64; servers.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for i in &members {
            current[*i] += servers[*i].weight as i64;
        }
        let best = *members
            .iter()
            .max_by_key(|i| (current[**i], std::cmp::Reverse(**i)))
            .expect("members is not empty when total > 0");
        current[best] -= total;
        order.push(best);
    }
    order
}

/// FNV-1a, for seeds and keys: stable across runs and builds.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: spreads the bits of a combined key and seed.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

mod health;

#[cfg(test)]
mod tests {
    use super::*;

    fn group(servers: &[&str], balance: Balance) -> Arc<Group> {
        let text = format!(
            "name = \"g\"\nservers = [{}]\nbalance = \"{}\"\n",
            servers
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            match balance {
                Balance::RoundRobin => "round_robin",
                Balance::LeastConn => "least_conn",
                Balance::ConsistentHash => "consistent_hash",
            }
        );
        let config: GroupConfig = toml::from_str(&text).unwrap();
        Group::new(
            &config,
            |_| Ok(None),
            |_| ServerMetrics {
                up: Gauge::default(),
                requests: Counter::default(),
                errors: Counter::default(),
                response_time: crate::sharded::Histogram::new([0.1, 1.0]),
            },
            None,
        )
        .unwrap()
    }

    #[test]
    fn weighted_round_robin_interleaves_by_weight() {
        let g = group(
            &["http://a:1 weight=3", "http://b:1", "http://c:1 backup"],
            Balance::RoundRobin,
        );
        let picks: Vec<usize> = (0..8).map(|_| g.pick(0, 0).unwrap()).collect();
        assert_eq!(picks.iter().filter(|i| **i == 0).count(), 6);
        assert_eq!(picks.iter().filter(|i| **i == 1).count(), 2);
        // Spread, not in a run: b appears in each half.
        assert!(
            picks[..4].contains(&1) && picks[4..].contains(&1),
            "{picks:?}"
        );
    }

    #[test]
    fn backups_only_when_every_primary_is_down_or_tried() {
        let g = group(
            &["http://a:1", "http://b:1", "http://c:1 backup"],
            Balance::RoundRobin,
        );
        assert_ne!(g.pick(0, 0), Some(2));
        assert_eq!(g.pick(0, 0b011), Some(2));
        assert_eq!(g.pick(0, 0b111), None);
    }

    #[tokio::test]
    async fn max_fails_within_fail_timeout_marks_a_server_down() {
        let g = group(&["http://a:1", "http://b:1"], Balance::RoundRobin);
        g.failed(0);
        g.failed(0);
        assert!(g.is_up(0));
        g.failed(0);
        assert!(!g.is_up(0));
        assert_eq!(g.servers[0].metrics.up.get(), 0);
        for _ in 0..10 {
            assert_eq!(g.pick(0, 0), Some(1));
        }
        assert!(g.retry_after() >= 9);
    }

    #[test]
    fn consistent_hash_keeps_keys_and_moves_only_the_removed_servers() {
        let three = group(
            &["http://a:1", "http://b:1", "http://c:1"],
            Balance::ConsistentHash,
        );
        let two = group(&["http://a:1", "http://c:1"], Balance::ConsistentHash);
        let mut moved = 0;
        for n in 0..3000u64 {
            let key = hash_bytes(format!("/item/{n}").as_bytes());
            let before = three.pick(key, 0).unwrap();
            assert_eq!(three.pick(key, 0), Some(before), "stable");
            let after = two.pick(key, 0).unwrap();
            let name = |g: &Group, i: usize| g.servers[i].label.clone();
            if name(&three, before) != name(&two, after) {
                assert_eq!(&*name(&three, before), "b:1", "only b's keys move");
                moved += 1;
            }
        }
        // About a third of the keys were b's.
        assert!((800..1200).contains(&moved), "{moved}");
    }

    #[test]
    fn least_conn_prefers_the_idle_server() {
        let g = group(&["http://a:1", "http://b:1"], Balance::LeastConn);
        let busy = g.server(0).begin();
        assert_eq!(g.pick(0, 0), Some(1));
        drop(busy);
        let _b = g.server(1).begin();
        assert_eq!(g.pick(0, 0), Some(0));
    }
}
