//! The cache under load: request collapsing, stale-while-revalidate,
//! stale-if-error, purge and ranges.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn reply(headers: &[(&str, &str)], body: Bytes) -> Response<TestBody> {
    let mut builder = Response::builder();
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(TestBody::full(body)).unwrap()
}

fn status_of(got: &Got) -> String {
    got.header("cache-status").unwrap_or("").to_string()
}

/// `n` clients at once, each on its own connection.
async fn crowd(proxy: std::net::SocketAddr, url: &str, n: usize) -> Vec<Got> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move { fetch(proxy, get(&url)).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn two_hundred_clients_on_a_cold_key_cost_one_origin_request() {
    let body = pattern(64 * 1024);
    let sent = body.clone();
    let origin = Origin::start_delayed(
        move |_| reply(&[("cache-control", "max-age=600")], sent.clone()),
        |_| Duration::from_millis(300),
    )
    .await;
    let proxy = start_default().await;
    let got = crowd(proxy.addr(), &origin.url("/load/cold"), 200).await;
    assert_eq!(
        origin.count("/load/cold"),
        1,
        "the origin saw more than one request"
    );
    for g in &got {
        assert_eq!(g.status, StatusCode::OK);
        assert!(g.body == body, "a client got a wrong body");
    }
    let collapsed = got
        .iter()
        .filter(|g| status_of(g).contains("collapsed"))
        .count();
    assert!(collapsed > 0, "nobody was collapsed");
    assert!(proxy.cache().stats.collapsed.get() >= collapsed as u64);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_uncacheable_crowd_is_answered_and_the_next_crowd_is_not_serialized() {
    let origin = Origin::start_delayed(
        |_| reply(&[("cache-control", "private")], Bytes::from_static(b"mine")),
        |_| Duration::from_millis(100),
    )
    .await;
    let proxy = start_default().await;
    let url = origin.url("/load/private");
    let first = crowd(proxy.addr(), &url, 50).await;
    assert!(first
        .iter()
        .all(|g| g.status == StatusCode::OK && g.text() == "mine"));
    // Hit-for-miss: the next crowd goes to the origin side by side, not one by one.
    let before = origin.count("/load/private");
    let second = crowd(proxy.addr(), &url, 50).await;
    assert!(second
        .iter()
        .all(|g| g.status == StatusCode::OK && g.text() == "mine"));
    assert_eq!(origin.count("/load/private") - before, 50);
    assert!(
        origin.max_concurrency() > 10,
        "origin saw at most {} requests at once: the crowd was serialized",
        origin.max_concurrency()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_leader_whose_origin_resets_releases_every_follower() {
    // The first two connections (the request and its one retry) are reset
    // after a pause; later ones are answered.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        let mut index = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            index += 1;
            let reset = index <= 2;
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                if reset {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                let reply = "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    let proxy = start_default().await;
    let url = format!("http://{addr}/load/reset");
    let got = crowd(proxy.addr(), &url, 30).await;
    // Everyone got an answer: an error, or their own successful fetch.
    for g in &got {
        assert!(
            g.status == StatusCode::OK || g.status == StatusCode::BAD_GATEWAY,
            "{}",
            g.status
        );
    }
    assert!(
        got.iter().any(|g| g.status == StatusCode::BAD_GATEWAY),
        "the leader's failure vanished"
    );
    let next = fetch(proxy.addr(), get(&url)).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(next.text(), "ok");
    proxy.shutdown().await;
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_revalidates_once() {
    // Stale on arrival (Age beyond max-age), inside a 60 s SWR window; the
    // revalidation is slow, so every answer below came from the cache.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let origin = Origin::start_delayed(
        |_| {
            reply(
                &[
                    ("cache-control", "max-age=1, stale-while-revalidate=60"),
                    ("age", "5"),
                ],
                Bytes::from_static(b"swr body"),
            )
        },
        move |_| {
            // The first fetch fills the cache quickly; revalidations are slow.
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                Duration::ZERO
            } else {
                Duration::from_millis(500)
            }
        },
    )
    .await;
    let proxy = start_default().await;
    let url = origin.url("/load/swr");
    let first = fetch(proxy.addr(), get(&url)).await;
    assert!(
        status_of(&first).contains("stored"),
        "{}",
        status_of(&first)
    );
    let got = crowd(proxy.addr(), &url, 50).await;
    for g in &got {
        assert_eq!(g.text(), "swr body");
        assert!(
            status_of(g).contains("fwd=stale; detail=stale-while-revalidate"),
            "{}",
            status_of(g)
        );
    }
    // Exactly one background revalidation reaches the origin.
    for _ in 0..200 {
        if origin.count("/load/swr") >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(origin.count("/load/swr"), 2);
    assert_eq!(proxy.cache().stats.background_revalidations.get(), 1);
    proxy.shutdown().await;
}

/// An origin that answers the first request with `first`, then with `later`
/// (None: hang up without an answer).
async fn scripted_origin(first: &'static str, later: Option<&'static str>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut index = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            index += 1;
            let answer = if index == 1 { Some(first) } else { later };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                if let Some(answer) = answer {
                    let _ = stream.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_is_down_or_failing() {
    let first = "HTTP/1.1 200 OK\r\nCache-Control: max-age=0, stale-if-error=600\r\nETag: \"e\"\r\nConnection: close\r\nContent-Length: 5\r\n\r\nstale";
    let down = scripted_origin(first, None).await;
    let failing = scripted_origin(
        first,
        Some("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\ndown"),
    )
    .await;
    let proxy = start_default().await;
    for (origin, fwd_status) in [(down, ""), (failing, "; fwd-status=503")] {
        let url = format!("http://{origin}/load/sie");
        assert_eq!(fetch(proxy.addr(), get(&url)).await.text(), "stale");
        let got = fetch(proxy.addr(), get(&url)).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), "stale");
        let expected = format!("fwd=stale{fwd_status}; detail=stale-if-error");
        assert!(status_of(&got).contains(&expected), "{}", status_of(&got));
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn stale_if_error_never_overrides_must_revalidate() {
    let first = "HTTP/1.1 200 OK\r\nCache-Control: max-age=0, must-revalidate, stale-if-error=600\r\nETag: \"e\"\r\nConnection: close\r\nContent-Length: 5\r\n\r\nstrict";
    let origin = scripted_origin(first, None).await;
    let mut config = base_config();
    config.cache.stale_if_error = viaduct::config::Dur(Duration::from_secs(600));
    let proxy = start(config).await;
    let url = format!("http://{origin}/load/sie-strict");
    fetch(proxy.addr(), get(&url)).await;
    let got = fetch(proxy.addr(), get(&url)).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    proxy.shutdown().await;
}

#[tokio::test]
async fn purge_removes_every_variant_and_refuses_strangers() {
    let origin = Origin::start(|seen| {
        let lang = seen
            .headers
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("vary", "Accept-Language")
            .body(TestBody::full(Bytes::from(format!("lang={lang}"))))
            .unwrap()
    })
    .await;
    let proxy = start_default().await;
    let url = origin.url("/load/purge");
    let with_lang = |lang: &str| {
        let mut req = get(&url);
        req.headers_mut()
            .insert("accept-language", lang.parse().unwrap());
        req
    };
    fetch(proxy.addr(), with_lang("en")).await;
    fetch(proxy.addr(), with_lang("fr")).await;
    assert!(status_of(&fetch(proxy.addr(), with_lang("fr")).await).contains("; hit;"));
    let purge = http::Request::builder()
        .method("PURGE")
        .uri(&url)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let got = fetch(proxy.addr(), purge).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(
        proxy.cache().store.entry_count(),
        0,
        "a variant survived the purge"
    );
    let got = fetch(proxy.addr(), with_lang("fr")).await;
    assert!(
        status_of(&got).contains("fwd=uri-miss"),
        "{}",
        status_of(&got)
    );
    assert_eq!(proxy.cache().stats.purges.get(), 1);
    let again = http::Request::builder()
        .method("PURGE")
        .uri(origin.url("/load/never-stored"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        fetch(proxy.addr(), again).await.status,
        StatusCode::NOT_FOUND
    );
    proxy.shutdown().await;

    let mut config = base_config();
    config.cache.purge_allow = vec!["10.0.0.0/8".parse().unwrap()];
    let proxy = start(config).await;
    let purge = http::Request::builder()
        .method("PURGE")
        .uri(&url)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let got = fetch(proxy.addr(), purge).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    proxy.shutdown().await;
}

#[tokio::test]
async fn ranges_are_served_from_the_stored_object() {
    let origin = Origin::start(|_| {
        reply(
            &[("cache-control", "max-age=600"), ("etag", "\"r1\"")],
            Bytes::from_static(b"0123456789"),
        )
    })
    .await;
    let proxy = start_default().await;
    let url = origin.url("/load/range");
    let mut client = Client::connect(proxy.addr()).await;
    let ranged = |range: &str, if_range: Option<&str>| {
        let mut req = get(&url);
        req.headers_mut().insert("range", range.parse().unwrap());
        if let Some(v) = if_range {
            req.headers_mut().insert("if-range", v.parse().unwrap());
        }
        req
    };
    // A range on a miss fetches the whole object (it fits), so later ranges hit.
    let got = client.send(ranged("bytes=0-3", None)).await;
    assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(got.text(), "0123");
    assert_eq!(got.header("content-range"), Some("bytes 0-3/10"));
    let cases = [
        ("bytes=2-5", "2345", "bytes 2-5/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=-2", "89", "bytes 8-9/10"),
        ("bytes=8-100", "89", "bytes 8-9/10"),
    ];
    for (range, body, content_range) in cases {
        let got = client.send(ranged(range, None)).await;
        assert_eq!(got.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(got.text(), body, "{range}");
        assert_eq!(got.header("content-range"), Some(content_range), "{range}");
        assert!(
            status_of(&got).contains("; hit;"),
            "{range}: {}",
            status_of(&got)
        );
    }
    let got = client.send(ranged("bytes=20-30", None)).await;
    assert_eq!(got.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(got.header("content-range"), Some("bytes */10"));
    let got = client.send(ranged("bytes=0-3", Some("\"old\""))).await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "If-Range mismatch gets the whole body"
    );
    assert_eq!(got.text(), "0123456789");
    let got = client.send(ranged("bytes=0-3", Some("\"r1\""))).await;
    assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
    let got = client.send(ranged("bytes=0-1,4-5", None)).await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "several ranges get the whole body"
    );
    assert_eq!(origin.count("/load/range"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_range_on_an_object_too_large_to_store_goes_to_the_origin() {
    let origin = Origin::start(|seen| {
        let range = seen
            .headers
            .get("range")
            .map(|v| v.to_str().unwrap().to_string());
        match range {
            Some(r) => Response::builder()
                .status(206)
                .header("content-range", "bytes 0-3/65536")
                .body(TestBody::full(Bytes::from(format!("part {r}"))))
                .unwrap(),
            None => reply(&[("cache-control", "max-age=600")], pattern(64 * 1024)),
        }
    })
    .await;
    let mut config = base_config();
    config.cache.max_object_size = viaduct::config::Size(16 * 1024);
    let proxy = start(config).await;
    let mut req = get(&origin.url("/load/big-range"));
    req.headers_mut()
        .insert("range", "bytes=0-3".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(got.text(), "part bytes=0-3");
    proxy.shutdown().await;
}

#[tokio::test]
async fn admin_purge_by_url_and_by_prefix() {
    let origin = Origin::start(|_| {
        reply(
            &[("cache-control", "max-age=600")],
            Bytes::from_static(b"x"),
        )
    })
    .await;
    let proxy = start_default().await;
    for path in ["/adm/a", "/adm/img/1", "/adm/img/2", "/adm/other"] {
        fetch(proxy.addr(), get(&origin.url(path))).await;
    }
    assert_eq!(proxy.cache().store.entry_count(), 4);
    let admin = proxy.admin_addr();
    let post = |query: String| {
        http::Request::post(format!("http://{admin}/purge?{query}"))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    };
    let encoded = |url: String| url.replace(':', "%3A").replace('/', "%2F");
    let got = fetch(
        admin,
        post(format!("url={}", encoded(origin.url("/adm/a")))),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let got = fetch(
        admin,
        post(format!("url={}", encoded(origin.url("/adm/a")))),
    )
    .await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    let got = fetch(admin, post(format!("prefix={}", origin.url("/adm/img/")))).await;
    assert_eq!(got.status, StatusCode::OK);
    let answer: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(answer["purged"], 2, "{answer}");
    assert_eq!(answer["selector"], "prefix");
    assert_eq!(proxy.cache().store.entry_count(), 1);
    assert_eq!(
        fetch(admin, get(&format!("http://{admin}/healthz")))
            .await
            .status,
        StatusCode::OK
    );
    // The admin endpoints are not reachable through the proxy port.
    let mut req = get("/purge?prefix=http://x");
    req.headers_mut()
        .insert("host", "anything.test".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(proxy.cache().store.entry_count(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_leader_leaving_does_not_cancel_the_fill_for_followers() {
    let origin = Origin::start_delayed(
        |_| reply(&[("cache-control", "max-age=600")], pattern(32 * 1024)),
        |_| Duration::from_millis(300),
    )
    .await;
    let proxy = start_default().await;
    let url = origin.url("/load/leader-leaves");
    // The leader asks and hangs up before the origin answers.
    let mut leader = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n");
    leader.write_all(request.as_bytes()).await.unwrap();
    while origin.count("/load/leader-leaves") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let follower = tokio::spawn({
        let addr = proxy.addr();
        let url = url.clone();
        async move { fetch(addr, get(&url)).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(leader);
    let got = follower.await.unwrap();
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body == pattern(32 * 1024));
    let again = fetch(proxy.addr(), get(&url)).await;
    assert!(
        status_of(&again).contains("; hit;"),
        "{}",
        status_of(&again)
    );
    assert_eq!(origin.count("/load/leader-leaves"), 1);
    proxy.shutdown().await;
}
