//! Memory per cached object: fill the cache with OBJECTS distinct responses
//! of SIZE bytes (default 100k × 1 KiB) through a real proxy and origin in
//! this process, and report the growth of resident memory per object.
//!
//! Run: `cargo bench --bench memory` (env: OBJECTS, SIZE, CLIENTS).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// The same allocator as the `viaduct` binary, so the numbers match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process in KiB.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn origin(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Bytes::from(vec![b'z'; size]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let resp = Response::builder()
                            .header("cache-control", "max-age=3600")
                            .header("content-type", "application/octet-stream")
                            .body(Full::new(body))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn main() {
    let objects = env("OBJECTS", 100_000);
    let size = env("SIZE", 1024);
    let clients = env("CLIENTS", 8);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let origin = origin(size).await;
        let config = viaduct::Config::from_toml(
            &format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[cache]\ncapacity = \"1GiB\"\n[log]\naccess = \"off\"\n[[route]]\nhost = \"*\"\nupstream = \"http://{origin}\"\n"
            ),
            "memory-bench",
        )
        .unwrap();
        let proxy = viaduct::Proxy::start(config).await.unwrap();
        let addr = proxy.addr();
        // Warm up allocator arenas and connections with a few requests first.
        fill(addr, clients, 0, 1000).await;
        let before_kb = rss_kb();
        let before_weight = proxy.cache().store.weighted_size();
        fill(addr, clients, 1000, objects).await;
        let entries = proxy.cache().store.entry_count();
        let after_kb = rss_kb();
        let weight = proxy.cache().store.weighted_size() - before_weight;
        let added = entries.saturating_sub(1000).max(1);
        println!("{added} objects of {size} B stored (cache entries {entries})");
        println!(
            "  RSS growth: {} KiB total, {:.2} KiB per object",
            after_kb.saturating_sub(before_kb),
            (after_kb.saturating_sub(before_kb)) as f64 / added as f64
        );
        println!("  cache weight charged: {:.2} KiB per object", weight as f64 / 1024.0 / added as f64);
        proxy.shutdown().await;
    });
}

/// Requests keys start..start+count over `clients` keep-alive connections.
async fn fill(addr: SocketAddr, clients: usize, start: usize, count: usize) {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let mut i = start + c;
                while i < start + count {
                    let req = Request::get(format!("/obj/{i}"))
                        .header("host", "mem.test")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let resp = sender.send_request(req).await.unwrap();
                    resp.into_body().collect().await.unwrap();
                    i += clients;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}
