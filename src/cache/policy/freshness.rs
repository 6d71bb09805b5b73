//! Freshness lifetime (RFC 9111 §4.2.1, §4.2.2) and age (§4.2.3).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::StatusCode;

use super::StoredResponse;
use crate::cache::control::DELTA_MAX;

/// Heuristic freshness settings (§4.2.2): a fraction of the time since the
/// last modification, capped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heuristics {
    pub fraction: f64,
    pub max: Duration,
}

impl Default for Heuristics {
    fn default() -> Self {
        Heuristics {
            fraction: 0.1,
            max: Duration::from_secs(86_400),
        }
    }
}

/// Status codes defined as heuristically cacheable (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// An HTTP-date field: `None` when absent, `Some(None)` when present but not a
/// valid date (or repeated with different values).
pub fn date_field(headers: &HeaderMap, name: header::HeaderName) -> Option<Option<SystemTime>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let parse = |v: &http::HeaderValue| v.to_str().ok().and_then(parse_date);
    let date = parse(first);
    if values.any(|v| parse(v) != date) {
        return Some(None);
    }
    Some(date)
}

/// The `Date` a stored response is judged by; when it lacks a valid one, the
/// time it was received (RFC 9110 §6.6.1).
pub fn date_value(r: &StoredResponse) -> SystemTime {
    r.date.flatten().unwrap_or(r.response_time)
}

/// The freshness lifetime in seconds and whether it was a heuristic guess.
pub fn lifetime(r: &StoredResponse, h: &Heuristics) -> (u64, bool) {
    // §4.2.1: s-maxage (shared caches), then max-age; invalid means stale.
    if let Some(secs) = r.control.s_maxage.seconds() {
        return (secs, false);
    }
    if let Some(secs) = r.control.max_age.seconds() {
        return (secs, false);
    }
    // Expires − Date; an Expires that is not a valid HTTP-date (such as "0")
    // means already expired (§5.3). A targeted field replaces it (RFC 9213
    // §2.1).
    if let Some(expires) = r.expires.filter(|_| !r.control.targeted) {
        return match expires {
            Some(expires) => (secs_between(date_value(r), expires), false),
            None => (0, false),
        };
    }
    // §4.2.2: heuristics only without explicit freshness, and only for
    // heuristically cacheable statuses or responses marked public.
    if heuristically_cacheable(r.status) || r.control.public {
        if let Some(Some(modified)) = r.last_modified {
            let since = secs_between(modified, date_value(r)) as f64;
            let guess = (since * h.fraction).floor() as u64;
            return (guess.min(h.max.as_secs()), true);
        }
    }
    (0, false)
}

/// Whether the response carries explicit freshness information.
pub fn has_explicit_freshness(r: &StoredResponse) -> bool {
    r.control.s_maxage.is_present()
        || r.control.max_age.is_present()
        || (r.expires.is_some() && !r.control.targeted)
}

/// An HTTP-date in any of its three forms, IMF-fixdate and the obsolete
/// RFC 850 and asctime ones, which recipients MUST accept (RFC 9110
/// §5.6.7); day and month names and `GMT` in any case.
pub fn parse_date(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(date) = httpdate::parse_http_date(text) {
        return Some(date);
    }
    httpdate::parse_http_date(&canonical_case(text)).ok()
}

/// `text` with each word of letters in the case the date grammar spells it:
/// `Mon`, `Monday`, `Jan`, `GMT`.
fn canonical_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.eq_ignore_ascii_case("gmt") {
            out.push_str("GMT");
        } else if let Some((first, rest)) = word.split_at_checked(1) {
            out.push_str(&first.to_ascii_uppercase());
            out.push_str(&rest.to_ascii_lowercase());
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The `Age` field: a non-negative integer, capped at 2^31; anything else is
/// ignored. A list (`Age: 7200, 0`) or several lines count by their first
/// member (§5.1: a cache "SHOULD use the first member of the field value").
pub fn age_value(headers: &HeaderMap) -> u64 {
    let Some(v) = headers.get(header::AGE).and_then(|v| v.to_str().ok()) else {
        return 0;
    };
    let v = v.split(',').next().unwrap_or_default().trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    v.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX))
}

/// Current age in seconds (§4.2.3).
pub fn current_age(r: &StoredResponse, now: SystemTime) -> u64 {
    let apparent_age = secs_between(date_value(r), r.response_time);
    let response_delay = secs_between(r.request_time, r.response_time);
    let corrected_age_value = u64::from(r.age).saturating_add(response_delay);
    let corrected_initial_age = apparent_age.max(corrected_age_value);
    let resident_time = secs_between(r.response_time, now);
    corrected_initial_age
        .saturating_add(resident_time)
        .min(DELTA_MAX)
}

/// Whole seconds from `a` to `b`, zero if `b` is earlier.
pub fn secs_between(a: SystemTime, b: SystemTime) -> u64 {
    b.duration_since(a).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // test tables
mod tests {
    use super::super::tests_support::*;
    use super::*;

    #[test]
    fn dates_in_every_form_and_case() {
        // RFC 9110 §5.6.7: recipients MUST accept the obsolete forms.
        let want = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "sun, 06 nov 1994 08:49:37 gmt",
            "SUNDAY, 06-NOV-94 08:49:37 GMT",
            "sun NOV  6 08:49:37 1994",
            "  Sun, 06 Nov 1994 08:49:37 GMT ",
        ] {
            assert_eq!(parse_date(text), Some(want), "{text:?}");
        }
        for bad in ["", "0", "yesterday", "Sun, 32 Nov 1994 08:49:37 GMT"] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_list_in_age_counts_by_its_first_member() {
        // RFC 9111 §5.1.
        let age = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AGE, v.parse().unwrap());
            age_value(&h)
        };
        assert_eq!(age("7200, 0"), 7200);
        assert_eq!(age(" 30 "), 30);
        assert_eq!(age("x, 5"), 0);
        assert_eq!(age("-1"), 0);
        let mut two = HeaderMap::new();
        two.append(header::AGE, "10".parse().unwrap());
        two.append(header::AGE, "99".parse().unwrap());
        assert_eq!(age_value(&two), 10);
    }

    #[test]
    fn lifetime_precedence_and_validity() {
        // (case, headers, expected lifetime, heuristic?)
        let cases: &[(&str, &[(&str, &str)], u64, bool)] = &[
            (
                "§4.2.1 s-maxage wins over max-age",
                &[("cache-control", "max-age=10, s-maxage=20")],
                20,
                false,
            ),
            (
                "§4.2.1 max-age wins over Expires",
                &[("cache-control", "max-age=10"), ("expires", &at(1000))],
                10,
                false,
            ),
            (
                "§4.2.1 Expires minus Date",
                &[("expires", &at(300))],
                300,
                false,
            ),
            (
                "§4.2.1 Expires in the past",
                &[("expires", &at(-50))],
                0,
                false,
            ),
            (
                "§5.3 Expires: 0 means expired",
                &[("expires", "0")],
                0,
                false,
            ),
            (
                "§5.3 garbage Expires means expired",
                &[("expires", "next tuesday")],
                0,
                false,
            ),
            (
                "§4.2.1 invalid max-age is stale",
                &[("cache-control", "max-age=ten"), ("expires", &at(500))],
                0,
                false,
            ),
            (
                "§4.2.1 repeated max-age is stale",
                &[("cache-control", "max-age=60, max-age=60")],
                0,
                false,
            ),
            (
                "§4.2.1 invalid s-maxage is stale",
                &[("cache-control", "s-maxage=x, max-age=60")],
                0,
                false,
            ),
            (
                "§4.2.2 heuristic: 10% of Date − Last-Modified",
                &[("last-modified", &at(-10_000))],
                1000,
                true,
            ),
            (
                "§4.2.2 heuristic capped at one day",
                &[("last-modified", &at(-100 * 86_400))],
                86_400,
                true,
            ),
            ("§4.2.2 no Last-Modified, no heuristic", &[], 0, false),
            (
                "§4.2.2 Last-Modified in the future gives 0",
                &[("last-modified", &at(100))],
                0,
                true,
            ),
            (
                "§1.2.2 huge max-age capped",
                &[("cache-control", "max-age=9999999999999")],
                1 << 31,
                false,
            ),
        ];
        for (name, headers, want, heuristic) in cases {
            let r = stored(200, headers);
            assert_eq!(
                lifetime(&r, &Heuristics::default()),
                (*want, *heuristic),
                "{name}"
            );
        }
    }

    #[test]
    fn heuristics_only_for_cacheable_statuses_or_public() {
        // §4.2.2
        let lm = at(-10_000);
        assert_eq!(
            lifetime(
                &stored(302, &[("last-modified", &lm)]),
                &Heuristics::default()
            )
            .0,
            0
        );
        assert_eq!(
            lifetime(
                &stored(302, &[("last-modified", &lm), ("cache-control", "public")]),
                &Heuristics::default()
            )
            .0,
            1000
        );
        assert_eq!(
            lifetime(
                &stored(404, &[("last-modified", &lm)]),
                &Heuristics::default()
            )
            .0,
            1000
        );
        let custom = Heuristics {
            fraction: 0.5,
            max: Duration::from_secs(60),
        };
        assert_eq!(
            lifetime(&stored(200, &[("last-modified", &lm)]), &custom).0,
            60
        );
    }

    #[test]
    fn missing_date_uses_the_receipt_time() {
        // RFC 9110 §6.6.1
        let mut h = headers(&[("expires", &at(120))]);
        h.remove("date");
        let r = StoredResponse::new(StatusCode::OK, h, t0(), t0());
        assert_eq!(lifetime(&r, &Heuristics::default()).0, 120);
    }

    #[test]
    fn age_calculation() {
        // §4.2.3: (case, Age header, date offset from response_time, request delay, now offset, expected)
        let cases: &[(&str, Option<&str>, i64, u64, u64, u64)] = &[
            ("resident time only", None, 0, 0, 30, 30),
            (
                "Age header added to resident time",
                Some("100"),
                0,
                0,
                30,
                130,
            ),
            ("apparent age from an old Date", None, -50, 0, 0, 50),
            (
                "larger of apparent and corrected age",
                Some("10"),
                -50,
                0,
                0,
                50,
            ),
            ("response delay corrects Age", Some("10"), 0, 4, 0, 14),
            ("negative Age ignored", Some("-5"), 0, 0, 1, 1),
            ("fractional Age ignored", Some("2.5"), 0, 0, 1, 1),
            ("garbage Age ignored", Some("soon"), 0, 0, 1, 1),
            (
                "huge Age capped",
                Some("99999999999999999999"),
                0,
                0,
                0,
                1 << 31,
            ),
            (
                "Date in the future gives no negative age",
                None,
                500,
                0,
                3,
                3,
            ),
        ];
        for (name, age, date_offset, delay, now_offset, want) in cases {
            let mut h = headers(&[]);
            h.insert(
                "date",
                httpdate::fmt_http_date(shift(t0(), *date_offset))
                    .parse()
                    .unwrap(),
            );
            if let Some(age) = age {
                h.insert("age", age.parse().unwrap());
            }
            let r =
                StoredResponse::new(StatusCode::OK, h, t0() - Duration::from_secs(*delay), t0());
            assert_eq!(
                current_age(&r, t0() + Duration::from_secs(*now_offset)),
                *want,
                "{name}"
            );
        }
    }

    #[test]
    fn conflicting_dates_are_invalid() {
        let mut h = HeaderMap::new();
        h.append("expires", at(10).parse().unwrap());
        h.append("expires", at(20).parse().unwrap());
        assert_eq!(date_field(&h, header::EXPIRES), Some(None));
    }
}
