//! How a request head frames its body (RFC 9112 §6), read from the raw head
//! bytes: the head guard uses it to find where the next request starts on a
//! persistent connection, and to flag the request-smuggling shape.

const MAX_HEADERS: usize = 256;

/// The body that follows a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: the next head follows at once.
    None,
    /// `Content-Length` bytes (RFC 9112 §6.3 rule 6).
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked` (rule 4).
    Chunked,
    /// Something the parser that answers the request decides (a tunnel, a
    /// coding other than chunked last, an invalid length, a head that does
    /// not parse): observing stops there.
    Unknown,
}

/// What a head says about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadFraming {
    pub body: BodyFraming,
    /// Both `Content-Length` and `Transfer-Encoding`: the classic smuggling
    /// shape (RFC 9112 §11.2), refused with 400 although §6.1 would let a
    /// server drop the length.
    pub ambiguous: bool,
}

/// Reads the framing of one complete head (request line, fields, blank line).
pub fn request_framing(head: &[u8]) -> HeadFraming {
    let unknown = HeadFraming {
        body: BodyFraming::Unknown,
        ambiguous: false,
    };
    if !names_framing(head) {
        // Most requests (GET, HEAD) carry neither field: no body to follow
        // and nothing to flag, so no parse of the head. A CONNECT is no
        // different: hyper goes on reading HTTP/1 after a refused one, and
        // an accepted one marks the connection upgraded.
        return HeadFraming {
            body: if !is_http1(head) {
                BodyFraming::Unknown
            } else {
                BodyFraming::None
            },
            ambiguous: false,
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return unknown;
    }
    let (mut length, mut has_length, mut chunked, mut has_te) = (None, false, false, false);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            has_length = true;
            length = content_length(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_te = true;
            // The final coding decides whether the body is chunked.
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    let body = match (has_te, chunked, length) {
        (true, true, _) => BodyFraming::Chunked,
        (true, false, _) => BodyFraming::Unknown,
        (false, _, Some(0)) => BodyFraming::None,
        (false, _, Some(n)) => BodyFraming::Length(n),
        (false, _, None) if has_length => BodyFraming::Unknown,
        (false, _, None) => BodyFraming::None,
    };
    HeadFraming {
        body,
        ambiguous: has_te && has_length,
    }
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6), surrounding whitespace
/// allowed; a sign, a list or anything else is not a length.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether the request line ends in an HTTP/1 version.
pub fn is_http1(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or(head);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")
}

/// Whether a field line of `head` could be Content-Length or
/// Transfer-Encoding: a field name starts right after a line feed (hyper
/// refuses names after whitespace), so checking there finds every line hyper
/// would read as either.
pub fn names_framing(head: &[u8]) -> bool {
    const NAMES: [&[u8]; 2] = [b"content-length", b"transfer-encoding"];
    head.iter().enumerate().any(|(i, b)| {
        *b == b'\n'
            && NAMES.iter().any(|name| {
                head.get(i + 1..i + 1 + name.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(name))
            })
    })
}

/// End of the head (index just past the blank line), searching from `from`;
/// bare LF line ends are accepted as RFC 9112 §2.2 allows.
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from.min(buf.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(head: &str) -> HeadFraming {
        request_framing(head.as_bytes())
    }

    #[test]
    fn framing_from_the_fields() {
        let none = HeadFraming {
            body: BodyFraming::None,
            ambiguous: false,
        };
        assert_eq!(body("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), none);
        assert_eq!(
            body("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").body,
            BodyFraming::Length(5)
        );
        assert_eq!(
            body("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").body,
            BodyFraming::Chunked
        );
        assert_eq!(
            body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").body,
            BodyFraming::Unknown
        );
        let both =
            body("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(both.ambiguous);
        // A refused CONNECT leaves an HTTP/1 connection: its body is framed
        // like any other.
        assert_eq!(
            body("CONNECT a:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n").body,
            BodyFraming::Length(5)
        );
        assert_eq!(
            body("CONNECT a:443 HTTP/1.1\r\n\r\n").body,
            BodyFraming::None
        );
        assert_eq!(body("PRI * HTTP/2.0\r\n\r\n").body, BodyFraming::Unknown);
    }

    #[test]
    fn only_digits_are_a_length() {
        assert_eq!(content_length(b" 42 "), Some(42));
        for bad in [
            "+5",
            "-1",
            "0x5",
            "5, 5",
            "",
            " ",
            "1 2",
            "99999999999999999999999",
        ] {
            assert_eq!(content_length(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn head_end_accepts_crlf_and_bare_lf() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n", 0), None);
        assert_eq!(head_end(b"ab", 10), None);
    }
}
