//! A read-side observer for HTTP/1 client connections.
//!
//! hyper parses requests; this wrapper only watches the bytes go by, to learn two
//! things hyper does not expose:
//! - when a request head starts arriving (for the header-read timeout), and
//! - whether a head carries both `Content-Length` and `Transfer-Encoding`.
//!   hyper drops the Content-Length and reads the body as chunked, which RFC 9112
//!   §6.1 allows; we prefer to refuse such a request with 400 because it is the
//!   classic request-smuggling shape (RFC 9112 §11.2);
//! - whether a chunked body announces more than `max_request_body`: the 413
//!   is decided at the chunk-size line, not after that much data was relayed.
//!
//! To find where the next head starts on a persistent connection it follows the
//! framing of each body (Content-Length or chunked). A request asking for an
//! `Upgrade` does not stop it: only a switch that really happened (the proxy
//! relayed a 101, `Activity::mark_upgraded`) means later bytes are another
//! protocol; otherwise the next head is checked like any other. Anything it
//! does not understand (HTTP/2 preface, CONNECT, parse errors) switches it
//! off; hyper stays the authority and answers malformed input itself.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::Activity;

const MAX_HEADERS: usize = 256;

pub struct HeadGuard<T> {
    inner: T,
    activity: Arc<Activity>,
    framing: Framing,
    /// Bytes of a head that arrived over more than one read.
    partial: Vec<u8>,
    /// Bytes of `partial` already searched for the blank line.
    searched: usize,
    max_head: usize,
    /// `[server] max_request_body`; 0 means unlimited.
    max_body: u64,
    /// Chunk sizes announced so far in the current body.
    body_total: u64,
    heads_seen: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Waiting for (or inside) a request head.
    Head,
    /// Inside a body of known length.
    Length(u64),
    Chunked(Chunk),
    /// Stopped observing: HTTP/2, upgrade, or something hyper will reject.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `ext` once a `;` extension began.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Trailer lines after the last chunk; `empty` while the current line is empty.
    Trailer {
        empty: bool,
    },
}

impl<T> HeadGuard<T> {
    pub fn new(inner: T, activity: Arc<Activity>, max_head: usize, max_body: u64) -> Self {
        HeadGuard {
            inner,
            activity,
            framing: Framing::Head,
            partial: Vec::new(),
            searched: 0,
            max_head,
            max_body,
            body_total: 0,
            heads_seen: 0,
        }
    }

    fn observe(&mut self, mut data: &[u8]) {
        if self.framing != Framing::Off && self.activity.upgraded() {
            // The connection switched protocols: these bytes are not HTTP/1.
            self.framing = Framing::Off;
            self.partial = Vec::new();
        }
        while !data.is_empty() {
            match self.framing {
                Framing::Off => return,
                Framing::Head => data = self.observe_head(data),
                Framing::Length(n) => {
                    let take = n.min(data.len() as u64);
                    data = &data[take as usize..];
                    self.framing = if n == take {
                        Framing::Head
                    } else {
                        Framing::Length(n - take)
                    };
                }
                Framing::Chunked(state) => data = self.observe_chunk(state, data),
            }
        }
    }

    /// Consumes head bytes; returns what follows the head in `data`, if any.
    fn observe_head<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        if self.partial.is_empty() {
            // Blank lines between messages are allowed (RFC 9112 §2.2).
            let skip = data
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            let data = &data[skip..];
            if data.is_empty() {
                return data;
            }
            self.activity.head_started();
            // Fast path: the whole head is in this read.
            if let Some(end) = head_end(data, 0) {
                self.finish_head(&data[..end]);
                return &data[end..];
            }
        }
        let start = self.partial.len();
        let from = self.searched.saturating_sub(3);
        self.partial.extend_from_slice(data);
        match head_end(&self.partial, from) {
            Some(end) => {
                let head = std::mem::take(&mut self.partial);
                self.finish_head(&head[..end]);
                self.searched = 0;
                // What followed the head in this read.
                let used = end - start;
                &data[used..]
            }
            None => {
                self.searched = self.partial.len();
                if self.partial.len() > self.max_head {
                    // hyper answers 431; nothing more to learn here.
                    self.partial = Vec::new();
                    self.framing = Framing::Off;
                }
                &[]
            }
        }
    }

    fn finish_head(&mut self, head: &[u8]) {
        self.activity.head_complete();
        let index = self.heads_seen;
        self.heads_seen += 1;
        if !names_framing(head) {
            // Most requests (GET, HEAD) carry neither field: no body to
            // follow and nothing to flag, so no second parse of the head.
            self.framing = if head.starts_with(b"CONNECT ") || !is_http1(head) {
                // A tunnel, the HTTP/2 preface, or a line hyper refuses.
                Framing::Off
            } else {
                Framing::Head
            };
            return;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
            self.framing = Framing::Off;
            return;
        }
        if req.method == Some("CONNECT") {
            self.framing = Framing::Off;
            return;
        }
        let (mut length, mut has_length, mut chunked, mut has_te) = (None, false, false, false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                has_length = true;
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                has_te = true;
                // The final coding decides whether the body is chunked.
                chunked = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .map(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
                    .unwrap_or(false);
            }
        }
        self.body_total = 0;
        if has_te && has_length {
            self.activity.mark_ambiguous(index);
        }
        self.framing = match (has_te, chunked, length) {
            (true, true, _) => Framing::Chunked(Chunk::Size {
                size: 0,
                digits: 0,
                ext: false,
            }),
            (true, false, _) => Framing::Off,
            (false, _, Some(0)) => Framing::Head,
            (false, _, Some(n)) => Framing::Length(n),
            (false, _, None) if has_length => Framing::Off,
            (false, _, None) => Framing::Head,
        };
    }

    /// True (and the guard off) when the body so far plus a chunk of `size`
    /// exceeds the limit: the request is marked for a 413.
    fn too_large(&mut self, size: u64) -> bool {
        if self.max_body == 0 || self.body_total.saturating_add(size) <= self.max_body {
            return false;
        }
        self.activity
            .mark_oversized(self.heads_seen.saturating_sub(1));
        self.framing = Framing::Off;
        true
    }

    fn observe_chunk<'a>(&mut self, state: Chunk, data: &'a [u8]) -> &'a [u8] {
        if let Chunk::Data(n) = state {
            let take = n.min(data.len() as u64);
            self.framing = Framing::Chunked(if take == n {
                Chunk::DataEnd
            } else {
                Chunk::Data(n - take)
            });
            return &data[take as usize..];
        }
        let b = data[0];
        let next = match state {
            Chunk::Size { size, digits, ext } => match b {
                b'\n' if digits == 0 => None,
                b'\n' if size == 0 => Some(Chunk::Trailer { empty: true }),
                b'\n' => {
                    self.body_total = self.body_total.saturating_add(size);
                    Some(Chunk::Data(size))
                }
                b'\r' => Some(state),
                _ if ext => Some(state),
                b';' | b' ' | b'\t' => Some(Chunk::Size {
                    size,
                    digits,
                    ext: true,
                }),
                _ => match (b as char).to_digit(16) {
                    Some(d) if digits < 16 => {
                        let size = size * 16 + d as u64;
                        if self.too_large(size) {
                            return &[];
                        }
                        Some(Chunk::Size {
                            size,
                            digits: digits + 1,
                            ext,
                        })
                    }
                    // More than 64 bits of size is more than any limit.
                    Some(_) if self.too_large(u64::MAX) => return &[],
                    _ => None,
                },
            },
            Chunk::DataEnd => match b {
                b'\r' => Some(state),
                b'\n' => Some(Chunk::Size {
                    size: 0,
                    digits: 0,
                    ext: false,
                }),
                _ => None,
            },
            Chunk::Trailer { empty } => match b {
                b'\r' => Some(state),
                b'\n' if empty => {
                    self.framing = Framing::Head;
                    return &data[1..];
                }
                b'\n' => Some(Chunk::Trailer { empty: true }),
                _ => Some(Chunk::Trailer { empty: false }),
            },
            Chunk::Data(_) => unreachable!("handled above"),
        };
        self.framing = next.map_or(Framing::Off, Framing::Chunked);
        &data[1..]
    }
}

/// End of the head (index just past the blank line), searching from `from`.
/// Whether the request line ends in an HTTP/1 version.
fn is_http1(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or(head);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")
}

/// Whether a field line of `head` could be Content-Length or
/// Transfer-Encoding: a field name starts right after a line feed (hyper
/// refuses names after whitespace), so checking there finds every line hyper
/// would read as either.
fn names_framing(head: &[u8]) -> bool {
    const NAMES: [&[u8]; 2] = [b"content-length", b"transfer-encoding"];
    head.iter().enumerate().any(|(i, b)| {
        *b == b'\n'
            && NAMES.iter().any(|name| {
                head.get(i + 1..i + 1 + name.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(name))
            })
    })
}

fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + pos;
        let rest = &buf[nl + 1..];
        if rest.first() == Some(&b'\n') {
            return Some(nl + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        i = nl + 1;
    }
    None
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.framing != Framing::Off {
            if let Poll::Ready(Ok(())) = &poll {
                let fresh = &buf.filled()[before..];
                if !fresh.is_empty() {
                    this.observe(fresh);
                }
            }
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> HeadGuard<()> {
        HeadGuard::new((), Activity::new(), 64 * 1024, 1 << 20)
    }

    fn feed(g: &mut HeadGuard<()>, bytes: &[u8], step: usize) {
        for piece in bytes.chunks(step) {
            g.observe(piece);
        }
    }

    #[test]
    fn flags_content_length_with_transfer_encoding_on_the_right_request() {
        for step in [1, 3, 7, 1000] {
            let mut g = guard();
            let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
            feed(&mut g, stream, step);
            assert_eq!(g.heads_seen, 4, "step {step}");
            assert!(!g.activity.is_ambiguous(1));
            assert!(!g.activity.is_ambiguous(2));
            assert!(g.activity.is_ambiguous(3), "step {step}");
            assert_eq!(g.framing, Framing::Head);
        }
    }

    #[test]
    fn body_bytes_that_look_like_headers_are_not_heads() {
        let mut g = guard();
        let body = b"X\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        feed(&mut g, &stream, 5);
        assert_eq!(g.heads_seen, 1);
        assert!(!g.activity.is_ambiguous(0));
        assert_eq!(g.framing, Framing::Head);
    }

    #[test]
    fn only_heads_naming_a_body_are_parsed_again() {
        assert!(!names_framing(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Content-Length: 5\r\n\r\n"
        ));
        assert!(names_framing(
            b"POST / HTTP/1.1\r\nCONTENT-LENGTH: 5\r\n\r\n"
        ));
        assert!(names_framing(
            b"POST / HTTP/1.1\nHost: x\nTransfer-encoding: chunked\n\n"
        ));
        // A GET with a body is still followed.
        let mut g = guard();
        feed(
            &mut g,
            b"GET /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            100,
        );
        assert_eq!(g.heads_seen, 2);
        assert!(g.activity.is_ambiguous(1));
        let mut g = guard();
        feed(&mut g, b"CONNECT a:443 HTTP/1.1\r\n\r\n\x16\x03", 100);
        assert_eq!(g.framing, Framing::Off);
    }

    #[test]
    fn http2_preface_switches_it_off() {
        let mut g = guard();
        feed(&mut g, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 100);
        assert_eq!(g.framing, Framing::Off);
    }

    #[test]
    fn an_upgrade_request_that_was_not_switched_keeps_the_check_on() {
        let mut g = guard();
        let stream = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        feed(&mut g, stream, 9);
        assert_eq!(g.heads_seen, 2);
        assert!(g.activity.is_ambiguous(1));
    }

    #[test]
    fn a_switched_connection_is_left_alone() {
        let mut g = guard();
        feed(
            &mut g,
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            100,
        );
        g.activity.mark_upgraded();
        feed(&mut g, b"\x81\x05hello GET / HTTP/1.1\r\n\r\n", 100);
        assert_eq!(g.framing, Framing::Off);
        assert_eq!(g.heads_seen, 1);
    }

    #[test]
    fn chunk_sizes_past_the_body_limit_are_flagged_at_once() {
        // 1 MiB limit: one chunk announcing 2 MiB, before any of its data.
        let mut g = guard();
        feed(
            &mut g,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n",
            4,
        );
        assert!(g.activity.is_oversized(0));
        // Small chunks that add up past the limit.
        let mut g = guard();
        let mut stream =
            b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            stream.extend_from_slice(b"60000\r\n");
            stream.extend(std::iter::repeat_n(b'a', 0x60000));
            stream.extend_from_slice(b"\r\n");
        }
        feed(&mut g, &stream, 1000);
        assert!(!g.activity.is_oversized(0));
        assert!(g.activity.is_oversized(1));
        // Under the limit: nothing flagged, and the next head is seen.
        let mut g = guard();
        feed(
            &mut g,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            3,
        );
        assert!(!g.activity.is_oversized(0));
        assert_eq!(g.heads_seen, 2);
        // Seventeen hex digits are past any limit.
        let mut g = guard();
        feed(
            &mut g,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\n",
            100,
        );
        assert!(g.activity.is_oversized(0));
    }
}
