//! Targeted cache control (RFC 9213) through the proxy: `CDN-Cache-Control`
//! and the other fields listed in `targeted_fields` rule this cache in place
//! of `Cache-Control` and `Expires` on reverse routes, and are ignored on
//! forward traffic. Each test names its section; each uses its own paths.

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use support::*;

/// A 200 with `headers` (appended in order, so a name may repeat).
fn reply(headers: &[(&str, &str)]) -> Response<TestBody> {
    let mut resp = Response::new(TestBody::full(Bytes::from_static(b"targeted body")));
    for (name, value) in headers {
        resp.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    resp
}

/// An origin answering every path with the same `headers`.
async fn origin_with(headers: &'static [(&'static str, &'static str)]) -> Origin {
    Origin::start(move |_| reply(headers)).await
}

/// Every path of `origin` behind one reverse route (default `[cache]`).
fn reverse(origin: &Origin) -> viaduct::Config {
    let mut config = base_config();
    config.routes = vec![route("*", "/", origin.addr)];
    config
}

/// A reverse-proxied GET for `path` (origin-form, Host: site.test).
fn site(path: &str) -> http::Request<http_body_util::Full<Bytes>> {
    let mut req = get(path);
    req.headers_mut()
        .insert("host", HeaderValue::from_static("site.test"));
    req
}

fn cache_status(got: &Got) -> &str {
    got.header("cache-status")
        .expect("Cache-Status on every response")
}

fn is_hit(got: &Got) -> bool {
    cache_status(got).contains("; hit")
}

/// Two requests for `path` on fresh connections; both answers.
async fn twice(proxy: &viaduct::Running, path: &str) -> (Got, Got) {
    let first = fetch(proxy.addr(), site(path)).await;
    let again = fetch(proxy.addr(), site(path)).await;
    assert_eq!(first.status, StatusCode::OK, "{path}");
    assert_eq!(again.status, StatusCode::OK, "{path}");
    (first, again)
}

/// `[cache] targeted_fields` as an operator writes it in proxy.toml.
fn fields_from_toml(list: &str) -> Vec<viaduct::config::FieldName> {
    viaduct::Config::from_toml(&format!("[cache]\ntargeted_fields = {list}\n"), "test")
        .unwrap()
        .cache
        .targeted_fields
}

#[tokio::test]
async fn a_longer_targeted_lifetime_overrides_cache_control() {
    // RFC 9213 §2.1: with a valid targeted field, Cache-Control is ignored,
    // however restrictive (no-cache, max-age=0, no-store, private).
    let origin = Origin::start(|seen| {
        let cc = seen.target.rsplit('/').next().unwrap().replace('_', "=");
        reply(&[
            ("cache-control", &cc),
            ("cdn-cache-control", "max-age=3600"),
        ])
    })
    .await;
    let proxy = start(reverse(&origin)).await;
    for path in [
        "/t/longer/no-cache",
        "/t/longer/max-age_0",
        "/t/longer/no-store",
        "/t/longer/private",
    ] {
        let (first, again) = twice(&proxy, path).await;
        assert!(
            cache_status(&first).contains("stored"),
            "{path}: {}",
            cache_status(&first)
        );
        assert!(is_hit(&again), "{path}: {}", cache_status(&again));
        assert_eq!(again.text(), "targeted body");
        assert_eq!(origin.count(path), 1, "{path}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_shorter_targeted_lifetime_overrides_cache_control() {
    // RFC 9213 §2.1: the targeted field's max-age=0 or no-cache wins over
    // Cache-Control's max-age=3600.
    let origin = Origin::start(|seen| {
        let cdn = seen.target.rsplit('/').next().unwrap().replace('_', "=");
        reply(&[
            ("cache-control", "max-age=3600"),
            ("cdn-cache-control", &cdn),
        ])
    })
    .await;
    let proxy = start(reverse(&origin)).await;
    for path in ["/t/shorter/max-age_0", "/t/shorter/no-cache"] {
        let (_, again) = twice(&proxy, path).await;
        assert!(!is_hit(&again), "{path}: {}", cache_status(&again));
        assert_eq!(origin.count(path), 2, "{path}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_invalid_targeted_field_is_ignored_as_a_whole() {
    // RFC 9213 §2.1 and §2.2: a field that is not a valid Structured
    // Dictionary (RFC 8941 §4.2) is ignored entirely, members included, and
    // Cache-Control rules instead. An empty one counts as absent too.
    let origin = Origin::start(|seen| {
        let (cc, cdn) = match seen.target.as_str() {
            "/t/invalid/uppercase" => ("no-store", "max-age=3600, Private"),
            "/t/invalid/dangling-semicolon" => ("no-store", "max-age=3600;"),
            "/t/invalid/empty" => ("no-store", ""),
            "/t/invalid/no-store-inside" => ("max-age=3600", "no-store, Private"),
            "/t/invalid/semicolon-kept" => ("max-age=3600", "max-age=0;"),
            other => panic!("unexpected {other}"),
        };
        reply(&[("cache-control", cc), ("cdn-cache-control", cdn)])
    })
    .await;
    let proxy = start(reverse(&origin)).await;
    for (path, stored) in [
        ("/t/invalid/uppercase", false),
        ("/t/invalid/dangling-semicolon", false),
        ("/t/invalid/empty", false),
        ("/t/invalid/no-store-inside", true),
        ("/t/invalid/semicolon-kept", true),
    ] {
        let (first, again) = twice(&proxy, path).await;
        if stored {
            assert!(is_hit(&again), "{path}: {}", cache_status(&again));
            assert_eq!(origin.count(path), 1, "{path}");
        } else {
            assert!(
                cache_status(&first).ends_with("detail=no-store"),
                "{path}: Cache-Control's no-store rules: {}",
                cache_status(&first)
            );
            assert!(!is_hit(&again), "{path}: {}", cache_status(&again));
            assert_eq!(origin.count(path), 2, "{path}");
        }
        // Ignored, not removed: the field still goes downstream as sent.
        assert!(first.headers.contains_key("cdn-cache-control"), "{path}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_member_of_the_wrong_type_is_ignored_but_the_field_still_rules() {
    // RFC 9213 §2.2: `max-age="3600"` is a String, not an Integer, so there
    // is no max-age; the field is still valid, so Cache-Control's max-age is
    // ignored (§2.1) and nothing gives freshness.
    let origin = origin_with(&[
        ("cache-control", "max-age=3600"),
        ("cdn-cache-control", "max-age=\"3600\""),
    ])
    .await;
    let proxy = start(reverse(&origin)).await;
    let (first, again) = twice(&proxy, "/t/wrong-type").await;
    assert!(!is_hit(&again), "{}", cache_status(&again));
    assert!(
        !cache_status(&first).contains("stored"),
        "{}",
        cache_status(&first)
    );
    assert_eq!(origin.count("/t/wrong-type"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn targeted_private_and_no_store_prevent_storing() {
    // RFC 9213 §2.1: caches using a targeted field MUST implement private
    // and no-store; Cache-Control's public, max-age=3600 does not count.
    let origin = Origin::start(|seen| {
        let cdn = seen.target.rsplit('/').next().unwrap().to_string();
        reply(&[
            ("cache-control", "public, max-age=3600"),
            ("cdn-cache-control", &cdn),
        ])
    })
    .await;
    let proxy = start(reverse(&origin)).await;
    for directive in ["private", "no-store"] {
        let path = format!("/t/withhold/{directive}");
        let (first, again) = twice(&proxy, &path).await;
        assert!(
            cache_status(&first).ends_with(&format!("detail={directive}")),
            "{path}: {}",
            cache_status(&first)
        );
        assert!(!is_hit(&again), "{path}: {}", cache_status(&again));
        assert_eq!(origin.count(&path), 2, "{path}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn expires_is_ignored_when_a_targeted_field_rules() {
    // RFC 9213 §2.1: the cache MUST ignore Expires along with Cache-Control.
    // An Expires an hour ahead gives no freshness next to a targeted field
    // without max-age; a past Expires does not shorten a targeted max-age.
    let origin = Origin::start(|seen| {
        let hour = Duration::from_secs(3600);
        let (expires, cdn) = match seen.target.as_str() {
            "/t/expires/ahead" => (SystemTime::now() + hour, Some("must-revalidate")),
            "/t/expires/past" => (SystemTime::now() - hour, Some("max-age=3600")),
            "/t/expires/alone" => (SystemTime::now() + hour, None),
            other => panic!("unexpected {other}"),
        };
        let expires = httpdate::fmt_http_date(expires);
        let mut headers = vec![("expires", expires.as_str())];
        headers.extend(cdn.map(|v| ("cdn-cache-control", v)));
        reply(&headers)
    })
    .await;
    let proxy = start(reverse(&origin)).await;
    let (_, again) = twice(&proxy, "/t/expires/ahead").await;
    assert!(!is_hit(&again), "{}", cache_status(&again));
    assert_eq!(origin.count("/t/expires/ahead"), 2);
    let (_, again) = twice(&proxy, "/t/expires/past").await;
    assert!(is_hit(&again), "{}", cache_status(&again));
    assert_eq!(origin.count("/t/expires/past"), 1);
    // The control: without a targeted field the same Expires gives freshness
    // (RFC 9111 §4.2.1).
    let (_, again) = twice(&proxy, "/t/expires/alone").await;
    assert!(is_hit(&again), "{}", cache_status(&again));
    assert_eq!(origin.count("/t/expires/alone"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_targeted_field_is_passed_downstream_unchanged() {
    // RFC 9213 §2.1 and §3: the field is read, not consumed; the client
    // gets it (and Cache-Control) byte for byte, from the origin and from
    // the cache alike, lines kept apart and in order.
    const ODD: &str = "max-age=3600,   stale-if-error=60;x=1, x-ext=\"a b\"";
    let origin = Origin::start(|seen| {
        if seen.target == "/t/downstream/lines" {
            reply(&[
                ("cache-control", "no-cache"),
                ("cdn-cache-control", "max-age=3600"),
                ("cdn-cache-control", "stale-if-error=60"),
            ])
        } else {
            reply(&[("cache-control", "no-cache"), ("cdn-cache-control", ODD)])
        }
    })
    .await;
    let proxy = start(reverse(&origin)).await;
    let (first, again) = twice(&proxy, "/t/downstream/one").await;
    assert!(is_hit(&again), "{}", cache_status(&again));
    for got in [&first, &again] {
        assert_eq!(got.header("cdn-cache-control"), Some(ODD));
        assert_eq!(got.headers.get_all("cdn-cache-control").iter().count(), 1);
        assert_eq!(got.header("cache-control"), Some("no-cache"));
    }
    let (first, again) = twice(&proxy, "/t/downstream/lines").await;
    assert!(is_hit(&again), "{}", cache_status(&again));
    for got in [&first, &again] {
        let lines: Vec<&str> = got
            .headers
            .get_all("cdn-cache-control")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(lines, ["max-age=3600", "stale-if-error=60"]);
        assert_eq!(got.header("cache-control"), Some("no-cache"));
    }
    assert_eq!(origin.count("/t/downstream/"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_route_chooses_its_own_targeted_fields() {
    // RFC 9213 §2.1: each cache has its own target list, possibly empty. A
    // route's `targeted_fields` replaces `[cache]`'s; `[]` turns targeting
    // off, and an unlisted field must not change behaviour.
    let origin = Origin::start(|seen| {
        let mut headers = vec![
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=3600"),
        ];
        if seen.target.ends_with("/ours") {
            headers.push(("viaduct-cache-control", "max-age=3600"));
        }
        reply(&headers)
    })
    .await;
    let mut config = base_config();
    let upstream = origin.addr;
    config.routes = vec![
        route_toml(&format!(
            "host = \"*\"\npath_prefix = \"/t/route/off/\"\nupstream = \"http://{upstream}\"\ntargeted_fields = []\n"
        )),
        route_toml(&format!(
            "host = \"*\"\npath_prefix = \"/t/route/own/\"\nupstream = \"http://{upstream}\"\ntargeted_fields = [\"viaduct-cache-control\"]\n"
        )),
        route("*", "/", upstream),
    ];
    assert_eq!(config.routes[0].targeted_fields, Some(vec![]));
    let proxy = start(config).await;
    for (path, stored) in [
        // Targeting off: Cache-Control's no-store rules.
        ("/t/route/off/cdn", false),
        // Its own list: CDN-Cache-Control is not on it.
        ("/t/route/own/cdn", false),
        ("/t/route/own/ours", true),
        // `[cache]`'s default list: CDN-Cache-Control rules.
        ("/t/route/default/cdn", true),
    ] {
        let (first, again) = twice(&proxy, path).await;
        assert_eq!(
            is_hit(&again),
            stored,
            "{path}: {} then {}",
            cache_status(&first),
            cache_status(&again)
        );
        assert_eq!(origin.count(path), if stored { 1 } else { 2 }, "{path}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_operators_order_decides_between_targeted_fields() {
    // RFC 9213 §2.1: the first field in target-list order with a valid,
    // non-empty value is used; an invalid one is passed over.
    let origin = Origin::start(|seen| {
        let headers: &[(&str, &str)] = match seen.target.as_str() {
            "/t/order/ours-first" => &[
                ("cache-control", "max-age=3600"),
                ("viaduct-cache-control", "no-store"),
                ("cdn-cache-control", "max-age=3600"),
            ],
            "/t/order/cdn-first" => &[
                ("cache-control", "no-store"),
                ("viaduct-cache-control", "no-store"),
                ("cdn-cache-control", "max-age=3600"),
            ],
            "/t/order/first-invalid" => &[
                ("cache-control", "max-age=3600"),
                ("viaduct-cache-control", "max-age=3600, Private"),
                ("cdn-cache-control", "no-store"),
            ],
            "/t/order/cdn-unlisted" => &[
                ("cache-control", "max-age=3600"),
                ("cdn-cache-control", "no-store"),
            ],
            other => panic!("unexpected {other}"),
        };
        reply(headers)
    })
    .await;
    for (list, path, stored) in [
        (
            "[\"Viaduct-Cache-Control\", \"cdn-cache-control\"]",
            "/t/order/ours-first",
            false,
        ),
        (
            "[\"cdn-cache-control\", \"viaduct-cache-control\"]",
            "/t/order/cdn-first",
            true,
        ),
        (
            "[\"viaduct-cache-control\", \"cdn-cache-control\"]",
            "/t/order/first-invalid",
            false,
        ),
        ("[\"viaduct-cache-control\"]", "/t/order/cdn-unlisted", true),
    ] {
        let mut config = reverse(&origin);
        config.cache.targeted_fields = fields_from_toml(list);
        let proxy = start(config).await;
        let (first, again) = twice(&proxy, path).await;
        assert_eq!(
            is_hit(&again),
            stored,
            "{list} {path}: {} then {}",
            cache_status(&first),
            cache_status(&again)
        );
        if !stored {
            assert!(
                cache_status(&first).ends_with("detail=no-store"),
                "{path}: {}",
                cache_status(&first)
            );
        }
        assert_eq!(origin.count(path), if stored { 1 } else { 2 }, "{path}");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_304_refreshes_by_the_targeted_field() {
    // RFC 9111 §4.3.4 with RFC 9213 §2.1: the stored head updated by a 304
    // is judged by its targeted field: stale on arrival (max-age=0), kept
    // for its validator, then fresh for an hour once the 304 says so, even
    // though Cache-Control still says no-cache.
    let origin = Origin::start(|seen| {
        let mut resp = if seen.headers.contains_key("if-none-match") {
            let mut resp = text(StatusCode::NOT_MODIFIED, "");
            resp.headers_mut().insert(
                "cdn-cache-control",
                HeaderValue::from_static("max-age=3600"),
            );
            resp
        } else {
            reply(&[
                ("cache-control", "no-cache"),
                ("cdn-cache-control", "max-age=0"),
            ])
        };
        resp.headers_mut()
            .insert("etag", HeaderValue::from_static("\"v1\""));
        resp
    })
    .await;
    let proxy = start(reverse(&origin)).await;
    let path = "/t/refresh";
    let first = fetch(proxy.addr(), site(path)).await;
    assert!(
        cache_status(&first).contains("stored"),
        "{}",
        cache_status(&first)
    );
    let revalidated = fetch(proxy.addr(), site(path)).await;
    assert_eq!(revalidated.status, StatusCode::OK);
    assert_eq!(revalidated.text(), "targeted body");
    assert!(
        origin.last().headers.contains_key("if-none-match"),
        "the second request revalidates"
    );
    assert_eq!(
        revalidated.header("cdn-cache-control"),
        Some("max-age=3600")
    );
    let hit = fetch(proxy.addr(), site(path)).await;
    assert!(is_hit(&hit), "{}", cache_status(&hit));
    assert_eq!(hit.text(), "targeted body");
    assert_eq!(origin.count(path), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn forward_traffic_ignores_targeted_fields() {
    // RFC 9213 §3: CDN-Cache-Control speaks to the origin's CDN, not to a
    // proxy its visitors chose; forward traffic follows Cache-Control alone,
    // whichever way the targeted field points.
    let origin = Origin::start(|seen| {
        if seen.target.ends_with("/longer") {
            reply(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=3600"),
            ])
        } else {
            reply(&[
                ("cache-control", "max-age=3600"),
                ("cdn-cache-control", "no-store"),
            ])
        }
    })
    .await;
    let proxy = start_default().await;
    let longer = origin.url("/t/fwd/longer");
    fetch(proxy.addr(), get(&longer)).await;
    let again = fetch(proxy.addr(), get(&longer)).await;
    assert!(!is_hit(&again), "{}", cache_status(&again));
    assert_eq!(origin.count("/t/fwd/longer"), 2);
    let withheld = origin.url("/t/fwd/withheld");
    let first = fetch(proxy.addr(), get(&withheld)).await;
    let again = fetch(proxy.addr(), get(&withheld)).await;
    assert!(is_hit(&again), "{}", cache_status(&again));
    assert_eq!(origin.count("/t/fwd/withheld"), 1);
    // Passed on untouched either way.
    assert_eq!(first.header("cdn-cache-control"), Some("no-store"));
    assert_eq!(again.header("cdn-cache-control"), Some("no-store"));
    proxy.shutdown().await;
}
