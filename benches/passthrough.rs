//! Pass-through cost of the proxy path, measured in-process: the same origin
//! driven directly and through viaduct (reverse route, keep-alive on both
//! sides), reported as requests per second and the ratio viaduct/direct.
//!
//! Run: `cargo bench --bench passthrough` (env: CLIENTS, REQUESTS, BODY).
//! The comparison against nginx and Varnish lives in the load benchmark.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn origin(body: Bytes) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// `clients` keep-alive connections each sending `per_client` GETs; req/s.
async fn drive(target: SocketAddr, clients: usize, per_client: usize) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(target).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                for _ in 0..per_client {
                    let req = Request::get("/bench")
                        .header("host", "bench.test")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let resp = sender.send_request(req).await.unwrap();
                    assert!(resp.status().is_success());
                    resp.into_body().collect().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (clients * per_client) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let clients = env("CLIENTS", 32);
    let requests = env("REQUESTS", 100_000);
    let body_len = env("BODY", 1024);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let origin = origin(Bytes::from(vec![b'x'; body_len])).await;
        let mut config = viaduct::Config::from_toml(
            &format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n[[route]]\nhost = \"*\"\nupstream = \"http://{origin}\"\n"
            ),
            "bench",
        )
        .unwrap();
        config.upstream.max_idle_per_host = clients * 2;
        let proxy = viaduct::Proxy::start(config).await.unwrap();
        let per_client = requests / clients;
        // Warm both paths (connections, pool) before measuring.
        drive(origin, clients, 200).await;
        drive(proxy.addr(), clients, 200).await;
        let mut direct = Vec::new();
        let mut via = Vec::new();
        for _ in 0..3 {
            direct.push(drive(origin, clients, per_client).await);
            via.push(drive(proxy.addr(), clients, per_client).await);
        }
        let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        let (d, p) = (best(&direct), best(&via));
        println!("pass-through, {body_len} B bodies, {clients} keep-alive clients, best of 3 turns");
        println!("  direct to origin   {d:>10.0} req/s");
        println!("  through viaduct    {p:>10.0} req/s");
        println!("  ratio viaduct/direct {:.2}", p / d);
        println!("  origin connections opened by viaduct: {}", proxy.upstream_connections_opened());
        proxy.shutdown().await;
    });
}
