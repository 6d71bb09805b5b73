//! What the configuration decides for each request and a reload may change:
//! reverse routes and their upstream groups, forward-proxy admission and
//! authentication, the PAC file, the CONNECT ports, request limits. Built whole from a
//! `Config` and swapped whole (`Handler::reload`); a request keeps the policy
//! it started with, and the cache, pools, metrics and log outlive it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::Ordering::Relaxed;

use super::auth::ProxyAuth;
use super::classify::Classifier;
use super::routes::RouteTable;
use super::Listening;
use crate::access_log::AccessLog;
use crate::config::{Config, PacConfig, UpstreamConfig};
use crate::metrics::{self, ServerFamilies};
use crate::upstream::peers::Cluster;
use crate::upstream::{Group, OriginTls, Parent, Parents, Upstream};

pub(super) struct Policy {
    pub classifier: Classifier,
    pub auth: Option<ProxyAuth>,
    pub pac: PacConfig,
    pub connect_ports: Vec<u16>,
    /// `[[upstream.group]]`s in the file's order (routes hold them too).
    pub groups: Vec<Arc<Group>>,
    /// Where `https_redirect` sends plain-HTTP clients: the first TLS
    /// listener's port.
    pub https_port: Option<u16>,
    /// `[server] max_request_body` in bytes; 0 means unlimited.
    pub max_body: u64,
    /// `[cache] purge_allow`.
    pub purge_allow: Vec<crate::config::Cidr>,
    /// `[forward] tunnel_idle_timeout`, for tunnels opened from now on.
    pub tunnel_idle: std::time::Duration,
    /// Where forward requests go: direct, or through `[forward] parent`.
    pub forward_target: crate::upstream::Target,
    /// `[cluster]`: the cache peers, when there are several.
    pub cluster: Option<Arc<Cluster>>,
    /// `[[redirect]]` rules, applied before routing.
    pub redirects: crate::files::redirect::Redirects,
}

impl Policy {
    /// `pool` makes the connection pool of a group that overrides
    /// `[upstream]` settings.
    pub fn new(
        config: &Config,
        local_addrs: Vec<SocketAddr>,
        https_port: Option<u16>,
        servers: &ServerFamilies,
        pool: impl Fn(&UpstreamConfig) -> Arc<Upstream>,
    ) -> Result<Policy, String> {
        let groups = upstream_groups(&config.upstream, servers, &pool)?;
        let routes = RouteTable::new(
            &config.routes,
            config.upstream.tls_ca.as_deref(),
            &groups,
            &config.cache,
        )?;
        let group_list = config
            .upstream
            .groups
            .iter()
            .filter_map(|g| groups.get(&g.name).cloned())
            .collect();
        Ok(Policy {
            redirects: crate::files::redirect::Redirects::new(&config.redirects),
            classifier: Classifier {
                forward: config.forward.clone(),
                routes,
                local_addrs,
                allow_encoded_slash: config.server.allow_encoded_slash,
            },
            auth: config.forward.auth.as_ref().map(ProxyAuth::new),
            pac: config.forward.pac.clone(),
            connect_ports: config.forward.connect_ports.clone(),
            groups: group_list,
            https_port,
            max_body: config.server.max_request_body.bytes(),
            purge_allow: config.cache.purge_allow.clone(),
            tunnel_idle: config.forward.tunnel_idle_timeout.get(),
            forward_target: forward_target(config, servers, &pool),
            cluster: config.cluster.self_addr.and_then(|me| {
                let peers: Vec<SocketAddr> = config.cluster.peers.iter().map(|p| p.0).collect();
                let local_ttl = config.cluster.local_ttl.get();
                let metrics = servers.peers.clone();
                let cluster =
                    Cluster::new(&peers, me.0, local_ttl, pool(&config.upstream), metrics)
                        .map(Arc::new)?;
                cluster.start_checks(config.cluster.health_check);
                Some(cluster)
            }),
        })
    }

    /// (name, upstream) of every route, forward traffic first, for the metrics.
    pub fn route_rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![(metrics::FORWARD_ROUTE.to_string(), "(any)".to_string())];
        rows.extend(self.classifier.routes.all().map(|r| {
            let upstream = match &r.group {
                Some(group) => format!("group {}", group.name),
                None => r.upstream.authority.to_string(),
            };
            (r.name.to_string(), upstream)
        }));
        rows
    }
}

/// Forward traffic's target: with `[forward] parent`, the parents, over a
/// pool of their own (operator-chosen addresses: not guarded).
fn forward_target(
    config: &Config,
    servers: &ServerFamilies,
    pool: &impl Fn(&UpstreamConfig) -> Arc<Upstream>,
) -> crate::upstream::Target {
    let forward = &config.forward;
    if forward.parent.is_empty() {
        return crate::upstream::Target::default();
    }
    let parents = forward
        .parent
        .iter()
        .map(|p| Parent::new(p.authority.clone(), p.credentials.as_deref()))
        .collect();
    crate::upstream::Target {
        parents: Some(Arc::new(Parents::new(
            parents,
            forward.never_direct,
            pool(&config.upstream),
            servers.parents.clone(),
        ))),
        ..Default::default()
    }
}

/// The `[[upstream.group]]`s by name, their `https://` servers trusting the
/// public roots and `[upstream] tls_ca`.
fn upstream_groups(
    config: &UpstreamConfig,
    servers: &ServerFamilies,
    pool: &impl Fn(&UpstreamConfig) -> Arc<Upstream>,
) -> Result<HashMap<String, Arc<Group>>, String> {
    let cas: Vec<std::path::PathBuf> = config.tls_ca.iter().cloned().collect();
    let mut groups = HashMap::new();
    for group in &config.groups {
        let tls = |url: &crate::config::UpstreamUrl| {
            if !url.tls {
                return Ok(None);
            }
            let client = crate::tls::TlsClient::new(&cas, true, crate::tls::Alpn::Auto)?;
            Ok(Some(OriginTls(Arc::new(client))))
        };
        let made = Group::new(
            group,
            tls,
            |server| servers.server(&group.name, server),
            // A group that overrides [upstream] settings gets a pool of its own.
            group.pool_settings(config).map(|settings| pool(&settings)),
        )?;
        groups.insert(group.name.clone(), made);
    }
    Ok(groups)
}

impl super::Handler {
    /// Applies `config`'s routes, groups, forward-proxy, cache and log
    /// settings to new requests; requests in flight finish with the policy
    /// they started with. `listening`: the proxy's listeners after the
    /// reload. `reopen_log`: `[log] access` or `format` changed.
    pub fn reload(
        &self,
        config: &Config,
        listening: &Listening,
        reopen_log: bool,
    ) -> Result<(), String> {
        let metrics = &self.metrics;
        let pool = |settings: &crate::config::UpstreamConfig| {
            Arc::new(Upstream::new(
                settings,
                metrics.upstream.clone(),
                None,
                self.suspects.clone(),
                self.default_tls.clone(),
            ))
        };
        let policy = Policy::new(
            config,
            listening.addrs.clone(),
            listening.https_port,
            &metrics.servers,
            pool,
        )?;
        // Opened before anything changes: a log that cannot open fails the
        // whole reload.
        let log = if reopen_log {
            let log = AccessLog::open(config.log.access.trim(), config.log.format, metrics.clone())
                .map_err(|e| e.to_string())?;
            Some(log)
        } else {
            None
        };
        metrics.set_routes(policy.route_rows());
        self.guard.update(
            config.forward.deny_destinations.clone(),
            config.forward.allow_loopback,
            listening.addrs.clone(),
        );
        self.cache.retune(&config.cache);
        self.cache_step
            .flights
            .set_timeout(config.cache.collapse_timeout.get());
        self.x_cache.store(config.cache.x_cache, Relaxed);
        self.trace_enabled.store(config.server.trace, Relaxed);
        if let Some(log) = log {
            let old = self.access_log.swap(Arc::new(log));
            // Requests in flight still hold the old log; what it has
            // gathered so far is written out now, the rest as they finish.
            tokio::spawn(async move { old.flush().await });
        }
        // Pooled forward connections were checked against the old rules.
        self.forward_upstream.drop_idle();
        self.policy.store(Arc::new(policy));
        Ok(())
    }
}
