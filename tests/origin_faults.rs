//! Origins that fail in the middle of an exchange, as a table: each fault is
//! played once by a scripted origin (a raw socket server, so it can send what
//! no HTTP library would), then the origin answers correctly. Every fault runs
//! through a reverse route and through the forward proxy.
//!
//! For every fault the client gets either a clear 5xx with a one-line reason,
//! or a clean truncation signal (a body that breaks off and a connection that
//! closes, or a connection closed without an answer), or, where the origin's
//! answer was in fact whole and correct, that answer. The next request for
//! the same URL is never served anything damaged from the cache, and a
//! request for another URL behind it gets its own answer.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use viaduct::config::Dur;

/// `connect_timeout`, `response_header_timeout` and `body_idle_timeout` for
/// every proxy here: short, so the silent faults end fast (never asserted on).
const TIMEOUT: Duration = Duration::from_millis(300);
/// The size of a correct answer's body.
const LEN: usize = 1000;
/// How much of the body a fault sends before it strikes.
const HALF: usize = LEN / 2;
/// A pause that lets the proxy read (and pass on) what was sent before the
/// fault strikes, so the fault lands in the body rather than before the head.
const SETTLE: Duration = Duration::from_millis(50);

/// What the scripted origin does after reading one request head.
enum Act {
    Write(Vec<u8>),
    Sleep(Duration),
    /// Writes one byte at a time, pausing this long after each.
    Trickle(Vec<u8>, Duration),
    /// Closes with a TCP reset (SO_LINGER 0).
    Reset,
    /// Closes with a FIN.
    Close,
    /// Answers nothing more, and keeps the connection open until the proxy
    /// closes it.
    Stall,
}

/// How the proxy is asked.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `route("*", "/", origin)`, origin-form request with a Host line.
    Reverse,
    /// An absolute-form request naming the origin.
    Forward,
}

/// The faults, each played on the first request for a URL.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// A Content-Length body reset (RST) after half of it.
    ResetMidBody,
    /// A Content-Length body closed (FIN) after half of it.
    CloseMidBody,
    /// A chunked body closed after a whole chunk, before the last chunk.
    ChunkedClosedBeforeLastChunk,
    /// A chunked body closed in the middle of a chunk's data.
    ChunkedClosedMidChunk,
    /// A chunked body whose second chunk size is not hexadecimal.
    ChunkedMalformedSize,
    /// A body with neither Content-Length nor chunked framing (delimited by
    /// the close, RFC 9112 §6.3) reset after some of it: a close would end
    /// it, a reset cannot.
    UnframedBodyReset,
    /// Garbage right behind a complete Content-Length body, connection kept.
    ExtraBytesAfterBody,
    /// The same, on the one retry as well.
    ExtraBytesAfterBodyTwice,
    /// A whole extra response right behind a complete one, connection kept.
    ExtraResponseAfterBody,
    /// `HTTP/1.1 abc OK`.
    StatusCodeNotANumber,
    /// `HTTX/1.1 200 OK`.
    WrongProtocolName,
    /// Binary garbage where the status line belongs.
    GarbageInsteadOfHead,
    /// 100 Continue and 103 Early Hints before the final 200.
    InformationalFirst,
    /// The connection is reset after the request, before any answer: the
    /// request never got a response head, so it is tried once more.
    ResetBeforeHead,
    /// The same, on the one retry as well.
    ResetBeforeHeadTwice,
    /// The connection is accepted, the request read, and nothing answered.
    NeverAnswers,
    /// One byte every 50 ms: slow, but never idle for `TIMEOUT`.
    SlowButSteady,
    /// Half the body, then silence for longer than `TIMEOUT`.
    StallsMidBody,
}

/// What the first client must see.
enum Expect {
    /// A 5xx the proxy answers itself, with a one-line reason containing this.
    Error(StatusCode, &'static str),
    /// The response breaks off: a body that ends in an error on a connection
    /// that closes, or a connection closed without an answer.
    Cut,
    /// The whole, correct response, for which the origin got this many requests.
    Whole { requests: usize },
    /// Whole and correct, or cut. Once surplus bytes follow a response on
    /// the wire, which request they answer cannot be known (RFC 9112 §9.3
    /// pairs responses with requests by order alone), so the proxy may
    /// refuse the response it got with them.
    WholeOrCut,
}

impl Fault {
    fn len(self) -> usize {
        match self {
            // Kept short: one byte per 50 ms.
            Fault::SlowButSteady => 16,
            _ => LEN,
        }
    }

    /// How many requests for a URL get the fault before the origin behaves.
    /// Also how many the origin gets for a first client request that fails:
    /// a GET whose answer is refused before its head is handed on is tried
    /// once more, on a new connection; nothing else is sent again.
    fn faulty_answers(self) -> usize {
        match self {
            Fault::ExtraBytesAfterBodyTwice | Fault::ResetBeforeHeadTwice => 2,
            _ => 1,
        }
    }

    fn expect(self) -> Expect {
        match self {
            Fault::ResetMidBody
            | Fault::CloseMidBody
            | Fault::ChunkedClosedBeforeLastChunk
            | Fault::ChunkedClosedMidChunk
            | Fault::ChunkedMalformedSize
            | Fault::UnframedBodyReset
            | Fault::StallsMidBody => Expect::Cut,
            Fault::ExtraBytesAfterBody | Fault::ExtraResponseAfterBody => Expect::WholeOrCut,
            Fault::ExtraBytesAfterBodyTwice => Expect::Error(
                StatusCode::BAD_GATEWAY,
                "a response nobody asked for arrived on the connection",
            ),
            Fault::ResetBeforeHeadTwice => Expect::Error(
                StatusCode::BAD_GATEWAY,
                "closed the connection without a response",
            ),
            Fault::StatusCodeNotANumber
            | Fault::WrongProtocolName
            | Fault::GarbageInsteadOfHead => {
                Expect::Error(StatusCode::BAD_GATEWAY, "sent an invalid response")
            }
            Fault::NeverAnswers => {
                Expect::Error(StatusCode::GATEWAY_TIMEOUT, "sent no response within")
            }
            Fault::InformationalFirst | Fault::SlowButSteady => Expect::Whole { requests: 1 },
            Fault::ResetBeforeHead => Expect::Whole { requests: 2 },
        }
    }

    /// The `viaduct_upstream_errors_total` kind the fault must be counted
    /// under, where one is certain.
    fn counted_as(self) -> Option<&'static str> {
        match self {
            Fault::StatusCodeNotANumber
            | Fault::WrongProtocolName
            | Fault::GarbageInsteadOfHead => Some("invalid-response"),
            Fault::NeverAnswers => Some("timeout"),
            Fault::StallsMidBody => Some("body-timeout"),
            _ => None,
        }
    }

    /// What the origin does for the first request for `path`.
    fn acts(self, path: &str) -> Vec<Act> {
        let len = self.len();
        let body = body_of(path, len);
        let head = |extra: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n{extra}\
                 Content-Length: {len}\r\n\r\n"
            )
            .into_bytes()
        };
        let chunked_head =
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        let chunk = |data: &[u8]| {
            let mut out = format!("{:x}\r\n", data.len()).into_bytes();
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
            out
        };
        match self {
            Fault::ResetMidBody => vec![
                Act::Write(cat(&head(""), &body[..HALF])),
                Act::Sleep(SETTLE),
                Act::Reset,
            ],
            Fault::CloseMidBody => vec![
                Act::Write(cat(&head(""), &body[..HALF])),
                Act::Sleep(SETTLE),
                Act::Close,
            ],
            Fault::ChunkedClosedBeforeLastChunk => vec![
                Act::Write(cat(&chunked_head, &chunk(&body[..HALF]))),
                Act::Sleep(SETTLE),
                Act::Close,
            ],
            Fault::ChunkedClosedMidChunk => vec![
                Act::Write(
                    [
                        &chunked_head[..],
                        format!("{LEN:x}\r\n").as_bytes(),
                        &body[..HALF],
                    ]
                    .concat(),
                ),
                Act::Sleep(SETTLE),
                Act::Close,
            ],
            Fault::UnframedBodyReset => vec![
                Act::Write(cat(
                    b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n\r\n",
                    &body[..HALF],
                )),
                Act::Sleep(SETTLE),
                Act::Reset,
            ],
            Fault::ChunkedMalformedSize => vec![
                Act::Write(cat(&chunked_head, &chunk(&body[..HALF]))),
                Act::Sleep(SETTLE),
                Act::Write(cat(b"zz\r\n", &body[HALF..])),
                Act::Stall,
            ],
            Fault::ExtraBytesAfterBody | Fault::ExtraBytesAfterBodyTwice => vec![Act::Write(
                [
                    &head("")[..],
                    &body,
                    b"GARBAGE \x00\xff nobody asked for\r\n\r\n",
                ]
                .concat(),
            )],
            Fault::ExtraResponseAfterBody => vec![Act::Write(
                [
                    &head("")[..],
                    &body,
                    b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n\
                      Content-Length: 6\r\n\r\nPOISON",
                ]
                .concat(),
            )],
            Fault::StatusCodeNotANumber => vec![
                Act::Write(cat(
                    b"HTTP/1.1 abc OK\r\nCache-Control: max-age=600\r\n\
                      Content-Length: 1000\r\n\r\n",
                    &body,
                )),
                Act::Stall,
            ],
            Fault::WrongProtocolName => vec![
                Act::Write(cat(
                    b"HTTX/1.1 200 OK\r\nCache-Control: max-age=600\r\n\
                      Content-Length: 1000\r\n\r\n",
                    &body,
                )),
                Act::Stall,
            ],
            Fault::GarbageInsteadOfHead => vec![
                Act::Write(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\xff\xfe\r\n\r\n".to_vec()),
                Act::Stall,
            ],
            Fault::InformationalFirst => vec![
                Act::Write(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
                Act::Sleep(Duration::from_millis(10)),
                Act::Write(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n".to_vec(),
                ),
                Act::Sleep(Duration::from_millis(10)),
                Act::Write(cat(&head("Link: </style.css>; rel=preload\r\n"), &body)),
            ],
            Fault::ResetBeforeHead | Fault::ResetBeforeHeadTwice => vec![Act::Reset],
            Fault::NeverAnswers => vec![Act::Stall],
            Fault::SlowButSteady => vec![
                Act::Write(head("")),
                Act::Trickle(body, Duration::from_millis(50)),
            ],
            Fault::StallsMidBody => vec![
                Act::Write(cat(&head(""), &body[..HALF])),
                // Silent for the whole idle timeout and then some.
                Act::Stall,
            ],
        }
    }
}

fn cat(a: &[u8], b: &[u8]) -> Vec<u8> {
    [a, b].concat()
}

/// The body the origin serves for `path`: the path repeated, so a body that
/// belongs to another URL, or only part of one, shows.
fn body_of(path: &str, len: usize) -> Vec<u8> {
    format!("{path};")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

/// The correct answer for `path`.
fn good(path: &str, len: usize) -> Vec<u8> {
    let head =
        format!("HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: {len}\r\n\r\n");
    cat(head.as_bytes(), &body_of(path, len))
}

/// An origin on 127.0.0.1:0 that plays `fault` on the first request for each
/// path (except paths ending in `/next`) and answers every other request
/// correctly, on connections kept alive.
struct ScriptedOrigin {
    addr: SocketAddr,
    /// Requests received, per path.
    requests: Arc<Mutex<HashMap<String, usize>>>,
}

impl ScriptedOrigin {
    async fn start(fault: Fault) -> ScriptedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(HashMap::new()));
        let counts = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, fault, counts.clone()));
            }
        });
        ScriptedOrigin { addr, requests }
    }

    fn count(&self, path: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

async fn serve(mut stream: TcpStream, fault: Fault, counts: Arc<Mutex<HashMap<String, usize>>>) {
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
        // GETs only: no request body follows the head.
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let nth = {
            let mut counts = counts.lock().unwrap();
            let n = counts.entry(path.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        let acts = if nth < fault.faulty_answers() && !path.ends_with("/next") {
            fault.acts(&path)
        } else {
            vec![Act::Write(good(&path, fault.len()))]
        };
        for act in acts {
            match act {
                Act::Write(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Act::Sleep(d) => tokio::time::sleep(d).await,
                Act::Trickle(bytes, pause) => {
                    for byte in bytes {
                        if stream.write_all(&[byte]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(pause).await;
                    }
                }
                Act::Reset => {
                    socket2::SockRef::from(&stream)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                    return;
                }
                Act::Close => return,
                Act::Stall => {
                    while let Ok(n) = stream.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                    }
                    return;
                }
            }
        }
    }
}

/// What one client saw.
#[derive(Debug)]
enum Outcome {
    /// A response whose framing completed.
    Whole {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        /// 1xx responses relayed before it.
        informational: Vec<u16>,
    },
    /// A response head, then a body that ended in an error.
    Cut {
        status: StatusCode,
        /// Its Cache-Status: written with the head, before the body broke.
        cache_status: String,
        received: usize,
        error: String,
        /// The proxy closed the connection afterwards.
        closed: bool,
    },
    /// The connection closed before a response head.
    NoAnswer { incomplete: bool, error: String },
}

impl Outcome {
    /// One line, for the test's output.
    fn summary(&self) -> String {
        match self {
            Outcome::Whole {
                status,
                headers,
                body,
                informational,
            } => format!(
                "{status}, {} body bytes, 1xx relayed {informational:?}, cache-status {:?}: {:?}",
                body.len(),
                cache_status(headers),
                String::from_utf8_lossy(&body[..body.len().min(120)])
            ),
            Outcome::Cut {
                status,
                cache_status,
                received,
                error,
                closed,
            } => format!(
                "{status} cut after {received} body bytes ({error}), connection closed: \
                 {closed}, cache-status {cache_status:?}"
            ),
            Outcome::NoAnswer { incomplete, error } => {
                format!("no answer, incomplete message: {incomplete} ({error})")
            }
        }
    }
}

/// One GET for `path` on a fresh connection to the proxy.
async fn ask(proxy: SocketAddr, mode: Mode, origin: SocketAddr, path: &str) -> Outcome {
    let mut req = match mode {
        Mode::Reverse => Request::get(path)
            .header("host", "site.test")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        Mode::Forward => get(&format!("http://{origin}{path}")),
    };
    let informational = Arc::new(Mutex::new(Vec::new()));
    let seen = informational.clone();
    hyper::ext::on_informational(&mut req, move |res| {
        seen.lock().unwrap().push(res.status().as_u16());
    });
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    tokio::time::timeout(PATIENCE * 2, async move {
        let resp = match sender.send_request(req).await {
            Ok(resp) => resp,
            Err(e) => {
                return Outcome::NoAnswer {
                    incomplete: e.is_incomplete_message(),
                    error: e.to_string(),
                }
            }
        };
        let (parts, mut body) = resp.into_parts();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        got.extend_from_slice(&data);
                    }
                }
                Err(e) => {
                    // The sender stays alive: only the proxy may close.
                    let closed = tokio::time::timeout(Duration::from_secs(5), conn)
                        .await
                        .is_ok();
                    drop(sender);
                    return Outcome::Cut {
                        status: parts.status,
                        cache_status: cache_status(&parts.headers).to_string(),
                        received: got.len(),
                        error: e.to_string(),
                        closed,
                    };
                }
            }
        }
        let informational = informational.lock().unwrap().clone();
        Outcome::Whole {
            status: parts.status,
            headers: parts.headers,
            body: got.into(),
            informational,
        }
    })
    .await
    .expect("the proxy answered or closed in time")
}

fn cache_status(headers: &HeaderMap) -> &str {
    headers
        .get("cache-status")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

/// Asserts `outcome` is the correct answer for `path`; returns its Cache-Status.
fn assert_correct(outcome: &Outcome, path: &str, len: usize, what: &str) -> String {
    let Outcome::Whole {
        status,
        headers,
        body,
        ..
    } = outcome
    else {
        panic!("{what}: not a whole response: {outcome:?}");
    };
    assert_eq!(*status, StatusCode::OK, "{what}: {outcome:?}");
    assert_eq!(
        String::from_utf8_lossy(body),
        String::from_utf8_lossy(&body_of(path, len)),
        "{what}: {outcome:?}"
    );
    cache_status(headers).to_string()
}

async fn run(fault: Fault, mode: Mode) {
    let origin = ScriptedOrigin::start(fault).await;
    let mut config = base_config();
    config.upstream.connect_timeout = Dur(TIMEOUT);
    config.upstream.response_header_timeout = Dur(TIMEOUT);
    config.upstream.body_idle_timeout = Dur(TIMEOUT);
    config.routes.push(route("*", "/", origin.addr));
    let proxy = start(config).await;
    let path = format!("/{fault:?}/{mode:?}");
    let len = fault.len();
    let case = format!("{fault:?} through {mode:?}");

    // The fault.
    let first = ask(proxy.addr(), mode, origin.addr, &path).await;
    eprintln!(
        "{case}: first: {}; origin requests {}",
        first.summary(),
        origin.count(&path)
    );
    let whole = match (fault.expect(), &first) {
        (
            Expect::Error(want, reason),
            Outcome::Whole {
                status,
                headers,
                body,
                ..
            },
        ) => {
            assert_eq!(*status, want, "{case}: {first:?}");
            let text = String::from_utf8_lossy(body);
            assert!(text.contains(reason), "{case}: {text:?}");
            assert!(
                text.ends_with('\n') && text.trim_end().lines().count() == 1,
                "{case}: one line: {text:?}"
            );
            assert_eq!(
                headers.get("content-type").unwrap(),
                "text/plain; charset=utf-8",
                "{case}"
            );
            assert_eq!(origin.count(&path), fault.faulty_answers(), "{case}");
            false
        }
        (
            Expect::Cut | Expect::WholeOrCut,
            Outcome::Cut {
                status,
                received,
                closed,
                ..
            },
        ) => {
            assert_eq!(*status, StatusCode::OK, "{case}: {first:?}");
            assert!(*received < len, "{case}: {first:?}");
            assert!(*closed, "{case}: the connection closes: {first:?}");
            assert_eq!(origin.count(&path), fault.faulty_answers(), "{case}");
            false
        }
        (Expect::Cut | Expect::WholeOrCut, Outcome::NoAnswer { incomplete, .. }) => {
            assert!(*incomplete, "{case}: {first:?}");
            assert_eq!(origin.count(&path), fault.faulty_answers(), "{case}");
            false
        }
        (Expect::Whole { requests }, _) => {
            assert_correct(&first, &path, len, &case);
            assert_eq!(origin.count(&path), requests, "{case}");
            true
        }
        (Expect::WholeOrCut, Outcome::Whole { .. }) => {
            assert_correct(&first, &path, len, &case);
            // Surplus seen before the head was handed on: the answer it came
            // with is refused and the request tried once more, on a new
            // connection (which the origin answers correctly).
            let requests = origin.count(&path);
            assert!((1..=2).contains(&requests), "{case}: {requests}");
            true
        }
        (_, other) => panic!("{case}: unexpected first answer: {other:?}"),
    };
    if !whole {
        assert_eq!(
            proxy.cache().store.entry_count(),
            0,
            "{case}: a damaged answer was stored"
        );
    }
    if let Outcome::Whole { informational, .. } = &first {
        // Relaying 1xx is optional (RFC 9110 §15.2); relaying anything else is not.
        assert!(
            informational.iter().all(|s| [100, 103].contains(s)),
            "{case}: {first:?}"
        );
    }
    if let Some(kind) = fault.counted_as() {
        let scrape = scrape(proxy.admin_addr()).await;
        assert_eq!(
            value(&scrape, "viaduct_upstream_errors_total", &[("kind", kind)]),
            1.0,
            "{case}: counted as {kind}"
        );
    }
    let requests = origin.count(&path);

    // The same URL again, the origin now behaving.
    let second = ask(proxy.addr(), mode, origin.addr, &path).await;
    eprintln!("{case}: again: {}", second.summary());
    let status = assert_correct(&second, &path, len, &format!("{case}, again"));
    if whole {
        // A whole, correct first answer may be served from the cache; if
        // it was not kept (surplus bytes make a connection's recent answers
        // suspect), the origin answers afresh.
        if status.contains("; hit") {
            assert_eq!(origin.count(&path), requests, "{case}: {status}");
        } else {
            assert_eq!(origin.count(&path), requests + 1, "{case}: {status}");
        }
        if matches!(fault.expect(), Expect::Whole { .. }) {
            assert!(status.contains("; hit"), "{case}: stored whole: {status}");
        }
    } else {
        assert!(
            status.contains("fwd=uri-miss") && !status.contains("; hit"),
            "{case}: nothing was stored: {status}"
        );
        assert_eq!(origin.count(&path), requests + 1, "{case}: {status}");
    }

    // Another URL on the same origin gets its own answer, never bytes left
    // over from the fault.
    let next = format!("{path}/next");
    let third = ask(proxy.addr(), mode, origin.addr, &next).await;
    let status = assert_correct(&third, &next, len, &format!("{case}, next URL"));
    assert!(status.contains("fwd=uri-miss"), "{case}: {status}");
    assert_eq!(origin.count(&next), 1, "{case}");

    proxy.shutdown().await;
}

/// One test per fault and mode.
macro_rules! table {
    ($($name:ident: $fault:ident,)*) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test]
                async fn reverse() {
                    run(Fault::$fault, Mode::Reverse).await;
                }

                #[tokio::test]
                async fn forward() {
                    run(Fault::$fault, Mode::Forward).await;
                }
            }
        )*
    };
}

table! {
    reset_mid_body: ResetMidBody,
    close_mid_body: CloseMidBody,
    chunked_closed_before_last_chunk: ChunkedClosedBeforeLastChunk,
    chunked_closed_mid_chunk: ChunkedClosedMidChunk,
    chunked_malformed_size: ChunkedMalformedSize,
    unframed_body_reset: UnframedBodyReset,
    extra_bytes_after_body: ExtraBytesAfterBody,
    extra_bytes_after_body_twice: ExtraBytesAfterBodyTwice,
    extra_response_after_body: ExtraResponseAfterBody,
    status_code_not_a_number: StatusCodeNotANumber,
    wrong_protocol_name: WrongProtocolName,
    garbage_instead_of_head: GarbageInsteadOfHead,
    informational_first: InformationalFirst,
    reset_before_head: ResetBeforeHead,
    reset_before_head_twice: ResetBeforeHeadTwice,
    never_answers: NeverAnswers,
    slow_but_steady: SlowButSteady,
    stalls_mid_body: StallsMidBody,
}
