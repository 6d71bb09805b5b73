//! Byte ranges served from a complete stored response (RFC 9110 §14).
//!
//! One range gets `206` with `Content-Range`. Several ranges get the whole
//! response with `200`, which RFC 9110 §14.2 allows (a server may ignore
//! Range); it avoids multipart bodies that most clients never ask for.

use http::header::{self, HeaderValue};

use super::policy::StoredResponse;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Ignore the Range: send the whole representation with 200.
    Full,
    /// Bytes `start..=end` with 206.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Evaluates a `Range` field against a representation of `len` bytes.
pub fn evaluate(range: &HeaderValue, len: u64) -> RangeAnswer {
    let Ok(text) = range.to_str() else {
        return RangeAnswer::Full;
    };
    let text = text.trim();
    let Some((unit, specs)) = text.split_once('=') else {
        return RangeAnswer::Full;
    };
    // §14.1: an unknown range unit is ignored.
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeAnswer::Full;
    }
    let specs: Vec<&str> = specs
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if specs.len() != 1 {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = specs[0].split_once('-') else {
        return RangeAnswer::Full;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // -n: the last n bytes (§14.1.2).
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        // a- and a-b.
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if let Some(end) = end {
                if end < start {
                    return RangeAnswer::Full; // invalid: ignored (§14.1.1)
                }
            }
            if start >= len {
                return RangeAnswer::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            RangeAnswer::Partial { start, end }
        }
        _ => RangeAnswer::Full,
    }
}

/// Whether `If-Range` still holds for the stored response (RFC 9110 §13.1.5):
/// an entity tag must match strongly; a date must equal Last-Modified.
pub fn if_range_holds(if_range: &HeaderValue, stored: &StoredResponse) -> bool {
    let Ok(value) = if_range.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        let Some(etag) = stored.headers.get_str(header::ETAG) else {
            return false;
        };
        return !value.starts_with("W/") && !etag.starts_with("W/") && value == etag.trim();
    }
    match (
        crate::cache::policy::freshness::parse_date(value),
        stored.last_modified.flatten(),
    ) {
        (Some(date), Some(modified)) => date == modified,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(range: &str, len: u64) -> RangeAnswer {
        evaluate(&HeaderValue::from_str(range).unwrap(), len)
    }

    #[test]
    fn range_forms() {
        // RFC 9110 §14.1.2
        use RangeAnswer::*;
        let cases = [
            ("bytes=0-3", Partial { start: 0, end: 3 }),
            ("bytes=5-", Partial { start: 5, end: 9 }),
            ("bytes=-3", Partial { start: 7, end: 9 }),
            ("bytes=-30", Partial { start: 0, end: 9 }),
            ("bytes=8-100", Partial { start: 8, end: 9 }),
            ("BYTES = 2-2", Partial { start: 2, end: 2 }),
            ("bytes=10-", Unsatisfiable),
            ("bytes=10-20", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=5-2", Full),
            ("bytes=0-1,4-5", Full),
            ("items=0-1", Full),
            ("bytes=abc", Full),
            ("bytes=1-x", Full),
        ];
        for (range, want) in cases {
            assert_eq!(eval(range, 10), want, "{range}");
        }
        assert_eq!(eval("bytes=-5", 0), Unsatisfiable);
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        // RFC 9110 §13.1.5
        let mut head = http::HeaderMap::new();
        head.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        head.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Tue, 01 Jan 2030 00:00:00 GMT"),
        );
        let now = std::time::SystemTime::now();
        let stored = StoredResponse::new(http::StatusCode::OK, head, now, now);
        let holds = |v: &str| if_range_holds(&HeaderValue::from_str(v).unwrap(), &stored);
        assert!(holds("\"v1\""));
        assert!(!holds("\"v2\""));
        assert!(!holds("W/\"v1\""));
        assert!(holds("Tue, 01 Jan 2030 00:00:00 GMT"));
        assert!(!holds("Wed, 02 Jan 2030 00:00:00 GMT"));
    }
}
