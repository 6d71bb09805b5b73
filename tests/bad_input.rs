//! Bad input gets a clear answer, and the proxy keeps serving after each.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn still_serving(proxy: SocketAddr, origin: &Origin, path: &str) {
    let got = fetch(proxy, get(&origin.url(path))).await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "proxy stopped serving after bad input"
    );
}

async fn setup() -> (Origin, viaduct::Running) {
    let origin = Origin::fixed("fine").await;
    let mut config = base_config();
    config.server.max_request_body = viaduct::config::Size(1024);
    config.server.max_header_size = viaduct::config::Size(8 * 1024);
    config.server.header_read_timeout = viaduct::config::Dur(Duration::from_millis(300));
    (origin, start(config).await)
}

#[tokio::test]
async fn malformed_request_line_is_400() {
    let (origin, proxy) = setup().await;
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let reply = raw(proxy.addr(), junk).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{junk:?} → {reply}");
    }
    still_serving(proxy.addr(), &origin, "/after-400").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let (origin, proxy) = setup().await;
    let big = "a".repeat(20 * 1024);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n",
        origin.url("/big-head")
    );
    let reply = raw(proxy.addr(), request.as_bytes()).await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    assert_eq!(origin.count("/big-head"), 0);
    still_serving(proxy.addr(), &origin, "/after-431").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_header_limit_below_8_kib_is_enforced_too() {
    // hyper's read buffer never goes below 8 KiB; the proxy enforces a
    // smaller `max_header_size` itself, in one read or several.
    let origin = Origin::fixed("fine").await;
    let mut config = base_config();
    config.server.max_header_size = viaduct::config::Size(4 * 1024);
    let proxy = start(config).await;
    let big = "a".repeat(6 * 1024);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n",
        origin.url("/mid-head")
    );
    let reply = raw(proxy.addr(), request.as_bytes()).await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let (first, second) = request.as_bytes().split_at(3000);
    stream.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    stream.write_all(second).await.unwrap();
    let reply = read_response(&mut stream).await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    assert_eq!(origin.count("/mid-head"), 0);
    still_serving(proxy.addr(), &origin, "/after-mid-431").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn declared_body_over_the_limit_is_413_without_contacting_the_origin() {
    let (origin, proxy) = setup().await;
    let body = "x".repeat(2000);
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        origin.url("/big-body"),
        body.len()
    );
    let reply = raw(proxy.addr(), request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("1024-byte limit"), "{reply}");
    assert_eq!(origin.count("/big-body"), 0);
    still_serving(proxy.addr(), &origin, "/after-413").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn chunked_body_growing_over_the_limit_is_413() {
    let (origin, proxy) = setup().await;
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        origin.url("/big-chunked")
    );
    for _ in 0..4 {
        request.push_str(&format!("200\r\n{}\r\n", "y".repeat(512)));
    }
    request.push_str("0\r\n\r\n");
    let reply = raw(proxy.addr(), request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert_eq!(
        origin.count("/big-chunked"),
        0,
        "a truncated body reached the origin handler"
    );
    still_serving(proxy.addr(), &origin, "/after-chunked-413").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400() {
    let (origin, proxy) = setup().await;
    for request in [
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            origin.url("/smuggle-1")
        ),
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            origin.url("/smuggle-2")
        ),
    ] {
        let reply = raw(proxy.addr(), request.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
        assert!(reply.contains("Content-Length together with Transfer-Encoding"), "{reply}");
    }
    // The same shape after a good request on one persistent connection.
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\nPOST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        origin.url("/smuggle-ok"),
        origin.url("/smuggle-3")
    );
    let reply = raw(proxy.addr(), request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("HTTP/1.1 400"), "{reply}");
    assert_eq!(origin.count("/smuggle-"), 1);
    assert_eq!(origin.count("/smuggle-ok"), 1);
    still_serving(proxy.addr(), &origin, "/after-smuggle").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_without_a_complete_head_is_closed() {
    let (origin, proxy) = setup().await;
    // Slowloris: a partial head, then silence.
    let mut slow = TcpStream::connect(proxy.addr()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // And a client that connects and says nothing at all.
    let mut silent = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(
        closed_by_peer(&mut slow).await,
        "slow header connection stayed open"
    );
    assert!(
        closed_by_peer(&mut silent).await,
        "silent connection stayed open"
    );
    still_serving(proxy.addr(), &origin, "/after-slowloris").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_slow_but_complete_head_within_the_timeout_is_served() {
    let origin = Origin::fixed("patient").await;
    let proxy = start_default().await; // 10s header timeout
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        origin.url("/trickle")
    );
    for piece in request.as_bytes().chunks(7) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reply = read_to_close(&mut stream).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    proxy.shutdown().await;
}
