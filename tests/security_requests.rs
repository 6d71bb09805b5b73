//! Request grammar the audit found too lenient, sent over raw sockets: Host
//! forms (RFC 9112 §3.2), `:authority` against Host over HTTP/2 (RFC 9113
//! §8.3.1), dot segments and encoded slashes against a path-prefix route
//! (RFC 3986 §5.2.4), the `*` target (RFC 9110 §9.3.7), the head guard after
//! an upgrade request that was not switched, and a chunk size past
//! `max_request_body`.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A catch-all route and the forward proxy on: the default-shaped config.
async fn catch_all() -> (Origin, viaduct::Running) {
    let origin = Origin::fixed("origin body").await;
    let mut config = base_config();
    config.routes.push(route("*", "/", origin.addr));
    (origin, start(config).await)
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[tokio::test]
async fn invalid_host_forms_get_400_before_routing() {
    let (origin, proxy) = catch_all().await;
    let cases: &[(&str, &str)] = &[
        (
            "GET /h1 HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
            "more than one Host",
        ),
        (
            "GET /h2 HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
            "more than one Host",
        ),
        ("GET /h3 HTTP/1.1\r\nHost: a b/c\r\n\r\n", "invalid host"),
        (
            "GET /h4 HTTP/1.1\r\nHost: u@a.test\r\n\r\n",
            "user information",
        ),
        (
            "GET /h5 HTTP/1.1\r\nHost: a.test:65536\r\n\r\n",
            "invalid port",
        ),
        ("GET /h6 HTTP/1.1\r\nHost: \r\n\r\n", "empty Host"),
        ("GET /h7 HTTP/1.1\r\n\r\n", "missing Host"),
        // Absolute form: the URI names the host, but Host lines still count.
        (
            "GET http://a.test/h8 HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
            "more than one Host",
        ),
        (
            "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nHost: b.test:443\r\n\r\n",
            "more than one Host",
        ),
        ("PURGE /h9 HTTP/1.1\r\nHost: x y\r\n\r\n", "invalid host"),
    ];
    for (request, reason) in cases {
        let response = raw(proxy.addr(), request.as_bytes()).await;
        assert!(
            status_line(&response).contains(" 400 "),
            "{request:?} got {response}"
        );
        assert!(response.contains(reason), "{request:?} got {response}");
    }
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());

    // HTTP/1.0 may leave Host out; a valid one is served.
    let response = raw(proxy.addr(), b"GET /ok10 HTTP/1.0\r\n\r\n").await;
    assert!(status_line(&response).contains(" 200 "), "{response}");
    let response = raw(
        proxy.addr(),
        b"GET /ok11 HTTP/1.1\r\nHost: A.Test.:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&response).contains(" 200 "), "{response}");
    proxy.shutdown().await;
}

/// An h2c request whose `:authority` and `Host` differ.
async fn h2_get(proxy: std::net::SocketAddr, uri: &str, host: &str) -> StatusCode {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(uri)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test]
async fn http2_authority_and_host_must_agree() {
    let (origin, proxy) = catch_all().await;
    let status = h2_get(proxy.addr(), "http://a.test/h2-mismatch", "b.test").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(origin.count("/h2-mismatch"), 0);
    // The same host spelled differently (case, default port) agrees.
    let status = h2_get(proxy.addr(), "http://a.test/h2-same", "A.TEST:80").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(origin.count("/h2-same"), 1);
    proxy.shutdown().await;
}

/// `/pub/` goes to one origin, everything else to another.
async fn two_routes(allow_encoded_slash: bool) -> (Origin, Origin, viaduct::Running) {
    let public = Origin::fixed("public").await;
    let private = Origin::fixed("private").await;
    let mut config = base_config();
    config.server.allow_encoded_slash = allow_encoded_slash;
    config.routes.push(route("*", "/pub/", public.addr));
    config.routes.push(route("*", "/", private.addr));
    (public, private, start(config).await)
}

async fn get_target(proxy: std::net::SocketAddr, target: &str) -> String {
    let request = format!("GET {target} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    raw(proxy, request.as_bytes()).await
}

fn targets(origin: &Origin) -> Vec<String> {
    origin.seen().into_iter().map(|s| s.target).collect()
}

#[tokio::test]
async fn dot_segments_are_routed_by_the_normalised_path() {
    let (public, private, proxy) = two_routes(false).await;
    for (i, form) in [
        "/pub/../s1",
        "/pub/%2e%2e/s2",
        "/pub/.%2E/s3",
        "/pub/./x/../../s4",
    ]
    .iter()
    .enumerate()
    {
        let response = get_target(proxy.addr(), form).await;
        assert!(response.ends_with("private"), "{form}: {response}");
        assert_eq!(
            targets(&private).last().map(String::as_str),
            Some(format!("/s{}", i + 1).as_str()),
            "{form}"
        );
    }
    // Inside the prefix, the public origin gets the normalised path.
    let response = get_target(proxy.addr(), "/pub/a/./b/../c%7e?q=%2e%2e").await;
    assert!(response.ends_with("public"), "{response}");
    assert_eq!(targets(&public), vec!["/pub/a/c~?q=%2e%2e".to_string()]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn encoded_slashes_and_backslashes_get_400() {
    let (public, private, proxy) = two_routes(false).await;
    for form in [
        "/pub/..%2fs",
        "/pub/..%2Fs",
        "/pub/..%5cs",
        "/pub/..\\s",
        "/pub/a%2fb",
        "/pub/%00",
        "/pub/%zz",
    ] {
        let response = get_target(proxy.addr(), form).await;
        assert!(
            status_line(&response).contains(" 400 "),
            "{form}: {response}"
        );
    }
    assert!(public.seen().is_empty(), "{:?}", public.seen());
    assert!(private.seen().is_empty(), "{:?}", private.seen());
    proxy.shutdown().await;
}

#[tokio::test]
async fn allow_encoded_slash_keeps_them_but_never_around_dot_segments() {
    let (public, private, proxy) = two_routes(true).await;
    let response = get_target(proxy.addr(), "/pub/a%2fb").await;
    assert!(response.ends_with("public"), "{response}");
    assert_eq!(targets(&public), vec!["/pub/a%2Fb".to_string()]);
    for form in [
        "/pub/..%2fs",
        "/pub/%2e%2e%2Fs",
        "/pub/..%5Cs",
        "/pub/..\\s",
    ] {
        let response = get_target(proxy.addr(), form).await;
        assert!(
            status_line(&response).contains(" 400 "),
            "{form}: {response}"
        );
    }
    assert_eq!(public.seen().len(), 1);
    assert!(private.seen().is_empty(), "{:?}", private.seen());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_path_is_cached_under_its_normalised_form() {
    let origin = Origin::start(|_| {
        let mut resp = text(StatusCode::OK, "cacheable");
        resp.headers_mut()
            .insert("cache-control", "max-age=60".parse().unwrap());
        resp
    })
    .await;
    let mut config = base_config();
    config.routes.push(route("*", "/", origin.addr));
    let proxy = start(config).await;
    let first = get_target(proxy.addr(), "/norm/a/page").await;
    assert!(first.ends_with("cacheable"), "{first}");
    let second = get_target(proxy.addr(), "/norm/b/../a/./%70age").await;
    assert!(second.contains("; hit"), "{second}");
    assert_eq!(origin.count("/norm/"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn asterisk_is_only_for_options() {
    let (origin, proxy) = catch_all().await;
    let response = raw(
        proxy.addr(),
        b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&response).contains(" 200 "), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("\r\nallow: "),
        "{response}"
    );
    let response = raw(proxy.addr(), b"GET * HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert!(status_line(&response).contains(" 400 "), "{response}");
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
    proxy.shutdown().await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_after_an_unswitched_upgrade() {
    // The origin declines the upgrade with a plain 200.
    let (origin, proxy) = catch_all().await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let first = read_response(&mut stream).await;
    assert!(status_line(&first).contains(" 200 "), "{first}");
    stream
        .write_all(
            b"POST /smuggle HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\n\
Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\nHost: a.test\r\n\r\n",
        )
        .await
        .unwrap();
    let second = read_to_close(&mut stream).await;
    assert!(status_line(&second).contains(" 400 "), "{second}");
    assert_eq!(origin.count("/smuggle"), 0);
    assert_eq!(origin.count("/hidden"), 0);
    proxy.shutdown().await;
}

async fn small_body_proxy() -> (Origin, viaduct::Running) {
    let origin = Origin::fixed("took it").await;
    let mut config = base_config();
    config.server.max_request_body = viaduct::config::Size(1024);
    config.routes.push(route("*", "/", origin.addr));
    (origin, start(config).await)
}

#[tokio::test]
async fn a_chunk_size_past_the_body_limit_gets_413_at_once() {
    let (origin, proxy) = small_body_proxy().await;
    // The size line arrives with the head: refused before the origin is asked.
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(
            b"POST /big1 HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\nabc",
        )
        .await
        .unwrap();
    // The client never sends the megabyte it announced.
    let response = read_to_close(&mut stream).await;
    assert!(status_line(&response).contains(" 413 "), "{response}");
    assert_eq!(origin.count("/big1"), 0);

    // The size line arrives later, while the body streams: the body ends
    // there, without waiting for a kilobyte of data.
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"POST /big2 HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream
        .write_all(b"10\r\n0123456789abcdef\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b"ffffff\r\nabc").await.unwrap();
    let response = read_to_close(&mut stream).await;
    assert!(status_line(&response).contains(" 413 "), "{response}");
    proxy.shutdown().await;
}
