//! Purging, by URL, prefix or tag, hard (removed) or soft (made stale, so
//! the next request revalidates while stale-while-revalidate and
//! stale-if-error still apply: a purge never sends a crowd to the origin).

use std::collections::HashSet;
use std::time::SystemTime;

use super::shared::{Failure, Selector};
use super::slices::{self, url_of};
use super::{key, Cache, CacheStats};

/// What a purge did: in this node's memory, and in the shared tier (when
/// there is one). Other nodes drop their memory copies when the order
/// reaches them.
pub struct Purged {
    pub here: usize,
    pub shared: Option<Result<usize, Failure>>,
}

impl Cache {
    /// Purges what `selector` names here and, with a shared tier, in Redis
    /// and (through it) on every other node.
    pub async fn purge(&self, selector: Selector, soft: bool) -> Purged {
        let here = self.purge_here(&selector, soft);
        let shared = match &self.shared {
            Some(tier) => Some(tier.purge(&selector, soft).await),
            None => None,
        };
        if let (Some(tier), Some(Err(failure))) = (&self.shared, &shared) {
            tracing::warn!(
                kind = failure.as_str(),
                "purge not applied to the shared tier"
            );
            tier.stats.error(*failure);
        }
        Purged { here, shared }
    }

    /// Purges what `selector` names in this node's memory only; how many
    /// URLs (a URL selector counts each key).
    pub fn purge_here(&self, selector: &Selector, soft: bool) -> usize {
        // The disk copy goes even for a soft purge: it would otherwise be
        // served fresh once memory lost the softened one.
        let on_disk = self.disk.as_ref().map_or(0, |disk| disk.purge(selector));
        let in_memory = self.purge_memory(selector, soft);
        in_memory.max(on_disk)
    }

    fn purge_memory(&self, selector: &Selector, soft: bool) -> usize {
        match selector {
            Selector::Url { keys } => keys.iter().filter(|k| self.purge_url(k, soft)).count(),
            Selector::Prefix { namespaces, prefix } => {
                let namespaces: Vec<&str> = namespaces.iter().map(String::as_str).collect();
                self.purge_prefix(&namespaces, prefix, soft)
            }
            Selector::Tags { namespaces, tags } => {
                let namespaces: Vec<&str> = namespaces.iter().map(String::as_str).collect();
                self.purge_tags(&namespaces, tags, soft)
            }
        }
    }

    /// An unsafe method's invalidation (RFC 9111 §4.4): here at once, in
    /// the shared tier and on the other nodes in the background (a request
    /// is never held for it). True when something was stored here.
    pub fn invalidate(self: &std::sync::Arc<Self>, key: &str) -> bool {
        let on_disk = self.disk.as_ref().is_some_and(|disk| disk.remove(key));
        let here = self.remove_url(key) || on_disk;
        if let Some(tier) = self.shared.clone() {
            let selector = Selector::Url {
                keys: vec![key.to_string()],
            };
            let stats = tier.stats.clone();
            tokio::spawn(async move {
                if let Err(failure) = tier.purge(&selector, false).await {
                    stats.error(failure);
                }
            });
        }
        here
    }

    /// Purges `key` (its variants, and its slices when it is sliced); true
    /// when something was stored.
    pub fn purge_url(&self, key: &str, soft: bool) -> bool {
        let done = if soft {
            let now = SystemTime::now();
            let size = self.slice_size();
            let manifest = size > 0 && self.store.soften(&slices::manifest_key(key, size), now);
            self.store.soften(key, now) || manifest
        } else {
            self.remove_url(key)
        };
        if done {
            self.count_purge(soft);
        }
        done
    }

    /// Purges every URL in one of `namespaces` under `url_prefix`; how many.
    pub fn purge_prefix(&self, namespaces: &[&str], url_prefix: &str, soft: bool) -> usize {
        // An eager ban: the keys are walked now, so later requests never
        // see the purged objects.
        let keys: Vec<_> = self
            .store
            .iter()
            .map(|(key, _)| key)
            .filter(|key| {
                let (namespace, url) = key::split(key);
                url.starts_with(url_prefix) && namespaces.contains(&namespace)
            })
            .collect();
        let now = SystemTime::now();
        let urls: HashSet<&str> = keys
            .iter()
            .filter(|k| {
                if soft {
                    self.store.soften(k, now)
                } else {
                    self.store.remove(k)
                }
            })
            .map(|k| url_of(k))
            .collect();
        for _ in 0..urls.len() {
            self.count_purge(soft);
        }
        urls.len()
    }

    /// Purges every URL in one of `namespaces` whose stored variants carry
    /// any of `tags`, with all its variants and slices; how many URLs. Only
    /// the tagged keys are visited (the tag index), never the whole store.
    pub fn purge_tags(&self, namespaces: &[&str], tags: &[String], soft: bool) -> usize {
        let urls: HashSet<String> = tags
            .iter()
            .flat_map(|tag| self.store.tagged(tag))
            .filter(|key| namespaces.contains(&key::split(key).0))
            .map(|key| url_of(&key).to_string())
            .collect();
        urls.iter().filter(|url| self.purge_url(url, soft)).count()
    }

    fn count_purge(&self, soft: bool) {
        if soft {
            CacheStats::count(&self.stats.soft_purges);
        } else {
            CacheStats::count(&self.stats.purges);
        }
    }
}
