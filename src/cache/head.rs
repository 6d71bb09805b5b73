//! A stored response's header fields, compact: every value in one exact-size
//! allocation and a boxed table of (name, value) whose values are slices of
//! it. A `HeaderMap` costs about 100 bytes of buckets and index per field on
//! top of its bytes; this costs the 72-byte table row. It also owns its bytes:
//! hyper's values are slices of large read buffers that a stored entry must
//! not keep alive.
//!
//! Lookups are linear: a stored head has a few dozen fields at most, and the
//! hit path reads the policy facts pre-parsed in `StoredResponse`, not these.

use std::borrow::Borrow;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

#[derive(Debug, Clone, Default)]
pub struct StoredHead {
    fields: Box<[(HeaderName, HeaderValue)]>,
}

impl StoredHead {
    /// An owned, compact copy of `map` (field order kept).
    pub fn from_map(map: &HeaderMap) -> StoredHead {
        let total: usize = map.values().map(HeaderValue::len).sum();
        let mut block = BytesMut::with_capacity(total);
        for value in map.values() {
            block.extend_from_slice(value.as_bytes());
        }
        let block: Bytes = block.freeze();
        let mut at = 0;
        let fields = map
            .iter()
            .map(|(name, value)| {
                let slice = block.slice(at..at + value.len());
                at += value.len();
                let mut copy =
                    HeaderValue::from_maybe_shared(slice).unwrap_or_else(|_| value.clone());
                copy.set_sensitive(value.is_sensitive());
                (name.clone(), copy)
            })
            .collect();
        StoredHead { fields }
    }

    /// The first value of `name`.
    pub fn get<N: Borrow<HeaderName>>(&self, name: N) -> Option<&HeaderValue> {
        let name = name.borrow();
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn get_all<N: Borrow<HeaderName>>(&self, name: N) -> impl Iterator<Item = &HeaderValue> {
        self.fields
            .iter()
            .filter(move |(n, _)| n == name.borrow())
            .map(|(_, v)| v)
    }

    pub fn contains_key<N: Borrow<HeaderName>>(&self, name: N) -> bool {
        let name = name.borrow();
        self.fields.iter().any(|(n, _)| n == name)
    }

    pub fn values(&self) -> impl Iterator<Item = &HeaderValue> {
        self.fields.iter().map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.fields.iter().map(|(n, v)| (n, v))
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// A `HeaderMap` for a response built from this head, with room for
    /// `extra` more fields (Age, Via, Cache-Status...). Values are shared,
    /// not copied.
    pub fn to_map(&self, extra: usize) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len() + extra);
        for (name, value) in self.fields.iter() {
            map.append(name.clone(), value.clone());
        }
        map
    }

    /// Bytes of names and values, for the store's weigher.
    pub fn bytes(&self) -> usize {
        self.fields
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum()
    }
}

impl From<&HeaderMap> for StoredHead {
    fn from(map: &HeaderMap) -> StoredHead {
        StoredHead::from_map(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_field_in_order_and_owns_its_bytes() {
        let mut map = HeaderMap::new();
        map.append("content-type", HeaderValue::from_static("text/plain"));
        map.append("set-cookie", HeaderValue::from_static("a=1"));
        map.append("x-custom", HeaderValue::from_static("v"));
        map.append("set-cookie", HeaderValue::from_static("b=2"));
        let head = StoredHead::from_map(&map);
        assert_eq!(head.len(), 4);
        let cookie = HeaderName::from_static("set-cookie");
        let cookies: Vec<_> = head.get_all(&cookie).collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(head.get(&cookie).unwrap(), "a=1");
        assert!(head.contains_key(HeaderName::from_static("x-custom")));
        assert!(!head.contains_key(HeaderName::from_static("etag")));
        let back = head.to_map(2);
        assert_eq!(back, map);
        assert_eq!(head.bytes(), 12 + 10 + 10 + 3 + 8 + 1 + 10 + 3);
    }
}
