//! Typed `Cache-Control` (RFC 9111 §5.2) for requests and responses.
//!
//! Parsing rules: directive names are case-insensitive (§5.2), values may be
//! tokens or quoted strings, unknown directives are ignored (§5.2.3), and
//! delta-seconds beyond 2^31 are taken as 2^31 (§1.2.2).

use http::header::{self, HeaderMap, HeaderName};

/// RFC 9111 §1.2.2: the largest delta-seconds a cache must handle.
pub const DELTA_MAX: u64 = 1 << 31;

/// A delta-seconds directive in a response. Invalid or repeated values make the
/// response stale (§4.2.1: "caches are encouraged to consider responses that
/// have invalid freshness information ... to be stale").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delta {
    #[default]
    Absent,
    /// At most `DELTA_MAX`, so 32 bits hold it (a stored entry keeps two).
    Seconds(u32),
    Invalid,
}

impl Delta {
    pub fn is_present(self) -> bool {
        self != Delta::Absent
    }

    /// The lifetime this directive grants: invalid means zero (stale).
    pub fn seconds(self) -> Option<u64> {
        match self {
            Delta::Absent => None,
            Delta::Seconds(n) => Some(u64::from(n)),
            Delta::Invalid => Some(0),
        }
    }

    fn record(&mut self, value: Option<&str>) {
        *self = match (*self, value.and_then(parse_delta)) {
            (Delta::Absent, Some(n)) => Delta::Seconds(n as u32),
            // A second occurrence, or a value that is not delta-seconds.
            _ => Delta::Invalid,
        };
    }
}

/// A directive that may carry a list of field names (`no-cache`, `private`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FieldsDirective {
    #[default]
    Absent,
    /// Without field names: applies to the whole response.
    All,
    /// With field names: applies only to those fields (§5.2.2.4, §5.2.2.7).
    Fields(Box<[HeaderName]>),
}

impl FieldsDirective {
    fn record(&mut self, value: Option<&str>) {
        let names: Option<Vec<HeaderName>> = value.map(|v| {
            v.split(',')
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                .collect()
        });
        *self = match (std::mem::take(self), names) {
            (FieldsDirective::All, _) | (_, None) => FieldsDirective::All,
            (FieldsDirective::Fields(old), Some(new)) => {
                let mut old = old.into_vec();
                old.extend(new);
                FieldsDirective::Fields(old.into_boxed_slice())
            }
            (FieldsDirective::Absent, Some(new)) if new.is_empty() => FieldsDirective::All,
            (FieldsDirective::Absent, Some(new)) => FieldsDirective::Fields(new.into_boxed_slice()),
        };
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseControl {
    pub max_age: Delta,
    pub s_maxage: Delta,
    pub no_cache: FieldsDirective,
    pub private: FieldsDirective,
    pub no_store: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub immutable: bool,
    pub must_understand: bool,
    /// RFC 5861 (used by the stale-serving features); at most `DELTA_MAX`.
    pub stale_while_revalidate: Option<u32>,
    pub stale_if_error: Option<u32>,
    /// Read from a targeted field (RFC 9213), not Cache-Control: `Expires`
    /// is then ignored too (§2.1).
    pub targeted: bool,
}

impl ResponseControl {
    pub fn parse(headers: &HeaderMap) -> ResponseControl {
        let mut c = ResponseControl::default();
        for_each_directive(headers, |name, value| match name {
            "max-age" => c.max_age.record(value),
            "s-maxage" => c.s_maxage.record(value),
            "no-cache" => c.no_cache.record(value),
            "private" => c.private.record(value),
            "no-store" => c.no_store = true,
            "public" => c.public = true,
            "must-revalidate" => c.must_revalidate = true,
            "proxy-revalidate" => c.proxy_revalidate = true,
            "immutable" => c.immutable = true,
            "must-understand" => c.must_understand = true,
            "stale-while-revalidate" => {
                c.stale_while_revalidate = value.and_then(parse_delta).map(|n| n as u32)
            }
            "stale-if-error" => c.stale_if_error = value.and_then(parse_delta).map(|n| n as u32),
            _ => {}
        });
        c
    }

    /// Stale responses may never be served without revalidation: §5.2.2.2
    /// must-revalidate, §5.2.2.8 proxy-revalidate, and §5.2.2.10 s-maxage
    /// (which implies proxy-revalidate for a shared cache).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_present()
    }
}

/// `max-stale` with or without a value (§5.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    Any,
    Seconds(u64),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestControl {
    pub max_age: Option<u64>,
    pub max_stale: Option<MaxStale>,
    pub min_fresh: Option<u64>,
    pub no_cache: bool,
    pub no_store: bool,
    pub only_if_cached: bool,
    pub stale_if_error: Option<u64>,
}

impl RequestControl {
    pub fn parse(headers: &HeaderMap) -> RequestControl {
        let mut c = RequestControl::default();
        let mut any = false;
        for_each_directive(headers, |name, value| {
            any = true;
            match name {
                // An unparsable max-age asks for the most restrictive reading.
                "max-age" => c.max_age = Some(value.and_then(parse_delta).unwrap_or(0)),
                "max-stale" => {
                    c.max_stale = Some(match value {
                        None => MaxStale::Any,
                        Some(v) => parse_delta(v).map_or(MaxStale::Seconds(0), MaxStale::Seconds),
                    })
                }
                "min-fresh" => c.min_fresh = Some(value.and_then(parse_delta).unwrap_or(0)),
                "no-cache" => c.no_cache = true,
                "no-store" => c.no_store = true,
                "only-if-cached" => c.only_if_cached = true,
                "stale-if-error" => c.stale_if_error = value.and_then(parse_delta),
                _ => {}
            }
        });
        // RFC 9111 §5.4: Pragma: no-cache only when there is no Cache-Control.
        if !any && headers.contains_key(header::CACHE_CONTROL) {
            any = true;
        }
        if !any {
            c.no_cache = headers
                .get_all(header::PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"));
        }
        c
    }
}

/// delta-seconds = 1*DIGIT, capped at 2^31 (§1.2.2). Quoted forms were unwrapped
/// by the tokenizer; anything else (signs, fractions, spaces) is invalid.
fn parse_delta(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX)))
}

/// Calls `f(name, value)` for every directive in every Cache-Control line,
/// with the name lower-cased and a quoted value unquoted.
fn for_each_directive(headers: &HeaderMap, mut f: impl FnMut(&str, Option<&str>)) {
    let mut name = String::new();
    let mut value = String::new();
    for line in headers.get_all(header::CACHE_CONTROL) {
        // A byte outside visible ASCII (obs-text, RFC 9110 §5.5) spoils only
        // the directive it is in: the others, `private` and `no-store` above
        // all, still count. Skipping the whole line made the answer depend
        // on whether the origin sent one line or several (found by fuzzing).
        let line = String::from_utf8_lossy(line.as_bytes());
        let mut rest: &str = &line;
        loop {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
            if rest.is_empty() {
                break;
            }
            let end = rest.find([',', '=']).unwrap_or(rest.len());
            name.clear();
            name.push_str(rest[..end].trim());
            name.make_ascii_lowercase();
            rest = &rest[end..];
            let has_value = rest.starts_with('=');
            if has_value {
                rest = rest[1..].trim_start();
                value.clear();
                rest = if let Some(quoted) = rest.strip_prefix('"') {
                    take_quoted(quoted, &mut value)
                } else {
                    let end = rest.find(',').unwrap_or(rest.len());
                    value.push_str(rest[..end].trim());
                    &rest[end..]
                };
            }
            if !name.is_empty() {
                f(&name, has_value.then_some(value.as_str()));
            }
        }
    }
}

/// Reads a quoted-string body (after the opening quote) into `out`; returns
/// the text after the closing quote and up to the next comma.
fn take_quoted<'a>(s: &'a str, out: &mut String) -> &'a str {
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
            }
            '"' => {
                let after = &s[i + 1..];
                return &after[after.find(',').unwrap_or(after.len())..];
            }
            c => out.push(c),
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_byte_outside_ascii_spoils_only_its_own_directive() {
        // Found by the cache_control fuzz target: one line or two, `private`
        // must count either way.
        let value = b"private, m~ax-age=0, s-maxp\xfe\xffge=0";
        let mut one = HeaderMap::new();
        one.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(value).unwrap(),
        );
        assert_eq!(ResponseControl::parse(&one).private, FieldsDirective::All);
        let mut two = HeaderMap::new();
        two.append(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        two.append(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"s-maxp\xfe\xffge=0, no-store").unwrap(),
        );
        let c = ResponseControl::parse(&two);
        assert_eq!(c.private, FieldsDirective::All);
        assert!(c.no_store);
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(header::CACHE_CONTROL, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn resp(lines: &[&str]) -> ResponseControl {
        ResponseControl::parse(&headers(lines))
    }

    fn req(lines: &[&str]) -> RequestControl {
        RequestControl::parse(&headers(lines))
    }

    #[test]
    fn names_are_case_insensitive_and_whitespace_tolerated() {
        // RFC 9111 §5.2
        let c = resp(&["  MAX-AGE=60 ,Public,,  no-TRANSFORM"]);
        assert_eq!(c.max_age, Delta::Seconds(60));
        assert!(c.public);
    }

    #[test]
    fn quoted_values_are_accepted() {
        // RFC 9111 §5.2: recipients accept the quoted form of delta-seconds.
        assert_eq!(resp(&["max-age=\"120\""]).max_age, Delta::Seconds(120));
        assert_eq!(
            resp(&["no-cache=\"Set-Cookie, X-Foo\", max-age=5"]).no_cache,
            FieldsDirective::Fields(Box::new([
                HeaderName::from_static("set-cookie"),
                HeaderName::from_static("x-foo")
            ]))
        );
        assert_eq!(
            resp(&["no-cache=\"Set-Cookie, X-Foo\", max-age=5"]).max_age,
            Delta::Seconds(5)
        );
    }

    #[test]
    fn unknown_directives_are_ignored() {
        // RFC 9111 §5.2.3
        let c = resp(&["community=\"UCI\", x-ext=1, max-age=3"]);
        assert_eq!(c.max_age, Delta::Seconds(3));
    }

    #[test]
    fn invalid_or_repeated_max_age_is_invalid() {
        // RFC 9111 §4.2.1: treat invalid or conflicting freshness as stale.
        for lines in [
            &["max-age=abc"][..],
            &["max-age=-1"],
            &["max-age=1.5"],
            &["max-age"],
            &["max-age=60, max-age=60"],
            &["max-age=60", "max-age=120"],
        ] {
            assert_eq!(resp(lines).max_age, Delta::Invalid, "{lines:?}");
            assert_eq!(resp(lines).max_age.seconds(), Some(0));
        }
    }

    #[test]
    fn delta_seconds_overflow_is_capped() {
        // RFC 9111 §1.2.2
        assert_eq!(
            resp(&["max-age=99999999999999999999999"]).max_age,
            Delta::Seconds(DELTA_MAX as u32)
        );
        assert_eq!(
            resp(&["s-maxage=4294967296"]).s_maxage,
            Delta::Seconds(DELTA_MAX as u32)
        );
    }

    #[test]
    fn no_cache_and_private_with_and_without_fields() {
        // RFC 9111 §5.2.2.4, §5.2.2.7
        assert_eq!(resp(&["no-cache"]).no_cache, FieldsDirective::All);
        assert_eq!(resp(&["private"]).private, FieldsDirective::All);
        assert_eq!(
            resp(&["private=\"x-user\""]).private,
            FieldsDirective::Fields(Box::new([HeaderName::from_static("x-user")]))
        );
        assert_eq!(
            resp(&["no-cache=\"a\", no-cache"]).no_cache,
            FieldsDirective::All
        );
    }

    #[test]
    fn s_maxage_and_revalidate_forbid_stale() {
        // RFC 9111 §5.2.2.2, §5.2.2.8, §5.2.2.10
        assert!(resp(&["must-revalidate"]).forbids_stale());
        assert!(resp(&["proxy-revalidate"]).forbids_stale());
        assert!(resp(&["s-maxage=10"]).forbids_stale());
        assert!(!resp(&["max-age=10"]).forbids_stale());
    }

    #[test]
    fn request_directives() {
        // RFC 9111 §5.2.1
        let c = req(&["max-age=5, min-fresh=3, no-cache, only-if-cached"]);
        assert_eq!(c.max_age, Some(5));
        assert_eq!(c.min_fresh, Some(3));
        assert!(c.no_cache && c.only_if_cached && !c.no_store);
        assert_eq!(req(&["max-stale"]).max_stale, Some(MaxStale::Any));
        assert_eq!(
            req(&["max-stale=30"]).max_stale,
            Some(MaxStale::Seconds(30))
        );
        assert_eq!(req(&["max-age=bogus"]).max_age, Some(0));
        assert!(req(&["no-store"]).no_store);
    }

    #[test]
    fn pragma_no_cache_only_without_cache_control() {
        // RFC 9111 §5.4
        let mut h = HeaderMap::new();
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(RequestControl::parse(&h).no_cache);
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        assert!(!RequestControl::parse(&h).no_cache);
    }

    #[test]
    fn stale_extensions_parse() {
        // RFC 5861 §3, §4
        let c = resp(&["max-age=1, stale-while-revalidate=30, stale-if-error=600"]);
        assert_eq!(c.stale_while_revalidate, Some(30));
        assert_eq!(c.stale_if_error, Some(600));
    }
}
