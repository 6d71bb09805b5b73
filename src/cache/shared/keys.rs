//! Where the shared tier keeps things in Redis.
//!
//! - `vd:{H}:<cache key>`: a hash per URL (H: 16 hex digits of the key's
//!   hash, a Redis Cluster hash tag, so that the URL's lock lives in the
//!   same slot). Field `v` holds the names the variants vary on, and
//!   `r:<digest>` one record per variant (`r:` alone without Vary). One key
//!   per URL means a purge of the URL is one DEL, whatever its variants.
//! - `vdl:{H}`: the lock of a cold key while one node fetches it.
//! - `vdt:<tag>`: the set of URL hashes that carry a tag.
//! - channel `vd:purge`: purge orders, for every node's memory tier.

use http::{HeaderMap, HeaderName};

use crate::cache::key;

pub const PURGE_CHANNEL: &str = "vd:purge";
/// The hash field naming what the variants vary on.
pub const VARY_FIELD: &str = "v";
/// The record field of a response without Vary.
pub const PLAIN_FIELD: &str = "r:";

/// FNV-1a: stable across builds and machines (every node must agree).
pub fn hash(text: &[u8]) -> u64 {
    text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn tag_of(key: &str) -> String {
    format!("{:016x}", hash(key.as_bytes()))
}

pub fn record_key(key: &str) -> String {
    format!("vd:{{{}}}:{key}", tag_of(key))
}

pub fn lock_key(key: &str) -> String {
    format!("vdl:{{{}}}", tag_of(key))
}

pub fn tag_set(tag: &str) -> String {
    format!("vdt:{tag}")
}

/// The cache key inside a record key.
pub fn cache_key_of(record_key: &str) -> Option<&str> {
    record_key
        .strip_prefix("vd:{")?
        .split_once("}:")
        .map(|(_, k)| k)
}

/// The hash field of the variant selected by `names` in `request` (the
/// normalised values, as `key::secondary` computes them for the store).
pub fn variant_field(names: &[HeaderName], request: &HeaderMap) -> String {
    if names.is_empty() {
        return PLAIN_FIELD.to_string();
    }
    variant_field_of(&key::secondary(names, request))
}

/// The hash field of a stored variant with this secondary key.
pub fn variant_field_of(secondary: &[(HeaderName, Option<String>)]) -> String {
    if secondary.is_empty() {
        return PLAIN_FIELD.to_string();
    }
    let mut text = Vec::new();
    for (name, value) in secondary {
        text.extend_from_slice(name.as_str().as_bytes());
        match value {
            // Absent and empty are different selections (§4.1).
            None => text.push(0),
            Some(v) => {
                text.push(1);
                text.extend_from_slice(v.as_bytes());
            }
        }
        text.push(b'\n');
    }
    format!("r:{:016x}", hash(&text))
}

/// `names` as the `v` field holds them.
pub fn vary_value(secondary: &[(HeaderName, Option<String>)]) -> String {
    let names: Vec<&str> = secondary.iter().map(|(n, _)| n.as_str()).collect();
    names.join(",")
}

pub fn vary_names(value: &[u8]) -> Vec<HeaderName> {
    value
        .split(|b| *b == b',')
        .filter_map(|n| HeaderName::from_bytes(n).ok())
        .collect()
}

/// A SCAN pattern for every record key in `namespace` under `url_prefix`.
pub fn prefix_pattern(namespace: &str, url_prefix: &str) -> String {
    let mut pattern = String::from("vd:{*}:");
    for c in namespace
        .chars()
        .chain(std::iter::once(' '))
        .chain(url_prefix.chars())
    {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn names_and_fields() {
        let k = "route:a http://h:80/x?[y]*";
        let record = record_key(k);
        assert!(record.starts_with("vd:{") && record.ends_with(k));
        assert_eq!(cache_key_of(&record), Some(k));
        assert_eq!(&lock_key(k)[4..], &record[3..21]);
        assert_eq!(
            prefix_pattern("route:a", "http://h:80/x?[y]*"),
            "vd:{*}:route:a http://h:80/x\\?\\[y\\]\\**"
        );
        let mut req = HeaderMap::new();
        req.insert(header::ACCEPT_ENCODING, "br, gzip".parse().unwrap());
        let names = [header::ACCEPT_ENCODING];
        let field = variant_field(&names, &req);
        assert_eq!(field, variant_field_of(&key::secondary(&names, &req)));
        assert_ne!(field, variant_field(&names, &HeaderMap::new()));
        assert_eq!(variant_field(&[], &req), PLAIN_FIELD);
        assert_eq!(vary_names(b"accept-encoding,~cookie~id").len(), 2);
    }
}
