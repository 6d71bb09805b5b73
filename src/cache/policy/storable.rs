//! May a response be stored by a shared cache (RFC 9111 §3)?

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};

use super::freshness::heuristically_cacheable;
use crate::cache::control::{FieldsDirective, RequestControl, ResponseControl};
use crate::cache::key::Vary;
use crate::config::SetCookie;

/// Why a response was not stored; `as_str` feeds `Cache-Status: detail=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Method,
    Status,
    Partial,
    RequestNoStore,
    NoStore,
    Private,
    Authorization,
    NoFreshness,
    VaryStar,
    SetCookie,
    TooLarge,
    Incomplete,
    Disabled,
    /// The origin framed the body two ways (Content-Length and
    /// Transfer-Encoding): delivered, never kept (RFC 9112 §6.3).
    Framing,
}

impl NotStored {
    pub const ALL: [NotStored; 14] = [
        NotStored::Method,
        NotStored::Status,
        NotStored::Partial,
        NotStored::RequestNoStore,
        NotStored::NoStore,
        NotStored::Private,
        NotStored::Authorization,
        NotStored::NoFreshness,
        NotStored::VaryStar,
        NotStored::SetCookie,
        NotStored::TooLarge,
        NotStored::Incomplete,
        NotStored::Disabled,
        NotStored::Framing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::Partial => "partial",
            NotStored::RequestNoStore => "request-no-store",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::NoFreshness => "no-freshness",
            NotStored::VaryStar => "vary-star",
            NotStored::SetCookie => "set-cookie",
            NotStored::TooLarge => "too-large",
            NotStored::Incomplete => "incomplete",
            NotStored::Disabled => "disabled",
            NotStored::Framing => "framing",
        }
    }
}

/// Status codes whose caching rules we implement, for `must-understand` (§5.2.2.3).
fn understood(status: StatusCode) -> bool {
    heuristically_cacheable(status) || matches!(status.as_u16(), 302 | 303 | 307)
}

/// `Ok(fields)` when storable, with the fields a qualified `private` says must
/// not be stored (§5.2.2.7); `Err(reason)` when not.
pub fn storable(
    method: &Method,
    request: &HeaderMap,
    request_control: &RequestControl,
    status: StatusCode,
    response: &HeaderMap,
    control: &ResponseControl,
    set_cookie: SetCookie,
) -> Result<Vec<HeaderName>, NotStored> {
    // §3: only GET here; HEAD is answered from a stored GET instead.
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    // §3: a final status this cache understands. 206 needs range assembly
    // and 304 is a validation answer, not a representation.
    if status == StatusCode::PARTIAL_CONTENT {
        return Err(NotStored::Partial);
    }
    if status.is_informational() || status == StatusCode::NOT_MODIFIED {
        return Err(NotStored::Status);
    }
    if control.must_understand {
        // §5.2.2.3: must-understand overrides no-store for understood codes.
        if !understood(status) {
            return Err(NotStored::Status);
        }
    } else if control.no_store {
        return Err(NotStored::NoStore);
    }
    if request_control.no_store {
        return Err(NotStored::RequestNoStore);
    }
    let strip = match &control.private {
        FieldsDirective::All => return Err(NotStored::Private),
        FieldsDirective::Fields(names) => names.to_vec(),
        FieldsDirective::Absent => Vec::new(),
    };
    // §3.5: a shared cache reuses authenticated responses only when told so.
    if request.contains_key(header::AUTHORIZATION)
        && !(control.public || control.s_maxage.is_present() || control.must_revalidate)
    {
        return Err(NotStored::Authorization);
    }
    if Vary::of(response) == Vary::Star {
        return Err(NotStored::VaryStar);
    }
    // §3: explicit freshness, public, or a heuristically cacheable status
    // that can be kept useful (a Last-Modified for heuristics, or a
    // validator for revalidation).
    // A targeted field (RFC 9213 §2.1) stands in for Expires too.
    let explicit = control.max_age.is_present()
        || control.s_maxage.is_present()
        || (response.contains_key(header::EXPIRES) && !control.targeted);
    // §3.1 stores every field, but a cookie is usually one user's session
    // (§7.3, RFC 6265 §8): storing it hands it to the next user. Unless
    // `private="set-cookie"` removes it, the operator's setting decides.
    if response.contains_key(header::SET_COOKIE) && !strip.contains(&header::SET_COOKIE) {
        let allowed = match set_cookie {
            SetCookie::Pass => false,
            // The origin said in so many words that this may be shared.
            SetCookie::Explicit => explicit || control.public,
            SetCookie::Store => true,
        };
        if !allowed {
            return Err(NotStored::SetCookie);
        }
    }
    let useful =
        response.contains_key(header::LAST_MODIFIED) || response.contains_key(header::ETAG);
    if explicit || control.public || (heuristically_cacheable(status) && useful) {
        Ok(strip)
    } else {
        Err(NotStored::NoFreshness)
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // test tables
mod tests {
    use super::super::tests_support::headers;
    use super::*;

    fn check(
        method: Method,
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
    ) -> Result<Vec<HeaderName>, NotStored> {
        let req = headers(req);
        let resp = headers(resp);
        storable(
            &method,
            &req,
            &RequestControl::parse(&req),
            StatusCode::from_u16(status).unwrap(),
            &resp,
            &ResponseControl::parse(&resp),
            SetCookie::Pass,
        )
    }

    #[test]
    fn storability_table() {
        use http::Method as M;
        use NotStored as N;
        let lm = ("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT");
        let cases: &[(
            &str,
            M,
            &[(&str, &str)],
            u16,
            &[(&str, &str)],
            Result<(), NotStored>,
        )] = &[
            (
                "§3 max-age GET stored",
                M::GET,
                &[],
                200,
                &[("cache-control", "max-age=60")],
                Ok(()),
            ),
            (
                "§3 POST not stored",
                M::POST,
                &[],
                200,
                &[("cache-control", "max-age=60")],
                Err(N::Method),
            ),
            (
                "§3 HEAD not stored (served from GET)",
                M::HEAD,
                &[],
                200,
                &[("cache-control", "max-age=60")],
                Err(N::Method),
            ),
            (
                "§3 206 not stored here",
                M::GET,
                &[],
                206,
                &[("cache-control", "max-age=60")],
                Err(N::Partial),
            ),
            (
                "§3 304 is not a representation",
                M::GET,
                &[],
                304,
                &[("cache-control", "max-age=60")],
                Err(N::Status),
            ),
            (
                "§5.2.2.5 response no-store",
                M::GET,
                &[],
                200,
                &[("cache-control", "no-store, max-age=60")],
                Err(N::NoStore),
            ),
            (
                "§5.2.1.5 request no-store",
                M::GET,
                &[("cache-control", "no-store")],
                200,
                &[("cache-control", "max-age=60")],
                Err(N::RequestNoStore),
            ),
            (
                "§5.2.2.7 private not stored by a shared cache",
                M::GET,
                &[],
                200,
                &[("cache-control", "private, max-age=60")],
                Err(N::Private),
            ),
            (
                "§3.5 Authorization without permission",
                M::GET,
                &[("authorization", "Basic eDp5")],
                200,
                &[("cache-control", "max-age=60")],
                Err(N::Authorization),
            ),
            (
                "§3.5 Authorization with public",
                M::GET,
                &[("authorization", "Basic eDp5")],
                200,
                &[("cache-control", "public, max-age=60")],
                Ok(()),
            ),
            (
                "§3.5 Authorization with s-maxage",
                M::GET,
                &[("authorization", "Basic eDp5")],
                200,
                &[("cache-control", "s-maxage=60")],
                Ok(()),
            ),
            (
                "§3.5 Authorization with must-revalidate",
                M::GET,
                &[("authorization", "Basic eDp5")],
                200,
                &[("cache-control", "must-revalidate, max-age=60")],
                Ok(()),
            ),
            (
                "§4.1 Vary: * never matches, so not stored",
                M::GET,
                &[],
                200,
                &[("cache-control", "max-age=60"), ("vary", "*")],
                Err(N::VaryStar),
            ),
            (
                "§3 Expires alone is explicit freshness",
                M::GET,
                &[],
                200,
                &[("expires", "0")],
                Ok(()),
            ),
            (
                "§3 heuristic status with Last-Modified",
                M::GET,
                &[],
                200,
                &[lm],
                Ok(()),
            ),
            (
                "§3 heuristic status with only an ETag (validation)",
                M::GET,
                &[],
                404,
                &[("etag", "\"a\"")],
                Ok(()),
            ),
            (
                "§3 heuristic status with nothing to go on",
                M::GET,
                &[],
                200,
                &[],
                Err(N::NoFreshness),
            ),
            (
                "§3 302 needs explicit freshness",
                M::GET,
                &[],
                302,
                &[lm],
                Err(N::NoFreshness),
            ),
            (
                "§3 302 with max-age",
                M::GET,
                &[],
                302,
                &[("cache-control", "max-age=5")],
                Ok(()),
            ),
            (
                "§3 public alone",
                M::GET,
                &[],
                302,
                &[("cache-control", "public")],
                Ok(()),
            ),
            (
                "§5.2.2.3 must-understand overrides no-store",
                M::GET,
                &[],
                200,
                &[("cache-control", "must-understand, no-store, max-age=5")],
                Ok(()),
            ),
            (
                "§5.2.2.3 must-understand with an unknown status",
                M::GET,
                &[],
                299,
                &[("cache-control", "must-understand, max-age=5")],
                Err(N::Status),
            ),
            (
                "Set-Cookie is not shared under set_cookie = pass",
                M::GET,
                &[],
                200,
                &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
                Err(N::SetCookie),
            ),
            (
                "§3 1xx is not final",
                M::GET,
                &[],
                103,
                &[("cache-control", "max-age=60")],
                Err(N::Status),
            ),
        ];
        for (name, method, req, status, resp, want) in cases {
            let got = check(method.clone(), req, *status, resp).map(|_| ());
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn set_cookie_by_setting() {
        // §3.1, §7.3: whether a response with Set-Cookie is shared.
        use SetCookie::*;
        let lm = ("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT");
        let cookie = ("set-cookie", "id=1");
        let cases: &[(&str, &[(&str, &str)], [bool; 3])] = &[
            // [explicit, pass, store]
            (
                "max-age",
                &[("cache-control", "max-age=60"), cookie],
                [true, false, true],
            ),
            (
                "s-maxage",
                &[("cache-control", "s-maxage=60"), cookie],
                [true, false, true],
            ),
            (
                "public",
                &[("cache-control", "public"), lm, cookie],
                [true, false, true],
            ),
            (
                "Expires",
                &[("expires", "Tue, 01 Jan 2030 00:00:00 GMT"), cookie],
                [true, false, true],
            ),
            ("heuristics only", &[lm, cookie], [false, false, true]),
            (
                "private",
                &[("cache-control", "private, max-age=60"), cookie],
                [false, false, false],
            ),
            (
                "no-store",
                &[("cache-control", "no-store, max-age=60"), cookie],
                [false, false, false],
            ),
        ];
        for (name, resp, want) in cases {
            for (setting, want) in [Explicit, Pass, Store].into_iter().zip(want) {
                let req = headers(&[]);
                let resp = headers(resp);
                let got = storable(
                    &Method::GET,
                    &req,
                    &RequestControl::parse(&req),
                    StatusCode::OK,
                    &resp,
                    &ResponseControl::parse(&resp),
                    setting,
                );
                assert_eq!(got.is_ok(), *want, "{name} under {setting:?}");
            }
        }
    }

    #[test]
    fn qualified_private_stores_the_rest() {
        // §5.2.2.7
        let got = check(
            Method::GET,
            &[],
            200,
            &[
                (
                    "cache-control",
                    "private=\"x-user, set-cookie\", max-age=60",
                ),
                ("set-cookie", "a=b"),
            ],
        );
        assert_eq!(
            got,
            Ok(vec![HeaderName::from_static("x-user"), header::SET_COOKIE])
        );
    }
}
