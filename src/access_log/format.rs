//! Access log line formats.
//!
//! - `combined`: Apache/nginx combined, then duration (s), upstream status,
//!   upstream time (s), cache status, and `incomplete` when the body did not
//!   reach its end:
//!   `127.0.0.1 - - [24/Nov/2026:13:55:36 +0000] "GET http://a/ HTTP/1.1" 200 512 "-" "curl/8" 0.004 200 0.003 miss`
//! - `json`: one object per line with the same facts, named.
//! - `squid`: Squid's native format, with Squid's result codes (TCP_HIT,
//!   TCP_MISS, TCP_REFRESH_MODIFIED, ...): `time.ms elapsed-ms client
//!   code/status bytes method URL - hierarchy/peer content-type`. Bytes are
//!   body bytes.

use std::fmt;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use super::{Outcome, RequestInfo};
use crate::cache::{CacheStatus, Fwd};
use crate::config::AccessFormat;

/// One finished request, as the formats see it.
pub struct Record<'a> {
    pub request: &'a RequestInfo,
    pub wall: SystemTime,
    pub outcome: &'a Outcome,
    pub bytes: u64,
    pub seconds: f64,
    pub complete: bool,
}

// Lines are built in a reused buffer: `write!` into a Vec<u8> and the escaping
// adapters below do not allocate.

/// Appends one line, ending in `\n`.
pub fn write(format: AccessFormat, r: &Record, line: &mut Vec<u8>) {
    match format {
        AccessFormat::Combined => combined(r, line),
        AccessFormat::Json => json(r, line),
        AccessFormat::Squid => squid(r, line),
    }
    line.push(b'\n');
}

fn combined(r: &Record, line: &mut Vec<u8>) {
    let q = r.request;
    let o = r.outcome;
    push_ip(line, q.client);
    line.extend_from_slice(b" - - [");
    clf_time(r.wall, line);
    line.extend_from_slice(b"] \"");
    push_escaped(line, q.method.as_str().as_bytes());
    line.push(b' ');
    push_uri(line, &q.target);
    line.push(b' ');
    push_version(line, q.version);
    line.extend_from_slice(b"\" ");
    push_number(line, o.status.into(), 1);
    line.push(b' ');
    push_number(line, r.bytes, 1);
    line.extend_from_slice(b" \"");
    push_header(line, q.referer.as_ref());
    line.extend_from_slice(b"\" \"");
    push_header(line, q.user_agent.as_ref());
    let _ = write!(line, "\" {:.3} ", r.seconds);
    match o.upstream_status {
        Some(s) => push_number(line, s.into(), 1),
        None => line.push(b'-'),
    }
    match o.upstream_time {
        Some(t) => {
            let _ = write!(line, " {:.3}", t.as_secs_f64());
        }
        None => line.extend_from_slice(b" -"),
    }
    line.push(b' ');
    line.extend_from_slice(o.cache.as_str().as_bytes());
    if !r.complete {
        // The response body did not reach its end (client left, origin failed).
        line.extend_from_slice(b" incomplete");
    }
}

/// Keys in sorted order, as the serde_json map this replaced wrote them.
fn json(r: &Record, line: &mut Vec<u8>) {
    let q = r.request;
    let o = r.outcome;
    line.extend_from_slice(b"{\"bytes\":");
    push_number(line, r.bytes, 1);
    line.extend_from_slice(b",\"cache\":");
    json_str(line, o.cache.as_str());
    line.extend_from_slice(b",\"cache_status\":");
    json_header(line, o.cache_header.as_ref());
    line.extend_from_slice(b",\"client\":\"");
    // Digits, dots, hex and colons: nothing to escape.
    push_ip(line, q.client);
    line.extend_from_slice(b"\",\"complete\":");
    line.extend_from_slice(if r.complete { b"true" } else { b"false" });
    line.extend_from_slice(b",\"duration_ms\":");
    json_f64(line, (r.seconds * 1000.0 * 1000.0).round() / 1000.0);
    line.extend_from_slice(b",\"method\":");
    json_str(line, q.method.as_str());
    line.extend_from_slice(b",\"mode\":");
    json_str(line, o.mode.as_str());
    line.extend_from_slice(b",\"referer\":");
    json_header(line, q.referer.as_ref());
    line.extend_from_slice(b",\"route\":");
    json_opt_str(line, o.route.as_deref());
    line.extend_from_slice(b",\"status\":");
    push_number(line, o.status.into(), 1);
    line.extend_from_slice(b",\"time\":\"");
    iso_time(r.wall, line);
    line.extend_from_slice(b"\",\"upstream\":");
    json_opt_str(line, o.upstream.as_deref());
    line.extend_from_slice(b",\"upstream_ms\":");
    match o.upstream_time {
        Some(t) => json_f64(line, (t.as_secs_f64() * 1_000_000.0).round() / 1000.0),
        None => line.extend_from_slice(b"null"),
    }
    line.extend_from_slice(b",\"upstream_status\":");
    match o.upstream_status {
        Some(s) => push_number(line, s.into(), 1),
        None => line.extend_from_slice(b"null"),
    }
    line.extend_from_slice(b",\"url\":\"");
    json_fmt(line, format_args!("{}", q.target));
    line.extend_from_slice(b"\",\"user_agent\":");
    json_header(line, q.user_agent.as_ref());
    line.extend_from_slice(b",\"version\":\"");
    push_version(line, q.version);
    line.extend_from_slice(b"\"}");
}

fn squid(r: &Record, line: &mut Vec<u8>) {
    let q = r.request;
    let o = r.outcome;
    let since = r.wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let _ = write!(
        line,
        "{}.{:03} {:>6} {} {}/{:03} {} ",
        since.as_secs(),
        since.subsec_millis(),
        (r.seconds * 1000.0) as u64,
        q.client,
        squid_code(o.cache, o.status),
        o.status,
        r.bytes
    );
    push_escaped(line, q.method.as_str().as_bytes());
    line.push(b' ');
    push_uri(line, &q.target);
    line.extend_from_slice(b" - ");
    match (&o.upstream, o.upstream_status) {
        (Some(peer), Some(_)) => {
            let host = peer.rsplit_once(':').map_or(&**peer, |(h, _)| h);
            line.extend_from_slice(b"HIER_DIRECT/");
            line.extend_from_slice(host.as_bytes());
        }
        _ => line.extend_from_slice(b"HIER_NONE/-"),
    }
    line.push(b' ');
    match &o.content_type {
        Some(ct) => push_escaped(
            line,
            ct.as_bytes()
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default(),
        ),
        None => line.push(b'-'),
    }
}

/// Squid's result codes for what the cache did.
fn squid_code(status: CacheStatus, http_status: u16) -> &'static str {
    match status {
        CacheStatus::Hit { .. } if http_status == 304 => "TCP_IMS_HIT",
        CacheStatus::Hit { .. } => "TCP_MEM_HIT",
        CacheStatus::Collapsed { .. } => "TCP_CF_HIT",
        CacheStatus::StaleServed {
            reason: "stale-if-error",
            ..
        } => "TCP_REFRESH_FAIL_OLD",
        CacheStatus::StaleServed { .. } => "TCP_STALE_HIT",
        CacheStatus::Forward {
            fwd: Fwd::Stale | Fwd::Request,
            status: Some(304),
            ..
        } => "TCP_REFRESH_UNMODIFIED",
        CacheStatus::Forward {
            fwd: Fwd::Stale | Fwd::Request,
            status: Some(_),
            ..
        } => "TCP_REFRESH_MODIFIED",
        CacheStatus::Forward {
            fwd: Fwd::Stale | Fwd::Request,
            status: None,
            ..
        } => "TCP_REFRESH_FAIL_ERR",
        CacheStatus::Forward { .. } => "TCP_MISS",
        CacheStatus::Local { .. } if http_status == 403 || http_status == 407 => "TCP_DENIED",
        CacheStatus::Local { .. } => "NONE",
    }
}

/// `2026-11-24T13:55:36.123Z`
fn iso_time(t: SystemTime, line: &mut Vec<u8>) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    push_number(line, y as u64, 4);
    line.push(b'-');
    push_number(line, m.into(), 2);
    line.push(b'-');
    push_number(line, d.into(), 2);
    line.push(b'T');
    push_clock(line, rem);
    line.push(b'.');
    push_number(line, since.subsec_millis().into(), 3);
    line.push(b'Z');
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `10/Oct/2000:13:55:36 +0000` in UTC.
fn clf_time(t: SystemTime, line: &mut Vec<u8>) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    push_number(line, day.into(), 2);
    line.push(b'/');
    line.extend_from_slice(MONTHS[(month - 1) as usize].as_bytes());
    line.push(b'/');
    push_number(line, year as u64, 1);
    line.push(b':');
    push_clock(line, rem);
    line.extend_from_slice(b" +0000");
}

/// `13:55:36` from seconds into the day.
fn push_clock(line: &mut Vec<u8>, secs: u64) {
    push_number(line, secs / 3600, 2);
    line.push(b':');
    push_number(line, secs % 3600 / 60, 2);
    line.push(b':');
    push_number(line, secs % 60, 2);
}

/// An IPv4 address written octet by octet (the common case, without
/// `core::fmt`); IPv6 through `Display`.
fn push_ip(line: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    line.push(b'.');
                }
                push_number(line, octet.into(), 1);
            }
        }
        v6 => {
            let _ = write!(line, "{v6}");
        }
    }
}

/// The version as `Debug` writes it (`HTTP/1.1`).
fn push_version(line: &mut Vec<u8>, version: http::Version) {
    let text: &[u8] = match version {
        http::Version::HTTP_09 => b"HTTP/0.9",
        http::Version::HTTP_10 => b"HTTP/1.0",
        http::Version::HTTP_11 => b"HTTP/1.1",
        http::Version::HTTP_2 => b"HTTP/2.0",
        http::Version::HTTP_3 => b"HTTP/3.0",
        other => {
            let _ = write!(line, "{other:?}");
            return;
        }
    };
    line.extend_from_slice(text);
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn push_number(line: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while n > 0 || digits.len() - at < width.max(1) {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    line.extend_from_slice(&digits[at..]);
}

fn push_header(line: &mut Vec<u8>, value: Option<&HeaderValue>) {
    match value {
        Some(v) => push_escaped(line, v.as_bytes()),
        None => line.push(b'-'),
    }
}

/// The Uri through `Display`, escaped, without an intermediate String.
fn push_uri(line: &mut Vec<u8>, uri: &http::Uri) {
    let _ = fmt::Write::write_fmt(&mut LogEscaped(line), format_args!("{uri}"));
}

/// Formatted text as the inside of a JSON string.
fn json_fmt(line: &mut Vec<u8>, args: fmt::Arguments) {
    let _ = fmt::Write::write_fmt(&mut JsonEscaped(line), args);
}

/// Keeps one request on one line and quotes intact (no log injection).
fn push_escaped(line: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' => line.extend_from_slice(&[b'\\', b]),
            0x20..=0x7e => line.push(b),
            _ => line.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Escapes what `Display` writes, for the combined and squid lines.
struct LogEscaped<'a>(&'a mut Vec<u8>);

impl fmt::Write for LogEscaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_escaped(self.0, s.as_bytes());
        Ok(())
    }
}

/// Escapes what `Display` writes as the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut Vec<u8>);

impl fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        json_escape(self.0, s);
        Ok(())
    }
}

/// JSON string escaping as serde_json does it: quote, backslash, and control
/// characters; everything else (non-ASCII included) as is.
fn json_escape(line: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f => 0,
            _ => continue,
        };
        line.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        if short == 0 {
            line.extend_from_slice(b"\\u00");
            line.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            line.extend_from_slice(&[b'\\', short]);
        }
    }
    line.extend_from_slice(&bytes[plain..]);
}

fn json_str(line: &mut Vec<u8>, s: &str) {
    line.push(b'"');
    json_escape(line, s);
    line.push(b'"');
}

fn json_opt_str(line: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(line, s),
        None => line.extend_from_slice(b"null"),
    }
}

/// A header value as a JSON string, invalid UTF-8 replaced by U+FFFD (as
/// `String::from_utf8_lossy` does).
fn json_header(line: &mut Vec<u8>, value: Option<&HeaderValue>) {
    let Some(value) = value else {
        line.extend_from_slice(b"null");
        return;
    };
    line.push(b'"');
    for chunk in value.as_bytes().utf8_chunks() {
        json_escape(line, chunk.valid());
        if !chunk.invalid().is_empty() {
            line.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
    line.push(b'"');
}

/// A float as serde_json writes it: shortest round-trip digits, `.0` on whole
/// numbers, `null` when not finite.
fn json_f64(line: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        line.extend_from_slice(b"null");
        return;
    }
    let start = line.len();
    let _ = write!(line, "{v}");
    if !line[start..].contains(&b'.') {
        line.extend_from_slice(b".0");
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::{Outcome, RequestInfo};
    use crate::cache::Stored;
    use crate::metrics::Mode;
    use http::{Method, Version};
    use std::time::Duration;

    fn request() -> RequestInfo {
        RequestInfo {
            client: "127.0.0.1".parse().unwrap(),
            method: Method::GET,
            target: "http://a.test/x".parse().unwrap(),
            version: Version::HTTP_11,
            referer: None,
            user_agent: Some(HeaderValue::from_static("evil\" agent")),
        }
    }

    fn outcome(cache: CacheStatus, upstream_status: Option<u16>) -> Outcome {
        Outcome {
            status: 200,
            upstream_status,
            upstream_time: upstream_status.map(|_| Duration::from_millis(3)),
            cache,
            cache_header: Some(HeaderValue::from_static("viaduct; hit")),
            mode: Mode::Forward,
            route: Some("forward proxy".into()),
            upstream: upstream_status.map(|_| "a.test:80".into()),
            content_type: Some(HeaderValue::from_static("text/html; charset=utf-8")),
        }
    }

    fn line_of(format: AccessFormat, cache: CacheStatus, upstream_status: Option<u16>) -> String {
        let (request, outcome) = (request(), outcome(cache, upstream_status));
        line(
            format,
            &Record {
                request: &request,
                wall: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                outcome: &outcome,
                bytes: 5,
                seconds: 0.0123,
                complete: true,
            },
        )
    }

    fn miss() -> CacheStatus {
        CacheStatus::Forward {
            fwd: Fwd::UriMiss,
            status: Some(200),
            outcome: Stored::Yes { ttl: 60 },
        }
    }

    fn line(format: AccessFormat, r: &Record) -> String {
        let mut s = Vec::new();
        write(format, r, &mut s);
        String::from_utf8(s).unwrap()
    }

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut s = Vec::new();
        f(&mut s);
        String::from_utf8(s).unwrap()
    }

    #[test]
    fn dates_are_in_common_log_format() {
        assert_eq!(
            text(|s| clf_time(UNIX_EPOCH + Duration::from_secs(971_186_136), s)),
            "10/Oct/2000:13:55:36 +0000"
        );
        assert_eq!(
            text(|s| clf_time(UNIX_EPOCH + Duration::from_secs(1_709_164_800), s)),
            "29/Feb/2024:00:00:00 +0000"
        );
        assert_eq!(
            text(|s| iso_time(UNIX_EPOCH + Duration::from_millis(1_709_164_800_005), s)),
            "2024-02-29T00:00:00.005Z"
        );
    }

    #[test]
    fn combined_lines_escape_and_carry_cache_and_upstream_time() {
        let hit = line_of(AccessFormat::Combined, CacheStatus::Hit { ttl: 5 }, None);
        assert_eq!(
            hit,
            "127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] \"GET http://a.test/x HTTP/1.1\" 200 5 \"-\" \"evil\\\" agent\" 0.012 - - hit\n"
        );
        let miss = line_of(AccessFormat::Combined, miss(), Some(200));
        assert!(miss.ends_with("\" 0.012 200 0.003 miss\n"), "{miss}");
    }

    #[test]
    fn json_lines_name_every_field() {
        for (cache, upstream, want_cache) in [
            (CacheStatus::Hit { ttl: 5 }, None, "hit"),
            (miss(), Some(200), "miss"),
        ] {
            let text = line_of(AccessFormat::Json, cache, upstream);
            let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
            assert_eq!(v["cache"], want_cache);
            assert_eq!(v["status"], 200);
            assert_eq!(v["bytes"], 5);
            assert_eq!(v["url"], "http://a.test/x");
            assert_eq!(v["user_agent"], "evil\" agent");
            assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
            assert_eq!(
                v["upstream_status"],
                upstream.map_or(serde_json::Value::Null, |s| s.into())
            );
            assert_eq!(v["upstream_ms"].is_null(), upstream.is_none());
        }
    }

    #[test]
    fn squid_lines_use_squid_codes() {
        let hit = line_of(AccessFormat::Squid, CacheStatus::Hit { ttl: 5 }, None);
        assert_eq!(hit, "1700000000.123     12 127.0.0.1 TCP_MEM_HIT/200 5 GET http://a.test/x - HIER_NONE/- text/html\n");
        let miss = line_of(AccessFormat::Squid, miss(), Some(200));
        assert_eq!(miss, "1700000000.123     12 127.0.0.1 TCP_MISS/200 5 GET http://a.test/x - HIER_DIRECT/a.test text/html\n");
        let reval = CacheStatus::Forward {
            fwd: Fwd::Stale,
            status: Some(304),
            outcome: Stored::Yes { ttl: 1 },
        };
        assert_eq!(squid_code(reval, 200), "TCP_REFRESH_UNMODIFIED");
        assert_eq!(
            squid_code(
                CacheStatus::Local {
                    detail: "forbidden"
                },
                403
            ),
            "TCP_DENIED"
        );
    }

    /// Lines the serde_json-based formatter wrote for awkward inputs (IPv6,
    /// HTTP/2, non-UTF-8 and control bytes, a route needing \u escapes, whole
    /// and fractional durations): the hand-written formats match byte for byte.
    #[test]
    fn lines_match_the_recorded_golden_output() {
        let golden = include_str!("testdata/golden.txt");
        let ua = HeaderValue::from_bytes(b"a\"b\\c\td\xff\xc3\xa9 \xe2\x82 z").unwrap();
        let requests = [
            RequestInfo {
                client: "::1".parse().unwrap(),
                method: Method::from_bytes(b"PURGE").unwrap(),
                target: "http://h.test:8080/p/a%20th?q=x{|}^`&r".parse().unwrap(),
                version: Version::HTTP_2,
                referer: Some(HeaderValue::from_static("http://r.test/")),
                user_agent: Some(ua.clone()),
            },
            RequestInfo {
                client: "10.1.2.3".parse().unwrap(),
                method: Method::CONNECT,
                target: "h.test:443".parse().unwrap(),
                version: Version::HTTP_10,
                referer: None,
                user_agent: None,
            },
        ];
        let outcomes = [
            Outcome::default(),
            Outcome {
                status: 304,
                upstream_status: Some(304),
                upstream_time: Some(Duration::from_micros(123_456_789)),
                cache: CacheStatus::Forward {
                    fwd: Fwd::Stale,
                    status: Some(304),
                    outcome: Stored::Yes { ttl: 1 },
                },
                cache_header: Some(ua),
                mode: Mode::Reverse,
                route: Some("r\"o\u{1}ute\u{e9}".into()),
                upstream: Some("[::1]:81".into()),
                content_type: Some(HeaderValue::from_static("application/json")),
            },
        ];
        let mut out = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            for (j, outcome) in outcomes.iter().enumerate() {
                for (k, seconds) in [0.0, 0.0005, 12.3456789, 5.0, 100000.0]
                    .into_iter()
                    .enumerate()
                {
                    let r = Record {
                        request,
                        wall: UNIX_EPOCH
                            + Duration::from_millis(
                                4_102_444_799_999 + (i * 7 + j * 3 + k) as u64 * 86_399_001,
                            ),
                        outcome,
                        bytes: (i * 1000 + k) as u64,
                        seconds,
                        complete: k % 2 == 0,
                    };
                    for format in [
                        AccessFormat::Combined,
                        AccessFormat::Json,
                        AccessFormat::Squid,
                    ] {
                        write(format, &r, &mut out);
                    }
                }
            }
        }
        let out = String::from_utf8(out).unwrap();
        for (got, want) in out.lines().zip(golden.lines()) {
            assert_eq!(got, want);
        }
        assert_eq!(out, golden);
    }
}
