//! Partial content (RFC 9111 §3.3, §3.4) and slices: 206 responses stored
//! and reused, adjacent pieces combined into a whole 200, and large objects
//! kept in aligned slices fetched by Range, as nginx's slice module does.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::*;

/// What the ranged origin serves: a body and its entity tag.
#[derive(Clone)]
struct Object {
    body: Bytes,
    etag: &'static str,
}

/// An origin that honours single byte ranges (RFC 9110 §14) for whatever
/// `object` holds now, with `Accept-Ranges`, a strong ETag and max-age.
async fn ranged_origin(object: Arc<Mutex<Object>>) -> Origin {
    ranged_origin_slowed(object, std::time::Duration::ZERO).await
}

/// `ranged_origin`, answering each request after `delay`.
async fn ranged_origin_slowed(object: Arc<Mutex<Object>>, delay: std::time::Duration) -> Origin {
    Origin::start_delayed(
        move |seen| {
            let Object { body, etag } = object.lock().unwrap().clone();
            let len = body.len() as u64;
            let range = seen
                .headers
                .get("range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes="))
                .and_then(|spec| {
                    let (a, b) = spec.split_once('-')?;
                    let a: u64 = a.parse().ok()?;
                    let b: u64 = if b.is_empty() {
                        len - 1
                    } else {
                        b.parse::<u64>().ok()?.min(len - 1)
                    };
                    (a <= b).then_some((a, b))
                });
            let mut resp = match range {
                Some((a, _)) if a >= len => {
                    let mut r = Response::new(TestBody::full(Bytes::new()));
                    *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                    r.headers_mut()
                        .insert("content-range", format!("bytes */{len}").parse().unwrap());
                    r
                }
                Some((a, b)) => {
                    let mut r = Response::new(TestBody::full(body.slice(a as usize..=b as usize)));
                    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                    r.headers_mut().insert(
                        "content-range",
                        format!("bytes {a}-{b}/{len}").parse().unwrap(),
                    );
                    r
                }
                None => Response::new(TestBody::full(body)),
            };
            let h = resp.headers_mut();
            h.insert("etag", etag.parse().unwrap());
            h.insert("accept-ranges", "bytes".parse().unwrap());
            h.insert("cache-control", "max-age=3600".parse().unwrap());
            resp
        },
        move |_| delay,
    )
    .await
}

fn object(body: Bytes, etag: &'static str) -> Arc<Mutex<Object>> {
    Arc::new(Mutex::new(Object { body, etag }))
}

fn config(origin: &Origin, slice_size: u64) -> viaduct::Config {
    let mut config = base_config();
    config.routes = vec![route("*", "/", origin.addr)];
    config.cache.slice_size = viaduct::config::Size(slice_size);
    config
}

fn ranged(path: &str, range: &str) -> http::Request<Full<Bytes>> {
    let mut req = get(path);
    req.headers_mut()
        .insert("host", "site.test".parse().unwrap());
    req.headers_mut().insert("range", range.parse().unwrap());
    req
}

fn whole(path: &str) -> http::Request<Full<Bytes>> {
    let mut req = get(path);
    req.headers_mut()
        .insert("host", "site.test".parse().unwrap());
    req
}

/// The Range fields the origin received for `path`, in order (`-` for none).
fn ranges_seen(origin: &Origin, path: &str) -> Vec<String> {
    origin
        .seen()
        .iter()
        .filter(|s| s.target == path)
        .map(|s| {
            s.headers
                .get("range")
                .map_or("-".to_string(), |v| v.to_str().unwrap().to_string())
        })
        .collect()
}

fn is_hit(got: &Got) -> bool {
    got.header("cache-status")
        .is_some_and(|s| s.contains("hit"))
}

#[tokio::test]
async fn a_206_is_stored_and_reused_for_a_sub_range() {
    // RFC 9111 §3.3: a cache may store a partial response and serve later
    // ranges inside it.
    let body = pattern(1000);
    let origin = ranged_origin(object(body.clone(), "\"v1\"")).await;
    let proxy = start(config(&origin, 1 << 20)).await;

    let first = fetch(proxy.addr(), ranged("/a", "bytes=0-499")).await;
    assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(first.header("content-range"), Some("bytes 0-499/1000"));
    assert_eq!(first.body, body.slice(0..500));

    let sub = fetch(proxy.addr(), ranged("/a", "bytes=100-199")).await;
    assert_eq!(sub.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(sub.header("content-range"), Some("bytes 100-199/1000"));
    assert_eq!(sub.body, body.slice(100..200));
    assert!(is_hit(&sub), "{:?}", sub.header("cache-status"));

    let all = fetch(proxy.addr(), whole("/a")).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body, body);
    assert!(is_hit(&all), "{:?}", all.header("cache-status"));
    // One aligned request, for the slice holding byte 0.
    assert_eq!(ranges_seen(&origin, "/a"), ["bytes=0-1048575"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn two_adjacent_206s_combine_into_a_full_200_hit() {
    // RFC 9111 §3.4: pieces with the same strong validator combine.
    let body = pattern(1000);
    let origin = ranged_origin(object(body.clone(), "\"v1\"")).await;
    let proxy = start(config(&origin, 512)).await;

    let head = fetch(proxy.addr(), ranged("/b", "bytes=0-499")).await;
    assert_eq!(head.body, body.slice(0..500));
    let tail = fetch(proxy.addr(), ranged("/b", "bytes=600-999")).await;
    assert_eq!(tail.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.header("content-range"), Some("bytes 600-999/1000"));
    assert_eq!(tail.body, body.slice(600..1000));

    let all = fetch(proxy.addr(), whole("/b")).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.header("content-length"), Some("1000"));
    assert_eq!(all.body, body);
    assert!(is_hit(&all), "{:?}", all.header("cache-status"));
    assert_eq!(ranges_seen(&origin, "/b"), ["bytes=0-511", "bytes=512-999"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_50_mib_object_is_served_in_aligned_slices() {
    // Larger than max_object_size (8 MiB): kept as 1 MiB slices.
    const MIB: usize = 1 << 20;
    let body = pattern(50 * MIB);
    let origin = ranged_origin(object(body.clone(), "\"big\"")).await;
    let mut cfg = config(&origin, MIB as u64);
    cfg.cache.capacity = viaduct::config::Size(512 << 20);
    let proxy = start(cfg).await;

    // A video player's first request.
    let first = fetch(proxy.addr(), ranged("/video", "bytes=0-")).await;
    assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        first.header("content-range"),
        Some(format!("bytes 0-{}/{}", 50 * MIB - 1, 50 * MIB).as_str())
    );
    assert!(first.body == body, "the body arrives whole and in order");
    let want: Vec<String> = (0..50)
        .map(|i| format!("bytes={}-{}", i * MIB, (i + 1) * MIB - 1))
        .collect();
    assert_eq!(ranges_seen(&origin, "/video"), want, "only aligned ranges");

    let again = fetch(proxy.addr(), whole("/video")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.body == body);
    assert!(is_hit(&again), "{:?}", again.header("cache-status"));

    let seek = fetch(proxy.addr(), ranged("/video", "bytes=10000000-10000099")).await;
    assert_eq!(seek.body, body.slice(10_000_000..10_000_100));
    assert!(is_hit(&seek));
    // HEAD and a matching If-None-Match are answered from the manifest.
    let mut head = whole("/video");
    *head.method_mut() = http::Method::HEAD;
    let head = fetch(proxy.addr(), head).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some("52428800"));
    assert!(head.body.is_empty() && is_hit(&head));
    let mut revalidate = whole("/video");
    revalidate
        .headers_mut()
        .insert("if-none-match", "\"big\"".parse().unwrap());
    let not_modified = fetch(proxy.addr(), revalidate).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(origin.count("/video"), 50);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_whole_download_of_a_large_object_is_cut_into_slices() {
    // The first plain GET is fetched whole (no extra request) and kept in
    // slices as it streams by; later downloads and ranges are hits.
    let body = pattern(12 << 20);
    let origin = ranged_origin(object(body.clone(), "\"iso\"")).await;
    let proxy = start(config(&origin, 1 << 20)).await;

    let first = fetch(proxy.addr(), whole("/iso")).await;
    assert!(first.body == body);
    let second = fetch(proxy.addr(), whole("/iso")).await;
    assert!(second.body == body);
    assert!(is_hit(&second), "{:?}", second.header("cache-status"));
    let part = fetch(proxy.addr(), ranged("/iso", "bytes=5000000-5000999")).await;
    assert_eq!(part.body, body.slice(5_000_000..5_001_000));
    assert!(is_hit(&part));
    assert_eq!(ranges_seen(&origin, "/iso"), ["-"]);
    proxy.shutdown().await;
}

/// A proxy (512-byte slices) that stored slice 0 of `path` as "v1", after
/// which the origin switched to "v2" (every byte changed); returns v2.
async fn changed_after_first_slice(path: &str) -> (Bytes, viaduct::Running) {
    let v1 = pattern(2000);
    let v2: Bytes = v1
        .iter()
        .map(|b| b.wrapping_add(1))
        .collect::<Vec<u8>>()
        .into();
    let current = object(v1.clone(), "\"v1\"");
    let origin = ranged_origin(current.clone()).await;
    let proxy = start(config(&origin, 512)).await;
    let old = fetch(proxy.addr(), ranged(path, "bytes=0-99")).await;
    assert_eq!(old.body, v1.slice(0..100));
    *current.lock().unwrap() = Object {
        body: v2.clone(),
        etag: "\"v2\"",
    };
    (v2, proxy)
}

#[tokio::test]
async fn a_changed_validator_invalidates_the_object() {
    // §3.4: only pieces with the same strong validator combine; a slice
    // that shows another ETag drops what was stored.
    let (v2, proxy) = changed_after_first_slice("/c").await;
    // Slice 2 is fetched, shows v2: the v1 pieces go, v2 is served.
    let new = fetch(proxy.addr(), ranged("/c", "bytes=1000-1099")).await;
    assert_eq!(new.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(new.header("etag"), Some("\"v2\""));
    assert_eq!(new.body, v2.slice(1000..1100));
    let start_again = fetch(proxy.addr(), ranged("/c", "bytes=0-99")).await;
    assert_eq!(start_again.body, v2.slice(0..100), "no v1 slice survives");
    assert_eq!(start_again.header("etag"), Some("\"v2\""));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_change_mid_object_cuts_the_response_and_drops_the_slices() {
    let (v2, proxy) = changed_after_first_slice("/d").await;
    // Slice 0 is held (v1), slice 1 comes back v2: the v1 response cannot
    // be completed, so it is cut rather than finished with other bytes.
    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(whole("/d")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["etag"], "\"v1\"");
    assert!(
        resp.into_body().collect().await.is_err(),
        "cut, not completed"
    );

    let after = fetch(proxy.addr(), whole("/d")).await;
    assert_eq!(after.header("etag"), Some("\"v2\""));
    assert_eq!(after.body, v2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_origin_that_ignores_ranges_is_stored_whole() {
    // RFC 9110 §14.2: a server may ignore Range and send 200.
    let origin = Origin::start(|_| {
        let mut resp = text(StatusCode::OK, "no ranges here");
        resp.headers_mut()
            .insert("cache-control", "max-age=3600".parse().unwrap());
        resp
    })
    .await;
    let proxy = start(config(&origin, 1 << 20)).await;
    let first = fetch(proxy.addr(), ranged("/e", "bytes=0-1")).await;
    assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(first.text(), "no");
    let second = fetch(proxy.addr(), ranged("/e", "bytes=3-8")).await;
    assert_eq!(second.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(second.text(), "ranges");
    assert!(is_hit(&second));
    assert_eq!(origin.count("/e"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_range_without_a_strong_validator_passes_through() {
    // §3.4: pieces without a strong validator cannot be combined, so the
    // range takes the usual way: the whole object, stored, ranges served
    // from it.
    let body = pattern(3000);
    let served = body.clone();
    let origin = Origin::start(move |seen| {
        let mut resp = match seen.headers.get("range").and_then(|v| v.to_str().ok()) {
            Some(range) => {
                let (a, b) = range["bytes=".len()..].split_once('-').unwrap();
                let a: usize = a.parse().unwrap();
                let b: usize = b.parse::<usize>().unwrap_or(2999).min(2999);
                let mut r = Response::new(TestBody::full(served.slice(a..=b)));
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                r.headers_mut().insert(
                    "content-range",
                    format!("bytes {a}-{b}/3000").parse().unwrap(),
                );
                r
            }
            None => Response::new(TestBody::full(served.clone())),
        };
        resp.headers_mut()
            .insert("etag", "W/\"weak\"".parse().unwrap());
        resp.headers_mut()
            .insert("cache-control", "max-age=3600".parse().unwrap());
        resp
    })
    .await;
    let proxy = start(config(&origin, 1024)).await;
    let got = fetch(proxy.addr(), ranged("/f", "bytes=10-19")).await;
    assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(got.header("content-range"), Some("bytes 10-19/3000"));
    assert_eq!(got.body, body.slice(10..20));
    let again = fetch(proxy.addr(), ranged("/f", "bytes=20-29")).await;
    assert_eq!(again.header("content-range"), Some("bytes 20-29/3000"));
    assert!(is_hit(&again));
    assert_eq!(ranges_seen(&origin, "/f"), ["bytes=0-1023", "-"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_purge_removes_the_slices() {
    let body = pattern(3000);
    let origin = ranged_origin(object(body.clone(), "\"p\"")).await;
    let mut cfg = config(&origin, 1024);
    cfg.cache.max_object_size = viaduct::config::Size(2048);
    let proxy = start(cfg).await;
    fetch(proxy.addr(), ranged("/g", "bytes=0-")).await;
    assert!(is_hit(
        &fetch(proxy.addr(), ranged("/g", "bytes=5-9")).await
    ));
    let mut purge = whole("/g");
    *purge.method_mut() = http::Method::from_bytes(b"PURGE").unwrap();
    let purged = fetch(proxy.addr(), purge).await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text());
    let after = fetch(proxy.addr(), ranged("/g", "bytes=5-9")).await;
    assert!(!is_hit(&after), "{:?}", after.header("cache-status"));
    assert_eq!(after.body, body.slice(5..10));
    proxy.shutdown().await;
}

#[tokio::test]
async fn with_slices_off_a_range_fetches_the_whole_object() {
    // slice_size = 0: no range is sent; the whole object is fetched and
    // stored, and ranges are served from it.
    let body = pattern(1000);
    let origin = ranged_origin(object(body.clone(), "\"o\"")).await;
    let proxy = start(config(&origin, 0)).await;
    let got = fetch(proxy.addr(), ranged("/h", "bytes=1-2")).await;
    assert_eq!(got.body, body.slice(1..3));
    let again = fetch(proxy.addr(), ranged("/h", "bytes=1-2")).await;
    assert!(is_hit(&again));
    assert_eq!(ranges_seen(&origin, "/h"), ["-"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn revalidating_a_sliced_object_refetches_only_its_first_slice() {
    // RFC 9111 §5.2.1.4: the client's no-cache makes the cache validate; the
    // first slice answered with the same strong ETag keeps the others.
    let body = pattern(3000);
    let origin = ranged_origin(object(body.clone(), "\"r\"")).await;
    let mut cfg = config(&origin, 1024);
    cfg.cache.max_object_size = viaduct::config::Size(2048);
    let proxy = start(cfg).await;
    fetch(proxy.addr(), ranged("/r", "bytes=0-")).await;
    assert_eq!(origin.count("/r"), 3);
    let mut req = whole("/r");
    req.headers_mut()
        .insert("cache-control", "no-cache".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body == body);
    let status = got.header("cache-status").unwrap();
    assert!(status.contains("fwd=request"), "{status}");
    assert_eq!(
        ranges_seen(&origin, "/r"),
        [
            "bytes=0-1023",
            "bytes=1024-2047",
            "bytes=2048-2999",
            "bytes=0-1023"
        ]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_crowd_starting_the_same_object_fetches_each_slice_once() {
    // Twenty players start one video at once: the first slice, and each
    // one after it, reaches the origin once.
    let body = pattern(4096);
    let origin = ranged_origin_slowed(
        object(body.clone(), "\"crowd\""),
        std::time::Duration::from_millis(100),
    )
    .await;
    let mut cfg = config(&origin, 1024);
    cfg.cache.max_object_size = viaduct::config::Size(2048);
    let proxy = start(cfg).await;
    let mut crowd = Vec::new();
    for _ in 0..20 {
        let addr = proxy.addr();
        crowd.push(tokio::spawn(async move {
            fetch(addr, ranged("/crowd", "bytes=0-")).await
        }));
    }
    for player in crowd {
        let got = player.await.unwrap();
        assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
        assert!(got.body == body, "every player gets the whole object");
    }
    assert_eq!(
        ranges_seen(&origin, "/crowd"),
        [
            "bytes=0-1023",
            "bytes=1024-2047",
            "bytes=2048-3071",
            "bytes=3072-4095"
        ]
    );
    proxy.shutdown().await;
}
