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

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::text::{
    clf_time, iso_time, json_f64, json_fmt, json_header, json_opt_str, json_str, push_escaped,
    push_header, push_ip, push_number, push_uri, push_version,
};
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
    line.extend_from_slice(b",\"cache_key\":");
    json_opt_str(line, o.cache_key.as_deref());
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
        CacheStatus::TierHit { .. } => "TCP_HIT",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::{Outcome, RequestInfo};
    use crate::cache::Stored;
    use crate::metrics::Mode;
    use http::{HeaderValue, Method, Version};
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
            cache_key: Some("forward http://example.com:80/x".into()),
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
                cache_key: None,
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
