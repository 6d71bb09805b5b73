//! One stored response as one compact binary record, for the tiers that
//! keep entries outside this process's memory (the shared Redis tier, and
//! the disk tier). A record holds everything an `Entry` holds: the head,
//! the policy facts as the fill decided them (a TTL rule or a soft purge
//! may have changed them, so they are not re-derived from the head), the
//! Vary secondary key, the tags and the body. It starts with a format
//! version and a CRC-32 of the rest: a record from another version, cut
//! short or damaged, decodes to an error and is never served.
//!
//! Layout (integers big-endian): `"VDC1"`, crc32, status u16, request and
//! response time (ns since the epoch, u64 each), age u32, Date / Expires /
//! Last-Modified (tag u8, secs u64), the response control, the head
//! fields, the secondary key, the tags, then the body (u32 length + bytes)
//! last, so that decoding shares it with the record's buffer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::control::{Delta, FieldsDirective, ResponseControl};
use super::head::StoredHead;
use super::policy::StoredResponse;
use super::store::Entry;

const MAGIC: &[u8; 4] = b"VDC1";

/// Why a record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Another format (or not a record at all).
    Version,
    /// The checksum does not match: damaged or cut short.
    Checksum,
    /// A length or value that does not fit (cannot happen when the checksum
    /// matched a record this code wrote).
    Malformed,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bad::Version => "unknown record version",
            Bad::Checksum => "record checksum mismatch",
            Bad::Malformed => "malformed record",
        })
    }
}

/// The record of `entry`.
pub fn encode(entry: &Entry) -> Bytes {
    encode_with(entry, &entry.body)
}

/// The record of `entry` without its body (the disk tier keeps the body
/// after it, checked block by block: `disk/format.rs`).
pub fn encode_head(entry: &Entry) -> Bytes {
    encode_with(entry, &[])
}

fn encode_with(entry: &Entry, body: &[u8]) -> Bytes {
    let head = &entry.head;
    let fields = head.headers.bytes() + head.headers.len() * 8;
    let mut out = BytesMut::with_capacity(128 + fields + body.len());
    out.put_slice(MAGIC);
    out.put_u32(0); // the checksum, written last
    out.put_u16(head.status.as_u16());
    out.put_u64(nanos(head.request_time));
    out.put_u64(nanos(head.response_time));
    out.put_u32(head.age);
    for date in [head.date, head.expires, head.last_modified] {
        put_date(&mut out, date);
    }
    put_control(&mut out, &head.control);
    out.put_u16(head.headers.len() as u16);
    for (name, value) in head.headers.iter() {
        put_str(&mut out, name.as_str().as_bytes());
        put_long(&mut out, value.as_bytes());
    }
    out.put_u16(entry.secondary.len() as u16);
    for (name, value) in entry.secondary.iter() {
        put_str(&mut out, name.as_str().as_bytes());
        match value {
            None => out.put_u8(0),
            Some(value) => {
                out.put_u8(1);
                put_long(&mut out, value.as_bytes());
            }
        }
    }
    out.put_u16(entry.tags().len() as u16);
    for tag in entry.tags() {
        put_str(&mut out, tag.as_bytes());
    }
    put_long(&mut out, body);
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// The entry in `record`; its body shares the record's buffer.
pub fn decode(record: Bytes) -> Result<Entry, Bad> {
    if record.len() < 8 || &record[..4] != MAGIC {
        return Err(Bad::Version);
    }
    let crc = u32::from_be_bytes([record[4], record[5], record[6], record[7]]);
    if crc32fast::hash(&record[8..]) != crc {
        return Err(Bad::Checksum);
    }
    let mut r = Reader {
        buf: &record,
        at: 8,
    };
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| Bad::Malformed)?;
    let request_time = from_nanos(r.u64()?);
    let response_time = from_nanos(r.u64()?);
    let age = r.u32()?;
    let date = r.date()?;
    let expires = r.date()?;
    let last_modified = r.date()?;
    let control = r.control()?;
    let count = r.u16()?;
    let mut headers = HeaderMap::with_capacity(count as usize);
    for _ in 0..count {
        let name = r.name()?;
        let value = HeaderValue::from_bytes(r.long()?).map_err(|_| Bad::Malformed)?;
        headers.append(name, value);
    }
    let count = r.u16()?;
    let mut secondary = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name = r.name()?;
        let value = match r.u8()? {
            0 => None,
            _ => Some(r.text(true)?.to_string()),
        };
        secondary.push((name, value));
    }
    let count = r.u16()?;
    let mut tags = Vec::with_capacity(count as usize);
    for _ in 0..count {
        tags.push(std::sync::Arc::<str>::from(r.text(false)?));
    }
    let len = r.u32()? as usize;
    let start = r.at;
    if record.len() - start != len {
        return Err(Bad::Malformed);
    }
    let body = record.slice(start..);
    let head = StoredResponse {
        status,
        headers: StoredHead::from_map(&headers),
        control,
        date,
        expires,
        last_modified,
        age,
        request_time,
        response_time,
    };
    Ok(Entry::new(head, body, secondary).with_tags(tags.into_boxed_slice()))
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn from_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

fn put_str(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

fn put_long(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn put_date(out: &mut BytesMut, date: Option<Option<SystemTime>>) {
    match date {
        None => out.put_u8(0),
        Some(None) => out.put_u8(1),
        Some(Some(t)) => {
            out.put_u8(2);
            out.put_u64(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        }
    }
}

fn put_delta(out: &mut BytesMut, delta: Delta) {
    match delta {
        Delta::Absent => out.put_u8(0),
        Delta::Seconds(n) => {
            out.put_u8(1);
            out.put_u32(n);
        }
        Delta::Invalid => out.put_u8(2),
    }
}

fn put_fields(out: &mut BytesMut, directive: &FieldsDirective) {
    match directive {
        FieldsDirective::Absent => out.put_u8(0),
        FieldsDirective::All => out.put_u8(1),
        FieldsDirective::Fields(names) => {
            out.put_u8(2);
            out.put_u16(names.len() as u16);
            for name in names.iter() {
                put_str(out, name.as_str().as_bytes());
            }
        }
    }
}

const NO_STORE: u16 = 1;
const PUBLIC: u16 = 1 << 1;
const MUST_REVALIDATE: u16 = 1 << 2;
const PROXY_REVALIDATE: u16 = 1 << 3;
const IMMUTABLE: u16 = 1 << 4;
const MUST_UNDERSTAND: u16 = 1 << 5;
const TARGETED: u16 = 1 << 6;
const SWR: u16 = 1 << 7;
const SIE: u16 = 1 << 8;

fn put_control(out: &mut BytesMut, c: &ResponseControl) {
    let flags = [
        (c.no_store, NO_STORE),
        (c.public, PUBLIC),
        (c.must_revalidate, MUST_REVALIDATE),
        (c.proxy_revalidate, PROXY_REVALIDATE),
        (c.immutable, IMMUTABLE),
        (c.must_understand, MUST_UNDERSTAND),
        (c.targeted, TARGETED),
        (c.stale_while_revalidate.is_some(), SWR),
        (c.stale_if_error.is_some(), SIE),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0u16, |acc, (_, bit)| acc | bit);
    out.put_u16(flags);
    put_delta(out, c.max_age);
    put_delta(out, c.s_maxage);
    put_fields(out, &c.no_cache);
    put_fields(out, &c.private);
    out.put_u32(c.stale_while_revalidate.unwrap_or(0));
    out.put_u32(c.stale_if_error.unwrap_or(0));
}

/// Reads a record front to back; every read checks its bounds.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        let end = self.at.checked_add(n).ok_or(Bad::Malformed)?;
        let bytes = self.buf.get(self.at..end).ok_or(Bad::Malformed)?;
        self.at = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, Bad> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Bad> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Bad> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Bad> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn short(&mut self) -> Result<&'a [u8], Bad> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    fn long(&mut self) -> Result<&'a [u8], Bad> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn text(&mut self, long: bool) -> Result<&'a str, Bad> {
        let bytes = if long { self.long()? } else { self.short()? };
        std::str::from_utf8(bytes).map_err(|_| Bad::Malformed)
    }

    fn name(&mut self) -> Result<HeaderName, Bad> {
        HeaderName::from_bytes(self.short()?).map_err(|_| Bad::Malformed)
    }

    fn date(&mut self) -> Result<Option<Option<SystemTime>>, Bad> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(None),
            2 => Some(Some(UNIX_EPOCH + Duration::from_secs(self.u64()?))),
            _ => return Err(Bad::Malformed),
        })
    }

    fn delta(&mut self) -> Result<Delta, Bad> {
        Ok(match self.u8()? {
            0 => Delta::Absent,
            1 => Delta::Seconds(self.u32()?),
            2 => Delta::Invalid,
            _ => return Err(Bad::Malformed),
        })
    }

    fn fields(&mut self) -> Result<FieldsDirective, Bad> {
        Ok(match self.u8()? {
            0 => FieldsDirective::Absent,
            1 => FieldsDirective::All,
            2 => {
                let n = self.u16()?;
                let names = (0..n).map(|_| self.name()).collect::<Result<Vec<_>, _>>()?;
                FieldsDirective::Fields(names.into_boxed_slice())
            }
            _ => return Err(Bad::Malformed),
        })
    }

    fn control(&mut self) -> Result<ResponseControl, Bad> {
        let flags = self.u16()?;
        let on = |bit: u16| flags & bit != 0;
        let max_age = self.delta()?;
        let s_maxage = self.delta()?;
        let no_cache = self.fields()?;
        let private = self.fields()?;
        let swr = self.u32()?;
        let sie = self.u32()?;
        Ok(ResponseControl {
            max_age,
            s_maxage,
            no_cache,
            private,
            no_store: on(NO_STORE),
            public: on(PUBLIC),
            must_revalidate: on(MUST_REVALIDATE),
            proxy_revalidate: on(PROXY_REVALIDATE),
            immutable: on(IMMUTABLE),
            must_understand: on(MUST_UNDERSTAND),
            stale_while_revalidate: on(SWR).then_some(swr),
            stale_if_error: on(SIE).then_some(sie),
            targeted: on(TARGETED),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key;
    use crate::cache::policy::tests_support::{headers, stored};
    use http::header;

    fn sample() -> Entry {
        let mut head = stored(
            200,
            &[
                (
                    "cache-control",
                    "max-age=60, no-cache=\"set-cookie\", stale-if-error=30",
                ),
                ("content-type", "text/plain"),
                ("etag", "\"v1\""),
                ("x-custom", "a"),
                ("x-custom", "b"),
                ("vary", "accept-encoding"),
            ],
        );
        head.set_lifetime(17);
        let req = headers(&[("accept-encoding", "gzip, br")]);
        let secondary = key::secondary(
            &[header::ACCEPT_ENCODING, HeaderName::from_static("x-absent")],
            &req,
        );
        Entry::new(head, Bytes::from_static(b"hello body"), secondary)
            .with_tags(vec!["a".into(), "tag-b".into()].into_boxed_slice())
    }

    #[test]
    fn round_trips_every_fact() {
        let entry = sample();
        let back = decode(encode(&entry)).expect("decodes");
        assert_eq!(back.head.status, entry.head.status);
        assert_eq!(back.head.control, entry.head.control);
        assert_eq!(back.head.control.max_age, Delta::Seconds(17));
        assert_eq!(back.head.date, entry.head.date);
        assert_eq!(back.head.expires, entry.head.expires);
        assert_eq!(back.head.age, entry.head.age);
        assert_eq!(back.head.request_time, entry.head.request_time);
        assert_eq!(back.head.response_time, entry.head.response_time);
        assert_eq!(back.head.headers.to_map(0), entry.head.headers.to_map(0));
        assert_eq!(back.secondary, entry.secondary);
        assert_eq!(back.tags(), entry.tags());
        assert_eq!(back.body, entry.body);
        assert_eq!(back.weight(), entry.weight());
    }

    #[test]
    fn refuses_damage_and_other_versions() {
        let record = encode(&sample());
        for at in [9, record.len() / 2, record.len() - 1] {
            let mut bad = record.to_vec();
            bad[at] ^= 0x40;
            assert_eq!(decode(Bytes::from(bad)).err(), Some(Bad::Checksum));
        }
        let cut = record.slice(..record.len() - 3);
        assert_eq!(decode(cut).err(), Some(Bad::Checksum));
        let mut other = record.to_vec();
        other[3] = b'9';
        assert_eq!(decode(Bytes::from(other)).err(), Some(Bad::Version));
        assert_eq!(decode(Bytes::new()).err(), Some(Bad::Version));
    }
}
