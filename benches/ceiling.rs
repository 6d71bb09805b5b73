//! The ceiling for a hyper-based hit path: a bare hyper server that answers
//! every request from memory with the same bytes a viaduct cache hit sends
//! (status, the origin's fields plus Age, Via and Cache-Status, and the body),
//! on the same runtime and allocator, with no cache, no policy and no log.
//! `benches/load.sh` runs it beside viaduct so each hit row reads as a share
//! of this ceiling.
//!
//! Build: `cargo build --release --example ceiling`
//! Run:   `target/release/examples/ceiling 127.0.0.1:19104 [workers]`
//! Paths ending in `100k` get a 100 KiB body, everything else 1 KiB.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One prepared answer: the head fields and the body, shared by every request.
struct Answer {
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn new(size: usize) -> Answer {
        let mut headers = HeaderMap::new();
        // What an nginx origin sends for a static file, as viaduct stores it,
        // then what viaduct adds on a hit.
        let fields: [(&str, String); 10] = [
            ("server", "nginx/1.22.1".into()),
            (
                "date",
                httpdate::fmt_http_date(std::time::SystemTime::now()),
            ),
            ("content-type", "application/octet-stream".into()),
            ("content-length", size.to_string()),
            ("last-modified", "Tue, 24 Nov 2026 14:00:00 GMT".into()),
            ("etag", "\"6744a3c8-400\"".into()),
            ("cache-control", "max-age=600".into()),
            ("accept-ranges", "bytes".into()),
            ("age", "3".into()),
            ("via", "1.1 viaduct".into()),
        ];
        for (name, value) in fields {
            headers.append(name, HeaderValue::from_str(&value).unwrap());
        }
        headers.append(
            "cache-status",
            HeaderValue::from_static("viaduct; hit; ttl=597"),
        );
        Answer {
            headers,
            body: Bytes::from(vec![b'x'; size]),
        }
    }

    fn respond(&self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(self.body.clone()));
        *resp.headers_mut() = self.headers.clone();
        resp
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:19104".into())
        .parse()
        .expect("usage: ceiling ADDR [WORKERS]");
    let workers: usize = args.next().map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get()),
        |w| w.parse().expect("WORKERS is a number"),
    );
    let small = Arc::new(Answer::new(1024));
    let large = Arc::new(Answer::new(100 * 1024));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().keep_alive(true);
            let builder = Arc::new(builder);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (small, large, builder) = (small.clone(), large.clone(), builder.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let answer = if req.uri().path().ends_with("100k") {
                            &large
                        } else {
                            &small
                        };
                        let resp = answer.respond();
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
}
