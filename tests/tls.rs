//! TLS listeners: HTTPS with h2 and HTTP/1.1 by ALPN through the same
//! pipeline (routes, cache, Cache-Status), certificates by SNI, the redirect
//! to https, certificate reload, and handshakes that go wrong.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use support::pki::{Leaf, Pki};
use support::*;
use viaduct::config::{CertificateConfig, Dur};

fn certificate(leaf: &Leaf) -> CertificateConfig {
    CertificateConfig {
        cert: leaf.cert.clone(),
        key: leaf.key.clone(),
        hosts: None,
    }
}

fn tls_config(leaves: &[&Leaf]) -> viaduct::Config {
    let mut config = base_config();
    config.tls.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.tls.certificate = leaves.iter().map(|l| certificate(l)).collect();
    config
}

async fn handshake(connector: &TlsConnector, addr: SocketAddr, name: &str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// One GET over a fresh TLS connection, h2 or HTTP/1.1 as ALPN agreed.
async fn get_tls(pki: &Pki, addr: SocketAddr, alpn: &[u8], host: &str, path: &str) -> Got {
    let tls = handshake(&pki.client(&[alpn]), addr, host).await;
    let agreed = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    assert_eq!(agreed.as_deref(), Some(alpn), "ALPN");
    let resp = if alpn == b"h2" {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("https://{host}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    Got {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn cache_status(got: &Got) -> String {
    got.headers
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn cacheable_origin() -> Origin {
    Origin::start(|_| {
        let mut resp = text(StatusCode::OK, "over tls");
        resp.headers_mut()
            .insert("cache-control", "max-age=600".parse().unwrap());
        resp
    })
    .await
}

#[tokio::test]
async fn https_serves_h2_and_http1_through_the_cache() {
    let pki = Pki::new("pipeline");
    let leaf = pki.leaf("site", &["site.test"]);
    let origin = cacheable_origin().await;
    let mut config = tls_config(&[&leaf]);
    config.routes = vec![route("*", "/", origin.addr)];
    let proxy = start(config).await;
    let tls = proxy.tls_addrs()[0];

    let first = get_tls(&pki, tls, b"h2", "site.test", "/page").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.version, http::Version::HTTP_2);
    assert_eq!(&first.body[..], b"over tls");
    assert!(
        cache_status(&first).contains("fwd=uri-miss"),
        "{}",
        cache_status(&first)
    );
    let second = get_tls(&pki, tls, b"h2", "site.test", "/page").await;
    assert!(
        cache_status(&second).contains("hit"),
        "{}",
        cache_status(&second)
    );
    // HTTP/1.1 over TLS shares the https entry.
    let third = get_tls(&pki, tls, b"http/1.1", "site.test", "/page").await;
    assert_eq!(third.version, http::Version::HTTP_11);
    assert!(
        cache_status(&third).contains("hit"),
        "{}",
        cache_status(&third)
    );
    assert_eq!(origin.count("/page"), 1);
    assert_eq!(origin.last().headers["x-forwarded-proto"], "https");

    // Plain HTTP is another scheme: its own entry, and the origin is told so.
    let mut req = get("/page");
    req.headers_mut()
        .insert("host", "site.test".parse().unwrap());
    let plain = fetch(proxy.addr(), req).await;
    assert!(
        cache_status(&plain).contains("fwd=uri-miss"),
        "{}",
        cache_status(&plain)
    );
    assert_eq!(origin.count("/page"), 2);
    assert_eq!(origin.last().headers["x-forwarded-proto"], "http");
    proxy.shutdown().await;
}

/// The leaf certificate the proxy presents for `name` (an IP address sends no SNI).
async fn presented(addr: SocketAddr, name: &str) -> CertificateDer<'static> {
    // The proxy's own client with verification off: any certificate passes.
    let unverified = viaduct::tls::TlsClient::new(&[], false, viaduct::tls::Alpn::Http1).unwrap();
    let tls = handshake(unverified.connector(), addr, name).await;
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test]
async fn certificates_are_chosen_by_sni_and_the_first_is_the_default() {
    let pki = Pki::new("sni");
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["*.b.test"]);
    let c = pki.leaf("c", &["c.test"]);
    let mut config = tls_config(&[&a, &b, &c]);
    // `hosts` overrides the names in the certificate.
    config.tls.certificate[2].hosts = Some(vec!["Other.Test".into()]);
    let proxy = start(config).await;
    let tls = proxy.tls_addrs()[0];
    assert_eq!(presented(tls, "a.test").await, a.der);
    assert_eq!(presented(tls, "A.TEST").await, a.der);
    assert_eq!(presented(tls, "www.b.test").await, b.der);
    assert_eq!(presented(tls, "other.test").await, c.der);
    // A wildcard covers one label only; unknown names and no SNI get the first.
    assert_eq!(presented(tls, "x.www.b.test").await, a.der);
    assert_eq!(presented(tls, "c.test").await, a.der);
    assert_eq!(presented(tls, "127.0.0.1").await, a.der);
    // And a verifying client is happy with the one it got.
    let tls_stream = handshake(&pki.client(&[b"http/1.1"]), tls, "www.b.test").await;
    drop(tls_stream);
    proxy.shutdown().await;
}

#[tokio::test]
async fn https_redirect_sends_plain_http_to_the_tls_port_with_308() {
    let pki = Pki::new("redirect");
    let leaf = pki.leaf("site", &["site.test"]);
    let origin = cacheable_origin().await;
    let mut config = tls_config(&[&leaf]);
    let mut secure = route("site.test", "/", origin.addr);
    secure.https_redirect = true;
    config.routes = vec![secure, route("*", "/", origin.addr)];
    let proxy = start(config).await;
    let tls = proxy.tls_addrs()[0];

    let mut req = Request::post("/cart/add?item=7")
        .body(http_body_util::Full::new(Bytes::from_static(b"x")))
        .unwrap();
    req.headers_mut()
        .insert("host", "SITE.test:8080".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        got.headers["location"],
        format!("https://site.test:{}/cart/add?item=7", tls.port())
    );
    assert_eq!(origin.count("/"), 0, "nothing went to the origin");
    // Other hosts are not redirected; over TLS the route serves.
    let mut other = get("/x");
    other
        .headers_mut()
        .insert("host", "other.test".parse().unwrap());
    assert_eq!(fetch(proxy.addr(), other).await.status, StatusCode::OK);
    let secure = get_tls(&pki, tls, b"http/1.1", "site.test", "/cart").await;
    assert_eq!(secure.status, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test]
async fn reload_serves_new_certificates_and_keeps_the_old_on_error() {
    let pki = Pki::new("reload");
    let old = pki.leaf("site", &["site.test"]);
    let proxy = start(tls_config(&[&old])).await;
    let tls = proxy.tls_addrs()[0];
    assert_eq!(presented(tls, "site.test").await, old.der);

    // Renewed in place, as certbot does.
    let new = pki.leaf("site", &["site.test"]);
    assert_ne!(new.der, old.der);
    assert_eq!(
        presented(tls, "site.test").await,
        old.der,
        "not before a reload"
    );
    assert_eq!(proxy.reload_tls(), Ok(1));
    assert_eq!(presented(tls, "site.test").await, new.der);

    // A broken key: the reload fails naming the file; the last good one stays.
    std::fs::write(&new.key, "not a key").unwrap();
    let err = proxy.reload_tls().unwrap_err();
    assert!(err.contains("site.key"), "{err}");
    assert_eq!(presented(tls, "site.test").await, new.der);
    proxy.shutdown().await;
}

#[tokio::test]
async fn bad_handshakes_end_their_own_connection_only() {
    let pki = Pki::new("bad");
    let leaf = pki.leaf("site", &["site.test"]);
    let origin = cacheable_origin().await;
    let mut config = tls_config(&[&leaf]);
    config.tls.handshake_timeout = Dur(Duration::from_millis(300));
    config.routes = vec![route("*", "/", origin.addr)];
    let proxy = start(config).await;
    let tls = proxy.tls_addrs()[0];

    // A client that stalls before (or in the middle of) its handshake.
    let mut stalled = TcpStream::connect(tls).await.unwrap();
    let mut half = TcpStream::connect(tls).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    // Plain HTTP to the TLS port.
    let mut plain = TcpStream::connect(tls).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .unwrap();
    // 1,000 handshakes opened and dropped.
    for _ in 0..1000 {
        let mut s = TcpStream::connect(tls).await.unwrap();
        let _ = s.write_all(&[0x16, 0x03, 0x01]).await;
    }
    for stream in [&mut stalled, &mut half, &mut plain] {
        assert!(
            closed_by_peer(stream).await,
            "a failed handshake closes its connection"
        );
    }
    // Unaffected: a good client, and the plain port.
    let good = get_tls(&pki, tls, b"h2", "site.test", "/after").await;
    assert_eq!(good.status, StatusCode::OK);
    assert_eq!(
        fetch(proxy.addr(), get(&origin.url("/plain"))).await.status,
        StatusCode::OK
    );
    let scrape = scrape(proxy.admin_addr()).await;
    let errors = |reason| {
        value(
            &scrape,
            "viaduct_tls_handshake_errors_total",
            &[("reason", reason)],
        )
    };
    assert!(errors("timeout") >= 2.0, "{}", errors("timeout"));
    assert!(errors("protocol") >= 1.0, "{}", errors("protocol"));
    assert!(errors("closed") >= 500.0, "{}", errors("closed"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn check_names_the_file_for_each_certificate_problem() {
    let pki = Pki::new("check");
    let good = pki.leaf("good", &["good.test"]);
    let other = pki.leaf("other", &["other.test"]);
    let expired = pki.leaf_with("expired", &["old.test"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let mut config = tls_config(&[&good]);
    let (errors, warnings) = viaduct::tls::check(&config.tls);
    assert!(
        errors.is_empty() && warnings.is_empty(),
        "{errors:?} {warnings:?}"
    );

    config.tls.certificate = vec![
        CertificateConfig {
            cert: pki.dir.join("missing.pem"),
            key: good.key.clone(),
            hosts: None,
        },
        CertificateConfig {
            cert: good.cert.clone(),
            key: other.key.clone(),
            hosts: None,
        },
        certificate(&expired),
    ];
    let (errors, warnings) = viaduct::tls::check(&config.tls);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("missing.pem"), "{}", errors[0]);
    assert!(
        errors[1].contains("other.key") && errors[1].contains("does not match"),
        "{}",
        errors[1]
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("expired.pem") && warnings[0].contains("expired"));

    // And the proxy refuses to start on what --check refuses.
    config.tls.certificate.remove(2);
    let refused = viaduct::Proxy::start(config).await.err().unwrap();
    assert!(refused.to_string().contains("missing.pem"), "{refused}");
}

#[tokio::test]
async fn curl_speaks_http2_to_the_tls_port() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl not installed: skipped");
        return;
    }
    let pki = Pki::new("curl");
    let leaf = pki.leaf("site", &["site.test"]);
    let ca = pki.ca_file();
    let origin = cacheable_origin().await;
    let mut config = tls_config(&[&leaf]);
    config.routes = vec![route("*", "/", origin.addr)];
    let proxy = start(config).await;
    let port = proxy.tls_addrs()[0].port();
    let run = || {
        let ca = ca.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-s", "-i", "--http2", "--cacert"])
                .arg(&ca)
                .arg("--resolve")
                .arg(format!("site.test:{port}:127.0.0.1"))
                .arg(format!("https://site.test:{port}/curl"))
                .output()
                .unwrap()
        })
    };
    let first = run().await.unwrap();
    let text = String::from_utf8_lossy(&first.stdout).to_lowercase();
    assert!(text.starts_with("http/2 200"), "{text}");
    let again = String::from_utf8_lossy(&run().await.unwrap().stdout).to_lowercase();
    assert!(again.contains("cache-status: viaduct; hit"), "{again}");
    assert!(again.ends_with("over tls"), "{again}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn sighup_makes_the_binary_serve_the_renewed_certificate() {
    use std::process::Command;
    let pki = Pki::new("sighup");
    let old = pki.leaf("site", &["site.test"]);
    let config = pki.dir.join("proxy.toml");
    // Relative paths: next to the configuration file.
    std::fs::write(
        &config,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\n[[tls.certificate]]\ncert = \"site.pem\"\nkey = \"site.key\"\n",
    )
    .unwrap();
    let (mut child, tls) = run_binary(&config, "listening (TLS)").await;
    assert_eq!(presented(tls, "site.test").await, old.der);

    let new = pki.leaf("site", &["site.test"]);
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    // The signal is handled asynchronously: look until the new one shows.
    let mut seen = old.der.clone();
    for _ in 0..100 {
        seen = presented(tls, "site.test").await;
        if seen == new.der {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, new.der, "the renewed certificate after SIGHUP");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn the_tls_port_is_also_a_forward_proxy_with_connect() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new("https-proxy");
    let leaf = pki.leaf("proxy", &["proxy.test"]);
    let origin = Origin::fixed("through an https proxy").await;
    let mut config = tls_config(&[&leaf]);
    config.forward.connect_ports = vec![origin.addr.port()];
    let proxy = start(config).await;
    // A client that talks TLS to its proxy (an "HTTPS proxy"), then tunnels.
    let mut tls = handshake(
        &pki.client(&[b"http/1.1"]),
        proxy.tls_addrs()[0],
        "proxy.test",
    )
    .await;
    let target = origin.addr.to_string();
    tls.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tls.write_all(b"GET /tunnelled HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.ends_with("through an https proxy"), "{answer}");
    assert_eq!(origin.count("/tunnelled"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_reload_adds_a_tls_listener_to_a_proxy_started_without_one() {
    let pki = Pki::new("reload-listen");
    let leaf = pki.leaf("site", &["site.test"]);
    let origin = cacheable_origin().await;
    let file = support::config_file::ConfigFile::new("tls-listen");
    let route = format!(
        "[[route]]\nhost = \"site.test\"\nupstream = \"http://{}\"\nhttps_redirect = true\n",
        origin.addr
    );
    file.write(&route);
    let proxy = viaduct::Proxy::start_from(&file.0).await.unwrap();
    let mut plain = get("/page");
    plain
        .headers_mut()
        .insert("host", "site.test".parse().unwrap());
    assert!(proxy.listening(true).is_empty());

    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    file.write(&format!(
        "[tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n[[tls.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n{route}",
        leaf.cert.display(),
        leaf.key.display()
    ));
    let report = proxy.reload().unwrap();
    assert!(!report.contains("restart"), "{report}");
    let tls: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    assert_eq!(proxy.listening(true), vec![tls]);
    let got = get_tls(&pki, tls, b"h2", "site.test", "/page").await;
    assert_eq!(got.status, StatusCode::OK);
    // The redirect points at the new port.
    let got = fetch(proxy.addr(), plain).await;
    assert_eq!(got.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        got.headers["location"],
        format!("https://site.test:{tls_port}/page")
    );
    proxy.shutdown().await;
}
