//! CONNECT tunnels and upgraded connections under the connection limit and
//! at shutdown: they keep their client connection's place (and its count in
//! the open-connections gauge) until they end, shutdown waits for them up to
//! `shutdown_timeout`, then closes them.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// An established tunnel to `origin`, checked with one request through it.
async fn tunnel(proxy: SocketAddr, origin: &Origin) -> TcpStream {
    let target = origin.addr.to_string();
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let inner = format!("GET /through HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(inner.as_bytes()).await.unwrap();
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stream
}

fn config(origin: &Origin) -> viaduct::Config {
    let mut config = base_config();
    config.forward.connect_ports = vec![origin.addr.port()];
    config
}

async fn open_connections(admin: SocketAddr) -> f64 {
    value(&scrape(admin).await, "viaduct_client_connections", &[])
}

#[tokio::test]
async fn a_tunnel_keeps_its_place_under_max_connections() {
    let origin = Origin::fixed("tunnelled").await;
    let mut config = config(&origin);
    config.server.max_connections = 2;
    let proxy = start(config).await;
    let tunnel = tunnel(proxy.addr(), &origin).await;
    let mut other = Client::connect(proxy.addr()).await;
    assert_eq!(other.get(&origin.url("/t/2")).await.status, StatusCode::OK);
    assert_eq!(open_connections(proxy.admin_addr()).await, 2.0);

    // A third client waits in the backlog while the tunnel is open...
    let addr = proxy.addr();
    let url = origin.url("/t/3");
    let third = tokio::spawn(async move { fetch(addr, get(&url)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin.count("/t/3"), 0, "served past the connection limit");
    // ...and is served once the tunnel ends.
    drop(tunnel);
    assert_eq!(third.await.unwrap().status, StatusCode::OK);
    drop(other);
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_waits_for_a_tunnel_then_closes_it() {
    let origin = Origin::fixed("tunnelled").await;
    let mut config = config(&origin);
    config.server.shutdown_timeout = viaduct::config::Dur(Duration::from_millis(300));
    let proxy = start(config).await;
    let mut open = tunnel(proxy.addr(), &origin).await;
    assert!(
        !proxy.shutdown().await,
        "an open tunnel is waited for, up to the timeout"
    );
    assert!(
        closed_by_peer(&mut open).await,
        "the tunnel is closed at the shutdown timeout"
    );

    // A tunnel that ends in time lets shutdown finish drained.
    let mut config = self::config(&origin);
    config.server.shutdown_timeout = viaduct::config::Dur(Duration::from_secs(5));
    let proxy = start(config).await;
    let open = tunnel(proxy.addr(), &origin).await;
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(open);
    });
    assert!(proxy.shutdown().await);
    closer.await.unwrap();
}

/// An origin that switches every request to an echo protocol.
async fn upgrading_origin() -> SocketAddr {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = read_head(&mut stream).await;
                let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    head
}

#[tokio::test]
async fn an_upgraded_connection_is_counted_and_closed_at_shutdown() {
    use tokio::io::AsyncReadExt;
    let origin = upgrading_origin().await;
    let mut config = base_config();
    config.routes = vec![route("echo.test", "/", origin)];
    config.server.shutdown_timeout = viaduct::config::Dur(Duration::from_millis(300));
    let proxy = start(config).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: echo.test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
        .await
        .unwrap();
    let head = String::from_utf8(read_head(&mut stream).await).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
    assert_eq!(open_connections(proxy.admin_addr()).await, 1.0);
    assert!(
        !proxy.shutdown().await,
        "the upgraded connection is waited for"
    );
    assert!(
        closed_by_peer(&mut stream).await,
        "and closed at the timeout"
    );
}
