//! Targeted cache control (RFC 9213): `CDN-Cache-Control` and the other
//! fields an operator lists in `targeted_fields`, which speak to this cache
//! alone and take precedence over `Cache-Control` and `Expires`.
//!
//! A targeted field is a Structured Field Dictionary (RFC 8941, parsed by
//! `sfv`), not the Cache-Control grammar: `max-age=60, private` parses the
//! same, but `max-age="60"` is a String and so not a max-age (§2.2).

use http::header::{HeaderMap, HeaderName};
use sfv::{BareItem, Dictionary, ListEntry, Parser};

use super::control::{Delta, FieldsDirective, ResponseControl, DELTA_MAX};

/// The directives of the first field in `fields` (in the operator's order)
/// that is present, parses, and is not empty (§2.1); `None` when there is
/// none, and the cache falls back to `Cache-Control` and `Expires`. The
/// control it returns has `targeted` set, which makes `Expires` ignored.
pub fn control(headers: &HeaderMap, fields: &[HeaderName]) -> Option<ResponseControl> {
    fields.iter().find_map(|name| {
        let dictionary = parse(headers, name)?;
        Some(from_dictionary(&dictionary))
    })
}

/// The field's lines combined as one Dictionary (RFC 8941 §4.2: lines are
/// joined with commas); `None` when absent, empty or invalid anywhere (§2.2:
/// a field that fails to parse is ignored as a whole).
fn parse(headers: &HeaderMap, name: &HeaderName) -> Option<Dictionary> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    let mut text = first.as_bytes().to_vec();
    for line in lines {
        text.extend_from_slice(b", ");
        text.extend_from_slice(line.as_bytes());
    }
    let dictionary: Dictionary = Parser::new(&text).parse().ok()?;
    (!dictionary.is_empty()).then_some(dictionary)
}

/// Maps Dictionary members onto the Cache-Control directives (§2.2): flags
/// are Boolean `true` (written bare), seconds are non-negative Integers;
/// a member of another type, and any unknown member, is ignored, and
/// parameters never matter.
fn from_dictionary(dictionary: &Dictionary) -> ResponseControl {
    let mut c = ResponseControl {
        targeted: true,
        ..ResponseControl::default()
    };
    for (key, member) in dictionary {
        match key.as_str() {
            "max-age" => c.max_age = delta(member).map_or(c.max_age, Delta::Seconds),
            "s-maxage" => c.s_maxage = delta(member).map_or(c.s_maxage, Delta::Seconds),
            "stale-while-revalidate" => {
                c.stale_while_revalidate = delta(member).or(c.stale_while_revalidate)
            }
            "stale-if-error" => c.stale_if_error = delta(member).or(c.stale_if_error),
            "no-cache" => c.no_cache = fields_directive(member),
            "private" => c.private = fields_directive(member),
            "no-store" => c.no_store = flag(member),
            "public" => c.public = flag(member),
            "must-revalidate" => c.must_revalidate = flag(member),
            "proxy-revalidate" => c.proxy_revalidate = flag(member),
            "immutable" => c.immutable = flag(member),
            "must-understand" => c.must_understand = flag(member),
            _ => {}
        }
    }
    c
}

fn bare(member: &ListEntry) -> Option<&BareItem> {
    match member {
        ListEntry::Item(item) => Some(&item.bare_item),
        ListEntry::InnerList(_) => None,
    }
}

/// A Boolean member: `true` when written bare (`no-store`) or `?1`.
fn flag(member: &ListEntry) -> bool {
    bare(member).and_then(BareItem::as_boolean).unwrap_or(false)
}

/// A non-negative Integer, capped at 2^31 like delta-seconds (RFC 9111
/// §1.2.2); a negative one is the wrong value and ignored.
fn delta(member: &ListEntry) -> Option<u32> {
    let n = i64::from(bare(member)?.as_integer()?);
    u64::try_from(n).ok().map(|n| n.min(DELTA_MAX) as u32)
}

/// `private` or `no-cache`: bare (`true`) for the whole response; a String
/// of comma-separated names, or an Inner List of Strings or Tokens, for
/// those fields (§5.2.2.4, §5.2.2.7 carried over). `?0` is absent. Any other
/// type is read as the whole response: a directive that withholds is never
/// dropped because of its spelling.
fn fields_directive(member: &ListEntry) -> FieldsDirective {
    let names: Vec<HeaderName> = match member {
        ListEntry::InnerList(list) => list
            .items
            .iter()
            .filter_map(|item| match &item.bare_item {
                BareItem::String(s) => Some(s.as_str()),
                BareItem::Token(t) => Some(t.as_str()),
                _ => None,
            })
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect(),
        ListEntry::Item(item) => match &item.bare_item {
            BareItem::Boolean(false) => return FieldsDirective::Absent,
            BareItem::String(s) => s
                .as_str()
                .split(',')
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                .collect(),
            _ => Vec::new(),
        },
    };
    if names.is_empty() {
        FieldsDirective::All
    } else {
        FieldsDirective::Fields(names.into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const CDN: HeaderName = HeaderName::from_static("cdn-cache-control");
    const OURS: HeaderName = HeaderName::from_static("viaduct-cache-control");

    fn headers(pairs: &[(&HeaderName, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append((*name).clone(), HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    fn cdn(value: &str) -> Option<ResponseControl> {
        control(&headers(&[(&CDN, value.as_bytes())]), &[CDN])
    }

    #[test]
    fn directives_as_dictionary_members() {
        // RFC 9213 §2.2: names are keys, seconds are Integers, flags Booleans.
        let c = cdn("max-age=600, s-maxage=30, must-revalidate, stale-if-error=9").unwrap();
        assert!(c.targeted);
        assert_eq!(c.max_age, Delta::Seconds(600));
        assert_eq!(c.s_maxage, Delta::Seconds(30));
        assert!(c.must_revalidate);
        assert_eq!(c.stale_if_error, Some(9));
        let c = cdn("no-store, private, public=?0").unwrap();
        assert!(c.no_store && !c.public);
        assert_eq!(c.private, FieldsDirective::All);
        assert_eq!(cdn("no-cache").unwrap().no_cache, FieldsDirective::All);
        assert_eq!(
            cdn("max-age=99999999999").unwrap().max_age,
            Delta::Seconds(1 << 31)
        );
    }

    #[test]
    fn members_of_the_wrong_type_are_ignored() {
        // §2.2: a String, a Decimal, a negative number or an Inner List is
        // not a max-age; the rest of the field still counts.
        for value in [
            "max-age=\"60\", public",
            "max-age=6.5, public",
            "max-age=-1, public",
            "max-age=(1 2), public",
            "max-age=?1, public",
        ] {
            let c = cdn(value).unwrap();
            assert_eq!(c.max_age, Delta::Absent, "{value}");
            assert!(c.public, "{value}");
        }
        // Parameters never matter; unknown members are ignored.
        let c = cdn("max-age=60;foo=bar, x-unknown=1").unwrap();
        assert_eq!(c.max_age, Delta::Seconds(60));
    }

    #[test]
    fn an_invalid_or_empty_field_falls_back() {
        // §2.2: not a Dictionary at all, so ignored as a whole.
        for value in [
            "max-age=60, Private",
            "max-age=60,,",
            "max-age=60;",
            "",
            "max-age=60 x",
        ] {
            assert_eq!(cdn(value), None, "{value:?}");
        }
        assert_eq!(control(&HeaderMap::new(), &[CDN]), None);
        // Targeting off: no field is read.
        assert_eq!(control(&headers(&[(&CDN, b"max-age=1")]), &[]), None);
    }

    #[test]
    fn lines_combine_and_the_first_valid_listed_field_wins() {
        // RFC 8941 §4.2: several lines are one value.
        let h = headers(&[(&CDN, b"max-age=60"), (&CDN, b"no-store")]);
        let c = control(&h, &[CDN]).unwrap();
        assert!(c.no_store);
        assert_eq!(c.max_age, Delta::Seconds(60));
        // §2.1: in the operator's order; an invalid one is skipped.
        let h = headers(&[(&OURS, b"max-age=5"), (&CDN, b"max-age=50")]);
        assert_eq!(
            control(&h, &[OURS, CDN]).unwrap().max_age,
            Delta::Seconds(5)
        );
        assert_eq!(
            control(&h, &[CDN, OURS]).unwrap().max_age,
            Delta::Seconds(50)
        );
        let h = headers(&[(&OURS, b"max-age=5,,"), (&CDN, b"max-age=50")]);
        assert_eq!(
            control(&h, &[OURS, CDN]).unwrap().max_age,
            Delta::Seconds(50)
        );
    }

    #[test]
    fn qualified_private_and_no_cache() {
        let c = cdn("private=\"set-cookie, x-user\"").unwrap();
        assert_eq!(
            c.private,
            FieldsDirective::Fields(
                vec![
                    HeaderName::from_static("set-cookie"),
                    HeaderName::from_static("x-user")
                ]
                .into()
            )
        );
        let c = cdn("no-cache=(\"set-cookie\" x-user)").unwrap();
        assert!(matches!(c.no_cache, FieldsDirective::Fields(ref n) if n.len() == 2));
        // A withholding directive is never lost to its spelling.
        assert_eq!(cdn("private=3").unwrap().private, FieldsDirective::All);
        assert_eq!(cdn("private=?0").unwrap().private, FieldsDirective::Absent);
    }
}
