//! The shared tier (issue 17) on a real redis-server, with an in-process
//! origin that counts what it is asked:
//!
//! 1. Hit ratio on one request trace (Zipf over URLS URLs, REQUESTS
//!    requests, CLIENTS at a time): one node; three nodes each on their
//!    own (what a load balancer in front of three caches gives); three
//!    nodes sharing one Redis. Goal: three shared nodes = one node.
//! 2. Shared-tier hits: node A fills Redis with HITS objects of 1 KiB,
//!    then node B (empty memory) asks for each once (every one a Redis
//!    hit), then again (every one a memory hit): req/s and latency of each.
//!
//! Run: `cargo bench --bench shared_tier` (needs redis-server; env URLS,
//! REQUESTS, CLIENTS, HITS).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start() -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Redis { port, child };
        while redis.cli(&["PING"]).trim() != "PONG" {
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An origin answering every path with 1 KiB, fresh for ten minutes.
async fn origin(count: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Bytes::from(vec![b'o'; 1024]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (body, count) = (body.clone(), count.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    count.fetch_add(1, Ordering::Relaxed);
                    let body = body.clone();
                    async move {
                        let resp = Response::builder()
                            .header("cache-control", "max-age=600")
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

async fn node(origin: SocketAddr, redis: Option<u16>) -> viaduct::Running {
    let shared = redis.map_or(String::new(), |port| {
        format!("[cache.shared]\nredis = [\"redis://127.0.0.1:{port}\"]\n")
    });
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n\
         [cache]\ncapacity = \"512MiB\"\n{shared}[[route]]\nhost = \"*\"\nupstream = \"http://{origin}\"\n"
    );
    let config = viaduct::Config::from_toml(&text, "shared-bench").unwrap();
    viaduct::Proxy::start(config).await.unwrap()
}

/// A Zipf(0.9) trace over `urls` URLs, the same every run (xorshift64*).
fn trace(urls: usize, requests: usize) -> Vec<usize> {
    let weights: Vec<f64> = (1..=urls).map(|k| 1.0 / (k as f64).powf(0.9)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(urls);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..requests)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
            cdf.partition_point(|c| *c < r).min(urls - 1)
        })
        .collect()
}

/// Sends `paths` (request i to node i % nodes), `clients` at a time, each
/// client with a kept-alive connection per node; every request's latency.
async fn play(nodes: &[SocketAddr], paths: Arc<Vec<String>>, clients: usize) -> Vec<Duration> {
    let nodes = Arc::new(nodes.to_vec());
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (nodes, paths) = (nodes.clone(), paths.clone());
            tokio::spawn(async move {
                let mut senders = Vec::new();
                for addr in nodes.iter() {
                    let stream = TcpStream::connect(addr).await.unwrap();
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .unwrap();
                    tokio::spawn(conn);
                    senders.push(sender);
                }
                let mut took = Vec::new();
                let mut i = c;
                while i < paths.len() {
                    let req = Request::get(paths[i].as_str())
                        .header("host", "bench.test")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let started = Instant::now();
                    let which = i % senders.len();
                    let sender = &mut senders[which];
                    let resp = sender.send_request(req).await.unwrap();
                    resp.into_body().collect().await.unwrap();
                    took.push(started.elapsed());
                    i += clients;
                }
                took
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let urls = env("URLS", 10_000);
    let requests = env("REQUESTS", 60_000);
    let clients = env("CLIENTS", 16);
    let hits = env("HITS", 20_000);
    let Some(redis) = Redis::start() else {
        println!("redis-server is not installed: apt-get install -y redis-server");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let count = Arc::new(AtomicUsize::new(0));
        let origin = origin(count.clone()).await;
        let paths: Arc<Vec<String>> = Arc::new(
            trace(urls, requests)
                .into_iter()
                .map(|u| format!("/t/{u}"))
                .collect(),
        );
        let distinct = {
            let mut d: Vec<&String> = paths.iter().collect();
            d.sort();
            d.dedup();
            d.len()
        };
        println!("trace: {requests} requests over {distinct} distinct URLs (Zipf 0.9 of {urls}), {clients} clients");
        println!("| setup | origin requests | hit ratio |\n| --- | ---: | ---: |");
        for (name, nodes, shared) in [
            ("1 node", 1, false),
            ("3 nodes, each on its own", 3, false),
            ("3 nodes, shared tier", 3, true),
        ] {
            redis.cli(&["FLUSHALL"]);
            let mut running = Vec::new();
            for _ in 0..nodes {
                running.push(node(origin, shared.then_some(redis.port)).await);
            }
            // Let the nodes connect to Redis before the trace starts.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let addrs: Vec<SocketAddr> = running.iter().map(|n| n.addr()).collect();
            count.store(0, Ordering::SeqCst);
            play(&addrs, paths.clone(), clients).await;
            let asked = count.load(Ordering::SeqCst);
            println!(
                "| {name} | {asked} | {:.2}% |",
                100.0 * (1.0 - asked as f64 / requests as f64)
            );
            for n in running {
                n.shutdown().await;
            }
        }

        // Shared-tier hits against memory hits, on one node.
        redis.cli(&["FLUSHALL"]);
        let a = node(origin, Some(redis.port)).await;
        let b = node(origin, Some(redis.port)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let objects: Arc<Vec<String>> = Arc::new((0..hits).map(|i| format!("/h/{i}")).collect());
        play(&[a.addr()], objects.clone(), 64).await;
        // Every write done (stored, or dropped when the queue was full).
        let tier_a = a.cache().shared.as_ref().unwrap().stats.clone();
        let written = |outcome| {
            tier_a
                .writes
                .get_or_create(&viaduct::cache::shared::OutcomeLabel { outcome })
                .get() as usize
        };
        while written("stored") + written("dropped") + written("failed") < hits {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "\nnode A filled Redis: {} written, {} dropped (queue full), {} failed",
            written("stored"),
            written("dropped"),
            written("failed")
        );
        println!("{hits} objects of 1 KiB, 64 clients, on a node whose memory does not hold them:");
        println!("| answered from | req/s | p50 | p99 |\n| --- | ---: | ---: | ---: |");
        for from in ["shared tier (Redis)", "memory"] {
            let started = Instant::now();
            let mut took = play(&[b.addr()], objects.clone(), 64).await;
            let secs = started.elapsed().as_secs_f64();
            took.sort();
            println!(
                "| {from} | {:.0} | {:.2} ms | {:.2} ms |",
                hits as f64 / secs,
                percentile(&took, 0.5).as_secs_f64() * 1e3,
                percentile(&took, 0.99).as_secs_f64() * 1e3
            );
        }
        let stats = b.cache();
        let tier = stats.shared.as_ref().unwrap();
        println!(
            "(node B: {} shared hits, {} misses)",
            tier.stats.hits.get(),
            tier.stats.misses.get()
        );
        a.shutdown().await;
        b.shutdown().await;
    });
}
