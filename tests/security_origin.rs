//! Origins that misbehave, and traffic modes that must not share a cache
//! (the security issue's findings 2, 3, 4, 6 and 7). Each origin here is a raw
//! socket server so it can send what a well-behaved HTTP library never would.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What a raw origin does after reading one request head.
enum Act {
    Write(Vec<u8>),
    Sleep(Duration),
    /// Tell the test this point was reached.
    Signal,
    /// Stop answering on this connection but keep it open.
    Stall,
}

/// Gives the acts for one request: its target, and how many came before.
type Script = dyn Fn(&str, usize) -> Vec<Act> + Send + Sync;

fn ok(headers: &str, body: &str) -> Act {
    Act::Write(
        format!(
            "HTTP/1.1 200 OK\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// A raw origin on 127.0.0.1:0: `script(target, nth)` gives the acts for the
/// `nth` request (counted over all connections, from 0).
async fn raw_origin(
    script: impl Fn(&str, usize) -> Vec<Act> + Send + Sync + 'static,
) -> (SocketAddr, mpsc::UnboundedReceiver<()>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tx, script, seen) = (tx.clone(), script.clone(), counter.clone());
            tokio::spawn(serve_raw(stream, tx, script, seen));
        }
    });
    (addr, rx, seen)
}

async fn serve_raw(
    mut stream: TcpStream,
    tx: mpsc::UnboundedSender<()>,
    script: Arc<Script>,
    seen: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let nth = seen.fetch_add(1, Ordering::SeqCst);
        for act in script(&target, nth) {
            match act {
                Act::Write(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Act::Sleep(d) => tokio::time::sleep(d).await,
                Act::Signal => {
                    let _ = tx.send(());
                }
                Act::Stall => {
                    let _ = stream.read(&mut chunk).await;
                    return;
                }
            }
        }
    }
}

fn reverse_config(origin: SocketAddr) -> viaduct::Config {
    let mut config = base_config();
    config.routes.push(route("*", "/", origin));
    config
}

fn get_host(path: &str, host: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A counter's value from the admin listener's /metrics.
async fn metric(admin: SocketAddr, sample: &str) -> f64 {
    let got = fetch(admin, get(&format!("http://{admin}/metrics"))).await;
    got.text()
        .lines()
        .find_map(|l| l.strip_prefix(sample))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn an_unsolicited_response_on_an_idle_pooled_connection_never_reaches_a_client_or_the_cache()
{
    // Every answer is followed, a moment later, by a second response nobody
    // asked for. A pool that wrote the next request on that connection would
    // read the extra as its answer, and every later URL would get the one
    // before it, each stored as a fresh hit.
    let (addr, mut extra_sent, _) = raw_origin(|target, _| {
        vec![
            ok(
                "Cache-Control: max-age=600\r\n",
                &format!("body of {target}"),
            ),
            Act::Sleep(Duration::from_millis(5)),
            ok("Cache-Control: max-age=600\r\n", "EXTRA nobody asked for"),
            Act::Signal,
        ]
    })
    .await;
    let proxy = start(reverse_config(addr)).await;
    let mut client = Client::connect(proxy.addr()).await;
    for i in 0..50 {
        let path = format!("/desync/{i}");
        let got = client.send(get_host(&path, "site.test")).await;
        assert_eq!(got.text(), format!("body of {path}"), "request {i}");
        // The extra is on the wire before the next request goes out.
        tokio::time::timeout(PATIENCE, extra_sent.recv())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Whatever is stored is what each URL's own request got (a connection
    // found out of step takes its recent entries with it, so some are gone).
    for i in 0..50 {
        let path = format!("/desync/{i}");
        let got = client.send(get_host(&path, "site.test")).await;
        assert_eq!(got.text(), format!("body of {path}"), "stored {i}");
        if !got.header("cache-status").unwrap().contains("hit") {
            // Refetched: wait out its extra too.
            tokio::time::timeout(PATIENCE, extra_sent.recv())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let unsolicited = metric(
        proxy.admin_addr(),
        "viaduct_upstream_errors_total{kind=\"unsolicited\"}",
    )
    .await;
    assert!(
        unsolicited >= 45.0,
        "each desynchronised connection is counted: {unsolicited}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn bytes_right_behind_a_complete_response_are_never_read_as_the_next_answer() {
    // The extra response arrives in the same write as the real one.
    let (addr, _, _) = raw_origin(|target, _| {
        let body = format!("body of {target}");
        let both = format!(
            "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: {}\r\n\r\n{body}\
             HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 5\r\n\r\nEXTRA",
            body.len()
        );
        vec![Act::Write(both.into_bytes())]
    })
    .await;
    let proxy = start(reverse_config(addr)).await;
    for i in 0..20 {
        let path = format!("/glued/{i}");
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let text = read_to_close(&mut stream).await;
        // Which of the two responses answered the request cannot be known
        // once both are there, so the first may be cut; the extra never
        // reaches anyone.
        assert!(!text.contains("EXTRA"), "request {i}: {text}");
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.1 502"),
            "request {i}: {text}"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_reverse_filled_url_is_a_miss_for_forward_clients_and_the_other_way() {
    // The catch-all route's origin and the "real" site are different servers.
    let cacheable = |body: &'static str| {
        move |_: &Seen| {
            Response::builder()
                .header("cache-control", "max-age=600")
                .body(TestBody::full(Bytes::from_static(body.as_bytes())))
                .unwrap()
        }
    };
    let reverse_origin = Origin::start(cacheable("reverse origin's page")).await;
    let site = Origin::start(cacheable("the real site")).await;
    let proxy = start(reverse_config(reverse_origin.addr)).await;
    let host = site.addr.to_string();

    // A reverse client names the site's host on the catch-all route...
    let got = fetch(proxy.addr(), get_host("/login", &host)).await;
    assert_eq!(got.text(), "reverse origin's page");
    // ...and a forward client asking for the site gets the site.
    let got = fetch(proxy.addr(), get(&site.url("/login"))).await;
    assert_eq!(got.text(), "the real site");
    assert_eq!(site.count("/login"), 1);

    // The other way: a forward fill is not served to reverse clients.
    let got = fetch(proxy.addr(), get(&site.url("/account"))).await;
    assert_eq!(got.text(), "the real site");
    let got = fetch(proxy.addr(), get_host("/account", &host)).await;
    assert_eq!(got.text(), "reverse origin's page");
    assert_eq!(reverse_origin.count("/account"), 1);

    // Each side still hits its own entry.
    let got = fetch(proxy.addr(), get(&site.url("/login"))).await;
    assert!(got.header("cache-status").unwrap().contains("hit"));
    assert_eq!(got.text(), "the real site");
    proxy.shutdown().await;
}

#[tokio::test]
async fn purge_and_inspection_name_the_part_of_the_cache() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=600")
            .body(TestBody::full(Bytes::from_static(b"x")))
            .unwrap()
    })
    .await;
    let mut config = base_config();
    let mut r = route("*", "/", origin.addr);
    r.name = Some("site".into());
    config.routes.push(r);
    let proxy = start(config).await;
    let admin = proxy.admin_addr();
    let url = origin.url("/ns/page");
    let host = origin.addr.to_string();
    fetch(proxy.addr(), get(&url)).await; // forward
    fetch(proxy.addr(), get_host("/ns/page", &host)).await; // reverse, route "site"
    assert_eq!(proxy.cache().store.entry_count(), 2);

    let inspect = fetch(admin, get(&format!("http://{admin}/cache?url={url}"))).await;
    let v: serde_json::Value = serde_json::from_slice(&inspect.body).unwrap();
    let namespaces: Vec<&str> = v["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["forward", "route:site"], "{v}");

    let post = |query: String| {
        Request::post(format!("http://{admin}/purge?{query}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let got = fetch(admin, post(format!("url={url}&route=nope"))).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    let got = fetch(admin, post(format!("url={url}&mode=forward"))).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(proxy.cache().store.entry_count(), 1);
    let got = fetch(admin, post(format!("url={url}&route=site"))).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(proxy.cache().store.entry_count(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_from_the_origin_is_dropped_and_never_stored() {
    let chunk = "x".repeat(1000);
    let (addr, _, seen) = raw_origin(move |_, _| {
        vec![Act::Write(
            format!(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 5\r\n\
                 Transfer-Encoding: chunked\r\n\r\n3e8\r\n{chunk}\r\n0\r\n\r\n"
            )
            .into_bytes(),
        )]
    })
    .await;
    let proxy = start(reverse_config(addr)).await;
    for _ in 0..2 {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream
            .write_all(b"GET /clte HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let text = read_to_close(&mut stream).await.to_ascii_lowercase();
        assert!(!text.contains("content-length: 5"), "{text}");
        assert!(text.contains(&"x".repeat(1000)), "the whole body: {text}");
        assert!(text.contains("detail=framing"), "{text}");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "never served from the cache"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn no_content_length_reaches_the_client_on_204_and_304() {
    let (addr, _, _) = raw_origin(|target, _| {
        let status = if target.contains("204") {
            "204 No Content"
        } else {
            "304 Not Modified"
        };
        vec![Act::Write(
            format!("HTTP/1.1 {status}\r\nContent-Length: 7\r\nETag: \"a\"\r\n\r\n").into_bytes(),
        )]
    })
    .await;
    let proxy = start(reverse_config(addr)).await;
    for path in ["/s/204", "/s/304"] {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: site.test\r\nIf-None-Match: \"a\"\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let text = read_to_close(&mut stream).await.to_ascii_lowercase();
        assert!(
            text.starts_with("http/1.1 ") && text.contains(&path[3..]),
            "{text}"
        );
        assert!(!text.contains("content-length: 7"), "{path}: {text}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_unsolicited_101_is_a_502() {
    let (addr, _, _) = raw_origin(|_, _| {
        vec![Act::Write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
                .to_vec(),
        )]
    })
    .await;
    let proxy = start(reverse_config(addr)).await;
    let got = fetch(proxy.addr(), get_host("/no-upgrade", "site.test")).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    assert!(got.text().contains("101"), "{}", got.text());
    // An upgrade to another protocol than the one asked for is refused too.
    let req = Request::get("/other-upgrade")
        .header("host", "site.test")
        .header("connection", "upgrade")
        .header("upgrade", "h2c")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_stalled_origin_body_ends_at_the_timeout_and_a_follower_is_answered_alone() {
    let body = "y".repeat(1000);
    let (addr, mut first_stalled, seen) = raw_origin(move |_, nth| {
        let head = "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 1000\r\n\r\n";
        if nth == 0 {
            // The head and 10 bytes, then silence.
            vec![
                Act::Write(format!("{head}{}", &body[..10]).into_bytes()),
                Act::Signal,
                Act::Stall,
            ]
        } else {
            vec![Act::Write(format!("{head}{body}").into_bytes())]
        }
    })
    .await;
    let mut config = reverse_config(addr);
    config.upstream.body_idle_timeout = viaduct::config::Dur(Duration::from_millis(1500));
    config.cache.collapse_timeout = viaduct::config::Dur(Duration::from_millis(500));
    let proxy = start(config).await;
    let proxy_addr = proxy.addr();

    let leader = tokio::spawn(async move {
        let mut stream = TcpStream::connect(proxy_addr).await.unwrap();
        stream
            .write_all(b"GET /stall HTTP/1.1\r\nHost: site.test\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let text = read_to_close(&mut stream).await;
        (text, started.elapsed())
    });
    tokio::time::timeout(PATIENCE, first_stalled.recv())
        .await
        .unwrap();
    // A second client collapses onto the stalled fill: it must not wait for
    // the stall, and gets a whole body of its own.
    let follower = fetch(proxy_addr, get_host("/stall", "site.test")).await;
    assert_eq!(follower.status, StatusCode::OK);
    assert_eq!(follower.body.len(), 1000);
    assert_eq!(seen.load(Ordering::SeqCst), 2, "the follower fetched alone");

    // The leader's response is cut when the body timeout fires, never
    // completed by a clean end (it would look whole).
    let (text, _) = leader.await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.ends_with(&"y".repeat(1000)),
        "truncated, not completed"
    );
    let stalls = metric(
        proxy.admin_addr(),
        "viaduct_upstream_errors_total{kind=\"body-timeout\"}",
    )
    .await;
    assert_eq!(stalls, 1.0);
    // What is stored is the follower's whole body, never the stalled one.
    let again = fetch(proxy_addr, get_host("/stall", "site.test")).await;
    assert_eq!(again.body.len(), 1000);
    assert!(again.header("cache-status").unwrap().contains("hit"));
    proxy.shutdown().await;
}

/// How long after each answer the desynchronising origin sends its extra.
const EXTRA_DELAY_MS: u64 = 3;

#[tokio::test]
async fn a_desynchronised_origin_leaves_no_poisoned_entry_behind() {
    // The auditor's origin: every answer is followed a moment later by an extra
    // response, while requests keep coming back to back. An extra that lands
    // while a request is on the wire is indistinguishable from its answer
    // (HTTP/1.1 pairs responses with requests by order alone), so a client
    // may get a wrong or cut body; but once the surplus shows up the
    // connection is dropped and everything it filled recently is forgotten,
    // so the cache never keeps a wrong answer.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Off for the check at the end: its misses must get true answers, so
    // that a wrong body there can only come from the cache.
    let misbehave = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let misbehaving = misbehave.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (mut read, write) = stream.into_split();
            let write = Arc::new(tokio::sync::Mutex::new(write));
            let misbehave = misbehaving.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match read.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let answer = |body: &str| {
                        format!(
                            "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let real = answer(&format!("body of {target}"));
                    if write.lock().await.write_all(real.as_bytes()).await.is_err() {
                        return;
                    }
                    if !misbehave.load(std::sync::atomic::Ordering::SeqCst) {
                        continue;
                    }
                    let write = write.clone();
                    let extra = answer("EXTRA nobody asked for");
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(EXTRA_DELAY_MS)).await;
                        let _ = write.lock().await.write_all(extra.as_bytes()).await;
                    });
                }
            });
        }
    });
    let proxy = start(reverse_config(addr)).await;
    let request =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    for i in 0..150 {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let req = request(&format!("/race/{i}"));
        stream.write_all(req.as_bytes()).await.unwrap();
        read_to_close(&mut stream).await;
    }
    // Every surplus response has arrived and been noticed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    misbehave.store(false, std::sync::atomic::Ordering::SeqCst);
    for i in 0..150 {
        let path = format!("/race/{i}");
        let got = fetch(proxy.addr(), get_host(&path, "site.test")).await;
        assert_eq!(
            got.text(),
            format!("body of {path}"),
            "{:?}",
            got.header("cache-status")
        );
    }
    proxy.shutdown().await;
}
