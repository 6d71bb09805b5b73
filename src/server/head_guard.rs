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
//! protocol; otherwise the next head is checked like any other. The same
//! goes for CONNECT: a refused one leaves an HTTP/1 connection, an accepted
//! one marks it upgraded. Anything it does not understand (HTTP/2 preface,
//! parse errors) switches it off; hyper stays the authority and answers
//! malformed input itself.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::Activity;
use crate::http::validate::framing::{head_end, request_framing, BodyFraming};

/// hyper's smallest read buffer (`max_buf_size` may not go below it).
const HYPER_MIN_BUFFER: usize = 8192;

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
    fn observe_head<'a>(&mut self, mut data: &'a [u8]) -> &'a [u8] {
        if self.partial.is_empty() {
            // Blank lines between messages are allowed (RFC 9112 §2.2). They
            // are skipped for the partial head below too: kept there, they
            // read as an empty head of their own, which switched the guard
            // off (found by the head_guard fuzz target).
            let skip = data
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            data = &data[skip..];
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
                if self.partial.len() > self.max_head.max(HYPER_MIN_BUFFER) {
                    // Past hyper's buffer: hyper answers 431 and closes;
                    // nothing more to learn here.
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
        if head.len() > self.max_head {
            // hyper's read buffer never goes below 8 KiB, so a smaller
            // `max_header_size` is enforced here: the handler answers 431.
            self.activity.mark_large_head(index);
        }
        let framing = request_framing(head);
        self.body_total = 0;
        if framing.ambiguous {
            self.activity.mark_ambiguous(index);
        }
        self.framing = match framing.body {
            BodyFraming::None => Framing::Head,
            BodyFraming::Length(n) => Framing::Length(n),
            BodyFraming::Chunked => Framing::Chunked(Chunk::Size {
                size: 0,
                digits: 0,
                ext: false,
            }),
            // The HTTP/2 preface, or something hyper decides.
            BodyFraming::Unknown => Framing::Off,
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
                    // Leading zeros are no limit on the length of a size
                    // (hyper accepts them): only a value past 60 bits is.
                    Some(d) if size < 1 << 60 => {
                        let size = size * 16 + d as u64;
                        if self.too_large(size) {
                            return &[];
                        }
                        Some(Chunk::Size {
                            size,
                            digits: digits.saturating_add(1),
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

/// What the guard concluded about a byte stream: per head, whether it was
/// flagged ambiguous or oversized. For the fuzz target, which checks that the
/// conclusion does not depend on how the bytes were split into reads.
#[derive(Debug, PartialEq, Eq)]
pub struct Observed {
    pub heads: u64,
    pub ambiguous: Vec<u64>,
    pub oversized: Vec<u64>,
}

/// Feeds `bytes` to a fresh guard in reads of the given sizes (the rest in
/// one read), with no head size limit and `max_body`.
pub fn observe_in_reads(bytes: &[u8], reads: &[usize], max_body: u64) -> Observed {
    let activity = Activity::new();
    let mut guard = HeadGuard::new((), activity.clone(), usize::MAX, max_body);
    let mut rest = bytes;
    for &n in reads {
        let (now, later) = rest.split_at(n.min(rest.len()));
        if !now.is_empty() {
            guard.observe(now);
        }
        rest = later;
    }
    if !rest.is_empty() {
        guard.observe(rest);
    }
    let heads = guard.heads_seen;
    Observed {
        heads,
        // Only the latest ambiguous head is remembered (the one the handler
        // asks about next), so report that one.
        ambiguous: (0..heads).filter(|i| activity.is_ambiguous(*i)).collect(),
        oversized: (0..heads).filter(|i| activity.is_oversized(*i)).collect(),
    }
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
    use crate::http::validate::framing::names_framing;

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
        // A refused CONNECT leaves HTTP/1 behind it: still checked (found
        // by the bad-input suite: the guard used to stop at any CONNECT).
        let mut g = guard();
        feed(
            &mut g,
            b"CONNECT a:25 HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            7,
        );
        assert_eq!(g.heads_seen, 2);
        assert!(g.activity.is_ambiguous(1));
        // An accepted one is a tunnel from the next read on.
        let mut g = guard();
        feed(&mut g, b"CONNECT a:443 HTTP/1.1\r\n\r\n", 100);
        g.activity.mark_upgraded();
        feed(&mut g, b"\x16\x03\x01", 100);
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
        // Seventeen significant hex digits are past any limit; leading
        // zeros are not (hyper reads `00000000000000005` as 5).
        let mut g = guard();
        feed(
            &mut g,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
            100,
        );
        assert!(g.activity.is_oversized(0));
        let mut g = HeadGuard::new((), Activity::new(), 64 * 1024, 0);
        feed(
            &mut g,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            4,
        );
        assert!(!g.activity.is_oversized(0));
        assert!(
            g.activity.is_ambiguous(1),
            "still following after leading zeros"
        );
    }

    #[test]
    fn blank_lines_before_a_head_that_spans_reads_are_skipped() {
        // Found by fuzzing: CRLFs first, then a head over two reads.
        let bytes =
            b"\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for step in [8, 100] {
            let mut g = guard();
            feed(&mut g, bytes, step);
            assert_eq!(g.heads_seen, 1, "step {step}");
            assert!(g.activity.is_ambiguous(0), "step {step}");
        }
    }

    #[test]
    fn heads_over_a_limit_below_hypers_buffer_are_flagged() {
        let mut head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 6000));
        head.extend_from_slice(
            b"\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for step in [100_000, 1000] {
            let mut g = HeadGuard::new((), Activity::new(), 4096, 0);
            feed(&mut g, &head, step);
            assert!(g.activity.is_large_head(0), "step {step}");
            assert!(g.activity.is_ambiguous(1), "step {step}");
        }
    }
}
