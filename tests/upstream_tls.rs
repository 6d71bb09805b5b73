//! HTTPS to origins: verified against the public roots plus a configured CA,
//! certificate failures as 502 with the reason, `tls_verify = false`, h2 by
//! ALPN when the origin offers it and HTTP/1.1 when not, pooled connections
//! reused across requests, and `GET https://...` through the forward proxy.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use support::pki::Pki;
use support::*;

/// What an HTTPS origin saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: Mutex<Vec<(Version, String, Option<String>)>>,
}

/// An HTTPS origin (HTTP/1.1 or h2, as ALPN agreed) answering `cache_control`.
async fn https_origin(
    config: rustls::ServerConfig,
    cache_control: &'static str,
) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let state = state.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(move |req: Request<Incoming>| {
                    let host = req
                        .headers()
                        .get("host")
                        .map(|h| h.to_str().unwrap().to_string());
                    let target = req.uri().to_string();
                    let version = req.version();
                    state.requests.lock().unwrap().push((version, target, host));
                    let mut resp =
                        Response::new(Full::new(Bytes::from(format!("secure {version:?}"))));
                    resp.headers_mut()
                        .insert("cache-control", cache_control.parse().unwrap());
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn https_route(origin: SocketAddr, extra: &str) -> viaduct::config::RouteConfig {
    route_toml(&format!(
        "host = \"*\"\nupstream = \"https://{origin}\"\n{extra}"
    ))
}

fn site(path: &str) -> Request<Full<Bytes>> {
    let mut req = get(path);
    req.headers_mut()
        .insert("host", "site.test".parse().unwrap());
    req
}

#[tokio::test]
async fn an_https_origin_verified_by_its_ca_reuses_one_http1_connection() {
    let pki = Pki::new("h1");
    let (origin, seen) = https_origin(pki.server(&["127.0.0.1"], &[b"http/1.1"]), "no-store").await;
    let mut config = base_config();
    let ca = pki.ca_file();
    config.routes = vec![https_route(origin, &format!("tls_ca = {:?}\n", ca))];
    let proxy = start(config).await;
    for i in 0..20 {
        let got = fetch(proxy.addr(), site(&format!("/h1/{i}"))).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        assert_eq!(got.text(), "secure HTTP/1.1");
    }
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );
    let requests = std::mem::take(&mut *seen.requests.lock().unwrap());
    assert_eq!(requests.len(), 20);
    assert_eq!(requests[0].1, "/h1/0");
    assert_eq!(requests[0].2.as_deref(), Some("site.test"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_origin_that_offers_h2_gets_h2_on_one_connection() {
    let pki = Pki::new("h2");
    let (origin, seen) = https_origin(
        pki.server(&["127.0.0.1"], &[b"h2", b"http/1.1"]),
        "max-age=60",
    )
    .await;
    let mut config = base_config();
    config.routes = vec![https_route(
        origin,
        &format!("tls_ca = {:?}\n", pki.ca_file()),
    )];
    let proxy = start(config).await;
    for i in 0..20 {
        let got = fetch(proxy.addr(), site(&format!("/h2/{i}"))).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        assert_eq!(got.text(), "secure HTTP/2.0");
    }
    // Cached like any other response.
    let again = fetch(proxy.addr(), site("/h2/0")).await;
    assert!(again.header("cache-status").unwrap().contains("hit"));
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "one shared h2 connection"
    );
    let requests = std::mem::take(&mut *seen.requests.lock().unwrap());
    assert_eq!(requests.len(), 20);
    // The host the client asked for travels as :authority.
    assert_eq!(requests[0].1, "https://site.test/h2/0");

    // upstream_protocol = "http1" keeps such an origin on HTTP/1.1.
    let mut config = base_config();
    config.routes = vec![https_route(
        origin,
        &format!(
            "tls_ca = {:?}\nupstream_protocol = \"http1\"\n",
            pki.ca_file()
        ),
    )];
    let h1 = start(config).await;
    assert_eq!(
        fetch(h1.addr(), site("/as-h1")).await.text(),
        "secure HTTP/1.1"
    );
    h1.shutdown().await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn certificate_failures_are_502_with_the_reason() {
    let pki = Pki::new("fail");
    let (trusted_elsewhere, _) =
        https_origin(pki.server(&["127.0.0.1"], &[b"http/1.1"]), "no-store").await;
    let (wrong_name, _) =
        https_origin(pki.server(&["other.test"], &[b"http/1.1"]), "no-store").await;
    let (h1_only, _) = https_origin(pki.server(&["127.0.0.1"], &[b"http/1.1"]), "no-store").await;
    let ca = pki.ca_file();
    let mut config = base_config();
    config.routes = vec![
        route_toml(&format!(
            "host = \"unknown-ca.test\"\nupstream = \"https://{trusted_elsewhere}\"\n"
        )),
        route_toml(&format!(
            "host = \"name.test\"\nupstream = \"https://{wrong_name}\"\ntls_ca = {ca:?}\n"
        )),
        route_toml(&format!(
            "host = \"alpn.test\"\nupstream = \"https://{h1_only}\"\ntls_ca = {ca:?}\nupstream_protocol = \"http2\"\n"
        )),
        route_toml(&format!(
            "host = \"unverified.test\"\nupstream = \"https://{trusted_elsewhere}\"\ntls_verify = false\n"
        )),
    ];
    let proxy = start(config).await;
    let ask = |host: &'static str| {
        let mut req = get("/x");
        req.headers_mut().insert("host", host.parse().unwrap());
        fetch(proxy.addr(), req)
    };
    let got = ask("unknown-ca.test").await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(
        got.text().contains(&trusted_elsewhere.to_string()),
        "{}",
        got.text()
    );
    assert!(got.text().contains("unknown CA"), "{}", got.text());
    let got = ask("name.test").await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(
        got.text().contains("not valid for 127.0.0.1"),
        "{}",
        got.text()
    );
    let got = ask("alpn.test").await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(got.text().contains("ALPN"), "{}", got.text());
    // Encrypted, not authenticated: only where it is written.
    let got = ask("unverified.test").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let scrape = scrape(proxy.admin_addr()).await;
    assert_eq!(
        value(&scrape, "viaduct_upstream_errors_total", &[("kind", "tls")]),
        3.0
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_forward_proxy_fetches_https_urls_itself_and_caches_them() {
    let pki = Pki::new("fwd");
    let (origin, seen) = https_origin(
        pki.server(&["127.0.0.1"], &[b"h2", b"http/1.1"]),
        "max-age=60",
    )
    .await;
    let mut config = base_config();
    config.upstream.tls_ca = Some(pki.ca_file());
    let proxy = start(config).await;
    let url = format!("https://{origin}/fwd");
    let got = fetch(proxy.addr(), get(&url)).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "secure HTTP/2.0");
    let again = fetch(proxy.addr(), get(&url)).await;
    assert!(again.header("cache-status").unwrap().contains("hit"));
    assert_eq!(seen.requests.lock().unwrap().len(), 1);
    // The http:// URL of the same authority is another entry (and here,
    // another protocol, so the origin refuses it).
    let plain = fetch(proxy.addr(), get(&format!("http://{origin}/fwd"))).await;
    assert_ne!(plain.status, StatusCode::OK);
    proxy.shutdown().await;
}
