//! Bad input over raw sockets, table-driven, written from the RFCs: RFC 9112
//! (message syntax and framing) and RFC 9110 (semantics).
//!
//! Every case opens a fresh connection, sends its bytes and reads what comes
//! back until the proxy closes the connection. Then three things are checked:
//! - the responses: their statuses (a set where the RFCs allow more than one
//!   answer) and that the connection was closed afterwards (a request that is
//!   well framed says `Connection: close`, so a close is always expected);
//! - what the origin received, by the role each path names:
//!   - `/good-N` must arrive, complete, as often as the case says;
//!   - `/may-N` may arrive (the RFCs let a recipient accept or refuse it);
//!   - `/cut-N` has a sound head and a body that goes bad midway: it may be
//!     relayed while the body streams (nothing in the RFCs asks a proxy to
//!     buffer) but must never arrive complete;
//!   - anything else, `/bad-N` (the malformed request) and `/smuggled-N` (a
//!     request hidden in a body, a trailer or a tunnel) above all, must never
//!     arrive at all. The origin records each request as soon as its head
//!     arrives, so a request relayed and then aborted counts too;
//! - that the proxy still serves a good request on a fresh connection.
//!
//! The cases run in a few tests, one table each, that collect every failure:
//! one run shows each failing case by name, with the bytes sent and the
//! reply. The proxy's limits here: 8 KiB heads, 1 KiB bodies.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::{base_config, route, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long one case may take to be answered and closed; never asserted on
/// as a timing, only a bound so that a connection left open fails the case.
const CASE_PATIENCE: Duration = Duration::from_secs(5);

/// What the client must see.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Exactly one response, with this status, then a close.
    Status(u16),
    /// Exactly one response, with one of these statuses, then a close.
    OneOf(&'static [u16]),
    /// A close, with no response or with one 400 before it.
    Closed,
    /// A close, with no HTTP/1 response at all or an error (4xx/5xx) one:
    /// for bytes that may be taken for another protocol (the HTTP/2 preface).
    ClosedNoSuccess,
    /// A pipeline: one response per entry, each with one of its statuses,
    /// in order, then a close.
    Seq(&'static [&'static [u16]]),
}

use Expect::*;

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
    /// How many times `/good-N` must reach the origin.
    good: usize,
}

/// Builds the table: each case gets its number, which its paths carry.
struct Table {
    cases: Vec<Case>,
}

impl Table {
    fn new() -> Table {
        Table { cases: Vec::new() }
    }

    /// The number the next case's paths carry, three digits so that no
    /// marker is a prefix of another.
    fn next(&self) -> String {
        format!("{:03}", self.cases.len())
    }

    fn add(
        &mut self,
        name: &'static str,
        expect: Expect,
        good: usize,
        bytes: impl FnOnce(&str) -> Vec<u8>,
    ) {
        let n = self.next();
        let bytes = bytes(&n);
        // `VIADUCT_FUZZ_SEEDS=DIR cargo test --test bad_input_suite` writes
        // every case to DIR: the seed corpus of the request fuzz targets.
        if let Ok(dir) = std::env::var("VIADUCT_FUZZ_SEEDS") {
            let file = std::path::Path::new(&dir).join(format!("seed-{name}"));
            std::fs::write(file, &bytes).expect("a writable seed directory");
        }
        assert!(
            self.cases.iter().all(|c| c.name != name),
            "duplicate case name {name}"
        );
        self.cases.push(Case {
            name,
            bytes,
            expect,
            good,
        });
    }

    /// A case whose bytes are text.
    fn text(
        &mut self,
        name: &'static str,
        expect: Expect,
        good: usize,
        text: impl FnOnce(&str) -> String,
    ) {
        self.add(name, expect, good, |n| text(n).into_bytes());
    }
}

/// A complete request for `/smuggled-N`: hidden in a body, it must never
/// reach the origin as a request of its own.
fn hidden(n: &str) -> String {
    format!("GET /smuggled-{n} HTTP/1.1\r\nHost: site.test\r\n\r\n")
}

/// `data` as one chunk, then the last chunk.
fn one_chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len())
}

/// What came back on one connection.
#[derive(Debug, Default)]
struct Reply {
    statuses: Vec<u16>,
    /// Bytes that did not parse as an HTTP/1 response.
    garbage: bool,
    /// The proxy closed the connection (EOF or reset) within the patience.
    closed: bool,
    raw: Vec<u8>,
}

/// Sends `bytes` on a fresh connection and reads until the proxy closes it.
async fn exchange(proxy: SocketAddr, bytes: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    // The proxy may close before reading everything (a refused head): a
    // failed write is not the test's concern, what was answered is.
    let _ = stream.write_all(bytes).await;
    let mut raw = Vec::new();
    let closed = tokio::time::timeout(CASE_PATIENCE, async {
        let mut buf = [0u8; 16384];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    let (statuses, garbage) = parse_responses(&raw);
    Reply {
        statuses,
        garbage,
        closed,
        raw,
    }
}

/// The statuses of the responses in `raw`, and whether anything that is not
/// a response was left over.
fn parse_responses(raw: &[u8]) -> (Vec<u16>, bool) {
    let mut statuses = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = resp.parse(rest) else {
            return (statuses, true);
        };
        let status = resp.code.unwrap_or(0);
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        let body = &rest[head_len..];
        let body_len = if status < 200 || status == 204 || status == 304 {
            0
        } else if header("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
            match chunked_len(body) {
                Some(len) => len,
                None => return (statuses, true),
            }
        } else if let Some(len) = header("content-length") {
            match len.parse::<usize>() {
                Ok(len) if len <= body.len() => len,
                _ => return (statuses, true),
            }
        } else {
            body.len()
        };
        statuses.push(status);
        rest = &body[body_len..];
    }
    (statuses, false)
}

/// The length of a complete chunked body at the start of `body`.
fn chunked_len(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + body[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&body[at..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailer lines up to the empty one.
            loop {
                let end = at + body[at..].windows(2).position(|w| w == b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(at);
                }
            }
        }
        at += size + 2;
        if at > body.len() {
            return None;
        }
    }
}

/// Why `reply` does not meet `expect`, if it does not.
fn judge(expect: Expect, reply: &Reply) -> Option<String> {
    if !reply.closed {
        return Some("the connection was not closed".into());
    }
    let statuses = &reply.statuses;
    let ok = match expect {
        Status(s) => !reply.garbage && statuses == &[s],
        OneOf(set) => !reply.garbage && statuses.len() == 1 && set.contains(&statuses[0]),
        Closed => !reply.garbage && (statuses.is_empty() || statuses == &[400]),
        ClosedNoSuccess => statuses.iter().all(|s| *s >= 400),
        Seq(sets) => {
            !reply.garbage
                && statuses.len() == sets.len()
                && statuses.iter().zip(sets).all(|(s, set)| set.contains(s))
        }
    };
    (!ok).then(|| format!("expected {expect:?}"))
}

fn show(bytes: &[u8], limit: usize) -> String {
    let text: String = bytes.escape_ascii().to_string();
    if text.len() > limit {
        format!("{}... ({} bytes)", &text[..limit], bytes.len())
    } else {
        text
    }
}

/// One request as the origin saw it: recorded as soon as its head arrives,
/// complete once its whole body was read.
#[derive(Debug, Clone)]
struct Arrival {
    target: String,
    complete: bool,
}

/// An HTTP/1.1 origin answering 200 to everything, which records each
/// request when its head arrives and whether its body then ended cleanly,
/// so that a request relayed while its body streamed and then cut short
/// (an aborted request, which no origin acts on) is told apart from a
/// complete one.
#[derive(Clone)]
struct Recorder {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let all = arrivals.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let all = all.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let all = all.clone();
                        async move {
                            let index = {
                                let mut all = all.lock().unwrap();
                                all.push(Arrival {
                                    target: req.uri().to_string(),
                                    complete: false,
                                });
                                all.len() - 1
                            };
                            let complete = req.into_body().collect().await.is_ok();
                            all.lock().unwrap()[index].complete = complete;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"fine",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder { addr, arrivals }
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }
}

/// Whether case `n` allows `arrival` at the origin: `/good-N` and `/may-N`
/// complete or not, `/cut-N` only cut short.
fn allowed(arrival: &Arrival, n: &str) -> bool {
    let t = &arrival.target;
    t.starts_with(&format!("/good-{n}"))
        || t.starts_with(&format!("/may-{n}"))
        || (t.starts_with(&format!("/cut-{n}")) && !arrival.complete)
}

fn describe(arrivals: &[Arrival]) -> Vec<String> {
    arrivals
        .iter()
        .map(|a| {
            if a.complete {
                a.target.clone()
            } else {
                format!("{} (cut short)", a.target)
            }
        })
        .collect()
}

/// Runs every case against `proxy` (whose routes lead to `origin`) and
/// panics once, listing every failing case.
async fn run(proxy: SocketAddr, origin: &Recorder, table: Table) {
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for (i, case) in table.cases.iter().enumerate() {
        let n = format!("{i:03}");
        let before = origin.arrivals().len();
        let reply = exchange(proxy, &case.bytes).await;
        let arrived = origin.arrivals().split_off(before);
        let mut problems = Vec::new();
        if let Some(why) = judge(case.expect, &reply) {
            problems.push(why);
        }
        let forbidden: Vec<Arrival> = arrived
            .iter()
            .filter(|a| !allowed(a, &n))
            .cloned()
            .collect();
        if !forbidden.is_empty() {
            problems.push(format!("the origin received {:?}", describe(&forbidden)));
        }
        let good = arrived
            .iter()
            .filter(|a| a.complete && a.target.starts_with(&format!("/good-{n}")))
            .count();
        if good != case.good {
            problems.push(format!(
                "the origin received /good-{n} {good} times, not {}",
                case.good
            ));
        }
        // The proxy keeps serving.
        let after = exchange(
            proxy,
            format!("GET /after-{n} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        if after.statuses != [200] {
            problems.push(format!(
                "a good request afterwards got {:?}",
                after.statuses
            ));
        }
        let line = format!(
            "{n} {}: got {:?}{}{}, origin saw {:?}",
            case.name,
            reply.statuses,
            if reply.garbage { " and garbage" } else { "" },
            if reply.closed {
                ", closed"
            } else {
                ", left open"
            },
            describe(&arrived),
        );
        report.push(line.clone());
        if !problems.is_empty() {
            failures.push(format!(
                "{line}\n    {}\n    sent: {}\n    reply: {}",
                problems.join("; "),
                show(&case.bytes, 300),
                show(&reply.raw, 300)
            ));
        }
    }
    // A request can reach the origin after its client connection closed (a
    // body cut short while it streamed): look once more over everything the
    // origin received, after a moment for stragglers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for arrival in origin.arrivals() {
        let accounted = (arrival.target.starts_with("/after-") && arrival.complete)
            || (0..table.cases.len()).any(|i| allowed(&arrival, &format!("{i:03}")));
        if !accounted {
            failures.push(format!(
                "the origin received {:?} at some point",
                describe(&[arrival])
            ));
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{} problems over {} cases:\n{}",
        failures.len(),
        table.cases.len(),
        failures.join("\n")
    );
}

/// The recording origin, and a proxy with a catch-all reverse route to it,
/// the forward proxy on (loopback allowed, the origin's port open to
/// CONNECT), small limits and a short header timeout.
async fn setup() -> (Recorder, viaduct::Running) {
    let origin = Recorder::start().await;
    let mut config = base_config();
    config.routes.push(route("*", "/", origin.addr));
    config.server.max_request_body = viaduct::config::Size(1024);
    config.server.max_header_size = viaduct::config::Size(8 * 1024);
    config.server.header_read_timeout = viaduct::config::Dur(Duration::from_millis(500));
    config.forward.allow_loopback = true;
    config.forward.connect_ports = vec![443, origin.addr.port()];
    (origin, start(config).await)
}

const H: &str = "Host: site.test\r\n";
const CLOSE: &str = "Connection: close\r\n";

fn smuggling(t: &mut Table, _: SocketAddr) {
    // RFC 9112 §6.1/§6.3: Content-Length with Transfer-Encoding is refused
    // here (the proxy's policy) or processed by TE and closed.
    t.text("cl-then-te", Status(400), 0, |n| {
        let body = format!("0\r\n\r\n{}", hidden(n));
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            body.len()
        )
    });
    t.text("te-then-cl-short", Status(400), 0, |n| {
        let body = format!("{}{}", one_chunk("x"), hidden(n));
        format!("POST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{body}")
    });
    t.text("cl-with-te-xchunked", OneOf(&[400, 501]), 0, |n| {
        let body = format!("0\r\n\r\n{}", hidden(n));
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Content-Length: {}\r\nTransfer-Encoding: xchunked\r\n\r\n{body}",
            body.len()
        )
    });
    // §6.3: chunked not final in a request: 400 and close (501 for a coding
    // the server does not know, §6.1).
    t.text("te-xchunked", OneOf(&[400, 501]), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{}",
            hidden(n)
        )
    });
    t.text("te-chunked-then-identity", OneOf(&[400, 501]), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{}",
            hidden(n)
        )
    });
    t.text("te-identity", OneOf(&[400, 501]), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: identity\r\n\r\n0\r\n\r\n{}",
            hidden(n)
        )
    });
    t.text("te-quoted-chunked", OneOf(&[400, 501]), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n{}",
            hidden(n)
        )
    });
    // HTAB is OWS: `Transfer-Encoding:\tchunked` is plain chunked, and the
    // request hidden in the chunk is body.
    t.text("te-tab-chunked", Status(200), 1, |n| {
        format!(
            "POST /good-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer-Encoding:\tchunked\r\n\r\n{}",
            one_chunk(&hidden(n))
        )
    });
    t.text("te-tab-chunked-with-cl", Status(400), 0, |n| {
        let body = format!("0\r\n\r\n{}", hidden(n));
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding:\tchunked\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    t.text("te-uppercase-with-cl", Status(400), 0, |n| {
        let body = format!("0\r\n\r\n{}", hidden(n));
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}content-length: {}\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\n{body}",
            body.len()
        )
    });
    // Two TE lines are one list, `chunked, chunked`: chunked applied twice
    // (§6.1 forbids sending it). Refusing or decoding once are both safe.
    t.text("te-duplicated", OneOf(&[200, 400, 501]), 0, |n| {
        format!(
            "POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            one_chunk(&hidden(n))
        )
    });
    // §5.1: whitespace between a field name and the colon: 400.
    t.text("te-space-before-colon", Status(400), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n{}",
            hidden(n)
        )
    });
    // §5.2: obs-fold in a request: 400, or unfolded to `chunked`.
    t.text("te-obs-fold", OneOf(&[200, 400]), 0, |n| {
        format!(
            "POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer-Encoding:\r\n chunked\r\n\r\n{}",
            one_chunk(&hidden(n))
        )
    });
    // §2.2: a whitespace-preceded line right after the request line is
    // refused or ignored whole; ignored, Content-Length frames the body.
    t.text("te-line-after-request-line", OneOf(&[200, 400]), 0, |n| {
        let body = format!("0\r\n\r\n{}", hidden(n));
        format!(
            "POST /may-{n} HTTP/1.1\r\n Transfer-Encoding: chunked\r\n{H}{CLOSE}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    t.text("te-vertical-tab", Status(400), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n{}",
            hidden(n)
        )
    });
    // RFC 9110 §5.6.1: empty list elements are ignored, so `chunked,` is
    // chunked; refusing it is safe too.
    t.text("te-trailing-comma", OneOf(&[200, 400, 501]), 0, |n| {
        format!(
            "POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer-Encoding: chunked,\r\n\r\n{}",
            one_chunk(&hidden(n))
        )
    });
    // §6.1: TE in an HTTP/1.0 request is faulty framing.
    t.text("te-in-http10", OneOf(&[400, 501]), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.0\r\n{H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{}",
            hidden(n)
        )
    });
    // §6.3 item 5: an invalid Content-Length is an unrecoverable error.
    for (name, value) in [
        ("cl-list-differing", "1, 2"),
        ("cl-plus-sign", "+5"),
        ("cl-hex", "0x5"),
        ("cl-space-inside", "1 0"),
        ("cl-negative", "-5"),
        ("cl-empty", ""),
        ("cl-trailing-letter", "5x"),
    ] {
        t.text(name, Status(400), 0, |n| {
            format!(
                "POST /bad-{n} HTTP/1.1\r\n{H}Content-Length: {value}\r\n\r\nhello{}",
                hidden(n)
            )
        });
    }
    t.text("cl-overflow", OneOf(&[400, 413]), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Content-Length: 99999999999999999999999\r\n\r\nhello{}",
            hidden(n)
        )
    });
    t.text("cl-two-lines-differing", Status(400), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello{}",
            hidden(n)
        )
    });
    // RFC 9110 §8.6: identical values may be taken as one, or refused.
    t.text("cl-two-lines-same", OneOf(&[200, 400]), 0, |n| {
        format!(
            "POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
        )
    });
    t.text("cl-list-same", OneOf(&[200, 400]), 0, |n| {
        format!("POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Content-Length: 5, 5\r\n\r\nhello")
    });
    t.text("cl-leading-zeros", OneOf(&[200, 400]), 0, |n| {
        format!("POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Content-Length: 0005\r\n\r\nhello")
    });
    // A GET may carry content: the request in it is body.
    t.text("get-body-hides-request", Status(200), 1, |n| {
        let body = hidden(n);
        format!(
            "GET /good-{n} HTTP/1.1\r\n{H}{CLOSE}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    t.text("expect-continue-cl-te", Status(400), 0, |n| {
        let body = format!("0\r\n\r\n{}", hidden(n));
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Expect: 100-continue\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            body.len()
        )
    });
    t.text("te-empty-with-cl", Status(400), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: \r\nContent-Length: 5\r\n\r\nhello{}",
            hidden(n)
        )
    });
    t.text("cl-space-in-name", Status(400), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Content Length: 5\r\n\r\nhello{}",
            hidden(n)
        )
    });
    // `Transfer_Encoding` is another (valid) field name, not framing: the
    // body is framed by Content-Length.
    t.text("te-underscore-with-cl", OneOf(&[200, 400]), 0, |n| {
        let body = format!("0\r\n\r\n{}", hidden(n));
        format!(
            "POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer_Encoding: chunked\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    t.text("te-nul", Status(400), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: chunked\0\r\n\r\n0\r\n\r\n{}",
            hidden(n)
        )
    });
}

fn request_lines(t: &mut Table, _: SocketAddr) {
    // RFC 9112 §3: recipients MAY split on whitespace runs; refusing is fine.
    t.text("double-space", OneOf(&[200, 400]), 0, |n| {
        format!("GET  /may-{n} HTTP/1.1\r\n{H}{CLOSE}\r\n")
    });
    t.text("tab-separator", OneOf(&[200, 400]), 0, |n| {
        format!("GET\t/may-{n} HTTP/1.1\r\n{H}{CLOSE}\r\n")
    });
    t.text("trailing-space", OneOf(&[200, 400]), 0, |n| {
        format!("GET /may-{n} HTTP/1.1 \r\n{H}{CLOSE}\r\n")
    });
    t.text("leading-space", OneOf(&[200, 400]), 0, |n| {
        format!(" GET /may-{n} HTTP/1.1\r\n{H}{CLOSE}\r\n")
    });
    // §2.2: at least one empty line before the request line SHOULD be ignored.
    t.text("empty-lines-first", Status(200), 1, |n| {
        format!("\r\n\r\nGET /good-{n} HTTP/1.1\r\n{H}{CLOSE}\r\n")
    });
    t.text("missing-target", Closed, 0, |_| {
        format!("GET HTTP/1.1\r\n{H}\r\n")
    });
    t.text("method-only", Closed, 0, |_| format!("GET\r\n{H}\r\n"));
    t.text("space-in-target", Closed, 0, |n| {
        format!("GET /bad-{n} x HTTP/1.1\r\n{H}\r\n")
    });
    t.text("target-not-slash", Closed, 0, |n| {
        format!("GET bad-{n} HTTP/1.1\r\n{H}\r\n")
    });
    t.text("nul-in-method", Closed, 0, |n| {
        format!("G\0T /bad-{n} HTTP/1.1\r\n{H}\r\n")
    });
    t.text("delimiter-in-method", Closed, 0, |n| {
        format!("GE(T /bad-{n} HTTP/1.1\r\n{H}\r\n")
    });
    t.text("del-in-target", Closed, 0, |n| {
        format!("GET /bad-{n}\x7f HTTP/1.1\r\n{H}\r\n")
    });
    t.add("non-ascii-in-target", Closed, 0, |n| {
        let mut bytes = format!("GET /bad-{n}").into_bytes();
        bytes.extend_from_slice(b"\xff HTTP/1.1\r\n");
        bytes.extend_from_slice(H.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        bytes
    });
    // §2.2: a bare CR is invalid (or read as SP, which breaks the line).
    t.text("bare-cr-in-request-line", Closed, 0, |n| {
        format!("GET /bad-{n}\rHTTP/1.1\r\n{H}\r\n")
    });
    // Methods are case-sensitive tokens: `get` is a valid, unknown method;
    // a proxy forwards it (or answers 405/501).
    t.text("lowercase-method", OneOf(&[200, 405, 501]), 0, |n| {
        format!("get /may-{n} HTTP/1.1\r\n{H}{CLOSE}\r\n")
    });
    // §2.2: a bare LF may be accepted as a line end; either way the origin
    // sees one request or none.
    t.text("bare-lf-lines", OneOf(&[200, 400]), 0, |n| {
        format!("GET /may-{n} HTTP/1.1\nHost: site.test\nConnection: close\n\n")
    });
    t.text("bare-lf-then-hidden", OneOf(&[200, 400]), 0, |n| {
        let body = hidden(n);
        format!(
            "POST /may-{n} HTTP/1.1\nHost: site.test\nConnection: close\nContent-Length: {}\n\n{body}",
            body.len()
        )
    });
    t.text("fragment-in-target", OneOf(&[200, 400]), 0, |n| {
        format!("GET /may-{n}#frag HTTP/1.1\r\n{H}{CLOSE}\r\n")
    });
    // Asterisk-form is for OPTIONS only (RFC 9112 §3.2.4).
    t.text("asterisk-with-post", Status(400), 0, |_| {
        format!("POST * HTTP/1.1\r\n{H}Content-Length: 0\r\n\r\n")
    });
}

fn versions(t: &mut Table, _: SocketAddr) {
    // RFC 9110 §2.5: a higher minor version SHOULD be served as 1.1.
    t.text("http-1.2", OneOf(&[200, 400, 505]), 0, |n| {
        format!("GET /may-{n} HTTP/1.2\r\n{H}{CLOSE}\r\n")
    });
    for (name, version) in [
        ("http-2.0-over-h1", "HTTP/2.0"),
        ("http-3.0", "HTTP/3.0"),
        ("http-0.9-named", "HTTP/0.9"),
        ("http-1", "HTTP/1"),
        ("https-1.1", "HTTPS/1.1"),
        ("lowercase-http", "http/1.1"),
        ("version-garbage", "HTTP/1.1x"),
        ("version-10.0", "HTTP/10.0"),
    ] {
        t.text(name, OneOf(&[400, 505]), 0, |n| {
            format!("GET /bad-{n} {version}\r\n{H}\r\n")
        });
    }
    // HTTP/0.9's simple request is not served.
    t.text("http-0.9-simple", Closed, 0, |n| {
        format!("GET /bad-{n}\r\n\r\n")
    });
    t.text("http2-preface-then-garbage", ClosedNoSuccess, 0, |n| {
        format!("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n{}", hidden(n))
    });
}

fn fields(t: &mut Table, _: SocketAddr) {
    t.text("space-before-colon", Status(400), 0, |n| {
        format!("GET /bad-{n} HTTP/1.1\r\n{H}X-Test : 1\r\n\r\n")
    });
    t.text("tab-before-colon", Status(400), 0, |n| {
        format!("GET /bad-{n} HTTP/1.1\r\n{H}X-Test\t: 1\r\n\r\n")
    });
    t.text("no-colon", Status(400), 0, |n| {
        format!("GET /bad-{n} HTTP/1.1\r\n{H}X-Test 1\r\n\r\n")
    });
    t.text("empty-name", Status(400), 0, |n| {
        format!("GET /bad-{n} HTTP/1.1\r\n{H}: 1\r\n\r\n")
    });
    t.text("delimiter-in-name", Status(400), 0, |n| {
        format!("GET /bad-{n} HTTP/1.1\r\n{H}X(Test): 1\r\n\r\n")
    });
    t.text("obs-fold", OneOf(&[200, 400]), 0, |n| {
        format!("GET /may-{n} HTTP/1.1\r\n{H}{CLOSE}X-Test: a\r\n b\r\n\r\n")
    });
    // RFC 9110 §5.5: CR, LF and NUL in a value: refuse (or replace by SP).
    t.text("nul-in-value", OneOf(&[200, 400]), 0, |n| {
        format!("GET /may-{n} HTTP/1.1\r\n{H}{CLOSE}X-Test: a\0b\r\n\r\n")
    });
    t.text("bare-cr-in-value", OneOf(&[200, 400]), 0, |n| {
        format!("GET /may-{n} HTTP/1.1\r\n{H}{CLOSE}X-Test: a\rb\r\n\r\n")
    });
    t.text("del-in-value", OneOf(&[200, 400]), 0, |n| {
        format!("GET /may-{n} HTTP/1.1\r\n{H}{CLOSE}X-Test: a\x7fb\r\n\r\n")
    });
    t.text("bare-cr-line-ends", Closed, 0, |n| {
        format!("GET /bad-{n} HTTP/1.1\rHost: site.test\r\r\n\r\n")
    });
}

fn hosts(t: &mut Table, o: SocketAddr) {
    // RFC 9112 §3.2: an invalid Host value is a 400.
    for (name, host) in [
        ("host-port-letters", "site.test:abc"),
        ("host-with-path", "site.test/x"),
        ("host-ipv6-unbracketed", "::1"),
        ("host-ipv6-unclosed", "[::1"),
        ("host-list", "a.test, b.test"),
        ("host-negative-port", "site.test:-1"),
        ("host-huge-port", "site.test:99999999999"),
        ("host-tab-inside", "site\ttest"),
        ("host-userinfo-empty", "@site.test"),
    ] {
        t.text(name, Status(400), 0, |n| {
            format!("GET /bad-{n} HTTP/1.1\r\nHost: {host}\r\n\r\n")
        });
    }
    t.text("host-ipv6-bracketed", Status(200), 1, |n| {
        format!("GET /good-{n} HTTP/1.1\r\nHost: [::1]\r\n{CLOSE}\r\n")
    });
    // `port = *DIGIT`: an empty port is allowed by RFC 3986.
    t.text("host-empty-port", OneOf(&[200, 400]), 0, |n| {
        format!("GET /may-{n} HTTP/1.1\r\nHost: site.test:\r\n{CLOSE}\r\n")
    });
    t.text("host-pct-encoded", OneOf(&[200, 400]), 0, |n| {
        format!("GET /may-{n} HTTP/1.1\r\nHost: si%74e.test\r\n{CLOSE}\r\n")
    });
    // RFC 9112 §3.2.2: a proxy ignores Host for absolute-form and uses
    // the target's authority.
    t.text("absolute-host-differs", Status(200), 1, |n| {
        format!("GET http://{o}/good-{n} HTTP/1.1\r\nHost: other.test\r\n{CLOSE}\r\n")
    });
    // §3.2.2 says a proxy ignores Host for absolute-form, and an empty
    // Host is valid syntax; refusing it is over-strict but safe.
    t.text("absolute-empty-host-field", OneOf(&[200, 400]), 0, |n| {
        format!("GET http://{o}/may-{n} HTTP/1.1\r\nHost: \r\n{CLOSE}\r\n")
    });
    t.text("host-missing-with-content", Status(400), 0, |n| {
        let body = hidden(n);
        format!(
            "POST /bad-{n} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    t.text("host-twice-differing-case", Status(400), 0, |n| {
        format!("GET /bad-{n} HTTP/1.1\r\nHost: site.test\r\nhost: site.test\r\n\r\n")
    });
    // HTTP/1.0 may leave Host out.
    t.text("host-missing-http10", Status(200), 1, |n| {
        format!("GET /good-{n} HTTP/1.0\r\n\r\n")
    });
    t.text("absolute-userinfo", Status(400), 0, |n| {
        format!("GET http://user@{o}/bad-{n} HTTP/1.1\r\nHost: {o}\r\n\r\n")
    });
    t.text("absolute-empty-host", Status(400), 0, |n| {
        format!("GET http:///bad-{n} HTTP/1.1\r\nHost: {o}\r\n\r\n")
    });
    t.text("absolute-bad-port", Status(400), 0, |n| {
        format!("GET http://127.0.0.1:99999/bad-{n} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    });
    t.text("absolute-ipv6-unbracketed", Status(400), 0, |n| {
        format!("GET http://::1:80/bad-{n} HTTP/1.1\r\nHost: x\r\n\r\n")
    });
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400 whatever
    // the form of its target (it used to be served in absolute-form).
    t.text("absolute-host-missing", Status(400), 0, |n| {
        format!("GET http://{o}/bad-{n} HTTP/1.1\r\n{CLOSE}\r\n")
    });
    t.text("absolute-unknown-scheme", OneOf(&[400, 501]), 0, |n| {
        format!("GET ftp://{o}/bad-{n} HTTP/1.1\r\nHost: {o}\r\n{CLOSE}\r\n")
    });
}

fn oversize(t: &mut Table, _: SocketAddr) {
    // 8 KiB head limit, 1 KiB body limit.
    t.text("long-target", OneOf(&[400, 414, 431]), 0, |n| {
        format!("GET /bad-{n}/{} HTTP/1.1\r\n{H}\r\n", "a".repeat(10_000))
    });
    t.text("long-method", OneOf(&[400, 431, 501]), 0, |n| {
        format!("{} /bad-{n} HTTP/1.1\r\n{H}\r\n", "M".repeat(10_000))
    });
    t.text("long-field-name", OneOf(&[400, 431]), 0, |n| {
        format!(
            "GET /bad-{n} HTTP/1.1\r\n{H}X-{}: 1\r\n\r\n",
            "n".repeat(10_000)
        )
    });
    t.text("many-fields", OneOf(&[400, 431]), 0, |n| {
        let fields: String = (0..150).map(|i| format!("X-F{i}: v\r\n")).collect();
        format!("GET /bad-{n} HTTP/1.1\r\n{H}{fields}\r\n")
    });
    t.text("body-over-limit-by-length", Status(413), 0, |n| {
        let body = format!("{}{}", hidden(n), "x".repeat(2000));
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    t.text("body-over-limit-in-small-chunks", OneOf(&[413]), 0, |n| {
        let mut body = String::new();
        for _ in 0..12 {
            body.push_str(&format!("64\r\n{}\r\n", "z".repeat(100)));
        }
        body.push_str("0\r\n\r\n");
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n{body}{}",
            hidden(n)
        )
    });
}

fn connect_forms(t: &mut Table, o: SocketAddr) {
    let port = o.port();
    // RFC 9110 §9.3.6, RFC 9112 §3.2.3: CONNECT takes authority-form,
    // host and port, only. A tunnel opened by mistake would carry the
    // hidden request to the origin.
    for (name, target) in [
        ("connect-no-port", "127.0.0.1".to_string()),
        ("connect-with-scheme", format!("http://{o}")),
        ("connect-with-path", format!("{o}/x")),
        ("connect-origin-form", "/x".to_string()),
        ("connect-asterisk", "*".to_string()),
        ("connect-userinfo", format!("user@{o}")),
        ("connect-empty-host", format!(":{port}")),
        ("connect-port-out-of-range", "127.0.0.1:65536".to_string()),
        ("connect-port-letters", "127.0.0.1:http".to_string()),
    ] {
        t.text(name, Status(400), 0, move |n| {
            format!(
                "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n{}",
                hidden(n)
            )
        });
    }
    t.text("connect-port-zero", OneOf(&[400, 403]), 0, |n| {
        format!(
            "CONNECT 127.0.0.1:0 HTTP/1.1\r\nHost: 127.0.0.1:0\r\n{CLOSE}\r\n{}",
            hidden(n)
        )
    });
    t.text("connect-disallowed-port", Status(403), 0, |n| {
        format!(
            "CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\n{CLOSE}\r\n{}",
            hidden(n)
        )
    });
}

fn chunked(t: &mut Table, _: SocketAddr) {
    // RFC 9112 §7.1: chunk-size is 1*HEXDIG, lines end in CRLF, data is
    // followed by CRLF. Each error is a 400 or a close; nothing past it is
    // read as a request.
    // The head is sound, so the proxy may relay the request while its body
    // streams: `/cut-N` may reach the origin, but never complete.
    let bad = |t: &mut Table, name: &'static str, body: &'static str| {
        t.text(name, Closed, 0, move |n| {
            format!(
                "POST /cut-{n} HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n{body}{}",
                hidden(n)
            )
        });
    };
    bad(t, "chunk-size-not-hex", "zz\r\nhello\r\n0\r\n\r\n");
    bad(t, "chunk-size-negative", "-5\r\nhello\r\n0\r\n\r\n");
    bad(t, "chunk-size-0x", "0x5\r\nhello\r\n0\r\n\r\n");
    bad(t, "chunk-size-leading-space", " 5\r\nhello\r\n0\r\n\r\n");
    bad(t, "chunk-size-empty", "\r\nhello\r\n0\r\n\r\n");
    bad(t, "chunk-data-longer-than-size", "3\r\nhello\r\n0\r\n\r\n");
    bad(t, "chunk-data-without-crlf", "5\r\nhello0\r\n\r\n");
    bad(t, "chunk-missing-last-chunk", "5\r\nhello\r\n");
    bad(
        t,
        "chunk-bad-trailer-line",
        "5\r\nhello\r\n0\r\nnot a field\r\n\r\n",
    );
    t.text("chunk-size-overflow", OneOf(&[400, 413]), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n{}",
            hidden(n)
        )
    });
    // A bare LF in chunk lines: refused, or read as a line end; either way
    // the request in the chunk is body.
    t.text("chunk-lf-only", OneOf(&[200, 400]), 0, |n| {
        let data = hidden(n);
        format!(
            "POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer-Encoding: chunked\r\n\r\n{:x}\n{data}\n0\n\n",
            data.len()
        )
    });
    // The request hidden after the last chunk is its trailer section.
    t.text("chunk-request-as-trailer", OneOf(&[200, 400]), 0, |n| {
        format!(
            "POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n{}",
            hidden(n)
        )
    });
    t.text("chunk-long-extension", OneOf(&[200, 400, 413]), 0, |n| {
        format!(
            "POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer-Encoding: chunked\r\n\r\n5;{}\r\nhello\r\n0\r\n\r\n{}",
            "e".repeat(20_000),
            hidden(n)
        )
    });
    // Many chunks, each with extensions: 20 KB of them over a 600-byte body.
    t.text("chunk-many-extensions", OneOf(&[200, 400, 413]), 0, |n| {
        let chunk = format!("1;{}\r\nx\r\n", "a=b;".repeat(8));
        format!(
            "POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n{}",
            chunk.repeat(600),
            hidden(n)
        )
    });
    t.text("chunk-valid-extension", Status(200), 1, |n| {
        format!(
            "POST /good-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer-Encoding: chunked\r\n\r\n5;name=\"v\"\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n"
        )
    });
    t.text("chunk-last-with-extension", Status(200), 1, |n| {
        format!(
            "POST /good-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0;e=1\r\n\r\n"
        )
    });
    // Leading zeros are valid (1*HEXDIG); a 413 for five bytes is
    // over-strict but safe.
    t.text("chunk-size-17-digits", OneOf(&[200, 400, 413]), 0, |n| {
        format!(
            "POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n"
        )
    });
    t.text("chunk-trailer-with-framing-field", OneOf(&[200, 400]), 0, |n| {
        format!(
            "POST /may-{n} HTTP/1.1\r\n{H}{CLOSE}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"
        )
    });
}

fn pipelines(t: &mut Table, _: SocketAddr) {
    // A refused CONNECT leaves an HTTP/1 connection: what follows is
    // checked like any other request (the guard used to stop watching
    // at any CONNECT, found by this suite).
    t.text("refused-connect-then-cl-te", Seq(&[&[403], &[400]]), 0, |n| {
        let hidden = hidden(n);
        let body = format!("0\r\n\r\n{hidden}");
        format!(
            "CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\nPOST /bad-{n} HTTP/1.1\r\n{H}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            body.len()
        )
    });
    t.text("refused-connect-then-chunk-over-limit", Seq(&[&[403], &[413]]), 0, |n| {
        format!(
            "CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\nPOST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n100000\r\nabc"
        )
    });
    t.text("good-then-garbage", Seq(&[&[200], &[400]]), 1, |n| {
        format!(
            "GET /good-{n} HTTP/1.1\r\n{H}\r\nGARBAGE\r\n\r\n{}",
            hidden(n)
        )
    });
    t.text("good-good-then-bad-version", Seq(&[&[200], &[200], &[400, 505]]), 2, |n| {
        format!(
            "GET /good-{n}/1 HTTP/1.1\r\n{H}\r\nGET /good-{n}/2 HTTP/1.1\r\n{H}\r\nGET /bad-{n} HTTP/7.0\r\n{H}\r\n{}",
            hidden(n)
        )
    });
    t.text("good-then-te-cl", Seq(&[&[200], &[400]]), 1, |n| {
        let body = format!("0\r\n\r\n{}", hidden(n));
        format!(
            "GET /good-{n} HTTP/1.1\r\n{H}\r\nPOST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    t.text("post-body-hides-request-then-good", Seq(&[&[200], &[200]]), 2, |n| {
        let body = hidden(n);
        format!(
            "POST /good-{n}/1 HTTP/1.1\r\n{H}Content-Length: {}\r\n\r\n{body}GET /good-{n}/2 HTTP/1.1\r\n{H}{CLOSE}\r\n",
            body.len()
        )
    });
    t.text("chunked-body-hides-request-then-good", Seq(&[&[200], &[200]]), 2, |n| {
        format!(
            "POST /good-{n}/1 HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n{}GET /good-{n}/2 HTTP/1.1\r\n{H}{CLOSE}\r\n",
            one_chunk(&hidden(n))
        )
    });
    // Nothing after a refused request is read as a request.
    t.text("bad-then-good", Seq(&[&[400, 505]]), 0, |n| {
        format!("GET /bad-{n} HTTP/9.9\r\n{H}\r\n{}", hidden(n))
    });
    t.text("bad-host-then-good", Seq(&[&[400]]), 0, |n| {
        format!("GET /bad-{n} HTTP/1.1\r\nHost: a b\r\n\r\n{}", hidden(n))
    });
    t.text("too-large-then-good", Seq(&[&[413]]), 0, |n| {
        format!(
            "POST /bad-{n} HTTP/1.1\r\n{H}Content-Length: 5000\r\n\r\n{}",
            hidden(n)
        )
    });
    // Two identical Content-Length lines are taken as one (RFC 9110 §8.6):
    // the guard that refuses CL with TE follows that body to the next head.
    t.text("cl-twice-then-cl-te", Seq(&[&[200], &[400]]), 1, |n| {
        let body = format!("0\r\n\r\n{}", hidden(n));
        format!(
            "POST /good-{n} HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhelloPOST /bad-{n} HTTP/1.1\r\n{H}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            body.len()
        )
    });
    // A refused CONNECT leaves an HTTP/1.1 connection (RFC 9110 §9.3.6:
    // only a 2xx makes a tunnel); what follows is framed as usual.
    t.text("refused-connect-then-chunked-post", Seq(&[&[403], &[200], &[200]]), 2, |n| {
        format!(
            "CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\nPOST /good-{n}/1 HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n{}GET /good-{n}/2 HTTP/1.1\r\n{H}{CLOSE}\r\n",
            one_chunk(&hidden(n))
        )
    });
    // RFC 9112 §6.3: a valid Content-Length frames a request's content,
    // CONNECT's included; the refused CONNECT's content is not a request.
    t.text("refused-connect-with-content", Seq(&[&[403], &[200]]), 1, |n| {
        let body = hidden(n);
        format!(
            "CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\nContent-Length: {}\r\n\r\n{body}GET /good-{n} HTTP/1.1\r\n{H}{CLOSE}\r\n",
            body.len()
        )
    });
    // Requests the proxy answers itself must still consume their content:
    // the request in it is not the next one.
    t.text("options-asterisk-content", Seq(&[&[200], &[200]]), 1, |n| {
        let body = hidden(n);
        format!(
            "OPTIONS * HTTP/1.1\r\n{H}Content-Length: {}\r\n\r\n{body}GET /good-{n} HTTP/1.1\r\n{H}{CLOSE}\r\n",
            body.len()
        )
    });
    t.text("options-asterisk-chunked-content", Seq(&[&[200], &[200]]), 1, |n| {
        format!(
            "OPTIONS * HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n{}GET /good-{n} HTTP/1.1\r\n{H}{CLOSE}\r\n",
            one_chunk(&hidden(n))
        )
    });
    t.text("max-forwards-zero-content", Seq(&[&[200], &[200]]), 1, |n| {
        let body = hidden(n);
        format!(
            "OPTIONS /x HTTP/1.1\r\n{H}Max-Forwards: 0\r\nContent-Length: {}\r\n\r\n{body}GET /good-{n} HTTP/1.1\r\n{H}{CLOSE}\r\n",
            body.len()
        )
    });
    t.text("pac-file-content", Seq(&[&[200], &[200]]), 1, |n| {
        let body = hidden(n);
        format!(
            "GET /proxy.pac HTTP/1.1\r\n{H}Content-Length: {}\r\n\r\n{body}GET /good-{n} HTTP/1.1\r\n{H}{CLOSE}\r\n",
            body.len()
        )
    });
    t.text("purge-content", Seq(&[&[200, 404], &[200]]), 1, |n| {
        let body = hidden(n);
        format!(
            "PURGE /x HTTP/1.1\r\n{H}Content-Length: {}\r\n\r\n{body}GET /good-{n} HTTP/1.1\r\n{H}{CLOSE}\r\n",
            body.len()
        )
    });
    t.text("good-then-te-xchunked", Seq(&[&[200], &[400, 501]]), 1, |n| {
        format!(
            "GET /good-{n} HTTP/1.1\r\n{H}\r\nPOST /bad-{n} HTTP/1.1\r\n{H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{}",
            hidden(n)
        )
    });
    t.text("good-then-bad-chunk", Seq(&[&[200], &[400]]), 1, |n| {
        format!(
            "GET /good-{n} HTTP/1.1\r\n{H}\r\nPOST /cut-{n} HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\nzz\r\n{}",
            hidden(n)
        )
    });
}

/// Builds a table from `parts`, runs it against a fresh origin and proxy.
async fn suite(parts: &[fn(&mut Table, SocketAddr)]) {
    let (origin, proxy) = setup().await;
    let mut table = Table::new();
    for part in parts {
        part(&mut table, origin.addr);
    }
    run(proxy.addr(), &origin, table).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn framing_and_smuggling() {
    suite(&[smuggling, chunked]).await;
}

#[tokio::test]
async fn request_lines_versions_and_fields() {
    suite(&[request_lines, versions, fields]).await;
}

#[tokio::test]
async fn hosts_connect_and_oversize() {
    suite(&[hosts, connect_forms, oversize]).await;
}

#[tokio::test]
async fn pipelines_mixing_good_and_bad() {
    suite(&[pipelines]).await;
}
