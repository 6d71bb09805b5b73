//! Purges across nodes. The node that receives a purge applies it to Redis
//! itself (a URL is one key; a prefix is found with SCAN, on every cluster
//! node; a tag through its set of URLs), then publishes the order on the
//! `vd:purge` channel, and every other node applies it to its own memory
//! tier. Both halves are needed: the channel alone would leave the Redis
//! copies, which no node owns, and Redis alone would leave the copies each
//! node holds in memory. A node that was cut off from Redis when an order
//! went out misses it; its memory copies then last until they expire
//! (docs/scale-out.md).

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::redis::{Failure, Feed, Redis};
use super::stats::SharedStats;
use super::{keys, record};
use crate::cache::{key, Cache};

/// How long a purge may take in Redis (SCAN of a large keyspace).
const PURGE_BUDGET: Duration = Duration::from_secs(10);

/// What a purge names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "by", rename_all = "lowercase")]
pub enum Selector {
    /// These cache keys (one URL in one or more namespaces).
    Url { keys: Vec<String> },
    Prefix {
        namespaces: Vec<String>,
        prefix: String,
    },
    Tags {
        namespaces: Vec<String>,
        tags: Vec<String>,
    },
}

#[derive(Serialize, Deserialize)]
struct Order {
    from: String,
    soft: bool,
    #[serde(flatten)]
    selector: Selector,
}

/// Applies `selector` to Redis and publishes it; how many URLs it touched.
pub async fn purge(
    redis: &Redis,
    node: &str,
    selector: &Selector,
    soft: bool,
) -> Result<usize, Failure> {
    let record_keys = match selector {
        Selector::Url { keys } => keys.iter().map(|k| keys::record_key(k)).collect(),
        Selector::Prefix { namespaces, prefix } => {
            let mut found = Vec::new();
            for ns in namespaces {
                found.extend(
                    redis
                        .scan(keys::prefix_pattern(ns, prefix), PURGE_BUDGET)
                        .await?,
                );
            }
            found
        }
        Selector::Tags { namespaces, tags } => {
            let mut found = Vec::new();
            for tag in tags {
                found.extend(redis.tagged(tag).await?.into_iter().filter(|k| {
                    keys::cache_key_of(k)
                        .is_some_and(|c| namespaces.iter().any(|ns| ns == key::split(c).0))
                }));
            }
            found.sort();
            found.dedup();
            found
        }
    };
    let touched = if soft {
        let mut n = 0;
        for k in &record_keys {
            if soften(redis, k).await? {
                n += 1;
            }
        }
        n
    } else {
        redis.delete(record_keys, PURGE_BUDGET).await?
    };
    let order = Order {
        from: node.to_string(),
        soft,
        selector: selector.clone(),
    };
    let text = serde_json::to_string(&order).map_err(|_| Failure::Error)?;
    redis.publish(text).await?;
    Ok(touched)
}

/// Makes every variant of one URL stale from now on; true when it was there.
async fn soften(redis: &Redis, record_key: &str) -> Result<bool, Failure> {
    let now = SystemTime::now();
    let records = redis.records(record_key).await?;
    if records.is_empty() {
        return Ok(false);
    }
    let rewritten = records
        .into_iter()
        .filter_map(|(field, bytes)| {
            let entry = record::decode(bytes).ok()?;
            Some((field, record::encode(&entry.expired_copy(now))))
        })
        .collect();
    redis.replace(record_key, rewritten).await?;
    Ok(true)
}

/// Applies the orders other nodes publish to this node's memory, for as
/// long as the cache lives; (re)subscribes on every connect, and keeps
/// `viaduct_shared_up` current.
pub async fn listen(
    redis: Arc<Redis>,
    feed: Feed,
    stats: Arc<SharedStats>,
    node: String,
    cache: Weak<Cache>,
) {
    let Feed {
        mut messages,
        mut connects,
    } = feed;
    let mut subscribed = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            Ok(message) = messages.recv() => {
                let Some(cache) = cache.upgrade() else { return };
                let Some(text) = message.value.as_str() else { continue };
                match serde_json::from_str::<Order>(&text) {
                    Ok(order) if order.from == node => {}
                    Ok(order) => {
                        cache.purge_here(&order.selector, order.soft);
                        stats.purges_received.inc();
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable purge order on the shared tier"),
                }
            },
            Ok(_) = connects.recv() => {
                subscribed = redis.subscribe().await.is_ok();
            },
            _ = tick.tick() => {
                if cache.strong_count() == 0 {
                    return;
                }
                let up = redis.is_connected();
                stats.up.set(i64::from(up));
                if !redis.subscriber_connected() {
                    subscribed = false;
                } else if !subscribed {
                    subscribed = redis.subscribe().await.is_ok();
                }
            }
        }
    }
}
