//! Hop-by-hop fields, Via, and loop detection (RFC 9110 §7.6).

mod support;

use http::{Response, StatusCode};
use support::*;

#[tokio::test]
async fn connection_listed_fields_do_not_cross_in_either_direction() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("connection", "x-bar")
            .header("x-bar", "origin-hop-secret")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic realm=\"origin\"")
            .header("x-end-to-end", "kept")
            .body(TestBody::full("ok".into()))
            .unwrap()
    })
    .await;
    let proxy = start_default().await;
    let mut req = get(&origin.url("/hop"));
    let h = req.headers_mut();
    h.insert("connection", "x-foo, keep-alive".parse().unwrap());
    h.insert("x-foo", "client-hop-secret".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("proxy-connection", "keep-alive".parse().unwrap());
    h.insert("proxy-authorization", "Basic dTpw".parse().unwrap());
    h.insert("te", "trailers".parse().unwrap());
    h.insert("x-end-to-end", "kept".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;

    let seen = origin.last();
    for name in [
        "x-foo",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
    ] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the origin"
        );
    }
    assert!(seen
        .headers
        .get_all("connection")
        .iter()
        .all(|v| !v.to_str().unwrap().contains("x-foo")));
    assert_eq!(seen.headers["x-end-to-end"], "kept");

    assert_eq!(got.status, StatusCode::OK);
    for name in ["x-bar", "keep-alive", "proxy-authenticate"] {
        assert!(got.headers.get(name).is_none(), "{name} reached the client");
    }
    assert_eq!(got.header("x-end-to-end"), Some("kept"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn via_is_added_on_both_sides_and_appended() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("via", "1.1 origin-cdn")
            .body(TestBody::full("ok".into()))
            .unwrap()
    })
    .await;
    let proxy = start_default().await;
    let mut req = get(&origin.url("/via"));
    req.headers_mut()
        .insert("via", "1.0 upstream-proxy".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    let seen_via: Vec<_> = origin
        .last()
        .headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(seen_via.join(", "), "1.0 upstream-proxy, 1.1 viaduct");
    let got_via: Vec<_> = got
        .headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(got_via.join(", "), "1.1 origin-cdn, 1.1 viaduct");
    proxy.shutdown().await;
}

#[tokio::test]
async fn via_says_1_0_for_an_http10_client() {
    let origin = Origin::fixed("ok").await;
    let proxy = start_default().await;
    let request = format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/via-10"));
    let reply = raw(proxy.addr(), request.as_bytes()).await;
    assert!(reply.contains("ok"), "{reply}");
    assert_eq!(origin.last().headers["via"], "1.0 viaduct");
    proxy.shutdown().await;
}

#[tokio::test]
async fn our_own_name_in_via_is_a_loop_508() {
    let origin = Origin::fixed("never").await;
    let proxy = start_default().await;
    let mut req = get(&origin.url("/loop"));
    req.headers_mut()
        .insert("via", "1.1 other, 1.1 viaduct".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.status, StatusCode::LOOP_DETECTED);
    assert!(got.text().contains("loop"), "{}", got.text());
    assert_eq!(origin.count("/loop"), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_proxy_chained_to_itself_stops_with_508() {
    // The route points back at the proxy's own port: the second pass sees our
    // Via entry and answers 508 instead of looping forever.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = base_config();
    config.server.listen = vec![addr];
    config.routes = vec![route("*", "/", addr)];
    let proxy = start(config).await;
    let mut req = get("/chained");
    req.headers_mut()
        .insert("host", "loop.test".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.status, StatusCode::LOOP_DETECTED);
    proxy.shutdown().await;
}

/// An origin that accepts `Upgrade: echo`, answers 101, then echoes upper-cased.
async fn upgrading_origin() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !(head.contains("upgrade: echo") && head.contains("connection: upgrade")) {
                    let _ = stream
                        .write_all(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                }
                stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let upper = buf[..n].to_ascii_uppercase();
                            if stream.write_all(&upper).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_real_upgrade_passes_and_the_connections_are_joined() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = upgrading_origin().await;
    let proxy = start_default().await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!(
        "GET http://{origin}/ws HTTP/1.1\r\nHost: {origin}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("upgrade: echo") && lower.contains("connection: upgrade"),
        "{head}"
    );
    assert!(lower.contains("via: 1.1 viaduct"), "{head}");
    for word in ["hello", "tunnel"] {
        stream.write_all(word.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; word.len()];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, word.to_ascii_uppercase().as_bytes());
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn upgrade_without_connection_upgrade_is_stripped() {
    let origin = upgrading_origin().await;
    let proxy = start_default().await;
    let mut req = get(&format!("http://{origin}/not-ws"));
    req.headers_mut().insert("upgrade", "echo".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    // The origin never saw a valid upgrade request.
    assert_eq!(got.status, StatusCode::UPGRADE_REQUIRED);
    proxy.shutdown().await;
}
