//! Writing the pieces of an access line into a byte buffer without
//! `core::fmt` where it is hot: numbers, times, addresses, and the two
//! escapings (a log line's quoted fields, JSON strings).

use std::fmt;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

/// `2026-11-24T13:55:36.123Z`
pub(super) fn iso_time(t: SystemTime, line: &mut Vec<u8>) {
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
pub(super) fn clf_time(t: SystemTime, line: &mut Vec<u8>) {
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
pub(super) fn push_clock(line: &mut Vec<u8>, secs: u64) {
    push_number(line, secs / 3600, 2);
    line.push(b':');
    push_number(line, secs % 3600 / 60, 2);
    line.push(b':');
    push_number(line, secs % 60, 2);
}

/// An IPv4 address written octet by octet (the common case, without
/// `core::fmt`); IPv6 through `Display`.
pub(super) fn push_ip(line: &mut Vec<u8>, ip: std::net::IpAddr) {
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
pub(super) fn push_version(line: &mut Vec<u8>, version: http::Version) {
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
pub(super) fn push_number(line: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while n > 0 || digits.len() - at < width.max(1) {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    line.extend_from_slice(&digits[at..]);
}

pub(super) fn push_header(line: &mut Vec<u8>, value: Option<&HeaderValue>) {
    match value {
        Some(v) => push_escaped(line, v.as_bytes()),
        None => line.push(b'-'),
    }
}

/// The Uri through `Display`, escaped, without an intermediate String.
pub(super) fn push_uri(line: &mut Vec<u8>, uri: &http::Uri) {
    let _ = fmt::Write::write_fmt(&mut LogEscaped(line), format_args!("{uri}"));
}

/// Formatted text as the inside of a JSON string.
pub(super) fn json_fmt(line: &mut Vec<u8>, args: fmt::Arguments) {
    let _ = fmt::Write::write_fmt(&mut JsonEscaped(line), args);
}

/// Keeps one request on one line and quotes intact (no log injection).
pub(super) fn push_escaped(line: &mut Vec<u8>, bytes: &[u8]) {
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
pub(super) fn json_escape(line: &mut Vec<u8>, s: &str) {
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

pub(super) fn json_str(line: &mut Vec<u8>, s: &str) {
    line.push(b'"');
    json_escape(line, s);
    line.push(b'"');
}

pub(super) fn json_opt_str(line: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(line, s),
        None => line.extend_from_slice(b"null"),
    }
}

/// A header value as a JSON string, invalid UTF-8 replaced by U+FFFD (as
/// `String::from_utf8_lossy` does).
pub(super) fn json_header(line: &mut Vec<u8>, value: Option<&HeaderValue>) {
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
pub(super) fn json_f64(line: &mut Vec<u8>, v: f64) {
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
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
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
