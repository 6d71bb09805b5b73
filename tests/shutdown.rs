//! Graceful shutdown: in-flight requests finish, new connections are refused.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn in_flight_requests_finish_and_then_the_listener_is_gone() {
    // An origin that answers after a pause, so the request is in flight.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let (arrived_tx, arrived_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
        arrived_tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nfinished")
            .await
            .unwrap();
    });
    let proxy = start_default().await;
    let addr = proxy.addr();
    let request =
        tokio::spawn(async move { fetch(addr, get(&format!("http://{origin}/drain"))).await });
    arrived_rx.await.unwrap();

    let drained = proxy.shutdown().await;
    assert!(
        drained,
        "the in-flight request did not finish within shutdown_timeout"
    );
    let got = request.await.unwrap();
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "finished");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    let origin = Origin::fixed("x").await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    assert_eq!(
        client.get(&origin.url("/idle-drain")).await.status,
        StatusCode::OK
    );
    // keepalive_timeout is 60s; shutdown closes idle connections at once.
    assert!(proxy.shutdown().await);
    assert!(
        client.is_closed() || {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.is_closed()
        }
    );
}
