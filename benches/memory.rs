//! Memory per cached object: fill the cache with OBJECTS distinct responses
//! of SIZE bytes (default 100k × 1 KiB) through a real proxy and origin in
//! this process, and report the growth of resident memory per object.
//!
//! The origin sends a realistic head: by default the bench runs twice, in a
//! child process each, once with 4 header fields (Cache-Control,
//! Content-Type, Content-Length, Date) and once with the 9 an nginx origin
//! sends for a static file (Server, Date, Content-Type, Content-Length,
//! Last-Modified, Connection, ETag, Cache-Control, Accept-Ranges).
//!
//! Run: `cargo bench --bench memory` (env: OBJECTS, SIZE, CLIENTS, FIELDS=4|9
//! for one run only).

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

/// Resident set size of process `pid` (or `"self"`) in KiB; 0 if unreadable.
fn rss_kb_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident set size of this process in KiB.
fn rss_kb() -> u64 {
    rss_kb_of("self")
}

async fn origin(size: usize, fields: usize) -> SocketAddr {
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
                        let mut resp = Response::builder()
                            .header("cache-control", "max-age=3600")
                            .header("content-type", "application/octet-stream")
                            .header(
                                "date",
                                httpdate::fmt_http_date(std::time::SystemTime::now()),
                            );
                        if fields == 9 {
                            resp = resp
                                .header("server", "nginx/1.22.1")
                                .header("last-modified", "Tue, 24 Nov 2026 14:00:00 GMT")
                                .header("connection", "keep-alive")
                                .header("etag", "\"6744a3c8-400\"")
                                .header("accept-ranges", "bytes");
                        }
                        // hyper adds Content-Length: the fourth (or ninth) field.
                        let resp = resp.body(Full::new(body)).unwrap();
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
    let Ok(fields) = std::env::var("FIELDS") else {
        // One child process per head shape, so neither sees the other's heap.
        for fields in ["4", "9"] {
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .env("FIELDS", fields)
                .status()
                .unwrap();
            assert!(status.success());
        }
        return;
    };
    let fields: usize = fields.parse().expect("FIELDS is 4 or 9");
    assert!(fields == 4 || fields == 9, "FIELDS is 4 or 9");
    let objects = env("OBJECTS", 100_000);
    let size = env("SIZE", 1024);
    let clients = env("CLIENTS", 8);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let origin = origin(size, fields).await;
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
        println!(
            "{added} objects of {size} B stored, {fields} origin header fields (cache entries {entries})"
        );
        println!(
            "  RSS growth: {} KiB total, {:.2} KiB per object",
            after_kb.saturating_sub(before_kb),
            (after_kb.saturating_sub(before_kb)) as f64 / added as f64
        );
        println!("  cache weight charged: {:.2} KiB per object", weight as f64 / 1024.0 / added as f64);
        proxy.shutdown().await;
        varnish(origin, clients, size, objects).await;
    });
}

/// Resident set size in KiB of a process tree (Varnish's manager and its
/// cache child).
fn tree_rss_kb(pid: u32) -> u64 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    rss_kb_of(&pid.to_string()) + children.split_whitespace().map(rss_kb_of).sum::<u64>()
}

/// The same fill through Varnish (`-s malloc`) in front of the same origin,
/// when `varnishd` is installed, so the two are compared in one run.
async fn varnish(origin: SocketAddr, clients: usize, size: usize, objects: usize) {
    let found = ["/usr/sbin/varnishd", "/usr/local/sbin/varnishd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(varnishd) = found else {
        println!("  varnish: not installed (apt-get install -y varnish), skipped");
        return;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = std::env::temp_dir().join(format!("viaduct-memory-varnish-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = std::process::Command::new(varnishd)
        .args([
            "-F",
            "-a",
            &format!("127.0.0.1:{port}"),
            "-b",
            &origin.to_string(),
        ])
        .args([
            "-s",
            "malloc,1G",
            "-n",
            dir.to_str().unwrap(),
            "-p",
            "default_ttl=0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut up = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if up {
        fill(addr, clients, 0, 1000).await;
        let before = tree_rss_kb(child.id());
        fill(addr, clients, 1000, objects).await;
        let after = tree_rss_kb(child.id());
        let added = objects.saturating_sub(1000).max(1);
        println!(
            "  varnish -s malloc, same {size} B objects: RSS growth {:.2} KiB per object",
            after.saturating_sub(before) as f64 / added as f64
        );
    } else {
        println!("  varnish: did not start, skipped");
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
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
