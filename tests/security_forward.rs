//! The forward proxy's destination guard, attacked the way a forward-proxy
//! client would: the admin listener and loopback services named through every
//! spelling the resolver or the kernel treats as "this host" (`0`, `0.0.0.0.`,
//! `[::]`, IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms), for
//! absolute-form requests of any method and for CONNECT.
//!
//! `base_config()` sets `[forward] allow_loopback = true` because the test
//! origins listen on 127.0.0.1. The tests here set it explicitly, to `false`
//! wherever the shipped default is what they prove, and to `true` where they
//! prove that even then the proxy's own listeners stay out of reach.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Spellings of the unspecified address (which Linux connects to as this host).
const UNSPECIFIED: &[&str] = &[
    "0.0.0.0",
    "0",
    "0.0.0.0.",
    "0x0",
    "[::ffff:0.0.0.0]",
    "[::ffff:0:0]",
    "[::]",
    "[::0.0.0.0]",
    "[64:ff9b::]",
    "[2002::]",
];

/// Spellings of 127.0.0.1 (and ::1).
const LOOPBACK: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "127.1",
    "2130706433",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
    "[::1]",
];

fn every_spelling() -> impl Iterator<Item = &'static str> {
    UNSPECIFIED.iter().chain(LOOPBACK).copied()
}

/// The base configuration with `allow_loopback` set explicitly, and a short
/// connect timeout so that a guard that lets an address through fails fast
/// instead of hanging on an unroutable one.
fn forward_config(allow_loopback: bool) -> viaduct::Config {
    let mut config = base_config();
    config.forward.allow_loopback = allow_loopback;
    config.upstream.connect_timeout = viaduct::config::Dur(Duration::from_secs(1));
    config
}

fn post(uri: &str) -> Request<Full<Bytes>> {
    Request::post(uri).body(Full::new(Bytes::new())).unwrap()
}

/// A refusal: 403 with a one-line reason from the proxy, not an admin answer.
fn assert_refused(got: &Got, what: &str) {
    assert_eq!(got.status, StatusCode::FORBIDDEN, "{what}: {}", got.text());
    let text = got.text();
    assert!(text.contains("not allowed"), "{what}: {text}");
    assert_eq!(text.trim_end().lines().count(), 1, "{what}: {text}");
    assert!(!text.contains("viaduct_"), "{what} leaked metrics: {text}");
}

/// Sends `CONNECT target` and returns the response head (and body).
async fn connect(proxy: SocketAddr, target: &str) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut stream).await
}

fn assert_connect_refused(head: &str, what: &str) {
    assert!(head.starts_with("HTTP/1.1 403"), "{what}: {head}");
    let body = head.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.contains("not allowed"), "{what}: {head}");
    assert_eq!(body.trim_end().lines().count(), 1, "{what}: {head}");
}

/// An origin whose answers stay fresh, so a hit proves nothing was purged.
async fn cacheable_origin() -> Origin {
    Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=600")
            .body(TestBody::full(Bytes::from_static(b"stored")))
            .unwrap()
    })
    .await
}

/// A reverse request for `path` on `site.test`, through the proxy port.
async fn reverse_get(proxy: SocketAddr, path: &str) -> Got {
    let mut req = get(path);
    req.headers_mut()
        .insert("host", "site.test".parse().unwrap());
    fetch(proxy, req).await
}

#[tokio::test]
async fn unspecified_address_forms_never_reach_the_admin_listener() {
    // With loopback allowed, too: the admin listener is refused regardless.
    for allow_loopback in [false, true] {
        let origin = cacheable_origin().await;
        let mut config = forward_config(allow_loopback);
        config.routes.push(route("site.test", "/", origin.addr));
        let proxy = start(config).await;
        let admin_port = proxy.admin_addr().port();
        let path = format!("/sec-admin-{allow_loopback}/page");
        assert_eq!(
            reverse_get(proxy.addr(), &path).await.status,
            StatusCode::OK
        );
        let hit = reverse_get(proxy.addr(), &path).await;
        assert!(hit.header("cache-status").unwrap().contains("hit"));

        let mut client = Client::connect(proxy.addr()).await;
        for host in every_spelling() {
            let got = client
                .get(&format!("http://{host}:{admin_port}/metrics"))
                .await;
            assert_refused(&got, &format!("GET {host}:{admin_port}/metrics"));
            let got = client
                .send(post(&format!(
                    "http://{host}:{admin_port}/purge?prefix=http://site.test/"
                )))
                .await;
            assert_refused(&got, &format!("POST {host}:{admin_port}/purge"));
        }

        // Nothing was purged: the counter did not move and the entry is still a hit.
        assert_eq!(proxy.cache().stats.purges.get(), 0);
        let still = reverse_get(proxy.addr(), &path).await;
        assert!(
            still.header("cache-status").unwrap().contains("hit"),
            "{:?}",
            still.header("cache-status")
        );
        assert_eq!(origin.count(&path), 1);
        proxy.shutdown().await;
    }
}

/// A counting origin listens on 127.0.0.1:P and the admin on 127.0.0.2:P: a
/// connection the guard lets through to "this host" on the admin port lands
/// on the stand-in, so its connection count is exactly what would have
/// reached the admin listener.
async fn proxy_with_a_stand_in_on_the_admin_port(
    allow_loopback: bool,
) -> (viaduct::Running, Origin) {
    let stand_in = Origin::fixed("the admin listener was reached").await;
    let mut config = forward_config(allow_loopback);
    config.admin.listen = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), stand_in.addr.port()));
    config.forward.connect_ports = vec![443, stand_in.addr.port()];
    let proxy = start(config).await;
    assert_eq!(proxy.admin_addr().port(), stand_in.addr.port());
    (proxy, stand_in)
}

#[tokio::test]
async fn no_request_of_any_method_reaches_the_admin_port_under_any_spelling() {
    for allow_loopback in [false, true] {
        let (proxy, stand_in) = proxy_with_a_stand_in_on_the_admin_port(allow_loopback).await;
        let port = stand_in.addr.port();
        let mut client = Client::connect(proxy.addr()).await;
        for host in every_spelling() {
            let got = client.get(&format!("http://{host}:{port}/metrics")).await;
            assert_refused(&got, &format!("GET {host}:{port}"));
            let got = client
                .send(post(&format!(
                    "http://{host}:{port}/purge?prefix=http://x/"
                )))
                .await;
            assert_refused(&got, &format!("POST {host}:{port}"));
            let delete = Request::delete(format!("http://{host}:{port}/cache"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            assert_refused(&client.send(delete).await, &format!("DELETE {host}:{port}"));
        }
        assert_eq!(
            stand_in.connections(),
            0,
            "allow_loopback = {allow_loopback}"
        );
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn connect_to_the_admin_port_is_refused_under_every_spelling() {
    for allow_loopback in [false, true] {
        let (proxy, stand_in) = proxy_with_a_stand_in_on_the_admin_port(allow_loopback).await;
        let port = stand_in.addr.port();
        for host in every_spelling() {
            let head = connect(proxy.addr(), &format!("{host}:{port}")).await;
            assert_connect_refused(&head, &format!("CONNECT {host}:{port}"));
        }
        // The admin's real address, too.
        let head = connect(proxy.addr(), &format!("127.0.0.2:{port}")).await;
        assert_connect_refused(&head, "CONNECT 127.0.0.2 (admin)");
        assert_eq!(
            stand_in.connections(),
            0,
            "allow_loopback = {allow_loopback}"
        );
        proxy.shutdown().await;
    }
}

/// This host's address on the default-route interface, if it has one (a UDP
/// "connect" only picks a source address; no packet is sent).
fn non_loopback_local_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn an_admin_listener_on_all_addresses_is_refused_on_every_local_address() {
    // The one test that binds a wildcard: the admin listener on 0.0.0.0 is
    // what makes every local address (not only loopback) the admin's.
    let mut config = forward_config(true);
    config.admin.listen = "0.0.0.0:0".parse().unwrap();
    let proxy = start(config).await;
    let port = proxy.admin_addr().port();
    // Something to purge: a forwarded response (loopback is allowed here, and
    // the origin is on another port than the admin's).
    let origin = cacheable_origin().await;
    let stored = origin.url("/sec-wild/stored");
    let mut client = Client::connect(proxy.addr()).await;
    assert_eq!(client.get(&stored).await.status, StatusCode::OK);
    assert!(client
        .get(&stored)
        .await
        .header("cache-status")
        .unwrap()
        .contains("hit"));

    let mut hosts: Vec<String> = every_spelling().map(str::to_string).collect();
    if let Some(ip) = non_loopback_local_ip() {
        hosts.push(ip.to_string());
        hosts.push(format!("[::ffff:{ip}]"));
    }
    for host in &hosts {
        let got = client.get(&format!("http://{host}:{port}/metrics")).await;
        assert_refused(&got, &format!("GET {host}:{port}"));
        let purge = format!("http://{host}:{port}/purge?prefix=http://{}/", origin.addr);
        assert_refused(&client.send(post(&purge)).await, &format!("POST {purge}"));
    }
    assert_eq!(proxy.cache().stats.purges.get(), 0);
    let still = client.get(&stored).await;
    assert!(still.header("cache-status").unwrap().contains("hit"));
    assert_eq!(origin.count("/sec-wild/stored"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn loopback_destinations_are_refused_by_default() {
    // The default, in the code and in the shipped proxy.toml.
    assert!(!viaduct::config::ForwardConfig::default().allow_loopback);
    assert!(!viaduct::Config::builtin().forward.allow_loopback);
    let origin = Origin::fixed("a service that trusts local callers").await;
    let port = origin.addr.port();
    let mut config = forward_config(false);
    config.forward.connect_ports = vec![443, port];
    let proxy = start(config).await;
    let mut client = Client::connect(proxy.addr()).await;
    for host in LOOPBACK {
        let got = client.get(&format!("http://{host}:{port}/sec-lo")).await;
        assert_refused(&got, &format!("GET {host}:{port}"));
        let got = client
            .send(post(&format!("http://{host}:{port}/sec-lo")))
            .await;
        assert_refused(&got, &format!("POST {host}:{port}"));
        let head = connect(proxy.addr(), &format!("{host}:{port}")).await;
        assert_connect_refused(&head, &format!("CONNECT {host}:{port}"));
    }
    assert_eq!(origin.count("/sec-lo"), 0);
    assert_eq!(origin.connections(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn loopback_destinations_are_allowed_with_allow_loopback() {
    let origin = Origin::fixed("local service").await;
    let port = origin.addr.port();
    let mut config = forward_config(true);
    config.forward.connect_ports = vec![443, port];
    let proxy = start(config).await;
    let mut client = Client::connect(proxy.addr()).await;
    for host in ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"] {
        let got = client.get(&format!("http://{host}:{port}/sec-lo-ok")).await;
        assert_eq!(got.status, StatusCode::OK, "{host}: {}", got.text());
        assert_eq!(got.text(), "local service");
    }
    assert_eq!(origin.count("/sec-lo-ok"), 3);
    let head = connect(proxy.addr(), &format!("127.0.0.1:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_proxy_never_forwards_to_itself_under_any_spelling() {
    let origin = Origin::fixed("routed").await;
    let mut config = forward_config(true);
    config.routes.push(route("*", "/self/", origin.addr));
    let proxy = start(config).await;
    let port = proxy.addr().port();
    let mut client = Client::connect(proxy.addr()).await;
    // Not `[::1]`: the proxy listens on 127.0.0.1 only, so ::1 is another socket.
    for (i, host) in every_spelling().filter(|h| *h != "[::1]").enumerate() {
        let path = format!("/self/{i}");
        let got = client.get(&format!("http://{host}:{port}{path}")).await;
        // Recognised as the proxy itself and routed like reverse traffic, once;
        // never sent back into the proxy port (which would answer 508 Loop
        // Detected after a second pass).
        assert_eq!(got.status, StatusCode::OK, "{host}: {}", got.text());
        assert_eq!(origin.count(&path), 1, "{host}");
        let via = origin.last().headers["via"].to_str().unwrap().to_string();
        assert_eq!(via, "1.1 viaduct", "{host}");
    }
    proxy.shutdown().await;

    // A tunnel to the proxy port would make the proxy its own client. The
    // port must be in connect_ports before the proxy starts: take a free one.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut config = forward_config(true);
    config.server.listen = vec![SocketAddr::from(([127, 0, 0, 1], port))];
    config.forward.connect_ports = vec![443, port];
    let proxy = start(config).await;
    for host in every_spelling().filter(|h| *h != "[::1]") {
        let head = connect(proxy.addr(), &format!("{host}:{port}")).await;
        assert_connect_refused(&head, &format!("CONNECT {host}:{port} (the proxy port)"));
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn embedded_ipv4_forms_of_denied_networks_are_refused() {
    let proxy = start(forward_config(true)).await;
    let mut client = Client::connect(proxy.addr()).await;
    for host in [
        "169.254.169.254",
        "[::ffff:169.254.169.254]",
        "[::169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]",
        "[2002:a9fe:a9fe::1]",
    ] {
        let got = client
            .get(&format!("http://{host}/latest/meta-data/"))
            .await;
        assert_refused(&got, host);
        let head = connect(proxy.addr(), &format!("{host}:443")).await;
        assert_connect_refused(&head, &format!("CONNECT {host}:443"));
    }
    proxy.shutdown().await;
}
