//! Entry points for the fuzz targets in `fuzz/` (and their regression
//! tests): each takes raw bytes, drives one parser the way the proxy does,
//! and panics only when a property the proxy relies on does not hold. Not a
//! public API: hidden from the docs, and free to change with the parsers.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cache::control::{RequestControl, ResponseControl};
use crate::cache::key;
use crate::cache::range::{self, RangeAnswer};
use crate::http::validate::{framing, host, target};

/// Splits fuzz input into at most `n` pieces at `\n` (the last piece keeps
/// the rest), so one input can name several fields or values.
fn pieces(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |b| *b == b'\n').collect()
}

/// Field lines from bytes; values that are not valid field values are skipped
/// (the HTTP parser never hands such values on).
fn field_lines(name: &HeaderName, lines: &[&[u8]]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(name.clone(), value);
        }
    }
    headers
}

/// Cache-Control (RFC 9111 §5.2), response and request side. Property: the
/// field's lines parse as their comma-joined value does (RFC 9110 §5.3),
/// when no quoted string could span two lines.
pub fn cache_control(data: &[u8]) {
    let lines = pieces(data, 4);
    let name = http::header::CACHE_CONTROL;
    let split = field_lines(&name, &lines);
    let response = ResponseControl::parse(&split);
    let request = RequestControl::parse(&split);
    let _ = response.forbids_stale();
    if data.contains(&b'"') || split.len() != lines.len() {
        return;
    }
    let joined: Vec<u8> = lines.join(&b", "[..]);
    let Ok(value) = HeaderValue::from_bytes(&joined) else {
        return;
    };
    let mut one = HeaderMap::new();
    one.insert(name, value);
    assert_eq!(
        format!("{response:?}"),
        format!("{:?}", ResponseControl::parse(&one)),
        "response directives depend on how the field was split into lines"
    );
    assert_eq!(
        format!("{request:?}"),
        format!("{:?}", RequestControl::parse(&one)),
        "request directives depend on how the field was split into lines"
    );
}

/// The client-side head guard. Property: what it concludes (heads, the
/// smuggling shape, oversized chunked bodies) does not depend on how the
/// bytes were split into reads. The first two bytes choose the split.
pub fn head_guard(data: &[u8]) {
    let [a, b, rest @ ..] = data else { return };
    let whole = crate::server::observe_in_reads(rest, &[], 1 << 16);
    let step = usize::from(*a % 16) + 1;
    let first = usize::from(*b);
    let mut reads = vec![first];
    reads.extend(std::iter::repeat_n(step, rest.len() / step + 1));
    let split = crate::server::observe_in_reads(rest, &reads, 1 << 16);
    assert_eq!(whole, split, "reads of {first} then {step} bytes");
}

/// `Range` (RFC 9110 §14.2). Property: a partial answer lies inside the
/// representation. The first 8 bytes are its length.
pub fn range(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let len = u64::from_le_bytes(*len) % (1 << 40);
    let Ok(value) = HeaderValue::from_bytes(rest) else {
        return;
    };
    if let RangeAnswer::Partial { start, end } = range::evaluate(&value, len) {
        assert!(start <= end && end < len, "{start}-{end} of {len}");
    }
}

/// The PAC script. Property: whatever the bypass list and the proxy name
/// hold, every line is one of the script's own, with string literals that
/// contain no quote, backslash or control character.
pub fn pac(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts: Vec<String> = text.split('\n').map(str::to_string).collect();
    let proxy = parts.pop().unwrap_or_default();
    let script = crate::proxy::pac_script(&parts, &proxy);
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(lines.len(), parts.len() + 5, "{script}");
    for line in &lines[3..lines.len() - 2] {
        let literals: Vec<&str> = line.split('"').collect();
        // `if (f(host, "a"[, "b"])) return "DIRECT";`: 5 or 7 pieces.
        assert!(
            literals.len() == 5 || literals.len() == 7,
            "a literal was broken out of: {line}"
        );
    }
    assert!(script.ends_with("; DIRECT\";\n}\n"), "{script}");
}

/// `proxy.toml`. Property: any text either loads or fails with a message
/// that names the file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = crate::config::Config::from_toml(text, "fuzz.toml") {
        let message = e.to_string();
        assert!(message.starts_with("fuzz.toml"), "{message}");
    }
}

/// Cache keys and Vary (RFC 9111 §4.1). Properties: the primary key is
/// built for any host and path; a request always matches the secondary key
/// made from itself.
pub fn cache_key(data: &[u8]) {
    let parts = pieces(data, 4);
    let text = |i: usize| {
        parts
            .get(i)
            .map(|p| String::from_utf8_lossy(p))
            .unwrap_or_default()
    };
    let (host, path) = (text(0), text(1));
    let built = key::primary("ns", "http", &host, 80, &path);
    assert!(built.starts_with("ns http://"));
    let (namespace, url) = key::split(&built);
    assert_eq!((namespace, url.len()), ("ns", built.len() - 3));
    let vary = field_lines(&http::header::VARY, parts.get(2..3).unwrap_or_default());
    let request_lines: Vec<&[u8]> = parts
        .get(3)
        .map(|p| p.split(|b| *b == b';').collect())
        .unwrap_or_default();
    let mut request = HeaderMap::new();
    for (i, line) in request_lines.iter().enumerate() {
        let name = ["accept-encoding", "accept-language", "cookie", "x-device"][i % 4];
        if let Ok(value) = HeaderValue::from_bytes(line) {
            request.append(HeaderName::from_static(name), value);
        }
    }
    if let key::Vary::Fields(names) = key::Vary::of(&vary) {
        let secondary = key::secondary(&names, &request);
        assert!(
            key::matches(&secondary, &request),
            "a request does not match its own variant"
        );
    }
}

/// Host and request-target checks (RFC 9112 §3.2, RFC 3986). Properties:
/// normalising a path twice changes nothing more, and leaves no dot
/// segment; a Host that passes the check normalises without panicking.
pub fn target(data: &[u8]) {
    let parts = pieces(data, 2);
    if let Ok(text) = std::str::from_utf8(parts[0]) {
        for allow_encoded_slash in [false, true] {
            if let Ok(once) = target::normalize_path(text, allow_encoded_slash) {
                let twice = target::normalize_path(&once, allow_encoded_slash);
                assert_eq!(
                    twice.as_deref(),
                    Ok(once.as_ref()),
                    "normalising {text:?} again"
                );
                assert!(
                    !once.split('/').any(|s| s == "." || s == ".."),
                    "{once:?} keeps a dot segment"
                );
            }
        }
    }
    if let Some(value) = parts.get(1) {
        if host::check(value).is_ok() {
            if let Ok(text) = std::str::from_utf8(value) {
                let _ = host::normalize_host(text);
            }
        }
        if let Ok(value) = HeaderValue::from_bytes(value) {
            let mut req = Request::new(());
            req.headers_mut().insert(http::header::HOST, value);
            let _ = host::check_request(&req);
        }
    }
    let _ = framing::request_framing(data);
    let _ = framing::content_length(data);
}

/// A proxy with no reachable origin, serving connections in memory.
struct Harness {
    runtime: tokio::runtime::Runtime,
    handler: Arc<crate::proxy::Handler>,
    settings: Arc<crate::server::ConnectionSettings>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        // Reverse routes to a port nothing listens on; forward traffic to
        // loopback is refused by the guard: no request leaves the process.
        let text = "[server]\nlisten = [\"127.0.0.1:0\"]\nheader_read_timeout = \"20ms\"\nkeepalive_timeout = \"20ms\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n\
             [[route]]\nhost = \"*\"\nupstream = \"http://127.0.0.1:9\"\n";
        let config = crate::config::Config::from_toml(text, "fuzz").expect("harness config");
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("address");
        let admin: SocketAddr = "127.0.0.1:8081".parse().expect("address");
        let handler = runtime
            .block_on(async { crate::proxy::Handler::new(&config, vec![local], admin, None) })
            .expect("handler");
        let settings = crate::server::ConnectionSettings::new(&config.server, Duration::from_secs(1));
        Harness {
            runtime,
            handler: Arc::new(handler),
            settings: Arc::new(settings),
        }
    })
}

/// The whole request head path, from raw bytes: head guard, hyper's parser,
/// Host and target checks, classification, routing and the cache key, as a
/// connection from a client runs them. Property: the proxy answers with
/// HTTP/1.x responses (or closes) and never with a 500. Returns what the
/// client received.
pub fn request_head(data: &[u8]) -> Vec<u8> {
    let h = harness();
    let output = h.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (drain, phase) = tokio::sync::watch::channel(crate::server::Phase::Running);
        let accepted = crate::server::Accepted {
            peer: "127.0.0.1:40000".parse().expect("address"),
            local: "127.0.0.1:8080".parse().expect("address"),
            tls: false,
            permit: None,
        };
        let serving = tokio::spawn(crate::server::serve_connection(
            server,
            accepted,
            h.handler.clone(),
            h.settings.clone(),
            phase,
        ));
        // The write half stays open (hyper drops a connection whose client
        // half-closed). Once the connection has read what it was sent, a
        // drain makes it finish the request it is on and close, as at
        // shutdown: no timeout has to expire.
        let _ = client.write_all(data).await;
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        let _ = drain.send(crate::server::Phase::Draining);
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut out)).await;
        serving.abort();
        out
    });
    // The HTTP/2 preface (h2c with prior knowledge) is answered in frames.
    if output.is_empty() || data.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") {
        return output;
    }
    assert!(
        output.starts_with(b"HTTP/1.1 ") || output.starts_with(b"HTTP/1.0 "),
        "{}",
        String::from_utf8_lossy(&output[..output.len().min(200)])
    );
    for (i, _) in output
        .windows(9)
        .enumerate()
        .filter(|(_, w)| w.starts_with(b"HTTP/1."))
    {
        let status = output.get(i + 9..i + 12).unwrap_or_default();
        assert_ne!(status, b"500", "{}", String::from_utf8_lossy(&output));
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds that once failed, and a few of each kind.
    #[test]
    fn every_target_takes_its_seeds() {
        cache_control(b"max-age=5\nno-cache, private\ns-maxage=1");
        cache_control(b"no-cache=\"a,\nb\"");
        // Found by fuzzing: a line with obs-text dropped `private`.
        cache_control(b"private, m~ax-age=0\ns-maxp\xfe\xff\xff\xff\xff\xffge=0\ns-ma0");
        head_guard(b"\x03\x07POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        head_guard(
            b"\x00\x01POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        range(b"\x10\0\0\0\0\0\0\0bytes=-5");
        range(b"\x10\0\0\0\0\0\0\0bytes=3-99");
        pac(b"*.corp\n10.0.0.0/8\n\"); alert(1); (\"\nproxy\"\n:8080");
        config(b"[server]\nlisten = 5\n");
        cache_key(b"Example.COM:80\n/a?b\naccept-encoding, cookie\ngzip;x");
        target(b"/a/./b/../c%2F%2e%2e\nexample.com:80");
        // Found by fuzzing: non-ASCII bytes were decoded as Latin-1.
        target("/a/./%20./o--\u{e9}com\nxn--".as_bytes());
        // Found by fuzzing: blank lines before a head split over reads.
        head_guard(b"\x05\x10\r\n\r\nGET /a HTTP/1.1\r\nHost: a\r\nX: zzzzzzzzzzzzzzzz\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn the_request_head_harness_answers() {
        let status = |bytes: &[u8]| {
            let out = request_head(bytes);
            String::from_utf8_lossy(&out[..out.len().min(12)]).into_owned()
        };
        // The route's origin refuses; loopback is no forward destination.
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "HTTP/1.1 502");
        assert_eq!(
            status(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n"),
            "HTTP/1.1 403"
        );
        assert_eq!(
            status(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n"),
            "HTTP/1.1 403"
        );
        assert_eq!(status(b"\x00\x01garbage\r\n\r\n"), "HTTP/1.1 400");
        // Found by fuzzing: the h2 preface gets HTTP/2 frames, not HTTP/1.
        request_head(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    }
}
