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

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use super::Record;
use crate::cache::{CacheStatus, Fwd};
use crate::config::AccessFormat;

pub fn write(format: AccessFormat, r: &Record, line: &mut String) {
    match format {
        AccessFormat::Combined => combined(r, line),
        AccessFormat::Json => json(r, line),
        AccessFormat::Squid => squid(r, line),
    }
    line.push('\n');
}

fn combined(r: &Record, line: &mut String) {
    let q = &r.request;
    let o = &r.outcome;
    let _ = write!(line, "{} - - [", q.client);
    clf_time(r.wall, line);
    line.push_str("] \"");
    push_escaped(line, q.method.as_str().as_bytes());
    line.push(' ');
    push_escaped(line, q.target.to_string().as_bytes());
    let _ = write!(line, " {:?}\" {} {} \"", q.version, o.status, r.bytes);
    push_header(line, q.referer.as_ref());
    line.push_str("\" \"");
    push_header(line, q.user_agent.as_ref());
    let _ = write!(line, "\" {:.3} ", r.seconds);
    match o.upstream_status {
        Some(s) => {
            let _ = write!(line, "{s}");
        }
        None => line.push('-'),
    }
    match o.upstream_time {
        Some(t) => {
            let _ = write!(line, " {:.3}", t.as_secs_f64());
        }
        None => line.push_str(" -"),
    }
    let _ = write!(line, " {}", o.cache.as_str());
    if !r.complete {
        // The response body did not reach its end (client left, origin failed).
        line.push_str(" incomplete");
    }
}

fn json(r: &Record, line: &mut String) {
    let q = &r.request;
    let o = &r.outcome;
    let text =
        |v: Option<&HeaderValue>| v.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let value = serde_json::json!({
        "time": iso_time(r.wall),
        "client": q.client.to_string(),
        "method": q.method.as_str(),
        "url": q.target.to_string(),
        "version": format!("{:?}", q.version),
        "status": o.status,
        "bytes": r.bytes,
        "duration_ms": (r.seconds * 1000.0 * 1000.0).round() / 1000.0,
        "upstream": o.upstream.as_deref(),
        "upstream_status": o.upstream_status,
        "upstream_ms": o.upstream_time.map(|t| (t.as_secs_f64() * 1_000_000.0).round() / 1000.0),
        "cache": o.cache.as_str(),
        "cache_status": text(o.cache_header.as_ref()),
        "mode": o.mode.as_str(),
        "route": o.route.as_deref(),
        "referer": text(q.referer.as_ref()),
        "user_agent": text(q.user_agent.as_ref()),
        "complete": r.complete,
    });
    line.push_str(&value.to_string());
}

fn squid(r: &Record, line: &mut String) {
    let q = &r.request;
    let o = &r.outcome;
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
    line.push(' ');
    push_escaped(line, q.target.to_string().as_bytes());
    line.push_str(" - ");
    match (&o.upstream, o.upstream_status) {
        (Some(peer), Some(_)) => {
            let host = peer.rsplit_once(':').map_or(&**peer, |(h, _)| h);
            let _ = write!(line, "HIER_DIRECT/{host}");
        }
        _ => line.push_str("HIER_NONE/-"),
    }
    line.push(' ');
    match &o.content_type {
        Some(ct) => push_escaped(
            line,
            ct.as_bytes()
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default(),
        ),
        None => line.push('-'),
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
fn iso_time(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

fn push_header(line: &mut String, value: Option<&HeaderValue>) {
    match value {
        Some(v) => push_escaped(line, v.as_bytes()),
        None => line.push('-'),
    }
}

/// Keeps one request on one line and quotes intact (no log injection).
fn push_escaped(line: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                line.push('\\');
                line.push(b as char);
            }
            0x20..=0x7e => line.push(b as char),
            _ => {
                let _ = write!(line, "\\x{b:02x}");
            }
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `10/Oct/2000:13:55:36 +0000` in UTC.
fn clf_time(t: SystemTime, line: &mut String) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let _ = write!(
        line,
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
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

    fn record(cache: CacheStatus, upstream_status: Option<u16>) -> Record {
        Record {
            request: Box::new(RequestInfo {
                client: "127.0.0.1".parse().unwrap(),
                method: Method::GET,
                target: "http://a.test/x".parse().unwrap(),
                version: Version::HTTP_11,
                referer: None,
                user_agent: Some(HeaderValue::from_static("evil\" agent")),
            }),
            wall: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            outcome: Outcome {
                status: 200,
                upstream_status,
                upstream_time: upstream_status.map(|_| Duration::from_millis(3)),
                cache,
                cache_header: Some(HeaderValue::from_static("viaduct; hit")),
                mode: Mode::Forward,
                route: Some("forward proxy".into()),
                upstream: upstream_status.map(|_| "a.test:80".into()),
                content_type: Some(HeaderValue::from_static("text/html; charset=utf-8")),
            },
            bytes: 5,
            seconds: 0.0123,
            complete: true,
        }
    }

    fn miss() -> CacheStatus {
        CacheStatus::Forward {
            fwd: Fwd::UriMiss,
            status: Some(200),
            outcome: Stored::Yes { ttl: 60 },
        }
    }

    fn line(format: AccessFormat, r: &Record) -> String {
        let mut s = String::new();
        write(format, r, &mut s);
        s
    }

    #[test]
    fn dates_are_in_common_log_format() {
        let mut s = String::new();
        clf_time(UNIX_EPOCH + Duration::from_secs(971_186_136), &mut s);
        assert_eq!(s, "10/Oct/2000:13:55:36 +0000");
        s.clear();
        clf_time(UNIX_EPOCH + Duration::from_secs(1_709_164_800), &mut s);
        assert_eq!(s, "29/Feb/2024:00:00:00 +0000");
        assert_eq!(
            iso_time(UNIX_EPOCH + Duration::from_millis(1_709_164_800_005)),
            "2024-02-29T00:00:00.005Z"
        );
    }

    #[test]
    fn combined_lines_escape_and_carry_cache_and_upstream_time() {
        let hit = line(
            AccessFormat::Combined,
            &record(CacheStatus::Hit { ttl: 5 }, None),
        );
        assert_eq!(
            hit,
            "127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] \"GET http://a.test/x HTTP/1.1\" 200 5 \"-\" \"evil\\\" agent\" 0.012 - - hit\n"
        );
        let miss = line(AccessFormat::Combined, &record(miss(), Some(200)));
        assert!(miss.ends_with("\" 0.012 200 0.003 miss\n"), "{miss}");
    }

    #[test]
    fn json_lines_name_every_field() {
        for (cache, upstream, want_cache) in [
            (CacheStatus::Hit { ttl: 5 }, None, "hit"),
            (miss(), Some(200), "miss"),
        ] {
            let text = line(AccessFormat::Json, &record(cache, upstream));
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
        let hit = line(
            AccessFormat::Squid,
            &record(CacheStatus::Hit { ttl: 5 }, None),
        );
        assert_eq!(hit, "1700000000.123     12 127.0.0.1 TCP_MEM_HIT/200 5 GET http://a.test/x - HIER_NONE/- text/html\n");
        let miss = line(AccessFormat::Squid, &record(miss(), Some(200)));
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
}
