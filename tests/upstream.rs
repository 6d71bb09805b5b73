//! Upstream failures: stale pooled connections, refused, slow and broken origins.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one request (head and Content-Length body); returns its request line.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let len = text
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.ok()?;
    text.lines().next().map(str::to_string)
}

/// An origin whose first connection answers one request, then closes on the
/// next one without answering: the race where an origin drops a pooled
/// connection just as the proxy reuses it. Later connections behave.
async fn stale_origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    tokio::spawn(async move {
        let mut index = 0;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            let first = index == 0;
            index += 1;
            tokio::spawn(async move {
                let mut served = 0;
                while let Some(line) = read_request(&mut stream).await {
                    seen.lock()
                        .unwrap()
                        .push(format!("conn{}:{line}", if first { 0 } else { 1 }));
                    if first && served == 1 {
                        return; // close without a response
                    }
                    served += 1;
                    let body = if first { "first" } else { "fresh" };
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, log)
}

#[tokio::test]
async fn get_on_a_stale_pooled_connection_is_retried_once_on_a_fresh_one() {
    let (origin, log) = stale_origin().await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    let got = client.get(&format!("http://{origin}/stale/1")).await;
    assert_eq!(got.text(), "first");
    let got = client.get(&format!("http://{origin}/stale/2")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "fresh");
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "conn0:GET /stale/1 HTTP/1.1",
            "conn0:GET /stale/2 HTTP/1.1",
            "conn1:GET /stale/2 HTTP/1.1"
        ]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn post_on_a_stale_pooled_connection_is_not_resent() {
    let (origin, log) = stale_origin().await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    let got = client
        .get(&format!("http://{origin}/stale-post/warm"))
        .await;
    assert_eq!(got.text(), "first");
    let req = Request::post(format!("http://{origin}/stale-post/order"))
        .body(Full::new(Bytes::from_static(b"buy one")))
        .unwrap();
    let got = client.send(req).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(
        got.text().contains("closed the connection"),
        "{}",
        got.text()
    );
    let posts = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("POST"))
        .count();
    assert_eq!(posts, 1, "the POST was sent again");
    proxy.shutdown().await;
}

#[tokio::test]
async fn refused_upstream_is_502_naming_it() {
    let (_closed, addr) = refusing_port();
    let mut config = base_config();
    config.routes = vec![route("*", "/", addr)];
    let proxy = start(config).await;
    let mut req = get("/refused");
    req.headers_mut().insert("host", "r.test".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        got.text(),
        format!("upstream {addr} refused the connection\n")
    );
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    // Still serving.
    let got = fetch(proxy.addr(), get(&format!("http://{addr}/refused-fwd"))).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    proxy.shutdown().await;
}

#[tokio::test]
async fn slow_upstream_is_504() {
    // Accepts and reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut config = base_config();
    config.upstream.response_header_timeout = viaduct::config::Dur(Duration::from_millis(300));
    let proxy = start(config).await;
    let got = fetch(proxy.addr(), get(&format!("http://{addr}/slow"))).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        got.text()
            .starts_with(&format!("upstream {addr} sent no response within")),
        "{}",
        got.text()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn invalid_upstream_response_is_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = read_request(&mut stream).await;
                let _ = stream.write_all(b"this is not http\r\n\r\n").await;
            });
        }
    });
    let proxy = start_default().await;
    let got = fetch(proxy.addr(), get(&format!("http://{addr}/garbage"))).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(got.text().contains("invalid response"), "{}", got.text());
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_that_always_hangs_up_is_502_after_one_retry() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                if read_request(&mut stream).await.is_some() {
                    *c.lock().unwrap() += 1;
                }
            });
        }
    });
    let proxy = start_default().await;
    let got = fetch(proxy.addr(), get(&format!("http://{addr}/hangup"))).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(
        got.text()
            .contains("closed the connection without a response"),
        "{}",
        got.text()
    );
    assert_eq!(
        *count.lock().unwrap(),
        2,
        "one attempt plus exactly one retry"
    );
    proxy.shutdown().await;
}
