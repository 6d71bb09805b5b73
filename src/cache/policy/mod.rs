//! RFC 9111 as pure functions: no clock, no store, no I/O. The pipeline passes
//! `now` in and acts on the answers, so every rule is table-testable.
//!
//! - [`storable`]: may this response be stored (§3)?
//! - [`decide`]: may this stored response answer this request (§4, §5.2)?
//! - [`freshness`]: lifetime (§4.2.1–2) and age (§4.2.3).
//! - [`validation`]: conditional requests, 304 updates, client conditionals,
//!   invalidation (§4.3, §3.2, §4.4; RFC 9110 §13).

pub mod freshness;
pub mod storable;
pub mod validation;

use std::time::SystemTime;

use http::{header, HeaderMap, StatusCode};

pub use freshness::{current_age, lifetime, Heuristics};
pub use storable::{storable, NotStored};

use super::control::{Delta, FieldsDirective, MaxStale, RequestControl, ResponseControl};
use super::head::StoredHead;

/// What the policy knows about a stored response: its head (compact, see
/// `cache::head`), the facts a hit needs parsed once at store time, and when
/// it was requested and received. The body lives in the store.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: StatusCode,
    pub headers: StoredHead,
    pub control: ResponseControl,
    /// `Date`, `Expires`, `Last-Modified` as `freshness::date_field` reads
    /// them: `None` absent, `Some(None)` present but invalid.
    pub date: Option<Option<SystemTime>>,
    pub expires: Option<Option<SystemTime>>,
    pub last_modified: Option<Option<SystemTime>>,
    /// The `Age` field's value (§5.1), at most 2^31.
    pub age: u32,
    pub request_time: SystemTime,
    pub response_time: SystemTime,
}

impl StoredResponse {
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> StoredResponse {
        StoredResponse::targeted(status, headers, request_time, response_time, &[])
    }

    /// As `new`, with the directives of the first valid targeted field in
    /// `fields` (RFC 9213) in place of Cache-Control's when there is one.
    pub fn targeted(
        status: StatusCode,
        headers: HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        fields: &[http::HeaderName],
    ) -> StoredResponse {
        StoredResponse {
            status,
            control: response_control(&headers, fields),
            date: freshness::date_field(&headers, header::DATE),
            expires: freshness::date_field(&headers, header::EXPIRES),
            last_modified: freshness::date_field(&headers, header::LAST_MODIFIED),
            age: freshness::age_value(&headers) as u32,
            headers: StoredHead::from_map(&headers),
            request_time,
            response_time,
        }
    }
}

impl StoredResponse {
    /// Makes the freshness lifetime `secs` (a soft purge, a TTL rule, a
    /// copy kept briefly): written as max-age, and as s-maxage when the
    /// response has one, so which stale rules apply does not change
    /// (§5.2.2.10). Expires and heuristics then no longer count (§4.2.1).
    pub fn set_lifetime(&mut self, secs: u32) {
        if self.control.s_maxage.is_present() {
            self.control.s_maxage = Delta::Seconds(secs);
        }
        self.control.max_age = Delta::Seconds(secs);
    }
}

/// The directives that rule this cache's use of a response: the first valid
/// targeted field's (RFC 9213 §2.1), else Cache-Control's.
pub fn response_control(headers: &HeaderMap, fields: &[http::HeaderName]) -> ResponseControl {
    crate::cache::targeted::control(headers, fields)
        .unwrap_or_else(|| ResponseControl::parse(headers))
}

/// May a stored response answer this request, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Serve it. `ttl` is the freshness left in seconds; negative means stale,
    /// served because the client allowed it with `max-stale`.
    Serve { ttl: i64 },
    /// Validate with the origin first.
    Validate(Why),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Past its freshness lifetime.
    Stale,
    /// `no-cache` without field names in the response (§5.2.2.4).
    ResponseNoCache,
    /// The client asked: `no-cache` (§5.2.1.4), `max-age` (§5.2.1.1) or
    /// `min-fresh` (§5.2.1.3).
    Request,
}

/// Decides whether `stored` may be used for a request with `req` directives.
pub fn decide(
    req: &RequestControl,
    stored: &StoredResponse,
    h: &Heuristics,
    now: SystemTime,
) -> Reuse {
    let (lifetime, _) = lifetime(stored, h);
    let age = current_age(stored, now);
    let ttl = lifetime as i64 - age as i64;
    // §4.2: fresh while the lifetime exceeds the age.
    let fresh = ttl > 0;

    if req.no_cache {
        return Reuse::Validate(Why::Request);
    }
    if stored.control.no_cache == FieldsDirective::All {
        return Reuse::Validate(Why::ResponseNoCache);
    }
    if let Some(max_age) = req.max_age {
        // RFC 8246 §2: an immutable response is not revalidated while fresh,
        // so a reload's max-age=0 does not reach the origin (no-cache still does).
        if age > max_age && !(stored.control.immutable && fresh) {
            return Reuse::Validate(Why::Request);
        }
    }
    if let Some(min_fresh) = req.min_fresh {
        if ttl < min_fresh as i64 {
            return Reuse::Validate(Why::Request);
        }
    }
    if fresh {
        return Reuse::Serve { ttl };
    }
    // §4.2.4: stale is served only when allowed, and never against
    // must-revalidate / proxy-revalidate / s-maxage.
    if stored.control.forbids_stale() {
        return Reuse::Validate(Why::Stale);
    }
    match req.max_stale {
        Some(MaxStale::Any) => Reuse::Serve { ttl },
        Some(MaxStale::Seconds(n)) if ttl.unsigned_abs() <= n => Reuse::Serve { ttl },
        _ => Reuse::Validate(Why::Stale),
    }
}

/// Fields that must not be sent from cache without revalidation: those named
/// by `no-cache="..."` (§5.2.2.4).
pub fn fields_to_strip_on_reuse(stored: &StoredResponse) -> &[http::HeaderName] {
    match &stored.control.no_cache {
        FieldsDirective::Fields(names) => names,
        _ => &[],
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

    use super::StoredResponse;

    /// The fixed "now" of the policy tests.
    pub fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    pub fn shift(t: SystemTime, secs: i64) -> SystemTime {
        if secs >= 0 {
            t + Duration::from_secs(secs as u64)
        } else {
            t - Duration::from_secs(secs.unsigned_abs())
        }
    }

    /// An HTTP-date `secs` seconds from t0().
    pub fn at(secs: i64) -> String {
        httpdate::fmt_http_date(shift(t0(), secs))
    }

    pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// A response received at t0(), dated t0() unless `pairs` says otherwise.
    pub fn stored(status: u16, pairs: &[(&str, &str)]) -> StoredResponse {
        let mut h = headers(pairs);
        if !h.contains_key("date") {
            h.insert("date", HeaderValue::from_str(&at(0)).unwrap());
        }
        StoredResponse::new(StatusCode::from_u16(status).unwrap(), h, t0(), t0())
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // test tables
mod tests {
    use std::time::Duration;

    use super::tests_support::*;
    use super::*;

    fn req(cc: &str) -> RequestControl {
        RequestControl::parse(&headers(&[("cache-control", cc)]))
    }

    #[test]
    fn reuse_decisions() {
        // (case, response Cache-Control, request Cache-Control, seconds after t0(), expected)
        use Reuse::*;
        let cases: &[(&str, &str, &str, u64, Reuse)] = &[
            (
                "§4.2 fresh is served",
                "max-age=100",
                "",
                10,
                Serve { ttl: 90 },
            ),
            (
                "§4.2 age equal to lifetime is stale",
                "max-age=100",
                "",
                100,
                Validate(Why::Stale),
            ),
            (
                "§4.2 past lifetime is stale",
                "max-age=100",
                "",
                150,
                Validate(Why::Stale),
            ),
            (
                "§5.2.1.4 request no-cache validates",
                "max-age=100",
                "no-cache",
                0,
                Validate(Why::Request),
            ),
            (
                "§5.2.1.1 request max-age older than allowed",
                "max-age=100",
                "max-age=5",
                10,
                Validate(Why::Request),
            ),
            (
                "§5.2.1.1 request max-age satisfied",
                "max-age=100",
                "max-age=50",
                10,
                Serve { ttl: 90 },
            ),
            (
                "§5.2.1.1 max-age=0 validates",
                "max-age=100",
                "max-age=0",
                1,
                Validate(Why::Request),
            ),
            (
                "RFC 8246 immutable fresh ignores max-age=0",
                "max-age=100, immutable",
                "max-age=0",
                1,
                Serve { ttl: 99 },
            ),
            (
                "RFC 8246 immutable still honours no-cache",
                "max-age=100, immutable",
                "no-cache",
                1,
                Validate(Why::Request),
            ),
            (
                "§5.2.1.3 min-fresh not met",
                "max-age=100",
                "min-fresh=95",
                10,
                Validate(Why::Request),
            ),
            (
                "§5.2.1.3 min-fresh met",
                "max-age=100",
                "min-fresh=80",
                10,
                Serve { ttl: 90 },
            ),
            (
                "§5.2.1.2 max-stale without value",
                "max-age=100",
                "max-stale",
                500,
                Serve { ttl: -400 },
            ),
            (
                "§5.2.1.2 max-stale within bound",
                "max-age=100",
                "max-stale=60",
                150,
                Serve { ttl: -50 },
            ),
            (
                "§5.2.1.2 max-stale exceeded",
                "max-age=100",
                "max-stale=10",
                150,
                Validate(Why::Stale),
            ),
            (
                "§5.2.2.2 must-revalidate beats max-stale",
                "max-age=100, must-revalidate",
                "max-stale",
                150,
                Validate(Why::Stale),
            ),
            (
                "§5.2.2.8 proxy-revalidate beats max-stale",
                "max-age=100, proxy-revalidate",
                "max-stale",
                150,
                Validate(Why::Stale),
            ),
            (
                "§5.2.2.10 s-maxage implies proxy-revalidate",
                "s-maxage=100",
                "max-stale",
                150,
                Validate(Why::Stale),
            ),
            (
                "§5.2.2.10 s-maxage fresh",
                "s-maxage=100, max-age=1",
                "",
                50,
                Serve { ttl: 50 },
            ),
            (
                "§5.2.2.4 no-cache response always validates",
                "no-cache, max-age=100",
                "",
                0,
                Validate(Why::ResponseNoCache),
            ),
            (
                "§5.2.2.4 no-cache with fields is reused",
                "no-cache=\"set-cookie\", max-age=100",
                "",
                0,
                Serve { ttl: 100 },
            ),
            (
                "§4.2.1 invalid max-age stale at once",
                "max-age=soon",
                "",
                0,
                Validate(Why::Stale),
            ),
        ];
        for (name, response_cc, request_cc, after, want) in cases {
            let stored = stored(200, &[("cache-control", response_cc)]);
            let got = decide(
                &req(request_cc),
                &stored,
                &Heuristics::default(),
                t0() + Duration::from_secs(*after),
            );
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn age_from_origin_counts_against_freshness() {
        // §4.2.3: an Age of 90 on a max-age=100 response leaves 10 seconds.
        let stored = stored(200, &[("cache-control", "max-age=100"), ("age", "90")]);
        let now = t0() + Duration::from_secs(5);
        assert_eq!(
            decide(&req(""), &stored, &Heuristics::default(), now),
            Reuse::Serve { ttl: 5 }
        );
    }

    #[test]
    fn no_cache_field_names_are_stripped_on_reuse() {
        let s = stored(
            200,
            &[("cache-control", "no-cache=\"Set-Cookie\", max-age=5")],
        );
        assert_eq!(fields_to_strip_on_reuse(&s), [http::header::SET_COOKIE]);
        assert!(
            fields_to_strip_on_reuse(&stored(200, &[("cache-control", "no-cache")])).is_empty()
        );
    }
}
