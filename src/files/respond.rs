//! The response for one file: validators from its metadata (an ETag of
//! mtime and size, as nginx makes it, and Last-Modified), the conditional
//! requests of RFC 9110 §13.2.2 in their order, one byte range (§14, with
//! If-Range), HEAD, and a body read from the file as it is sent.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use super::{FileBody, FileResponse};
use crate::cache::range::{self, RangeAnswer};

/// Spans up to this size are read in the one blocking call that opened the
/// file (a bounded buffer, freed once sent): no streaming task, no channel.
pub const CHUNK: usize = 1024 * 1024;
/// Larger ones stream in chunks of this size, two chunks ahead at most.
const STREAM_CHUNK: usize = 512 * 1024;
/// Kept files from this size on are sent by the kernel where it can
/// (`sendfile`); below it one write with the head costs less.
pub const ZERO_COPY_MIN: u64 = 64 * 1024;

/// What the representation is: for validators and the head.
#[derive(Clone)]
pub struct Representation {
    pub len: u64,
    pub modified: SystemTime,
    pub etag: HeaderValue,
}

impl Representation {
    pub fn of(meta: &Metadata) -> Representation {
        let modified = UNIX_EPOCH + Duration::new(meta.mtime().max(0) as u64, 0);
        let etag = format!(
            "\"{:x}-{:x}{}\"",
            meta.mtime(),
            meta.len(),
            // Two writes within a second keep their own tags.
            if meta.mtime_nsec() == 0 {
                String::new()
            } else {
                format!(".{:x}", meta.mtime_nsec())
            }
        );
        Representation {
            len: meta.len(),
            modified,
            etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
        }
    }
}

/// What the request's preconditions say (RFC 9110 §13.2.2).
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

pub fn evaluate(method: &Method, request: &HeaderMap, rep: &Representation) -> Precondition {
    let etag = rep.etag.as_bytes();
    // Step 1 and 2: If-Match, else If-Unmodified-Since.
    if let Some(list) = request.get(header::IF_MATCH) {
        if !list_matches(list, etag, true) {
            return Precondition::Failed;
        }
    } else if let Some(since) = date(request, header::IF_UNMODIFIED_SINCE) {
        if rep.modified > since {
            return Precondition::Failed;
        }
    }
    // Step 3 and 4: If-None-Match, else If-Modified-Since (GET and HEAD).
    let safe = method == Method::GET || method == Method::HEAD;
    if let Some(list) = request.get(header::IF_NONE_MATCH) {
        if list_matches(list, etag, false) {
            return if safe {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if let Some(since) = date(request, header::IF_MODIFIED_SINCE) {
        if safe && rep.modified <= since {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

fn date(request: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(request.get(name)?.to_str().ok()?).ok()
}

/// Whether `list` (`*` or entity-tags) matches `etag`; strong comparison
/// for If-Match and If-Range, weak for If-None-Match (§8.8.3.2).
fn list_matches(list: &HeaderValue, etag: &[u8], strong: bool) -> bool {
    let Ok(text) = list.to_str() else {
        return false;
    };
    if text.trim() == "*" {
        return true;
    }
    let ours = std::str::from_utf8(etag).unwrap_or("");
    text.split(',').map(str::trim).any(|tag| {
        let weak = tag.starts_with("W/");
        let bare = tag.trim_start_matches("W/");
        if strong && weak {
            return false;
        }
        bare == ours
    })
}

/// The range to send: `None` for the whole representation.
pub fn range_of(request: &HeaderMap, rep: &Representation) -> Result<Option<(u64, u64)>, ()> {
    let Some(range) = request.get(header::RANGE) else {
        return Ok(None);
    };
    // §13.1.5: a Range with an If-Range that does not hold gets it all.
    if let Some(if_range) = request.get(header::IF_RANGE) {
        let holds = match httpdate::parse_http_date(if_range.to_str().unwrap_or("")) {
            Ok(when) => when == rep.modified,
            Err(_) => list_matches(if_range, rep.etag.as_bytes(), true),
        };
        if !holds {
            return Ok(None);
        }
    }
    match range::evaluate(range, rep.len) {
        RangeAnswer::Full => Ok(None),
        RangeAnswer::Partial { start, end } => Ok(Some((start, end))),
        RangeAnswer::Unsatisfiable => Err(()),
    }
}

/// The next `len` bytes of `file`, read without zeroing a buffer first;
/// `None` when the file has fewer (truncated since it was looked at).
pub fn read_whole(file: &mut File, len: u64) -> Option<Bytes> {
    let mut buf = Vec::with_capacity(len as usize);
    match file.take(len).read_to_end(&mut buf) {
        Ok(n) if n as u64 == len => Some(Bytes::from(buf)),
        _ => None,
    }
}

/// 500 for a file that changed under us: nothing rather than a short body
/// under a Content-Length.
pub fn changed() -> FileResponse {
    FileResponse::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the file changed while it was read\n",
    )
}

/// Bytes `start..=end` to send, or `None` for the whole representation.
pub type Span = Option<(u64, u64)>;

/// What the request's preconditions and range make of `rep`: `Err` is the
/// whole answer (304, 412, 416); `Ok` the head and the span to send.
pub fn decide(
    method: &Method,
    request: &HeaderMap,
    mut headers: HeaderMap,
    rep: &Representation,
) -> Result<(HeaderMap, Span), Box<FileResponse>> {
    match evaluate(method, request, rep) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            headers.remove(header::CONTENT_TYPE);
            return Err(Box::new(FileResponse::new(
                StatusCode::NOT_MODIFIED,
                headers,
                FileBody::Empty,
            )));
        }
        Precondition::Failed => return Err(Box::new(failed(rep))),
    }
    if method != Method::GET {
        return Ok((headers, None));
    }
    match range_of(request, rep) {
        Ok(span) => Ok((headers, span)),
        Err(()) => Err(Box::new(unsatisfiable(rep))),
    }
}

/// 412, with the validators.
fn failed(rep: &Representation) -> FileResponse {
    let mut r = FileResponse::error(StatusCode::PRECONDITION_FAILED, "precondition failed\n");
    validators(&mut r.headers, rep);
    r
}

/// 416, with the length.
fn unsatisfiable(rep: &Representation) -> FileResponse {
    let mut r = FileResponse::error(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", rep.len)) {
        r.headers.insert(header::CONTENT_RANGE, v);
    }
    r
}

/// The head every answer about this file carries.
pub fn validators(headers: &mut HeaderMap, rep: &Representation) {
    headers.insert(header::ETAG, rep.etag.clone());
    if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(rep.modified)) {
        headers.insert(header::LAST_MODIFIED, value);
    }
}

/// 200 or 206 with the bytes `span` (inclusive) of a file held in memory
/// (`hot.rs`) and open as `handle`; HEAD without a body. Spans of
/// [`ZERO_COPY_MIN`] and more go by the kernel from `handle` when
/// `zero_copy`; smaller ones are one write with the head.
pub fn send_bytes(
    body: &Bytes,
    handle: &Arc<File>,
    method: &Method,
    mut head: HeaderMap,
    rep: &Representation,
    span: Option<(u64, u64)>,
    zero_copy: bool,
) -> FileResponse {
    let (status, start, len) = span_head(&mut head, rep, span);
    if method == Method::HEAD || len == 0 {
        return FileResponse::new(status, head, FileBody::Empty);
    }
    if zero_copy && len >= ZERO_COPY_MIN {
        let body = FileBody::File {
            file: handle.clone(),
            offset: start,
            len,
        };
        return FileResponse::new(status, head, body);
    }
    let part = body.slice(start as usize..(start + len) as usize);
    FileResponse::new(status, head, FileBody::Full(part))
}

/// Status, Content-Range, Accept-Ranges and Content-Length for `span`;
/// (status, first byte, length).
fn span_head(
    head: &mut HeaderMap,
    rep: &Representation,
    span: Option<(u64, u64)>,
) -> (StatusCode, u64, u64) {
    let (status, start, len) = match span {
        Some((start, end)) => {
            let range = format!("bytes {start}-{end}/{}", rep.len);
            if let Ok(value) = HeaderValue::from_str(&range) {
                head.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        None => (StatusCode::OK, 0, rep.len),
    };
    head.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    head.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    (status, start, len)
}

/// 200 or 206 with the bytes `span` (inclusive) of `file`; HEAD without
/// a body. With `zero_copy` (a plain HTTP/1.x connection) the kernel sends
/// the bytes from the page cache; otherwise small spans are read here (this
/// runs on the blocking pool) and larger ones stream from a task of their
/// own.
pub fn send(
    mut file: File,
    method: &Method,
    mut head: HeaderMap,
    rep: &Representation,
    span: Option<(u64, u64)>,
    zero_copy: bool,
) -> FileResponse {
    let (status, start, len) = span_head(&mut head, rep, span);
    if method == Method::HEAD || len == 0 {
        return FileResponse::new(status, head, FileBody::Empty);
    }
    if zero_copy {
        let body = FileBody::File {
            file: Arc::new(file),
            offset: start,
            len,
        };
        return FileResponse::new(status, head, body);
    }
    if start > 0 {
        use std::io::Seek;
        if file.seek(std::io::SeekFrom::Start(start)).is_err() {
            return FileResponse::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the file could not be read\n",
            );
        }
    }
    if len <= CHUNK as u64 {
        return match read_whole(&mut file, len) {
            Some(body) => FileResponse::new(status, head, FileBody::Full(body)),
            None => changed(),
        };
    }
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || stream(file, len, tx));
    FileResponse::new(status, head, FileBody::Stream { rx, len })
}

/// Sends `len` bytes of `file` in chunks; a file that ends early (truncated
/// while it is sent) ends the body with an error, so the client sees a cut
/// response, never a complete-looking short one. Stops when the client left.
fn stream(
    mut file: File,
    mut left: u64,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, crate::http::body::BoxError>>,
) {
    while left > 0 {
        let want = left.min(STREAM_CHUNK as u64);
        // `take` + `read_to_end` reads into the spare capacity without
        // zeroing it first.
        let mut buf = Vec::with_capacity(want as usize);
        let chunk = match (&mut file).take(want).read_to_end(&mut buf) {
            Ok(0) => Err("the file is shorter than when it was opened".into()),
            Ok(n) => {
                left -= n as u64;
                Ok(Bytes::from(buf))
            }
            Err(e) => Err(e.into()),
        };
        let failed = chunk.is_err();
        if tx.blocking_send(chunk).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep() -> Representation {
        Representation {
            len: 10,
            modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            etag: HeaderValue::from_static("\"abc\""),
        }
    }

    fn with(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn preconditions_in_rfc_order() {
        let get = Method::GET;
        let r = rep();
        let at = httpdate::fmt_http_date(r.modified);
        let before = httpdate::fmt_http_date(r.modified - Duration::from_secs(10));
        assert_eq!(
            evaluate(&get, &with(&[("if-none-match", "\"abc\"")]), &r),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(&get, &with(&[("if-none-match", "W/\"abc\"")]), &r),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(&get, &with(&[("if-none-match", "*")]), &r),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(&get, &with(&[("if-none-match", "\"x\"")]), &r),
            Precondition::Proceed
        );
        assert_eq!(
            evaluate(&get, &with(&[("if-match", "\"x\"")]), &r),
            Precondition::Failed
        );
        assert_eq!(
            evaluate(&get, &with(&[("if-match", "W/\"abc\"")]), &r),
            Precondition::Failed
        );
        assert_eq!(
            evaluate(&get, &with(&[("if-match", "\"abc\"")]), &r),
            Precondition::Proceed
        );
        assert_eq!(
            evaluate(&get, &with(&[("if-modified-since", &at)]), &r),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(&get, &with(&[("if-modified-since", &before)]), &r),
            Precondition::Proceed
        );
        assert_eq!(
            evaluate(&get, &with(&[("if-unmodified-since", &before)]), &r),
            Precondition::Failed
        );
        // If-None-Match wins over If-Modified-Since (§13.1.3).
        assert_eq!(
            evaluate(
                &get,
                &with(&[("if-none-match", "\"x\""), ("if-modified-since", &at)]),
                &r
            ),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let r = rep();
        let ranged =
            |if_range: &str| range_of(&with(&[("range", "bytes=0-1"), ("if-range", if_range)]), &r);
        assert_eq!(ranged("\"abc\""), Ok(Some((0, 1))));
        assert_eq!(ranged("W/\"abc\""), Ok(None));
        assert_eq!(ranged("\"old\""), Ok(None));
        assert_eq!(
            ranged(&httpdate::fmt_http_date(r.modified)),
            Ok(Some((0, 1)))
        );
        assert_eq!(range_of(&with(&[("range", "bytes=20-")]), &r), Err(()));
    }
}
