//! RFC 9111 through the proxy: an origin that counts requests per path, the
//! proxy on port 0, real clients.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn reply(headers: &[(&str, &str)], body: &'static str) -> Response<TestBody> {
    let mut builder = Response::builder();
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(TestBody::full(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// An origin answering every path with the same headers and body.
async fn origin_with(
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> Origin {
    Origin::start(move |_| reply(headers, body)).await
}

async fn get_with(client: &mut Client, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = get(url);
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    client.send(req).await
}

fn cache_status(got: &Got) -> &str {
    got.header("cache-status")
        .expect("Cache-Status on every response")
}

#[tokio::test]
async fn max_age_hit_never_touches_the_origin() {
    let origin = origin_with(&[("cache-control", "max-age=600")], "cached body").await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    let url = origin.url("/c/max-age");
    let first = client.get(&url).await;
    assert_eq!(first.text(), "cached body");
    assert!(
        cache_status(&first).starts_with("viaduct; fwd=uri-miss; fwd-status=200; stored; ttl="),
        "{}",
        cache_status(&first)
    );
    for _ in 0..5 {
        let hit = client.get(&url).await;
        assert_eq!(hit.status, StatusCode::OK);
        assert_eq!(hit.text(), "cached body");
        assert!(
            cache_status(&hit).starts_with("viaduct; hit; ttl="),
            "{}",
            cache_status(&hit)
        );
        assert!(hit.header("age").unwrap().parse::<u64>().is_ok());
        assert_eq!(
            hit.header("date"),
            first.header("date"),
            "the stored Date is served"
        );
        assert_eq!(hit.header("via"), Some("1.1 viaduct"));
    }
    assert_eq!(origin.count("/c/max-age"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn s_maxage_wins_over_max_age() {
    let origin = origin_with(&[("cache-control", "max-age=0, s-maxage=600")], "shared").await;
    let proxy = start_default().await;
    let url = origin.url("/c/s-maxage");
    fetch(proxy.addr(), get(&url)).await;
    let hit = fetch(proxy.addr(), get(&url)).await;
    assert!(cache_status(&hit).contains("hit"), "{}", cache_status(&hit));
    assert_eq!(origin.count("/c/s-maxage"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn past_and_invalid_expires_are_misses() {
    let past = origin_with(&[("expires", "Thu, 01 Jan 1970 00:00:00 GMT")], "old").await;
    let invalid = origin_with(&[("expires", "0")], "zero").await;
    let proxy = start_default().await;
    for origin in [&past, &invalid] {
        let url = origin.url("/c/expires");
        let first = fetch(proxy.addr(), get(&url)).await;
        assert!(
            cache_status(&first).contains("detail=no-freshness"),
            "{}",
            cache_status(&first)
        );
        fetch(proxy.addr(), get(&url)).await;
        assert_eq!(origin.count("/c/expires"), 2);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn no_store_and_private_are_not_stored() {
    let no_store = origin_with(&[("cache-control", "no-store, max-age=600")], "x").await;
    let private = origin_with(&[("cache-control", "private, max-age=600")], "x").await;
    let proxy = start_default().await;
    for (origin, detail) in [(&no_store, "no-store"), (&private, "private")] {
        let url = origin.url("/c/uncacheable");
        for _ in 0..2 {
            let got = fetch(proxy.addr(), get(&url)).await;
            assert!(
                cache_status(&got).ends_with(&format!("detail={detail}")),
                "{}",
                cache_status(&got)
            );
        }
        assert_eq!(origin.count("/c/uncacheable"), 2);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn authorization_is_not_stored_unless_public() {
    let plain = origin_with(&[("cache-control", "max-age=600")], "secret").await;
    let public = origin_with(&[("cache-control", "public, max-age=600")], "shared").await;
    let proxy = start_default().await;
    let auth = [("authorization", "Bearer abc")];
    let mut client = Client::connect(proxy.addr()).await;
    for _ in 0..2 {
        let got = get_with(&mut client, &plain.url("/c/auth"), &auth).await;
        assert!(
            cache_status(&got).contains("detail=authorization"),
            "{}",
            cache_status(&got)
        );
    }
    assert_eq!(plain.count("/c/auth"), 2);
    for _ in 0..2 {
        get_with(&mut client, &public.url("/c/auth"), &auth).await;
    }
    assert_eq!(public.count("/c/auth"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn heuristic_freshness_from_last_modified() {
    let origin = origin_with(
        &[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")],
        "old doc",
    )
    .await;
    let proxy = start_default().await;
    let url = origin.url("/c/heuristic");
    let first = fetch(proxy.addr(), get(&url)).await;
    // 10% of ~3 years, capped at one day.
    assert!(
        cache_status(&first).ends_with("stored; ttl=86400"),
        "{}",
        cache_status(&first)
    );
    let hit = fetch(proxy.addr(), get(&url)).await;
    assert!(
        cache_status(&hit).contains("; hit;"),
        "{}",
        cache_status(&hit)
    );
    assert_eq!(origin.count("/c/heuristic"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn age_from_the_origin_is_added_to_resident_time() {
    let origin = origin_with(&[("cache-control", "max-age=1000"), ("age", "100")], "aged").await;
    let proxy = start_default().await;
    let url = origin.url("/c/age");
    let first = fetch(proxy.addr(), get(&url)).await;
    assert_eq!(
        first.header("age"),
        Some("100"),
        "a miss passes the origin's Age on"
    );
    assert!(
        cache_status(&first).contains("ttl=900"),
        "{}",
        cache_status(&first)
    );
    let hit = fetch(proxy.addr(), get(&url)).await;
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!(age >= 100, "age {age} forgot the origin's Age");
    assert!(age < 1000);
    proxy.shutdown().await;
}

#[tokio::test]
async fn revalidation_with_304_updates_headers_and_costs_one_conditional_request() {
    let conditional = Arc::new(AtomicUsize::new(0));
    let seen_conditional = conditional.clone();
    let origin = Origin::start(move |seen| {
        if seen
            .headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap())
            == Some("\"v1\"")
        {
            seen_conditional.fetch_add(1, Ordering::SeqCst);
            Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=600")
                .header("x-version", "2")
                .body(TestBody::full(Bytes::new()))
                .unwrap()
        } else {
            reply(
                &[
                    ("etag", "\"v1\""),
                    ("cache-control", "max-age=0"),
                    ("x-version", "1"),
                ],
                "the body",
            )
        }
    })
    .await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    let url = origin.url("/c/revalidate");
    let first = client.get(&url).await;
    assert_eq!(first.header("x-version"), Some("1"));
    let second = client.get(&url).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.text(), "the body");
    assert_eq!(
        second.header("x-version"),
        Some("2"),
        "headers updated from the 304"
    );
    assert_eq!(
        cache_status(&second),
        "viaduct; fwd=stale; fwd-status=304; stored; ttl=600"
    );
    assert_eq!(conditional.load(Ordering::SeqCst), 1);
    // The refreshed entry now serves hits.
    let third = client.get(&url).await;
    assert!(
        cache_status(&third).contains("; hit;"),
        "{}",
        cache_status(&third)
    );
    assert_eq!(third.header("x-version"), Some("2"));
    assert_eq!(origin.count("/c/revalidate"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_if_none_match_is_answered_304_from_cache() {
    let origin = origin_with(
        &[("cache-control", "max-age=600"), ("etag", "\"abc\"")],
        "payload",
    )
    .await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    let url = origin.url("/c/inm");
    client.get(&url).await;
    let got = get_with(&mut client, &url, &[("if-none-match", "W/\"abc\"")]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert!(got.body.is_empty());
    assert_eq!(got.header("etag"), Some("\"abc\""));
    assert!(cache_status(&got).contains("; hit;"));
    let got = get_with(&mut client, &url, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "payload");
    assert_eq!(origin.count("/c/inm"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn vary_accept_encoding_keeps_variants_apart() {
    let origin = Origin::start(|seen| {
        let gzip = seen
            .headers
            .get("accept-encoding")
            .is_some_and(|v| v.to_str().unwrap().contains("gzip"));
        let body = if gzip { "compressed" } else { "plain" };
        reply(
            &[
                ("cache-control", "max-age=600"),
                ("vary", "Accept-Encoding"),
            ],
            body,
        )
    })
    .await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    let url = origin.url("/c/vary");
    let gz = [("accept-encoding", "gzip, br")];
    assert_eq!(get_with(&mut client, &url, &gz).await.text(), "compressed");
    let plain = get_with(&mut client, &url, &[]).await;
    assert_eq!(plain.text(), "plain");
    assert!(
        cache_status(&plain).contains("fwd=vary-miss"),
        "{}",
        cache_status(&plain)
    );
    // Same preferences in another order share the gzip variant.
    let again = get_with(&mut client, &url, &[("accept-encoding", "br,GZIP")]).await;
    assert_eq!(again.text(), "compressed");
    assert!(cache_status(&again).contains("; hit;"));
    assert_eq!(get_with(&mut client, &url, &[]).await.text(), "plain");
    assert_eq!(origin.count("/c/vary"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn vary_star_is_never_served_from_cache() {
    let origin = origin_with(&[("cache-control", "max-age=600"), ("vary", "*")], "x").await;
    let proxy = start_default().await;
    let url = origin.url("/c/vary-star");
    for _ in 0..3 {
        let got = fetch(proxy.addr(), get(&url)).await;
        assert!(
            cache_status(&got).contains("detail=vary-star"),
            "{}",
            cache_status(&got)
        );
    }
    assert_eq!(origin.count("/c/vary-star"), 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn post_invalidates_the_stored_response() {
    let origin = origin_with(&[("cache-control", "max-age=600")], "doc").await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    let url = origin.url("/c/post");
    client.get(&url).await;
    client.get(&url).await;
    assert_eq!(origin.count("/c/post"), 2 - 1);
    let post = http::Request::post(&url)
        .body(http_body_util::Full::new(Bytes::from_static(b"change")))
        .unwrap();
    let got = client.send(post).await;
    assert_eq!(cache_status(&got), "viaduct; fwd=method; fwd-status=200");
    let after = client.get(&url).await;
    assert!(
        cache_status(&after).contains("fwd=uri-miss"),
        "{}",
        cache_status(&after)
    );
    assert_eq!(
        origin
            .seen()
            .iter()
            .filter(|s| s.method == http::Method::GET)
            .count(),
        2
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let origin = origin_with(&[("cache-control", "max-age=600")], "0123456789").await;
    let proxy = start_default().await;
    let url = origin.url("/c/head");
    fetch(proxy.addr(), get(&url)).await;
    let head = http::Request::head(&url)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let got = fetch(proxy.addr(), head).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body.is_empty());
    assert_eq!(got.header("content-length"), Some("10"));
    assert!(cache_status(&got).contains("; hit;"));
    assert_eq!(origin.count("/c/head"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn only_if_cached_miss_is_504() {
    let origin = origin_with(&[("cache-control", "max-age=600")], "x").await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    let url = origin.url("/c/oic");
    let got = get_with(&mut client, &url, &[("cache-control", "only-if-cached")]).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(origin.count("/c/oic"), 0);
    client.get(&url).await;
    let got = get_with(&mut client, &url, &[("cache-control", "only-if-cached")]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(origin.count("/c/oic"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn objects_over_max_object_size_stream_through_unstored() {
    let origin = Origin::start(|seen| {
        let chunked = seen.target.ends_with("chunked");
        let body = pattern(64 * 1024);
        let body = if chunked {
            TestBody::chunked(body.chunks(4096).map(Bytes::copy_from_slice).collect())
        } else {
            TestBody::full(body)
        };
        Response::builder()
            .header("cache-control", "max-age=600")
            .body(body)
            .unwrap()
    })
    .await;
    let mut config = base_config();
    config.cache.max_object_size = viaduct::config::Size(16 * 1024);
    let proxy = start(config).await;
    for path in ["/c/big/length", "/c/big/chunked"] {
        let url = origin.url(path);
        for _ in 0..2 {
            let got = fetch(proxy.addr(), get(&url)).await;
            assert_eq!(got.body, pattern(64 * 1024), "{path} streamed whole");
        }
        assert_eq!(origin.count(path), 2, "{path} was stored");
    }
    assert_eq!(proxy.cache().store.entry_count(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_origin_that_closes_mid_body_leaves_nothing_stored() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                let head =
                    "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 1000\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&[b'x'; 400]).await;
                // and hang up
            });
        }
    });
    let proxy = start_default().await;
    let url = format!("http://{addr}/c/truncated");
    for _ in 0..2 {
        let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        // The break shows either in the body or, when it is already known
        // before the head is written, as a connection closed without an answer.
        let complete = match sender.send_request(get(&url)).await {
            Ok(resp) => http_body_util::BodyExt::collect(resp.into_body())
                .await
                .is_ok(),
            Err(e) => {
                assert!(e.is_incomplete_message(), "{e}");
                false
            }
        };
        assert!(
            !complete,
            "a truncated body must not look complete to the client"
        );
    }
    assert_eq!(
        requests.load(Ordering::SeqCst),
        2,
        "the truncated response was stored"
    );
    assert_eq!(proxy.cache().store.entry_count(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn filling_the_store_keeps_its_weight_within_capacity() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=600")
            .body(TestBody::full(pattern(4096)))
            .unwrap()
    })
    .await;
    let mut config = base_config();
    let capacity = 256 * 1024;
    config.cache.capacity = viaduct::config::Size(capacity);
    config.cache.max_object_size = viaduct::config::Size(64 * 1024);
    let proxy = start(config).await;
    let mut client = Client::connect(proxy.addr()).await;
    for i in 0..300 {
        client.get(&origin.url(&format!("/c/fill/{i}"))).await;
    }
    let weight = proxy.cache().store.weighted_size();
    let entries = proxy.cache().store.entry_count();
    assert!(
        weight <= capacity,
        "weight {weight} over capacity {capacity}"
    );
    assert!(entries > 10 && entries < 300, "{entries} entries");
    proxy.shutdown().await;
}

#[tokio::test]
async fn must_revalidate_with_the_origin_down_is_504() {
    // The origin answers its first request, then hangs up on every other one.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut stream, _)) = listener.accept().await {
            let serve = std::mem::take(&mut first);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                if serve {
                    let reply = "HTTP/1.1 200 OK\r\nCache-Control: max-age=0, must-revalidate\r\nETag: \"m\"\r\nConnection: close\r\nContent-Length: 6\r\n\r\nstrict";
                    let _ = stream.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    let proxy = start_default().await;
    let url = format!("http://{addr}/c/strict");
    let first = fetch(proxy.addr(), get(&url)).await;
    assert_eq!(first.text(), "strict");
    assert!(
        cache_status(&first).contains("stored"),
        "{}",
        cache_status(&first)
    );
    // Even a client that accepts stale responses gets 504, not the stale copy.
    let mut req = get(&url);
    req.headers_mut()
        .insert("cache-control", "max-stale".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(got.text().contains("must be revalidated"), "{}", got.text());
    assert!(
        cache_status(&got).contains("fwd=stale"),
        "{}",
        cache_status(&got)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn cache_status_explains_local_answers_bypasses_and_a_disabled_cache() {
    let origin = origin_with(&[("cache-control", "max-age=600")], "0123456789").await;
    let proxy = start_default().await;
    let mut req = get("/nowhere");
    req.headers_mut()
        .insert("host", "unrouted.test".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(cache_status(&got), "viaduct; detail=no-route");
    let mut client = Client::connect(proxy.addr()).await;
    let got = get_with(
        &mut client,
        &origin.url("/c/precondition"),
        &[("if-match", "\"x\"")],
    )
    .await;
    assert_eq!(
        cache_status(&got),
        "viaduct; fwd=bypass; fwd-status=200; detail=precondition"
    );
    proxy.shutdown().await;

    let mut config = base_config();
    config.cache.enabled = false;
    let proxy = start(config).await;
    let url = origin.url("/c/disabled");
    for _ in 0..2 {
        let got = fetch(proxy.addr(), get(&url)).await;
        assert_eq!(cache_status(&got), "viaduct; fwd=bypass; fwd-status=200");
    }
    assert_eq!(origin.count("/c/disabled"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_full_unstorable_answer_to_revalidation_replaces_the_stale_entry() {
    let origin = Origin::start(|seen| {
        if seen.headers.contains_key("if-none-match") {
            reply(&[("cache-control", "no-store")], "new and private")
        } else {
            reply(
                &[("cache-control", "max-age=0"), ("etag", "\"old\"")],
                "old",
            )
        }
    })
    .await;
    let proxy = start_default().await;
    let url = origin.url("/c/replace");
    assert_eq!(fetch(proxy.addr(), get(&url)).await.text(), "old");
    let second = fetch(proxy.addr(), get(&url)).await;
    assert_eq!(second.text(), "new and private");
    assert!(
        cache_status(&second).contains("fwd=stale; fwd-status=200; detail=no-store"),
        "{}",
        cache_status(&second)
    );
    let third = fetch(proxy.addr(), get(&url)).await;
    assert!(
        cache_status(&third).contains("fwd=uri-miss"),
        "the old entry survived: {}",
        cache_status(&third)
    );
    proxy.shutdown().await;
}
