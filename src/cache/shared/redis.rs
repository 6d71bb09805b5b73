//! The Redis side of the shared tier, through fred: a small pool of
//! multiplexed connections for commands, one subscriber connection for
//! purge orders. Both reconnect by themselves (every 250 ms, forever);
//! while a connection is down, commands fail at once instead of queueing
//! (`fail_fast`), and every call is bounded by `timeout` besides, so a
//! slow or dead Redis costs a request at most that.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::ExpireOptions;

use super::keys;

/// What is left until `deadline`; a timeout when nothing is.
fn left(deadline: Instant) -> Result<Duration, Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Failure::Timeout);
    }
    Ok(left)
}

/// Why a call to Redis failed: the `kind` label of
/// `viaduct_shared_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Took longer than `timeout`.
    Timeout,
    /// Not connected (down, or reconnecting).
    Unavailable,
    /// Redis refused to store (`maxmemory` reached without eviction).
    Full,
    /// Any other error answer.
    Error,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Unavailable => "unavailable",
            Failure::Full => "full",
            Failure::Error => "error",
        }
    }

    fn of(e: &Error) -> Failure {
        if e.details().contains("OOM") {
            return Failure::Full;
        }
        match e.kind() {
            ErrorKind::Timeout => Failure::Timeout,
            ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Routing => Failure::Unavailable,
            _ => Failure::Error,
        }
    }
}

/// Stores one variant, keeps the URL's key alive as long as its longest
/// variant, and frees the fetch lock this node held (if the token is still
/// ours). A URL whose variants outgrow the limit starts over: Vary on a
/// field with many values must not grow one key forever. The shebang
/// (Redis 7) makes a Redis at `maxmemory` refuse the whole script, instead
/// of running its writes past the limit.
const WRITE: &str = r#"#!lua
local k = KEYS[1]
if redis.call('HLEN', k) > tonumber(ARGV[5]) then redis.call('DEL', k) end
if ARGV[3] == '' then redis.call('HDEL', k, 'v') else redis.call('HSET', k, 'v', ARGV[3]) end
redis.call('HSET', k, ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[4])
if redis.call('TTL', k) < ttl then redis.call('EXPIRE', k, ttl) end
if ARGV[6] ~= '' and redis.call('GET', KEYS[2]) == ARGV[6] then redis.call('DEL', KEYS[2]) end
return 1
"#;

/// Frees a fetch lock if it is still ours (even at `maxmemory`: it frees).
const UNLOCK: &str = r#"#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// What the subscriber connection hears: purge orders published by every
/// node (this one included), and each time it (re)connects, when
/// `subscribe` must be called again.
pub struct Feed {
    pub messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
    pub connects: tokio::sync::broadcast::Receiver<Server>,
}

pub struct Redis {
    pool: Pool,
    subscriber: SubscriberClient,
    timeout: Duration,
    write: Script,
    unlock: Script,
}

/// One variant to store.
pub struct Write<'a> {
    pub key: &'a str,
    pub field: &'a str,
    pub record: Bytes,
    /// The names the URL varies on ("" for none).
    pub vary: &'a str,
    pub ttl_secs: u64,
    pub max_fields: usize,
    pub tags: &'a [std::sync::Arc<str>],
    /// The fetch lock token to free, or "".
    pub token: &'a str,
}

impl Redis {
    /// Starts connecting (in the background: a Redis that is down at start
    /// is connected to when it comes up).
    pub fn connect(urls: &[String], timeout: Duration) -> Result<(Redis, Feed), String> {
        let mut config = Config::from_url(&urls[0]).map_err(|e| e.details().to_string())?;
        if urls.len() > 1 {
            let mut hosts = Vec::new();
            for url in urls {
                let one = Config::from_url(url).map_err(|e| e.details().to_string())?;
                for server in one.server.hosts() {
                    hosts.push((server.host.to_string(), server.port));
                }
            }
            config.server = ServerConfig::new_clustered(hosts);
        }
        config.fail_fast = true;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_millis(500);
                c.internal_command_timeout = Duration::from_secs(2);
                c.max_command_attempts = 1;
                c.tcp.nodelay = Some(true);
            })
            // Only a backstop: every call has its own budget (`call`).
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(10))
            .set_policy(ReconnectPolicy::new_constant(0, 250));
        let pool = builder.build_pool(2).map_err(|e| e.details().to_string())?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| e.details().to_string())?;
        // Listening before connecting: the first connect is an event too.
        let feed = Feed {
            messages: subscriber.message_rx(),
            connects: subscriber.reconnect_rx(),
        };
        ClientLike::connect(&pool);
        subscriber.connect();
        let redis = Redis {
            pool,
            subscriber,
            timeout,
            write: Script::from_lua(WRITE),
            unlock: Script::from_lua(UNLOCK),
        };
        Ok((redis, feed))
    }

    pub fn is_connected(&self) -> bool {
        self.pool.is_connected()
    }

    /// `f` on one of the pool's clients, within `timeout`; fails at once
    /// when no connection is up.
    async fn call<T, F>(&self, timeout: Duration, f: impl FnOnce(Client) -> F) -> Result<T, Failure>
    where
        F: std::future::Future<Output = Result<T, Error>>,
    {
        let client = self.pool.next();
        if !client.is_connected() {
            return Err(Failure::Unavailable);
        }
        match tokio::time::timeout(timeout, f(client.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Failure::of(&e)),
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// The record stored for `key` that `request` selects, if any.
    pub async fn lookup(
        &self,
        key: &str,
        request: &http::HeaderMap,
        deadline: Instant,
    ) -> Result<Option<Bytes>, Failure> {
        let record_key = keys::record_key(key);
        let first: Vec<Option<Bytes>> = self
            .call(left(deadline)?, |c| {
                let k = record_key.clone();
                async move { c.hmget(k, vec![keys::PLAIN_FIELD, keys::VARY_FIELD]).await }
            })
            .await?;
        let mut first = first.into_iter();
        let plain = first.next().flatten();
        let Some(vary) = first.next().flatten() else {
            return Ok(plain);
        };
        let field = keys::variant_field(&keys::vary_names(&vary), request);
        self.call(
            self.timeout,
            |c| async move { c.hget(record_key, field).await },
        )
        .await
    }

    /// Stores a variant (with its tags' index entries).
    pub async fn write(&self, w: Write<'_>) -> Result<(), Failure> {
        let record_key = keys::record_key(w.key);
        let lock_key = keys::lock_key(w.key);
        let args: Vec<Value> = vec![
            w.field.into(),
            Value::Bytes(w.record),
            w.vary.into(),
            (w.ttl_secs.min(i64::MAX as u64) as i64).into(),
            (w.max_fields as i64 + 1).into(),
            w.token.into(),
        ];
        let script = &self.write;
        // Writes are off the request path: they get longer than lookups.
        let budget = self.timeout * 4;
        self.call(budget, |c| {
            let keys = vec![record_key.clone(), lock_key];
            async move {
                let _: Value = script.evalsha_with_reload(&c, keys, args).await?;
                Ok(())
            }
        })
        .await?;
        if w.tags.is_empty() {
            return Ok(());
        }
        let ttl = w.ttl_secs.min(i64::MAX as u64) as i64;
        self.call(budget, |c| async move {
            let pipe = c.pipeline();
            for tag in w.tags {
                let set = keys::tag_set(tag);
                let _: () = pipe.sadd(&set, record_key.as_str()).await?;
                let _: () = pipe.expire(&set, ttl, Some(ExpireOptions::NX)).await?;
                let _: () = pipe.expire(&set, ttl, Some(ExpireOptions::GT)).await?;
            }
            let _: Vec<Value> = pipe.all().await?;
            Ok(())
        })
        .await
    }

    /// Takes the fetch lock of `key` for `hold`; false when another node
    /// holds it.
    pub async fn lock(
        &self,
        key: &str,
        token: &str,
        hold: Duration,
        deadline: Instant,
    ) -> Result<bool, Failure> {
        let lock_key = keys::lock_key(key);
        let ms = hold.as_millis().clamp(1, i64::MAX as u128) as i64;
        let set: Value = self
            .call(left(deadline)?, |c| async move {
                c.set(
                    lock_key,
                    token,
                    Some(Expiration::PX(ms)),
                    Some(SetOptions::NX),
                    false,
                )
                .await
            })
            .await?;
        Ok(!set.is_null())
    }

    pub async fn locked(&self, key: &str) -> Result<bool, Failure> {
        let lock_key = keys::lock_key(key);
        self.call(self.timeout, |c| async move { c.exists(lock_key).await })
            .await
    }

    /// The longest a request may wait for Redis from now.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub async fn unlock(&self, key: &str, token: &str) -> Result<(), Failure> {
        let lock_key = keys::lock_key(key);
        let script = &self.unlock;
        self.call(self.timeout * 4, |c| async move {
            let _: Value = script
                .evalsha_with_reload(&c, vec![lock_key], vec![token])
                .await?;
            Ok(())
        })
        .await
    }

    /// Removes whole URLs (every variant); how many were there.
    pub async fn delete(
        &self,
        record_keys: Vec<String>,
        budget: Duration,
    ) -> Result<usize, Failure> {
        if record_keys.is_empty() {
            return Ok(0);
        }
        let mut removed = 0;
        // One key per DEL: in a cluster, keys of one command must share a slot.
        for chunk in record_keys.chunks(256) {
            let chunk = chunk.to_vec();
            let n: Vec<i64> = self
                .call(budget, |c| async move {
                    let pipe = c.pipeline();
                    for k in chunk {
                        let _: () = pipe.del(k).await?;
                    }
                    pipe.all().await
                })
                .await?;
            removed += n.iter().filter(|d| **d > 0).count();
        }
        Ok(removed)
    }

    /// Every variant record of a URL, by field.
    pub async fn records(&self, record_key: &str) -> Result<Vec<(String, Bytes)>, Failure> {
        let record_key = record_key.to_string();
        let all: std::collections::HashMap<String, Bytes> = self
            .call(
                self.timeout * 4,
                |c| async move { c.hgetall(record_key).await },
            )
            .await?;
        Ok(all
            .into_iter()
            .filter(|(field, _)| field.starts_with("r:"))
            .collect())
    }

    /// Puts back rewritten records (a soft purge), keeping the key's TTL.
    pub async fn replace(
        &self,
        record_key: &str,
        records: Vec<(String, Bytes)>,
    ) -> Result<(), Failure> {
        if records.is_empty() {
            return Ok(());
        }
        let record_key = record_key.to_string();
        self.call(self.timeout * 4, |c| async move {
            let pipe = c.pipeline();
            for (field, record) in records {
                // HSET XX does not exist: a variant purged meanwhile may come
                // back, stale, which only costs a revalidation.
                let _: () = pipe
                    .hset(&record_key, (field, Value::Bytes(record)))
                    .await?;
            }
            let _: Vec<Value> = pipe.all().await?;
            Ok(())
        })
        .await
    }

    /// Every record key matching `pattern` (SCAN, on every cluster node).
    pub async fn scan(&self, pattern: String, budget: Duration) -> Result<Vec<String>, Failure> {
        use futures_util::StreamExt;
        let client = self.pool.next().clone();
        if !client.is_connected() {
            return Err(Failure::Unavailable);
        }
        let walk = async move {
            let mut found = Vec::new();
            let mut stream = if client.is_clustered() {
                client
                    .scan_cluster_buffered(pattern, Some(1000), None)
                    .boxed()
            } else {
                client.scan_buffered(pattern, Some(1000), None).boxed()
            };
            while let Some(key) = stream.next().await {
                let key = key?;
                if let Some(text) = key.as_str() {
                    found.push(text.to_string());
                }
            }
            Ok::<_, Error>(found)
        };
        match tokio::time::timeout(budget, walk).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => Err(Failure::of(&e)),
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// The record keys a tag was stored with.
    pub async fn tagged(&self, tag: &str) -> Result<Vec<String>, Failure> {
        let set = keys::tag_set(tag);
        self.call(self.timeout * 4, |c| async move { c.smembers(set).await })
            .await
    }

    pub async fn publish(&self, message: String) -> Result<(), Failure> {
        self.call(self.timeout * 4, |c| async move {
            let _: i64 = c.publish(keys::PURGE_CHANNEL, message).await?;
            Ok(())
        })
        .await
    }

    pub fn subscriber_connected(&self) -> bool {
        self.subscriber.is_connected()
    }

    pub async fn subscribe(&self) -> Result<(), Failure> {
        self.subscriber
            .subscribe(keys::PURGE_CHANNEL)
            .await
            .map_err(|e| Failure::of(&e))
    }
}
