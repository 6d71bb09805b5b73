//! A stored response's header fields, compact: every value in one exact-size
//! allocation and a boxed table of (name, where the value lies). A
//! `HeaderMap` costs about 100 bytes of buckets and index per field on top of
//! its bytes; this costs a 40-byte table row. It also owns its bytes:
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
    /// Every value, back to back.
    block: Bytes,
    fields: Box<[Field]>,
}

/// One field line: its name (standard names take no allocation) and where
/// its value lies in the block. 40 bytes, where a `(HeaderName, HeaderValue)`
/// row is 72 and a `HeaderMap` bucket about 100.
#[derive(Debug, Clone)]
struct Field {
    name: HeaderName,
    start: u32,
    end: u32,
}

impl StoredHead {
    /// An owned, compact copy of `map` (field order kept).
    pub fn from_map(map: &HeaderMap) -> StoredHead {
        let total: usize = map.values().map(HeaderValue::len).sum();
        let mut block = BytesMut::with_capacity(total);
        let fields = map
            .iter()
            .map(|(name, value)| {
                let start = block.len() as u32;
                block.extend_from_slice(value.as_bytes());
                Field {
                    name: name.clone(),
                    start,
                    end: block.len() as u32,
                }
            })
            .collect();
        StoredHead {
            block: block.freeze(),
            fields,
        }
    }

    /// The value of `field`, sharing the block. Every value was a valid
    /// `HeaderValue` when stored, so the check cannot fail; a value that
    /// somehow did would be skipped, never served.
    fn value(&self, field: &Field) -> Option<HeaderValue> {
        let bytes = self.block.slice(field.start as usize..field.end as usize);
        HeaderValue::from_maybe_shared(bytes).ok()
    }

    /// The first value of `name`.
    pub fn get<N: Borrow<HeaderName>>(&self, name: N) -> Option<HeaderValue> {
        let name = name.borrow();
        let field = self.fields.iter().find(|f| f.name == *name)?;
        self.value(field)
    }

    /// The first value of `name` as text, when it is visible ASCII (as
    /// `HeaderValue::to_str` would give it), borrowed from the block.
    pub fn get_str<N: Borrow<HeaderName>>(&self, name: N) -> Option<&str> {
        let name = name.borrow();
        let field = self.fields.iter().find(|f| f.name == *name)?;
        let bytes = &self.block[field.start as usize..field.end as usize];
        if !bytes.iter().all(|b| *b == b'\t' || (32..127).contains(b)) {
            return None;
        }
        std::str::from_utf8(bytes).ok()
    }

    pub fn get_all<'a, N: Borrow<HeaderName> + 'a>(
        &'a self,
        name: N,
    ) -> impl Iterator<Item = HeaderValue> + 'a {
        self.fields
            .iter()
            .filter(move |f| f.name == *name.borrow())
            .filter_map(|f| self.value(f))
    }

    pub fn contains_key<N: Borrow<HeaderName>>(&self, name: N) -> bool {
        let name = name.borrow();
        self.fields.iter().any(|f| f.name == *name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, HeaderValue)> {
        self.fields
            .iter()
            .filter_map(|f| Some((&f.name, self.value(f)?)))
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// A `HeaderMap` for a response built from this head, with room for
    /// `extra` more fields (Age, Via, Cache-Status...). Values share the
    /// block.
    pub fn to_map(&self, extra: usize) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len() + extra);
        for (name, value) in self.iter() {
            map.append(name.clone(), value);
        }
        map
    }

    /// Bytes of names and values, for the store's weigher.
    pub fn bytes(&self) -> usize {
        self.block.len()
            + self
                .fields
                .iter()
                .map(|f| f.name.as_str().len())
                .sum::<usize>()
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
        assert_eq!(std::mem::size_of::<Field>(), 40);
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(head.get(&cookie).unwrap(), "a=1");
        assert!(head.contains_key(HeaderName::from_static("x-custom")));
        assert!(!head.contains_key(HeaderName::from_static("etag")));
        let back = head.to_map(2);
        assert_eq!(back, map);
        assert_eq!(head.bytes(), 12 + 10 + 10 + 3 + 8 + 1 + 10 + 3);
    }
}
