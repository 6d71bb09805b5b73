//! RFC 9111 and RFC 9110 rules that real origins exercise in odd ways:
//! obsolete date forms, lists in `Age`, conditionals without
//! `Last-Modified`. Each test names its section.

mod support;

use std::time::{Duration, SystemTime};

use http::StatusCode;
use support::*;

/// `Sunday, 06-Nov-94 08:49:37 GMT` (RFC 850), lower-cased, for `t`.
fn rfc850_lower(t: SystemTime) -> String {
    let imf = httpdate::fmt_http_date(t); // "Sun, 06 Nov 1994 08:49:37 GMT"
    let (day, rest) = imf.split_once(", ").unwrap();
    let long = match day {
        "Mon" => "monday",
        "Tue" => "tuesday",
        "Wed" => "wednesday",
        "Thu" => "thursday",
        "Fri" => "friday",
        "Sat" => "saturday",
        _ => "sunday",
    };
    let parts: Vec<&str> = rest.split(' ').collect();
    let year = &parts[2][2..];
    format!(
        "{long}, {}-{}-{year} {} gmt",
        parts[0],
        parts[1].to_lowercase(),
        parts[3]
    )
}

fn reverse(origin: &Origin) -> viaduct::Config {
    let mut config = base_config();
    config.routes = vec![route("*", "/", origin.addr)];
    config
}

fn site(path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = get(path);
    req.headers_mut()
        .insert("host", "site.test".parse().unwrap());
    req
}

#[tokio::test]
async fn an_obsolete_lower_case_expires_gives_freshness() {
    // RFC 9110 §5.6.7: recipients MUST accept RFC 850 and asctime dates.
    let origin = Origin::start(|_| {
        let mut resp = text(StatusCode::OK, "dated");
        let later = SystemTime::now() + Duration::from_secs(3600);
        resp.headers_mut()
            .insert("expires", rfc850_lower(later).parse().unwrap());
        resp
    })
    .await;
    let proxy = start(reverse(&origin)).await;
    fetch(proxy.addr(), site("/expires/850")).await;
    let again = fetch(proxy.addr(), site("/expires/850")).await;
    assert!(
        again.header("cache-status").unwrap().contains("hit"),
        "{:?}",
        again.header("cache-status")
    );
    assert_eq!(origin.count("/expires/850"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_list_in_age_counts_by_its_first_member() {
    // RFC 9111 §5.1: `Age: 7200, 0` is 7200 seconds old, past max-age=3600.
    let origin = Origin::start(|_| {
        let mut resp = text(StatusCode::OK, "aged");
        let h = resp.headers_mut();
        h.insert("cache-control", "max-age=3600".parse().unwrap());
        h.insert("age", "7200, 0".parse().unwrap());
        resp
    })
    .await;
    let proxy = start(reverse(&origin)).await;
    fetch(proxy.addr(), site("/age/list")).await;
    let again = fetch(proxy.addr(), site("/age/list")).await;
    assert!(
        !again.header("cache-status").unwrap().contains("hit"),
        "a response already 7200 s old is not fresh: {:?}",
        again.header("cache-status")
    );
    assert_eq!(origin.count("/age/list"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn if_modified_since_without_last_modified_is_judged_by_date() {
    // RFC 9111 §4.3.2: no Last-Modified stored, so Date stands in.
    let origin = Origin::start(|_| {
        let mut resp = text(StatusCode::OK, "no validator");
        resp.headers_mut()
            .insert("cache-control", "max-age=600".parse().unwrap());
        resp
    })
    .await;
    let proxy = start(reverse(&origin)).await;
    let first = fetch(proxy.addr(), site("/ims/date")).await;
    assert!(first.header("last-modified").is_none());
    let date = first
        .header("date")
        .expect("the origin sends Date")
        .to_string();
    let mut conditional = site("/ims/date");
    conditional
        .headers_mut()
        .insert("if-modified-since", date.parse().unwrap());
    let got = fetch(proxy.addr(), conditional).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    // Asked about an earlier time, the client gets the body.
    let earlier = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
    let mut older = site("/ims/date");
    older
        .headers_mut()
        .insert("if-modified-since", earlier.parse().unwrap());
    let got = fetch(proxy.addr(), older).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(origin.count("/ims/date"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn accept_language_variants_are_shared_across_spellings() {
    // RFC 9111 §4.1: the cache may normalise a Vary field by its syntax.
    let origin = Origin::start(|seen| {
        let lang = seen
            .headers
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let mut resp = http::Response::new(TestBody::full(bytes::Bytes::from(lang)));
        let h = resp.headers_mut();
        h.insert("cache-control", "max-age=600".parse().unwrap());
        h.insert("vary", "Accept-Language".parse().unwrap());
        resp
    })
    .await;
    let proxy = start(reverse(&origin)).await;
    let ask = |lang: &'static str| {
        let mut req = site("/lang");
        req.headers_mut()
            .insert("accept-language", lang.parse().unwrap());
        req
    };
    fetch(proxy.addr(), ask("en-US,en;q=0.9,de;q=0.9")).await;
    let same = fetch(proxy.addr(), ask("EN-us , de;q=0.90, en;q=0.9")).await;
    assert!(same.header("cache-status").unwrap().contains("hit"));
    assert_eq!(same.text(), "en-US,en;q=0.9,de;q=0.9");
    let other = fetch(proxy.addr(), ask("de,en-US;q=0.9")).await;
    assert!(!other.header("cache-status").unwrap().contains("hit"));
    assert_eq!(origin.count("/lang"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn set_cookie_is_stored_as_the_setting_says() {
    // RFC 9111 §3.1 (every field may be stored), §7.3 and RFC 6265 §8 (a
    // cookie is usually one user's).
    let origin = Origin::start(|seen| {
        let mut resp = text(StatusCode::OK, "with a cookie");
        let h = resp.headers_mut();
        h.insert("set-cookie", "session=abc".parse().unwrap());
        h.insert(
            "last-modified",
            "Tue, 01 Jan 2019 00:00:00 GMT".parse().unwrap(),
        );
        if seen.target.contains("/explicit") {
            h.insert("cache-control", "max-age=600".parse().unwrap());
        }
        resp
    })
    .await;
    use viaduct::config::SetCookie;
    for (setting, path, stored) in [
        (SetCookie::Explicit, "/sc/explicit/a", true),
        (SetCookie::Explicit, "/sc/heuristic/a", false),
        (SetCookie::Pass, "/sc/explicit/b", false),
        (SetCookie::Store, "/sc/heuristic/c", true),
    ] {
        let mut config = reverse(&origin);
        config.cache.set_cookie = setting;
        let proxy = start(config).await;
        let first = fetch(proxy.addr(), site(path)).await;
        let again = fetch(proxy.addr(), site(path)).await;
        let hit = again.header("cache-status").unwrap().contains("hit");
        assert_eq!(
            hit,
            stored,
            "{setting:?} {path}: {:?}",
            first.header("cache-status")
        );
        if stored {
            // A stored response keeps its fields, the cookie included.
            assert_eq!(again.header("set-cookie"), Some("session=abc"));
        } else {
            assert!(first.header("cache-status").unwrap().contains("set-cookie"));
        }
        proxy.shutdown().await;
    }
}

/// An origin that answers `max-age=60` already 120 s old (stale on arrival,
/// stored for its validator), and closes after each answer so nothing stays
/// pooled; `stop` closes its listener.
async fn stoppable_origin(
    cache_control: &'static str,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(move |_req| async move {
                let mut resp = http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"from the origin"),
                ));
                let h = resp.headers_mut();
                h.insert("cache-control", cache_control.parse().unwrap());
                h.insert("age", "120".parse().unwrap());
                h.insert("etag", "\"v1\"".parse().unwrap());
                h.insert("connection", "close".parse().unwrap());
                Ok::<_, std::convert::Infallible>(resp)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_stale_response_is_served_when_the_origin_cannot_be_reached() {
    // RFC 9111 §4.2.4: a cache may serve stale when disconnected from the
    // origin, unless the response forbids it (§5.2.2.2, §5.2.2.4, §5.2.2.8).
    for (cache_control, window, served) in [
        ("max-age=60", 3600, true),
        ("max-age=60", 0, false),
        ("max-age=60, must-revalidate", 3600, false),
        ("max-age=60, proxy-revalidate", 3600, false),
        ("s-maxage=60", 3600, false),
        ("max-age=60, no-cache", 3600, false),
    ] {
        let (addr, origin) = stoppable_origin(cache_control).await;
        let mut config = base_config();
        config.routes = vec![route("*", "/", addr)];
        config.cache.stale_if_unreachable = viaduct::config::Dur(Duration::from_secs(window));
        let proxy = start(config).await;
        let first = fetch(proxy.addr(), site("/down")).await;
        assert_eq!(first.status, StatusCode::OK);
        origin.abort();
        let _ = origin.await;
        let got = fetch(proxy.addr(), site("/down")).await;
        let status = got.header("cache-status").unwrap_or_default().to_string();
        if served {
            assert_eq!(got.status, StatusCode::OK, "{cache_control}: {status}");
            assert_eq!(got.text(), "from the origin");
            assert!(status.contains("origin-unreachable"), "{status}");
        } else {
            assert!(
                got.status.is_server_error(),
                "{cache_control}, window {window}: {} {status}",
                got.status
            );
        }
        proxy.shutdown().await;
    }
}
