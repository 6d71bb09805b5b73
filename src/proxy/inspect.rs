//! What the admin API asks the pipeline about the configuration in use:
//! the cache's namespaces and how a URL is keyed in each, the cache peers
//! and parents, and the upstream groups.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Handler;

/// `[cluster]` nodes as (address, up, this node), and `[forward] parent`
/// proxies as (address, up).
pub type Hierarchy = (Vec<(SocketAddr, bool, bool)>, Vec<(String, bool)>);

impl Handler {
    /// (label, namespace) of every part of the cache: forward traffic, then
    /// each reverse route by name.
    pub fn cache_namespaces(&self) -> Vec<(String, String)> {
        let forward = crate::cache::key::FORWARD;
        let policy = self.policy.load();
        std::iter::once((forward.to_string(), forward.to_string()))
            .chain(
                policy
                    .classifier
                    .routes
                    .all()
                    .map(|r| (r.name.to_string(), r.namespace.to_string())),
            )
            .collect()
    }

    /// The key of `url_key` (a namespace-less primary key) in `namespace`,
    /// with that route's `cache_key` query rules applied, as a request for
    /// that URL would be keyed.
    pub fn key_in(&self, namespace: &str, url_key: &str) -> String {
        let policy = self.policy.load();
        let route = policy
            .classifier
            .routes
            .all()
            .find(|r| &*r.namespace == namespace);
        let Some(route) = route else {
            return crate::cache::key::in_namespace(namespace, url_key);
        };
        let path_at = url_key
            .find("://")
            .and_then(|i| url_key[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(url_key.len());
        let (origin, path) = url_key.split_at(path_at);
        let path = route.cache_rules.key.path(path);
        format!("{namespace} {origin}{path}")
    }

    /// `[cluster]` nodes (address, up, this node) and `[forward] parent`
    /// proxies (address, up), for `/stats`.
    pub fn hierarchy(&self) -> Hierarchy {
        let policy = self.policy.load();
        let peers = policy
            .cluster
            .as_ref()
            .map(|c| c.state())
            .unwrap_or_default();
        let parents = policy
            .forward_target
            .parents
            .as_ref()
            .map(|p| p.state())
            .unwrap_or_default();
        (peers, parents)
    }

    /// The cache peer that owns `key` (`[cluster]`), when there are peers.
    pub fn peer_owner(&self, key: &str) -> Option<std::net::SocketAddr> {
        self.policy.load().cluster.as_ref().map(|c| c.owner(key))
    }

    /// Every upstream group, in the configuration's order.
    pub fn upstream_groups(&self) -> Vec<Arc<crate::upstream::Group>> {
        self.policy.load().groups.clone()
    }
}
