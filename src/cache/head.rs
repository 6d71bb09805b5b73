//! A stored response's header fields, compact: every value in one exact-size
//! allocation, and a boxed table of 8-byte rows (which name, where its value
//! ends). A `HeaderMap` costs about 100 bytes of buckets and index per field
//! on top of its bytes; a `(HeaderName, HeaderValue)` row 72. Standard names
//! are a 2-byte index into a static table (a hit clones them for free); other
//! names are kept once in a side list, empty (no allocation) when an origin
//! sends only standard fields. It also owns its bytes: hyper's values are
//! slices of large read buffers that a stored entry must not keep alive.
//!
//! Lookups are linear: a stored head has a few dozen fields at most, and the
//! hit path reads the policy facts pre-parsed in `StoredResponse`, not these.

use std::borrow::Borrow;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

#[derive(Debug, Clone, Default)]
pub struct StoredHead {
    /// Every value, back to back, in field order.
    block: Bytes,
    fields: Box<[Field]>,
    /// Names not in `STANDARD`, in order of first use.
    custom: Box<[HeaderName]>,
}

/// One field line: its name (an index into `STANDARD`, or `CUSTOM` | an
/// index into the head's own list) and where its value ends in the block; it
/// starts where the previous one ended.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: u16,
    end: u32,
}

const CUSTOM: u16 = 0x8000;

/// The names an origin's response usually carries, most common first (the
/// store looks names up here by a linear scan, once per stored field).
static STANDARD: [HeaderName; 44] = [
    header::DATE,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CACHE_CONTROL,
    header::SERVER,
    header::LAST_MODIFIED,
    header::ETAG,
    header::ACCEPT_RANGES,
    header::EXPIRES,
    header::VARY,
    header::CONTENT_ENCODING,
    header::AGE,
    header::SET_COOKIE,
    header::LOCATION,
    header::CONTENT_LANGUAGE,
    header::CONTENT_DISPOSITION,
    header::CONTENT_LOCATION,
    header::CONTENT_RANGE,
    header::CONTENT_SECURITY_POLICY,
    header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
    header::STRICT_TRANSPORT_SECURITY,
    header::X_CONTENT_TYPE_OPTIONS,
    header::X_FRAME_OPTIONS,
    header::X_XSS_PROTECTION,
    header::REFERRER_POLICY,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
    header::ALT_SVC,
    header::LINK,
    header::PRAGMA,
    header::WARNING,
    header::VIA,
    header::ALLOW,
    header::RETRY_AFTER,
    header::WWW_AUTHENTICATE,
    header::CDN_CACHE_CONTROL,
    header::CACHE_STATUS,
    header::TRAILER,
    header::REFRESH,
    header::X_DNS_PREFETCH_CONTROL,
];

impl StoredHead {
    /// An owned, compact copy of `map` (field order kept).
    pub fn from_map(map: &HeaderMap) -> StoredHead {
        let total: usize = map.values().map(HeaderValue::len).sum();
        let mut block = BytesMut::with_capacity(total);
        let mut custom: Vec<HeaderName> = Vec::new();
        let fields = map
            .iter()
            .map(|(name, value)| {
                block.extend_from_slice(value.as_bytes());
                let name = match STANDARD.iter().position(|s| s == name) {
                    Some(i) => i as u16,
                    None => {
                        let i = custom.iter().position(|c| c == name).unwrap_or_else(|| {
                            custom.push(name.clone());
                            custom.len() - 1
                        });
                        // A head never has 32k distinct names: hyper caps a
                        // head at 100 fields.
                        CUSTOM | i as u16
                    }
                };
                Field {
                    name,
                    end: block.len() as u32,
                }
            })
            .collect();
        StoredHead {
            block: block.freeze(),
            fields,
            custom: custom.into_boxed_slice(),
        }
    }

    fn name(&self, field: Field) -> &HeaderName {
        if field.name & CUSTOM == 0 {
            &STANDARD[field.name as usize]
        } else {
            &self.custom[(field.name & !CUSTOM) as usize]
        }
    }

    /// Every field as (name, start, end) of its value in the block.
    fn rows(&self) -> impl Iterator<Item = (&HeaderName, usize, usize)> + '_ {
        let mut start = 0;
        self.fields.iter().map(move |&f| {
            let row = (self.name(f), start, f.end as usize);
            start = f.end as usize;
            row
        })
    }

    /// The value at `start..end`, sharing the block. Every value was a valid
    /// `HeaderValue` when stored, so the check cannot fail; a value that
    /// somehow did would be skipped, never served.
    fn value(&self, start: usize, end: usize) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(self.block.slice(start..end)).ok()
    }

    /// The first value of `name`.
    pub fn get<N: Borrow<HeaderName>>(&self, name: N) -> Option<HeaderValue> {
        let name = name.borrow();
        let (_, start, end) = self.rows().find(|(n, _, _)| *n == name)?;
        self.value(start, end)
    }

    /// The first value of `name` as text, when it is visible ASCII (as
    /// `HeaderValue::to_str` would give it), borrowed from the block.
    pub fn get_str<N: Borrow<HeaderName>>(&self, name: N) -> Option<&str> {
        let name = name.borrow();
        let (_, start, end) = self.rows().find(|(n, _, _)| *n == name)?;
        let bytes = &self.block[start..end];
        if !bytes.iter().all(|b| *b == b'\t' || (32..127).contains(b)) {
            return None;
        }
        std::str::from_utf8(bytes).ok()
    }

    pub fn get_all<'a, N: Borrow<HeaderName> + 'a>(
        &'a self,
        name: N,
    ) -> impl Iterator<Item = HeaderValue> + 'a {
        self.rows()
            .filter(move |(n, _, _)| *n == name.borrow())
            .filter_map(|(_, start, end)| self.value(start, end))
    }

    pub fn contains_key<N: Borrow<HeaderName>>(&self, name: N) -> bool {
        let name = name.borrow();
        self.rows().any(|(n, _, _)| n == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, HeaderValue)> {
        self.rows()
            .filter_map(|(name, start, end)| Some((name, self.value(start, end)?)))
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

    /// Bytes this head holds: the value block, the rows, and the names
    /// that are not in the static table. For the store's weigher.
    pub fn bytes(&self) -> usize {
        self.block.len()
            + std::mem::size_of_val::<[Field]>(&self.fields)
            + self
                .custom
                .iter()
                .map(|n| n.as_str().len() + std::mem::size_of::<HeaderName>())
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
        assert_eq!(std::mem::size_of::<Field>(), 8);
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(head.get(&cookie).unwrap(), "a=1");
        assert!(head.contains_key(HeaderName::from_static("x-custom")));
        assert!(!head.contains_key(HeaderName::from_static("etag")));
        let back = head.to_map(2);
        assert_eq!(back, map);
        // Values, four 8-byte rows, one custom name.
        assert_eq!(head.bytes(), 10 + 3 + 1 + 3 + 4 * 8 + 8 + 32);
        assert_eq!(head.custom.len(), 1, "each custom name kept once");
    }
}
