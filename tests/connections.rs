//! Connection management: persistence to clients and origins, HTTP/1.0
//! keep-alive, Connection: close, pipelining, idle timeout, connection limit.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn fifty_sequential_requests_use_one_origin_connection() {
    let origin = Origin::fixed("k").await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    for i in 0..50 {
        let got = client.get(&origin.url(&format!("/seq/{i}"))).await;
        assert_eq!(got.status, StatusCode::OK);
    }
    assert_eq!(origin.count("/seq/"), 50);
    assert_eq!(origin.connections(), 1);
    assert_eq!(proxy.upstream_connections_opened(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn fifty_requests_over_ten_clients_stay_within_the_pool_cap() {
    let origin = Origin::fixed("k").await;
    let mut config = base_config();
    config.upstream.max_connections_per_host = 4;
    let proxy = start(config).await;
    let addr = proxy.addr();
    let mut tasks = Vec::new();
    for c in 0..10 {
        let url = origin.url(&format!("/fan/{c}/"));
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            for i in 0..5 {
                let got = client.get(&format!("{url}{i}")).await;
                assert_eq!(got.status, StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(origin.count("/fan/"), 50);
    assert!(
        origin.connections() <= 4,
        "origin saw {} connections",
        origin.connections()
    );
    assert_eq!(
        proxy.upstream_connections_opened() as usize,
        origin.connections()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn http10_client_without_keep_alive_gets_a_complete_response_and_a_close() {
    let body = "0123456789".repeat(500);
    let sent = body.clone();
    let origin = Origin::start(move |_| Response::new(TestBody::full(sent.clone().into()))).await;
    let proxy = start_default().await;
    let request = format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/h10"));
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let reply = read_to_close(&mut stream).await;
    let (head, received) = reply.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert_eq!(received, body);
    proxy.shutdown().await;
}

#[tokio::test]
async fn http10_keep_alive_is_honoured() {
    let origin = Origin::fixed("ka").await;
    let proxy = start_default().await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    for i in 0..3 {
        let request = format!(
            "GET {} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            origin.url(&format!("/h10ka/{i}"))
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let reply = read_response(&mut stream).await;
        assert!(
            reply
                .to_ascii_lowercase()
                .contains("connection: keep-alive"),
            "{reply}"
        );
        assert!(reply.ends_with("ka"), "{reply}");
    }
    assert_eq!(origin.count("/h10ka/"), 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn unknown_length_response_to_http10_client_is_delimited_by_close() {
    let origin = Origin::start(|_| {
        let chunks = (0..20).map(|i| Bytes::from(format!("part{i}."))).collect();
        Response::new(TestBody::chunked(chunks))
    })
    .await;
    let proxy = start_default().await;
    let request = format!(
        "GET {} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        origin.url("/h10-unknown")
    );
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    // read_to_close only returns when the proxy closes: the close is the end.
    let reply = read_to_close(&mut stream).await;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    let expected: String = (0..20).map(|i| format!("part{i}.")).collect();
    assert_eq!(body, expected);
    proxy.shutdown().await;
}

#[tokio::test]
async fn connection_close_closes_after_the_response() {
    let origin = Origin::fixed("bye").await;
    let proxy = start_default().await;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        origin.url("/close")
    );
    let reply = raw(proxy.addr(), request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("bye"), "{reply}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let origin = Origin::start(|seen| {
        let body = format!("answer:{}", seen.target);
        Response::new(TestBody::full(body.into()))
    })
    .await;
    let proxy = start_default().await;
    let mut pipeline = String::new();
    for i in 0..5 {
        pipeline.push_str(&format!(
            "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
            origin.url(&format!("/pipe/{i}"))
        ));
    }
    pipeline.push_str(&format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        origin.url("/pipe/last")
    ));
    let reply = raw(proxy.addr(), pipeline.as_bytes()).await;
    let mut positions = Vec::new();
    for i in 0..5 {
        positions.push(reply.find(&format!("answer:/pipe/{i}")).expect("answered"));
    }
    positions.push(reply.find("answer:/pipe/last").expect("answered"));
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "out of order: {reply}"
    );
    assert_eq!(reply.matches("HTTP/1.1 200").count(), 6);
    proxy.shutdown().await;
}

#[tokio::test]
async fn idle_persistent_connections_are_closed_after_keepalive_timeout() {
    let origin = Origin::fixed("idle").await;
    let mut config = base_config();
    config.server.keepalive_timeout = viaduct::config::Dur(Duration::from_millis(300));
    let proxy = start(config).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.url("/idle"));
    stream.write_all(request.as_bytes()).await.unwrap();
    let reply = read_response(&mut stream).await;
    assert!(reply.ends_with("idle"), "{reply}");
    assert!(
        closed_by_peer(&mut stream).await,
        "idle connection was never closed"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn over_the_connection_limit_the_proxy_waits_instead_of_failing() {
    let origin = Origin::fixed("lim").await;
    let mut config = base_config();
    config.server.max_connections = 2;
    let proxy = start(config).await;
    let mut first = Client::connect(proxy.addr()).await;
    let mut second = Client::connect(proxy.addr()).await;
    assert_eq!(
        first.get(&origin.url("/limit/1")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        second.get(&origin.url("/limit/2")).await.status,
        StatusCode::OK
    );

    // A third client is held in the backlog while two are open...
    let addr = proxy.addr();
    let url = origin.url("/limit/3");
    let third = tokio::spawn(async move { fetch(addr, get(&url)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        origin.count("/limit/3"),
        0,
        "served past the connection limit"
    );
    // ...and served once one of them leaves.
    drop(first);
    let got = third.await.unwrap();
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        second.get(&origin.url("/limit/4")).await.status,
        StatusCode::OK
    );
    proxy.shutdown().await;
}
