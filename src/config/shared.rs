//! `[cache.shared]`: the shared cache tier on Redis (or Valkey), below
//! every node's memory and above the origin.

use serde::{de, Deserialize, Deserializer};

use super::{Dur, Size};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SharedConfig {
    /// One `redis://[user:password@]host:port[/db]` URL, or several seed
    /// nodes of a Redis Cluster.
    pub redis: RedisUrls,
    #[serde(default)]
    pub mode: SharedMode,
    /// Larger objects stay in memory only.
    #[serde(default = "default_max_object_size")]
    pub max_object_size: Size,
    /// Longest a request waits for Redis; past it the tier is skipped.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_max_object_size() -> Size {
    Size(1 << 20)
}

fn default_timeout() -> Dur {
    Dur(std::time::Duration::from_millis(50))
}

/// `mode`: how the tiers are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum SharedMode {
    /// Memory first (L1), then Redis (L2), then the origin; every fill
    /// writes both.
    #[default]
    #[serde(rename = "l2")]
    L2,
}

/// The Redis URLs, checked when the file is read (scheme, host, port), so
/// that a typo is a `file:line` error, not a tier that never connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrls(pub Vec<String>);

impl<'de> Deserialize<'de> for RedisUrls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let urls = match OneOrMany::deserialize(d)? {
            OneOrMany::One(url) => vec![url],
            OneOrMany::Many(urls) => urls,
        };
        if urls.is_empty() {
            return Err(de::Error::custom(
                "name at least one server: redis = [\"redis://127.0.0.1:6379\"]",
            ));
        }
        for url in &urls {
            check_url(url).map_err(de::Error::custom)?;
        }
        Ok(RedisUrls(urls))
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let shown = redacted(url);
    let Some(rest) = url.strip_prefix("redis://") else {
        return Err(if url.starts_with("rediss://") {
            format!("{shown}: TLS to Redis (rediss://) is not supported yet; use redis:// on a private network")
        } else {
            format!("{shown}: use redis://host:port")
        });
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let port_ok = host_port
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(format!("{shown}: use redis://host:port"));
    }
    Ok(())
}

/// `url` without its password, for messages and the dashboard.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    match authority.rsplit_once('@') {
        Some((_, host)) => {
            let slash = if path.is_empty() { "" } else { "/" };
            format!("{scheme}://***@{host}{slash}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_hidden() {
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("redis://:pw@10.0.0.1:6379/2").is_ok());
        assert!(check_url("redis://127.0.0.1").is_err());
        assert!(check_url("http://127.0.0.1:6379").is_err());
        let tls = check_url("rediss://u:secret@h:6380").unwrap_err();
        assert!(!tls.contains("secret"), "{tls}");
        assert_eq!(redacted("redis://u:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redacted("redis://h:1"), "redis://h:1");
    }
}
