//! Test support: an in-process origin that counts what it receives, the proxy
//! started through the library on port 0, and real clients (hyper, raw TCP).
#![allow(dead_code)]

pub mod config_file;
pub mod pki;
pub mod redis;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use viaduct::config::RouteConfig;
use viaduct::{Config, Proxy, Running};

/// Generous bound so a broken test fails instead of hanging; never asserted on.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A request as the origin received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// The request-target exactly as it arrived (origin-form expected).
    pub target: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct OriginState {
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

type Handler = Arc<dyn Fn(&Seen) -> Response<TestBody> + Send + Sync>;
type Delay = Arc<dyn Fn(&Seen) -> Duration + Send + Sync>;

/// An HTTP/1.1 origin on 127.0.0.1:0 that records every request and connection.
#[derive(Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<OriginState>,
}

impl Origin {
    /// An origin whose responses `handler` builds from the received request.
    pub async fn start(
        handler: impl Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static,
    ) -> Origin {
        Origin::start_delayed(handler, |_| Duration::ZERO).await
    }

    /// Like `start`, but each answer waits `delay(request)` first (a slow origin).
    pub async fn start_delayed(
        handler: impl Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static,
        delay: impl Fn(&Seen) -> Duration + Send + Sync + 'static,
    ) -> Origin {
        let delay: Delay = Arc::new(delay);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState::default());
        let handler: Handler = Arc::new(handler);
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                let handler = handler.clone();
                let delay = delay.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        let handler = handler.clone();
                        let delay = delay.clone();
                        async move {
                            let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            st.max_in_flight.fetch_max(now, Ordering::SeqCst);
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method,
                                target: parts.uri.to_string(),
                                version: parts.version,
                                headers: parts.headers,
                                body,
                            };
                            st.seen.lock().unwrap().push(seen.clone());
                            tokio::time::sleep(delay(&seen)).await;
                            let resp = handler(&seen);
                            st.in_flight.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { addr, state }
    }

    /// An origin answering every request with 200 and `body`.
    pub async fn fixed(body: &'static str) -> Origin {
        Origin::start(move |_| text(StatusCode::OK, body)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Requests received whose target path starts with `path`.
    pub fn count(&self, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.target.starts_with(path))
            .count()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the origin received a request")
    }

    /// The most requests this origin was handling at once.
    pub fn max_concurrency(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

pub fn text(status: StatusCode, body: &'static str) -> Response<TestBody> {
    let mut resp = Response::new(TestBody::full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp
}

/// A response body: whole (with a length) or as chunks of unknown total length
/// (sent chunked on HTTP/1.1).
pub struct TestBody {
    chunks: VecDeque<Bytes>,
    known_length: bool,
}

impl TestBody {
    pub fn full(bytes: Bytes) -> TestBody {
        TestBody {
            chunks: VecDeque::from([bytes]),
            known_length: true,
        }
    }

    pub fn chunked(chunks: Vec<Bytes>) -> TestBody {
        TestBody {
            chunks: chunks.into(),
            known_length: false,
        }
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.get_mut()
                .chunks
                .pop_front()
                .map(|b| Ok(Frame::data(b))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.known_length && self.chunks.iter().all(|c| c.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        if self.known_length {
            SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
        } else {
            SizeHint::default()
        }
    }
}

/// The configuration tests start from: port 0, no access log, and
/// `[forward] allow_loopback = true`, because the test origins listen on
/// 127.0.0.1 by design. The shipped default is `false`; tests/security_forward.rs
/// sets it back to `false` explicitly wherever the default is what it proves.
pub fn base_config() -> Config {
    let mut config = Config::from_toml(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n",
        "test",
    )
    .unwrap();
    config.server.shutdown_timeout = viaduct::config::Dur(Duration::from_secs(5));
    config.forward.allow_loopback = true;
    config
}

pub fn route(host: &str, prefix: &str, upstream: SocketAddr) -> RouteConfig {
    route_toml(&format!(
        "host = \"{host}\"\npath_prefix = \"{prefix}\"\nupstream = \"http://{upstream}\"\n"
    ))
}

pub fn route_toml(body: &str) -> RouteConfig {
    let config = Config::from_toml(&format!("[[route]]\n{body}"), "test-route").unwrap();
    config.routes.into_iter().next().unwrap()
}

pub async fn start(config: Config) -> Running {
    Proxy::start(config).await.expect("proxy starts")
}

pub async fn start_default() -> Running {
    start(base_config()).await
}

/// A response as a client received it.
pub struct Got {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// One HTTP/1.1 client connection to the proxy (requests may use absolute URIs).
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::over(TcpStream::connect(addr).await.unwrap()).await
    }

    /// A client on a connection the test opened itself (from a chosen
    /// source address, say).
    pub async fn over(stream: TcpStream) -> Client {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { sender }
    }

    /// Sends `req` as real clients do: with a Host line (RFC 9112 §3.2
    /// requires one in every HTTP/1.1 request) naming the URI's authority
    /// when the request has none.
    pub async fn send(&mut self, mut req: Request<Full<Bytes>>) -> Got {
        if !req.headers().contains_key(http::header::HOST) && req.version() != http::Version::HTTP_2
        {
            if let Some(authority) = req.uri().authority() {
                let host = http::HeaderValue::from_str(authority.as_str()).unwrap();
                req.headers_mut().insert(http::header::HOST, host);
            }
        }
        tokio::time::timeout(PATIENCE, async {
            self.sender.ready().await.expect("connection usable");
            let resp = self.sender.send_request(req).await.expect("response");
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.expect("whole body").to_bytes();
            Got {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body,
            }
        })
        .await
        .expect("response within patience")
    }

    pub async fn get(&mut self, uri: &str) -> Got {
        self.send(get(uri)).await
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// A GET; an absolute URI gets the Host line real clients send with it.
pub fn get(uri: &str) -> Request<Full<Bytes>> {
    let mut req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    if let Some(authority) = req.uri().authority() {
        let host = http::HeaderValue::from_str(authority.as_str()).unwrap();
        req.headers_mut().insert(http::header::HOST, host);
    }
    req
}

/// A GET for `path` on `site.test`, the host the cache tests route.
pub fn at(path: &str) -> Request<Full<Bytes>> {
    let mut req = get(path);
    req.headers_mut()
        .insert("host", "site.test".parse().unwrap());
    req
}

/// `req` with the field `name: value`.
pub fn with(mut req: Request<Full<Bytes>>, name: &str, value: &str) -> Request<Full<Bytes>> {
    req.headers_mut().insert(
        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        value.parse().unwrap(),
    );
    req
}

/// Reads a request head from a raw connection, byte by byte (nothing of
/// what follows it); `None` when the peer closes first.
pub async fn read_request_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}

/// A query value percent-encoded (all but letters, digits and `-._~`), as
/// the admin API's callers send URLs and tags.
pub fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A request to an admin listener: `Accept: application/json` and, when
/// given, `Authorization: Bearer <token>`.
pub fn admin_request(
    method: &str,
    admin: SocketAddr,
    path_and_query: &str,
    token: Option<&str>,
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path_and_query}"))
        .header("host", admin.to_string())
        .header("accept", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.body(Full::new(Bytes::new())).unwrap()
}

/// One request on a fresh connection.
pub async fn fetch(proxy: SocketAddr, req: Request<Full<Bytes>>) -> Got {
    Client::connect(proxy).await.send(req).await
}

/// Writes `bytes`, then reads until the server closes the connection.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_to_close(&mut stream).await
}

/// Reads until EOF (or a reset), bounded by PATIENCE.
pub async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 16384];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one response (head + Content-Length body) without waiting for close.
pub async fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut byte = [0u8; 1];
        while !out.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            out.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&out).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().unwrap())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.unwrap();
        out.extend_from_slice(&body);
    })
    .await
    .expect("a response within patience");
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the peer closed the connection (EOF or reset) within PATIENCE.
pub async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    matches!(
        tokio::time::timeout(PATIENCE, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await,
        Ok(true)
    )
}

/// The admin listener's /metrics, parsed.
pub async fn scrape(admin: SocketAddr) -> prometheus_parse::Scrape {
    let got = fetch(admin, get(&format!("http://{admin}/metrics"))).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got
        .header("content-type")
        .unwrap()
        .contains("openmetrics-text"));
    let lines = got
        .text()
        .lines()
        .map(|l| Ok(l.to_string()))
        .collect::<Vec<_>>();
    prometheus_parse::Scrape::parse(lines.into_iter()).expect("valid exposition")
}

/// The value of the sample named `name` whose labels include `labels`.
pub fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{name} is {other:?}"),
        })
        .sum()
}

/// A deterministic body of `len` bytes.
pub fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A future that never completes, for holding a response open.
pub fn pending<T>() -> impl Future<Output = T> {
    std::future::pending()
}

/// A loopback address that refuses connections for as long as the returned
/// socket lives: bound but not listening, so no other test can take the port
/// meanwhile (a listener bound and dropped frees it for anyone).
pub fn refusing_port() -> (socket2::Socket, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}

/// Starts the viaduct binary with `config` (RUST_LOG=info) and returns it
/// with the address from the first log line that contains `marker`
/// (e.g. "viaduct listening"); the rest of its log is read and dropped.
pub async fn run_binary(
    config: &std::path::Path,
    marker: &'static str,
) -> (std::process::Child, SocketAddr) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_viaduct"))
        .arg("-c")
        .arg(config)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let addr = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no log line with {marker:?}"));
        std::thread::spawn(move || lines.for_each(drop));
        let addr = line.split("addr=").nth(1).unwrap();
        addr.split_whitespace().next().unwrap().parse().unwrap()
    })
    .await
    .unwrap();
    (child, addr)
}
