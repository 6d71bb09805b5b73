//! The forward proxy as a browser uses it: CONNECT tunnels (a real TLS
//! exchange through one), proxy authentication, the destination guard, the PAC
//! file, TRACE/OPTIONS with Max-Forwards, WebSocket, extension methods.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;

/// A TLS origin on 127.0.0.1:0 with a certificate made for this test; returns
/// its address and a client config that trusts it.
async fn tls_origin() -> (SocketAddr, Arc<rustls::ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_der = certified.cert.der().clone();
    let key_der =
        rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut request = Vec::new();
                while !request.ends_with(b"\r\n\r\n") {
                    let n = tls.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let body = "secret over tls";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (addr, Arc::new(client))
}

/// Sends `CONNECT target` and returns the stream and the response head.
async fn connect(proxy: SocketAddr, target: &str, extra: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_response(&mut stream).await;
    (stream, head)
}

fn config_with_connect_port(port: u16) -> viaduct::Config {
    let mut config = base_config();
    config.forward.connect_ports = vec![443, port];
    config
}

#[tokio::test]
async fn an_https_exchange_works_through_a_connect_tunnel() {
    let (origin, tls_client) = tls_origin().await;
    let proxy = start(config_with_connect_port(origin.port())).await;
    let (stream, head) = connect(proxy.addr(), &format!("127.0.0.1:{}", origin.port()), "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let connector = tokio_rustls::TlsConnector::from(tls_client);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, stream)
        .await
        .expect("TLS through the tunnel");
    tls.write_all(b"GET /secret HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("secret over tls"), "{reply}");
    // The tunnel is visible while open and counted in both directions.
    let admin = proxy.admin_addr();
    let stats: serde_json::Value = serde_json::from_slice(
        &fetch(admin, get(&format!("http://{admin}/stats")))
            .await
            .body,
    )
    .unwrap();
    assert!(
        stats["tunnels"]["bytes_to_origin"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(
        stats["tunnels"]["bytes_to_client"].as_u64().unwrap() > 0,
        "{stats}"
    );
    // And on /metrics, as the docs name them.
    let metrics = fetch(admin, get(&format!("http://{admin}/metrics")))
        .await
        .text();
    for line in [
        "viaduct_tunnels_open ",
        "viaduct_tunnel_bytes_total{direction=\"to-origin\"} ",
        "viaduct_tunnel_bytes_total{direction=\"to-client\"} ",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn connect_to_a_port_not_allowed_is_403_and_to_a_closed_port_502() {
    let (_closed, closed) = refusing_port();
    let closed_port = closed.port();
    let proxy = start(config_with_connect_port(closed_port)).await;
    let (_, head) = connect(proxy.addr(), "127.0.0.1:25", "").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("port 25 is not allowed"), "{head}");
    let (_, head) = connect(proxy.addr(), &format!("127.0.0.1:{closed_port}"), "").await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(head.contains("refused"), "{head}");
    proxy.shutdown().await;
}

fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

fn config_with_auth() -> viaduct::Config {
    let mut config = base_config();
    let hash = bcrypt::hash("open sesame", 4).unwrap();
    config.forward.auth = Some(viaduct::config::AuthConfig {
        realm: "test office".into(),
        users: [("alice".to_string(), hash)].into_iter().collect(),
    });
    config
}

#[tokio::test]
async fn proxy_authentication() {
    let origin = Origin::fixed("behind auth").await;
    let proxy = start(config_with_auth()).await;
    let url = origin.url("/auth/page");

    let got = fetch(proxy.addr(), get(&url)).await;
    assert_eq!(got.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(
        got.header("proxy-authenticate"),
        Some("Basic realm=\"test office\", charset=\"UTF-8\"")
    );

    let mut req = get(&url);
    req.headers_mut()
        .insert("proxy-authorization", basic("alice:wrong").parse().unwrap());
    assert_eq!(
        fetch(proxy.addr(), req).await.status,
        StatusCode::PROXY_AUTHENTICATION_REQUIRED
    );
    assert_eq!(origin.count("/auth/"), 0);

    let mut req = get(&url);
    req.headers_mut().insert(
        "proxy-authorization",
        basic("alice:open sesame").parse().unwrap(),
    );
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "behind auth");
    assert!(
        origin.last().headers.get("proxy-authorization").is_none(),
        "credentials leaked to the origin"
    );

    let (_, head) = connect(proxy.addr(), "127.0.0.1:443", "").await;
    assert!(head.starts_with("HTTP/1.1 407"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("proxy-authenticate: basic"),
        "{head}"
    );

    // Reverse traffic is not subject to proxy authentication.
    proxy.shutdown().await;
}

#[tokio::test]
async fn curl_with_proxy_user() {
    let origin = Origin::fixed("curl with auth").await;
    let proxy = start(config_with_auth()).await;
    let url = origin.url("/auth/curl");
    let proxy_url = format!("http://{}", proxy.addr());
    let run = |user: &'static str| {
        let (url, proxy_url) = (url.clone(), proxy_url.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-x",
                    &proxy_url,
                    "--proxy-user",
                    user,
                    &url,
                ])
                .output()
                .expect("curl runs")
        })
    };
    let ok = run("alice:open sesame").await.unwrap();
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "200");
    let bad = run("alice:nope").await.unwrap();
    assert_eq!(String::from_utf8_lossy(&bad.stdout), "407");
    assert_eq!(origin.count("/auth/curl"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_admin_listener_and_metadata_addresses_are_not_reachable_through_the_proxy() {
    let proxy = start_default().await;
    let admin = proxy.admin_addr();
    let got = fetch(proxy.addr(), get(&format!("http://{admin}/stats"))).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert!(got.text().contains("not allowed"), "{}", got.text());
    let got = fetch(
        proxy.addr(),
        get("http://169.254.169.254/latest/meta-data/"),
    )
    .await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    let mut config = base_config();
    config
        .forward
        .deny_destinations
        .push("*.internal".parse().unwrap());
    config.forward.connect_ports = vec![443, admin.port()];
    proxy.shutdown().await;
    let proxy = start(config).await;
    let got = fetch(proxy.addr(), get("http://db.internal/")).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    let (_, head) = connect(proxy.addr(), "169.254.169.254:443", "").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_pac_file_names_the_proxy() {
    let proxy = start_default().await;
    for path in ["/proxy.pac", "/wpad.dat"] {
        let mut req = get(path);
        req.headers_mut()
            .insert("host", proxy.addr().to_string().parse().unwrap());
        let got = fetch(proxy.addr(), req).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(
            got.header("content-type"),
            Some("application/x-ns-proxy-autoconfig")
        );
        let body = got.text();
        assert!(
            body.contains("function FindProxyForURL(url, host)"),
            "{body}"
        );
        assert!(
            body.contains(&format!("PROXY {}; DIRECT", proxy.addr())),
            "{body}"
        );
        assert!(body.contains("isPlainHostName(host)"), "{body}");
    }
    // Asked for through the proxy itself (absolute form), too.
    let got = fetch(
        proxy.addr(),
        get(&format!("http://{}/proxy.pac", proxy.addr())),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test]
async fn trace_and_options_count_down_max_forwards() {
    let origin = Origin::start(|seen| {
        let mf = seen
            .headers
            .get("max-forwards")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        Response::new(TestBody::full(Bytes::from(format!(
            "origin saw max-forwards={mf}"
        ))))
    })
    .await;
    let proxy = start_default().await;
    let url = origin.url("/trace");
    let trace = |mf: &str| {
        Request::builder()
            .method("TRACE")
            .uri(&url)
            .header("max-forwards", mf)
            .header("cookie", "session=secret")
            .header("x-visible", "yes")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let got = fetch(proxy.addr(), trace("0")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-type"), Some("message/http"));
    let echo = got.text();
    assert!(
        echo.starts_with(&format!("TRACE {url} HTTP/1.1\r\n")),
        "{echo}"
    );
    assert!(echo.contains("x-visible: yes"), "{echo}");
    assert!(!echo.contains("secret"), "cookie echoed: {echo}");
    assert_eq!(origin.count("/trace"), 0);

    let got = fetch(proxy.addr(), trace("1")).await;
    assert_eq!(got.text(), "origin saw max-forwards=0");

    let options = Request::builder()
        .method("OPTIONS")
        .uri(&url)
        .header("max-forwards", "0")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = fetch(proxy.addr(), options).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.header("allow").unwrap().contains("CONNECT"));
    proxy.shutdown().await;

    let mut config = base_config();
    config.server.trace = false;
    let proxy = start(config).await;
    let got = fetch(proxy.addr(), trace("0")).await;
    assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED);
    proxy.shutdown().await;
}

/// A WebSocket echo server on 127.0.0.1:0.
async fn ws_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    addr
}

async fn ws_roundtrip(mut ws: tokio_tungstenite::WebSocketStream<TcpStream>) {
    for text in ["hello", "through the proxy"] {
        ws.send(Message::text(text)).await.unwrap();
        let back = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
}

#[tokio::test]
async fn websocket_echo_through_a_reverse_route_and_the_forward_proxy() {
    let echo = ws_echo().await;
    let mut config = base_config();
    config.routes = vec![route("ws.test", "/", echo)];
    let proxy = start(config).await;

    // Reverse: an ordinary WebSocket client pointed at the proxy.
    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async("ws://ws.test/chat", stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws_roundtrip(ws).await;

    // Forward: the handshake in absolute form, as a browser sends it to a proxy.
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let handshake = format!(
        "GET http://{echo}/chat HTTP/1.1\r\nHost: {echo}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        stream,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    ws_roundtrip(ws).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn extension_methods_are_forwarded_with_their_bodies() {
    let origin = Origin::start(|seen| {
        Response::new(TestBody::full(Bytes::from(format!(
            "{} {}",
            seen.method,
            seen.body.len()
        ))))
    })
    .await;
    let proxy = start_default().await;
    let req = Request::builder()
        .method("FROBNICATE")
        .uri(origin.url("/ext"))
        .body(Full::new(Bytes::from_static(b"twelve bytes")))
        .unwrap();
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.text(), "FROBNICATE 12");
    assert_eq!(origin.last().body, Bytes::from_static(b"twelve bytes"));
    proxy.shutdown().await;
}
