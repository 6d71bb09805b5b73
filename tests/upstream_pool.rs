//! viaduct's own upstream connection pool, watched from the origin's side.
//!
//! The origin here is written on raw sockets so that it can do what real
//! origins do to a pool: close a kept-alive connection without saying so,
//! say `Connection: close` and then never close, send a body larger than any
//! buffer, hold answers until the test lets them go. It records every
//! connection it accepts, every request and the connection it came on, how
//! each connection ended (closed by the proxy or by the origin) and how many
//! requests it was answering at once. The proxy runs through the library on
//! port 0 and is driven by real clients. Nothing is asserted on timings:
//! every wait is for an event, bounded only by `PATIENCE`. (tests/upstream.rs
//! covers GET retried and POST not resent on a stale connection.)

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use viaduct::Config;

/// A request as the origin read it.
#[derive(Debug, Clone)]
struct Req {
    /// The connection it arrived on, in the order they were accepted (0 first).
    conn: usize,
    /// Its place on that connection (0 first).
    nth: usize,
    method: String,
    target: String,
    body: Vec<u8>,
}

/// How an origin connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The origin read EOF from the proxy, or reading or writing failed.
    ByProxy,
    /// The origin closed it.
    ByOrigin,
}

/// Where an answer waits for `Scripted::release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    No,
    /// Before anything is sent: the request is in flight without a response head.
    BeforeHead,
    /// After the head and half the body.
    MidBody,
}

/// What the origin does with a connection once it has answered on it
/// (saying so or not in a header is up to the answer's fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Reads the next request.
    KeepAlive,
    /// Closes the connection.
    Close,
    /// Closes the connection once the test calls `release`.
    CloseOnRelease,
    /// Answers nothing more and never closes its end, even once the proxy has
    /// closed its own: only the proxy can end the connection.
    Linger,
}

/// What the origin does with one request.
enum Reply {
    /// `200 OK`, framed by Content-Length, with the extra header lines `fields`.
    Answer {
        fields: String,
        body: Bytes,
        hold: Hold,
        then: Then,
    },
    /// Closes the connection without answering (the request was read whole).
    HangUp,
    /// `200 OK` with a `len`-byte body (not to be stored), written as fast as
    /// the proxy reads it.
    Big { len: usize },
}

fn ok(body: &str) -> Reply {
    Reply::Answer {
        fields: String::new(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        hold: Hold::No,
        then: Then::KeepAlive,
    }
}

impl Reply {
    /// Adds a header line such as `"Cache-Control: no-store"`.
    fn field(mut self, line: &str) -> Reply {
        if let Reply::Answer { fields, .. } = &mut self {
            fields.push_str(line);
            fields.push_str("\r\n");
        }
        self
    }

    fn held(mut self, at: Hold) -> Reply {
        if let Reply::Answer { hold, .. } = &mut self {
            *hold = at;
        }
        self
    }

    fn then(mut self, next: Then) -> Reply {
        if let Reply::Answer { then, .. } = &mut self {
            *then = next;
        }
        self
    }
}

/// Everything the origin saw.
#[derive(Debug, Default)]
struct Log {
    /// One entry per accepted connection: how it ended, once it has.
    ended: Vec<Option<Ended>>,
    requests: Vec<Req>,
    /// Answers sent whole.
    answered: usize,
    /// Requests read and not yet answered whole.
    in_flight: usize,
    max_in_flight: usize,
}

impl Log {
    fn accepted(&self) -> usize {
        self.ended.len()
    }

    fn closed_by_proxy(&self) -> usize {
        self.ended
            .iter()
            .filter(|e| **e == Some(Ended::ByProxy))
            .count()
    }

    /// (connection, method, target) of every request, in arrival order.
    fn trail(&self) -> Vec<(usize, String, String)> {
        self.requests
            .iter()
            .map(|r| (r.conn, r.method.clone(), r.target.clone()))
            .collect()
    }
}

struct Shared {
    log: Mutex<Log>,
    /// Woken on every change to the log.
    changed: Notify,
    /// Permits for held answers.
    gate: Semaphore,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut Log)) {
        f(&mut self.log.lock().unwrap());
        self.changed.notify_waiters();
    }
}

type Script = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

/// An HTTP/1.1 origin on 127.0.0.1:0 that answers as `script` says.
#[derive(Clone)]
struct Scripted {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Scripted {
    async fn start(script: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            log: Mutex::new(Log::default()),
            changed: Notify::new(),
            gate: Semaphore::new(0),
        });
        let script: Script = Arc::new(script);
        let sh = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut id = 0;
                sh.update(|log| {
                    id = log.ended.len();
                    log.ended.push(None);
                });
                tokio::spawn(serve(stream, id, sh.clone(), script.clone()));
            }
        });
        Scripted { addr, shared }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Lets `n` held answers go on.
    fn release(&self, n: usize) {
        self.shared.gate.add_permits(n);
    }

    fn log<T>(&self, f: impl FnOnce(&Log) -> T) -> T {
        f(&self.shared.log.lock().unwrap())
    }

    /// Waits until `cond` holds of the log; panics naming `what` after PATIENCE.
    async fn wait(&self, what: &str, cond: impl Fn(&Log) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.log(&cond) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "the origin never saw {what}: {:?}",
                    self.shared.log.lock().unwrap()
                );
            }
        }
    }
}

/// What became of one answer.
enum Step {
    /// Sent whole; then what the answer said.
    Answered(Then),
    Ended(Ended),
}

async fn serve(stream: TcpStream, id: usize, shared: Arc<Shared>, script: Script) {
    let mut wire = Wire {
        stream,
        buf: Vec::new(),
    };
    let mut nth = 0;
    let ended = loop {
        let Some((method, target, body)) = wire.read_request().await else {
            break Ended::ByProxy;
        };
        let req = Req {
            conn: id,
            nth,
            method,
            target,
            body,
        };
        nth += 1;
        let reply = script(&req);
        shared.update(|log| {
            log.requests.push(req.clone());
            log.in_flight += 1;
            log.max_in_flight = log.max_in_flight.max(log.in_flight);
        });
        let step = wire.send(&req, reply, &shared.gate).await;
        shared.update(|log| {
            log.in_flight -= 1;
            if let Step::Answered(_) = step {
                log.answered += 1;
            }
        });
        match step {
            Step::Answered(Then::KeepAlive) => continue,
            Step::Answered(Then::Close) => break Ended::ByOrigin,
            Step::Answered(Then::CloseOnRelease) => {
                shared.gate.acquire().await.unwrap().forget();
                break Ended::ByOrigin;
            }
            Step::Answered(Then::Linger) => {
                while wire.fill().await {}
                shared.update(|log| log.ended[id] = Some(Ended::ByProxy));
                // Keeps its end open until the test's runtime goes.
                std::future::pending::<()>().await;
            }
            Step::Ended(how) => break how,
        }
    };
    drop(wire);
    shared.update(|log| log.ended[id] = Some(ended));
}

/// One origin connection: a buffered reader of requests and a writer of answers.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    /// Reads more bytes; false at EOF or on an error.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// One line, without its CRLF.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = self.take(i + 2).await?;
                return Some(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// (method, target, body) of the next request; None once the peer closed.
    async fn read_request(&mut self) -> Option<(String, String, Vec<u8>)> {
        let mut request_line = self.line().await?;
        while request_line.is_empty() {
            request_line = self.line().await?;
        }
        let mut parts = request_line.split(' ');
        let method = parts.next()?.to_string();
        let target = parts.next()?.to_string();
        let (mut length, mut chunked) = (0, false);
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':')?;
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().ok()?,
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let size = self.line().await?;
                let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    while !self.line().await?.is_empty() {}
                    break body;
                }
                body.extend(self.take(size).await?);
                self.take(2).await?;
            }
        } else {
            self.take(length).await?
        };
        Some((method, target, body))
    }

    async fn send(&mut self, req: &Req, reply: Reply, gate: &Semaphore) -> Step {
        match reply {
            Reply::HangUp => Step::Ended(Ended::ByOrigin),
            Reply::Big { len } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nCache-Control: no-store\r\n\r\n"
                );
                if self.stream.write_all(head.as_bytes()).await.is_err() {
                    return Step::Ended(Ended::ByProxy);
                }
                let chunk = pattern(64 << 10);
                let mut left = len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if self.stream.write_all(&chunk[..n]).await.is_err() {
                        return Step::Ended(Ended::ByProxy);
                    }
                    left -= n;
                }
                Step::Answered(Then::KeepAlive)
            }
            Reply::Answer {
                fields,
                body,
                hold,
                then,
            } => {
                if hold == Hold::BeforeHead {
                    gate.acquire().await.unwrap().forget();
                }
                let mut bytes = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{fields}\r\n",
                    body.len()
                )
                .into_bytes();
                let body = if req.method == "HEAD" {
                    Bytes::new()
                } else {
                    body
                };
                let split = if hold == Hold::MidBody {
                    body.len() / 2
                } else {
                    body.len()
                };
                bytes.extend_from_slice(&body[..split]);
                if self.stream.write_all(&bytes).await.is_err() {
                    return Step::Ended(Ended::ByProxy);
                }
                if hold == Hold::MidBody {
                    gate.acquire().await.unwrap().forget();
                }
                if self.stream.write_all(&body[split..]).await.is_err() {
                    return Step::Ended(Ended::ByProxy);
                }
                Step::Answered(then)
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The test configuration with these `[upstream]` lines, parsed as an
/// operator's file would be (so the duration syntax is the real one).
fn config(upstream: &str) -> Config {
    let mut config = base_config();
    config.upstream = Config::from_toml(&format!("[upstream]\n{upstream}"), "test")
        .expect("valid [upstream]")
        .upstream;
    config
}

/// A counter from the admin listener's /metrics.
async fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&scrape(admin).await, name, labels)
}

/// The proxy's upstream counters (/metrics and /stats) agree with what the
/// origins saw: one request per request the origins read, one connection per
/// connection they accepted.
async fn assert_counters_agree(admin: SocketAddr, origins: &[&Scripted]) {
    let requests: usize = origins.iter().map(|o| o.log(|l| l.requests.len())).sum();
    let connections: usize = origins.iter().map(|o| o.log(Log::accepted)).sum();
    assert_eq!(
        metric(admin, "viaduct_upstream_requests_total", &[]).await,
        requests as f64,
        "viaduct_upstream_requests_total"
    );
    assert_eq!(
        metric(admin, "viaduct_upstream_connections_total", &[]).await,
        connections as f64,
        "viaduct_upstream_connections_total"
    );
    let stats = fetch(admin, get(&format!("http://{admin}/stats"))).await;
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    assert_eq!(stats["upstream"]["connections_opened"], connections);
    assert_eq!(stats["upstream"]["requests"], requests);
}

/// Sends `req` on a new client connection and returns as soon as the response
/// head has arrived, with the connection that carries the rest of the body.
async fn head_only(
    proxy: SocketAddr,
    req: Request<Full<Bytes>>,
) -> (
    http::Response<hyper::body::Incoming>,
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .expect("a response head within patience")
        .expect("a response head");
    (resp, sender)
}

/// `n` concurrent requests to `path/0`.. that the origin holds until all of
/// them are in flight; returns once every client has its whole answer.
async fn burst(proxy: SocketAddr, origin: &Scripted, path: &str, n: usize) {
    let tasks: Vec<JoinHandle<Got>> = (0..n)
        .map(|i| {
            let url = origin.url(&format!("{path}/{i}"));
            tokio::spawn(async move { fetch(proxy, get(&url)).await })
        })
        .collect();
    origin
        .wait(&format!("{n} requests in flight"), |log| log.in_flight == n)
        .await;
    origin.release(n);
    for (i, task) in tasks.into_iter().enumerate() {
        let got = task.await.unwrap();
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), format!("{path}/{i}"));
    }
}

/// Answers `"<connection> <method> <target>"`, never stored.
fn echo(req: &Req) -> Reply {
    ok(&format!("{} {} {}", req.conn, req.method, req.target)).field("Cache-Control: no-store")
}

/// Answers its target, never stored, once `release` lets it.
fn held_echo(req: &Req) -> Reply {
    ok(&req.target)
        .field("Cache-Control: no-store")
        .held(Hold::BeforeHead)
}

#[tokio::test]
async fn sequential_requests_cached_or_not_share_one_origin_connection() {
    let origin = Scripted::start(|req| {
        let body = format!("{} {}", req.method, req.target);
        if req.target.starts_with("/cached/") {
            ok(&body).field("Cache-Control: max-age=600")
        } else {
            ok(&body).field("Cache-Control: no-store")
        }
    })
    .await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    for i in 0..4 {
        let got = client.get(&origin.url(&format!("/cached/{i}"))).await;
        assert_eq!(got.text(), format!("GET /cached/{i}"));
        let status = got.header("cache-status").unwrap();
        assert!(status.contains("miss"), "{status}");
    }
    for _ in 0..4 {
        let got = client.get(&origin.url("/pass")).await;
        assert_eq!(got.text(), "GET /pass");
    }
    for _ in 0..2 {
        let req = Request::post(origin.url("/pass"))
            .body(Full::new(Bytes::from_static(b"form")))
            .unwrap();
        assert_eq!(client.send(req).await.text(), "POST /pass");
    }
    // Another client connection: the pool is the proxy's, not the client's.
    let got = fetch(proxy.addr(), get(&origin.url("/cached/other"))).await;
    assert_eq!(got.text(), "GET /cached/other");

    origin.log(|log| {
        assert_eq!(log.requests.len(), 11);
        assert_eq!(log.accepted(), 1, "{:?}", log.trail());
        assert!(log.requests.iter().all(|r| r.conn == 0));
        assert_eq!(log.requests[10].body, b"");
        assert_eq!(log.requests[9].body, b"form");
        assert_eq!(log.ended, [None], "the pooled connection stays open");
    });
    assert_counters_agree(proxy.admin_addr(), &[&origin]).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_body_the_client_abandoned_closes_its_connection_instead_of_pooling_it() {
    let origin = Scripted::start(|req| {
        if req.target == "/big" {
            // Far more than every buffer between the origin and the client
            // holds: the body cannot have ended when the client leaves.
            Reply::Big { len: 256 << 20 }
        } else {
            echo(req)
        }
    })
    .await;
    let proxy = start_default().await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.url("/big"),
        origin.addr
    );
    client.write_all(request.as_bytes()).await.unwrap();
    // The head and the start of the body, then the client leaves.
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 16384];
        loop {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "the proxy closed before the body");
            got.extend_from_slice(&buf[..n]);
            if find(&got, b"\r\n\r\n").is_some_and(|i| got.len() > i + 4) {
                break;
            }
        }
    })
    .await
    .expect("the head and some body within patience");
    assert!(got.starts_with(b"HTTP/1.1 200"));
    drop(client);

    // The connection, with most of its body unread, is closed, not parked.
    origin
        .wait("the proxy close the abandoned connection", |log| {
            log.ended.first() == Some(&Some(Ended::ByProxy))
        })
        .await;
    let got = fetch(proxy.addr(), get(&origin.url("/after"))).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "1 GET /after");
    origin.log(|log| {
        assert_eq!(log.accepted(), 2);
        assert_eq!(log.trail()[1], (1, "GET".into(), "/after".into()));
    });
    // Had the connection been parked with its body still arriving, those
    // bytes would have been taken for a response nobody asked for (counted,
    // and the cache entries filled over it thrown away).
    assert_eq!(
        metric(
            proxy.admin_addr(),
            "viaduct_upstream_errors_total",
            &[("kind", "unsolicited")]
        )
        .await,
        0.0
    );
    assert_counters_agree(proxy.admin_addr(), &[&origin]).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn at_most_max_connections_per_host_requests_reach_an_origin_at_once() {
    let origin = Scripted::start(held_echo).await;
    let other = Scripted::start(echo).await;
    let proxy = start(config("max_connections_per_host = 2\n")).await;
    let addr = proxy.addr();
    let tasks: Vec<JoinHandle<Got>> = (0..5)
        .map(|i| {
            let url = origin.url(&format!("/cap/{i}"));
            tokio::spawn(async move { fetch(addr, get(&url)).await })
        })
        .collect();
    origin
        .wait("two held requests", |log| log.in_flight >= 2)
        .await;

    // The cap is per origin: another one is served while this one is full.
    let got = fetch(addr, get(&other.url("/free"))).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "0 GET /free");

    // One answer at a time; each frees a connection for a waiting request.
    for answered in 1..=5 {
        origin.release(1);
        origin
            .wait(&format!("{answered} answers"), |log| {
                log.answered >= answered
            })
            .await;
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let got = task.await.unwrap();
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), format!("/cap/{i}"));
    }
    origin.log(|log| {
        assert_eq!(log.requests.len(), 5);
        assert_eq!(log.max_in_flight, 2, "{:?}", log.trail());
        assert_eq!(log.accepted(), 2);
    });
    assert_counters_agree(proxy.admin_addr(), &[&origin, &other]).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_that_gets_no_slot_in_time_is_504_and_never_reaches_the_origin() {
    let body = "x".repeat(1000);
    let origin = Scripted::start(move |req| {
        let reply = ok(&body).field("Cache-Control: no-store");
        if req.target.starts_with("/busy/") {
            reply.held(Hold::MidBody)
        } else {
            reply
        }
    })
    .await;
    let proxy = start(config(
        "max_connections_per_host = 2\nresponse_header_timeout = \"1s\"\n",
    ))
    .await;
    let addr = proxy.addr();
    // Two responses whose heads reached their clients (so the header timeout
    // is behind them) and whose bodies are held: both connections stay busy
    // for as long as the test likes.
    let mut busy = Vec::new();
    for i in 0..2 {
        let (resp, sender) = head_only(addr, get(&origin.url(&format!("/busy/{i}")))).await;
        assert_eq!(resp.status(), StatusCode::OK);
        busy.push(tokio::spawn(async move {
            let _connection = sender;
            resp.into_body().collect().await.unwrap().to_bytes()
        }));
    }
    assert_eq!(origin.log(|log| log.in_flight), 2);

    let got = fetch(addr, get(&origin.url("/late"))).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    let text = got.text();
    assert!(
        text.starts_with(&format!("upstream {} sent no response within", origin.addr)),
        "{text}"
    );
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "not one line: {text:?}"
    );
    origin.log(|log| {
        assert_eq!(log.requests.len(), 2, "{:?}", log.trail());
        assert_eq!(log.accepted(), 2);
    });

    origin.release(2);
    for task in busy {
        assert_eq!(task.await.unwrap().len(), 1000);
    }
    // The slots came back with the connections.
    let got = fetch(addr, get(&origin.url("/late"))).await;
    assert_eq!(got.status, StatusCode::OK);
    origin.log(|log| assert_eq!(log.accepted(), 2));
    assert_counters_agree(proxy.admin_addr(), &[&origin]).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn max_idle_per_host_one_keeps_one_connection_of_a_burst() {
    let origin = Scripted::start(held_echo).await;
    let proxy = start(config("max_idle_per_host = 1\n")).await;
    burst(proxy.addr(), &origin, "/first", 3).await;
    origin
        .wait(
            "the proxy close the two connections it cannot keep",
            |log| log.closed_by_proxy() == 2,
        )
        .await;
    assert_eq!(origin.log(Log::accepted), 3);

    burst(proxy.addr(), &origin, "/second", 3).await;
    origin.log(|log| {
        assert_eq!(log.accepted(), 5, "{:?}", log.trail());
        let reused = log.requests[3..].iter().filter(|r| r.conn < 3).count();
        assert_eq!(reused, 1, "{:?}", log.trail());
    });
    origin
        .wait("the proxy close two more", |log| log.closed_by_proxy() == 4)
        .await;
    assert_counters_agree(proxy.admin_addr(), &[&origin]).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn max_idle_per_host_zero_pools_nothing() {
    let origin = Scripted::start(echo).await;
    let proxy = start(config("max_idle_per_host = 0\n")).await;
    let mut client = Client::connect(proxy.addr()).await;
    for i in 0..3 {
        let got = client.get(&origin.url(&format!("/nopool/{i}"))).await;
        assert_eq!(got.text(), format!("{i} GET /nopool/{i}"));
    }
    origin
        .wait("the proxy close every connection", |log| {
            log.closed_by_proxy() == 3
        })
        .await;
    assert_eq!(origin.log(Log::accepted), 3);
    assert_counters_agree(proxy.admin_addr(), &[&origin]).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_idle_past_idle_timeout_is_closed_by_the_proxy() {
    let origin = Scripted::start(echo).await;
    let proxy = start(config("idle_timeout = \"200ms\"\n")).await;
    let got = fetch(proxy.addr(), get(&origin.url("/idle/1"))).await;
    assert_eq!(got.text(), "0 GET /idle/1");
    // Nobody asks for anything: the proxy closes the idle connection itself.
    origin
        .wait("the proxy close the idle connection", |log| {
            log.ended == [Some(Ended::ByProxy)]
        })
        .await;
    let got = fetch(proxy.addr(), get(&origin.url("/idle/2"))).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "1 GET /idle/2");
    // Counters agreeing with the origin also says no attempt was wasted on
    // the closed connection.
    assert_counters_agree(proxy.admin_addr(), &[&origin]).await;
    proxy.shutdown().await;
}

/// Sends the request `req` builds through a proxy started with `config`, on
/// a pooled connection that the origin drops as the request arrives: its
/// connection 0 answers a first GET, then reads the next request whole and
/// closes without answering. Later connections answer with `echo`.
async fn on_a_stale_connection(
    config: Config,
    req: impl FnOnce(&Scripted) -> Request<Full<Bytes>>,
) -> (Got, Scripted, viaduct::Running) {
    let origin = Scripted::start(|req| {
        if req.conn == 0 && req.nth == 1 {
            Reply::HangUp
        } else {
            echo(req)
        }
    })
    .await;
    let proxy = start(config).await;
    let mut client = Client::connect(proxy.addr()).await;
    assert_eq!(client.get(&origin.url("/warm")).await.text(), "0 GET /warm");
    let got = client.send(req(&origin)).await;
    (got, origin, proxy)
}

/// The origin saw `method target` on the stale connection, then once more on
/// a fresh one, and nothing else after the warm-up.
fn assert_resent_once(origin: &Scripted, method: &str, target: &str) {
    let seen = |conn| (conn, method.to_string(), target.to_string());
    let expected = [
        (0, "GET".to_string(), "/warm".to_string()),
        seen(0),
        seen(1),
    ];
    origin.log(|log| assert_eq!(log.trail(), expected));
}

#[tokio::test]
async fn head_on_a_stale_pooled_connection_is_retried_on_a_fresh_one() {
    let (got, origin, proxy) = on_a_stale_connection(base_config(), |o| {
        Request::head(o.url("/head"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-length"), Some("12")); // "1 HEAD /head"
    assert_resent_once(&origin, "HEAD", "/head");
    assert_counters_agree(proxy.admin_addr(), &[&origin]).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn put_without_a_body_on_a_stale_pooled_connection_is_retried() {
    let (got, origin, proxy) = on_a_stale_connection(base_config(), |o| {
        Request::put(o.url("/flag"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "1 PUT /flag");
    assert_resent_once(&origin, "PUT", "/flag");
    origin.log(|log| assert!(log.requests.iter().all(|r| r.body.is_empty())));
    assert_counters_agree(proxy.admin_addr(), &[&origin]).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn put_with_a_body_on_a_stale_pooled_connection_is_not_resent() {
    // PUT is idempotent, but its body streamed through and is gone: it cannot
    // be replayed, so the client hears of the failure instead. (The timeout
    // bounds how long a wrongly resent PUT could keep the client waiting.)
    let config = config("response_header_timeout = \"5s\"\n");
    let (got, origin, proxy) = on_a_stale_connection(config, |o| {
        Request::put(o.url("/doc"))
            .body(Full::new(Bytes::from_static(b"new contents")))
            .unwrap()
    })
    .await;
    origin.log(|log| {
        let puts: Vec<&Req> = log.requests.iter().filter(|r| r.method == "PUT").collect();
        assert_eq!(puts.len(), 1, "the PUT was sent again: {:?}", log.trail());
        assert_eq!(puts[0].body, b"new contents");
        assert_eq!(log.accepted(), 1);
    });
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(
        got.text().contains("closed the connection"),
        "{}",
        got.text()
    );
    assert_counters_agree(proxy.admin_addr(), &[&origin]).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_the_origin_closed_unannounced_is_not_used_even_for_a_post() {
    let origin = Scripted::start(|req| echo(req).then(Then::CloseOnRelease)).await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    assert_eq!(
        client.get(&origin.url("/first")).await.text(),
        "0 GET /first"
    );
    // The connection went back to the pool alive; now, while it sits idle
    // there, the origin closes it without having said anything.
    origin.release(1);
    origin
        .wait("its own close", |log| log.ended == [Some(Ended::ByOrigin)])
        .await;
    // A POST cannot be retried, so it must not be written on the dead
    // connection in the first place.
    let req = Request::post(origin.url("/order"))
        .body(Full::new(Bytes::from_static(b"one")))
        .unwrap();
    let got = client.send(req).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "1 POST /order");
    origin.log(|log| {
        assert_eq!(
            log.trail(),
            [
                (0, "GET".into(), "/first".into()),
                (1, "POST".into(), "/order".into()),
            ]
        );
    });
    assert_counters_agree(proxy.admin_addr(), &[&origin]).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_response_with_connection_close_is_never_followed_on_its_connection() {
    let origin = Scripted::start(|req| {
        let reply = echo(req).field("Connection: close");
        if req.target.starts_with("/linger/") {
            // Says close, but leaves it to the proxy.
            reply.then(Then::Linger)
        } else {
            reply.then(Then::Close)
        }
    })
    .await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    for i in 0..3 {
        let got = client.get(&origin.url(&format!("/close/{i}"))).await;
        assert_eq!(got.text(), format!("{i} GET /close/{i}"));
    }
    origin.log(|log| {
        assert_eq!(log.accepted(), 3);
        assert!(log.requests.iter().all(|r| r.nth == 0), "{:?}", log.trail());
    });

    let got = client.get(&origin.url("/linger/0")).await;
    assert_eq!(got.text(), "3 GET /linger/0");
    // The proxy closes the connection the origin asked it to give up.
    origin
        .wait(
            "the proxy close the connection after Connection: close",
            |log| log.ended[3] == Some(Ended::ByProxy),
        )
        .await;
    let got = client.get(&origin.url("/linger/1")).await;
    assert_eq!(got.text(), "4 GET /linger/1");
    // No request was tried (and failed) on a closed connection.
    assert_counters_agree(proxy.admin_addr(), &[&origin]).await;
    proxy.shutdown().await;
}
