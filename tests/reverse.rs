//! Reverse proxying: routes by Host and path prefix.

mod support;

use http::{Request, StatusCode};
use support::*;

/// An origin that answers with its own name, so the test sees which one served.
async fn named(name: &'static str) -> Origin {
    Origin::fixed(name).await
}

fn get_host(path: &str, host: &str) -> Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = get(path);
    req.headers_mut().insert("host", host.parse().unwrap());
    req
}

#[tokio::test]
async fn host_matching_exact_wildcard_and_catch_all_with_longest_prefix() {
    let exact = named("exact").await;
    let exact_api = named("exact-api").await;
    let wildcard = named("wildcard").await;
    let any = named("any").await;
    let any_static = named("any-static").await;
    let mut config = base_config();
    config.routes = vec![
        route("app.test", "/", exact.addr),
        route("app.test", "/api/", exact_api.addr),
        route("*.app.test", "/", wildcard.addr),
        route("*", "/static/", any_static.addr),
        route("*", "/", any.addr),
    ];
    let proxy = start(config).await;
    let mut client = Client::connect(proxy.addr()).await;
    let cases = [
        ("app.test", "/index.html", "exact"),
        ("APP.test:8080", "/api/users", "exact-api"),
        ("app.test", "/apix", "exact"),
        ("www.app.test", "/api/users", "wildcard"),
        ("deep.www.app.test", "/", "wildcard"),
        ("other.test", "/static/logo.png", "any-static"),
        ("other.test", "/page", "any"),
        ("app.test.", "/", "exact"),
    ];
    for (host, path, want) in cases {
        let got = client.send(get_host(path, host)).await;
        assert_eq!(got.status, StatusCode::OK, "{host}{path}");
        assert_eq!(got.text(), want, "{host}{path}");
    }
    assert_eq!(exact_api.count("/api/users"), 1);
    assert_eq!(wildcard.count("/"), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn unknown_host_gets_404_naming_it() {
    let origin = named("only").await;
    let mut config = base_config();
    config.routes = vec![route("known.test", "/", origin.addr)];
    let proxy = start(config).await;
    let got = fetch(proxy.addr(), get_host("/", "unknown.test")).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.text(), "no route for host unknown.test\n");
    assert_eq!(origin.count("/"), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_host_is_kept_by_default_or_replaced_by_the_upstreams() {
    let origin = named("o").await;
    let mut config = base_config();
    config.routes = vec![
        route("kept.test", "/", origin.addr),
        route_toml(&format!(
            "host = \"replaced.test\"\nupstream = \"http://{}\"\npreserve_host = false\n",
            origin.addr
        )),
    ];
    let proxy = start(config).await;
    fetch(proxy.addr(), get_host("/rev-host-1", "kept.test")).await;
    assert_eq!(origin.last().headers["host"], "kept.test");
    fetch(proxy.addr(), get_host("/rev-host-2", "replaced.test")).await;
    assert_eq!(origin.last().headers["host"], origin.addr.to_string());
    assert_eq!(origin.last().target, "/rev-host-2");
    proxy.shutdown().await;
}

#[tokio::test]
async fn forwarded_headers_follow_the_route_setting() {
    let origin = named("o").await;
    let mut config = base_config();
    let with = |host: &str, mode: &str| {
        route_toml(&format!(
            "host = \"{host}\"\nupstream = \"http://{}\"\nforwarded = \"{mode}\"\n",
            origin.addr
        ))
    };
    config.routes = vec![
        with("xf.test", "x-forwarded"),
        with("rfc.test", "forwarded"),
        with("none.test", "none"),
    ];
    let proxy = start(config).await;

    let mut req = get_host("/rev-xff", "xf.test");
    req.headers_mut()
        .insert("x-forwarded-for", "192.0.2.7".parse().unwrap());
    fetch(proxy.addr(), req).await;
    let seen = origin.last();
    assert_eq!(seen.headers["x-forwarded-for"], "192.0.2.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-host"], "xf.test");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert!(seen.headers.get("forwarded").is_none());

    fetch(proxy.addr(), get_host("/rev-fwd", "rfc.test")).await;
    let seen = origin.last();
    assert_eq!(
        seen.headers["forwarded"],
        "for=127.0.0.1;host=\"rfc.test\";proto=http"
    );
    assert!(seen.headers.get("x-forwarded-for").is_none());

    fetch(proxy.addr(), get_host("/rev-none", "none.test")).await;
    let seen = origin.last();
    assert!(seen.headers.get("forwarded").is_none());
    assert!(seen.headers.get("x-forwarded-for").is_none());
    proxy.shutdown().await;
}

#[tokio::test]
async fn http11_request_without_host_is_400() {
    let origin = named("o").await;
    let mut config = base_config();
    config.routes = vec![route("*", "/", origin.addr)];
    let proxy = start(config).await;
    let reply = raw(
        proxy.addr(),
        b"GET /no-host HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(origin.count("/no-host"), 0);
    // HTTP/1.0 has no Host requirement: the catch-all route serves it.
    let reply = raw(proxy.addr(), b"GET /no-host-10 HTTP/1.0\r\n\r\n").await;
    assert!(
        reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
        "{reply}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let origin = named("over h2c").await;
    let mut config = base_config();
    config.routes = vec![route("*", "/", origin.addr)];
    let proxy = start(config).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://h2.test/rev-h2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["via"], "1.1 viaduct");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"over h2c");
    let seen = origin.last();
    assert_eq!(seen.headers["host"], "h2.test");
    assert_eq!(seen.headers["via"], "2 viaduct");
    proxy.shutdown().await;
}
